r"""GPT-NeoX, the architecture of the Pythia models, with pluggable (sparse) attention.

What Pythia uses, and what this module implements (names follow Hugging Face's
``GPTNeoXForCausalLM`` so real checkpoints load by renaming only the prefix):

* token embedding ``embed_in`` and a separate, untied output matrix ``embed_out``;
* ``num_layers`` blocks, each with two LayerNorms and a *parallel* residual
  :math:`x \leftarrow x + \mathrm{Attn}(\mathrm{LN}_1(x)) + \mathrm{MLP}(\mathrm{LN}_2(x))`
  (``use_parallel_residual=False`` gives the sequential form);
* fused ``query_key_value`` projection laid out per head as ``[q | k | v]`` (head-major, as
  GPT-NeoX stores it), scores scaled by :math:`1/\sqrt{d_\text{head}}`; with ``num_kv_heads``
  below ``num_heads`` (grouped-query attention, not in Pythia) each key/value head ``g`` serves the
  ``G = num_heads / num_kv_heads`` query heads ``gG .. gG + G - 1`` and the projection is laid out
  per group as ``[q_{gG} | ... | q_{gG+G-1} | k_g | v_g]`` (``G = 1``: GPT-NeoX's layout);
* rotary position embeddings on the first ``rotary_ndims = int(d_head * rotary_pct)`` dimensions
  of every query and key head (``rotary_pct = 0.25`` in Pythia), in the "rotate half" convention:
  with :math:`r` = rotary_ndims, frequencies :math:`\theta_m = \text{base}^{-2m/r}` and
  :math:`x = [x_1, x_2]` split into halves of the rotary part,
  :math:`\mathrm{rope}(x)_t = x \cos(t\theta) + [-x_2, x_1] \sin(t\theta)`; the other dimensions
  pass through unchanged;
* MLP ``dense_h_to_4h`` -> exact GELU -> ``dense_4h_to_h``; a final LayerNorm.

Attention is pluggable. ``attention="dense"`` uses PyTorch's ``scaled_dot_product_attention``
with ``is_causal=True``. Every other choice is a :class:`~sparse_core.patterns.Pattern`, always
intersected with :func:`~sparse_core.patterns.causal` (a language model must not see the
future), computed by :func:`sparse_core.attention.ops.block_sparse_attention` over
``pattern.to_layout(n, n, block_size)``: only kept blocks are computed, and the same pattern's
``mask_mod`` gives the rows used when decoding from the key-value cache. Every layer is a
:class:`sparse_core.attention.layer.MultiHeadAttention` configuration (:class:`Attention`), and
all layers share one attention core (:func:`attention_core`). Named kinds:

=========  ==================================================================================
kind       pattern (then ``& causal``)
=========  ==================================================================================
dense      every earlier position (SDPA, no pattern)
local      ``sliding_window(window, causal=True)``: the previous ``window`` positions and itself
strided    ``strided(stride)``: the previous ``stride`` positions plus every ``stride``-th one
           (Sparse Transformer; reaches the whole past in two hops)
fixed      ``fixed(stride, c=1)``: the current window of ``stride`` plus the last position of
           every earlier window (Sparse Transformer's "fixed" summary columns)
mixed      ``per_head``: the first half of the heads local, the other half strided
global_    ``sliding_window(window, causal=True) | global_tokens(range(num_global))``: the window
local      plus the first ``num_global`` positions, which every later position sees (Longformer's
           global tokens, causal; the commissioning report's "global + local" pattern)
=========  ==================================================================================

or pass any ``Pattern`` as ``GPTNeoX(config, pattern=...)``.
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..attention.cores import AttentionCore, BlockSparseCore, CausalCore, DenseCore
from ..attention.layer import KVCache, MultiHeadAttention
from ..patterns import (Pattern, causal, fixed, global_tokens, intersection, per_head, sliding_window, strided,
                        union)

__all__ = ["GPTNeoXConfig", "PRESETS", "preset", "ATTENTION_KINDS", "attention_pattern", "attention_core", "GPTNeoX",
           "Attention", "KVCache", "generate", "forward_flops"]

ATTENTION_KINDS = ("dense", "local", "strided", "fixed", "mixed", "global_local")


@dataclass
class GPTNeoXConfig:
    """Sizes of a GPT-NeoX model and its attention (see the module docstring for the kinds).

    Defined in Chapter 9.
    """

    vocab_size: int = 50304
    hidden_size: int = 512
    num_layers: int = 6
    num_heads: int = 8
    intermediate_size: int = 2048
    rotary_pct: float = 0.25
    rotary_base: float = 10000.0
    max_position_embeddings: int = 2048
    layer_norm_eps: float = 1e-5
    use_parallel_residual: bool = True
    attention_bias: bool = True
    init_std: float = 0.02
    #: key/value heads (None: ``num_heads``); fewer is grouped-query attention, 1 multi-query
    num_kv_heads: int | None = None
    # attention
    attention: str = "dense"
    window: int = 128
    stride: int = 64
    block_size: int = 64
    #: global positions 0 .. num_global - 1 of ``attention="global_local"``
    num_global: int = 16

    def __post_init__(self):
        from .. import _validation as V

        V.check_int_fields(self, positive=("vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size",
                                           "max_position_embeddings", "window", "stride", "block_size",
                                           "num_global"))
        if self.hidden_size % self.num_heads:
            raise ValueError(f"`hidden_size`={self.hidden_size} must be divisible by `num_heads`={self.num_heads}")
        V.check_int_fields(self, optional_positive=("num_kv_heads",))
        if self.num_kv_heads is not None and self.num_heads % self.num_kv_heads:
            raise ValueError(f"`num_kv_heads` must divide `num_heads`={self.num_heads}, got {self.num_kv_heads!r}")
        if not 0.0 <= float(self.rotary_pct) <= 1.0:
            raise ValueError(f"`rotary_pct` must be in [0, 1], got {self.rotary_pct!r}")
        if self.rotary_ndims % 2:
            raise ValueError(f"rotary dimensions int(head_dim * rotary_pct) = {self.rotary_ndims} must be even")
        if self.attention not in ATTENTION_KINDS:
            raise ValueError(f"`attention` must be one of {', '.join(ATTENTION_KINDS)}, got {self.attention!r} "
                             "(pass any other Pattern as GPTNeoX(config, pattern=...))")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def kv_heads(self) -> int:
        """``num_kv_heads``, or ``num_heads`` when it is None."""
        return self.num_heads if self.num_kv_heads is None else self.num_kv_heads

    @property
    def rotary_ndims(self) -> int:
        return int(self.head_dim * self.rotary_pct)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "GPTNeoXConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown GPTNeoXConfig fields: {sorted(unknown)}")
        return cls(**d)


#: Named sizes. The Pythia ones have the real vocabulary (50,304 rows); the CPU ones are for the
#: book and the tests and take the vocabulary of the BPE trained on WikiText-2 (10,000 by default).
PRESETS: dict[str, dict] = {
    "pythia-70m": dict(vocab_size=50304, hidden_size=512, num_layers=6, num_heads=8, intermediate_size=2048),
    "pythia-160m": dict(vocab_size=50304, hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072),
    "tiny": dict(vocab_size=10000, hidden_size=128, num_layers=2, num_heads=4, intermediate_size=512),
    "small": dict(vocab_size=10000, hidden_size=256, num_layers=4, num_heads=4, intermediate_size=1024),
    # for long contexts (4k-8k): attention FLOPs per token ~ n / (12 d + V / layers) of the rest,
    # so a narrower model than small with more layers than tiny, where attention is most of a
    # dense step (measure it: python -m sparse_core bench kernels --model-presets long)
    "long": dict(vocab_size=10000, hidden_size=192, num_layers=6, num_heads=3, intermediate_size=768,
                 max_position_embeddings=8192),
}


def preset(name: str, **overrides: Any) -> GPTNeoXConfig:
    """``GPTNeoXConfig`` of a named preset, with fields overridden by keyword.

    Defined in Chapter 9.
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return GPTNeoXConfig(**{**PRESETS[name], **overrides})


def attention_pattern(config: GPTNeoXConfig) -> Pattern | None:
    """The causal pattern of ``config.attention`` (None for dense).

    Defined in Chapter 9.
    """
    kind = config.attention
    if kind == "dense":
        return None
    local = sliding_window(config.window, causal=True)
    if kind == "local":
        p = local
    elif kind == "strided":
        p = strided(config.stride)
    elif kind == "fixed":
        p = fixed(config.stride, c=1)
    elif kind == "global_local":
        p = union(local, global_tokens(range(config.num_global)))
    else:  # mixed
        if config.num_heads < 2:
            raise ValueError("`attention='mixed'` needs at least 2 heads")
        half = config.num_heads // 2
        p = per_head([local] * half + [strided(config.stride)] * (config.num_heads - half))
    return intersection(p, causal())


def forward_flops(config: GPTNeoXConfig, n: int, pairs: float | None = None) -> dict:
    r"""Matrix-multiply FLOPs of one forward pass over a sequence of ``n`` tokens (batch 1).

    A multiply-add counts 2 FLOPs; LayerNorms, GELU, softmax, rotary and biases are left out
    (they are :math:`O(n\,h)` and small next to these). With hidden size :math:`h`, MLP width
    :math:`i`, vocabulary :math:`V`, :math:`L` layers and :math:`P` kept (query, key) pairs per
    head (``pairs``; default: causal dense, :math:`n(n+1)/2`):

    * ``projections`` -- query/key/value and output projections,
      :math:`L \cdot 2n(h^2 + 2 h h_{kv} + h^2)` with :math:`h_{kv}` = ``num_kv_heads * head_dim``
      (:math:`h_{kv} = h` without grouped-query attention: :math:`L \cdot 2n \cdot 4h^2`);
    * ``mlp`` -- :math:`L \cdot 2n \cdot 2hi`;
    * ``attention`` -- scores and weighted values over every head, :math:`L \cdot 4Ph`
      (:math:`2Pd` each for :math:`QK^\top` and :math:`PV`, times :math:`h/d` heads);
    * ``output`` -- the untied output layer, :math:`2nhV` (the input embedding is a lookup);
    * ``total`` -- their sum; ``attention_fraction`` -- ``attention / total``.

    Defined in Chapter 9.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        raise ValueError(f"`n` must be a positive integer, got {n!r}")
    if pairs is None:
        pairs = n * (n + 1) / 2
    if not (isinstance(pairs, (int, float)) and 0 <= pairs <= n * n):
        raise ValueError(f"`pairs` must be a number in [0, n*n={n * n}], got {pairs!r}")
    h, i, L = config.hidden_size, config.intermediate_size, config.num_layers
    kv = config.kv_heads * config.head_dim
    out = {"projections": L * 2 * n * (h * h + 2 * h * kv + h * h), "mlp": L * 2 * n * 2 * h * i,
           "attention": L * 4 * float(pairs) * h, "output": 2 * n * h * config.vocab_size}
    out["total"] = sum(out.values())
    out["attention_fraction"] = out["attention"] / out["total"]
    return out


# ---------------------------------------------------------------------------- modules

def attention_core(pattern: Pattern | None, num_heads: int, block_size: int) -> CausalCore:
    """The core every layer of a model shares: dense SDPA (``pattern=None``) or the causal pattern's
    blocks, with the decoding rows of the key-value cache (one mask per step for all layers)."""
    if pattern is None:
        return DenseCore(causal=True)
    return BlockSparseCore(pattern, block_size, num_heads, causal=True)


class Attention(MultiHeadAttention):
    """GPT-NeoX attention: the fused ``query_key_value`` laid out per head as ``[q | k | v]`` (per
    key/value head ``[q x G | k | v]`` with ``config.num_kv_heads``), rotary
    embeddings on the first ``rotary_ndims`` dimensions of each q and k head, the key-value cache,
    and the output ``dense``; ``core`` computes the attention. Defined in Chapter 9.

    ``forward(x, cos, sin, cache, pos0)``: ``x (B, T, C)``, ``cos, sin`` of positions
    ``pos0..pos0+T-1``, ``cache`` a :class:`KVCache` holding the ``pos0`` earlier tokens (or None).
    """

    def __init__(self, config: GPTNeoXConfig, core: AttentionCore | None, index: int):
        super().__init__(config.hidden_size, config.num_heads, core, bias=config.attention_bias,
                         qkv_layout="per_head", names=("query_key_value", "dense"),
                         rotary_ndims=config.rotary_ndims, index=index, num_kv_heads=config.num_kv_heads)

    @property
    def num_heads(self) -> int:
        return self.n_heads

    @property
    def head_dim(self) -> int:
        return self.d_head

    @property
    def backend(self) -> AttentionCore:
        """The attention core (the name of earlier versions)."""
        return self.core

    _rope = MultiHeadAttention.rope  # the name of earlier versions

    def forward(self, x, cos, sin, cache: KVCache | None = None, pos0: int = 0):
        return super().forward(x, (cos, sin), cache, pos0)


class MLP(nn.Module):
    def __init__(self, config: GPTNeoXConfig):
        super().__init__()
        self.dense_h_to_4h = nn.Linear(config.hidden_size, config.intermediate_size)
        self.dense_4h_to_h = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, x):
        return self.dense_4h_to_h(F.gelu(self.dense_h_to_4h(x)))


class Layer(nn.Module):
    def __init__(self, config: GPTNeoXConfig, core: AttentionCore, index: int):
        super().__init__()
        self.parallel = config.use_parallel_residual
        self.input_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_attention_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attention = Attention(config, core, index)
        self.mlp = MLP(config)

    def forward(self, x, cos, sin, cache, pos0):
        a = self.attention(self.input_layernorm(x), cos, sin, cache, pos0)
        if self.parallel:
            return x + a + self.mlp(self.post_attention_layernorm(x))
        x = x + a
        return x + self.mlp(self.post_attention_layernorm(x))


class GPTNeoX(nn.Module):
    """GPT-NeoX causal language model: ``input_ids [batch, n]`` -> ``logits [batch, n, vocab]``.

    ``pattern`` (optional) overrides ``config.attention`` with any sparsity pattern; it is
    intersected with ``causal()``. Decoding: ``cache = model.new_cache()``, then call the model
    on the prompt and on each new token with ``cache=cache``.

    Defined in Chapter 9.
    """

    def __init__(self, config: GPTNeoXConfig, pattern: Pattern | None = None):
        super().__init__()
        if not isinstance(config, GPTNeoXConfig):
            raise TypeError(f"`config` must be a GPTNeoXConfig, got {type(config).__name__}")
        #: True when ``pattern`` was given (it is not saved in the config: pass it again to rebuild)
        self.custom_pattern = pattern is not None
        if pattern is not None:
            if not isinstance(pattern, Pattern):
                raise TypeError(f"`pattern` must be a sparse_core.patterns.Pattern, got {type(pattern).__name__}")
            pattern = intersection(pattern, causal())
        else:
            pattern = attention_pattern(config)
        self.config = config
        self.pattern = pattern
        core = attention_core(pattern, config.num_heads, config.block_size)
        self.embed_in = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(Layer(config, core, i) for i in range(config.num_layers))
        self.final_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.embed_out = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        r = config.rotary_ndims
        inv_freq = 1.0 / (config.rotary_base ** (torch.arange(0, r, 2, dtype=torch.float32) / max(r, 1)))
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self.reset_parameters()

    def reset_parameters(self):
        """Normal(0, init_std) weights, zero biases; the two residual output projections get
        ``init_std / sqrt(2 * num_layers)`` so the residual stream does not grow with depth."""
        std = self.config.init_std
        out_std = std / math.sqrt(2 * self.config.num_layers)
        for name, m in self.named_modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, out_std if name.endswith(("attention.dense", "dense_4h_to_h")) else std)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Embedding):
                nn.init.normal_(m.weight, 0.0, std)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def new_cache(self) -> KVCache:
        return KVCache(self.config.num_layers)

    def num_parameters(self, embeddings: bool = True) -> int:
        n = sum(p.numel() for p in self.parameters())
        if not embeddings:
            n -= self.embed_in.weight.numel() + self.embed_out.weight.numel()
        return n

    def _rotary(self, pos0: int, n: int, dtype):
        pos = torch.arange(pos0, pos0 + n, device=self.inv_freq.device, dtype=self.inv_freq.dtype)
        freqs = pos[:, None] * self.inv_freq[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(dtype), emb.sin().to(dtype)

    def forward(self, input_ids: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        if not isinstance(input_ids, torch.Tensor) or input_ids.ndim != 2 or input_ids.dtype not in (
                torch.int64, torch.int32):
            what = (f"{tuple(input_ids.shape)} {input_ids.dtype}" if isinstance(input_ids, torch.Tensor)
                    else type(input_ids).__name__)
            raise ValueError(f"`input_ids` must be an integer tensor [batch, n], got {what}")
        if input_ids.numel() and (int(input_ids.min()) < 0 or int(input_ids.max()) >= self.config.vocab_size):
            raise ValueError(f"`input_ids` must lie in [0, vocab_size={self.config.vocab_size}), got values in "
                             f"[{int(input_ids.min())}, {int(input_ids.max())}]")
        if cache is not None and not isinstance(cache, KVCache):
            raise TypeError(f"`cache` must be a KVCache (model.new_cache()), got {type(cache).__name__}")
        pos0 = cache.length if cache is not None else 0
        x = self.embed_in(input_ids)
        cos, sin = self._rotary(pos0, input_ids.shape[1], x.dtype)
        for layer in self.layers:
            x = layer(x, cos, sin, cache, pos0)
        return self.embed_out(self.final_layer_norm(x))

    def extra_repr(self) -> str:
        kind = "custom" if self.custom_pattern else self.config.attention
        return f"attention={kind}, pattern={self.pattern!r}, block_size={self.config.block_size}"


@torch.no_grad()
def generate(model: GPTNeoX, input_ids: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
             top_k: int | None = None, generator: torch.Generator | None = None,
             timings: dict | None = None) -> torch.Tensor:
    """Sample ``max_new_tokens`` after ``input_ids [batch, n]`` with the key-value cache.

    ``temperature`` 0 is greedy decoding; ``top_k`` keeps the k most likely tokens. Returns
    ``[batch, n + max_new_tokens]``. A ``timings`` dict receives ``prefill_s`` (the prompt's
    forward pass) and ``decode_s`` (every later step, sampling included), wall-clock seconds.

    Defined in Chapter 9.
    """
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"`max_new_tokens` must be a non-negative integer, got {max_new_tokens!r}")
    if not (isinstance(temperature, (int, float)) and temperature >= 0 and math.isfinite(temperature)):
        raise ValueError(f"`temperature` must be a finite number >= 0, got {temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k <= 0):
        raise ValueError(f"`top_k` must be a positive integer or None, got {top_k!r}")
    if not isinstance(input_ids, torch.Tensor) or input_ids.ndim != 2 or input_ids.shape[1] == 0:
        raise ValueError("`input_ids` must be a non-empty integer tensor [batch, n]")
    was_training = model.training
    model.eval()
    try:
        t0 = time.perf_counter()
        cache = model.new_cache()
        logits = model(input_ids, cache=cache)[:, -1]
        t1 = time.perf_counter()
        out = [input_ids]
        for step in range(max_new_tokens):
            if temperature == 0:
                nxt = logits.argmax(dim=-1, keepdim=True)
            else:
                logits = logits.float() / temperature
                if top_k is not None and top_k < logits.shape[-1]:
                    kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                nxt = torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator)
            out.append(nxt.to(input_ids.dtype))
            if step + 1 < max_new_tokens:
                logits = model(nxt, cache=cache)[:, -1]
        if timings is not None:
            timings.update(prefill_s=t1 - t0, decode_s=time.perf_counter() - t1)
        return torch.cat(out, dim=1)
    finally:
        model.train(was_training)
