"""Chapter 1 -- Dense attention and its cost.

Fill in each function, then grade it:

    python -m sparse_core grade --chapter 1

Shapes use the course notation: ``n_q`` queries, ``n_k`` keys, head dimension ``d``, value
dimension ``d_v``; leading ``...`` dimensions (batch, heads) broadcast as in numpy.
Work in numpy; every function receives and returns numpy arrays.
Float inputs may have any precision, float16 included: compute and return float64.
"""
from __future__ import annotations

import numpy as np

__all__ = [
    "softmax",
    "causal_mask",
    "attention",
    "multi_head_attention",
    "online_softmax_attention",
    "attention_cost",
]


def softmax(scores: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Exercise 1.1 -- numerically stable masked softmax over the last axis.

    Args:
        scores: float array ``[..., n_q, n_k]``.
        mask: optional bool array broadcastable to ``scores``; ``True`` = may attend.

    Returns:
        float64 array ``[..., n_q, n_k]``; each row sums to 1 over its allowed entries, masked
        entries are exactly 0, and a row with no allowed entry is all zeros (not NaN).
        Must not overflow for scores as large as 1e4.

    Example:
        >>> softmax(np.array([[0.0, np.log(3.0)]]))
        array([[0.25, 0.75]])
        >>> softmax(np.array([[1.0, 2.0]]), mask=np.array([[False, False]]))
        array([[0., 0.]])

    Hint: roughly 6 lines. Subtract the row maximum over the *allowed* entries.
    """
    s = np.asarray(scores, dtype=np.float64)
    if mask is not None:
        s = np.where(mask, s, -np.inf)
    m = s.max(axis=-1, keepdims=True)
    m = np.where(np.isneginf(m), 0.0, m)
    p = np.exp(s - m)
    total = p.sum(axis=-1, keepdims=True)
    return p / np.where(total > 0, total, 1.0)


def causal_mask(n_q: int, n_k: int) -> np.ndarray:
    """Exercise 1.2 -- the causal mask.

    Args:
        n_q: number of queries; n_k: number of keys.

    Returns:
        bool array ``[n_q, n_k]`` with ``True`` where key ``j`` may be seen by query ``i``,
        i.e. ``j <= i`` (top-left aligned, like ``scaled_dot_product_attention(is_causal=True)``).

    Example:
        >>> causal_mask(2, 3)
        array([[ True, False, False],
               [ True,  True, False]])

    Hint: roughly 1 line.
    """
    return np.arange(n_k)[None, :] <= np.arange(n_q)[:, None]


def attention(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    mask: np.ndarray | None = None,
    scale: float | None = None,
) -> np.ndarray:
    """Exercise 1.3 -- scaled dot-product attention.

    Args:
        q: ``[..., n_q, d]``; k: ``[..., n_k, d]``; v: ``[..., n_k, d_v]``.
        mask: optional bool array broadcastable to ``[..., n_q, n_k]`` (``True`` = may attend).
        scale: multiplier of the scores, ``1/sqrt(d)`` when None.

    Returns:
        float64 array ``[..., n_q, d_v]``: ``softmax(scale * q k^T, mask) v``. Rows with no
        allowed key are zero.

    Example:
        >>> q = np.zeros((1, 2)); k = np.zeros((2, 2)); v = np.array([[1.0], [3.0]])
        >>> attention(q, k, v)          # equal scores: the mean of v
        array([[2.]])

    Hint: roughly 4 lines, using your ``softmax``.
    """
    d = q.shape[-1]
    if scale is None:
        scale = 1.0 / np.sqrt(d)
    s = np.matmul(q.astype(np.float64), np.swapaxes(k.astype(np.float64), -1, -2)) * scale
    return np.matmul(softmax(s, mask), v.astype(np.float64))


def multi_head_attention(
    x: np.ndarray,
    w_q: np.ndarray,
    w_k: np.ndarray,
    w_v: np.ndarray,
    w_o: np.ndarray,
    n_heads: int,
    causal: bool = False,
) -> np.ndarray:
    """Exercise 1.4 -- multi-head self-attention.

    Args:
        x: ``[batch, n, d_model]``.
        w_q, w_k, w_v, w_o: ``[d_model, d_model]``; projections are right-multiplied
            (``x @ w_q``).
        n_heads: number of heads ``h``; ``d_model`` is divisible by ``h`` and each head has
            ``d_head = d_model // h`` consecutive columns of the projected features
            (head 0 = columns ``0 .. d_head-1``).
        causal: apply the causal mask.

    Returns:
        float64 ``[batch, n, d_model]``: the heads' outputs (each scaled by ``1/sqrt(d_head)``)
        concatenated in head order, then multiplied by ``w_o``.

    Example:
        With ``n_heads=1`` this is ``attention(x @ w_q, x @ w_k, x @ w_v) @ w_o``.

    Hint: roughly 8 lines: reshape ``[batch, n, h, d_head]`` and move the head axis forward.
    """
    b, n, d_model = x.shape
    d_head = d_model // n_heads

    def split(t: np.ndarray) -> np.ndarray:
        return t.reshape(b, n, n_heads, d_head).transpose(0, 2, 1, 3)

    q, k, v = (split(x.astype(np.float64) @ w) for w in (w_q, w_k, w_v))
    mask = causal_mask(n, n) if causal else None
    heads = attention(q, k, v, mask=mask)
    merged = heads.transpose(0, 2, 1, 3).reshape(b, n, d_model)
    return merged @ w_o


def online_softmax_attention(
    q: np.ndarray, k: np.ndarray, v: np.ndarray, block_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Exercise 1.5 -- exact attention streaming over key blocks (online softmax).

    Visit the keys in blocks of ``block_size`` (the last block may be shorter) keeping, per
    query, a running maximum ``m``, a running normaliser ``l`` ($Z$ in the text) and a running
    un-normalised output ``acc``; rescale ``l`` and ``acc`` by ``exp(m_old - m_new)`` whenever
    the maximum grows. Never build the ``[n_q, n_k]`` score matrix: only one
    ``[n_q, block_size]`` tile at a time. Scale is ``1/sqrt(d)``.

    Args:
        q: ``[..., n_q, d]``; k: ``[..., n_k, d]``; v: ``[..., n_k, d_v]`` with ``n_k >= 1``.
        block_size: keys per block, ``>= 1``.

    Returns:
        ``(out, lse)``: ``out`` float64 ``[..., n_q, d_v]`` equal to dense attention, and
        ``lse`` float64 ``[..., n_q]``, the log-sum-exp of each query's scaled scores.

    Example:
        >>> q = np.zeros((1, 2)); k = np.zeros((3, 2)); v = np.array([[0.0], [3.0], [6.0]])
        >>> out, lse = online_softmax_attention(q, k, v, block_size=2)
        >>> out, lse                     # mean of v; log(3 * e^0)
        (array([[3.]]), array([1.09861229]))

    Hint: roughly 14 lines.
    """
    q = q.astype(np.float64)
    k = k.astype(np.float64)
    v = v.astype(np.float64)
    scale = 1.0 / np.sqrt(q.shape[-1])
    n_k = k.shape[-2]
    batch = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    m = np.full(batch + (q.shape[-2], 1), -np.inf)
    l = np.zeros(batch + (q.shape[-2], 1))
    acc = np.zeros(batch + (q.shape[-2], v.shape[-1]))
    for start in range(0, n_k, block_size):
        kb = k[..., start:start + block_size, :]
        vb = v[..., start:start + block_size, :]
        s = np.matmul(q, np.swapaxes(kb, -1, -2)) * scale
        m_new = np.maximum(m, s.max(axis=-1, keepdims=True))
        alpha = np.exp(m - m_new)
        p = np.exp(s - m_new)
        l = alpha * l + p.sum(axis=-1, keepdims=True)
        acc = alpha * acc + np.matmul(p, vb)
        m = m_new
    return acc / l, (m + np.log(l))[..., 0]


def attention_cost(
    n_q: int,
    n_k: int,
    d: int,
    d_v: int,
    n_heads: int = 1,
    batch: int = 1,
    bytes_per_element: int = 4,
    causal: bool = False,
) -> dict:
    """Exercise 1.6 -- count the work and memory of dense attention.

    Count, over all ``batch * n_heads`` heads:

    * ``pairs``: the (query, key) pairs attended -- all ``n_q * n_k``, or with ``causal`` only
      those with ``j <= i`` (top-left aligned; ``n_q`` may differ from ``n_k``);
    * ``flops``: matrix-product FLOPs for those pairs, a multiply-add counting 2 (``Q K^T``
      then ``P V``);
    * ``score_bytes``: the bytes of the full ``[n_q, n_k]`` score matrix a dense
      implementation materialises (a mask does not shrink it).

    Returns:
        ``{"pairs": int, "flops": int, "score_bytes": int}``.

    Example:
        >>> attention_cost(4, 4, d=8, d_v=8)
        {'pairs': 16, 'flops': 512, 'score_bytes': 64}

    Hint: roughly 6 lines.
    """
    if causal:
        full = min(n_q, n_k)
        per_head = full * (full + 1) // 2 + (n_q - full) * n_k
    else:
        per_head = n_q * n_k
    pairs = batch * n_heads * per_head
    return {
        "pairs": pairs,
        "flops": 2 * pairs * (d + d_v),
        "score_bytes": batch * n_heads * n_q * n_k * bytes_per_element,
    }
