"""The multi-head attention layer of the library, with a pluggable attention core.

:class:`MultiHeadAttention` does what every attention layer does -- project ``x (B, T, C)`` to
queries, keys and values, split them into ``nh`` heads of ``hs = C / nh``, (optionally) rotate
q and k, append k and v to a key-value cache, merge the heads back and project the output -- and
hands ``q (B, nh, T, hs)``, ``k, v (B, n_kv, T, hs)`` to an **attention core**
(:mod:`sparse_core.attention.cores`) that decides which keys each query looks at. ``n_kv`` is
``num_kv_heads``: ``nh`` by default (multi-head attention), fewer for grouped-query attention (each
key/value head serves ``nh / n_kv`` consecutive query heads; 1 is multi-query attention). Every attention layer of the library is one of its
configurations:

=====================================  ===========================================================
layer                                  core
=====================================  ===========================================================
:class:`SparseSelfAttention`           :class:`~sparse_core.attention.cores.BlockSparseCore`
                                       over a Pattern (Chapter 4)
``sparse_core.approx.*SelfAttention``  the method's core, beside it in :mod:`sparse_core.approx`
                                       (Chapters 6-8)
``sparse_core.models.gpt_neox``        ``DenseCore`` or ``BlockSparseCore``, fused per-head
``.Attention``                         ``query_key_value``, rotary, key-value cache (Chapter 9)
``sparse_core.lm.distill``             the student's core (Chapter 10)
``.StudentAttention``
=====================================  ===========================================================

Shapes follow ``nn.MultiheadAttention(batch_first=True)`` (see ``book/notation.md``): ``x`` is
``[batch, n, d_model]`` and so is the output. :meth:`MultiHeadAttention.from_multihead` copies a
``torch.nn.MultiheadAttention`` (``batch_first`` or not: the weights are the same).
"""
from __future__ import annotations

import torch
from torch import nn

from .cores import AttentionCore, BlockSparseCore
from ..patterns import Pattern, dense

__all__ = ["MultiHeadAttention", "SparseSelfAttention", "KVCache", "QKV_LAYOUTS", "rotate_half"]

#: how the fused input projection is laid out: "stacked" = [q; k; v] (nn.MultiheadAttention's
#: in_proj), "per_head" = [q_h | k_h | v_h] for each head h (GPT-NeoX's query_key_value); with
#: grouped-query attention (G = n_heads / n_kv_heads) "stacked" is [q (C); k (n_kv hs); v (n_kv hs)]
#: and "per_head" is [q_{gG} | ... | q_{gG+G-1} | k_g | v_g] for each key/value head g
QKV_LAYOUTS = ("stacked", "per_head")


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """``[x_1, x_2] -> [-x_2, x_1]`` over the last axis (the rotary embedding's "rotate half")."""
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class KVCache:
    """Keys and values of every layer for the tokens seen so far (``(B, n_kv_heads, length, hs)``
    each: a grouped-query layer stores only its key/value heads).

    Each layer's entries live in a buffer with spare rows (its capacity doubles when full), so
    appending a token copies only that token: ``layers[i]`` are views of the first ``length`` rows
    (what a decoding kernel reads in place, :func:`sparse_core.kernels.decode.cache_base`).
    """

    def __init__(self, num_layers: int):
        self.layers: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * num_layers
        self._buffers: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * num_layers

    @property
    def length(self) -> int:
        first = self.layers[0]
        return 0 if first is None else first[0].shape[-2]

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        """Add ``k, v (B, n_kv_heads, T, hs)`` to layer ``layer``'s entries; returns all of them."""
        past, buf = self.layers[layer], self._buffers[layer]
        n0 = 0 if past is None else past[0].shape[-2]
        n1 = n0 + k.shape[-2]
        if past is not None and (past[0].shape[:-2] != k.shape[:-2] or past[1].shape[:-2] != v.shape[:-2]):
            raise ValueError(f"cache of layer {layer} holds {tuple(past[0].shape)}, cannot append {tuple(k.shape)}")
        if buf is None or buf[0].shape[-2] < n1 or buf[0].dtype != k.dtype or buf[0].device != k.device:
            cap = max(n1, 2 * (buf[0].shape[-2] if buf is not None else 0), 16)
            new = tuple(x.new_empty(x.shape[:-2] + (cap, x.shape[-1])) for x in (k, v))
            if past is not None:
                new[0][..., :n0, :].copy_(past[0])
                new[1][..., :n0, :].copy_(past[1])
            buf = self._buffers[layer] = new
        buf[0][..., n0:n1, :].copy_(k)
        buf[1][..., n0:n1, :].copy_(v)
        self.layers[layer] = (buf[0][..., :n1, :], buf[1][..., :n1, :])
        return self.layers[layer]


class MultiHeadAttention(nn.Module):
    """``x (B, T, C) -> (B, T, C)``: projections and head split around an attention core. Defined in
    Chapter 4 (the layer around the block-sparse kernel); Chapter 9 adds rotary and the cache.

    Parameters
    ----------
    d_model, n_heads:
        ``C`` and ``nh`` (``C`` divisible by ``nh``).
    core:
        An :class:`~sparse_core.attention.cores.AttentionCore`, or None to attach one later with
        :meth:`set_core` (subclasses build their core after the projections).
    bias:
        Biases in the projections.
    qkv_layout:
        ``"stacked"`` or ``"per_head"`` (:data:`QKV_LAYOUTS`), or None for a layer whose subclass
        makes its own inputs (:meth:`qkv_heads`).
    names:
        Attribute names of the input and output projections (``("qkv", "out")``; GPT-NeoX:
        ``("query_key_value", "dense")``): they are the state-dict names.
    rotary_ndims:
        Rotary embedding on the first ``rotary_ndims`` dimensions of each q and k head when the
        forward gets ``rotary=(cos, sin)``.
    index:
        This layer's slot in a :class:`KVCache`.
    num_kv_heads:
        Key/value heads ``n_kv`` (None: ``n_heads``); a divisor of ``n_heads``. Query head ``h``
        uses key/value head ``h // (n_heads // n_kv)`` (grouped-query attention; 1 = multi-query).
        The input projection is ``C -> C + 2 n_kv hs`` (:data:`QKV_LAYOUTS`) and the cache keeps
        ``n_kv`` heads; a core without ``supports_gqa`` gets k and v repeated per query head.
    head_dim:
        ``hs`` of every head (None: ``C // nh``, and ``C`` must be divisible by ``nh``). Another
        value makes the heads ``nh * hs`` wide in all, as ``linformer``'s ``dim_head``: the input
        projection is ``C -> nh hs + 2 n_kv hs`` and the output projection ``nh hs -> C``.

    A core with weights (say a learned gate) *belongs to the layer*: its parameters, buffers and
    submodules are registered on the layer under their own names (``gate.w_q.weight``, not
    ``core.gate.w_q.weight``), so the layers keep the state-dict names of the classes they
    replaced. The core's settings read and write through the layer (``layer.topk`` is
    ``layer.core.topk``).
    """

    def __init__(self, d_model: int, n_heads: int, core: AttentionCore | None = None, *, bias: bool = True,
                 qkv_layout: str | None = "stacked", names: tuple[str, str] = ("qkv", "out"),
                 rotary_ndims: int = 0, index: int = 0, num_kv_heads: int | None = None,
                 head_dim: int | None = None):
        super().__init__()
        if not isinstance(d_model, int) or not isinstance(n_heads, int) or d_model <= 0 or n_heads <= 0:
            raise ValueError(f"`d_model` and `n_heads` must be positive integers, got {d_model!r}, {n_heads!r}")
        if head_dim is None and d_model % n_heads:
            raise ValueError(f"`d_model`={d_model} must be divisible by `n_heads`={n_heads}")
        if head_dim is not None and (isinstance(head_dim, bool) or not isinstance(head_dim, int) or head_dim <= 0):
            raise ValueError(f"`head_dim` must be None or a positive integer, got {head_dim!r}")
        if num_kv_heads is None:
            num_kv_heads = n_heads
        elif (isinstance(num_kv_heads, bool) or not isinstance(num_kv_heads, int) or num_kv_heads <= 0
              or n_heads % num_kv_heads):
            raise ValueError(f"`num_kv_heads` must be None or a positive integer dividing `n_heads`={n_heads}, "
                             f"got {num_kv_heads!r}")
        if not isinstance(bias, bool):
            raise TypeError(f"`bias` must be a bool, got {type(bias).__name__}")
        if qkv_layout is not None and qkv_layout not in QKV_LAYOUTS:
            raise ValueError(f"`qkv_layout` must be one of {QKV_LAYOUTS} or None, got {qkv_layout!r}")
        self.d_model, self.n_heads = d_model, n_heads
        self.d_head = d_model // n_heads if head_dim is None else head_dim
        self.n_kv_heads = num_kv_heads
        self.qkv_layout, self.names, self.rotary_ndims, self.index = qkv_layout, tuple(names), rotary_ndims, index
        if qkv_layout is not None:
            self.add_module(self.names[0], nn.Linear(d_model, self.inner_dim + 2 * self.kv_dim, bias=bias))
        self.add_module(self.names[1], nn.Linear(self.inner_dim, d_model, bias=bias))
        if core is not None:
            self.set_core(core)

    # -- the core
    def set_core(self, core: AttentionCore) -> None:
        """Attach ``core``; its parameters, buffers and submodules become the layer's (same names)."""
        if not isinstance(core, AttentionCore):
            raise TypeError(f"`core` must be a sparse_core.attention.cores.AttentionCore, got {type(core).__name__}")
        if "core" in self.__dict__:
            raise RuntimeError("this layer has a core already")
        registries = (("_parameters", self._parameters), ("_buffers", self._buffers), ("_modules", self._modules))
        if any(getattr(core, attr) for attr, _ in registries):
            for attr, mine in registries:  # one registry for both: every PyTorch tool sees the same tensors
                theirs = getattr(core, attr)
                clash = sorted(set(mine) & set(theirs))
                if clash:
                    raise ValueError(f"`core` has members named {clash} that the layer has already "
                                     "(a core with weights belongs to one layer)")
                mine.update(theirs)
                core.__dict__[attr] = mine
            self._non_persistent_buffers_set |= core._non_persistent_buffers_set
            core.__dict__["_non_persistent_buffers_set"] = self._non_persistent_buffers_set
        core.training = self.training
        self.__dict__["core"] = core

    def train(self, mode: bool = True):
        super().train(mode)
        if "core" in self.__dict__:
            self.core.training = mode
        return self

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            core = self.__dict__.get("core")
            if core is None or name.startswith("__"):
                raise
            return getattr(core, name)

    def __setattr__(self, name: str, value) -> None:
        core = self.__dict__.get("core")
        if core is not None and name not in self.__dict__ and name in core.__dict__:
            setattr(core, name, value)
        else:
            super().__setattr__(name, value)

    # -- projections and heads
    @property
    def inner_dim(self) -> int:
        """Width of the queries and of the heads' merged output: ``n_heads * d_head``."""
        return self.n_heads * self.d_head

    @property
    def kv_dim(self) -> int:
        """Width of the keys (and of the values): ``n_kv_heads * d_head``."""
        return self.n_kv_heads * self.d_head

    @property
    def qkv_proj(self) -> nn.Linear:
        return getattr(self, self.names[0])

    @property
    def out_proj(self) -> nn.Linear:
        return getattr(self, self.names[1])

    def check_input(self, x) -> None:
        if not isinstance(x, torch.Tensor) or x.ndim != 3 or x.shape[-1] != self.d_model:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"`x` must be a tensor [batch, n, d_model={self.d_model}], got {shape}")
        if x.shape[1] == 0:
            raise ValueError(f"`x` must have at least one position, got shape {tuple(x.shape)}")

    def split_heads(self, t: torch.Tensor) -> torch.Tensor:
        """``(B, T, nh * hs) -> (B, nh, T, hs)`` (any number of heads)."""
        B, T, _ = t.shape
        return t.view(B, T, -1, self.d_head).transpose(1, 2)

    def merge_heads(self, o: torch.Tensor) -> torch.Tensor:
        """``(B, nh, T, hs) -> (B, T, nh * hs)``."""
        B, nh, T, hs = o.shape
        return o.transpose(1, 2).reshape(B, T, nh * hs)

    def qkv_heads(self, x: torch.Tensor):
        """``q (B, nh, T, hs)`` and ``k, v (B, n_kv, T, hs)`` of ``x (B, T, C)``."""
        B, T, C = x.shape
        qkv = self.qkv_proj(x)                                                      # (B, T, nh hs + 2 n_kv hs)
        if self.qkv_layout == "stacked":                                            # [q; k; v]
            q, k, v = qkv.split((self.inner_dim, self.kv_dim, self.kv_dim), dim=-1)
            return self.split_heads(q), self.split_heads(k), self.split_heads(v)
        G = self.n_heads // self.n_kv_heads                                         # per group g: [q x G | k_g | v_g]
        qkv = qkv.view(B, T, self.n_kv_heads, G + 2, self.d_head)                   # (B, T, n_kv, G + 2, hs)
        q = qkv[..., :G, :].reshape(B, T, self.n_heads, self.d_head).transpose(1, 2)  # (B, nh, T, hs)
        k, v = qkv[..., G, :].transpose(1, 2), qkv[..., G + 1, :].transpose(1, 2)   # (B, n_kv, T, hs)
        return q, k, v

    def rope(self, t: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """Rotary embedding of the first ``rotary_ndims`` dimensions of ``t (B, nh, T, hs)``."""
        r = self.rotary_ndims
        if r == 0:
            return t
        t_rot, t_pass = t[..., :r], t[..., r:]
        return torch.cat((t_rot * cos + rotate_half(t_rot) * sin, t_pass), dim=-1)

    def forward(self, x: torch.Tensor, rotary: tuple[torch.Tensor, torch.Tensor] | None = None,
                cache: KVCache | None = None, offset: int = 0) -> torch.Tensor:
        """``x (B, T, C) -> (B, T, C)``. ``rotary``: ``(cos, sin)`` of positions ``offset..offset+T-1``;
        ``cache``: a :class:`KVCache` holding the ``offset`` earlier tokens (this layer's slot grows)."""
        self.check_input(x)
        if "core" not in self.__dict__:
            raise RuntimeError("this layer has no attention core (set_core)")
        if (cache is not None or offset) and not self.core.supports_cache:
            raise ValueError(f"{type(self.core).__name__} computes whole sequences only (no key-value cache)")
        q, k, v = self.qkv_heads(x)                                   # q (B, nh, T, hs); k, v (B, n_kv, T, hs)
        if rotary is not None:
            q, k = self.rope(q, *rotary), self.rope(k, *rotary)
        if cache is not None:
            k, v = cache.append(self.index, k, v)                                   # (B, n_kv, offset + T, hs)
        if self.n_kv_heads != self.n_heads and not self.core.supports_gqa:  # one copy per query head
            G = self.n_heads // self.n_kv_heads
            k, v = k.repeat_interleave(G, dim=-3), v.repeat_interleave(G, dim=-3)  # (B, nh, S, hs)
        o = self.core(q, k, v, x) if offset == 0 else self.core.rows(q, k, v, offset)  # (B, nh, T, hs)
        return self.out_proj(self.merge_heads(o))                                   # (B, T, C)

    @classmethod
    def from_multihead(cls, mha: nn.MultiheadAttention, *args, **kwargs):
        """Copy the projections of a ``torch.nn.MultiheadAttention`` (``batch_first`` or not); the other
        arguments are the constructor's after ``d_model, n_heads``."""
        if not isinstance(mha, nn.MultiheadAttention):
            raise TypeError(f"`mha` must be a torch.nn.MultiheadAttention, got {type(mha).__name__}")
        if not mha._qkv_same_embed_dim:
            raise ValueError("`mha` must use the same embedding size for q, k and v")
        layer = cls(mha.embed_dim, mha.num_heads, *args, bias=mha.in_proj_bias is not None, **kwargs)
        if layer.qkv_layout != "stacked":
            raise TypeError(f"{cls.__name__} does not take nn.MultiheadAttention's stacked [q; k; v] projection")
        if layer.n_kv_heads != layer.n_heads:
            raise ValueError(f"nn.MultiheadAttention has {mha.num_heads} key/value heads; `num_kv_heads` must be "
                             f"None or {mha.num_heads}, got {layer.n_kv_heads}")
        with torch.no_grad():
            layer.qkv_proj.weight.copy_(mha.in_proj_weight)
            layer.out_proj.weight.copy_(mha.out_proj.weight)
            if mha.in_proj_bias is not None:
                layer.qkv_proj.bias.copy_(mha.in_proj_bias)
                layer.out_proj.bias.copy_(mha.out_proj.bias)
        return layer.to(mha.in_proj_weight.dtype)

    def extra_repr(self) -> str:
        core = self.__dict__.get("core")
        inner = f", {type(core).__name__}({core.extra_repr()})" if core is not None else ""
        kv = f", num_kv_heads={self.n_kv_heads}" if self.n_kv_heads != self.n_heads else ""
        hd = f", head_dim={self.d_head}" if self.d_head * self.n_heads != self.d_model else ""
        return f"d_model={self.d_model}, n_heads={self.n_heads}{kv}{hd}{inner}"


class SparseSelfAttention(MultiHeadAttention):
    """Multi-head self-attention whose attention follows a Pattern. Defined in Chapter 4.

    A drop-in for the usual multi-head attention of a Transformer block: ``x [batch, n, d_model]``
    in, the same shape out, with the ``qkv`` ([q; k; v]) and ``out`` projections. The attention runs
    :func:`sparse_core.attention.ops.block_sparse_attention` over ``pattern.to_layout(n, n,
    block_size, n_heads)`` (:func:`sparse_core.attention.cores.layout_for`, cached), so only the kept
    blocks are computed. ``pattern=None`` is :func:`sparse_core.patterns.dense`.
    """

    def __init__(self, d_model: int, n_heads: int, pattern: Pattern | None = None, block_size: int = 64,
                 bias: bool = True):
        super().__init__(d_model, n_heads, bias=bias)
        self.set_core(BlockSparseCore(pattern if pattern is not None else dense(), block_size, n_heads))

    def layout(self, n: int):
        """The (cached) block layout used for sequences of length ``n``."""
        return self.core.layout(n)
