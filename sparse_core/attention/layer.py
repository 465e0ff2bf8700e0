"""``SparseSelfAttention``: a multi-head self-attention layer whose attention follows a Pattern.

A drop-in for the usual multi-head attention of a Transformer block: ``x [batch, n, d_model]``
in, the same shape out, with q/k/v/output projections. The attention itself runs
:func:`sparse_core.attention.ops.block_sparse_attention` over ``pattern.to_layout(n, n, block_size,
n_heads)`` (cached per length), so only the kept blocks are computed.
"""
from __future__ import annotations

import torch
from torch import nn

from .ops import block_sparse_attention
from ..patterns import Pattern, dense

__all__ = ["SparseSelfAttention"]


class SparseSelfAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, pattern: Pattern | None = None, block_size: int = 64,
                 bias: bool = True):
        super().__init__()
        if not isinstance(d_model, int) or not isinstance(n_heads, int) or d_model <= 0 or n_heads <= 0:
            raise ValueError(f"`d_model` and `n_heads` must be positive integers, got {d_model!r}, {n_heads!r}")
        if d_model % n_heads:
            raise ValueError(f"`d_model`={d_model} must be divisible by `n_heads`={n_heads}")
        if pattern is not None and not isinstance(pattern, Pattern):
            raise TypeError(f"`pattern` must be a sparse_core.patterns.Pattern, got {type(pattern).__name__}")
        if not isinstance(block_size, int) or block_size <= 0:
            raise ValueError(f"`block_size` must be a positive integer, got {block_size!r}")
        self.d_model, self.n_heads, self.block_size = d_model, n_heads, block_size
        self.pattern = pattern if pattern is not None else dense()
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=bias)
        self.out = nn.Linear(d_model, d_model, bias=bias)
        self._layouts: dict[int, object] = {}

    def layout(self, n: int):
        """The (cached) block layout used for sequences of length ``n``."""
        lay = self._layouts.get(n)
        if lay is None:
            heads = self.pattern.n_heads or 1
            if heads not in (1, self.n_heads):
                raise ValueError(f"pattern {self.pattern!r} describes {heads} heads; this layer has {self.n_heads}")
            lay = self._layouts[n] = self.pattern.to_layout(n, n, self.block_size, heads)
        return lay

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.ndim != 3 or x.shape[-1] != self.d_model:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"`x` must be a tensor [batch, n, d_model={self.d_model}], got {shape}")
        b, n, _ = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.n_heads, self.d_model // self.n_heads).permute(2, 0, 3, 1, 4)
        o = block_sparse_attention(q, k, v, self.layout(n))
        return self.out(o.transpose(1, 2).reshape(b, n, self.d_model))

    @classmethod
    def from_multihead(cls, mha: nn.MultiheadAttention, pattern: Pattern | None = None,
                       block_size: int = 64) -> "SparseSelfAttention":
        """Copy the weights of a ``torch.nn.MultiheadAttention`` (batch_first or not)."""
        if not mha._qkv_same_embed_dim:
            raise ValueError("`mha` must use the same embedding size for q, k and v")
        layer = cls(mha.embed_dim, mha.num_heads, pattern, block_size, bias=mha.in_proj_bias is not None)
        with torch.no_grad():
            layer.qkv.weight.copy_(mha.in_proj_weight)
            layer.out.weight.copy_(mha.out_proj.weight)
            if mha.in_proj_bias is not None:
                layer.qkv.bias.copy_(mha.in_proj_bias)
                layer.out.bias.copy_(mha.out_proj.bias)
        return layer.to(mha.in_proj_weight.dtype)

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, n_heads={self.n_heads}, block_size={self.block_size}, pattern={self.pattern!r}"
