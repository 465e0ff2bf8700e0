"""Plausible wrong answers to Chapter 2's exercises. Each must fail at least one graded check.

Every mutant starts from a correct answer and changes one thing a student might get wrong.
"""
import numpy as np

from sparse_core import reference as ref


def _offsets(n_q, n_k):
    return np.arange(n_q)[:, None] - np.arange(n_k)[None, :]


# ---------------------------------------------------------------- 2.1 window_mask

def window_strict(n_q, n_k, window, causal=False):
    """Off by one: |i - j| < w."""
    o = _offsets(n_q, n_k)
    return ((o >= 0) if causal else (o > -window)) & (o < window) | (o == 0)


def window_too_wide(n_q, n_k, window, causal=False):
    """Off by one the other way: |i - j| <= w + 1."""
    o = _offsets(n_q, n_k)
    return (o >= (0 if causal else -window - 1)) & (o <= window + 1)


def window_missing_diagonal(n_q, n_k, window, causal=False):
    o = _offsets(n_q, n_k)
    return (o >= (0 if causal else -window)) & (o <= window) & (o != 0)


def window_causal_upper(n_q, n_k, window, causal=False):
    """Wrong causal direction: keeps i <= j <= i + w."""
    o = _offsets(n_q, n_k)
    return (o >= -window) & (o <= (0 if causal else window))


def window_causal_ignored(n_q, n_k, window, causal=False):
    o = _offsets(n_q, n_k)
    return np.abs(o) <= window


def window_square_only(n_q, n_k, window, causal=False):
    """Builds an n_q x n_q mask and crops or pads it: wrong when n_k > n_q."""
    o = _offsets(n_q, n_q)
    m = (o >= (0 if causal else -window)) & (o <= window)
    out = np.zeros((n_q, n_k), dtype=bool)
    c = min(n_q, n_k)
    out[:, :c] = m[:, :c]
    return out


def window_int(n_q, n_k, window, causal=False):
    o = _offsets(n_q, n_k)
    return ((o >= (0 if causal else -window)) & (o <= window)).astype(int)


# ---------------------------------------------------------------- 2.2 dilated_mask

def _dilated(n, window, dilation, causal, ks=None, extra=None):
    o = _offsets(n, n)
    ks = range(-window, (0 if causal else window) + 1) if ks is None else ks
    m = np.zeros((n, n), dtype=bool)
    for k in ks:
        m |= o == -k * dilation
    return m if extra is None else m & extra


def dilated_reach_not_scaled(n, window, dilation, causal=False):
    """Applies the dilation as a filter but keeps the reach at w instead of w * dilation."""
    o = _offsets(n, n)
    return (o % dilation == 0) & (o >= (0 if causal else -window)) & (o <= window)


def dilated_absolute_grid(n, window, dilation, causal=False):
    """Dilation applied to the key index (j % dilation == 0) instead of the offset i - j."""
    o = _offsets(n, n)
    reach = window * dilation
    return (np.arange(n)[None, :] % dilation == 0) & (o >= (0 if causal else -reach)) & (o <= reach)


def dilated_k_exclusive(n, window, dilation, causal=False):
    """range(-w, w) forgets k = +w (and, causal, range(-w, 0) forgets k = 0)."""
    ks = range(-window, 0) if causal else range(-window, window)
    return _dilated(n, window, dilation, causal, ks=ks)


def dilated_missing_diagonal(n, window, dilation, causal=False):
    return _dilated(n, window, dilation, causal) & (_offsets(n, n) != 0)


def dilated_causal_upper(n, window, dilation, causal=False):
    ks = range(0, window + 1) if causal else None
    return _dilated(n, window, dilation, causal, ks=ks)


def dilated_gap_not_step(n, window, dilation, causal=False):
    """Skips `dilation` keys between kept ones, i.e. a step of dilation + 1."""
    return _dilated(n, window, dilation + 1, causal)


# ---------------------------------------------------------------- 2.3 window_block_layout

def _layout(n, block_size, reach, causal, n_blocks=None):
    nb = -(-n // block_size) if n_blocks is None else n_blocks
    delta = np.arange(nb)[:, None] - np.arange(nb)[None, :]
    return (delta >= (0 if causal else -reach)) & (delta <= reach)


def layout_floor_reach(n, window, block_size, causal=False):
    """w // B: drops the partial blocks at the edge of the band."""
    return _layout(n, block_size, window // block_size, causal)


def layout_only_full_blocks(n, window, block_size, causal=False):
    """Keeps a block only when every pair in it is allowed (no partial blocks)."""
    nb = -(-n // block_size)
    out = np.zeros((nb, nb), dtype=bool)
    o = _offsets(n, n)
    m = (o >= (0 if causal else -window)) & (o <= window)
    for qb in range(nb):
        for kb in range(nb):
            out[qb, kb] = m[qb * block_size:(qb + 1) * block_size, kb * block_size:(kb + 1) * block_size].all()
    return out


def layout_floor_n_blocks(n, window, block_size, causal=False):
    """n // B blocks: forgets the short last block."""
    return _layout(n, block_size, -(-window // block_size), causal, n_blocks=max(1, n // block_size))


def layout_one_extra_block(n, window, block_size, causal=False):
    """(w + B) // B = floor(w / B) + 1: one block too many whenever B divides w."""
    return _layout(n, block_size, (window + block_size) // block_size, causal)


def layout_causal_upper(n, window, block_size, causal=False):
    r = -(-window // block_size)
    nb = -(-n // block_size)
    delta = np.arange(nb)[:, None] - np.arange(nb)[None, :]
    return (delta >= -r) & (delta <= (0 if causal else r))


def layout_from_token_mask(n, window, block_size, causal=False):
    """The right answer, via an n x n token mask: fails the memory check."""
    nb = -(-n // block_size)
    o = _offsets(n, n)
    m = (o >= (0 if causal else -window)) & (o <= window)
    padded = np.zeros((nb * block_size, nb * block_size), dtype=bool)
    padded[:n, :n] = m
    return padded.reshape(nb, block_size, nb, block_size).any(axis=(1, 3))


# ---------------------------------------------------------------- 2.4 receptive_field

def _field(mask, n_layers, residual=True, axis=1, extra=0):
    mask = np.asarray(mask, dtype=bool)
    n = mask.shape[0]
    step = (mask | np.eye(n, dtype=bool)) if residual else mask
    reach = np.eye(n, dtype=bool)
    for _ in range(max(0, n_layers + extra)):
        reach = (step.astype(np.float64) @ reach.astype(np.float64)) > 0.5
    return reach.sum(axis=axis).astype(np.int64)


def field_one_layer_short(mask, n_layers):
    return _field(mask, n_layers, extra=-1)


def field_one_layer_long(mask, n_layers):
    return _field(mask, n_layers, extra=1)


def field_no_residual(mask, n_layers):
    """Uses mask^L: without the residual connection (the identity) a path cannot wait at a token."""
    return _field(mask, n_layers, residual=False)


def field_wrong_direction(mask, n_layers):
    """Counts the positions each token influences (column sums) instead of its sources."""
    return _field(mask, n_layers, axis=0)


def field_integer_power(mask, n_layers):
    """Integer matrix power: exact for few layers, overflows for many."""
    mask = np.asarray(mask, dtype=bool)
    A = (mask | np.eye(mask.shape[0], dtype=bool)).astype(np.int64)
    return (np.linalg.matrix_power(A, n_layers) > 0).sum(axis=1).astype(np.int64)


def field_without_self(mask, n_layers):
    return _field(mask, n_layers) - 1


def field_window_formula(mask, n_layers):
    """The closed form min(n, 2 L w + 1) with w read off row 0: right only for symmetric windows."""
    mask = np.asarray(mask, dtype=bool)
    n = mask.shape[0]
    w = int(mask[0].sum()) - 1
    i = np.arange(n)
    return (np.minimum(i + n_layers * w, n - 1) - np.maximum(i - n_layers * w, 0) + 1).astype(np.int64)


def field_float(mask, n_layers):
    return _field(mask, n_layers).astype(np.float64)


# ---------------------------------------------------------------- 2.5 local_attention

def _band(q, k, v, window, causal, scale=None, shift=True, mask_edges=True, lo=None, hi=None):
    q, k, v = (np.asarray(x, dtype=np.float64) for x in (q, k, v))
    n, d = q.shape[-2], q.shape[-1]
    lo = (0 if causal else -window) if lo is None else lo
    hi = window if hi is None else hi
    offsets = np.arange(-hi, -lo + 1)  # key = query + offset
    pad = [(0, 0)] * (q.ndim - 2) + [(window + 1, window + 1), (0, 0)]
    kp, vp = np.pad(k, pad), np.pad(v, pad)
    c = window + 1
    s = np.stack([(q * kp[..., c + o:c + o + n, :]).sum(-1) for o in offsets], -1)
    s = s * (1 / np.sqrt(d) if scale is None else scale)
    pos = np.arange(n)[:, None] + offsets[None, :]
    if mask_edges:
        s = np.where((pos >= 0) & (pos < n), s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True)) if shift else np.exp(s)
    p = p / p.sum(-1, keepdims=True)
    return sum(p[..., j:j + 1] * vp[..., c + o:c + o + n, :] for j, o in enumerate(offsets))


def local_no_scale(q, k, v, window, causal=False):
    return _band(q, k, v, window, causal, scale=1.0)


def local_no_max_shift(q, k, v, window, causal=False):
    return _band(q, k, v, window, causal, shift=False)


def local_edges_not_masked(q, k, v, window, causal=False):
    """Zero-padded keys at the two ends take part with score 0."""
    return _band(q, k, v, window, causal, mask_edges=False)


def local_window_strict(q, k, v, window, causal=False):
    """Off by one: offsets |o| < w."""
    w = max(window - 1, 0)
    return _band(q, k, v, window, causal, lo=0 if causal else -w, hi=w)


def local_causal_upper(q, k, v, window, causal=False):
    """Wrong causal direction: keys i .. i + w."""
    return _band(q, k, v, window, causal, lo=-window, hi=0 if causal else window)


def local_missing_diagonal(q, k, v, window, causal=False):
    n = q.shape[-2]
    o = _offsets(n, n)
    m = (o >= (0 if causal else -window)) & (o <= window) & (o != 0)
    return ref.attention(q, k, v, mask=m)


def local_dense_in_disguise(q, k, v, window, causal=False):
    n = q.shape[-2]
    o = _offsets(n, n)
    return ref.attention(q, k, v, mask=(o >= (0 if causal else -window)) & (o <= window))


MUTANTS = {
    "2.1": [window_strict, window_too_wide, window_missing_diagonal, window_causal_upper, window_causal_ignored,
            window_square_only, window_int],
    "2.2": [dilated_reach_not_scaled, dilated_absolute_grid, dilated_k_exclusive, dilated_missing_diagonal,
            dilated_causal_upper, dilated_gap_not_step],
    "2.3": [layout_floor_reach, layout_only_full_blocks, layout_floor_n_blocks, layout_one_extra_block,
            layout_causal_upper, layout_from_token_mask],
    "2.4": [field_one_layer_short, field_one_layer_long, field_no_residual, field_wrong_direction,
            field_integer_power, field_without_self, field_window_formula, field_float],
    "2.5": [local_no_scale, local_no_max_shift, local_edges_not_masked, local_window_strict, local_causal_upper,
            local_missing_diagonal, local_dense_in_disguise],
}
