r"""Axial attention on an ``height x width`` grid flattened row by row.

Token :math:`i` sits at row :math:`\lfloor i / W \rfloor`, column :math:`i \bmod W`. Row attention
keeps pairs in the same row, column attention pairs in the same column
(:math:`(i - j) \bmod W = 0`); the union costs :math:`O(n (H + W)) = O(n \sqrt n)` for a square
grid. ``factorized=True`` puts rows on even heads and columns on odd heads.
"""
from __future__ import annotations

from .base import DiagonalPattern, NamedPattern, Pattern, PartitionPattern, causal as _causal, check_int, intersection, \
    per_head, union


class _Columns(DiagonalPattern):
    def __init__(self, width):
        self.width = width

    def _pred(self, h, d):
        return d % self.width == 0

    def _name(self):
        return "axial_columns"

    def _params(self):
        return {"width": self.width}


def axial(height: int, width: int, causal: bool = False, factorized: bool = False) -> Pattern:
    """Row + column attention for a ``height x width`` grid (n = height * width tokens).

    Defined in Chapter 3 (Exercise 3.4).
    """
    height = check_int("height", height, 1)
    width = check_int("width", width, 1)
    rows, cols = PartitionPattern(width), _Columns(width)
    inner = per_head([rows, cols]) if factorized else union(rows, cols)
    if causal:
        inner = intersection(inner, _causal())
    params = {"height": height, "width": width, "causal": causal, "factorized": factorized}
    return _GridChecked(inner, params, height * width)


class _GridChecked(NamedPattern):
    def __init__(self, inner: Pattern, params: dict, n_max: int):
        super().__init__(inner, "axial", params)
        self.n_max = n_max

    def _check_lengths(self, n_q, n_k):
        if n_q > self.n_max or n_k > self.n_max:
            raise ValueError(f"axial pattern for a {self.params['height']}x{self.params['width']} grid covers "
                             f"{self.n_max} tokens; got n_q={n_q}, n_k={n_k}")
