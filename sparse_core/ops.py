"""``sparse_core.ops`` is :mod:`sparse_core.attention.ops`; this name is kept for the README's entry points."""
import sys

from .attention import ops

sys.modules[__name__] = ops
