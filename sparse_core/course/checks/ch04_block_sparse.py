"""Graded checks for Chapter 4 (block-sparse layouts and kernels).

Expected answers come from code that shares nothing with the exercises: layouts from the
patterns' closed-form ``to_layout`` (and a plain double loop for random masks), outputs from
the float64 dense oracle :func:`sparse_core.attention.reference.attention` with the layout expanded to a
token mask, gradients from PyTorch autograd through that oracle, and FLOPs from
:meth:`BlockLayout.flops`. Inputs: seeded, lengths that are not multiples of the block size,
block rows with no kept block, token masks with fully masked rows, batches and heads.

The GPU puzzle (4.5) runs the reader's kernel in Numba's CUDA simulator in a child process
(:mod:`sparse_core.kernels.cudasim`), with arrays that count every global read and shared
arrays that report races the plain simulator would hide; expected scores come from a float64
matrix product cut into tiles by a plain loop, read limits from the layout. Expected read
counts (4.6) come from walking every thread of every kept block.
"""
from __future__ import annotations

import numpy as np

from ... import patterns as P
from ...attention import reference as _ref
from ...bench.timing import traced_call
from ..extremes import EXTREME_NOTE, extreme_qkv
from ..compare import as_array, assert_close, call_repr, draw_mask_diff
from . import CheckList

CHECKS = CheckList()
# what each exercise returns, as its docstring says: every call in every check is held to it
CHECKS.returns("4.1", "(integer array, integer array)")
CHECKS.returns("4.2", "(float64 array, float64 array)")
CHECKS.returns("4.3", "(float64 array, float64 array, float64 array)")
CHECKS.returns("4.4", "int")
CHECKS.returns("4.5", "kernel")
CHECKS.returns("4.6", "(int, int)")

ATOL64 = 1e-9  # float64 inputs: rounding of a few hundred accumulations
ATOL32 = 2e-5  # float32 inputs: allow float32 arithmetic inside the student's code


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


# ---------------------------------------------------------------- layouts used by the checks

def _csr_of_blocks(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """CSR of a bool [n_qb, n_kb] block table, written as a plain loop (independent of 4.1)."""
    row_ptr, col_idx = [0], []
    for r in range(blocks.shape[0]):
        for c in range(blocks.shape[1]):
            if blocks[r, c]:
                col_idx.append(c)
        row_ptr.append(len(col_idx))
    return np.array(row_ptr, dtype=np.int64), np.array(col_idx, dtype=np.int64)


def _blocks_of_mask_loop(mask: np.ndarray, B: int) -> np.ndarray:
    n_q, n_k = mask.shape
    out = np.zeros((_ceil(n_q, B), _ceil(n_k, B)), dtype=bool)
    for r in range(out.shape[0]):
        for c in range(out.shape[1]):
            out[r, c] = bool(mask[r * B:(r + 1) * B, c * B:(c + 1) * B].any())
    return out


def _token_mask_of_csr(row_ptr, col_idx, B: int, n_q: int, n_k: int) -> np.ndarray:
    """Bool [n_q, n_k]: True on every pair of every kept block."""
    out = np.zeros((n_q, n_k), dtype=bool)
    for r in range(len(row_ptr) - 1):
        for p in range(row_ptr[r], row_ptr[r + 1]):
            c = int(col_idx[p])
            out[r * B:(r + 1) * B, c * B:(c + 1) * B] = True
    return out


def _random_blocks(rng, n_q, n_k, B, density, empty_rows=()):
    blocks = rng.random((_ceil(n_q, B), _ceil(n_k, B))) < density
    blocks[:, -1] |= rng.random(blocks.shape[0]) < 0.5  # the short edge column appears often
    for r in empty_rows:
        blocks[r] = False  # a query block with no kept block
    return blocks


def _pattern_layout(pattern, n_q, n_k, B):
    lay = pattern.to_layout(n_q, n_k, B, 1)
    return (np.asarray(lay.indptr[0], dtype=np.int64), np.asarray(lay.indices, dtype=np.int64),
            pattern.to_dense(n_q, n_k, 1)[0], lay)


def _layout_pair(result, what):
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        raise AssertionError(f"{what}: expected a pair (row_ptr, col_idx), got {type(result).__name__}")
    out = []
    for name, x in zip(("row_ptr", "col_idx"), result):
        a = as_array(x, f"{what}: {name}")
        if a.ndim != 1 or (a.size and a.dtype.kind not in "iu"):
            raise AssertionError(f"{what}: {name} must be a 1-D integer array, got {a.dtype}{list(a.shape)}")
        out.append(a.astype(np.int64))
    return out


def _blocks_from_csr_safe(row_ptr, col_idx, n_qb, n_kb):
    """Block table drawn from a (possibly wrong) CSR, for messages; None if it cannot be read."""
    try:
        out = np.zeros((n_qb, n_kb), dtype=bool)
        for r in range(min(n_qb, len(row_ptr) - 1)):
            out[r, col_idx[row_ptr[r]:row_ptr[r + 1]]] = True
        return out
    except Exception:  # noqa: BLE001 - only used to draw a picture
        return None


def _compare_layout(got, exp_rp, exp_ci, ctx):
    rp, ci = _layout_pair(got, "layout_from_mask")
    head = f"layout_from_mask for {ctx}"
    n_qb = exp_rp.size - 1
    n_kb = int(exp_ci.max()) + 1 if exp_ci.size else 1
    if rp.shape != exp_rp.shape or not np.array_equal(rp, exp_rp) or not np.array_equal(ci, exp_ci):
        expected_blocks = _blocks_from_csr_safe(exp_rp, exp_ci, n_qb, max(n_kb, int(ci.max(initial=0)) + 1))
        yours_blocks = _blocks_from_csr_safe(rp, ci, n_qb, expected_blocks.shape[1])
        picture = ("\n    kept blocks (# = kept):\n" + draw_mask_diff(yours_blocks, expected_blocks)
                   if yours_blocks is not None else "")
        raise AssertionError(
            f"{head}: wrong layout\n    row_ptr yours:    {rp.tolist()[:40]}\n    row_ptr expected: {exp_rp.tolist()[:40]}"
            f"\n    col_idx yours:    {ci.tolist()[:40]}\n    col_idx expected: {exp_ci.tolist()[:40]}{picture}")


# ---------------------------------------------------------------- Exercise 4.1: layout from mask

@CHECKS.add("4.1", "layout_from_mask", "layouts of patterns", 2)
def _layout_patterns(fn):
    cases = [
        (P.sliding_window(5, causal=True), 23, 23, 4),
        (P.sliding_window(3), 30, 30, 8),  # lengths not multiples of B: short edge blocks
        (P.causal(), 13, 29, 4),  # n_q != n_k, top-left aligned
        (P.causal(), 29, 13, 4),
        (P.strided(6), 37, 37, 5),
        (P.union(P.sliding_window(2), P.global_tokens([0, 17])), 41, 41, 8),
        (P.dilated(2, 4), 33, 33, 4),
    ]
    for pattern, n_q, n_k, B in cases:
        rp, ci, mask, _ = _pattern_layout(pattern, n_q, n_k, B)
        before = mask.copy()
        got = fn(mask, B)
        if not np.array_equal(before, mask):
            raise AssertionError("layout_from_mask: your function modified the mask in place; work on a copy")
        _compare_layout(got, rp, ci, f"{pattern!r}, n_q={n_q}, n_k={n_k}, block_size={B}")


@CHECKS.add("4.1", "layout_from_mask", "random masks and edge blocks", 2)
def _layout_random(fn):
    for seed, n_q, n_k, B, density in [(40, 17, 17, 4, 0.02), (41, 9, 26, 3, 0.05), (42, 26, 9, 5, 0.04),
                                       (43, 7, 7, 1, 0.3), (44, 6, 11, 16, 0.1), (45, 64, 64, 8, 0.004)]:
        rng = _rng(seed)
        mask = rng.random((n_q, n_k)) < density  # isolated allowed pairs: one is enough to keep a block
        mask[min(n_q - 1, B):min(n_q, 2 * B)] = False  # an empty block row (where there is one)
        mask[-1, -1] = True  # the bottom-right, possibly short, block
        rp, ci = _csr_of_blocks(_blocks_of_mask_loop(mask, B))
        _compare_layout(fn(mask, B), rp, ci, f"a random mask [{n_q}, {n_k}] with {int(mask.sum())} allowed pairs, "
                                           f"block_size={B}")


# ---------------------------------------------------------------- Exercise 4.2: forward

def _qkv(rng, batch, n_q, n_k, d, d_v, dtype=np.float64):
    return (rng.standard_normal(batch + (n_q, d)).astype(dtype), rng.standard_normal(batch + (n_k, d)).astype(dtype),
            rng.standard_normal(batch + (n_k, d_v)).astype(dtype))


def _out_lse(result, what):
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        raise AssertionError(f"{what}: expected a pair (out, lse), got {type(result).__name__}")
    return result


def _fwd_case(fn, q, k, v, rp, ci, B, mask=None, scale=None, atol=ATOL64, note=""):
    n_q, n_k = q.shape[-2], k.shape[-2]
    allowed = _token_mask_of_csr(rp, ci, B, n_q, n_k)
    if mask is not None:
        allowed = allowed & mask
    exp_out, exp_lse = _ref.attention(q, k, v, mask=allowed, scale=scale, return_lse=True)
    kw = {"mask": mask} if mask is not None else {}
    if scale is not None:
        kw["scale"] = scale
    ctx = call_repr("block_sparse_forward", q, k, v, rp, ci, B, **kw) + note
    inputs = [x.copy() for x in (q, k, v)]
    with np.errstate(divide="ignore"):
        out, lse = _out_lse(fn(q, k, v, rp, ci, B, **kw), "block_sparse_forward")
    if any(not np.array_equal(a, b, equal_nan=True) for a, b in zip(inputs, (q, k, v))):
        raise AssertionError("block_sparse_forward: your function modified q, k or v in place")
    assert_close(out, exp_out, what="block_sparse_forward: out", atol=atol, context=ctx)
    assert_close(lse, exp_lse, what="block_sparse_forward: lse", atol=atol, rtol=1e-12 if atol == ATOL64 else 1e-6,
                 context=ctx)


@CHECKS.add("4.2", "block_sparse_forward", "whole kept blocks", 2)
def _fwd_whole_blocks(fn):
    for seed, batch, n_q, n_k, d, d_v, B in [(50, (), 20, 20, 8, 8, 4), (51, (2,), 37, 29, 8, 5, 8),
                                             (52, (2, 3), 45, 45, 16, 16, 16), (53, (), 9, 33, 4, 3, 32)]:
        rng = _rng(seed)
        q, k, v = _qkv(rng, batch, n_q, n_k, d, d_v)
        rp, ci = _csr_of_blocks(_random_blocks(rng, n_q, n_k, B, 0.4, empty_rows=(0,)))
        _fwd_case(fn, q, k, v, rp, ci, B, note=" (no token mask: every pair of a kept block; block row 0 empty)")


@CHECKS.add("4.2", "block_sparse_forward", "token mask and fully masked rows", 2)
def _fwd_token_mask(fn):
    for seed, pattern, batch, n_q, n_k, B in [
        (54, P.sliding_window(6, causal=True), (2,), 37, 37, 8),
        (55, P.causal(), (3,), 21, 30, 4),
        (56, P.strided(5), (2, 2), 40, 40, 8),
    ]:
        rng = _rng(seed)
        q, k, v = _qkv(rng, batch, n_q, n_k, 8, 6)
        rp, ci, mask, _ = _pattern_layout(pattern, n_q, n_k, B)
        _fwd_case(fn, q, k, v, rp, ci, B, mask=mask, note=f" (layout and token mask of {pattern!r})")
    # a random token mask with fully masked rows inside kept blocks, per head
    rng = _rng(57)
    q, k, v = _qkv(rng, (2,), 30, 30, 8, 8)
    mask = rng.random((2, 30, 30)) < 0.15
    mask[:, [0, 9, 29]] = False
    rp, ci = _csr_of_blocks(_blocks_of_mask_loop(mask.any(0), 8))
    _fwd_case(fn, q, k, v, rp, ci, 8, mask=mask, note=" (random per-head mask; rows 0, 9, 29 fully masked)")


@CHECKS.add("4.2", "block_sparse_forward", "large logits", 1)
def _fwd_large_logits(fn):
    # scores of order 1e3 and several kept blocks per row: without the max shift exp overflows,
    # without the rescale the earlier blocks keep stale weights
    rng = _rng(58)
    q, k, v = _qkv(rng, (2,), 33, 50, 8, 8)
    rp, ci = _csr_of_blocks(_random_blocks(rng, 33, 50, 8, 0.7))
    _fwd_case(fn, q * 300.0, k, v, rp, ci, 8, note=" (q scaled by 300: scores of order 1e3)")


@CHECKS.add("4.2", "block_sparse_forward", "explicit scale and float32", 1)
def _fwd_scale_dtype(fn):
    rng = _rng(59)
    q, k, v = _qkv(rng, (3,), 26, 19, 8, 8)
    rp, ci = _csr_of_blocks(_random_blocks(rng, 26, 19, 4, 0.5))
    _fwd_case(fn, q, k, v, rp, ci, 4, scale=0.3, note=" (explicit scale=0.3)")
    q, k, v = _qkv(rng, (2, 2), 40, 40, 16, 16, dtype=np.float32)
    rp, ci, mask, _ = _pattern_layout(P.sliding_window(7, causal=True), 40, 40, 16)
    _fwd_case(fn, q, k, v, rp, ci, 16, mask=mask, atol=ATOL32, note=" (float32 inputs)")


@CHECKS.add("4.2", "block_sparse_forward", "extreme rows and float16 inputs", 1)
def _fwd_extreme(fn):
    for seed, batch, n_q, n_k, d, B, dtype in [(62, (2,), 30, 37, 8, 8, np.float64), (63, (), 25, 25, 16, 4, np.float16)]:
        rng = _rng(seed)
        q, k, v = extreme_qkv(seed, batch, n_q, n_k, d, 5, dtype)
        rp, ci = _csr_of_blocks(_random_blocks(rng, n_q, n_k, B, 0.6))
        allowed = _token_mask_of_csr(rp, ci, B, n_q, n_k)
        exp_out, exp_lse = _ref.attention(*(a.astype(np.float64) for a in (q, k, v)), mask=allowed, return_lse=True)
        ctx = call_repr("block_sparse_forward", q, k, v, rp, ci, B) + EXTREME_NOTE
        with np.errstate(divide="ignore"):
            out, lse = _out_lse(fn(q, k, v, rp, ci, B), "block_sparse_forward")
        assert_close(out, exp_out, what="block_sparse_forward: out", atol=ATOL64, context=ctx)
        assert_close(lse, exp_lse, what="block_sparse_forward: lse", atol=ATOL64, rtol=1e-12, context=ctx)


@CHECKS.add("4.2", "block_sparse_forward", "skipped blocks are never read", 1)
def _fwd_skips_blocks(fn):
    # keys/values of blocks no query keeps, and queries of an empty block row, hold NaN: a kernel
    # that only visits kept blocks never reads them (a dense computation multiplied by a mask does)
    rng = _rng(60)
    n, B = 44, 8
    blocks = _random_blocks(rng, n, n, B, 0.35, empty_rows=(2,))
    blocks[:, [1, 3]] = False
    rp, ci = _csr_of_blocks(blocks)
    q, k, v = _qkv(rng, (2,), n, n, 8, 8)
    q[:, 2 * B:3 * B] = np.nan
    k[:, B:2 * B] = np.nan
    v[:, B:2 * B] = np.nan
    k[:, 3 * B:4 * B] = np.inf
    v[:, 3 * B:4 * B] = -np.inf
    n_q = n_k = n
    allowed = _token_mask_of_csr(rp, ci, B, n_q, n_k)
    clean = [np.where(np.isfinite(x), x, 0.0) for x in (q, k, v)]
    exp_out, exp_lse = _ref.attention(*clean, mask=allowed, return_lse=True)
    ctx = call_repr("block_sparse_forward", q, k, v, rp, ci, B) + (
        " (key blocks 1 and 3 are kept by no query and hold NaN/inf; query block 2 keeps nothing and holds NaN)")
    with np.errstate(all="ignore"):
        out, lse = _out_lse(fn(q, k, v, rp, ci, B), "block_sparse_forward")
    assert_close(out, exp_out, what="block_sparse_forward: out", atol=ATOL64, context=ctx)
    assert_close(lse, exp_lse, what="block_sparse_forward: lse", atol=ATOL64, rtol=1e-12, context=ctx)


@CHECKS.add("4.2", "block_sparse_forward", "memory stays per tile", 1)
def _fwd_memory(fn):
    n_q, n_k, d, B = 256, 16384, 16, 64
    rng = _rng(61)
    q, k, v = _qkv(rng, (), n_q, n_k, d, d)
    rp, ci = _csr_of_blocks(_random_blocks(rng, n_q, n_k, B, 0.03))
    full = n_q * n_k * 8
    got, peak = traced_call(lambda: fn(q, k, v, rp, ci, B))
    out, lse = _out_lse(got, "block_sparse_forward")
    exp_out, exp_lse = _ref.attention(q, k, v, mask=_token_mask_of_csr(rp, ci, B, n_q, n_k), return_lse=True)
    ctx = call_repr("block_sparse_forward", q, k, v, rp, ci, B) + " (the memory check counts only a right answer)"
    assert_close(out, exp_out, what="block_sparse_forward: out", atol=ATOL64, context=ctx)
    assert_close(lse, exp_lse, what="block_sparse_forward: lse", atol=ATOL64, rtol=1e-12, context=ctx)
    if peak > full // 4:
        raise AssertionError(
            f"block_sparse_forward: peak extra memory {peak / 2**20:.1f} MiB for n_q={n_q}, n_k={n_k}, "
            f"block_size={B} with {ci.size} kept blocks; the full score matrix is {full / 2**20:.1f} MiB. "
            "Build one [B, B] tile of scores at a time, only for kept blocks.")


# ---------------------------------------------------------------- Exercise 4.3: backward of a block row

def _bwd_expected(q, k, v, do, allowed, scale, r0, r1):
    import torch

    qt, kt, vt = (torch.tensor(x, dtype=torch.float64, requires_grad=True) for x in (q, k, v))
    out = _ref.attention(qt, kt, vt, mask=torch.from_numpy(allowed), scale=scale)
    sel = np.zeros_like(do)
    sel[r0:r1] = do[r0:r1]
    (out * torch.from_numpy(sel)).sum().backward()
    return qt.grad.numpy()[r0:r1], kt.grad.numpy(), vt.grad.numpy()


def _bwd_triple(result):
    if not isinstance(result, (tuple, list)) or len(result) != 3:
        raise AssertionError(f"block_row_backward: expected a triple (dq, dk, dv), got {type(result).__name__}")
    return result


def _bwd_case(fn, seed, n_q, n_k, d, d_v, B, rp, ci, mask=None, scale=None, rows=None, note=""):
    rng = _rng(seed)
    q, k, v = _qkv(rng, (), n_q, n_k, d, d_v)
    do = rng.standard_normal((n_q, d_v))
    allowed = _token_mask_of_csr(rp, ci, B, n_q, n_k)
    if mask is not None:
        allowed &= mask
    out, lse = _ref.attention(q, k, v, mask=allowed, scale=scale, return_lse=True)
    delta = (do * out).sum(-1)
    kw = {}
    if mask is not None:
        kw["mask"] = mask
    if scale is not None:
        kw["scale"] = scale
    n_qb = len(rp) - 1
    for qb in (rows if rows is not None else range(n_qb)):
        r0, r1 = qb * B, min(qb * B + B, n_q)
        e_dq, e_dk, e_dv = _bwd_expected(q, k, v, do, allowed, scale, r0, r1)
        ctx = call_repr("block_row_backward", q, k, v, do, lse, delta, rp, ci, B, qb, **kw) + note
        with np.errstate(divide="ignore"):
            dq, dk, dv = _bwd_triple(fn(q, k, v, do, lse, delta, rp, ci, B, qb, **kw))
        assert_close(dq, e_dq, what=f"block_row_backward: dq (rows {r0}..{r1 - 1})", atol=ATOL64, context=ctx)
        assert_close(dk, e_dk, what="block_row_backward: dk", atol=ATOL64, context=ctx)
        assert_close(dv, e_dv, what="block_row_backward: dv", atol=ATOL64, context=ctx)


@CHECKS.add("4.3", "block_row_backward", "whole kept blocks", 2)
def _bwd_whole_blocks(fn):
    rng = _rng(70)
    rp, ci = _csr_of_blocks(_random_blocks(rng, 21, 21, 4, 0.5, empty_rows=(1,)))
    _bwd_case(fn, 71, 21, 21, 8, 8, 4, rp, ci, note=" (no token mask; lengths not multiples of 4)")
    rp, ci = _csr_of_blocks(_random_blocks(rng, 30, 45, 8, 0.6))
    _bwd_case(fn, 72, 30, 45, 8, 5, 8, rp, ci, rows=(0, 3), note=" (n_q != n_k, d_v != d)")


@CHECKS.add("4.3", "block_row_backward", "token mask and fully masked rows", 2)
def _bwd_token_mask(fn):
    rp, ci, mask, _ = _pattern_layout(P.sliding_window(5, causal=True), 27, 27, 8)
    _bwd_case(fn, 73, 27, 27, 8, 8, 8, rp, ci, mask=mask, note=" (token mask of a causal sliding window)")
    rng = _rng(74)
    mask = rng.random((26, 26)) < 0.2
    mask[[2, 8, 25]] = False  # fully masked rows: lse = -inf
    rp, ci = _csr_of_blocks(_blocks_of_mask_loop(mask, 8))
    _bwd_case(fn, 75, 26, 26, 8, 8, 8, rp, ci, mask=mask, scale=0.4, rows=(0, 1, 3),
              note=" (random mask, rows 2, 8, 25 fully masked; scale=0.4)")


@CHECKS.add("4.3", "block_row_backward", "extreme rows and float16 inputs", 1)
def _bwd_extreme(fn):
    for seed, n_q, n_k, d, B, dtype in [(77, 22, 27, 8, 8, np.float64), (78, 18, 18, 16, 4, np.float16)]:
        rng = _rng(seed)
        q, k, v = extreme_qkv(seed, (), n_q, n_k, d, d, dtype)
        do = rng.standard_normal((n_q, d)).astype(dtype)
        rp, ci = _csr_of_blocks(_random_blocks(rng, n_q, n_k, B, 0.6))
        allowed = _token_mask_of_csr(rp, ci, B, n_q, n_k)
        q64, k64, v64, do64 = (a.astype(np.float64) for a in (q, k, v, do))
        out, lse = _ref.attention(q64, k64, v64, mask=allowed, return_lse=True)
        delta = (do64 * out).sum(-1)
        for qb in range(len(rp) - 1):
            r0, r1 = qb * B, min(qb * B + B, n_q)
            e_dq, e_dk, e_dv = _bwd_expected(q64, k64, v64, do64, allowed, None, r0, r1)
            ctx = call_repr("block_row_backward", q, k, v, do, lse, delta, rp, ci, B, qb) + EXTREME_NOTE
            with np.errstate(divide="ignore"):
                dq, dk, dv = _bwd_triple(fn(q, k, v, do, lse, delta, rp, ci, B, qb))
            scale_q = 4000.0 * np.sqrt(d)  # dq carries k of size ~6 times ds of size ~1; dk carries q of ~1e4
            assert_close(dq, e_dq, what=f"block_row_backward: dq (rows {r0}..{r1 - 1})", atol=ATOL64 * 10, context=ctx)
            assert_close(dk, e_dk, what="block_row_backward: dk", atol=ATOL64 * scale_q, context=ctx)
            assert_close(dv, e_dv, what="block_row_backward: dv", atol=ATOL64, context=ctx)


@CHECKS.add("4.3", "block_row_backward", "block rows add up to the full gradient", 1)
def _bwd_sums_to_full_gradient(fn):
    import torch

    rng = _rng(76)
    n, d, B = 37, 8, 8
    q, k, v = _qkv(rng, (), n, n, d, d)
    do = rng.standard_normal((n, d))
    rp, ci, mask, _ = _pattern_layout(P.strided(6), n, n, B)
    out, lse = _ref.attention(q, k, v, mask=mask, return_lse=True)
    delta = (do * out).sum(-1)
    dq, dk, dv = np.zeros_like(q), np.zeros_like(k), np.zeros_like(v)
    for qb in range(len(rp) - 1):
        r0, r1 = qb * B, min(qb * B + B, n)
        a, b, c = _bwd_triple(fn(q, k, v, do, lse, delta, rp, ci, B, qb, mask=mask))
        dq[r0:r1] = as_array(a, "block_row_backward: dq")
        dk += as_array(b, "block_row_backward: dk")
        dv += as_array(c, "block_row_backward: dv")
    qt, kt, vt = (torch.tensor(x, requires_grad=True) for x in (q, k, v))
    out_t = _ref.attention(qt, kt, vt, mask=torch.from_numpy(mask))
    out_t.backward(torch.from_numpy(do))
    ctx = "the shares of all block rows of a strided(6) layout, n=37, block_size=8, summed"
    for name, got, t in (("dQ", dq, qt), ("dK", dk, kt), ("dV", dv, vt)):
        assert_close(got, t.grad.numpy(), what=f"block_row_backward: full {name}", atol=ATOL64, context=ctx)


# ---------------------------------------------------------------- Exercise 4.4: FLOPs of a layout

def _flops_compare(fn, rp, ci, B, d, n_q, n_k, d_v, expected, note=""):
    kw = {} if d_v is None else {"d_v": d_v}
    got = fn(rp, ci, B, d, n_q, n_k, **kw)
    ctx = f"layout_flops(row_ptr, col_idx, block_size={B}, d={d}, n_q={n_q}, n_k={n_k}" + (
        f", d_v={d_v})" if d_v is not None else ")") + note
    if isinstance(got, (bool, np.bool_)) or not isinstance(got, (int, np.integer)):
        raise AssertionError(f"layout_flops: expected an int, got {type(got).__name__} ({got!r}) for {ctx}")
    if int(got) != int(expected):
        raise AssertionError(f"layout_flops for {ctx}\n    yours:    {int(got):,}\n    expected: {int(expected):,}")


@CHECKS.add("4.4", "layout_flops", "layouts of patterns", 1)
def _flops_patterns(fn):
    for pattern, n_q, n_k, B, d, d_v in [
        (P.sliding_window(100, causal=True), 1000, 1000, 64, 64, None),
        (P.sliding_window(100, causal=True), 1024, 1024, 64, 64, None),  # multiples: no short blocks
        (P.strided(32), 999, 999, 32, 32, 16),
        (P.causal(), 300, 777, 128, 64, 128),
        (P.dense(), 130, 70, 64, 16, None),
    ]:
        lay = pattern.to_layout(n_q, n_k, B, 1)
        _flops_compare(fn, lay.indptr[0].astype(np.int64), lay.indices.astype(np.int64), B, d, n_q, n_k, d_v,
                       lay.flops(d, d_v), note=f" (layout of {pattern!r})")


@CHECKS.add("4.4", "layout_flops", "edge blocks and d_v", 1)
def _flops_small(fn):
    # hand-checkable: blocks of 2 on n_q = n_k = 3 -> a 2x2, a 2x1, a 1x2 and a 1x1 block
    rp, ci = np.array([0, 2, 4]), np.array([0, 1, 0, 1])
    _flops_compare(fn, rp, ci, 2, 4, 3, 3, None, 2 * 8 * 9, note=" (every block of a 3x3 matrix in blocks of 2)")
    _flops_compare(fn, rp, ci, 2, 4, 3, 3, 1, 2 * 5 * 9, note=" (d_v = 1)")
    rp, ci = np.array([0, 0, 1, 1]), np.array([2])
    _flops_compare(fn, rp, ci, 4, 8, 11, 9, None, 2 * 16 * 4 * 1, note=" (one 4x1 edge block)")
    rng = _rng(80)
    for n_q, n_k, B in [(50, 61, 8), (64, 64, 16)]:
        blocks = _random_blocks(rng, n_q, n_k, B, 0.5, empty_rows=(0,))
        rp, ci = _csr_of_blocks(blocks)
        pairs = _token_mask_of_csr(rp, ci, B, n_q, n_k).sum()
        _flops_compare(fn, rp, ci, B, 16, n_q, n_k, 8, 2 * 24 * int(pairs), note=" (random layout)")


def _long_window_csr(n: int, B: int, reach_blocks: int):
    """CSR of a causal band of ``reach_blocks`` key blocks before each query block and its own, at length n."""
    nb = -(-n // B)
    r = np.arange(nb, dtype=np.int64)
    lo = np.maximum(r - reach_blocks, 0)
    counts = r - lo + 1
    rp = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    ci = (np.repeat(lo, counts) + np.arange(int(rp[-1])) - np.repeat(rp[:-1], counts)).astype(np.int64)
    return rp, ci


def _long_sizes(rp, ci, B, n_q, n_k):
    """Per kept block its rows |I_r| and columns |J_c|, as int64 (exact: the sums stay below 2^63)."""
    counts = np.diff(rp)
    rows = np.repeat(np.minimum(B, n_q - np.arange(counts.size, dtype=np.int64) * B), counts)
    cols = np.minimum(B, n_k - ci * B)
    return rows, cols


@CHECKS.add("4.4", "layout_flops", "a million tokens: counts beyond 32-bit integers", 1)
def _flops_long(fn):
    # 1,048,583 tokens, blocks of 64, 33 key blocks per row: ~2.3e11 FLOPs, past 2^31 (an int32 sum wraps)
    n, B = 1_048_583, 64
    rp, ci = _long_window_csr(n, B, 32)
    rows, cols = _long_sizes(rp, ci, B, n, n)
    expected = 2 * (128 + 128) * int((rows * cols).sum())
    _flops_compare(fn, rp, ci, B, 128, n, n, None, expected,
                   note=f" (causal band of 33 blocks at n={n:,}; the answer {expected:,} exceeds 2^31)")


# ---------------------------------------------------------------- Exercise 4.5: the block-scores kernel (GPU puzzle)

def _scores_expected(q, k, rp, ci, B):
    """float64 [nnz, B, B]: the score tiles of the kept blocks, zero outside the data (a plain loop)."""
    n_q, n_k = q.shape[0], k.shape[0]
    full = q.astype(np.float64) @ k.astype(np.float64).T
    out = np.zeros((len(ci), B, B))
    for r in range(len(rp) - 1):
        for p in range(rp[r], rp[r + 1]):
            c = int(ci[p])
            rows, cols = min(B, n_q - r * B), min(B, n_k - c * B)
            out[p, :rows, :cols] = full[r * B:r * B + rows, c * B:c * B + cols]
    return out


def _scores_case(seed, n_q, n_k, d, B, blocks=None, density=0.5, empty_rows=(), note=""):
    rng = _rng(seed)
    q = rng.standard_normal((n_q, d)).astype(np.float32)
    k = rng.standard_normal((n_k, d)).astype(np.float32)
    if blocks is None:
        blocks = _random_blocks(rng, n_q, n_k, B, density, empty_rows)
    rp, ci = _csr_of_blocks(blocks)
    return dict(constants=[B, d], grid=[len(rp) - 1], block=[B, B],
                inputs={"q": q, "k": k, "indptr": rp, "indices": ci},
                outputs={"s": np.full((len(ci), B, B), np.nan, np.float32)},
                args=[(n, None) for n in ("q", "k", "indptr", "indices", "s")],
                note=f"n_q={n_q}, n_k={n_k}, d={d}, block_size={B}, {len(ci)} kept blocks{note}")


def _scores_run(fn, cases):
    """Run the reader's kernel on the cases in the strict simulator; check every score tile."""
    from ...kernels.cudasim import run_cases

    results = run_cases(fn, cases, timeout=45.0, what="block_scores_kernel")
    for case, r in zip(cases, results):
        ctx = (f"kernel[({case['grid'][0]},), ({case['block'][0]}, {case['block'][1]})](q, k, indptr, indices, s)"
               f" with {case['note']}")
        if r["error"]:
            raise AssertionError(f"block_scores_kernel: the kernel failed in the simulator for {ctx}:\n    "
                                 + r["error"].replace("\n", "\n    ")
                                 + (f"\n  in your code:\n{r['where']}" if r.get("where") else ""))
        i = case["inputs"]
        expected = _scores_expected(i["q"], i["k"], i["indptr"], i["indices"], case["constants"][0])
        assert_close(r["arrays"]["s"], expected, what="block_scores_kernel: s", atol=1e-4, rtol=1e-5, context=ctx)
    return results


@CHECKS.add("4.5", "block_scores_kernel", "score tiles of kept blocks", 2)
def _scores_small(fn):
    _scores_run(fn, [
        _scores_case(90, 16, 16, 8, 4, density=0.6),
        _scores_case(91, 24, 24, 8, 8, blocks=np.tril(np.ones((3, 3), bool)), note=" (causal layout)"),
    ])


@CHECKS.add("4.5", "block_scores_kernel", "edge blocks, d > block size, empty block rows", 2)
def _scores_edges(fn):
    _scores_run(fn, [
        _scores_case(92, 13, 18, 6, 4, density=0.6, note=" (lengths and d not multiples of the block size)"),
        _scores_case(93, 10, 7, 12, 4, density=0.8, empty_rows=(1,),
                     note=" (d = 3 blocks; query block 1 keeps nothing)"),
        _scores_case(94, 5, 9, 2, 3, density=1.0, note=" (d < block size)"),
    ])


@CHECKS.add("4.5", "block_scores_kernel", "global reads of a tiled kernel", 2)
def _scores_reads(fn):
    case = _scores_case(95, 22, 21, 8, 4, density=0.45, empty_rows=(2,))
    (r,) = _scores_run(fn, [case])
    rp, ci = case["inputs"]["indptr"], case["inputs"]["indices"]
    B, d = case["constants"]
    n_q, n_k = case["inputs"]["q"].shape[0], case["inputs"]["k"].shape[0]
    keepers = np.zeros(n_k, np.int64)  # per key row: how many query blocks keep its block
    for c in ci:
        keepers[int(c) * B:int(c) * B + B] += 1
    limits = {"q": np.ones((n_q, d), np.int64), "k": np.repeat(keepers[:, None], d, axis=1)}
    why = {"q": "each element of q at most once: stage the query block in shared memory before the loop over "
                "kept blocks",
           "k": "each element of k at most once per query block that keeps its block: stage each K tile in "
                "shared memory once and let every thread read it from there"}
    for name in ("q", "k"):
        reads = r["reads"][name]
        over = reads > limits[name]
        if over.any():
            idx = tuple(int(i) for i in np.argwhere(over)[0])
            raise AssertionError(
                f"block_scores_kernel: too many global reads of {name} for {case['note']}\n"
                f"    yours:    {int(reads.sum()):,} reads of {name}; {name}[{idx[0]}, {idx[1]}] was read "
                f"{int(reads[idx])} times\n"
                f"    allowed:  {int(limits[name].sum()):,} reads of {name}; {name}[{idx[0]}, {idx[1]}] at most "
                f"{int(limits[name][idx])} times\n    A tiled kernel reads {why[name]}.")


# ---------------------------------------------------------------- Exercise 4.6: global reads, naive and tiled

def _reads_expected(rp, ci, B, n_q, n_k, d):
    """(naive, tiled) by walking every thread of every kept block (independent of the closed form)."""
    naive, tiled = 0, 0
    for r in range(len(rp) - 1):
        tiled += sum(d for i in range(B) if r * B + i < n_q)  # the query block is staged once
        for p in range(rp[r], rp[r + 1]):
            c = int(ci[p])
            tiled += sum(d for j in range(B) if c * B + j < n_k)
            for i in range(B):
                for j in range(B):
                    if r * B + i < n_q and c * B + j < n_k:
                        naive += 2 * d
    return naive, tiled


def _reads_compare(fn, rp, ci, B, n_q, n_k, d, note="", expected=None):
    """Compare with ``expected`` (default: the thread walk of :func:`_reads_expected`)."""
    got = fn(rp, ci, B, n_q, n_k, d)
    ctx = f"global_reads(row_ptr, col_idx, block_size={B}, n_q={n_q}, n_k={n_k}, d={d}){note}"
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        raise AssertionError(f"global_reads: expected a pair (naive, tiled), got {got!r} for {ctx}")
    for x in got:
        if isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, np.integer)):
            raise AssertionError(f"global_reads: expected two ints, got {type(x).__name__} ({x!r}) for {ctx}")
    exp = _reads_expected(rp, ci, B, n_q, n_k, d) if expected is None else expected
    if tuple(int(x) for x in got) != exp:
        raise AssertionError(f"global_reads for {ctx}\n    yours:    naive {int(got[0]):,}, tiled {int(got[1]):,}\n"
                             f"    expected: naive {exp[0]:,}, tiled {exp[1]:,}")


@CHECKS.add("4.6", "global_reads", "layouts of patterns", 1)
def _reads_patterns(fn):
    for pattern, n, B, d in [(P.sliding_window(20, causal=True), 100, 16, 8), (P.causal(), 64, 16, 4),
                             (P.strided(8), 50, 8, 16), (P.dense(), 33, 8, 2)]:
        lay = pattern.to_layout(n, n, B, 1)
        _reads_compare(fn, lay.indptr[0].astype(np.int64), lay.indices.astype(np.int64), B, n, n, d,
                       note=f" (layout of {pattern!r})")


@CHECKS.add("4.6", "global_reads", "a million tokens: counts beyond 32-bit integers", 1)
def _reads_long(fn):
    n, B, d = 1_048_583, 64, 128
    rp, ci = _long_window_csr(n, B, 32)
    rows, cols = _long_sizes(rp, ci, B, n, n)
    exp = (2 * d * int((rows * cols).sum()), n * d + d * int(cols.sum()))  # the closed form: a walk is too slow here
    _reads_compare(fn, rp, ci, B, n, n, d, note=" (causal band of 33 blocks; both counts exceed 2^31)", expected=exp)


@CHECKS.add("4.6", "global_reads", "edge blocks and empty block rows", 1)
def _reads_edges(fn):
    rp, ci = np.array([0, 1, 2]), np.array([1, 0])
    _reads_compare(fn, rp, ci, 2, 3, 3, 1, note=" (the docstring's example)")
    rng = _rng(96)
    for n_q, n_k, B, d in [(21, 30, 4, 8), (9, 5, 4, 3), (40, 17, 8, 5)]:
        rp, ci = _csr_of_blocks(_random_blocks(rng, n_q, n_k, B, 0.5, empty_rows=(1,)))
        _reads_compare(fn, rp, ci, B, n_q, n_k, d, note=" (random layout; block row 1 keeps nothing)")
