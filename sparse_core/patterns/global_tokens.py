r"""Global tokens: a set :math:`G` of positions that attend to everything and that everything
attends to: :math:`(i, j)` is kept when :math:`i \in G` or :math:`j \in G`."""
from __future__ import annotations

import numbers

import numpy as np

from .base import Pattern, RowColPattern, is_tensor, lookup


def _indices(name: str, values) -> np.ndarray:
    try:
        arr = np.asarray(list(values) if not isinstance(values, np.ndarray) else values)
    except TypeError:
        raise ValueError(f"`{name}` must be a list of non-negative integers, got {values!r}") from None
    if arr.size and (arr.dtype.kind not in "iu" or arr.ndim != 1):
        raise ValueError(f"`{name}` must be a 1-D list of non-negative integers, got {values!r}")
    if arr.size and arr.min() < 0:
        raise ValueError(f"`{name}` must be non-negative, got {int(arr.min())}")
    return np.unique(arr.astype(np.int64))


class GlobalTokens(RowColPattern):
    def __init__(self, indices):
        self.indices = _indices("global_indices", indices)
        # membership table with one spare False slot for every index beyond the largest global one
        size = int(self.indices.max()) + 2 if self.indices.size else 1
        self._member = np.zeros(size, dtype=bool)
        self._member[self.indices] = True

    def _is_global(self, x):
        last = self._member.size - 1
        if is_tensor(x):
            return lookup(self._member, x.clamp(0, last))
        return self._member[np.minimum(x, last)]

    def _row(self, h, i):
        return self._is_global(i)

    def _col(self, h, j):
        return self._is_global(j)

    def _name(self):
        return "global_tokens"

    def _params(self):
        return {"global_indices": self.indices}


def global_tokens(global_indices) -> Pattern:
    """Positions in ``global_indices`` attend to, and are attended by, every position.

    An index at or beyond a sequence's length is simply not in that sequence: it applies once the
    sequence reaches it (a prompt shorter than the last global index prefills and generates, and
    from that position on the token is global), as Hugging Face's per-input global attention mask
    behaves for the positions an input has.

    Defined in Chapter 5.
    """
    return GlobalTokens(global_indices)
