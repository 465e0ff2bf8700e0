"""Graded checks for Chapter 7 (Linformer: is attention low-rank?).

Linformer attention is compared with the float64 oracle :func:`sparse_core.attention.reference.attention`
applied to the projected keys and values ``(q, E^T k, F^T v)`` (and with the library's
:func:`sparse_core.approx.linformer.linformer_attention`), with per-head and shared
projections, ``E != F``, ``seq_len > n`` and ``k_proj`` both below and above ``n``. Energy
ranks are compared with a brute-force count over every prefix, rank-``k`` approximations with
the SVD computed here, random projections by their statistics on about a million samples
(wide enough that any correct implementation passes whatever random numbers it draws), FLOP
counts with products counted one by one.
"""
from __future__ import annotations

import numbers

import numpy as np
import torch

from ...attention import reference as _ref
from ...approx.linformer import linformer_attention as _lib_linformer
from ..extremes import EXTREME_NOTE, extreme_qkv
from ..compare import as_array, assert_close, assert_counts_equal, call_repr
from . import CheckList

CHECKS = CheckList()
# what each exercise returns, as its docstring says: every call in every check is held to it
CHECKS.returns("7.1", "float64 array")
CHECKS.returns("7.2", "int")
CHECKS.returns("7.3", "(float64 array, float64 array)")
CHECKS.returns("7.4", "float64 array")
CHECKS.returns("7.5", "dict of int")

ATOL64 = 1e-10
ATOL32 = 2e-5


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _unchanged(before: np.ndarray, after: np.ndarray, what: str) -> None:
    if not np.array_equal(before, after):
        raise AssertionError(f"{what}: your function modified its input array in place; work on a copy")


# ---------------------------------------------------------------- Exercise 7.1: Linformer attention

def _lin_expected(q, k, v, E, F, scale=None):
    n = k.shape[-2]
    Et = np.swapaxes(np.asarray(E, np.float64)[..., :n, :], -1, -2)
    Ft = np.swapaxes(np.asarray(F, np.float64)[..., :n, :], -1, -2)
    return _ref.attention(q.astype(np.float64), Et @ k.astype(np.float64), Ft @ v.astype(np.float64), scale=scale)


def _lin_case(fn, seed, batch, n, d, d_v, k_proj, seq_len, e_lead=(), n_q=None, scale=None, dtype=np.float64,
              shared=False):
    rng = _rng(seed)
    n_q = n if n_q is None else n_q
    q = rng.standard_normal(batch + (n_q, d)).astype(dtype)
    k = rng.standard_normal(batch + (n, d)).astype(dtype)
    v = rng.standard_normal(batch + (n, d_v)).astype(dtype)
    E = (rng.standard_normal(e_lead + (seq_len, k_proj)) / np.sqrt(k_proj)).astype(dtype)
    F = E if shared else (rng.standard_normal(e_lead + (seq_len, k_proj)) / np.sqrt(k_proj)).astype(dtype)
    before = [a.copy() for a in (q, k, v, E, F)]
    got = fn(q, k, v, E, F) if scale is None else fn(q, k, v, E, F, scale)
    for b, a, name in zip(before, (q, k, v, E, F), "qkvEF"):
        _unchanged(b, a, f"linformer_attention (argument {name})")
    ctx = call_repr("linformer_attention", q, k, v, E, F, **({} if scale is None else {"scale": scale}))
    if seq_len > n:
        ctx += f" (seq_len={seq_len} > n={n}: use the first n rows of E and F)"
    atol = ATOL32 if dtype == np.float32 else ATOL64
    assert_close(got, _lin_expected(q, k, v, E, F, scale), what="linformer_attention", atol=atol, context=ctx)


@CHECKS.add("7.1", "linformer_attention", "matches the oracle on projected keys and values", 2)
def _lin_basic(fn):
    for seed, batch, n, d, d_v, k_proj in [(0, (), 9, 4, 3, 4), (1, (2,), 37, 8, 8, 5), (2, (2, 3), 50, 16, 6, 12)]:
        _lin_case(fn, seed, batch, n, d, d_v, k_proj, seq_len=n)


@CHECKS.add("7.1", "linformer_attention", "per-head projections, seq_len > n, shared E = F", 2)
def _lin_per_head_and_seq_len(fn):
    # one E, F per head (broadcast over the batch), and projections built for longer sequences
    _lin_case(fn, 3, (2, 3), 21, 8, 8, 6, seq_len=21, e_lead=(3,))
    _lin_case(fn, 4, (2, 4), 33, 8, 5, 7, seq_len=64, e_lead=(4,))
    _lin_case(fn, 5, (3,), 10, 4, 4, 16, seq_len=40)  # k_proj > n
    _lin_case(fn, 6, (2,), 17, 8, 8, 17, seq_len=17, shared=True)  # E = F (sharing="kv")


@CHECKS.add("7.1", "linformer_attention", "extreme rows and float16 inputs", 1)
def _lin_extreme(fn):
    # E, F average keys (positive entries): every projected key still leans along the first axis
    for seed, n, k_proj, d, dtype in [(11, 29, 7, 8, np.float64), (12, 24, 6, 16, np.float16)]:
        rng = _rng(seed)
        q, k, v = extreme_qkv(seed, (2,), n, n, d, 4, dtype)
        E = (rng.random((n, k_proj)) / n * 2.0).astype(dtype)
        F = (rng.random((n, k_proj)) / n * 2.0).astype(dtype)
        expected = _lin_expected(*(a.astype(np.float64) for a in (q, k, v, E, F)))
        assert_close(fn(q, k, v, E, F), expected, what="linformer_attention", atol=ATOL64,
                     context=call_repr("linformer_attention", q, k, v, E, F) + EXTREME_NOTE)


@CHECKS.add("7.1", "linformer_attention", "explicit scale, float32, identity projection, large scores", 1)
def _lin_scale_and_library(fn):
    _lin_case(fn, 7, (2,), 19, 8, 8, 6, seq_len=25, scale=0.37)
    _lin_case(fn, 8, (2, 2), 30, 16, 16, 8, seq_len=30, n_q=13)  # cross-length queries
    _lin_case(fn, 9, (2, 2), 45, 16, 16, 9, seq_len=48, dtype=np.float32)
    # the identity projection keeps every key: exact attention
    rng = _rng(10)
    q, k, v = (rng.standard_normal((2, 23, 8)) for _ in range(3))
    eye = np.eye(23)
    assert_close(fn(q, k, v, eye, eye), _ref.attention(q, k, v), what="linformer_attention", atol=ATOL64,
                 context="E = F = identity (k_proj = n) must give exact softmax attention")
    # and it agrees with the library layer's functional core on large scores
    q, k, v = (rng.standard_normal((1, 2, 31, 8)) * 30 for _ in range(3))
    E, F = (rng.standard_normal((2, 40, 5)) for _ in range(2))
    lib = _lib_linformer(*(torch.from_numpy(a) for a in (q, k, v, E, F))).numpy()
    assert_close(fn(q, k, v, E, F), lib, what="linformer_attention", atol=1e-9,
                 context="large scores (|scores| ~ 10^3 to 10^4): subtract the row maximum before exp")


# ---------------------------------------------------------------- Exercise 7.2: energy rank

def _energy_expected(s, fraction):
    e = np.sort(np.asarray(s, np.float64))[::-1] ** 2
    total = e.sum()
    if total == 0:
        return 0
    for r in range(1, e.size + 1):
        if e[:r].sum() >= fraction * total:
            return r
    return e.size


def _energy_compare(fn, s, fraction, expected=None, note=""):
    before = np.array(s, copy=True)
    got = fn(s, fraction)
    _unchanged(before, s, "energy_rank")
    expected = _energy_expected(s, fraction) if expected is None else expected
    ctx = f"energy_rank({np.array2string(np.asarray(s), precision=3, threshold=8)}, {fraction})" + note
    if not isinstance(got, (numbers.Integral, np.integer)) or isinstance(got, (bool, np.bool_)):
        raise AssertionError(f"energy_rank for {ctx}: expected an int, got {type(got).__name__} ({got!r})")
    if int(got) != expected:
        s2 = np.sort(np.asarray(s, np.float64))[::-1] ** 2
        frac = np.cumsum(s2) / s2.sum() if s2.sum() else s2
        raise AssertionError(
            f"energy_rank for {ctx}\n    yours:    {int(got)}\n    expected: {expected}\n"
            f"    cumulative energy fractions of the sorted values: {np.array2string(frac[:10], precision=4)}")


@CHECKS.add("7.2", "energy_rank", "random spectra", 1)
def _energy_random(fn):
    for seed, m in [(20, 5), (21, 64), (22, 128)]:
        rng = _rng(seed)
        s = np.sort(rng.exponential(size=m) ** 2)[::-1]
        for fraction in (0.5, 0.9, 0.99, 0.3):
            _energy_compare(fn, s, fraction)


@CHECKS.add("7.2", "energy_rank", "unsorted values, exact ties, zeros", 2)
def _energy_unsorted_and_ties(fn):
    rng = _rng(23)
    s = rng.permutation(np.linspace(0.1, 4.0, 40) ** 3)
    for fraction in (0.5, 0.9, 0.999):
        _energy_compare(fn, s, fraction, note=" (values not sorted)")
    # exact ties: reaching the fraction exactly counts (>=, not >)
    _energy_compare(fn, np.array([1.0, 1.0]), 0.5, expected=1, note=" (energy 1 of 2 reaches 0.5 exactly)")
    _energy_compare(fn, np.array([1.0, 3.0, 1.0, 1.0]), 0.75, expected=1, note=" (9 of 12 reaches 0.75 exactly)")
    _energy_compare(fn, np.array([3.0, 0.0, 0.0, 4.0]), 1.0, expected=2,
                    note=" (fraction 1 needs the non-zero values only)")
    _energy_compare(fn, np.array([0.0, 0.0, 0.0]), 0.9, expected=0, note=" (a zero matrix has rank 0)")
    _energy_compare(fn, np.array([2.0, 2.0, 2.0, 2.0]), 0.6, expected=3, note=" (a flat spectrum)")


@CHECKS.add("7.2", "energy_rank", "a softmax spectrum and bad fractions", 1)
def _energy_attention_spectrum(fn):
    # the spectrum of a real softmax matrix: one dominant value (rows sum to 1), then a tail
    rng = _rng(24)
    s_ = rng.standard_normal((96, 96)) * 2
    P = _ref.masked_softmax(s_)
    sv = np.linalg.svd(P, compute_uv=False)
    for fraction in (0.5, 0.8, 0.9, 0.95, 0.99):
        _energy_compare(fn, sv, fraction, note=" (singular values of a 96 x 96 softmax matrix)")
    for bad in (0.0, 1.5, -0.1):
        try:
            fn(sv, bad)
        except ValueError:
            continue
        except Exception as exc:  # noqa: BLE001
            raise AssertionError(f"energy_rank(..., fraction={bad}): expected ValueError, got {type(exc).__name__}") from None
        raise AssertionError(f"energy_rank(..., fraction={bad}): a fraction outside (0, 1] must raise ValueError")


# ---------------------------------------------------------------- Exercise 7.3: best rank-k

def _rank_expected(P, k):
    U, s, Vh = np.linalg.svd(P, full_matrices=False)
    P_k = (U[..., :, :k] * s[..., None, :k]) @ Vh[..., :k, :]
    return P_k, np.sqrt(np.sum(s[..., k:] ** 2, axis=-1)), s


def _rank_pair(result, what, ctx):
    if not isinstance(result, tuple) or len(result) != 2:
        raise AssertionError(f"{what} for {ctx}: expected a tuple (P_k, error), got {type(result).__name__}")
    return result


def _rank_case(fn, P, k, note=""):
    before = P.copy()
    ctx = call_repr("best_rank_k", P, k) + note
    P_k, err = _rank_pair(fn(P, k), "best_rank_k", ctx)
    _unchanged(before, P, "best_rank_k")
    exp_P, exp_err, s = _rank_expected(P, k)
    scale = max(1.0, float(np.abs(P).max()))
    assert_close(err, exp_err, what="best_rank_k: error ||P - P_k||_F", atol=1e-9 * scale, context=ctx)
    assert_close(P_k, exp_P, what="best_rank_k: P_k", atol=1e-9 * scale, context=ctx)


@CHECKS.add("7.3", "best_rank_k", "square and rectangular matrices", 2)
def _rank_random(fn):
    for seed, shape, k in [(30, (6, 6), 2), (31, (12, 7), 3), (32, (7, 12), 5), (33, (20, 20), 1)]:
        _rank_case(fn, _rng(seed).standard_normal(shape), k)


@CHECKS.add("7.3", "best_rank_k", "batches of attention matrices", 1)
def _rank_batched_attention(fn):
    rng = _rng(34)
    P = _ref.masked_softmax(rng.standard_normal((2, 3, 33, 33)) * 2)  # batch x heads of attention matrices
    for k in (1, 4, 16):
        _rank_case(fn, P, k, note=" (2 x 3 softmax attention matrices)")
    P = rng.standard_normal((4, 9, 14))
    _rank_case(fn, P, 6, note=" (a batch of 4 rectangular matrices)")


@CHECKS.add("7.3", "best_rank_k", "k = 0, k >= min(m, n), exactly low-rank input", 1)
def _rank_edges(fn):
    rng = _rng(35)
    P = rng.standard_normal((3, 8, 5))
    for k in (0, 5, 7):
        _rank_case(fn, P, k, note=f" (k={k}: {'nothing kept' if k == 0 else 'k >= min(m, n) keeps everything'})")
    A = rng.standard_normal((10, 3)) @ rng.standard_normal((3, 10))  # exactly rank 3
    _rank_case(fn, A, 3, note=" (a rank-3 matrix: the error must be ~0)")


# ---------------------------------------------------------------- Exercise 7.4: JL projection

def _jl_get(fn, n, k, seed):
    ctx = f"jl_projection({n}, {k}, np.random.default_rng({seed}))"
    E = as_array(fn(n, k, np.random.default_rng(seed)), "jl_projection")
    if E.shape != (n, k):
        raise AssertionError(f"jl_projection for {ctx}: wrong shape\n    yours:    {E.shape}\n    expected: ({n}, {k}) "
                             "(E is [n, k]: it multiplies K from the left as E^T K)")
    if E.dtype != np.float64:
        raise AssertionError(f"jl_projection for {ctx}: expected float64, got {E.dtype}")
    return E, ctx


@CHECKS.add("7.4", "jl_projection", "shape and the generator", 1)
def _jl_shape_and_rng(fn):
    for n, k in [(5, 3), (3, 5), (128, 32)]:
        E1, ctx = _jl_get(fn, n, k, 40)
        E2, _ = _jl_get(fn, n, k, 40)
        if not np.array_equal(E1, E2):
            raise AssertionError(f"jl_projection for {ctx}: two generators with the same seed gave different "
                                 "matrices; draw every random number from `rng`")
        E3, _ = _jl_get(fn, n, k, 41)
        if np.array_equal(E1, E3):
            raise AssertionError(f"jl_projection: seeds 40 and 41 gave the same matrix for n={n}, k={k}; "
                                 "draw the random numbers from `rng`, not from a fixed seed")
    rng = np.random.default_rng(42)
    a, b = fn(16, 4, rng), fn(16, 4, rng)
    if np.array_equal(np.asarray(a), np.asarray(b)):
        raise AssertionError("jl_projection: two calls with the same generator gave the same matrix; "
                             "draw from `rng` (it advances), do not re-seed")


@CHECKS.add("7.4", "jl_projection", "mean 0, variance 1/k, Gaussian", 2)
def _jl_moments(fn):
    # ~10^6 entries: the variance estimate has relative standard deviation ~0.0014; we allow 2%
    for n, k, seed in [(4000, 250, 43), (250, 4000, 44), (2048, 512, 45)]:
        E, ctx = _jl_get(fn, n, k, seed)
        mean, var = float(E.mean()), float(E.var())
        if abs(mean) > 6 / np.sqrt(E.size * k):  # 6 standard errors
            raise AssertionError(f"jl_projection for {ctx}: mean {mean:.3g}, expected 0")
        if abs(var * k - 1) > 0.02:
            raise AssertionError(
                f"jl_projection for {ctx}: variance of the entries\n    yours:    {var:.4g} (= {var * k:.3f}/k)\n"
                f"    expected: {1 / k:.4g} (= 1/k; scale by 1/sqrt(k), k the projected length)")
        inside = float(np.mean(np.abs(E) <= 1 / np.sqrt(k)))
        if abs(inside - 0.682689) > 0.006:
            raise AssertionError(f"jl_projection for {ctx}: {inside:.3f} of the entries lie within one standard "
                                 "deviation; a Gaussian has 0.683 (use independent normal entries)")


@CHECKS.add("7.4", "jl_projection", "norms are preserved on average", 1)
def _jl_norms(fn):
    # E ||E^T x||^2 = ||x||^2 for every fixed x, so the average over many x is close to 1
    n, k = 1000, 200
    E, ctx = _jl_get(fn, n, k, 46)
    X = np.random.default_rng(47).standard_normal((400, n))
    ratio = np.sum((X @ E) ** 2, axis=1) / np.sum(X ** 2, axis=1)
    if abs(ratio.mean() - 1) > 0.04:  # about 7 standard errors
        raise AssertionError(f"jl_projection for {ctx}: ||E^T x||^2 / ||x||^2 averages {ratio.mean():.3f} over 400 "
                             "random x; expected 1 (entries of variance 1/k)")
    if ratio.std() > 0.2:
        raise AssertionError(f"jl_projection for {ctx}: ||E^T x||^2 / ||x||^2 varies too much (std {ratio.std():.3f}, "
                             f"expected about sqrt(2/k) = {np.sqrt(2 / k):.3f})")


# ---------------------------------------------------------------- Exercise 7.5: FLOPs

def _flops_expected(n, k, d, d_v, n_heads, batch):
    d_v = d if d_v is None else d_v
    h = batch * n_heads
    mm = lambda a, b, c: 2 * a * b * c  # [a, b] @ [b, c]
    proj = h * (mm(k, n, d) + mm(k, n, d_v))
    att = h * (mm(n, d, k) + mm(n, k, d_v))
    dense = h * (mm(n, d, n) + mm(n, n, d_v))
    return {"projection": proj, "attention": att, "total": proj + att, "dense": dense}


def _flops_compare(fn, args, kwargs):
    expected = _flops_expected(*args, kwargs.get("d_v"), kwargs.get("n_heads", 1), kwargs.get("batch", 1))
    assert_counts_equal(fn(*args, **kwargs), expected, what="linformer_flops",
                        context=call_repr("linformer_flops", *args, **kwargs))


@CHECKS.add("7.5", "linformer_flops", "one head", 1)
def _flops_single(fn):
    for args, kwargs in [((8, 2, 4), {}), ((512, 128, 64), {}), ((1000, 256, 64), {"d_v": 32}), ((7, 9, 3), {"d_v": 5})]:
        _flops_compare(fn, args, kwargs)


@CHECKS.add("7.5", "linformer_flops", "heads, batch and d_v", 1)
def _flops_heads(fn):
    for args, kwargs in [((4096, 256, 64), {"n_heads": 12, "batch": 2}), ((100, 10, 8), {"d_v": 16, "n_heads": 3}),
                         ((65536, 256, 128), {"n_heads": 16, "batch": 8})]:
        _flops_compare(fn, args, kwargs)
