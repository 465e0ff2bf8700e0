"""``sparse_core.cost`` is :mod:`sparse_core.attention.cost`; this name is kept for the README's entry points."""
import sys

from .attention import cost

sys.modules[__name__] = cost
