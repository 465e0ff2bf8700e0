"""``sparse_core.distill`` is :mod:`sparse_core.lm.distill`; this name is kept for the README's entry points."""
import sys

from .lm import distill

sys.modules[__name__] = distill
