r"""Linformer (Wang et al. 2020, "Linformer: Self-Attention with Linear Complexity").

Keys and values are projected *along the sequence* from length :math:`n` to :math:`k`:

.. math::

    \bar K = E^\top K \in \mathbb{R}^{k \times d}, \qquad \bar V = F^\top V \in \mathbb{R}^{k \times d_v},
    \qquad o = \operatorname{softmax}\!\big(\tau\, Q \bar K^\top\big)\, \bar V ,

with :math:`E, F \in \mathbb{R}^{\ell \times k}` learned for a maximum length :math:`\ell` =
``seq_len`` (a shorter input uses their first :math:`n` rows). The cost is :math:`O(nk)` instead
of :math:`O(n^2)`. So :func:`linformer_attention` is exactly the dense oracle applied to
``(q, E^T k, F^T v)``.

Sharing (section 4 of the paper): ``sharing="none"`` -- one :math:`E_h, F_h` per head;
``"headwise"`` -- one :math:`E, F` for all heads (the default, as in the ``linformer`` package);
``"kv"`` -- additionally :math:`E = F`; *layerwise* -- pass the same ``projection`` parameter
``[seq_len, k]`` to several layers (it is then :math:`E = F` for all of them).

**No causal version.** Every projected key :math:`\bar k_r = \sum_j E_{jr} k_j` mixes *all*
positions, including future ones, so no mask applied after the projection can stop query
:math:`i` from seeing token :math:`j > i` (the module's tests show the leak). Making it causal
would need a different projection per query prefix, which gives up the linear cost; the paper
treats only bidirectional (encoder) use. ``causal=True`` therefore raises.

:class:`LinformerCore` (the projections ``E``, ``F``) is the attention core of
:class:`LinformerSelfAttention`. Defined in Chapter 7.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ._common import check_bool, check_qkv, masked_attention
from .. import _validation as V
from ..attention.cores import AttentionCore
from ..attention.layer import MultiHeadAttention

__all__ = ["linformer_attention", "LinformerCore", "LinformerSelfAttention"]

_SHARING = ("none", "headwise", "kv")
_CAUSAL_MSG = ("Linformer has no causal version: E^T K mixes every position (future ones included) into each "
               "projected key, so no mask after the projection can hide the future; use causal=False")


def _project(x: torch.Tensor, p: torch.Tensor, name: str) -> torch.Tensor:
    n = x.shape[-2]
    if p.shape[-2] < n:
        raise ValueError(f"`{name}` covers at most {p.shape[-2]} positions, got a sequence of n={n}")
    return torch.matmul(p[..., :n, :].transpose(-1, -2), x)


def linformer_attention(q, k, v, E, F=None, scale=None, causal: bool = False) -> torch.Tensor:
    """``softmax(scale * q (E^T k)^T) (F^T v)``.

    ``q [..., n, d]``, ``k [..., n, d]``, ``v [..., n, d_v]``; ``E``, ``F``: ``[..., seq_len, k]``
    with ``seq_len >= n`` (broadcast over the leading dimensions; ``F=None`` means ``F = E``).
    Returns ``[..., n, d_v]``.
    """
    if causal:
        raise ValueError(_CAUSAL_MSG)
    q, k, v, scale = check_qkv(q, k, v, scale)
    F = E if F is None else F
    for name, p in (("E", E), ("F", F)):
        if not isinstance(p, torch.Tensor) or p.ndim < 2:
            raise ValueError(f"`{name}` must be a tensor [..., seq_len, k], got {getattr(p, 'shape', type(p).__name__)}")
    kb, vb = _project(k, E, "E"), _project(v, F, "F")
    return masked_attention(torch.matmul(q, kb.transpose(-1, -2)) * scale, None, vb)


class LinformerCore(AttentionCore):
    """Linformer attention on ``(B, nh, T, hs)``, ``T <= seq_len``, with the sequence projections
    ``E`` (``proj_k``) and ``F`` (``proj_v``) of shape ``[seq_len, k]`` (``[n_heads, seq_len, k]`` with
    ``sharing="none"``), uniform in ``+-1/sqrt(k)`` like the ``linformer`` package; ``projection``:
    one parameter shared by several layers (``sharing="layerwise"``, ``E = F``). The layer that uses it is defined in Chapter 7."""

    def __init__(self, n_heads: int, seq_len: int, k: int = 256, sharing: str = "headwise",
                 projection: nn.Parameter | None = None):
        super().__init__()
        self.seq_len = V.check_positive_int("seq_len", seq_len)
        self.k = V.check_positive_int("k", k)
        if sharing not in _SHARING:
            raise ValueError(f"`sharing` must be one of {_SHARING}, got {sharing!r}")
        self.sharing = sharing
        if projection is not None:
            if not isinstance(projection, nn.Parameter) or projection.shape != (seq_len, k):
                raise ValueError(f"`projection` must be an nn.Parameter [seq_len={seq_len}, k={k}], "
                                 f"got {getattr(projection, 'shape', type(projection).__name__)}")
            self.sharing = "layerwise"
            self.proj_k = projection
            return
        shape = (n_heads, seq_len, k) if sharing == "none" else (seq_len, k)
        bound = 1 / math.sqrt(k)
        self.proj_k = nn.Parameter(torch.empty(shape).uniform_(-bound, bound))
        if sharing != "kv":
            self.proj_v = nn.Parameter(torch.empty(shape).uniform_(-bound, bound))

    @property
    def E(self) -> torch.Tensor:
        return self.proj_k

    @property
    def F(self) -> torch.Tensor:
        return self.proj_v if self.sharing in ("none", "headwise") else self.proj_k

    def forward(self, q, k, v, x=None):
        if q.shape[-2] > self.seq_len:
            raise ValueError(f"`x` has n={q.shape[-2]} positions; this layer was built for at most "
                             f"seq_len={self.seq_len}")
        return linformer_attention(q, k, v, self.E, self.F)

    def extra_repr(self):
        return f"seq_len={self.seq_len}, k={self.k}, sharing={self.sharing!r}"


class LinformerSelfAttention(MultiHeadAttention):
    """Multi-head Linformer self-attention: ``x [batch, n, d_model] -> [batch, n, d_model]``, ``n <= seq_len``.

    ``E`` (``proj_k``) and ``F`` (``proj_v``) are ``[seq_len, k]`` (``[n_heads, seq_len, k]`` with
    ``sharing="none"``), initialised uniform in ``+-1/sqrt(k)`` like the ``linformer`` package
    (:class:`LinformerCore`). Defined in Chapter 7.
    """

    def __init__(self, d_model: int, n_heads: int, seq_len: int, k: int = 256, sharing: str = "headwise",
                 projection: nn.Parameter | None = None, causal: bool = False, bias: bool = True,
                 num_kv_heads: int | None = None, head_dim: int | None = None):
        super().__init__(d_model, n_heads, bias=bias, num_kv_heads=num_kv_heads, head_dim=head_dim)
        check_bool("causal", causal)
        if causal:
            raise ValueError(_CAUSAL_MSG)
        self.set_core(LinformerCore(n_heads, seq_len, k, sharing, projection))

    @classmethod
    def from_linformer(cls, other) -> "LinformerSelfAttention":
        """Copy a ``linformer.LinformerSelfAttention``, every option included.

        Its ``to_q``/``to_k``/``to_v`` have no bias (ours are set to zero); with ``share_kv=True`` it
        uses the key projection for values too and ``proj_k`` for both, i.e. ``sharing="kv"`` with
        ``W_V = W_K``; ``one_kv_head=True`` is ``num_kv_heads=1`` (one key/value head read by every
        query head) and ``dim_head`` is ``head_dim``.
        """
        dim, inner, heads = other.to_q.in_features, other.to_q.out_features, other.heads
        dim_head = inner // heads
        kv_heads = other.to_k.out_features // dim_head
        if inner != heads * dim_head or kv_heads not in (1, heads) or other.to_k.out_features != kv_heads * dim_head:
            raise ValueError(f"`other`: cannot read its heads (to_q {inner} wide for {heads} heads, to_k "
                             f"{other.to_k.out_features} wide)")
        layer = cls(dim, heads, other.seq_len, other.k, sharing="kv" if other.share_kv else "headwise",
                    num_kv_heads=kv_heads, head_dim=dim_head)
        with torch.no_grad():
            wv = other.to_k.weight if other.share_kv else other.to_v.weight
            layer.qkv.weight.copy_(torch.cat([other.to_q.weight, other.to_k.weight, wv]))
            layer.qkv.bias.zero_()
            layer.out.weight.copy_(other.to_out.weight)
            layer.out.bias.copy_(other.to_out.bias)
            layer.proj_k.copy_(other.proj_k)
            if not other.share_kv:
                layer.proj_v.copy_(other.proj_v)
        return layer.to(other.to_q.weight.dtype)
