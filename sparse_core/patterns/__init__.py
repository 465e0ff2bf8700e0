"""Sparsity patterns: the vocabulary of the course.

Every constructor returns a :class:`Pattern` with ``mask_mod`` (FlexAttention-compatible),
``to_dense`` and ``to_layout`` (see :mod:`sparse_core.patterns.base`). One module per family:

=====================  ===============================================================
module                 constructors
=====================  ===============================================================
``base``               ``dense``, ``causal``, ``union``, ``intersection``, ``per_head``
``local``              ``sliding_window``, ``dilated``, ``block_local``
``strided``            ``strided``, ``fixed``
``axial``              ``axial``
``global_tokens``      ``global_tokens``
``random_attention``   ``random_pattern``
``longformer``         ``longformer``
``bigbird``            ``bigbird``
``topk``               ``topk``
``deepspeed``          ``deepspeed_fixed``, ``deepspeed_variable``, ``deepspeed_bigbird``,
                       ``deepspeed_bslongformer``, ``deepspeed_local``, ``deepspeed_dense``
``plots``              ``plot_mask``, ``plot_layout``, ``plot_reach``, ``hops`` (import
                       ``sparse_core.patterns.plots``; it loads matplotlib)
``graph``              ``degrees``, ``distances``, ``diameter``, ``is_connected`` of a mask's
                       attention graph; ``hops``, ``reach``, ``receptive_field`` of a pattern
                       (import ``sparse_core.patterns.graph``)
``layout``             ``BlockLayout``: kept blocks (CSR per head) and the token masks of the
                       partial blocks -- all a kernel needs, no reference to the pattern
=====================  ===============================================================
"""
from .axial import axial
from .base import Pattern, causal, dense, intersection, per_head, union
from .bigbird import bigbird, max_random_blocks, sample_plan
from .deepspeed import (deepspeed_bigbird, deepspeed_bslongformer, deepspeed_dense, deepspeed_fixed, deepspeed_layout,
                        deepspeed_local, deepspeed_variable)
from .global_tokens import global_tokens
from .layout import BlockLayout
from .local import block_local, dilated, sliding_window
from .longformer import longformer
from .random_attention import random_pattern
from .strided import fixed, strided
from .topk import topk

__all__ = [
    "Pattern", "BlockLayout", "dense", "causal", "union", "intersection", "per_head",
    "sliding_window", "dilated", "block_local", "strided", "fixed", "axial", "global_tokens",
    "random_pattern", "longformer", "bigbird", "max_random_blocks", "sample_plan", "topk",
    "deepspeed_fixed", "deepspeed_variable", "deepspeed_bigbird", "deepspeed_bslongformer", "deepspeed_local",
    "deepspeed_dense", "deepspeed_layout",
]
