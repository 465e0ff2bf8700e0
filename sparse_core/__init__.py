"""sparse_core: the library under the sparse-attention course.

Public entry points (stable):

* :func:`sparse_core.attention.reference.attention` -- the float64 dense masked-softmax oracle;
* :func:`sparse_core.attention.streaming.streaming_attention` -- exact attention with O(n) extra memory;
* :mod:`sparse_core.attention.cost` -- the analytic FLOP and memory model;
* ``python -m sparse_core`` -- the command line (``--help`` lists the subcommands).
"""
__version__ = "0.1.0"
