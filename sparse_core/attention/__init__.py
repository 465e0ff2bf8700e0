"""Attention itself: the float64 oracle, streaming attention, the cost model, the dispatching
``block_sparse_attention`` with its autograd Functions, the attention cores and the attention layer.

* :mod:`sparse_core.attention.reference` -- the dense masked-softmax oracle (Chapter 1);
* :mod:`sparse_core.attention.streaming` -- exact attention with an online softmax (Chapter 1);
* :mod:`sparse_core.attention.cost` -- FLOPs and bytes of dense attention (Chapter 1);
* :mod:`sparse_core.attention.ops` -- ``block_sparse_attention``: dispatch to the
  CPU or CUDA kernels of :mod:`sparse_core.kernels`, autograd (Chapter 4);
* :mod:`sparse_core.attention.cores` -- attention cores on ``(B, nh, T, hs)`` heads: dense SDPA,
  block-sparse over a Pattern, and the library's one layout cache ``layout_for`` (Chapter 4);
* :mod:`sparse_core.attention.layer` -- ``MultiHeadAttention``, the one multi-head layer (projections,
  head split, rotary, key-value cache) around a core, and ``SparseSelfAttention`` (Chapter 4).
"""
