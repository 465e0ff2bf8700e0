"""``sparse_core.reference`` is :mod:`sparse_core.attention.reference`; this name is kept for the README's entry points."""
import sys

from .attention import reference

sys.modules[__name__] = reference
