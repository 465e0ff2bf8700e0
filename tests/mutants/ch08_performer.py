"""Plausible wrong answers to Chapter 8's exercises. Each must fail at least one graded check.

Every mutant starts from the reference answer and changes one thing a student might get wrong.
"""
import numpy as np


def _sq(x):
    return (x * x).sum(-1, keepdims=True)


# ---------------------------------------------------------------- 8.1 positive_features

def _pos(x, w, shift=0.0, half=0.5, norm="sqrt", after=False, sign=1.0, abs_norm=False):
    x = np.asarray(x, dtype=np.float64)
    sq = np.sqrt(_sq(x)) if abs_norm else _sq(x)
    a = x @ w.T - half * sq
    m = w.shape[0]
    div = {"sqrt": np.sqrt(m), "m": m, "none": 1.0}[norm]
    if after:
        return np.exp(a) * np.exp(-sign * np.asarray(shift)) / div
    return np.exp(a - sign * np.asarray(shift)) / div


def positive_missing_half_norm(x, w, shift=0.0):
    return _pos(x, w, shift, half=0.0)


def positive_full_norm_not_half(x, w, shift=0.0):
    return _pos(x, w, shift, half=1.0)


def positive_norm_not_squared(x, w, shift=0.0):
    return _pos(x, w, shift, abs_norm=True)


def positive_missing_sqrt_m(x, w, shift=0.0):
    return _pos(x, w, shift, norm="none")


def positive_divides_by_m(x, w, shift=0.0):
    return _pos(x, w, shift, norm="m")


def positive_shift_after_exp(x, w, shift=0.0):
    return _pos(x, w, shift, after=True)


def positive_shift_added(x, w, shift=0.0):
    return _pos(x, w, shift, sign=-1.0)


def positive_ignores_shift(x, w, shift=0.0):
    return _pos(x, w, 0.0)


# ---------------------------------------------------------------- 8.2 trig_features

def _trig(x, w, amp_sign=1.0, order="sc", norm="sqrt", only_cos=False):
    x = np.asarray(x, dtype=np.float64)
    proj = x @ w.T
    m = w.shape[0]
    div = {"sqrt": np.sqrt(m), "none": 1.0, "rff": np.sqrt(m / 2)}[norm]
    amp = np.exp(amp_sign * 0.5 * _sq(x)) / div
    if only_cos:
        return amp * np.cos(proj)
    parts = [np.sin(proj), np.cos(proj)] if order == "sc" else [np.cos(proj), np.sin(proj)]
    if order == "interleaved":
        return amp * np.stack([np.sin(proj), np.cos(proj)], axis=-1).reshape(proj.shape[:-1] + (2 * m,))
    return amp * np.concatenate(parts, axis=-1)


def trig_missing_amplitude(x, w):
    return _trig(x, w, amp_sign=0.0)


def trig_amplitude_sign(x, w):
    return _trig(x, w, amp_sign=-1.0)


def trig_cos_first(x, w):
    return _trig(x, w, order="cs")


def trig_interleaved(x, w):
    return _trig(x, w, order="interleaved")


def trig_only_cos(x, w):
    return _trig(x, w, only_cos=True)


def trig_missing_sqrt_m(x, w):
    return _trig(x, w, norm="none")


def trig_fourier_normalisation(x, w):
    return _trig(x, w, norm="rff")


# ---------------------------------------------------------------- 8.3 orthogonal_gaussian

def _ortho(m, d, rng, fix_sign=True, norms="chi", orth=True, same_block=False, columns=False, directions="qr",
           tall=False):
    if tall:  # QR of one tall [m, d] Gaussian matrix: orthonormal columns, rows not orthogonal
        q, r = np.linalg.qr(rng.standard_normal((max(m, d), d)))
        dirs = (q * np.sign(np.diag(r)))[:m]
    else:
        blocks, first = [], None
        for _ in range(-(-m // d)):
            if directions == "identity":
                q, r = np.eye(d), np.eye(d)
            else:
                q, r = np.linalg.qr(rng.standard_normal((d, d)))
            if fix_sign:
                q = q * np.where(np.diag(r) < 0, -1.0, 1.0)
            if same_block:
                first = q if first is None else first
                q = first
            blocks.append(q.T if orth else rng.standard_normal((d, d)))
        dirs = np.concatenate(blocks)[:m]
        if not orth:
            return dirs
    if norms == "chi":
        lengths = np.linalg.norm(rng.standard_normal((m, d)), axis=1)
    elif norms == "unit":
        lengths = np.ones(m)
    elif norms == "sqrt_d":
        lengths = np.full(m, np.sqrt(d))
    else:  # |diag(R)|: chi with d, d-1, ..., 1 degrees of freedom
        lengths = np.concatenate([np.abs(np.diag(np.linalg.qr(rng.standard_normal((d, d)))[1]))
                                  for _ in range(-(-m // d))])[:m]
    if columns:
        return dirs * lengths[:d][None, :] if m >= d else dirs * np.linalg.norm(rng.standard_normal((d, d)), axis=1)[None, :]
    return dirs * lengths[:, None]


def ortho_iid_rows(m, d, rng):
    return _ortho(m, d, rng, orth=False)


def ortho_unit_norms(m, d, rng):
    return _ortho(m, d, rng, norms="unit")


def ortho_sqrt_d_norms(m, d, rng):
    return _ortho(m, d, rng, norms="sqrt_d")


def ortho_norms_from_r(m, d, rng):
    return _ortho(m, d, rng, norms="r_diag")


def ortho_same_block_repeated(m, d, rng):
    return _ortho(m, d, rng, same_block=True)


def ortho_norms_on_columns(m, d, rng):
    return _ortho(m, d, rng, columns=True)


def ortho_no_sign_fix(m, d, rng):
    return _ortho(m, d, rng, fix_sign=False)


def ortho_identity_directions(m, d, rng):
    return _ortho(m, d, rng, directions="identity")


def ortho_one_tall_qr(m, d, rng):
    return _ortho(m, d, rng, tall=True)


def ortho_global_numpy_random(m, d, rng):
    return _ortho(m, d, np.random.default_rng())


# ---------------------------------------------------------------- 8.4 favor_attention

def _exps(q, k, w, scale, root=True, key_half=True):
    q, k = np.asarray(q, np.float64), np.asarray(k, np.float64)
    tau = 1.0 / np.sqrt(q.shape[-1]) if scale is None else float(scale)
    f = np.sqrt(tau) if root else tau
    x, y = q * f, k * f
    a = x @ w.T - 0.5 * _sq(x)
    b = y @ w.T - (0.5 * _sq(y) if key_half else 0.0)
    return a, b


def _favor(q, k, v, w, scale=None, stab="feature", den="right", root=True, key_half=True, quadratic=False,
           unscaled=False):
    v = np.asarray(v, np.float64)
    # unscaled: q and k enter the features as they are, without sqrt(scale) (d**-0.25 by default)
    a, b = _exps(q, k, w, 1.0 if unscaled else scale, root=root, key_half=key_half)
    if stab == "feature":
        c = b.max(-2, keepdims=True)
        aq = a + c
        fq, fk = np.exp(aq - aq.max(-1, keepdims=True)), np.exp(b - c)
    elif stab == "per_key":  # each key shifted by its own maximum: does not cancel
        fq = np.exp(a - a.max(-1, keepdims=True))
        fk = np.exp(b - b.max(-1, keepdims=True))
    elif stab == "package":  # performer_pytorch's shifts: max of w.x per query, one max of w.y for all keys
        tau = 1.0 / np.sqrt(np.shape(q)[-1]) if scale is None else float(scale)
        xq, yk = np.asarray(q, np.float64) * np.sqrt(tau), np.asarray(k, np.float64) * np.sqrt(tau)
        dq, dk = xq @ w.T, yk @ w.T
        fq = np.exp(dq - 0.5 * _sq(xq) - dq.max(-1, keepdims=True))
        fk = np.exp(dk - 0.5 * _sq(yk) - dk.max(axis=(-1, -2), keepdims=True))
    else:  # none
        fq, fk = np.exp(a), np.exp(b)
    if quadratic:
        A = fq @ np.swapaxes(fk, -1, -2)
        return (A @ v) / A.sum(-1, keepdims=True)
    num = fq @ (np.swapaxes(fk, -1, -2) @ v)
    if den == "right":
        return num / (fq @ fk.sum(-2)[..., None])
    if den == "none":
        return num
    if den == "features":
        return num / fq.sum(-1, keepdims=True)
    return num / num.shape[-2]  # "count"


def favor_unscaled_qk(q, k, v, w, scale=None):
    return _favor(q, k, v, w, scale, unscaled=True)


def favor_scale_not_square_rooted(q, k, v, w, scale=None):
    return _favor(q, k, v, w, scale, root=False)


def favor_key_missing_half_norm(q, k, v, w, scale=None):
    return _favor(q, k, v, w, scale, key_half=False)


def favor_per_key_shift(q, k, v, w, scale=None):
    return _favor(q, k, v, w, scale, stab="per_key")


def favor_package_shifts(q, k, v, w, scale=None):
    with np.errstate(all="ignore"):
        return _favor(q, k, v, w, scale, stab="package")


def favor_no_shift(q, k, v, w, scale=None):
    with np.errstate(all="ignore"):
        return _favor(q, k, v, w, scale, stab="none")


def favor_no_normalisation(q, k, v, w, scale=None):
    return _favor(q, k, v, w, scale, den="none")


def favor_normalised_by_query_features(q, k, v, w, scale=None):
    return _favor(q, k, v, w, scale, den="features")


def favor_normalised_by_count(q, k, v, w, scale=None):
    return _favor(q, k, v, w, scale, den="count")


def favor_quadratic(q, k, v, w, scale=None):
    return _favor(q, k, v, w, scale, quadratic=True)


# ---------------------------------------------------------------- 8.5 causal_favor

def _causal(q, k, v, w, chunk=64, scale=None, stab="prefix", diag=True, future=False, rescale=True, update_first=False,
            quadratic=False, unscaled=False):
    v = np.asarray(v, np.float64)
    a, b = _exps(q, k, w, 1.0 if unscaled else scale)
    lead = np.broadcast_shapes(a.shape[:-2], b.shape[:-2], v.shape[:-2])
    a, b, v = (np.broadcast_to(t, lead + t.shape[-2:]) for t in (a, b, v))
    n, m, dv = a.shape[-2], a.shape[-1], v.shape[-1]
    if stab == "prefix":
        c = np.maximum.accumulate(b, axis=-2)
    elif stab == "global":  # the whole sequence's maximum: looks at the future
        c = np.broadcast_to(b.max(-2, keepdims=True), b.shape)
    else:
        c = np.zeros_like(b)
    aq = a + c
    fq = np.exp(aq - aq.max(-1, keepdims=True)) if stab != "none" else np.exp(a)
    fk = np.exp(b - c)
    if quadratic:  # the masked n x n kernel matrix
        A = np.exp(a - a.max(-1, keepdims=True)) @ np.swapaxes(np.exp(b), -1, -2) * np.tril(np.ones((n, n)))
        return (A @ v) / A.sum(-1, keepdims=True)
    S = np.zeros(lead + (m, dv))
    z = np.zeros(lead + (m,))
    c_prev = np.full(lead + (m,), -np.inf)
    out = np.empty(lead + (n, dv))
    for i0 in range(0, n, chunk):
        i1 = min(i0 + chunk, n)
        cc = c[..., i0:i1, :]
        c_end = cc[..., -1, :]
        fresh = np.exp(b[..., i0:i1, :] - c_end[..., None, :])
        decay = np.exp(c_prev - c_end) if rescale else np.ones_like(c_end)
        if update_first:  # the whole chunk enters the state before its queries read it
            S = decay[..., None] * S + np.swapaxes(fresh, -1, -2) @ v[..., i0:i1, :]
            z = decay * z + fresh.sum(-2)
            qd = fq[..., i0:i1, :] * np.exp(c_end[..., None, :] - cc)
            out[..., i0:i1, :] = (qd @ S) / (qd @ z[..., None])
            c_prev = c_end
            continue
        qd = fq[..., i0:i1, :] * (np.exp(c_prev[..., None, :] - cc) if rescale else np.exp(-cc) * 0 + 1)
        num, den = qd @ S, qd @ z[..., None]
        C = i1 - i0
        keep = np.ones((C, C), bool) if future else np.tril(np.ones((C, C), bool), 0 if diag else -1)
        with np.errstate(invalid="ignore", over="ignore"):
            diff = np.where(keep[..., None], cc[..., None, :, :] - cc[..., :, None, :], -np.inf)
            P = np.einsum("...ir,...ijr,...jr->...ij", fq[..., i0:i1, :], np.exp(diff), fk[..., i0:i1, :])
        num = num + P @ v[..., i0:i1, :]
        den = den + P.sum(-1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[..., i0:i1, :] = num / den
        S = decay[..., None] * S + np.swapaxes(fresh, -1, -2) @ v[..., i0:i1, :]
        z = decay * z + fresh.sum(-2)
        c_prev = c_end
    return out


def causal_excludes_diagonal(q, k, v, w, chunk=64, scale=None):
    return _causal(q, k, v, w, chunk, scale, diag=False)


def causal_future_inside_chunk(q, k, v, w, chunk=64, scale=None):
    return _causal(q, k, v, w, chunk, scale, future=True)


def causal_chunk_enters_state_first(q, k, v, w, chunk=64, scale=None):
    return _causal(q, k, v, w, chunk, scale, update_first=True)


def causal_state_not_rescaled(q, k, v, w, chunk=64, scale=None):
    return _causal(q, k, v, w, chunk, scale, rescale=False)


def causal_global_shift_looks_ahead(q, k, v, w, chunk=64, scale=None):
    return _causal(q, k, v, w, chunk, scale, stab="global")


def causal_no_shift(q, k, v, w, chunk=64, scale=None):
    with np.errstate(all="ignore"):
        return _causal(q, k, v, w, chunk, scale, stab="none")


def causal_quadratic(q, k, v, w, chunk=64, scale=None):
    return _causal(q, k, v, w, chunk, scale, quadratic=True)


def causal_unscaled_qk(q, k, v, w, chunk=64, scale=None):
    return _causal(q, k, v, w, chunk, scale, unscaled=True)


def causal_non_causal(q, k, v, w, chunk=64, scale=None):
    return _favor(q, k, v, w, scale)


MUTANTS = {
    "8.1": [positive_missing_half_norm, positive_full_norm_not_half, positive_norm_not_squared, positive_missing_sqrt_m,
            positive_divides_by_m, positive_shift_after_exp, positive_shift_added, positive_ignores_shift],
    "8.2": [trig_missing_amplitude, trig_amplitude_sign, trig_cos_first, trig_interleaved, trig_only_cos,
            trig_missing_sqrt_m, trig_fourier_normalisation],
    "8.3": [ortho_iid_rows, ortho_unit_norms, ortho_sqrt_d_norms, ortho_norms_from_r, ortho_same_block_repeated,
            ortho_norms_on_columns, ortho_no_sign_fix, ortho_identity_directions, ortho_one_tall_qr,
            ortho_global_numpy_random],
    "8.4": [favor_unscaled_qk, favor_scale_not_square_rooted, favor_key_missing_half_norm, favor_per_key_shift,
            favor_package_shifts, favor_no_shift, favor_no_normalisation, favor_normalised_by_query_features,
            favor_normalised_by_count, favor_quadratic],
    "8.5": [causal_excludes_diagonal, causal_future_inside_chunk, causal_chunk_enters_state_first,
            causal_state_not_rescaled, causal_global_shift_looks_ahead, causal_no_shift, causal_quadratic,
            causal_unscaled_qk, causal_non_causal],
}
