"""Graded checks for Chapter 3 (strided, fixed and axial attention).

Masks are compared with the library's own patterns (:func:`sparse_core.patterns.strided`,
:func:`~sparse_core.patterns.fixed`, :func:`~sparse_core.patterns.axial`, built with
``factorized=True`` so that head 0 and head 1 are the two factorized heads) on lengths that
are and are not multiples of the stride, strides of 1 and longer than the sequence, both
causal directions and non-square grids. Two-hop reachability is compared with its
definition written as an explicit existential over the middle token; pair counts with a
per-offset count evaluated through the library pattern's ``mask_mod``.
"""
from __future__ import annotations

import numbers

import numpy as np

from ...bench.timing import peak_traced_bytes
from ...patterns import axial, fixed, strided
from ..compare import as_array, assert_mask_equal, call_repr
from . import CheckList

CHECKS = CheckList()
# what each exercise returns, as its docstring says: every call in every check is held to it
CHECKS.returns("3.1", "bool array")
CHECKS.returns("3.2", "bool array")
CHECKS.returns("3.3", "bool array")
CHECKS.returns("3.4", "(bool array, bool array)")
CHECKS.returns("3.5", "int")


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _heads(result, n: int, what: str, context: str) -> np.ndarray:
    got = as_array(result, what)
    if got.shape != (2, n, n):
        raise AssertionError(f"{what} for {context}: wrong shape\n    yours:    {got.shape}\n    expected: (2, {n}, {n}) "
                             "(head 0 and head 1 stacked on a leading axis)")
    return got


def _compare_heads(got: np.ndarray, expected: np.ndarray, what: str, context: str, names: tuple[str, str]) -> None:
    for h in (0, 1):
        assert_mask_equal(got[h], expected[h], what=f"{what}: head {h} ({names[h]})", context=context)


# ---------------------------------------------------------------- Exercise 3.1: strided mask

def _strided_case(fn, n, stride, causal):
    ctx = call_repr("strided_mask", n, stride, causal=causal)
    got = _heads(fn(n, stride, causal), n, "strided_mask", ctx)
    expected = strided(stride, causal=causal, factorized=True).to_dense(n, n, 2)
    _compare_heads(got, expected, "strided_mask", ctx, ("local", "strided"))


# cases are (n, stride, causal)
CHECKS.cases("3.1", "strided_mask", _strided_case, [
    ("causal heads", 2, [(16, 4, True), (17, 4, True), (33, 5, True), (64, 8, True), (50, 7, True)]),
    ("non-causal heads", 1, [(16, 4, False), (23, 5, False), (40, 6, False)]),
    # stride 1 (local = diagonal, strided = everything causal), stride >= n, tiny n
    ("stride 1 and strides longer than n", 1,
     [(9, 1, True), (9, 1, False), (7, 7, True), (6, 10, True), (6, 10, False), (1, 3, True), (2, 2, False)]),
])


# ---------------------------------------------------------------- Exercise 3.2: fixed mask

def _fixed_case(fn, n, stride, c, causal):
    ctx = call_repr("fixed_mask", n, stride, c, causal=causal)
    got = _heads(fn(n, stride, c, causal), n, "fixed_mask", ctx)
    expected = fixed(stride, c=c, causal=causal, factorized=True).to_dense(n, n, 2)
    _compare_heads(got, expected, "fixed_mask", ctx, ("window", "summary"))


# cases are (n, stride, c, causal)
CHECKS.cases("3.2", "fixed_mask", _fixed_case, [
    ("one summary column", 2, [(16, 4, 1, True), (18, 4, 1, True), (35, 8, 1, True), (30, 6, 1, True)]),
    # c > 1, a last window shorter than the others, c == stride
    ("several summary columns and a short last window", 1,
     [(24, 6, 2, True), (29, 8, 3, True), (21, 5, 4, True), (12, 3, 3, True)]),
    ("non-causal", 1, [(16, 4, 1, False), (25, 6, 2, False), (9, 1, 1, False), (7, 10, 2, False)]),
])


# ---------------------------------------------------------------- Exercise 3.3: two hops

def _two_hop_definition(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """out[i, j] = exists k: second[i, k] and first[k, j] (written out, not as a matmul)."""
    return np.logical_and(second[:, :, None], first[None, :, :]).any(axis=1)


def _two_hop_case(fn, first, second, context):
    f0, s0 = first.copy(), second.copy()
    got = fn(first, second)
    if not (np.array_equal(f0, first) and np.array_equal(s0, second)):
        raise AssertionError("reachable_in_two_hops: your function modified its input masks in place; work on a copy")
    ctx = call_repr("reachable_in_two_hops", first, second) + (f" ({context})" if context else "")
    assert_mask_equal(got, _two_hop_definition(first, second), what="reachable_in_two_hops", context=ctx)


@CHECKS.add("3.3", "reachable_in_two_hops", "random masks", 2)
def _two_hop_random(fn):
    # random masks without a guaranteed diagonal: a residual, a union or a single hop all show
    for seed, n, density in [(40, 6, 0.3), (41, 13, 0.2), (42, 24, 0.1), (43, 40, 0.05)]:
        rng = _rng(seed)
        first = rng.random((n, n)) < density
        second = rng.random((n, n)) < density
        _two_hop_case(fn, first, second, f"random masks, density {density}")


@CHECKS.add("3.3", "reachable_in_two_hops", "rectangular layers", 1)
def _two_hop_rectangular(fn):
    # first is [m, n] (layer 1: m queries over n keys), second is [p, m]
    for seed, p, m, n in [(44, 5, 7, 9), (45, 11, 4, 6)]:
        rng = _rng(seed)
        first = rng.random((m, n)) < 0.35
        second = rng.random((p, m)) < 0.35
        _two_hop_case(fn, first, second, f"layer 1 maps {n} -> {m} positions, layer 2 {m} -> {p}")


@CHECKS.add("3.3", "reachable_in_two_hops", "strided and fixed heads in both orders", 1)
def _two_hop_patterns(fn):
    # the chapter's patterns: both orders of strided, and fixed where the order matters
    for n, stride in [(20, 4), (27, 5)]:
        local, every = strided(stride, factorized=True).to_dense(n, n, 2)
        _two_hop_case(fn, every, local, f"strided: strided head, then local head, n={n}, stride={stride}")
        _two_hop_case(fn, local, every, f"strided: local head, then strided head, n={n}, stride={stride}")
        window, summary = fixed(stride, factorized=True).to_dense(n, n, 2)
        _two_hop_case(fn, window, summary, f"fixed: window head, then summary head, n={n}, stride={stride}")
        _two_hop_case(fn, summary, window, f"fixed: summary head, then window head, n={n}, stride={stride}")


# ---------------------------------------------------------------- Exercise 3.4: axial masks

def _axial_case(fn, height, width, causal):
    n = height * width
    ctx = call_repr("axial_masks", height, width, causal=causal)
    result = fn(height, width, causal)
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        raise AssertionError(f"axial_masks for {ctx}: expected a pair (row_mask, col_mask), "
                             f"got {type(result).__name__}")
    row_exp, col_exp = axial(height, width, causal=causal, factorized=True).to_dense(n, n, 2)
    where = f"{ctx}; pixel t = (t // {width}, t % {width})"
    assert_mask_equal(result[0], row_exp, what="axial_masks: row_mask", context=where)
    assert_mask_equal(result[1], col_exp, what="axial_masks: col_mask", context=where)


# cases are (height, width, causal)
CHECKS.cases("3.4", "axial_masks", _axial_case, [
    ("square grids", 1, [(1, 1, False), (3, 3, False), (5, 5, False)]),
    # height != width: a swapped flattening or modulus shows here
    ("rectangular grids", 2, [(2, 5, False), (4, 3, False), (3, 7, False), (1, 4, False), (6, 1, False)]),
    ("causal raster order", 1, [(3, 3, True), (2, 5, True), (5, 3, True)]),
])


# ---------------------------------------------------------------- Exercise 3.5: pair counts

def _pairs_by_offset(n: int, stride: int, causal: bool) -> int:
    """Sum over offsets d allowed by the library's strided rule of the n - |d| pairs at d."""
    if n == 0:
        return 0
    p = strided(stride, causal=causal)
    d = np.arange(-(n - 1), n, dtype=np.int64)
    allowed = np.asarray(p.mask_mod(0, 0, np.maximum(d, 0), np.maximum(-d, 0)), dtype=bool)
    return int(((n - np.abs(d)) * allowed).sum())


def _count_case(fn, n, stride, causal):
    got = fn(n, stride, causal)
    ctx = call_repr("strided_pair_count", n, stride, causal=causal)
    if isinstance(got, bool) or not isinstance(got, numbers.Integral):
        raise AssertionError(f"strided_pair_count for {ctx}: expected an int, got {type(got).__name__} {got!r}")
    expected = _pairs_by_offset(n, stride, causal)
    if int(got) != expected:
        local = strided(stride, causal=causal, factorized=True)
        extra = ""
        if n <= 4096:
            heads = local.to_dense(n, n, 2)
            extra = (f"\n    (local head alone: {int(heads[0].sum())}, strided head alone: {int(heads[1].sum())}, "
                     f"both: {int((heads[0] & heads[1]).sum())})")
        raise AssertionError(f"strided_pair_count for {ctx}\n    yours:    {int(got)}\n    expected: {expected}{extra}")


# cases are (n, stride, causal)
CHECKS.cases("3.5", "strided_pair_count", _count_case, [
    ("causal counts", 2, [(0, 3, True), (1, 1, True), (5, 2, True), (16, 4, True), (17, 4, True), (100, 7, True),
                          (1000, 31, True), (4096, 64, True)]),
    ("non-causal counts", 1, [(5, 2, False), (16, 4, False), (23, 5, False), (100, 1, False), (999, 40, False)]),
])


@CHECKS.add("3.5", "strided_pair_count", "millions of tokens, no n x n array", 1)
def _count_large(fn):
    n = 3000
    peak = peak_traced_bytes(lambda: fn(n, 55, True))
    limit = n * n // 8  # an eighth of one boolean n x n mask
    if peak > limit:
        raise AssertionError(
            f"strided_pair_count: peak extra memory {peak / 2**20:.1f} MiB for n={n}; one boolean n x n mask is "
            f"{n * n / 2**20:.1f} MiB. Count per query (or per offset) without building the mask.")
    for n, stride, causal in [(1_000_000, 1000, True), (1_048_583, 724, False)]:
        _count_case(fn, n, stride, causal)
