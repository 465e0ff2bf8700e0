"""Pieces every approximate/content-based attention method shares.

(The layers themselves are configurations of :class:`sparse_core.attention.layer.MultiHeadAttention`
with the method's attention core.)

* :func:`check_qkv` -- validation of ``q, k, v`` torch tensors (broadcast, default scale);
* :func:`masked_attention` -- softmax attention over a boolean mask (and an optional additive
  bias) in the working dtype, fully masked rows give zero and never NaN (the oracle's convention);
* :func:`chunked_masked_attention` -- the same, computed ``chunk`` queries at a time so that only
  ``chunk x n_k`` scores exist at once.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from .. import _validation as V

__all__ = ["masked_attention", "chunked_masked_attention", "check_qkv", "check_bool", "causal_keep",
           "causal_pair_count"]


def check_bool(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"`{name}` must be a bool, got {type(value).__name__}")
    return value


def check_qkv(q, k, v, scale=None, same_length: bool = False):
    """Validate torch ``q [..., n_q, d]``, ``k [..., n_k, d]``, ``v [..., n_k, d_v]``.

    Returns ``(q, k, v, scale)`` with the leading dimensions broadcast (expanded views) and the
    default scale ``1/sqrt(d)`` filled in.
    """
    V.check_qkv_arrays(q, k, v, torch.Tensor, "torch.Tensor")
    d, n_k = q.shape[-1], k.shape[-2]
    if k.shape[-1] != d:
        raise ValueError(f"`k` must have the same head dimension as `q` (d={d}), got k of shape {tuple(k.shape)}")
    if v.shape[-2] != n_k:
        raise ValueError(f"`v` must have as many rows as `k` (n_k={n_k}), got v of shape {tuple(v.shape)}")
    if same_length and q.shape[-2] != n_k:
        raise ValueError(f"`q` and `k` must have the same length for self-attention, got n_q={q.shape[-2]}, n_k={n_k}")
    if n_k == 0:
        raise ValueError(f"`k` must have at least one key, got k of shape {tuple(k.shape)}")
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"`q`, `k`, `v` must share one dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    batch = V.broadcast_batch({"q": tuple(q.shape[:-2]), "k": tuple(k.shape[:-2]), "v": tuple(v.shape[:-2])})
    q = q.expand(*batch, *q.shape[-2:])
    k = k.expand(*batch, *k.shape[-2:])
    v = v.expand(*batch, *v.shape[-2:])
    return q, k, v, V.check_scale(scale, d)


def causal_keep(i0: int, i1: int, j0: int, j1: int, device=None) -> torch.Tensor:
    """Boolean ``[i1 - i0, j1 - j0]`` with True where key ``j <= `` query ``i`` (absolute indices)."""
    i = torch.arange(i0, i1, device=device)[:, None]
    j = torch.arange(j0, j1, device=device)[None, :]
    return j <= i


def causal_pair_count(b: int, h: int, n: int, causal: bool) -> int:
    """(query, key) pairs of ``b`` sequences of ``n`` tokens in ``h`` heads (``n(n+1)/2`` each if
    causal, else ``n^2``)."""
    return b * h * (n * (n + 1) // 2 if causal else n * n)


def masked_attention(s: torch.Tensor, keep: torch.Tensor | None, v: torch.Tensor) -> torch.Tensor:
    """``softmax(s)`` over the entries where ``keep`` is True, times ``v``; zero for fully masked rows.

    ``s``: scores ``[..., n_q, n_k]`` (already scaled, biases added); ``keep``: boolean, broadcastable
    to ``s``; ``v``: ``[..., n_k, d_v]``. Gradients are finite everywhere (masked entries get zero).
    """
    if keep is not None:
        s = torch.where(keep, s, torch.full((), -math.inf, dtype=s.dtype, device=s.device))
    m = s.amax(dim=-1, keepdim=True).detach()
    m = torch.where(torch.isneginf(m), torch.zeros_like(m), m)
    p = torch.exp(s - m)
    l = p.sum(dim=-1, keepdim=True)
    return torch.matmul(p, v) / torch.where(l > 0, l, torch.ones_like(l))


def chunked_masked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
                             keep_fn: Callable[[int, int], torch.Tensor | None], chunk: int = 256,
                             bias_fn: Callable[[int, int], torch.Tensor] | None = None) -> torch.Tensor:
    """Exact masked softmax attention, ``chunk`` queries at a time.

    ``keep_fn(i0, i1)`` returns the boolean mask of queries ``i0:i1`` against all keys
    (broadcastable to ``[..., i1 - i0, n_k]``) or None; ``bias_fn(i0, i1)`` an additive score bias.
    Peak extra memory is ``chunk * n_k`` scores per batch-head instead of ``n_q * n_k``.
    """
    outs = []
    kt = k.transpose(-1, -2)
    for i0 in range(0, q.shape[-2], chunk):
        i1 = min(i0 + chunk, q.shape[-2])
        s = torch.matmul(q[..., i0:i1, :], kt) * scale
        if bias_fn is not None:
            s = s + bias_fn(i0, i1)
        outs.append(masked_attention(s, keep_fn(i0, i1), v))
    return torch.cat(outs, dim=-2)
