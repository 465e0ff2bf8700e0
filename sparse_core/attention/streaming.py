r"""Exact attention by streaming over key blocks with an online softmax (numpy).

This is the algorithm behind FlashAttention, written plainly. For each tile of ``block_q``
queries it keeps three running quantities -- the row maximum :math:`m`, the normaliser
:math:`\ell` and the un-normalised output :math:`A` -- and folds in one block of ``block_k``
keys at a time:

.. math::

    m' = \max(m, \max_j s_{ij}), \qquad
    \ell' = e^{m - m'} \ell + \sum_j e^{s_{ij} - m'}, \qquad
    A' = e^{m - m'} A + \sum_j e^{s_{ij} - m'} v_j .

At the end :math:`O = A / \ell`. The result is exact (not an approximation); the extra memory is
``O(block_q * block_k + n_q * d_v)`` instead of the ``O(n_q * n_k)`` score matrix. The work is
still every ``(i, j)`` pair: streaming fixes memory, not time.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from .. import _validation as V

__all__ = ["streaming_attention"]

MaskFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


def streaming_attention(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    mask: np.ndarray | MaskFn | None = None,
    scale: float | None = None,
    causal: bool = False,
    block_size: int = 128,
    block_q: int | None = None,
    return_lse: bool = False,
) -> Any:
    """Exact attention with O(n) extra memory.

    Defined in Chapter 1 (Exercise 1.5).

    Parameters
    ----------
    q, k, v:
        numpy arrays ``[..., n_q, d]``, ``[..., n_k, d]``, ``[..., n_k, d_v]`` (leading dims
        broadcast). Computation runs in the inputs' precision (float16 is promoted to float32).
    mask:
        ``None``, a boolean array broadcastable to ``[..., n_q, n_k]`` (sliced one tile at a
        time), or a function ``mask(q_idx, kv_idx) -> bool array`` evaluated on each tile's
        index grid, so no ``n_q x n_k`` object ever exists.
    scale, causal:
        As in :func:`sparse_core.attention.reference.attention`.
    block_size:
        Number of keys per block (``block_k``).
    block_q:
        Number of queries per tile; defaults to ``block_size``.
    return_lse:
        Also return the per-query log-sum-exp (``-inf`` on fully masked rows).
    """
    V.check_qkv_arrays(q, k, v, np.ndarray, "numpy.ndarray")
    n_q, d = q.shape[-2:]
    n_k, d_v = v.shape[-2:]
    if k.shape[-1] != d:
        raise ValueError(f"`k` must have the same head dimension as `q` (d={d}), got shape {k.shape}")
    if k.shape[-2] != n_k:
        raise ValueError(f"`v` must have as many rows as `k` (n_k={k.shape[-2]}), got shape {v.shape}")
    batch = V.broadcast_batch({"q": q.shape[:-2], "k": k.shape[:-2], "v": v.shape[:-2]})
    block_k = V.check_positive_int("block_size", block_size)
    block_q = block_k if block_q is None else V.check_positive_int("block_q", block_q)
    scale = V.check_scale(scale, d)
    mask_fn = None
    mask_arr = None
    if callable(mask):
        mask_fn = mask
    elif mask is not None:
        mask_arr = V.as_numpy_bool_mask(mask)
        V.check_mask_shape(mask_arr.shape, batch, n_q, n_k)

    dtype = np.result_type(q.dtype, k.dtype, v.dtype, np.float32)
    out = np.zeros(batch + (n_q, d_v), dtype=dtype)
    lse = np.full(batch + (n_q,), -np.inf, dtype=dtype)
    kt = np.swapaxes(k, -1, -2).astype(dtype, copy=False)
    vv = v.astype(dtype, copy=False)

    for q0 in range(0, n_q, block_q):
        q1 = min(q0 + block_q, n_q)
        qi = q[..., q0:q1, :].astype(dtype, copy=False)
        rows = np.arange(q0, q1)[:, None]
        m = np.full(batch + (q1 - q0, 1), -np.inf, dtype=dtype)
        l = np.zeros(batch + (q1 - q0, 1), dtype=dtype)
        acc = np.zeros(batch + (q1 - q0, d_v), dtype=dtype)
        for k0 in range(0, n_k, block_k):
            if causal and k0 > q1 - 1:
                break  # every later key block lies strictly above the diagonal
            k1 = min(k0 + block_k, n_k)
            s = np.matmul(qi, kt[..., :, k0:k1]) * dtype.type(scale)
            cols = np.arange(k0, k1)[None, :]
            keep = None
            if causal and k1 - 1 > q0:  # only tiles that cross the diagonal need the mask
                keep = cols <= rows
            if mask_arr is not None:
                tile = _slice_tile(mask_arr, q0, q1, k0, k1)
                keep = tile if keep is None else (keep & tile)
            if mask_fn is not None:
                tile = np.asarray(mask_fn(rows, cols), dtype=bool)
                keep = tile if keep is None else (keep & tile)
            if keep is not None:
                s = np.where(keep, s, -np.inf)
            m_new = np.maximum(m, s.max(axis=-1, keepdims=True))
            m_safe = np.where(np.isneginf(m_new), 0.0, m_new).astype(dtype, copy=False)
            alpha = np.exp(m - m_safe)  # exp(-inf) = 0 on the first contributing block
            p = np.exp(s - m_safe)
            l = alpha * l + p.sum(axis=-1, keepdims=True)
            acc = alpha * acc + np.matmul(p, vv[..., k0:k1, :])
            m = m_new
        out[..., q0:q1, :] = acc / np.where(l > 0, l, 1)
        m_safe = np.where(np.isneginf(m), 0.0, m)
        with np.errstate(divide="ignore"):
            lse[..., q0:q1] = (m_safe + np.log(l))[..., 0]
    if return_lse:
        return out, lse
    return out


def _slice_tile(mask: np.ndarray, q0: int, q1: int, k0: int, k1: int) -> np.ndarray:
    """Slice a broadcastable mask to one tile, respecting size-1 (broadcast) axes."""
    rs = slice(None) if mask.shape[-2] == 1 else slice(q0, q1)
    cs = slice(None) if mask.shape[-1] == 1 else slice(k0, k1)
    return mask[..., rs, cs]
