r"""Local patterns: sliding window, dilated window, block-local.

* sliding window, symmetric: :math:`|i - j| \le w`; causal: :math:`i - w \le j \le i`;
* dilated: :math:`j = i + k\,\delta` for :math:`k \in \{-w, \dots, w\}` (causal: :math:`k \le 0`),
  with dilation :math:`\delta` per head (a list cycles over heads);
* block-local: :math:`\lfloor i / b \rfloor = \lfloor j / b \rfloor` (non-overlapping blocks).
"""
from __future__ import annotations

from .base import DiagonalPattern, Pattern, PartitionPattern, check_int, intersection, causal, lookup, per_head_ints


class SlidingWindow(DiagonalPattern):
    def __init__(self, window: int, causal: bool = False):
        self.window = check_int("window", window, 0)
        self.causal = bool(causal)

    def _pred(self, h, d):
        if self.causal:
            return (d >= 0) & (d <= self.window)
        return (d >= -self.window) & (d <= self.window)

    def _params(self):
        return {"window": self.window, "causal": self.causal}

    def _name(self):
        return "sliding_window"


class Dilated(DiagonalPattern):
    def __init__(self, window: int, dilation, causal: bool = False):
        self.window = check_int("window", window, 0)
        self.dilations = per_head_ints("dilation", dilation, 1)
        self.causal = bool(causal)
        self.n_heads = len(self.dilations) if len(self.dilations) > 1 else None

    def _pred(self, h, d):
        dil = lookup(self.dilations, h % len(self.dilations)) if not isinstance(h, int) else int(
            self.dilations[h % len(self.dilations)])
        reach = self.window * dil
        lo = 0 if self.causal else -reach
        return (d % dil == 0) & (d >= lo) & (d <= reach)

    def _params(self):
        dil = self.dilations.tolist()
        return {"window": self.window, "dilation": dil[0] if len(dil) == 1 else dil, "causal": self.causal}

    def _name(self):
        return "dilated"


class BlockLocal(PartitionPattern):
    def __init__(self, block: int):
        super().__init__(check_int("block", block, 1))

    def _params(self):
        return {"block": self.size}

    def _name(self):
        return "block_local"


def sliding_window(window: int, causal: bool = False) -> Pattern:
    """Keep ``|i - j| <= window`` (or ``i - window <= j <= i`` when ``causal``).

    Defined in Chapter 2 (Exercise 2.1).
    """
    return SlidingWindow(window, causal)


def dilated(window: int, dilation, causal: bool = False) -> Pattern:
    """Keep ``j = i + k * dilation`` for ``|k| <= window`` (``-window <= k <= 0`` when causal).

    Defined in Chapter 2 (Exercise 2.2).

    ``dilation`` may be a list, one value per head (head ``h`` uses ``dilation[h]``).
    """
    return Dilated(window, dilation, causal)


def block_local(block: int, causal: bool = False) -> Pattern:
    """Keep pairs in the same non-overlapping block of ``block`` positions.

    Defined in Chapter 2.
    """
    p = BlockLocal(block)
    return intersection(p, causal_()) if causal else p


causal_ = causal
