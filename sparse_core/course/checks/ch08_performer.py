"""Graded checks for Chapter 8 (Performer: softmax attention approximated with random features).

Feature maps are compared with their formulas written out here in float64. The attention
exercises are compared with the library's FAVOR+ reference
:func:`sparse_core.approx.performer.favor_attention_quadratic`, which forms the explicit
``[n_q, n_k]`` kernel matrix in log space (so it is exact even where ``exp`` overflows), for
several batch/head shapes, ``n_q != n_k``, ``d_v != d``, ``m`` below and above ``d``, chunk
sizes that divide ``n``, do not, equal 1 and exceed ``n``; at scores in the thousands; with
peak memory measured by ``tracemalloc``; and, for the causal version, bit-for-bit causality.
The orthogonal projection is checked for orthogonality within blocks, independence across
blocks, use of the given generator, chi-distributed row norms (Kolmogorov-Smirnov and mean
bounds with false-alarm probabilities below 1e-6) and uniformly distributed directions.
"""
from __future__ import annotations

import numpy as np

from ...bench.timing import traced_call
from ..compare import as_array, assert_close, call_repr
from . import CheckList

CHECKS = CheckList()
# what each exercise returns, as its docstring says: every call in every check is held to it
CHECKS.returns("8.1", "float64 array")
CHECKS.returns("8.2", "float64 array")
CHECKS.returns("8.3", "float64 array")
CHECKS.returns("8.4", "float64 array")
CHECKS.returns("8.5", "float64 array")

ATOL = 1e-10  # float64 everywhere: only rounding may differ
ATOL_BIG = 1e-8  # scores in the thousands: exponents of size ~1e3 carry ~1e-13 relative rounding


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _gauss_w(seed: int, m: int, d: int) -> np.ndarray:
    return _rng(10_000 + seed).standard_normal((m, d))


def _shape_ok(got: np.ndarray, shape: tuple, what: str, context: str) -> None:
    if got.shape != tuple(shape):
        raise AssertionError(f"{what} for {context}: wrong shape\n    yours:    {got.shape}\n    expected: {tuple(shape)}")


# ---------------------------------------------------------------- Exercise 8.1: positive features

def _positive_expected(x, w, shift=0.0):
    a = x @ w.T - 0.5 * np.sum(x * x, axis=-1, keepdims=True) - shift
    return np.exp(a) / np.sqrt(w.shape[0])


def _positive_case(fn, x, w, shift=None, atol=ATOL, rtol=1e-10, note=""):
    x0, w0 = x.copy(), w.copy()
    if shift is None:
        got, ctx = fn(x, w), call_repr("positive_features", x, w)
        expected = _positive_expected(x, w)
    else:
        got, ctx = fn(x, w, shift), call_repr("positive_features", x, w, shift=shift)
        expected = _positive_expected(x, w, shift)
    if not (np.array_equal(x0, x) and np.array_equal(w0, w)):
        raise AssertionError("positive_features: your function modified its inputs in place; work on a copy")
    got = as_array(got, "positive_features")
    _shape_ok(got, expected.shape, "positive_features", ctx)
    assert_close(got, expected, what="positive_features", atol=atol, rtol=rtol, context=ctx + note)


@CHECKS.add("8.1", "positive_features", "formula for several shapes and m", 2)
def _positive_formula(fn):
    # m < d, m = d, m > d and not a multiple; leading batch and head axes
    for seed, lead, n, d, m in [(0, (), 5, 4, 3), (1, (), 9, 8, 8), (2, (2,), 7, 6, 13), (3, (2, 3), 11, 16, 40)]:
        x = _rng(seed).standard_normal(lead + (n, d)) * 0.7
        _positive_case(fn, x, _gauss_w(seed, m, d))


@CHECKS.add("8.1", "positive_features", "scalar, per-row and per-feature shifts", 1)
def _positive_shifts(fn):
    rng = _rng(4)
    x = rng.standard_normal((2, 9, 6))
    w = _gauss_w(4, 10, 6)
    a = x @ w.T - 0.5 * np.sum(x * x, axis=-1, keepdims=True)
    for shift in (1.25, a.max(axis=-1, keepdims=True), a.max(axis=-2, keepdims=True), rng.standard_normal((2, 9, 10))):
        _positive_case(fn, x, w, shift)


@CHECKS.add("8.1", "positive_features", "exponents near -1000 with a cancelling shift", 1)
def _positive_large(fn):
    # |x|^2 / 2 ~ 1000: exp(w.x - |x|^2/2) alone underflows to 0; shifted, the row maxima are exactly 1/sqrt(m)
    rng = _rng(5)
    x = rng.standard_normal((3, 8, 16))
    x = 45.0 * x / np.linalg.norm(x, axis=-1, keepdims=True)
    w = _gauss_w(5, 24, 16)
    a = x @ w.T - 0.5 * np.sum(x * x, axis=-1, keepdims=True)
    for shift, note in [(a.max(axis=-1, keepdims=True), " (shift = each row's maximum exponent, about -1000)"),
                        (a.max(axis=-2, keepdims=True), " (shift = each feature's maximum over the rows)")]:
        got = as_array(fn(x, w, shift), "positive_features")
        if not np.all(np.isfinite(got)):
            raise AssertionError("positive_features: inf or NaN with exponents near -1000 and a shift that brings them "
                                 "to <= 0. Subtract the shift inside the exponent, before np.exp, not after." + note)
        _positive_case(fn, x, w, shift, atol=1e-14, rtol=1e-9, note=note)


# ---------------------------------------------------------------- Exercise 8.2: trigonometric features

def _trig_expected(x, w):
    proj = x @ w.T
    amp = np.exp(0.5 * np.sum(x * x, axis=-1, keepdims=True)) / np.sqrt(w.shape[0])
    return amp * np.concatenate([np.sin(proj), np.cos(proj)], axis=-1)


def _trig_case(fn, x, w, note=""):
    ctx = call_repr("trig_features", x, w) + note
    got = as_array(fn(x, w), "trig_features")
    expected = _trig_expected(x, w)
    _shape_ok(got, expected.shape, "trig_features", ctx + " (m sines, then m cosines)")
    assert_close(got, expected, what="trig_features", atol=ATOL, rtol=1e-10, context=ctx)


@CHECKS.add("8.2", "trig_features", "formula, sines then cosines", 2)
def _trig_formula(fn):
    for seed, lead, n, d, m in [(6, (), 5, 4, 3), (7, (), 10, 8, 8), (8, (2, 3), 7, 16, 21)]:
        x = _rng(seed).standard_normal(lead + (n, d)) * 0.6
        _trig_case(fn, x, _gauss_w(seed, m, d), " (sines first, then cosines)")


@CHECKS.add("8.2", "trig_features", "one feature and x = 0", 1)
def _trig_one_feature(fn):
    rng = _rng(9)
    _trig_case(fn, rng.standard_normal((4, 3)), _gauss_w(9, 1, 3), " (m = 1)")
    _trig_case(fn, np.zeros((2, 5)), _gauss_w(10, 4, 5), " (x = 0: sin 0 = 0, cos 0 = 1)")


@CHECKS.add("8.2", "trig_features", "feature products estimate the softmax kernel", 1)
def _trig_kernel(fn):
    # order-free: phi(x) . phi(y) = exp((|x|^2 + |y|^2)/2) / m * sum_r cos(w_r . (x - y))
    rng = _rng(11)
    x, y = rng.standard_normal((6, 8)) * 0.5, rng.standard_normal((9, 8)) * 0.5
    w = _gauss_w(11, 17, 8)
    fx, fy = as_array(fn(x, w), "trig_features"), as_array(fn(y, w), "trig_features")
    _shape_ok(fx, (6, 34), "trig_features", call_repr("trig_features", x, w))
    got = fx @ fy.T
    diff = x[:, None, :] - y[None, :, :]
    expected = (np.exp(0.5 * (x * x).sum(-1))[:, None] * np.exp(0.5 * (y * y).sum(-1))[None, :]
                * np.cos(diff @ w.T).mean(-1))
    assert_close(got, expected, what="trig_features(x) @ trig_features(y).T", atol=ATOL, rtol=1e-10,
                 context="the kernel estimate exp((|x|^2+|y|^2)/2) mean_r cos(w_r . (x - y))")


# ---------------------------------------------------------------- Exercise 8.3: orthogonal Gaussian

def _draw(fn, m, d, seed):
    ctx = call_repr("orthogonal_gaussian", m, d, f"default_rng({seed})")
    got = as_array(fn(m, d, np.random.default_rng(seed)), "orthogonal_gaussian")
    _shape_ok(got, (m, d), "orthogonal_gaussian", ctx)
    if not np.all(np.isfinite(got)):
        raise AssertionError(f"orthogonal_gaussian for {ctx}: inf or NaN entries")
    zero = np.flatnonzero(~np.any(got != 0, axis=-1))
    if zero.size:
        raise AssertionError(f"orthogonal_gaussian for {ctx}: rows {zero[:6].tolist()} are all zero; every row is a "
                             "direction times a chi-distributed length, never 0")
    return got.astype(np.float64), ctx


@CHECKS.add("8.3", "orthogonal_gaussian", "shape and the given generator", 1)
def _ortho_generator(fn):
    a, ctx = _draw(fn, 20, 6, 0)
    b, _ = _draw(fn, 20, 6, 0)
    c, _ = _draw(fn, 20, 6, 1)
    if not np.array_equal(a, b):
        raise AssertionError(f"orthogonal_gaussian for {ctx}: two calls with generators of the same seed gave different "
                             "matrices; draw every random number from `rng` (not np.random.*)")
    if np.allclose(np.abs(a), np.abs(c)):
        raise AssertionError(f"orthogonal_gaussian: seeds 0 and 1 gave the same matrix (up to signs); use `rng`")


def _unit(w):
    return w / np.linalg.norm(w, axis=1, keepdims=True)


@CHECKS.add("8.3", "orthogonal_gaussian", "orthogonal rows within blocks, fresh blocks", 2)
def _ortho_blocks(fn):
    for m, d, seed in [(8, 8, 2), (24, 8, 3), (21, 8, 4), (5, 8, 5), (40, 3, 6), (7, 1, 7)]:
        w, ctx = _draw(fn, m, d, seed)
        u = _unit(w)
        for b0 in range(0, m, d):
            blk = u[b0:b0 + d]
            gram = blk @ blk.T
            assert_close(gram, np.eye(len(blk)), what=f"normalised Gram matrix of rows {b0}..{b0 + len(blk) - 1} (one block)",
                         atol=1e-10, context=ctx + ": rows of one block must be orthogonal")
        if m > d and d > 1:
            cross = np.abs(u[:d] @ u[d:2 * d].T)
            if cross.max() > 1 - 1e-6:
                raise AssertionError(f"orthogonal_gaussian for {ctx}: block 1 repeats a direction of block 0 "
                                     f"(|cos| = {cross.max():.6f}); draw a fresh Gaussian matrix for every block")


def _ks_chi(norms: np.ndarray, d: int) -> float:
    from scipy.stats import chi

    x = np.sort(norms)
    cdf = chi(d).cdf(x)
    k = np.arange(1, x.size + 1)
    return float(max((k / x.size - cdf).max(), (cdf - (k - 1) / x.size).max()))


@CHECKS.add("8.3", "orthogonal_gaussian", "chi-distributed row norms", 2)
def _ortho_norms(fn):
    # KS bound c/sqrt(N) with c = 3.8: false alarm 2 exp(-2 c^2) ~ 6e-13
    for m, d, seed in [(4096, 16, 8), (1000, 5, 9)]:
        w, ctx = _draw(fn, m, d, seed)
        norms = np.linalg.norm(w, axis=1)
        ks = _ks_chi(norms, d)
        sq = float(np.mean(norms ** 2))
        bound = 3.8 / np.sqrt(m)
        if ks > bound or abs(sq - d) > 7 * np.sqrt(2 * d / m):
            raise AssertionError(
                f"orthogonal_gaussian for {ctx}: the row norms are not chi-distributed with d = {d} degrees of freedom "
                f"(the norms of N(0, I_d) vectors)\n    mean squared norm: yours {sq:.3f}, expected {d} +- "
                f"{np.sqrt(2 * d / m):.3f}\n    Kolmogorov-Smirnov distance to chi({d}): {ks:.4f} (allowed {bound:.4f})\n"
                f"    norms of your first rows: {np.array2string(norms[:6], precision=3)}")


@CHECKS.add("8.3", "orthogonal_gaussian", "uniformly distributed directions", 1)
def _ortho_directions(fn):
    # row p of every block: mean unit vector ~ 0 (Haar); plain Householder QR biases coordinate p
    for m, d, seed in [(4096, 16, 12), (2000, 5, 13)]:
        w, ctx = _draw(fn, m, d, seed)
        blocks = m // d
        u = _unit(w[:blocks * d]).reshape(blocks, d, d)
        mean = u.mean(axis=0)  # [position in block, coordinate]
        se = 1.0 / np.sqrt(d * blocks)
        p, j = np.unravel_index(np.argmax(np.abs(mean)), mean.shape)
        if abs(mean[p, j]) > 6.5 * se:
            raise AssertionError(
                f"orthogonal_gaussian for {ctx}: directions are not uniformly distributed: over the {blocks} blocks, "
                f"row {p} of a block has mean unit vector with coordinate {j} = {mean[p, j]:+.3f} (expected 0 +- "
                f"{se:.3f}).\n    Householder QR alone makes column j of q lean towards -e_j: multiply column j "
                "by the sign of r[j, j].")


# ---------------------------------------------------------------- Exercise 8.4 and 8.5: FAVOR+ attention

def _reference(q, k, v, w, scale, causal):
    import torch

    from ...approx.performer import favor_attention_quadratic

    t = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float64))  # noqa: E731
    return favor_attention_quadratic(t(q), t(k), t(v), t(w), scale=scale, causal=causal).numpy()


def _qkvw(seed, lead, n_q, n_k, d, dv, m, norm=None, mixed=False):
    rng = _rng(seed)
    q = rng.standard_normal(lead + (n_q, d))
    k = rng.standard_normal(lead + (n_k, d))
    v = rng.standard_normal(lead + (n_k, dv))
    if norm is not None:
        q, k = (norm * t / np.linalg.norm(t, axis=-1, keepdims=True) for t in (q, k))
    if mixed:  # key norms from 0.1 to 1 x norm: each feature's largest key is a different one
        k = k * np.linspace(0.1, 1.0, n_k)[:, None]
    return q, k, v, _gauss_w(seed, m, d)


def _estimate_call(fn, name, q, k, v, w, scale=None, **extra):
    """``fn(q, k, v, w, *extra[, scale])`` and how it was called (the extra arguments are positional)."""
    named = dict(extra) if scale is None else dict(extra, scale=scale)
    return fn(q, k, v, w, *named.values()), call_repr(name, q, k, v, w, **named)


def _estimate_case(fn, name, causal, q, k, v, w, scale=None, **extra):
    """Call ``fn``; require its inputs unchanged and the reference's shape: (yours, expected, context)."""
    ins = [a.copy() for a in (q, k, v, w)]
    got, ctx = _estimate_call(fn, name, q, k, v, w, scale, **extra)
    if not all(np.array_equal(a, b) for a, b in zip(ins, (q, k, v, w))):
        raise AssertionError(f"{name}: your function modified its inputs in place; work on a copy")
    got = as_array(got, name)
    expected = _reference(q, k, v, w, scale, causal)
    _shape_ok(got, expected.shape, name, ctx)
    return got, expected, ctx


def _favor_case(fn, q, k, v, w, scale=None, atol=ATOL, note=""):
    got, expected, ctx = _estimate_case(fn, "favor_attention", False, q, k, v, w, scale)
    if not np.all(np.isfinite(got)):
        raise AssertionError(f"favor_attention for {ctx}{note}: {int((~np.isfinite(got)).sum())} entries are inf or NaN "
                             "(0/0 after exp underflowed?). Use the shifts c_r and M_i of the docstring.")
    assert_close(got, expected, what="favor_attention", atol=atol, context=ctx + note)


@CHECKS.add("8.4", "favor_attention", "equals the FAVOR+ estimate", 3)
def _favor_random(fn):
    for seed, lead, n_q, n_k, d, dv, m in [(20, (), 7, 7, 4, 4, 6), (21, (), 13, 29, 8, 3, 8), (22, (2,), 33, 17, 16, 16, 40),
                                           (23, (2, 3), 20, 37, 16, 8, 5)]:
        _favor_case(fn, *_qkvw(seed, lead, n_q, n_k, d, dv, m))


@CHECKS.add("8.4", "favor_attention", "explicit scale", 1)
def _favor_scale(fn):
    for seed, scale in [(24, 0.3), (25, 1.0)]:
        _favor_case(fn, *_qkvw(seed, (2,), 11, 19, 8, 5, 12), scale=scale)


@CHECKS.add("8.4", "favor_attention", "scores in the thousands", 2)
def _favor_large(fn):
    # scores tau q.k up to ~2000: exponents ~ -1000 underflow unless shifted; mixed key norms defeat one global key shift
    for seed, norm, mixed in [(26, 90.0, False), (27, 90.0, True), (28, 60.0, True)]:
        _favor_case(fn, *_qkvw(seed, (2,), 23, 31, 8, 4, 16, norm=norm, mixed=mixed), atol=ATOL_BIG,
                    note=f" (|q| = |k| = {norm:g}{', key norms scaled 0.1 .. 1' if mixed else ''})")


@CHECKS.add("8.4", "favor_attention", "linear memory", 1)
def _favor_memory(fn):
    n, d, m = 2048, 16, 16
    q, k, v, w = _qkvw(29, (), n, n, d, d, m)
    got, peak = traced_call(lambda: fn(q, k, v, w))
    assert_close(as_array(got, "favor_attention"), _reference(q, k, v, w, None, False), what="favor_attention",
                 atol=ATOL, context=call_repr("favor_attention", q, k, v, w) + " (the memory check counts only a right answer)")
    limit = n * n * 8 // 4  # a quarter of one float64 n x n matrix
    if peak > limit:
        raise AssertionError(f"favor_attention: peak extra memory {peak / 2**20:.1f} MiB for n_q = n_k = {n}, m = {m}; "
                             f"one float64 n x n matrix is {n * n * 8 / 2**20:.0f} MiB. Compute phi(Y)^T V first "
                             "([m, d_v]) and never form phi(X) phi(Y)^T.")


def _causal_call(fn, q, k, v, w, chunk, scale=None):
    return _estimate_call(fn, "causal_favor", q, k, v, w, scale, chunk=chunk)


def _causal_case(fn, q, k, v, w, chunk, scale=None, atol=ATOL, note=""):
    got, expected, ctx = _estimate_case(fn, "causal_favor", True, q, k, v, w, scale, chunk=chunk)
    if not np.all(np.isfinite(got)):
        bad = np.argwhere(~np.isfinite(got))[0]
        raise AssertionError(f"causal_favor for {ctx}{note}: {int((~np.isfinite(got)).sum())} entries are inf or NaN "
                             f"(first at {tuple(int(i) for i in bad)}; query 0 must see key 0 -- the diagonal counts)")
    assert_close(got, expected, what="causal_favor", atol=atol, context=ctx + note)


@CHECKS.add("8.5", "causal_favor", "equals the causal FAVOR+ estimate", 3)
def _causal_random(fn):
    # chunk sizes: not dividing n, dividing n, 1, larger than n; leading axes; d_v != d
    for seed, lead, n, d, dv, m, chunk in [(30, (), 37, 16, 8, 24, 8), (31, (2, 3), 50, 16, 16, 48, 64),
                                           (32, (2,), 33, 8, 4, 20, 1), (33, (1, 2), 64, 16, 8, 32, 16),
                                           (34, (), 19, 4, 3, 3, 5)]:
        q, k, v, w = _qkvw(seed, lead, n, n, d, dv, m)
        _causal_case(fn, q, k, v, w, chunk)
    q, k, v, w = _qkvw(35, (2,), 26, 26, 8, 5, 12)
    _causal_case(fn, q, k, v, w, 6, scale=0.3)


@CHECKS.add("8.5", "causal_favor", "exactly causal", 2)
def _causal_exact(fn):
    # changing positions >= t must leave outputs < t bit-for-bit unchanged
    q, k, v, w = _qkvw(36, (2, 2), 45, 45, 16, 8, 32)
    out, ctx = _causal_call(fn, q, k, v, w, 16)
    out = as_array(out, "causal_favor")
    for t in (1, 15, 16, 30, 44):
        q2, k2, v2 = q.copy(), k.copy(), v.copy()
        k2[..., t, :] *= 40.0  # a huge later key: it would move any stabiliser that looks ahead
        v2[..., t:, :] = _rng(37 + t).standard_normal(v2[..., t:, :].shape) * 1e3
        q2[..., t + 1:, :] = 0.0
        out2 = as_array(_causal_call(fn, q2, k2, v2, w, 16)[0], "causal_favor")
        if not np.array_equal(out[..., :t, :], out2[..., :t, :]):
            diff = np.abs(out[..., :t, :] - out2[..., :t, :])
            first = int(np.argwhere(diff > 0)[0][-2]) if np.any(diff > 0) else -1
            raise AssertionError(
                f"causal_favor for {ctx}: changing q, k, v at positions >= {t} changed the output at position {first} "
                f"< {t} (largest change {np.nanmax(diff):.3g}). Causal means bit-for-bit: nothing used for query i, "
                "not even a stabilising shift, may depend on a later key.")
        if np.array_equal(out[..., t:, :], out2[..., t:, :]):
            raise AssertionError(f"causal_favor for {ctx}: changing the values at positions >= {t} did not change any "
                                 "output at positions >= t")


@CHECKS.add("8.5", "causal_favor", "scores in the thousands", 1)
def _causal_large(fn):
    for seed, norm, mixed, chunk in [(40, 90.0, False, 8), (41, 60.0, True, 5)]:
        q, k, v, w = _qkvw(seed, (2,), 29, 29, 8, 4, 16, norm=norm, mixed=mixed)
        _causal_case(fn, q, k, v, w, chunk, atol=ATOL_BIG,
                     note=f" (|q| = |k| = {norm:g}{', key norms scaled 0.1 .. 1' if mixed else ''})")


@CHECKS.add("8.5", "causal_favor", "chunked memory", 1)
def _causal_memory(fn):
    n, d, m, chunk = 2048, 16, 16, 64
    q, k, v, w = _qkvw(42, (), n, n, d, d, m)
    got, peak = traced_call(lambda: fn(q, k, v, w, chunk))
    assert_close(as_array(got, "causal_favor"), _reference(q, k, v, w, None, True), what="causal_favor",
                 atol=ATOL, context=call_repr("causal_favor", q, k, v, w, chunk=chunk) + " (the memory check counts only a right answer)")
    limit = n * n * 8 // 4  # a quarter of one float64 n x n matrix
    if peak > limit:
        raise AssertionError(f"causal_favor: peak extra memory {peak / 2**20:.1f} MiB for n = {n}, m = {m}, chunk = {chunk}; "
                             f"one float64 n x n matrix is {n * n * 8 / 2**20:.0f} MiB. Carry the [m, d_v] state across "
                             "chunks; only a chunk x chunk block may be built.")
