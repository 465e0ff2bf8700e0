"""Graded checks for Chapter 6 (content-based sparsity: top-k, routing, learned masks, NSA).

Expected answers come from the library, never from the reference solutions: the top-k pattern
(:func:`sparse_core.patterns.topk`), the float64 oracle (:mod:`sparse_core.attention.reference`), the
routing assignment and the NSA block selection of :mod:`sparse_core.approx`, and
``scipy.special.entr`` for entropies. Inputs are seeded; shapes include batches and heads,
rectangular score matrices, lengths that are not multiples of the block size, ties and fully
masked rows.
"""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import torch
from scipy.special import entr

from ...attention import reference as _ref
from ...approx._common import masked_attention as _torch_masked_attention
from ...approx.nsa import compressed_keep as _compressed_keep
from ...approx.nsa import select_blocks as _lib_select_blocks
from ...approx.routing import assign_clusters as _lib_assign
from ...patterns import topk as _topk_pattern
from ..extremes import EXTREME_NOTE, extreme_qkv
from ..compare import as_array, assert_close, assert_mask_equal, call_repr
from . import CheckList

CHECKS = CheckList()
# what each exercise returns, as its docstring says: every call in every check is held to it
CHECKS.returns("6.1", "bool array")
CHECKS.returns("6.2", "float64 array")
CHECKS.returns("6.3", "integer array")
CHECKS.returns("6.4", "bool array")
CHECKS.returns("6.5", "float64 array")
CHECKS.returns("6.6", "float64 array")
CHECKS.returns("6.7", "float")
CHECKS.returns("6.8", "bool array")

ATOL64 = 1e-10  # float64 inputs: answers must match to rounding
ATOL32 = 2e-5  # float32 inputs


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _unchanged(before: np.ndarray, after: np.ndarray, what: str) -> None:
    if not np.array_equal(before, after, equal_nan=True):
        raise AssertionError(f"{what}: your function modified its input array in place; work on a copy")


def _expected_topk(scores: np.ndarray, k: int, causal: bool) -> np.ndarray:
    """The library's top-k pattern, for any leading dimensions."""
    n_q, n_k = scores.shape[-2:]
    flat = scores.reshape(-1, n_q, n_k)
    dense = _topk_pattern(flat, k, causal).to_dense(n_q, n_k, flat.shape[0])
    return dense.reshape(scores.shape)


def _check_mask(got, expected, what, context):
    """Compare masks of any rank; the picture shows the first slice that differs."""
    assert_mask_equal(got, expected, what=what, context=context)


# ---------------------------------------------------------------- Exercise 6.1: top-k mask

@CHECKS.add("6.1", "topk_mask", "largest scores per row", 2)
def _topk_random(fn):
    for seed, shape, k in [(0, (1, 5), 2), (1, (7, 13), 3), (2, (2, 3, 17, 33), 5), (3, (9, 9), 1),
                           (4, (4, 6), 6), (5, (3, 4), 10)]:
        scores = _rng(seed).standard_normal(shape)
        before = scores.copy()
        got = fn(scores, k)
        _unchanged(before, scores, "topk_mask")
        _check_mask(got, _expected_topk(scores, k, False), "topk_mask",
                    call_repr("topk_mask", scores, k) + " (keep the k LARGEST scores of each row)")


@CHECKS.add("6.1", "topk_mask", "ties go to the smaller index", 1)
def _topk_ties(fn):
    for seed, shape, k in [(6, (8, 12), 3), (7, (2, 10, 10), 4), (8, (5, 7), 1)]:
        scores = _rng(seed).integers(0, 3, size=shape).astype(np.float64)  # many equal scores
        _check_mask(fn(scores, k), _expected_topk(scores, k, False), "topk_mask",
                    call_repr("topk_mask", scores, k) + " (integer scores with ties: the smaller key index wins)")


@CHECKS.add("6.1", "topk_mask", "causal rows", 2)
def _topk_causal(fn):
    for seed, shape, k in [(9, (10, 10), 3), (10, (2, 2, 17, 17), 4), (11, (12, 7), 5), (12, (6, 15), 2),
                           (13, (8, 8), 1)]:
        scores = _rng(seed).standard_normal(shape)
        scores[..., 0, -1] = 50.0  # a huge score on a key the first query must not see
        _check_mask(fn(scores, k, True), _expected_topk(scores, k, True), "topk_mask",
                    call_repr("topk_mask", scores, k, causal=True)
                    + " (only keys j <= i compete; rows with fewer than k of them keep them all)")
    scores = _rng(14).integers(0, 2, size=(9, 9)).astype(np.float64)
    _check_mask(fn(scores, 3, True), _expected_topk(scores, 3, True), "topk_mask",
                call_repr("topk_mask", scores, 3, causal=True) + " (ties and causal)")


# ---------------------------------------------------------------- Exercise 6.2: top-k attention

def _qkv(seed, batch, n_q, n_k, d, d_v, dtype=np.float64):
    rng = _rng(seed)
    q = rng.standard_normal(batch + (n_q, d)).astype(dtype)
    k = rng.standard_normal(batch + (n_k, d)).astype(dtype)
    v = rng.standard_normal(batch + (n_k, d_v)).astype(dtype)
    return q, k, v


def _topk_attention_expected(q, k, v, top_k, causal, scale=None):
    q64, k64, v64 = (np.asarray(t, dtype=np.float64) for t in (q, k, v))
    tau = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = np.matmul(q64, np.swapaxes(k64, -1, -2)) * tau
    mask = _expected_topk(s, top_k, causal)
    return _ref.attention(q64, k64, v64, mask=mask, scale=tau)


@CHECKS.add("6.2", "topk_attention", "matches the oracle with the top-k mask", 2)
def _topk_attention_plain(fn):
    for seed, batch, n_q, n_k, d, d_v, top_k in [(20, (), 6, 9, 4, 3, 2), (21, (2,), 33, 17, 8, 8, 5),
                                                 (22, (2, 3), 19, 45, 16, 5, 7), (23, (), 5, 4, 4, 2, 1),
                                                 (24, (3,), 7, 6, 8, 4, 6)]:
        q, k, v = _qkv(seed, batch, n_q, n_k, d, d_v)
        assert_close(fn(q, k, v, top_k), _topk_attention_expected(q, k, v, top_k, False),
                     what="topk_attention", atol=ATOL64,
                     context=call_repr("topk_attention", q, k, v, top_k=top_k) + " (default scale 1/sqrt(d))")


@CHECKS.add("6.2", "topk_attention", "causal", 1)
def _topk_attention_causal(fn):
    for seed, batch, n, d, top_k in [(25, (), 12, 4, 3), (26, (2, 2), 37, 8, 5), (27, (), 20, 8, 1)]:
        q, k, v = _qkv(seed, batch, n, n, d, d)
        k[..., -1, :] = 5.0 * q[..., 0, :]  # the last key scores high with the first query: it must stay invisible
        assert_close(fn(q, k, v, top_k, True), _topk_attention_expected(q, k, v, top_k, True),
                     what="topk_attention", atol=ATOL64,
                     context=call_repr("topk_attention", q, k, v, top_k=top_k, causal=True))


@CHECKS.add("6.2", "topk_attention", "explicit scale and float32", 1)
def _topk_attention_scale_dtype(fn):
    q, k, v = _qkv(28, (2,), 11, 23, 8, 8)
    assert_close(fn(q, k, v, 4, False, 0.3), _topk_attention_expected(q, k, v, 4, False, 0.3),
                 what="topk_attention", atol=ATOL64, context=call_repr("topk_attention", q, k, v, top_k=4, scale=0.3))
    q, k, v = _qkv(29, (2, 2), 30, 31, 16, 16, dtype=np.float32)
    assert_close(fn(q, k, v, 6), _topk_attention_expected(q, k, v, 6, False), what="topk_attention",
                 atol=ATOL32, context=call_repr("topk_attention", q, k, v, top_k=6) + " (float32 inputs)")


@CHECKS.add("6.2", "topk_attention", "extreme rows and float16 inputs", 1)
def _topk_attention_extreme(fn):
    for seed, batch, n_q, n_k, d, top_k, causal, dtype in [(30, (2,), 13, 19, 8, 4, False, np.float64),
                                                           (31, (), 14, 14, 16, 3, True, np.float16)]:
        q, k, v = extreme_qkv(seed, batch, n_q, n_k, d, 4, dtype)
        assert_close(fn(q, k, v, top_k, causal), _topk_attention_expected(q, k, v, top_k, causal),
                     what="topk_attention", atol=ATOL64,
                     context=call_repr("topk_attention", q, k, v, top_k=top_k, causal=causal) + EXTREME_NOTE)


# ---------------------------------------------------------------- Exercise 6.3: k-means routing

def _route_expected(x, centroids):
    return _lib_assign(torch.from_numpy(np.asarray(x, dtype=np.float64)),
                       torch.from_numpy(np.asarray(centroids, dtype=np.float64))).numpy()


def _route_compare(fn, x, cent, note):
    ctx = call_repr("kmeans_route", x, cent) + note
    got = as_array(fn(x, cent), "kmeans_route")
    expected = _route_expected(x, cent)
    if got.shape != expected.shape:
        raise AssertionError(f"kmeans_route for {ctx}: wrong shape\n    yours:    {got.shape}\n    expected: {expected.shape}")
    if got.dtype.kind not in "iu":
        raise AssertionError(f"kmeans_route for {ctx}: expected integer cluster ids, got dtype {got.dtype}")
    bad = got != expected
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise AssertionError(
            f"kmeans_route for {ctx}: {int(bad.sum())} of {bad.size} ids differ (first at index {idx})\n"
            f"    yours:    {int(got[idx])}\n    expected: {int(expected[idx])}\n"
            f"    hint: compare directions (cosine similarity), not raw dot products or distances")


@CHECKS.add("6.3", "kmeans_route", "nearest centroid by cosine", 2)
def _route_random(fn):
    for seed, shape, n_c in [(30, (12, 4), 3), (31, (2, 3, 25, 8), 5), (32, (40, 16), 7)]:
        rng = _rng(seed)
        x = rng.standard_normal(shape) * rng.uniform(0.1, 10.0, size=shape[:-1] + (1,))  # rows of very different length
        cent = rng.standard_normal((n_c, shape[-1])) * rng.uniform(0.1, 10.0, size=(n_c, 1))
        before = x.copy()
        _route_compare(fn, x, cent, " (rows and centroids of different lengths)")
        _unchanged(before, x, "kmeans_route")


@CHECKS.add("6.3", "kmeans_route", "ties go to the smaller id", 1)
def _route_ties(fn):
    # Axis-aligned centroids make every cosine exact, so the ties below are exact in any implementation.
    eye = np.eye(4)
    cent = np.stack([2.0 * eye[1], eye[0], eye[1], eye[2], eye[3], 0.5 * eye[0]])  # ids 0 = 2 and 1 = 5 in direction
    rng = _rng(33)
    x = rng.integers(-3, 4, size=(3, 20, 4)).astype(np.float64)
    x[..., 0, :] = [3.0, 3.0, 1.0, 0.0]  # equally close to e0 (ids 1, 5) and e1 (ids 0, 2): id 0
    x[..., 1, :] = [0.0, 0.0, 2.0, 2.0]  # e2 (id 3) and e3 (id 4): id 3
    x[..., 2, :] = [5.0, 1.0, 0.0, 0.0]  # e0: ids 1 and 5, the smaller is 1
    x[(x == 0).all(-1)] = 1.0  # no zero rows
    _route_compare(fn, x, cent, " (equal cosines at several ids: the smaller id wins)")


# ---------------------------------------------------------------- Exercise 6.4: routing mask

def _routing_expected(q_ids, k_ids, causal):
    keep = np.asarray(q_ids)[..., :, None] == np.asarray(k_ids)[..., None, :]
    if causal:
        keep = keep & _ref.causal_mask(np.shape(q_ids)[-1], np.shape(k_ids)[-1])
    return keep


@CHECKS.add("6.4", "routing_mask", "same cluster", 1)
def _routing_plain(fn):
    for seed, qs, ks, n_c in [(40, (9,), (9,), 3), (41, (12,), (7,), 2), (42, (2, 3, 11), (2, 3, 16), 4),
                              (43, (2, 1, 8), (1, 3, 8), 3)]:
        rng = _rng(seed)
        q_ids, k_ids = rng.integers(0, n_c, size=qs), rng.integers(0, n_c, size=ks)
        _check_mask(fn(q_ids, k_ids), _routing_expected(q_ids, k_ids, False), "routing_mask",
                    call_repr("routing_mask", q_ids, k_ids) + " (rows are queries, columns keys)")


@CHECKS.add("6.4", "routing_mask", "causal", 1)
def _routing_causal(fn):
    for seed, qs, ks, n_c in [(44, (10,), (10,), 2), (45, (2, 13), (2, 13), 3), (46, (9,), (5,), 2),
                              (47, (5,), (9,), 2)]:
        rng = _rng(seed)
        q_ids, k_ids = rng.integers(0, n_c, size=qs), rng.integers(0, n_c, size=ks)
        _check_mask(fn(q_ids, k_ids, True), _routing_expected(q_ids, k_ids, True), "routing_mask",
                    call_repr("routing_mask", q_ids, k_ids, causal=True) + " (causal keeps j <= i, top-left aligned)")


# ---------------------------------------------------------------- Exercise 6.5: row entropy

def _entropy_expected(p):
    return entr(np.asarray(p, dtype=np.float64)).sum(axis=-1)


@CHECKS.add("6.5", "row_entropy", "entropy in nats", 2)
def _entropy_random(fn):
    for seed, shape in [(50, (1, 5)), (51, (7, 13)), (52, (2, 3, 17, 33))]:
        s = _rng(seed).standard_normal(shape) * 2
        p = _ref.masked_softmax(s)
        before = p.copy()
        assert_close(fn(p), _entropy_expected(p), what="row_entropy", atol=ATOL64,
                     context=call_repr("row_entropy", p) + " (natural log: nats)")
        _unchanged(before, p, "row_entropy")
    for n in (1, 2, 10, 128):
        p = np.full((3, n), 1.0 / n)
        assert_close(fn(p), np.full(3, math.log(n)), what="row_entropy", atol=ATOL64,
                     context=f"uniform rows over {n} keys (entropy log {n} = {math.log(n):.6f} nats)")


@CHECKS.add("6.5", "row_entropy", "zero probabilities give 0 log 0 = 0", 2)
def _entropy_zeros(fn):
    for seed, shape in [(53, (9, 9)), (54, (2, 4, 21, 34))]:
        rng = _rng(seed)
        mask = rng.random(shape) < 0.5
        mask[..., 0, :] = False  # a fully masked row: all zeros, entropy 0
        mask[..., 1, :] = False
        mask[..., 1, 3] = True  # a one-hot row: entropy 0
        p = _ref.masked_softmax(rng.standard_normal(shape) * 3, mask)
        got = as_array(fn(p), "row_entropy")
        if got.shape == _entropy_expected(p).shape and np.isnan(got).any():
            raise AssertionError("row_entropy: NaN for rows containing zeros -- 0 * log 0 is NaN in floating "
                                 "point; the convention is 0 log 0 = 0 (take the log only where p > 0)")
        assert_close(got, _entropy_expected(p), what="row_entropy", atol=ATOL64,
                     context=call_repr("row_entropy", p) + " (rows with zeros, a one-hot row, an all-zero row)")


# ---------------------------------------------------------------- Exercise 6.6: top mass

def _keys_kept(fraction: float, m: int) -> int:
    """ceil(fraction * m) with fraction read as the decimal it was written as (0.1, not 0.1000...0555)."""
    return math.ceil(Fraction(fraction).limit_denominator(10**6) * m)


def _top_mass_expected(p, fraction, mask=None):
    p = np.asarray(p, dtype=np.float64)
    allowed = np.ones(p.shape, dtype=bool) if mask is None else np.broadcast_to(mask, p.shape)
    out = np.zeros(p.shape[:-1])
    for idx in np.ndindex(*p.shape[:-1]):
        vals = np.sort(p[idx][allowed[idx]])[::-1]
        out[idx] = vals[:_keys_kept(fraction, vals.size)].sum()
    return out


def _top_mass_case(fn, p, fraction, mask, note):
    args = (p, fraction) if mask is None else (p, fraction, mask)
    kw = {} if mask is None else {"mask": mask}
    assert_close(fn(*args), _top_mass_expected(p, fraction, mask), what="top_mass", atol=ATOL64,
                 context=call_repr("top_mass", p, fraction, **kw) + note)


@CHECKS.add("6.6", "top_mass", "ceil of the fraction of keys", 2)
def _top_mass_plain(fn):
    for seed, shape, fraction in [(60, (3, 13), 0.25), (61, (4, 10), 0.25), (62, (2, 3, 13), 0.75),
                                  (63, (5, 8), 1.0), (64, (2, 7, 33), 0.5), (65, (6, 3), 0.125)]:
        p = _ref.masked_softmax(_rng(seed).standard_normal(shape) * 2)
        before = p.copy()
        _top_mass_case(fn, p, fraction, None, f" (each row keeps ceil({fraction} * {shape[-1]}) = "
                                               f"{_keys_kept(fraction, shape[-1])} keys)")
        _unchanged(before, p, "top_mass")


@CHECKS.add("6.6", "top_mass", "masked keys do not count", 2)
def _top_mass_masked(fn):
    for seed, shape, mshape, fraction in [(66, (12, 12), (12, 12), 0.25), (67, (2, 3, 17, 17), (17, 17), 0.5),
                                          (68, (9, 14), (9, 14), 0.75)]:
        rng = _rng(seed)
        mask = rng.random(mshape) < 0.6
        mask[..., 2, :] = False  # no allowed key: 0
        p = rng.random(shape)  # masked keys hold mass too: they must not be counted
        _top_mass_case(fn, p, fraction, mask, " (only allowed keys count, in m and in the sum)")
    n = 16
    causal = _ref.causal_mask(n, n)
    p = _ref.masked_softmax(_rng(69).standard_normal((2, n, n)), causal)
    _top_mass_case(fn, p, 0.25, causal, " (causal rows: row i has i + 1 allowed keys)")


@CHECKS.add("6.6", "top_mass", "decimal fractions", 1)
def _top_mass_decimal(fn):
    # 0.07 * 100 is 7.000000000000001 in floating point: a bare ceil keeps 8 keys, not 7
    for seed, shape, fraction in [(70, (4, 30), 0.1), (71, (3, 30), 0.2), (72, (2, 100), 0.07), (73, (3, 50), 0.14),
                                  (74, (3, 25), 0.28), (75, (2, 20), 0.55)]:
        p = _ref.masked_softmax(_rng(seed).standard_normal(shape) * 2)
        r = _keys_kept(fraction, shape[-1])
        try:
            _top_mass_case(fn, p, fraction, None, f" (ceil({fraction} * {shape[-1]}) = {r} keys)")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n    hint: {fraction} * {shape[-1]} = {fraction * shape[-1]!r} in floating "
                                 f"point; round it (e.g. to 9 decimals) before taking the ceiling") from None


# ---------------------------------------------------------------- Exercise 6.7: L1 gate penalty

def _l1_expected(g, mask=None):
    g = np.abs(np.asarray(g, dtype=np.float64))
    if mask is None:
        return float(g.mean())
    allowed = np.broadcast_to(mask, g.shape)
    return float(g[allowed].mean()) if allowed.any() else 0.0


def _l1_compare(fn, g, mask, note):
    kw = {} if mask is None else {"mask": mask}
    got = fn(g, **kw)
    ctx = call_repr("l1_gate_penalty", g, **kw) + note
    try:
        value = float(got)
    except (TypeError, ValueError):
        raise AssertionError(f"l1_gate_penalty for {ctx}: expected one number, got {type(got).__name__} "
                             f"{getattr(got, 'shape', '')}") from None
    if np.ndim(got) != 0:
        raise AssertionError(f"l1_gate_penalty for {ctx}: expected one number, got an array of shape {np.shape(got)}")
    assert_close(np.float64(value), np.float64(_l1_expected(g, mask)), what="l1_gate_penalty", atol=ATOL64,
                 context=ctx)


@CHECKS.add("6.7", "l1_gate_penalty", "mean absolute gate", 1)
def _l1_plain(fn):
    for seed, shape in [(80, (3, 5)), (81, (2, 4, 9, 11)), (82, (1, 1))]:
        g = 1.0 / (1.0 + np.exp(-_rng(seed).standard_normal(shape) * 2))  # sigmoid gates
        before = g.copy()
        _l1_compare(fn, g, None, " (mean gate over all pairs)")
        _unchanged(before, g, "l1_gate_penalty")
    g = _rng(83).standard_normal((4, 6))  # raw gate values of both signs: |g|
    _l1_compare(fn, g, None, " (negative gates count as |g|)")


@CHECKS.add("6.7", "l1_gate_penalty", "allowed pairs only", 2)
def _l1_masked(fn):
    n = 13
    causal = _ref.causal_mask(n, n)
    g = 1.0 / (1.0 + np.exp(-_rng(84).standard_normal((2, 3, n, n)) * 2))
    _l1_compare(fn, g, causal, " (causal mask broadcast over batch and heads: rows have different counts)")
    rng = _rng(85)
    g = rng.standard_normal((5, 8))
    mask = rng.random((5, 8)) < 0.5
    mask[1] = False
    mask[3] = True
    _l1_compare(fn, g, mask, " (random mask, an empty row and a full row, gates of both signs)")
    _l1_compare(fn, g, np.zeros((5, 8), dtype=bool), " (no allowed pair: the penalty is 0.0)")


# ---------------------------------------------------------------- Exercise 6.8: NSA selection

def _nsa_expected_loop(scores, n_select, block_size, causal):
    """Straight from the definition, one query at a time."""
    s = np.asarray(scores, dtype=np.float64)
    n_q, n_b = s.shape[-2:]
    out = np.zeros(s.shape, dtype=bool)
    for idx in np.ndindex(*s.shape[:-2]):
        for i in range(n_q):
            if causal:
                own = i // block_size
                cands = [b for b in range(n_b) if b * block_size <= i and b != own]
                chosen = [own] if own < n_b else []
            else:
                cands, chosen = list(range(n_b)), []
            cands.sort(key=lambda b: (-s[idx + (i, b)], b))
            chosen += cands[: max(0, n_select - len(chosen))]
            out[idx + (i, chosen)] = True
    return out


def _nsa_case(fn, scores, n_select, block_size, causal, note):
    before = scores.copy()
    got = fn(scores, n_select, block_size, causal)
    _unchanged(before, scores, "nsa_select_blocks")
    _check_mask(got, _nsa_expected_loop(scores, n_select, block_size, causal), "nsa_select_blocks",
                call_repr("nsa_select_blocks", scores, n_select=n_select, block_size=block_size, causal=causal) + note)


@CHECKS.add("6.8", "nsa_select_blocks", "best blocks", 1)
def _nsa_plain(fn):
    for seed, shape, n_select, B in [(90, (10, 5), 2, 2), (91, (2, 3, 17, 6), 3, 3), (92, (7, 4), 1, 2),
                                     (93, (9, 3), 5, 3)]:
        scores = _rng(seed).random(shape)
        _nsa_case(fn, scores, n_select, B, False, " (the n_select highest-scoring blocks)")
    scores = _rng(94).integers(0, 3, size=(8, 6)).astype(np.float64)
    _nsa_case(fn, scores, 3, 2, False, " (ties: the smaller block index wins)")


@CHECKS.add("6.8", "nsa_select_blocks", "causal with the own block forced", 3)
def _nsa_causal(fn):
    for seed, shape, n_select, B in [(95, (16, 4), 2, 4), (96, (2, 19, 5), 3, 4), (97, (13, 5), 1, 3),
                                     (98, (11, 4), 6, 3), (99, (2, 2, 23, 8), 4, 3)]:
        scores = _rng(seed).random(shape)
        scores[..., -1] = 10.0  # the last block scores best for everyone, but early queries may not pick it
        _nsa_case(fn, scores, n_select, B, True,
                  " (candidates start at or before i; the own block floor(i / B) is always kept)")
    scores = _rng(100).integers(0, 2, size=(14, 5)).astype(np.float64)
    _nsa_case(fn, scores, 2, 3, True, " (ties and causal)")


@CHECKS.add("6.8", "nsa_select_blocks", "agrees with the library on compressed scores", 1)
def _nsa_library(fn):
    """On compressed-attention probabilities, the answer equals the library's NSA selection."""
    for seed, n, d, B, n_select, causal in [(101, 45, 8, 8, 3, False), (102, 45, 8, 8, 3, True),
                                            (103, 64, 16, 16, 2, True), (104, 37, 4, 5, 4, True)]:
        g = torch.Generator().manual_seed(seed)
        q = torch.randn(2, 2, n, d, generator=g, dtype=torch.float64)
        n_b = -(-n // B)
        k_cmp = torch.randn(2, 2, n_b, d, generator=g, dtype=torch.float64)
        scale = 1.0 / math.sqrt(d)
        keep = _compressed_keep(n, n_b, B, causal)
        probs = _torch_masked_attention(q @ k_cmp.transpose(-1, -2) * scale, keep,
                                        torch.eye(n_b, dtype=torch.float64)).numpy()
        expected = _lib_select_blocks(q, k_cmp, B, n_select, scale, causal).numpy()
        _check_mask(fn(probs, n_select, B, causal), expected, "nsa_select_blocks",
                    call_repr("nsa_select_blocks", probs, n_select=n_select, block_size=B, causal=causal)
                    + " (scores = compressed-branch probabilities, compared with sparse_core.approx.nsa)")
