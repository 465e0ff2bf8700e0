"""Attention itself: the float64 oracle, streaming attention, the cost model, the dispatching
``block_sparse_attention`` with its autograd Functions, and the attention layer.

* :mod:`sparse_core.attention.reference` -- the dense masked-softmax oracle (Chapter 1);
* :mod:`sparse_core.attention.streaming` -- exact attention with an online softmax (Chapter 1);
* :mod:`sparse_core.attention.cost` -- FLOPs and bytes of dense attention (Chapter 1);
* :mod:`sparse_core.attention.ops` -- ``block_sparse_attention``: dispatch to the
  CPU or CUDA kernels of :mod:`sparse_core.kernels`, autograd (Chapter 4);
* :mod:`sparse_core.attention.layer` -- the multi-head attention layer (Chapter 4).
"""
