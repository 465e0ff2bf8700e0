"""Pieces every approximate/content-based attention layer shares.

* :class:`HeadsAttention` -- the multi-head wrapper with the interface of
  :class:`sparse_core.attention.layer.SparseSelfAttention`: ``__init__(d_model, n_heads, ..., bias=True)``,
  ``forward(x: [batch, n, d_model]) -> [batch, n, d_model]``, the fused ``qkv`` and the ``out``
  projections (so ``from_multihead`` copies a ``torch.nn.MultiheadAttention``). Subclasses
  implement ``attend(q, k, v, x) -> o`` on ``[batch, n_heads, n, d_head]`` tensors.
* :func:`masked_attention` -- softmax attention over a boolean mask (and an optional additive
  bias) in the working dtype, fully masked rows give zero and never NaN (the oracle's convention);
* :func:`chunked_masked_attention` -- the same, computed ``chunk`` queries at a time so that only
  ``chunk x n_k`` scores exist at once.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from .. import _validation as V

__all__ = ["HeadsAttention", "masked_attention", "chunked_masked_attention", "check_qkv", "check_bool"]


def check_bool(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"`{name}` must be a bool, got {type(value).__name__}")
    return value


def check_qkv(q, k, v, scale=None, same_length: bool = False):
    """Validate torch ``q [..., n_q, d]``, ``k [..., n_k, d]``, ``v [..., n_k, d_v]``.

    Returns ``(q, k, v, scale)`` with the leading dimensions broadcast (expanded views) and the
    default scale ``1/sqrt(d)`` filled in.
    """
    for name, x in (("q", q), ("k", k), ("v", v)):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"`{name}` must be a torch.Tensor, got {type(x).__name__}")
        V.check_float(name, x)
    V.check_ndim("q", q, 2, "[..., n_q, d]")
    V.check_ndim("k", k, 2, "[..., n_k, d]")
    V.check_ndim("v", v, 2, "[..., n_k, d_v]")
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


class HeadsAttention(nn.Module):
    """Multi-head self-attention shell: ``x [batch, n, d_model] -> [batch, n, d_model]``.

    Same constructor head (``d_model, n_heads``), projections (``qkv``: ``d_model -> 3 d_model``,
    ``out``) and forward signature as :class:`sparse_core.attention.layer.SparseSelfAttention`, so a model
    can swap one for the other. Subclasses define ``attend(q, k, v, x)`` on
    ``[batch, n_heads, n, d_head]``.
    """

    def __init__(self, d_model: int, n_heads: int, bias: bool = True):
        super().__init__()
        if not isinstance(d_model, int) or not isinstance(n_heads, int) or d_model <= 0 or n_heads <= 0:
            raise ValueError(f"`d_model` and `n_heads` must be positive integers, got {d_model!r}, {n_heads!r}")
        if d_model % n_heads:
            raise ValueError(f"`d_model`={d_model} must be divisible by `n_heads`={n_heads}")
        check_bool("bias", bias)
        self.d_model, self.n_heads, self.d_head = d_model, n_heads, d_model // n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=bias)
        self.out = nn.Linear(d_model, d_model, bias=bias)

    def check_input(self, x) -> None:
        if not isinstance(x, torch.Tensor) or x.ndim != 3 or x.shape[-1] != self.d_model:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"`x` must be a tensor [batch, n, d_model={self.d_model}], got {shape}")
        if x.shape[1] == 0:
            raise ValueError(f"`x` must have at least one position, got shape {tuple(x.shape)}")

    def split_heads(self, t: torch.Tensor) -> torch.Tensor:
        b, n, _ = t.shape
        return t.view(b, n, -1, self.d_head).transpose(1, 2)

    def merge_heads(self, o: torch.Tensor) -> torch.Tensor:
        b, h, n, dh = o.shape
        return o.transpose(1, 2).reshape(b, n, h * dh)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        b, n, _ = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.n_heads, self.d_head).permute(2, 0, 3, 1, 4)
        return self.out(self.merge_heads(self.attend(q, k, v, x)))

    def attend(self, q, k, v, x):  # pragma: no cover - abstract
        raise NotImplementedError

    @classmethod
    def from_multihead(cls, mha: nn.MultiheadAttention, *args, **kwargs):
        """Copy the projections of a ``torch.nn.MultiheadAttention``; other arguments as the constructor."""
        if not mha._qkv_same_embed_dim:
            raise ValueError("`mha` must use the same embedding size for q, k and v")
        layer = cls(mha.embed_dim, mha.num_heads, *args, bias=mha.in_proj_bias is not None, **kwargs)
        with torch.no_grad():
            layer.qkv.weight.copy_(mha.in_proj_weight)
            layer.out.weight.copy_(mha.out_proj.weight)
            if mha.in_proj_bias is not None:
                layer.qkv.bias.copy_(mha.in_proj_bias)
                layer.out.bias.copy_(mha.out_proj.bias)
        return layer.to(mha.in_proj_weight.dtype)
