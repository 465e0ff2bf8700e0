"""Content-based sparse and approximate attention, as drop-in layers.

Every layer has the interface of :class:`sparse_core.attention.layer.SparseSelfAttention`:
``Layer(d_model, n_heads, ..., causal=False, bias=True)`` and ``forward(x [batch, n, d_model])
-> [batch, n, d_model]``, so a model can swap one for another: each is a
:class:`sparse_core.attention.layer.MultiHeadAttention` with the method's attention core (an
``nn.Module`` on ``(B, nh, T, hs)`` heads that owns the method's weights). Each module also exposes
the functional form on ``[..., n, d]`` tensors, checked against
:func:`sparse_core.attention.reference.attention`.

================  =====================================  =========================  ============================
module            layer                                  core                       functional form
================  =====================================  =========================  ============================
``topk``          :class:`TopKSelfAttention`             :class:`TopKCore`          ``topk_attention``,
                                                                                    ``topk_attention_blockwise``
``routing``       :class:`RoutingSelfAttention`          :class:`RoutingCore`       ``kmeans``,
                                                                                    ``routing_attention``
``learned_mask``  :class:`LearnedMaskSelfAttention`      :class:`LearnedMaskCore`   ``gated_attention``
``nsa``           :class:`NSASelfAttention`              :class:`NSACore`           ``nsa_branches``,
                                                                                    ``nsa_attention``
``synthesizer``   :class:`DenseSynthesizerAttention`,    ``DenseSynthesizerCore``,  ``synthesizer_attention``
                  :class:`RandomSynthesizerAttention`    ``RandomSynthesizerCore``
``linformer``     :class:`LinformerSelfAttention`        :class:`LinformerCore`     ``linformer_attention``
``performer``     :class:`PerformerSelfAttention`        :class:`PerformerCore`     ``favor_attention``,
                                                         (:class:`FavorCore`)       ``favor_attention_quadratic``
================  =====================================  =========================  ============================

Chapter 6 builds top-k, routing, the learned mask and NSA; Chapter 7 Linformer; Chapter 8 Performer.
:mod:`.methods` names every method of the course, these and the block-sparse patterns, as one
layer factory (:func:`~sparse_core.approx.methods.make_attention`, Chapter 11).
"""
from .learned_mask import LearnedMaskCore, LearnedMaskSelfAttention, gated_attention
from .linformer import LinformerCore, LinformerSelfAttention, linformer_attention
from .nsa import NSACore, NSASelfAttention, nsa_attention, nsa_branches
from .performer import (FavorCore, PerformerCore, PerformerSelfAttention, favor_attention, favor_attention_quadratic,
                        gaussian_orthogonal_random_matrix)
from .routing import RoutingCore, RoutingSelfAttention, kmeans, routing_attention
from .synthesizer import (DenseSynthesizerAttention, DenseSynthesizerCore, RandomSynthesizerAttention,
                          RandomSynthesizerCore, synthesizer_attention)
from .topk import TopKCore, TopKSelfAttention, mask_from_scores, topk_attention, topk_attention_blockwise, topk_mask

__all__ = [
    "TopKSelfAttention", "TopKCore", "topk_attention", "topk_attention_blockwise", "topk_mask", "mask_from_scores",
    "RoutingSelfAttention", "RoutingCore", "kmeans", "routing_attention",
    "LearnedMaskSelfAttention", "LearnedMaskCore", "gated_attention",
    "NSASelfAttention", "NSACore", "nsa_attention", "nsa_branches",
    "DenseSynthesizerAttention", "RandomSynthesizerAttention", "DenseSynthesizerCore", "RandomSynthesizerCore",
    "synthesizer_attention",
    "LinformerSelfAttention", "LinformerCore", "linformer_attention",
    "PerformerSelfAttention", "PerformerCore", "FavorCore", "favor_attention", "favor_attention_quadratic",
    "gaussian_orthogonal_random_matrix",
]
