"""Plausible wrong answers to Chapter 1's exercises. Each must fail at least one graded check.

Every mutant starts from the reference answer and changes one thing a student might get wrong.
"""
import numpy as np

from sparse_core import reference as ref


def _softmax_ok(scores, mask=None):
    return ref.masked_softmax(np.asarray(scores, dtype=np.float64), mask)


def softmax_no_max_shift(scores, mask=None):
    s = np.asarray(scores, dtype=np.float64)
    p = np.exp(s) if mask is None else np.where(mask, np.exp(s), 0.0)
    return p / p.sum(-1, keepdims=True)


def softmax_max_over_masked_too(scores, mask=None):
    s = np.asarray(scores, dtype=np.float64)
    p = np.exp(s - s.max(-1, keepdims=True))
    if mask is not None:
        p = np.where(mask, p, 0.0)
    t = p.sum(-1, keepdims=True)
    return p / np.where(t > 0, t, 1.0)


def softmax_nan_on_empty_rows(scores, mask=None):
    s = np.asarray(scores, dtype=np.float64)
    if mask is not None:
        s = np.where(mask, s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    return p / p.sum(-1, keepdims=True)


def softmax_wrong_axis(scores, mask=None):
    return np.swapaxes(_softmax_ok(np.swapaxes(scores, -1, -2), None if mask is None else np.swapaxes(np.broadcast_to(mask, np.shape(scores)), -1, -2)), -1, -2)


def causal_strict(n_q, n_k):
    return np.arange(n_k)[None, :] < np.arange(n_q)[:, None]


def causal_upper(n_q, n_k):
    return np.arange(n_k)[None, :] >= np.arange(n_q)[:, None]


def causal_bottom_right(n_q, n_k):
    return np.tril(np.ones((n_q, n_k), dtype=bool), k=n_k - n_q)


def causal_int(n_q, n_k):
    return np.tril(np.ones((n_q, n_k), dtype=int))


def attention_no_scale(q, k, v, mask=None, scale=None):
    return ref.attention(q, k, v, mask=mask, scale=1.0 if scale is None else scale)


def attention_scale_by_d(q, k, v, mask=None, scale=None):
    return ref.attention(q, k, v, mask=mask, scale=1.0 / q.shape[-1] if scale is None else scale)


def attention_ignores_mask(q, k, v, mask=None, scale=None):
    return ref.attention(q, k, v, scale=scale)


def attention_nan_rows(q, k, v, mask=None, scale=None):
    s = q @ np.swapaxes(k, -1, -2) * (scale or 1 / np.sqrt(q.shape[-1]))
    return softmax_nan_on_empty_rows(s, mask) @ v


def attention_ignores_explicit_scale(q, k, v, mask=None, scale=None):
    return ref.attention(q, k, v, mask=mask)


def mha_no_transpose(x, w_q, w_k, w_v, w_o, n_heads, causal=False):
    b, n, dm = x.shape
    dh = dm // n_heads
    q, k, v = ((x @ w).reshape(b, n_heads, n, dh) for w in (w_q, w_k, w_v))
    out = ref.attention(q, k, v, causal=causal)
    return out.reshape(b, n, dm) @ w_o


def mha_scale_by_d_model(x, w_q, w_k, w_v, w_o, n_heads, causal=False):
    b, n, dm = x.shape
    dh = dm // n_heads
    q, k, v = ((x @ w).reshape(b, n, n_heads, dh).transpose(0, 2, 1, 3) for w in (w_q, w_k, w_v))
    out = ref.attention(q, k, v, causal=causal, scale=1 / np.sqrt(dm))
    return out.transpose(0, 2, 1, 3).reshape(b, n, dm) @ w_o


def mha_ignores_causal(x, w_q, w_k, w_v, w_o, n_heads, causal=False):
    return _mha(x, w_q, w_k, w_v, w_o, n_heads, False)


def _mha(x, w_q, w_k, w_v, w_o, n_heads, causal):
    b, n, dm = x.shape
    dh = dm // n_heads
    q, k, v = ((x @ w).reshape(b, n, n_heads, dh).transpose(0, 2, 1, 3) for w in (w_q, w_k, w_v))
    out = ref.attention(q, k, v, causal=causal)
    return out.transpose(0, 2, 1, 3).reshape(b, n, dm) @ w_o


def _online(q, k, v, block_size, rescale=True, drop_tail=False, shift=True):
    scale = 1 / np.sqrt(q.shape[-1])
    n_k = k.shape[-2]
    batch = np.broadcast_shapes(q.shape[:-2], k.shape[:-2])
    m = np.full(batch + (q.shape[-2], 1), -np.inf)
    l = np.zeros(batch + (q.shape[-2], 1))
    acc = np.zeros(batch + (q.shape[-2], v.shape[-1]))
    stop = n_k - n_k % block_size if drop_tail and n_k % block_size else n_k
    for s0 in range(0, stop, block_size):
        s = q @ np.swapaxes(k[..., s0:s0 + block_size, :], -1, -2) * scale
        m_new = np.maximum(m, s.max(-1, keepdims=True)) if shift else np.zeros_like(m)
        alpha = np.exp(m - m_new) if rescale else 1.0
        if not shift:
            alpha = 1.0
        p = np.exp(s - m_new)
        l = alpha * l + p.sum(-1, keepdims=True)
        acc = alpha * acc + p @ v[..., s0:s0 + block_size, :]
        m = m_new
    return acc / l, (m + np.log(l))[..., 0]


def online_no_rescale(q, k, v, block_size):
    return _online(q, k, v, block_size, rescale=False)


def online_drops_last_block(q, k, v, block_size):
    return _online(q, k, v, block_size, drop_tail=True)


def online_no_max_shift(q, k, v, block_size):
    with np.errstate(over="ignore", invalid="ignore"):
        return _online(q, k, v, block_size, shift=False)


def online_lse_is_max(q, k, v, block_size):
    out, _ = _online(q, k, v, block_size)
    return out, np.max(q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1]), axis=-1)


def online_dense_in_disguise(q, k, v, block_size):
    return ref.attention(q, k, v, return_lse=True)


def cost_no_factor_two(n_q, n_k, d, d_v, n_heads=1, batch=1, bytes_per_element=4, causal=False):
    pairs = batch * n_heads * (n_q * (n_q + 1) // 2 if causal else n_q * n_k)
    return {"pairs": pairs, "flops": pairs * (d + d_v), "score_bytes": batch * n_heads * n_q * n_k * bytes_per_element}


def cost_causal_half(n_q, n_k, d, d_v, n_heads=1, batch=1, bytes_per_element=4, causal=False):
    pairs = batch * n_heads * (n_q * n_k // 2 if causal else n_q * n_k)
    return {"pairs": pairs, "flops": 2 * pairs * (d + d_v), "score_bytes": batch * n_heads * n_q * n_k * bytes_per_element}


def cost_causal_ignores_n_k(n_q, n_k, d, d_v, n_heads=1, batch=1, bytes_per_element=4, causal=False):
    pairs = batch * n_heads * (n_q * (n_q + 1) // 2 if causal else n_q * n_k)
    return {"pairs": pairs, "flops": 2 * pairs * (d + d_v), "score_bytes": batch * n_heads * n_q * n_k * bytes_per_element}


def cost_bytes_ignore_heads(n_q, n_k, d, d_v, n_heads=1, batch=1, bytes_per_element=4, causal=False):
    full = min(n_q, n_k)
    per = full * (full + 1) // 2 + (n_q - full) * n_k if causal else n_q * n_k
    pairs = batch * n_heads * per
    return {"pairs": pairs, "flops": 2 * pairs * (d + d_v), "score_bytes": n_q * n_k * bytes_per_element}


# ---------------------------------------------------------------- the edges of floating point (all chapters)

def softmax_finite_fill(scores, mask=None):
    """Masks by filling -1e4 (as some libraries do): a real row of scores below -1e4 loses to its masked entries."""
    s = np.asarray(scores, dtype=np.float64)
    if mask is not None:
        s = np.where(mask, s, -1e4)
    e = np.exp(s - s.max(-1, keepdims=True))
    out = e / e.sum(-1, keepdims=True)
    if mask is not None:
        out = np.where(np.broadcast_to(mask, out.shape).any(-1, keepdims=True), out, 0.0)
    return np.where(np.broadcast_to(mask, out.shape), out, 0.0) if mask is not None else out


def softmax_global_shift(scores, mask=None):
    """Subtracts one maximum for the whole array instead of one per row: rows far below it underflow to 0/0."""
    s = np.asarray(scores, dtype=np.float64)
    allowed = np.ones(s.shape, bool) if mask is None else np.broadcast_to(mask, s.shape)
    e = np.where(allowed, np.exp(s - np.where(allowed, s, -np.inf).max()), 0.0)
    total = e.sum(-1, keepdims=True)
    return np.where(total > 0, e / np.where(total > 0, total, 1.0), 0.0)


def attention_in_input_dtype(q, k, v, mask=None, scale=None):
    """Computes in the inputs' dtype: right for float64 and float32, wrong for float16 (2.4e4 * 6 overflows)."""
    dt = np.result_type(q, k, v)
    tau = dt.type(1.0 / np.sqrt(q.shape[-1]) if scale is None else scale)
    s = (q @ np.swapaxes(k, -1, -2)) * tau
    s = s.astype(dt)
    allowed = np.ones(s.shape, bool) if mask is None else np.broadcast_to(mask, s.shape)
    m = np.where(allowed, s, -np.inf).max(-1, keepdims=True)
    e = np.where(allowed, np.exp(s - np.where(np.isfinite(m), m, 0)), 0).astype(dt)
    total = e.sum(-1, keepdims=True)
    out = (e / np.where(total > 0, total, 1)) @ v
    return np.asarray(out, dtype=np.float64)


MUTANTS = {
    "1.1": [softmax_no_max_shift, softmax_max_over_masked_too, softmax_nan_on_empty_rows, softmax_wrong_axis,
            softmax_finite_fill, softmax_global_shift],
    "1.2": [causal_strict, causal_upper, causal_bottom_right, causal_int],
    "1.3": [attention_no_scale, attention_scale_by_d, attention_ignores_mask, attention_nan_rows,
            attention_ignores_explicit_scale, attention_in_input_dtype],
    "1.4": [mha_no_transpose, mha_scale_by_d_model, mha_ignores_causal],
    "1.5": [online_no_rescale, online_drops_last_block, online_no_max_shift, online_lse_is_max,
            online_dense_in_disguise],
    "1.6": [cost_no_factor_two, cost_causal_half, cost_causal_ignores_n_k, cost_bytes_ignore_heads],
}
