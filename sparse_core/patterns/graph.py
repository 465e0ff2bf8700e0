r"""The attention graph of a mask: degrees, distances, diameter, connectivity.

A boolean mask ``M [n, n]`` (``M[i, j]``: query ``i`` may read key ``j``) is a directed graph on
the ``n`` positions. One attention layer with its residual connection moves information from
``j`` to ``i`` when ``M[i, j]`` or ``i == j``, so

* ``distances(M)[i, j]`` is the fewest layers after which information from ``j`` can reach
  ``i``: the length of the shortest path ``i = u_0, u_1, ..., u_L = j`` with every
  ``M[u_t, u_{t+1}]`` (breadth-first search); 0 on the diagonal, -1 when ``j`` never reaches ``i``;
* ``diameter(M)`` is the largest of them, or -1 when some pair is never connected;
* ``is_connected(M)``: every position reaches every other one (strong connectivity).

All-pairs BFS runs bit-parallel (one frontier step is a boolean sparse-matrix product over
bit-packed rows, shared with :mod:`sparse_core.patterns.plots`), so ``n`` of a few thousand is
quick. No graph library is needed.
"""
from __future__ import annotations

import numpy as np

__all__ = ["as_graph", "degrees", "distances", "diameter", "is_connected"]

#: largest graph (positions) these dense all-pairs functions accept
MAX_GRAPH_N = 8192


def as_graph(mask) -> np.ndarray:
    """Check and return ``mask`` as a square bool array ``[n, n]`` (a ``[1, n, n]`` pattern mask is squeezed)."""
    m = np.asarray(mask)
    if m.ndim == 3 and m.shape[0] == 1:
        m = m[0]
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"`mask` must be a square boolean array [n, n], got shape {m.shape}")
    if m.dtype != np.bool_:
        raise ValueError(f"`mask` must be boolean (True = may attend), got dtype {m.dtype}")
    if m.shape[0] > MAX_GRAPH_N:
        raise ValueError(f"`mask` has n={m.shape[0]} positions; the all-pairs functions take at most {MAX_GRAPH_N}")
    return m


def degrees(mask) -> tuple[np.ndarray, np.ndarray]:
    """``(out_degree, in_degree)``, int64 ``[n]`` each: keys each query reads (row sums) and
    queries that read each key (column sums)."""
    m = as_graph(mask)
    return m.sum(axis=1).astype(np.int64), m.sum(axis=0).astype(np.int64)


def distances(mask) -> np.ndarray:
    """int32 ``[n, n]``: fewest layers for information from ``j`` to reach ``i`` (-1: never)."""
    from .plots import _pack, _Step

    m = as_graph(mask)
    n = m.shape[0]
    out = np.full((n, n), -1, dtype=np.int32)
    if n == 0:
        return out
    A = m.copy()
    np.fill_diagonal(A, True)
    step = _Step(A)
    np.fill_diagonal(out, 0)
    R = _pack(np.eye(n, dtype=bool))
    layer = 0
    while True:
        new = step(R)
        layer += 1
        changed = new & ~R
        r, c = np.nonzero(changed)
        if r.size == 0:
            return out
        bits = np.unpackbits(changed[r, c].view(np.uint8).reshape(-1, 8), axis=1, bitorder="little")
        k, b = np.nonzero(bits)
        out[r[k], c[k] * 64 + b] = layer
        R = new


def diameter(mask) -> int:
    """The largest distance between two positions, or -1 when some ``j`` never reaches some ``i``.

    A single position has diameter 0. (Pairs that never connect are *not* skipped: a graph in
    two pieces has no finite diameter.)
    """
    d = distances(mask)
    if d.size == 0:
        return 0
    return -1 if (d < 0).any() else int(d.max())


def is_connected(mask) -> bool:
    """True when information from every position can reach every position (strongly connected)."""
    return diameter(mask) >= 0
