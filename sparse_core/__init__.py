"""sparse_core: the library under the sparse-attention course.

The two things most users want are here at the top:

* :func:`block_sparse_attention` -- attention over the blocks a :class:`BlockLayout` keeps
  (Numba CPU and CUDA kernels, forward and backward; Chapter 4);
* the patterns of the course (:mod:`sparse_core.patterns`): ``sliding_window``, ``strided``,
  ``bigbird``, ``longformer``, ... each a :class:`Pattern` with ``mask_mod``, ``to_dense`` and
  ``to_layout``.

Everything else lives in one room per capability (``ARCHITECTURE.md`` draws them):
:mod:`~sparse_core.attention` (oracle, streaming, cost, ops, the layer), :mod:`~sparse_core.kernels`,
:mod:`~sparse_core.patterns`, :mod:`~sparse_core.approx`, :mod:`~sparse_core.models`,
:mod:`~sparse_core.lm`, :mod:`~sparse_core.bench`, :mod:`~sparse_core.cli`, :mod:`~sparse_core.course`.
``python -m sparse_core --help`` lists the commands.
"""
__version__ = "0.1.0"

#: the names ``from sparse_core import ...`` offers; loaded on first use, so that importing the
#: package (and building the command line) stays light. tests/test_structure.py keeps this list
#: equal to ``sparse_core.patterns.__all__`` plus ``block_sparse_attention``.
__all__ = [
    "block_sparse_attention",
    "Pattern", "BlockLayout", "dense", "causal", "union", "intersection", "per_head",
    "sliding_window", "dilated", "block_local", "strided", "fixed", "axial", "global_tokens",
    "random_pattern", "longformer", "bigbird", "max_random_blocks", "sample_plan", "topk",
    "deepspeed_fixed", "deepspeed_variable", "deepspeed_bigbird", "deepspeed_bslongformer", "deepspeed_local",
    "deepspeed_dense", "deepspeed_layout",
]


def __getattr__(name: str):
    if name == "block_sparse_attention":
        from .attention.ops import block_sparse_attention

        return block_sparse_attention
    if name in __all__:
        from . import patterns

        return getattr(patterns, name)
    raise AttributeError(f"module 'sparse_core' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
