r"""The Sparse Transformer's strided and fixed patterns (Child et al., 2019).

With stride :math:`\ell`:

* strided: :math:`A^{(1)} = \{j : 0 \le i - j < \ell\}` (the previous :math:`\ell` positions) and
  :math:`A^{(2)} = \{j : (i - j) \bmod \ell = 0\}` (every :math:`\ell`-th position before);
* fixed: :math:`A^{(1)} = \{j : \lfloor j/\ell \rfloor = \lfloor i/\ell \rfloor\}` (same window) and
  :math:`A^{(2)} = \{j : j \bmod \ell \in \{\ell - c, \dots, \ell - 1\}\}` (the last :math:`c`
  positions of every window, the *summary* columns). With ``num_patterns = P > 1`` head ``h``
  uses the summary slot shifted left by :math:`c \cdot (h \bmod P)`.

Both are causal by default (intersected with :math:`j \le i`). ``factorized=True`` gives the
two-head factorisation of the paper: even heads use :math:`A^{(1)}`, odd heads :math:`A^{(2)}`;
without it every head uses the union.
"""
from __future__ import annotations

import numbers

import numpy as np

from .base import DiagonalPattern, NamedPattern, Pattern, PartitionPattern, RowColPattern, check_int, causal, intersection, \
    lookup, per_head, union


class _StridedLocal(DiagonalPattern):
    def __init__(self, stride, causal):
        self.stride, self.causal = stride, causal

    def _pred(self, h, d):
        return ((d >= 0) & (d < self.stride)) if self.causal else ((d > -self.stride) & (d < self.stride))

    def _name(self):
        return "strided_local"

    def _params(self):
        return {"stride": self.stride, "causal": self.causal}


class _StridedColumns(DiagonalPattern):
    def __init__(self, stride, causal):
        self.stride, self.causal = stride, causal

    def _pred(self, h, d):
        hit = d % self.stride == 0
        return (hit & (d >= 0)) if self.causal else hit

    def _name(self):
        return "strided_every"

    def _params(self):
        return {"stride": self.stride, "causal": self.causal}


class _Summary(RowColPattern):
    """Columns ``j`` with ``j mod stride`` in head h's summary slot."""

    def __init__(self, stride, c, num_patterns):
        self.stride, self.c, self.num_patterns = stride, c, num_patterns
        self.n_heads = num_patterns if num_patterns > 1 else None
        self._starts = np.array([stride - c * (1 + p) for p in range(num_patterns)], dtype=np.int64)

    def _col(self, h, j):
        start = int(self._starts[h % self.num_patterns]) if isinstance(h, numbers.Integral) else lookup(
            self._starts, h % self.num_patterns)
        r = j % self.stride
        return (r >= start) & (r < start + self.c)

    def _name(self):
        return "summary_columns"

    def _params(self):
        return {"stride": self.stride, "c": self.c, "num_patterns": self.num_patterns}


def strided(stride: int, causal: bool = True, factorized: bool = False) -> Pattern:
    """Sparse Transformer strided pattern with stride ``stride`` (see module docstring).

    Defined in Chapter 3 (Exercise 3.1).
    """
    stride = check_int("stride", stride, 1)
    local, every = _StridedLocal(stride, causal), _StridedColumns(stride, causal)
    inner = per_head([local, every]) if factorized else union(local, every)
    return NamedPattern(inner, "strided", {"stride": stride, "causal": causal, "factorized": factorized})


def fixed(stride: int, c: int = 1, causal: bool = True, num_patterns: int = 1, factorized: bool = False) -> Pattern:
    """Sparse Transformer fixed pattern: same window plus ``c`` summary columns per window.

    Defined in Chapter 3 (Exercise 3.2).
    """
    stride = check_int("stride", stride, 1)
    c = check_int("c", c, 1)
    num_patterns = check_int("num_patterns", num_patterns, 1)
    if c * num_patterns > stride:
        raise ValueError(f"`c` * `num_patterns` = {c * num_patterns} summary columns do not fit in a window of "
                         f"`stride`={stride}")
    window, summary = PartitionPattern(stride), _Summary(stride, c, num_patterns)
    if factorized:
        if num_patterns > 1:
            raise ValueError("`factorized=True` needs `num_patterns=1` (heads already alternate window/summary)")
        inner = per_head([window, summary])
    else:
        inner = union(window, summary)
    if causal:
        inner = intersection(inner, _causal())
    return NamedPattern(inner, "fixed", {"stride": stride, "c": c, "causal": causal, "num_patterns": num_patterns,
                                   "factorized": factorized})


_causal = causal
