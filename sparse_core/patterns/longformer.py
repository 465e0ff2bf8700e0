r"""Longformer (Beltagy et al., 2020): a sliding window plus global tokens,
:math:`|i - j| \le w` or :math:`i \in G` or :math:`j \in G`."""
from __future__ import annotations

from .base import NamedPattern, Pattern, union
from .global_tokens import global_tokens
from .local import sliding_window


def longformer(window: int, global_indices=(0,), causal: bool = False) -> Pattern:
    """Sliding window of half-width ``window`` plus the global positions ``global_indices``.

    Defined in Chapter 5 (Exercise 5.2).
    """
    glob = global_tokens(global_indices)
    inner = union(sliding_window(window), glob)
    if causal:
        inner = inner.restrict_causal()
    return NamedPattern(inner, "longformer", {"window": window, "global_indices": glob.indices.tolist(), "causal": causal})
