"""Graded checks for Chapter 1 (dense attention and its cost).

Each check feeds seeded random inputs (several shapes, lengths that are not multiples of any
block size, fully masked rows, batches and heads) to the student's function and compares with
the float64 oracle in :mod:`sparse_core.attention.reference` or the cost model in :mod:`sparse_core.attention.cost`.
"""
from __future__ import annotations

import numpy as np

from ...attention import cost as _cost
from ...attention import reference as _ref
from ...bench.timing import traced_call
from ..extremes import EXTREME_NOTE, extreme_qkv, extreme_scores
from ..compare import as_array, assert_close, assert_counts_equal, assert_mask_equal, call_repr
from . import CheckList

CHECKS = CheckList()
# what each exercise returns, as its docstring says: every call in every check is held to it
CHECKS.returns("1.1", "float64 array")
CHECKS.returns("1.2", "bool array")
CHECKS.returns("1.3", "float64 array")
CHECKS.returns("1.4", "float64 array")
CHECKS.returns("1.5", "(float64 array, float64 array)")
CHECKS.returns("1.6", "dict of int")

ATOL64 = 1e-10  # float64 inputs: answers must match the oracle to rounding
ATOL32 = 2e-5  # float32 inputs: allow float32 arithmetic inside the student's code


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _random_mask(rng, shape, density=0.6, masked_rows=(0,)):
    mask = rng.random(shape) < density
    for r in masked_rows:
        mask[..., r, :] = False  # a fully masked row
    return mask


def _unchanged(before: np.ndarray, after: np.ndarray, what: str) -> None:
    if not np.array_equal(before, after, equal_nan=True):
        raise AssertionError(f"{what}: your function modified its input array in place; work on a copy")


# ---------------------------------------------------------------- Exercise 1.1: softmax

@CHECKS.add("1.1", "softmax", "rows sum to one on random scores", 1)
def _softmax_random(fn):
    for seed, shape in [(0, (1, 5)), (1, (3, 7)), (2, (2, 3, 17, 33))]:
        scores = _rng(seed).standard_normal(shape) * 3
        before = scores.copy()
        got = fn(scores)
        _unchanged(before, scores, "softmax")
        assert_close(got, _ref.masked_softmax(scores), what="softmax", atol=ATOL64,
                     context=call_repr("softmax", scores))


@CHECKS.add("1.1", "softmax", "masks and fully masked rows", 2)
def _softmax_masked(fn):
    for seed, shape, mshape in [(3, (6, 9), (6, 9)), (4, (2, 3, 17, 33), (17, 33)), (5, (4, 4, 5), (4, 4, 5))]:
        rng = _rng(seed)
        scores = rng.standard_normal(shape) * 2
        mask = _random_mask(rng, mshape, masked_rows=(0, mshape[-2] - 1))
        got = as_array(fn(scores, mask), "softmax")
        expected = _ref.masked_softmax(scores, mask)
        assert_close(got, expected, what="softmax", atol=ATOL64, context=call_repr("softmax", scores, mask=mask))
        if np.any(np.broadcast_to(~mask, got.shape) & (got != 0)):
            raise AssertionError("softmax: masked entries must be exactly 0")


@CHECKS.add("1.1", "softmax", "large scores do not overflow", 1)
def _softmax_large(fn):
    rng = _rng(6)
    scores = rng.standard_normal((5, 11)) * 1e4
    got = as_array(fn(scores), "softmax")
    if not np.all(np.isfinite(got)):
        raise AssertionError(
            "softmax: scores of size 1e4 gave inf or NaN -- subtract the row maximum before exp\n"
            f"    first row yours: {np.array2string(got[0], precision=3)}")
    assert_close(got, _ref.masked_softmax(scores), what="softmax", atol=ATOL64, context="scores ~ 1e4")
    # a huge score at a *masked* position must not influence the row
    scores = rng.standard_normal((4, 6))
    mask = np.ones((4, 6), dtype=bool)
    mask[:, 0] = False
    scores[:, 0] = 1e4
    assert_close(fn(scores, mask), _ref.masked_softmax(scores, mask), what="softmax", atol=ATOL64,
                 context="a masked column holding 1e4 (take the maximum over allowed entries only)")


@CHECKS.add("1.1", "softmax", "extreme rows and float16 scores", 1)
def _softmax_extreme(fn):
    for seed, shape, dtype in [(7, (12, 9), np.float64), (8, (2, 6, 33), np.float16)]:
        scores = extreme_scores(seed, shape, dtype)
        mask = _random_mask(_rng(seed), shape[-2:], density=0.7, masked_rows=(5,))
        for m in (None, mask):
            got = fn(scores) if m is None else fn(scores, m)
            expected = _ref.masked_softmax(scores.astype(np.float64), m)
            assert_close(got, expected, what="softmax", atol=ATOL64,
                         context=call_repr("softmax", scores, **({} if m is None else {"mask": m})) + EXTREME_NOTE)


# ---------------------------------------------------------------- Exercise 1.2: causal mask

@CHECKS.add("1.2", "causal_mask", "square masks", 1)
def _causal_square(fn):
    for n in (1, 2, 5, 17):
        assert_mask_equal(fn(n, n), _ref.causal_mask(n, n), what="causal_mask", context=f"causal_mask({n}, {n})")


@CHECKS.add("1.2", "causal_mask", "rectangular masks", 1)
def _causal_rect(fn):
    for n_q, n_k in [(3, 7), (7, 3), (16, 17), (1, 4)]:
        assert_mask_equal(fn(n_q, n_k), _ref.causal_mask(n_q, n_k), what="causal_mask",
                          context=f"causal_mask({n_q}, {n_k}) (top-left aligned: keep j <= i)")


# ---------------------------------------------------------------- Exercise 1.3: attention

def _attention_cases(seed, batch, n_q, n_k, d, d_v, dtype=np.float64):
    rng = _rng(seed)
    q = rng.standard_normal(batch + (n_q, d)).astype(dtype)
    k = rng.standard_normal(batch + (n_k, d)).astype(dtype)
    v = rng.standard_normal(batch + (n_k, d_v)).astype(dtype)
    return rng, q, k, v


@CHECKS.add("1.3", "attention", "matches the oracle", 2)
def _attention_plain(fn):
    for seed, batch, n_q, n_k, d, d_v in [(10, (), 5, 7, 4, 3), (11, (2,), 33, 17, 8, 8), (12, (2, 3), 19, 45, 16, 5)]:
        _, q, k, v = _attention_cases(seed, batch, n_q, n_k, d, d_v)
        assert_close(fn(q, k, v), _ref.attention(q, k, v), what="attention", atol=ATOL64,
                     context=call_repr("attention", q, k, v) + " (default scale 1/sqrt(d))")


@CHECKS.add("1.3", "attention", "masks and fully masked rows", 2)
def _attention_masked(fn):
    for seed, batch, n_q, n_k, d, d_v, mshape in [
        (13, (), 9, 9, 4, 4, (9, 9)),
        (14, (2, 3), 21, 34, 8, 6, (21, 34)),
        (15, (2,), 17, 17, 4, 4, (2, 17, 17)),
    ]:
        rng, q, k, v = _attention_cases(seed, batch, n_q, n_k, d, d_v)
        mask = _random_mask(rng, mshape, masked_rows=(0, 5))
        assert_close(fn(q, k, v, mask), _ref.attention(q, k, v, mask=mask), what="attention", atol=ATOL64,
                     context=call_repr("attention", q, k, v, mask=mask) + " (rows 0 and 5 fully masked)")


@CHECKS.add("1.3", "attention", "explicit scale and float32", 1)
def _attention_scale_dtype(fn):
    _, q, k, v = _attention_cases(16, (3,), 13, 29, 8, 8)
    assert_close(fn(q, k, v, None, 0.3), _ref.attention(q, k, v, scale=0.3), what="attention", atol=ATOL64,
                 context=call_repr("attention", q, k, v, scale=0.3))
    rng, q, k, v = _attention_cases(17, (2, 2), 30, 31, 16, 16, dtype=np.float32)
    mask = _random_mask(rng, (30, 31), masked_rows=(3,))
    assert_close(fn(q, k, v, mask), _ref.attention(q, k, v, mask=mask), what="attention", atol=ATOL32,
                 context=call_repr("attention", q, k, v, mask=mask) + " (float32 inputs)")


@CHECKS.add("1.3", "attention", "extreme rows and float16 inputs", 1)
def _attention_extreme(fn):
    for seed, batch, n_q, n_k, d, dtype in [(18, (2,), 13, 21, 8, np.float64), (19, (), 12, 17, 16, np.float16)]:
        q, k, v = extreme_qkv(seed, batch, n_q, n_k, d, 4, dtype)
        mask = _random_mask(_rng(seed), (n_q, n_k), density=0.7, masked_rows=(2,))
        q64, k64, v64 = (a.astype(np.float64) for a in (q, k, v))
        for m in (None, mask):
            assert_close(fn(q, k, v, m), _ref.attention(q64, k64, v64, mask=m), what="attention", atol=ATOL64,
                         context=call_repr("attention", q, k, v, mask=m) + EXTREME_NOTE)


# ---------------------------------------------------------------- Exercise 1.4: multi-head

def _mha_expected(x, w_q, w_k, w_v, w_o, n_heads, causal):
    b, n, dm = x.shape
    dh = dm // n_heads

    def split(t):
        return t.reshape(b, n, n_heads, dh).transpose(0, 2, 1, 3)

    q, k, v = (split(x @ w) for w in (w_q, w_k, w_v))
    heads = _ref.attention(q, k, v, causal=causal)
    return heads.transpose(0, 2, 1, 3).reshape(b, n, dm) @ w_o


def _mha_case(fn, seed, b, n, dm, h, causal):
    rng = _rng(seed)
    x = rng.standard_normal((b, n, dm))
    ws = [rng.standard_normal((dm, dm)) / np.sqrt(dm) for _ in range(4)]
    got = fn(x, *ws, h, causal)
    assert_close(got, _mha_expected(x, *ws, h, causal), what="multi_head_attention", atol=1e-9,
                 context=call_repr("multi_head_attention", x, *ws, n_heads=h, causal=causal))


@CHECKS.add("1.4", "multi_head_attention", "several heads", 2)
def _mha_heads(fn):
    for seed, b, n, dm, h in [(20, 1, 7, 8, 1), (21, 2, 13, 16, 2), (22, 3, 19, 24, 4)]:
        _mha_case(fn, seed, b, n, dm, h, False)


@CHECKS.add("1.4", "multi_head_attention", "causal", 1)
def _mha_causal(fn):
    for seed, b, n, dm, h in [(23, 2, 11, 12, 3), (24, 1, 33, 32, 8)]:
        _mha_case(fn, seed, b, n, dm, h, True)


@CHECKS.add("1.4", "multi_head_attention", "extreme rows and float16 inputs", 1)
def _mha_extreme(fn):
    # x = [q | k] and w_q, w_k pick the halves: head 0 of 2 sees the extreme scores q k^T / sqrt(d_head)
    for seed, n, dh, dtype in [(25, 13, 8, np.float64), (26, 12, 8, np.float16)]:
        q, k, _ = extreme_qkv(seed, (2,), n, n, dh, dh)
        dm = 2 * dh
        x = np.concatenate([q, k], axis=-1).astype(dtype)
        w_q, w_k = np.zeros((dm, dm)), np.zeros((dm, dm))
        w_q[:dh, :dh] = np.eye(dh)
        w_k[dh:, :dh] = np.eye(dh)
        rng = _rng(seed)
        w_v, w_o = (rng.standard_normal((dm, dm)) / np.sqrt(dm) for _ in range(2))
        ws = [w.astype(dtype) for w in (w_q, w_k, w_v, w_o)]
        for causal in (False, True):
            got = fn(x, *ws, 2, causal)
            expected = _mha_expected(x.astype(np.float64), *(w.astype(np.float64) for w in ws), 2, causal)
            assert_close(got, expected, what="multi_head_attention", atol=1e-9,
                         context=call_repr("multi_head_attention", x, *ws, n_heads=2, causal=causal) + EXTREME_NOTE)


# ---------------------------------------------------------------- Exercise 1.5: online softmax

def _unpack_pair(result, what):
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        raise AssertionError(f"{what}: expected a pair (out, lse), got {type(result).__name__}")
    return result


def _online_case(fn, seed, batch, n_q, n_k, d, d_v, block, logit_scale=1.0):
    _, q, k, v = _attention_cases(seed, batch, n_q, n_k, d, d_v)
    q = q * logit_scale
    out, lse = _unpack_pair(fn(q, k, v, block), "online_softmax_attention")
    exp_out, exp_lse = _ref.attention(q, k, v, return_lse=True)
    ctx = call_repr("online_softmax_attention", q, k, v, block_size=block)
    assert_close(out, exp_out, what="online_softmax_attention: out", atol=1e-9, context=ctx)
    assert_close(lse, exp_lse, what="online_softmax_attention: lse", atol=1e-9, rtol=1e-12, context=ctx)


@CHECKS.add("1.5", "online_softmax_attention", "any block size", 3)
def _online_blocks(fn):
    # block sizes that divide n_k, do not divide it, equal 1, and exceed it
    for seed, batch, n_q, n_k, d, d_v, block in [
        (30, (), 5, 12, 4, 4, 4), (31, (), 9, 37, 8, 3, 8), (32, (2, 3), 17, 50, 8, 8, 16),
        (33, (2,), 6, 7, 4, 4, 1), (34, (), 4, 10, 4, 2, 64),
    ]:
        _online_case(fn, seed, batch, n_q, n_k, d, d_v, block)


@CHECKS.add("1.5", "online_softmax_attention", "large logits", 1)
def _online_large_logits(fn):
    # scores of order 1e3: a missing max-subtraction overflows; a missing rescale is wrong
    _online_case(fn, 35, (2,), 11, 41, 8, 8, 8, logit_scale=300.0)


@CHECKS.add("1.5", "online_softmax_attention", "extreme rows and float16 inputs", 1)
def _online_extreme(fn):
    # the running maximum starts thousands above or below 0 and moves by tens of units between blocks
    for seed, batch, n_q, n_k, d, block, dtype in [(37, (2,), 13, 45, 8, 8, np.float64),
                                                   (38, (), 12, 33, 16, 5, np.float16)]:
        q, k, v = extreme_qkv(seed, batch, n_q, n_k, d, 4, dtype)
        out, lse = _unpack_pair(fn(q, k, v, block), "online_softmax_attention")
        exp_out, exp_lse = _ref.attention(*(a.astype(np.float64) for a in (q, k, v)), return_lse=True)
        ctx = call_repr("online_softmax_attention", q, k, v, block_size=block) + EXTREME_NOTE
        assert_close(out, exp_out, what="online_softmax_attention: out", atol=1e-9, context=ctx)
        assert_close(lse, exp_lse, what="online_softmax_attention: lse", atol=1e-9, rtol=1e-12, context=ctx)


@CHECKS.add("1.5", "online_softmax_attention", "memory stays linear", 1)
def _online_memory(fn):
    n_q, n_k, d, block = 256, 16384, 16, 128
    _, q, k, v = _attention_cases(36, (), n_q, n_k, d, d)
    full = n_q * n_k * 8
    got, peak = traced_call(lambda: fn(q, k, v, block))
    out, lse = _unpack_pair(got, "online_softmax_attention")
    exp_out, exp_lse = _ref.attention(q, k, v, return_lse=True)
    ctx = call_repr("online_softmax_attention", q, k, v, block_size=block) + " (the memory check counts only a right answer)"
    assert_close(out, exp_out, what="online_softmax_attention: out", atol=1e-9, context=ctx)
    assert_close(lse, exp_lse, what="online_softmax_attention: lse", atol=1e-9, rtol=1e-12, context=ctx)
    if peak > full // 4:
        raise AssertionError(
            f"online_softmax_attention: peak extra memory {peak / 2**20:.1f} MiB for n_q={n_q}, n_k={n_k}, "
            f"block_size={block}; the full score matrix is {full / 2**20:.1f} MiB. Build only one "
            f"[n_q, block_size] tile of scores at a time.")


# ---------------------------------------------------------------- Exercise 1.6: cost

def _cost_expected(n_q, n_k, d, d_v, n_heads, batch, bpe, causal):
    c = _cost.attention_cost(n_q, n_k, d, d_v, n_heads=n_heads, batch=batch, bytes_per_element=bpe, causal=causal)
    return {"pairs": c.pairs, "flops": c.matmul_flops, "score_bytes": c.score_bytes}


def _cost_compare(fn, args, kwargs):
    expected = _cost_expected(*args, kwargs.get("n_heads", 1), kwargs.get("batch", 1),
                              kwargs.get("bytes_per_element", 4), kwargs.get("causal", False))
    assert_counts_equal(fn(*args, **kwargs), expected, what="attention_cost",
                        context=call_repr("attention_cost", *args, **kwargs))


@CHECKS.add("1.6", "attention_cost", "dense counts", 1)
def _cost_dense(fn):
    for args, kwargs in [((4, 4, 8, 8), {}), ((1000, 3000, 64, 32), {}),
                         ((4096, 4096, 64, 64), {"n_heads": 8, "batch": 2, "bytes_per_element": 2})]:
        _cost_compare(fn, args, kwargs)


@CHECKS.add("1.6", "attention_cost", "causal counts", 1)
def _cost_causal(fn):
    for args, kwargs in [((5, 5, 8, 8), {"causal": True}), ((3, 7, 4, 4), {"causal": True}),
                         ((7, 3, 4, 4), {"causal": True, "n_heads": 2}),
                         ((1023, 1023, 64, 64), {"causal": True, "batch": 3})]:
        _cost_compare(fn, args, kwargs)
