"""Every attention method of the course as a layer, by name: what Chapter 11 compares side by side.

:func:`make_attention` builds ``x [batch, n, d_model] -> [batch, n, d_model]`` for a method name
of :data:`METHODS`, so a benchmark or a small model can swap one method for another with nothing
else changed. Options a method does not take are refused by name; options it takes and were not
given come from :data:`DEFAULTS` (sized for sequences of a few hundred to a few thousand tokens).

==============  =========  ===========================================================================
method          chapter    layer
==============  =========  ===========================================================================
``dense``       1          softmax over every (causal) pair, PyTorch's SDPA (:class:`DenseCore`)
``local``       2          block-sparse ``sliding_window(window)``
``strided``     3          block-sparse ``strided(stride)`` (Sparse Transformer)
``fixed``       3          block-sparse ``fixed(stride)`` (Sparse Transformer)
``bigbird``     5          block-sparse ``bigbird(n, block_size, num_random_blocks)``
``longformer``  5          block-sparse ``longformer(window, global_indices=range(num_global))``
``global_local`` 5, 9      block-sparse ``sliding_window(window) | global_tokens(range(num_global))``
``topk``        6          :class:`~sparse_core.approx.TopKSelfAttention` (``topk`` keys per query)
``routing``     6          :class:`~sparse_core.approx.RoutingSelfAttention` (``n_clusters``)
``nsa``         6          :class:`~sparse_core.approx.NSASelfAttention` (compressed + selected + window)
``linformer``   7          :class:`~sparse_core.approx.LinformerSelfAttention` (``k`` projected keys);
                           not causal
``performer``   8          :class:`~sparse_core.approx.PerformerSelfAttention` (``n_features``)
``synthesizer`` 6          :class:`~sparse_core.approx.DenseSynthesizerAttention` (weights from x alone)
==============  =========  ===========================================================================

With ``causal=True`` every block-sparse pattern is intersected with ``causal()``.
"""
from __future__ import annotations

import inspect
from typing import Any

from torch import nn

__all__ = ["METHODS", "DEFAULTS", "COMPLEXITY", "make_attention", "method_options"]

#: the options each method takes, with their defaults
DEFAULTS: dict[str, dict[str, Any]] = {
    "dense": {},
    "local": {"window": 128, "block_size": 64},
    "strided": {"stride": 64, "block_size": 64},
    "fixed": {"stride": 64, "block_size": 64},
    "bigbird": {"block_size": 64, "num_random_blocks": 2, "seed": 0},
    "longformer": {"window": 128, "num_global": 16, "block_size": 64},
    "global_local": {"window": 128, "num_global": 16, "block_size": 64},
    "topk": {"topk": 64},
    "routing": {"n_clusters": 8},
    "nsa": {"block_size": 32, "n_select": 4, "window": 64},
    "linformer": {"k": 128},
    "performer": {"n_features": 64},
    "synthesizer": {},
}
METHODS = tuple(DEFAULTS)

#: what each method costs as the tutorial's table states it: time and memory in ``n`` (``w`` a
#: window or block count, ``k`` kept keys or features, ``c`` clusters), and how the receptive field
#: of a token grows with the number of layers ``L``
COMPLEXITY: dict[str, dict[str, str]] = {
    "dense": {"time": "n^2", "memory": "n^2 (n with flash-style kernels)", "receptive_field": "n after 1 layer"},
    "local": {"time": "n w", "memory": "n w", "receptive_field": "L w"},
    "strided": {"time": "n sqrt(n)", "memory": "n sqrt(n)", "receptive_field": "n after 2 layers"},
    "fixed": {"time": "n sqrt(n)", "memory": "n sqrt(n)", "receptive_field": "n after 2 layers"},
    "bigbird": {"time": "n w", "memory": "n w", "receptive_field": "n after 2 layers (global blocks)"},
    "longformer": {"time": "n (w + g)", "memory": "n (w + g)", "receptive_field": "n after 2 layers (global tokens)"},
    "global_local": {"time": "n (w + g)", "memory": "n (w + g)", "receptive_field": "n after 2 layers (global tokens)"},
    "topk": {"time": "n^2 (scores) + n k", "memory": "n k (blockwise)", "receptive_field": "content-dependent, n"},
    "routing": {"time": "n^2 / c + n c", "memory": "n^2 / c", "receptive_field": "content-dependent"},
    "nsa": {"time": "n (n / b + s b + w)", "memory": "n (n / b + s b + w)", "receptive_field": "n after 1 layer (compressed)"},
    "linformer": {"time": "n k", "memory": "n k", "receptive_field": "n after 1 layer (low rank)"},
    "performer": {"time": "n m d", "memory": "n m + m d", "receptive_field": "n after 1 layer (kernel approximation)"},
    "synthesizer": {"time": "n^2", "memory": "n^2", "receptive_field": "n after 1 layer (input-independent of q.k)"},
}


def method_options(method: str, **options) -> dict:
    """The options of ``method``: :data:`DEFAULTS` updated by ``options`` (unknown names refused)."""
    if method not in DEFAULTS:
        raise ValueError(f"`method` must be one of {', '.join(METHODS)}, got {method!r}")
    unknown = sorted(set(options) - set(DEFAULTS[method]))
    if unknown:
        takes = ", ".join(DEFAULTS[method]) or "no options"
        raise ValueError(f"method {method!r} does not take {', '.join(map(repr, unknown))} (it takes: {takes})")
    return {**DEFAULTS[method], **options}


def _pattern(method: str, n: int, o: dict, causal: bool):
    from .. import patterns as P

    if method == "local":
        p = P.sliding_window(o["window"], causal=causal)
    elif method == "strided":
        p = P.strided(o["stride"], causal=causal)
    elif method == "fixed":
        p = P.fixed(o["stride"], causal=causal)
    elif method == "bigbird":
        p = P.bigbird(n, o["block_size"], num_random_blocks=o["num_random_blocks"], seed=o["seed"])
    elif method == "longformer":
        p = P.longformer(o["window"], range(o["num_global"]), causal=causal)
    else:  # global_local
        p = P.union(P.sliding_window(o["window"], causal=causal), P.global_tokens(range(o["num_global"])))
    return P.intersection(p, P.causal()) if causal else p


def make_attention(method: str, d_model: int, n_heads: int, n: int, causal: bool = False, **options) -> nn.Module:
    """The attention layer of ``method`` for sequences of up to ``n`` tokens (module docstring).

    Defined in Chapter 11.
    """
    from ..attention.cores import BlockSparseCore, DenseCore
    from ..attention.layer import MultiHeadAttention
    from .linformer import LinformerSelfAttention
    from .nsa import NSASelfAttention
    from .performer import PerformerSelfAttention
    from .routing import RoutingSelfAttention
    from .synthesizer import DenseSynthesizerAttention
    from .topk import TopKSelfAttention

    o = method_options(method, **options)
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        raise ValueError(f"`n` must be a positive integer (the longest sequence), got {n!r}")
    if method == "dense":
        return MultiHeadAttention(d_model, n_heads, DenseCore(causal))
    if method in ("local", "strided", "fixed", "bigbird", "longformer", "global_local"):
        layer = MultiHeadAttention(d_model, n_heads)
        layer.set_core(BlockSparseCore(_pattern(method, n, o, causal), o["block_size"], n_heads, causal=causal))
        return layer
    if method == "linformer" and causal:
        raise ValueError("method 'linformer' is not causal: it mixes every position into its k projected keys")
    cls, extra = {
        "topk": (TopKSelfAttention, {}),
        "routing": (RoutingSelfAttention, {}),
        "nsa": (NSASelfAttention, {}),
        "linformer": (LinformerSelfAttention, {"seq_len": n}),
        "performer": (PerformerSelfAttention, {}),
        "synthesizer": (DenseSynthesizerAttention, {"max_len": n}),
    }[method]
    kw = {**o, **extra}
    if "causal" in inspect.signature(cls).parameters:
        kw["causal"] = causal
    return cls(d_model, n_heads, **kw)
