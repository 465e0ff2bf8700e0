"""Graded checks for Chapter 2 (local attention: sliding window, dilated and block-local).

The expected answers come from the library, never from the reference solutions: masks from
:mod:`sparse_core.patterns.local` (``to_dense``), block layouts from the same patterns'
``to_layout`` (exact CSR layouts, drawn as a block grid), receptive fields from
:func:`sparse_core.patterns.plots.hops` on the attention graph, and attention outputs from
the float64 oracle :func:`sparse_core.attention.reference.attention`. Inputs are seeded; lengths are not
multiples of the block size; windows reach past both ends of the sequence.
"""
from __future__ import annotations

import numpy as np

from ...attention import reference as _ref
from ...bench.timing import peak_traced_bytes, traced_call
from ...patterns import dilated as _dilated
from ...patterns import sliding_window as _sliding_window
from ...patterns.base import TokenTablePattern
from ..extremes import EXTREME_NOTE, extreme_qkv
from ..compare import as_array, assert_close, assert_mask_equal, call_repr
from . import CheckList

CHECKS = CheckList()
# what each exercise returns, as its docstring says: every call in every check is held to it
CHECKS.returns("2.1", "bool array")
CHECKS.returns("2.2", "bool array")
CHECKS.returns("2.3", "bool array")
CHECKS.returns("2.4", "int64 array")
CHECKS.returns("2.5", "float64 array")

ATOL64 = 1e-10  # float64 inputs: answers must match the oracle to rounding


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


# ---------------------------------------------------------------- Exercise 2.1: window mask

def _window_expected(n_q, n_k, window, causal):
    return _sliding_window(window, causal).to_dense(n_q, n_k)[0]


def _window_cases(fn, cases, causal):
    for n_q, n_k, w in cases:
        rule = "i - w <= j <= i" if causal else "|i - j| <= w"
        assert_mask_equal(fn(n_q, n_k, w, causal), _window_expected(n_q, n_k, w, causal), what="window_mask",
                          context=f"window_mask({n_q}, {n_k}, window={w}, causal={causal}) (keep {rule})")


@CHECKS.add("2.1", "window_mask", "symmetric windows", 1)
def _window_symmetric(fn):
    _window_cases(fn, [(1, 1, 0), (6, 6, 0), (9, 9, 1), (16, 16, 3), (13, 13, 20)], causal=False)


@CHECKS.add("2.1", "window_mask", "causal windows", 1)
def _window_causal(fn):
    _window_cases(fn, [(6, 6, 0), (11, 11, 2), (17, 17, 5), (8, 8, 12)], causal=True)


@CHECKS.add("2.1", "window_mask", "rectangular masks", 1)
def _window_rect(fn):
    for causal in (False, True):
        _window_cases(fn, [(5, 12, 2), (12, 5, 2), (3, 20, 4), (19, 7, 3)], causal=causal)


# ---------------------------------------------------------------- Exercise 2.2: dilated mask

def _dilated_cases(fn, cases, causal):
    for n, w, dil in cases:
        rule = "-w <= k <= 0" if causal else "|k| <= w"
        assert_mask_equal(fn(n, w, dil, causal), _dilated(w, dil, causal).to_dense(n, n)[0], what="dilated_mask",
                          context=f"dilated_mask({n}, window={w}, dilation={dil}, causal={causal}) "
                                  f"(keep j = i + k * dilation, {rule})")


@CHECKS.add("2.2", "dilated_mask", "symmetric dilated windows", 1)
def _dilated_symmetric(fn):
    _dilated_cases(fn, [(6, 1, 2), (13, 2, 3), (22, 3, 4), (9, 0, 3), (12, 4, 1), (10, 3, 5)], causal=False)


@CHECKS.add("2.2", "dilated_mask", "causal dilated windows", 1)
def _dilated_causal(fn):
    _dilated_cases(fn, [(7, 1, 2), (17, 2, 3), (23, 3, 4), (9, 0, 2), (11, 2, 1)], causal=True)


# ---------------------------------------------------------------- Exercise 2.3: block layout

def _layout_grid(n, window, block_size, causal):
    """The library's exact layout as a boolean [n_blocks, n_blocks] grid of kept blocks."""
    lay = _sliding_window(window, causal).to_layout(n, n, block_size)
    grid = np.zeros((lay.n_qb, lay.n_kb), dtype=bool)
    grid[lay.block_rows(), lay.indices.astype(np.int64)] = True
    return grid


def _layout_cases(fn, cases, causal):
    for n, w, B in cases:
        nb = -(-n // B)
        assert_mask_equal(fn(n, w, B, causal), _layout_grid(n, w, B, causal), what="window_block_layout",
                          context=f"window_block_layout({n}, window={w}, block_size={B}, causal={causal}) "
                                  f"({nb} blocks per side; a block is kept iff any of its pairs is allowed)")


# window below, equal to, just above and far above the block size; n not a multiple of B
_LAYOUT_CASES = [(10, 2, 4), (64, 8, 8), (70, 8, 8), (70, 9, 8), (100, 5, 16), (131, 40, 16),
                 (257, 64, 64), (257, 65, 64), (6, 3, 8), (45, 0, 4), (300, 1, 32)]


@CHECKS.add("2.3", "window_block_layout", "symmetric layouts with partial blocks", 2)
def _layout_symmetric(fn):
    _layout_cases(fn, _LAYOUT_CASES, causal=False)


@CHECKS.add("2.3", "window_block_layout", "causal layouts", 1)
def _layout_causal(fn):
    _layout_cases(fn, _LAYOUT_CASES, causal=True)


@CHECKS.add("2.3", "window_block_layout", "no n x n token mask", 1)
def _layout_memory(fn):
    n, w, B = 4_000, 256, 64
    nb = -(-n // B)
    token_mask = n * n  # bytes of a boolean n x n mask
    peak = peak_traced_bytes(lambda: fn(n, w, B, False))
    if peak > token_mask // 8:
        raise AssertionError(
            f"window_block_layout: peak extra memory {peak / 2**20:.1f} MiB for n={n}, block_size={B} "
            f"({nb} x {nb} blocks = {nb * nb / 2**20:.2f} MiB of booleans); a boolean n x n token mask is "
            f"{token_mask / 2**20:.1f} MiB. Decide each block from its block offset qb - kb, not from the "
            f"token mask.")
    assert_mask_equal(fn(n, w, B, False), _layout_grid(n, w, B, False), what="window_block_layout",
                      context=f"window_block_layout({n}, window={w}, block_size={B})")


# ---------------------------------------------------------------- Exercise 2.4: receptive field

def _field_expected(mask, n_layers):
    """Count j with a path of at most n_layers steps j -> i in the graph A = mask | I."""
    h = _hops_of(mask)
    return ((h >= 0) & (h <= n_layers)).sum(axis=1).astype(np.int64)


def _hops_of(mask):
    from ...patterns.plots import hops

    return hops(TokenTablePattern(mask[None]), mask.shape[0])


def _field_compare(fn, mask, n_layers, note):
    before = mask.copy()
    got = fn(mask, n_layers)
    if not np.array_equal(before, mask):
        raise AssertionError("receptive_field: your function modified `mask` in place; work on a copy")
    ctx = call_repr("receptive_field", mask, n_layers=n_layers) + f" ({note})"
    y = as_array(got, "receptive_field")
    if y.dtype.kind not in "iu":
        raise AssertionError(f"receptive_field for {ctx}: expected an integer array of counts, got dtype {y.dtype}")
    assert_close(y, _field_expected(mask, n_layers), what="receptive_field", atol=0, context=ctx)


@CHECKS.add("2.4", "receptive_field", "windows and dilated windows", 1)
def _field_windows(fn):
    for n, w, causal, layers in [(20, 1, False, (0, 1, 2, 3)), (41, 3, True, (1, 4, 7, 20)),
                                 (33, 2, False, (5, 9))]:
        mask = _sliding_window(w, causal).to_dense(n, n)[0]
        for L in layers:
            _field_compare(fn, mask, L, f"sliding window w={w}, causal={causal}")
    mask = _dilated(1, 3, True).to_dense(30, 30)[0]
    for L in (1, 2, 4):
        _field_compare(fn, mask, L, "causal dilated window, w=1, dilation=3")


@CHECKS.add("2.4", "receptive_field", "masks without diagonal, one-directional and random", 2)
def _field_general(fn):
    # no diagonal (the residual adds it), strictly one-directional, and random asymmetric masks
    n = 24
    offset = np.arange(n)[:, None] - np.arange(n)[None, :]
    previous = offset == 1  # i attends only i - 1: a chain
    for L in (1, 2, 5):
        _field_compare(fn, previous, L, "mask[i, j] = (j == i - 1): no diagonal, information flows forward")
    for seed, n, density, layers in [(40, 17, 0.08, (1, 2, 3)), (41, 30, 0.05, (2, 4)), (42, 12, 0.15, (1, 3))]:
        rng = _rng(seed)
        mask = rng.random((n, n)) < density
        np.fill_diagonal(mask, False)
        for L in layers:
            _field_compare(fn, mask, L, f"random mask, density {density}, empty diagonal (seed {seed})")


@CHECKS.add("2.4", "receptive_field", "many layers", 1)
def _field_many_layers(fn):
    n = 96
    rng = _rng(43)
    mask = rng.random((n, n)) < 0.5
    _field_compare(fn, mask, 200, "dense random mask, 200 layers: integer matrix powers overflow")
    mask = _sliding_window(1, True).to_dense(n, n)[0]
    _field_compare(fn, mask, 150, "causal window w=1, 150 layers: the field stops growing at n")


# ---------------------------------------------------------------- Exercise 2.5: local attention

def _local_case(fn, seed, batch, n, d, d_v, window, causal, logit_scale=1.0):
    rng = _rng(seed)
    q = rng.standard_normal(batch + (n, d)) * logit_scale
    k = rng.standard_normal(batch + (n, d))
    v = rng.standard_normal(batch + (n, d_v))
    q0 = q.copy()
    got = fn(q, k, v, window, causal)
    if not np.array_equal(q0, q):
        raise AssertionError("local_attention: your function modified `q` in place; work on a copy")
    expected = _ref.attention(q, k, v, mask=_window_expected(n, n, window, causal))
    ctx = call_repr("local_attention", q, k, v, window=window, causal=causal) + " (scale 1/sqrt(d))"
    assert_close(got, expected, what="local_attention", atol=ATOL64 * max(1.0, logit_scale), context=ctx)


@CHECKS.add("2.5", "local_attention", "symmetric windows match the oracle", 2)
def _local_symmetric(fn):
    for seed, batch, n, d, d_v, w in [(50, (), 9, 4, 3, 1), (51, (2,), 37, 8, 8, 5), (52, (2, 3), 50, 16, 4, 7),
                                      (53, (), 6, 4, 4, 10), (54, (), 1, 2, 2, 3), (55, (3,), 20, 4, 5, 0)]:
        _local_case(fn, seed, batch, n, d, d_v, w, False)


@CHECKS.add("2.5", "local_attention", "causal windows match the oracle", 1)
def _local_causal(fn):
    for seed, batch, n, d, d_v, w in [(56, (), 11, 4, 4, 2), (57, (2, 2), 45, 8, 6, 6), (58, (), 5, 4, 4, 9)]:
        _local_case(fn, seed, batch, n, d, d_v, w, True)


@CHECKS.add("2.5", "local_attention", "large logits", 1)
def _local_large_logits(fn):
    _local_case(fn, 59, (2,), 33, 8, 8, 4, False, logit_scale=400.0)
    _local_case(fn, 60, (), 29, 8, 8, 3, True, logit_scale=400.0)


@CHECKS.add("2.5", "local_attention", "extreme rows and float16 inputs", 1)
def _local_extreme(fn):
    for seed, batch, n, d, w, causal, dtype in [(62, (2,), 31, 8, 3, False, np.float64),
                                                (63, (), 26, 16, 4, True, np.float16)]:
        q, k, v = extreme_qkv(seed, batch, n, n, d, 4, dtype)
        expected = _ref.attention(*(a.astype(np.float64) for a in (q, k, v)), mask=_window_expected(n, n, w, causal))
        assert_close(fn(q, k, v, w, causal), expected, what="local_attention", atol=ATOL64,
                     context=call_repr("local_attention", q, k, v, window=w, causal=causal) + EXTREME_NOTE)


@CHECKS.add("2.5", "local_attention", "memory stays linear", 1)
def _local_memory(fn):
    n, d, w = 3000, 8, 8
    rng = _rng(61)
    q, k, v = (rng.standard_normal((n, d)) for _ in range(3))
    full = n * n * 8
    got, peak = traced_call(lambda: fn(q, k, v, w, False))
    expected = _ref.attention(q, k, v, mask=_window_expected(n, n, w, False))
    assert_close(got, expected, what="local_attention", atol=ATOL64,
                 context=call_repr("local_attention", q, k, v, window=w, causal=False) + " (the memory check counts only a right answer)")
    if peak > full // 8:
        raise AssertionError(
            f"local_attention: peak extra memory {peak / 2**20:.1f} MiB for n={n}, window={w}; a float64 n x n "
            f"score matrix is {full / 2**20:.1f} MiB. Compute only the 2w+1 scores of each query's band.")
