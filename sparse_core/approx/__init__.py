"""Content-based sparse and approximate attention, as drop-in layers.

Every layer has the interface of :class:`sparse_core.attention.layer.SparseSelfAttention`:
``Layer(d_model, n_heads, ..., causal=False, bias=True)`` and ``forward(x [batch, n, d_model])
-> [batch, n, d_model]``, so a model can swap one for another. Each module also exposes the
functional core on ``[..., n, d]`` tensors, checked against :func:`sparse_core.attention.reference.attention`.

==================  =============================================  ==================================
module              layer                                          functional core
==================  =============================================  ==================================
``topk``            :class:`TopKSelfAttention`                     ``topk_attention``,
                                                                   ``topk_attention_blockwise``
``routing``         :class:`RoutingSelfAttention`                  ``kmeans``, ``routing_attention``
``learned_mask``    :class:`LearnedMaskSelfAttention`              ``gated_attention``
``nsa``             :class:`NSASelfAttention`                      ``nsa_branches``, ``nsa_attention``
``synthesizer``     :class:`DenseSynthesizerAttention`,            ``synthesizer_attention``
                    :class:`RandomSynthesizerAttention`
``linformer``       :class:`LinformerSelfAttention`                ``linformer_attention``
``performer``       :class:`PerformerSelfAttention`                ``favor_attention``,
                                                                   ``favor_attention_quadratic``
==================  =============================================  ==================================
"""
from .learned_mask import LearnedMaskSelfAttention, gated_attention
from .linformer import LinformerSelfAttention, linformer_attention
from .nsa import NSASelfAttention, nsa_attention, nsa_branches
from .performer import PerformerSelfAttention, favor_attention, favor_attention_quadratic, gaussian_orthogonal_random_matrix
from .routing import RoutingSelfAttention, kmeans, routing_attention
from .synthesizer import DenseSynthesizerAttention, RandomSynthesizerAttention, synthesizer_attention
from .topk import TopKSelfAttention, topk_attention, topk_attention_blockwise, topk_mask

__all__ = [
    "TopKSelfAttention", "topk_attention", "topk_attention_blockwise", "topk_mask",
    "RoutingSelfAttention", "kmeans", "routing_attention",
    "LearnedMaskSelfAttention", "gated_attention",
    "NSASelfAttention", "nsa_attention", "nsa_branches",
    "DenseSynthesizerAttention", "RandomSynthesizerAttention", "synthesizer_attention",
    "LinformerSelfAttention", "linformer_attention",
    "PerformerSelfAttention", "favor_attention", "favor_attention_quadratic", "gaussian_orthogonal_random_matrix",
]
