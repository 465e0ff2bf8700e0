"""Attention cores: what a multi-head layer computes between its head split and its head merge.

A core is called as ``core(q, k, v, x)`` on ``q (B, nh, T, hs)``, ``k, v (B, nh, S, hs)`` (``x (B, T, C)``
is the layer's input, for the cores that need it) and returns ``o (B, nh, T, hs)``. A core with
``supports_gqa`` also takes ``k, v (B, n_kv, S, hs)`` with ``n_kv`` dividing ``nh`` (grouped-query
attention: query head ``h`` uses key/value head ``h // (nh // n_kv)``); the layer
(:class:`sparse_core.attention.layer.MultiHeadAttention`) owns the projections around it. Cores are
``nn.Module`` objects: the ones with weights own them (for example the learned-mask gate).

* :class:`DenseCore` -- PyTorch's ``scaled_dot_product_attention``, causal or not;
* :class:`BlockSparseCore` -- :func:`sparse_core.attention.ops.block_sparse_attention` over a
  :class:`~sparse_core.patterns.Pattern`'s layout (Chapter 4);
* the content-based and approximate methods of :mod:`sparse_core.approx` (Chapters 6-8), each
  beside its functional form.

Causal cores can also continue from a key-value cache (:meth:`CausalCore.rows`): queries at positions
``offset, offset + 1, ...`` against every cached key, as a language model decodes (Chapter 9).

:func:`layout_for` is the one layout cache of the library: every layer and model that turns a
pattern into a block layout asks it, so equal requests share one layout object.
"""
from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn

from .ops import block_sparse_attention
from ..patterns import Pattern

__all__ = ["AttentionCore", "CausalCore", "DenseCore", "BlockSparseCore", "layout_for", "LAYOUT_CACHE_SIZE", "DECODE_MAX_ROWS"]

#: how many layouts :func:`layout_for` keeps (least recently used ones are dropped)
LAYOUT_CACHE_SIZE = 64

#: most query rows per step that :meth:`BlockSparseCore.rows` gives to the decoding kernel
DECODE_MAX_ROWS = 16


@functools.lru_cache(maxsize=LAYOUT_CACHE_SIZE)
def _cached_layout(pattern, n_q, n_k, block_size, n_heads):
    return pattern.to_layout(n_q, n_k, block_size, n_heads)


def layout_for(pattern: Pattern, n_q: int, n_k: int, block_size: int, n_heads: int = 1):
    """``pattern.to_layout(n_q, n_k, block_size, n_heads)``, cached for the whole library.

    Patterns are keyed by identity: the layers of one model, which share one pattern object, share
    its layouts. The cache keeps the :data:`LAYOUT_CACHE_SIZE` most recently used layouts
    (``layout_for.cache_info()``, ``layout_for.cache_clear()``). The layers of Chapters 4 and 9 ask it.
    """
    if not isinstance(pattern, Pattern):
        raise TypeError(f"`pattern` must be a sparse_core.patterns.Pattern, got {type(pattern).__name__}")
    return _cached_layout(pattern, n_q, n_k, block_size, n_heads)  # one positional key per request


layout_for.cache_info = _cached_layout.cache_info
layout_for.cache_clear = _cached_layout.cache_clear


class AttentionCore(nn.Module):
    """Base of the cores: ``forward(q, k, v, x=None) -> o`` on ``(B, nh, T, hs)`` tensors.

    ``stats``: None, or a ``collections.Counter`` to which each forward adds what it computed:
    ``pairs`` (attended (query, key) pairs) and ``macs`` (attention multiply-adds), as the
    distillation study measures them (:func:`sparse_core.lm.distill.record_stats`).
    """

    #: True for the cores that continue from a key-value cache (:class:`CausalCore`)
    supports_cache = False
    #: True for the cores that take k, v with fewer heads than q (grouped-query attention); the
    #: layer repeats k and v per query head for the others
    supports_gqa = False

    def __init__(self):
        super().__init__()
        self.stats = None

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, x: torch.Tensor | None = None):
        raise NotImplementedError  # pragma: no cover - abstract


def _rows_attention(q, k, v, keep, scale):
    """Softmax attention with a boolean ``keep (nh or 1, T, S)``; rows with no key give 0 (as the kernel)."""
    s = torch.matmul(q, k.transpose(-1, -2)) * scale                # (B, nh, T, S)
    s = s.masked_fill(~keep, float("-inf"))
    p = torch.softmax(s, dim=-1)
    p = torch.where(keep.any(dim=-1, keepdim=True), p, 0.0)         # fully masked rows: zeros
    return torch.matmul(p, v)                                        # (B, nh, T, hs)


class CausalCore(AttentionCore):
    """A causal core that also decodes from a key-value cache.

    ``forward`` (whole sequences, ``T == S``) calls :meth:`full`; :meth:`rows` computes queries at
    positions ``offset..offset + T - 1`` against all ``S = offset + T`` cached keys with the mask
    :meth:`keep` (one mask per decoding step, reused by every layer that shares the core).
    """

    supports_cache = True

    def __init__(self, causal: bool = True):
        super().__init__()
        if not isinstance(causal, bool):
            raise TypeError(f"`causal` must be a bool, got {type(causal).__name__}")
        self.causal = causal
        self._step_mask = None

    def forward(self, q, k, v, x=None):
        return self.full(q, k, v, 1.0 / math.sqrt(q.shape[-1]))

    def full(self, q, k, v, scale):  # pragma: no cover - abstract
        raise NotImplementedError

    def keep(self, q_pos: torch.Tensor, n_k: int) -> torch.Tensor:
        """Boolean ``(nh or 1, T, S)``: which of ``n_k`` keys the queries at ``q_pos`` may use."""
        i, j = q_pos[:, None], torch.arange(n_k, device=q_pos.device)[None, :]
        return (j <= i)[None] if self.causal else torch.ones(1, len(q_pos), n_k, dtype=torch.bool, device=i.device)

    def rows(self, q, k, v, offset: int):
        """Queries at positions ``offset..`` against every key of the cache (``k, v (B, nh or n_kv, S, hs)``)."""
        key = (offset, q.shape[-2], k.shape[-2], q.device)
        if self._step_mask is None or self._step_mask[0] != key:
            q_pos = torch.arange(offset, offset + q.shape[-2], device=q.device)
            self._step_mask = (key, self.keep(q_pos, k.shape[-2]))
        if k.shape[-3] != q.shape[-3]:  # grouped-query: one copy of each key/value head per query head
            G = q.shape[-3] // k.shape[-3]
            k, v = k.repeat_interleave(G, dim=-3), v.repeat_interleave(G, dim=-3)  # (B, nh, S, hs)
        return _rows_attention(q, k, v, self._step_mask[1], 1.0 / math.sqrt(q.shape[-1]))


class DenseCore(CausalCore):
    """Every (causal) pair, by PyTorch's ``scaled_dot_product_attention``: the dense attention of
    Chapter 1, and the GPT-NeoX model's ``attention="dense"`` (Chapter 9). Grouped-query k, v are
    read in place (``enable_gqa``)."""

    supports_gqa = True

    def full(self, q, k, v, scale):
        return F.scaled_dot_product_attention(q, k, v, is_causal=self.causal, scale=scale,
                                              enable_gqa=k.shape[-3] != q.shape[-3])

    def rows(self, q, k, v, offset: int):
        if k.shape[-3] == q.shape[-3]:
            return super().rows(q, k, v, offset)
        # grouped-query decoding: SDPA reads each key/value head for its query heads (no copies);
        # no row of a dense core's mask is empty (causal rows see key 0), as SDPA needs
        q_pos = torch.arange(offset, offset + q.shape[-2], device=q.device)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=self.keep(q_pos, k.shape[-2]),
                                              scale=1.0 / math.sqrt(q.shape[-1]), enable_gqa=True)

    def extra_repr(self) -> str:
        return f"causal={self.causal}"


class BlockSparseCore(CausalCore):
    """Block-sparse attention over ``pattern``'s layout (:func:`layout_for`, blocks of ``block_size``).

    ``n_heads``: the heads of the layer; a pattern with per-head parameters must describe that many
    (its layout then has one block structure per head), any other pattern is shared by the heads.
    Decoding from a cache uses the pattern's ``mask_mod`` for the new rows (``& causal`` when
    ``causal``; whole sequences follow the pattern alone). Grouped-query k, v: the kernel reads them
    in place; decoding repeats them per query head. The layer that uses it is defined in Chapter 4.
    """

    supports_gqa = True

    def __init__(self, pattern: Pattern, block_size: int = 64, n_heads: int | None = None, causal: bool = False):
        super().__init__(causal)
        if not isinstance(pattern, Pattern):
            raise TypeError(f"`pattern` must be a sparse_core.patterns.Pattern, got {type(pattern).__name__}")
        if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size <= 0:
            raise ValueError(f"`block_size` must be a positive integer, got {block_size!r}")
        heads = pattern.n_heads or 1
        if n_heads is not None and heads not in (1, n_heads):
            raise ValueError(f"pattern {pattern!r} describes {heads} heads; the layer has {n_heads}")
        self.pattern, self.block_size, self.layout_heads = pattern, block_size, heads

    def layout(self, n: int, n_k: int | None = None):
        """The (cached) block layout for ``n`` queries and ``n_k`` (default ``n``) keys."""
        return layout_for(self.pattern, n, n if n_k is None else n_k, self.block_size, self.layout_heads)

    def full(self, q, k, v, scale):
        lay = self.layout(q.shape[-2], k.shape[-2])
        if self.stats is not None:  # the kernel computes whole tiles: computed_pairs() >= kept_pairs()
            rep = q.shape[0] * (q.shape[1] // self.layout_heads)
            self.stats.update(pairs=lay.kept_pairs() * rep, macs=lay.computed_pairs() * rep * 2 * q.shape[-1])
        return block_sparse_attention(q, k, v, lay, scale)

    def keep(self, q_pos, n_k):
        i, j = q_pos[None, :, None], torch.arange(n_k, device=q_pos.device)[None, None, :]
        h = torch.arange(self.layout_heads, device=q_pos.device)[:, None, None]
        return self.pattern.mask_mod(0, h, i, j) & super().keep(q_pos, n_k)

    def rows(self, q, k, v, offset: int):
        """Decoding rows. On the CPU without gradients (as :func:`~sparse_core.models.gpt_neox.generate`
        runs), up to :data:`DECODE_MAX_ROWS` rows go to the decoding kernel
        (:mod:`sparse_core.kernels.decode`): it reads only the kept key blocks of the cache, in
        place, with grouped-query heads shared. Otherwise the masked dense rows of :class:`CausalCore`."""
        T, n_k = q.shape[-2], k.shape[-2]
        fast = (q.device.type == "cpu" and q.ndim == 4 and T <= DECODE_MAX_ROWS and q.dtype in (torch.float32, torch.float64)
                and k.dtype == q.dtype and v.dtype == q.dtype
                and not (torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)))
        if not fast:
            return super().rows(q, k, v, offset)
        from ..kernels import decode

        key = ("decode", offset, T, n_k)
        if self._step_mask is None or self._step_mask[0] != key:
            self._step_mask = (key, decode.decode_tables(self.pattern, self.layout_heads, self.block_size, offset, T,
                                                         n_k, self.causal, layout_for))
        out, _ = decode.run_decode(q.detach().numpy(), k.detach().numpy(), v.detach().numpy(), self._step_mask[1],
                                   self.block_size, self.layout_heads, 1.0 / math.sqrt(q.shape[-1]))
        return torch.from_numpy(out)

    def extra_repr(self) -> str:
        return f"pattern={self.pattern!r}, block_size={self.block_size}, causal={self.causal}"
