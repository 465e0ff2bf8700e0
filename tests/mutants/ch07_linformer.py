"""Plausible wrong answers to Chapter 7's exercises. Each must fail at least one graded check.

Every mutant starts from the reference answer and changes one thing a student might get wrong.
"""
import numpy as np

from sparse_core import reference as ref


def _softmax(s):
    p = np.exp(s - s.max(-1, keepdims=True))
    return p / p.sum(-1, keepdims=True)


def _lin(q, k, v, E, F, scale=None, *, rows="first", scale_mode="sqrt", use_F=True, shift=True):
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    n = k.shape[-2]
    E, F = np.asarray(E, np.float64), np.asarray(F, np.float64)
    sl = slice(None, n) if rows == "first" else slice(E.shape[-2] - n, None)
    E, F = E[..., sl, :], F[..., sl, :]
    if scale is None:
        scale = {"sqrt": 1 / np.sqrt(q.shape[-1]), "none": 1.0, "d": 1 / q.shape[-1]}[scale_mode]
    kb = np.swapaxes(E, -1, -2) @ k
    vb = np.swapaxes(F if use_F else E, -1, -2) @ v
    s = q @ np.swapaxes(kb, -1, -2) * scale
    if shift:
        return _softmax(s) @ vb
    p = np.exp(s)
    return p / p.sum(-1, keepdims=True) @ vb


def lin_E_for_both(q, k, v, E, F, scale=None):
    """Ignores F and projects the values with E too (sharing on when it is off)."""
    return _lin(q, k, v, E, F, scale, use_F=False)


def lin_E_on_queries(q, k, v, E, F, scale=None):
    """Projects the queries with E instead of the keys (and leaves the values alone)."""
    q = np.asarray(q, np.float64)
    E = np.asarray(E, np.float64)[..., :q.shape[-2], :]
    return ref.attention(np.swapaxes(E, -1, -2) @ q, k, v, scale=scale)


def lin_F_not_applied(q, k, v, E, F, scale=None):
    """Projects the keys only and averages the values into k_proj rows by truncation."""
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    n = k.shape[-2]
    E = np.asarray(E, np.float64)[..., :n, :]
    kp = E.shape[-1]
    s = q @ np.swapaxes(np.swapaxes(E, -1, -2) @ k, -1, -2) * (scale or 1 / np.sqrt(q.shape[-1]))
    vb = np.resize(v, v.shape[:-2] + (kp, v.shape[-1])) if kp != n else v
    return _softmax(s) @ vb


def lin_unscaled(q, k, v, E, F, scale=None):
    return _lin(q, k, v, E, F, scale, scale_mode="none")


def lin_ignores_explicit_scale(q, k, v, E, F, scale=None):
    return _lin(q, k, v, E, F, None)


def lin_last_rows(q, k, v, E, F, scale=None):
    """Uses the last n rows of E and F when seq_len > n."""
    return _lin(q, k, v, E, F, scale, rows="last")


def lin_no_max_shift(q, k, v, E, F, scale=None):
    return _lin(q, k, v, E, F, scale, shift=False)


def lin_softmax_over_queries(q, k, v, E, F, scale=None):
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    n = k.shape[-2]
    E, F = np.asarray(E, np.float64)[..., :n, :], np.asarray(F, np.float64)[..., :n, :]
    s = q @ np.swapaxes(np.swapaxes(E, -1, -2) @ k, -1, -2) * (scale or 1 / np.sqrt(q.shape[-1]))
    p = np.exp(s - s.max(-2, keepdims=True))
    return p / p.sum(-2, keepdims=True) @ (np.swapaxes(F, -1, -2) @ v)


def _energy(s, fraction, *, square=True, off=0, strict=False, sort=True):
    s = np.asarray(s, np.float64)
    if not 0 < fraction <= 1:
        raise ValueError("fraction")
    if sort:
        s = np.sort(s)[::-1]
    e = np.cumsum(s ** 2 if square else s)
    if e.size == 0 or e[-1] == 0:
        return 0
    r = int(np.searchsorted(e, fraction * e[-1], side="right" if strict else "left")) + 1 + off
    return min(max(r, 0), s.size)


def energy_not_squared(s, fraction):
    return _energy(s, fraction, square=False)


def energy_off_by_one(s, fraction):
    """Returns the index of the first prefix that reaches the fraction, not the count."""
    return _energy(s, fraction, off=-1)


def energy_strict(s, fraction):
    return _energy(s, fraction, strict=True)


def energy_assumes_sorted(s, fraction):
    return _energy(s, fraction, sort=False)


def energy_float(s, fraction):
    return float(_energy(s, fraction))


def energy_no_validation(s, fraction):
    s = np.sort(np.asarray(s, np.float64))[::-1]
    e = np.cumsum(s ** 2)
    if e[-1] == 0:
        return 0
    return int(min(np.searchsorted(e, fraction * e[-1]) + 1, s.size))


def _svd_parts(P):
    return np.linalg.svd(np.asarray(P, np.float64), full_matrices=False)


def rank_keeps_k_plus_one(P, k):
    U, s, Vh = _svd_parts(P)
    k1 = k + 1
    return (U[..., :, :k1] * s[..., None, :k1]) @ Vh[..., :k1, :], np.sqrt(np.sum(s[..., k1:] ** 2, -1))


def rank_error_not_squared(P, k):
    U, s, Vh = _svd_parts(P)
    return (U[..., :, :k] * s[..., None, :k]) @ Vh[..., :k, :], np.sum(s[..., k:], -1)


def rank_error_spectral(P, k):
    U, s, Vh = _svd_parts(P)
    err = np.where(k < s.shape[-1], s[..., min(k, s.shape[-1] - 1)], 0.0)
    return (U[..., :, :k] * s[..., None, :k]) @ Vh[..., :k, :], err


def rank_error_relative(P, k):
    U, s, Vh = _svd_parts(P)
    return (U[..., :, :k] * s[..., None, :k]) @ Vh[..., :k, :], np.sqrt(np.sum(s[..., k:] ** 2, -1) / np.sum(s ** 2, -1))


def rank_smallest_values(P, k):
    U, s, Vh = _svd_parts(P)
    m = s.shape[-1]
    lo = max(m - k, 0)
    return (U[..., :, lo:] * s[..., None, lo:]) @ Vh[..., lo:, :], np.sqrt(np.sum(s[..., :lo] ** 2, -1))


def rank_forgets_singular_values(P, k):
    U, s, Vh = _svd_parts(P)
    return U[..., :, :k] @ Vh[..., :k, :], np.sqrt(np.sum(s[..., k:] ** 2, -1))


def jl_scale_sqrt_n(n, k, rng):
    return rng.standard_normal((n, k)) / np.sqrt(n)


def jl_unscaled(n, k, rng):
    return rng.standard_normal((n, k))


def jl_scale_one_over_k(n, k, rng):
    return rng.standard_normal((n, k)) / k


def jl_uniform_like_linformer_init(n, k, rng):
    """The linformer package's initialisation: uniform in +-1/sqrt(k), variance 1/(3k)."""
    b = 1 / np.sqrt(k)
    return rng.uniform(-b, b, size=(n, k))


def jl_rademacher(n, k, rng):
    return rng.choice([-1.0, 1.0], size=(n, k)) / np.sqrt(k)


def jl_transposed(n, k, rng):
    return rng.standard_normal((k, n)) / np.sqrt(k)


def jl_fixed_seed(n, k, rng):
    return np.random.default_rng(0).standard_normal((n, k)) / np.sqrt(k)


def jl_float32(n, k, rng):
    return (rng.standard_normal((n, k)) / np.sqrt(k)).astype(np.float32)


def _flops(n, k, d, d_v=None, n_heads=1, batch=1, *, proj=True, two=2, proj_v=True, dense_dv=True, heads=True):
    d_v = d if d_v is None else d_v
    h = batch * n_heads if heads else 1
    p = h * two * n * k * (d + (d_v if proj_v else 0)) if proj else 0
    a = h * two * n * k * (d + d_v)
    dn = h * two * n * n * (d + (d_v if dense_dv else d))
    return {"projection": p, "attention": a, "total": p + a, "dense": dn}


def flops_forget_projection(n, k, d, d_v=None, n_heads=1, batch=1):
    return _flops(n, k, d, d_v, n_heads, batch, proj=False)


def flops_no_factor_two(n, k, d, d_v=None, n_heads=1, batch=1):
    return _flops(n, k, d, d_v, n_heads, batch, two=1)


def flops_projects_keys_only(n, k, d, d_v=None, n_heads=1, batch=1):
    return _flops(n, k, d, d_v, n_heads, batch, proj_v=False)


def flops_dense_ignores_d_v(n, k, d, d_v=None, n_heads=1, batch=1):
    return _flops(n, k, d, d_v, n_heads, batch, dense_dv=False)


def flops_ignores_heads(n, k, d, d_v=None, n_heads=1, batch=1):
    return _flops(n, k, d, d_v, n_heads, batch, heads=False)


MUTANTS = {
    "7.1": [lin_E_for_both, lin_E_on_queries, lin_F_not_applied, lin_unscaled, lin_ignores_explicit_scale,
            lin_last_rows, lin_no_max_shift, lin_softmax_over_queries],
    "7.2": [energy_not_squared, energy_off_by_one, energy_strict, energy_assumes_sorted, energy_float,
            energy_no_validation],
    "7.3": [rank_keeps_k_plus_one, rank_error_not_squared, rank_error_spectral, rank_error_relative,
            rank_smallest_values, rank_forgets_singular_values],
    "7.4": [jl_scale_sqrt_n, jl_unscaled, jl_scale_one_over_k, jl_uniform_like_linformer_init, jl_rademacher,
            jl_transposed, jl_fixed_seed, jl_float32],
    "7.5": [flops_forget_projection, flops_no_factor_two, flops_projects_keys_only, flops_dense_ignores_d_v,
            flops_ignores_heads],
}
