"""``sparse_core.modules`` is :mod:`sparse_core.attention.layer`; this name is kept for the README's entry points."""
import sys

from .attention import layer

sys.modules[__name__] = layer
