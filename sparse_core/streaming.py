"""``sparse_core.streaming`` is :mod:`sparse_core.attention.streaming`; this name is kept for the README's entry points."""
import sys

from .attention import streaming

sys.modules[__name__] = streaming
