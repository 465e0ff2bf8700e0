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
bit-packed rows), so ``n`` of a few thousand is quick. No graph library is needed.

The same machinery answers the course's reach questions (Chapters 2, 3 and 5): :func:`hops`,
:func:`reach` and :func:`receptive_field` of a pattern or a per-layer schedule of patterns
(:mod:`sparse_core.patterns.plots` draws them and re-exports these three).
"""
from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from .base import Pattern, check_int

__all__ = ["as_graph", "degrees", "distances", "diameter", "is_connected", "hops", "reach", "receptive_field",
           "adjacency", "pack_rows", "unpack_rows", "BitStep", "connected_fraction", "schedule", "pattern_heads",
           "check_pattern", "check_length", "MAX_DENSE_N", "MAX_FIELD_N"]

#: largest graph (positions) these dense all-pairs functions accept
MAX_GRAPH_N = 8192
#: largest sequence length for which a dense ``n x n`` picture or graph computation is allowed
MAX_DENSE_N = 4096
#: largest sequence length for :func:`receptive_field` of a single pattern (evaluated row by row)
MAX_FIELD_N = 16384
_BIT_STEP_BUDGET = 1 << 22  # uint64 words gathered at once in a bit-parallel propagation step


# ---------------------------------------------------------------------------- argument checks

def check_pattern(pattern: Any, name: str = "pattern") -> Pattern:
    if not isinstance(pattern, Pattern):
        raise ValueError(f"`{name}` must be a Pattern (e.g. sparse_core.patterns.sliding_window(4)), "
                         f"got {type(pattern).__name__}")
    return pattern


def schedule(pattern: Any) -> tuple[Pattern, ...]:
    """A Pattern, or a non-empty list of Patterns (layer l uses item (l - 1) % len), as a tuple."""
    if isinstance(pattern, Pattern):
        return (pattern,)
    if isinstance(pattern, (list, tuple)) and pattern:
        return tuple(check_pattern(p, "pattern (schedule item)") for p in pattern)
    raise ValueError("`pattern` must be a Pattern or a non-empty list of Patterns (a per-layer schedule), "
                     f"got {pattern!r}")


def check_length(name: str, n: Any, limit: int, what: str) -> int:
    n = check_int(name, n, 1)
    if n > limit:
        raise ValueError(f"`{name}`={n} is too large for {what} (at most {limit}: it needs {n} x {n} "
                         "arrays); use plot_layout / to_layout for long sequences")
    return n


def pattern_heads(pattern: Pattern, head: Any, n_heads: Any) -> tuple[int, list[int]]:
    """(number of heads to build, heads to use). ``head="all"`` uses every head."""
    H = n_heads if n_heads is not None else (pattern.n_heads or 1)
    H = pattern._check_heads(H)
    if isinstance(head, str):
        if head != "all":
            raise ValueError(f"`head` must be a head index or \"all\", got {head!r}")
        return H, list(range(H))
    if isinstance(head, bool) or not isinstance(head, numbers.Integral):
        raise ValueError(f"`head` must be a head index or \"all\", got {head!r}")
    if not 0 <= head < H:
        hint = "" if pattern.n_heads else " (pass n_heads=... to look at other heads of a pattern that takes any number)"
        raise ValueError(f"`head`={head} is out of range: the pattern has {H} head(s), valid heads are "
                         f"0..{H - 1}{hint}")
    return H, [int(head)]


# ---------------------------------------------------------------------------- bit-parallel reach

def adjacency(pattern: Pattern, n: int, head: Any, n_heads: Any) -> np.ndarray:
    """``A = mask | I`` of one head (or the union of all heads for ``head="all"``), bool [n, n]."""
    H, heads = pattern_heads(pattern, head, n_heads)
    dense = pattern.to_dense(n, n, H)
    A = dense[heads[0]] if len(heads) == 1 else dense[heads].any(axis=0)
    A = np.array(A, dtype=bool, copy=True)
    np.fill_diagonal(A, True)
    return A


def pack_rows(b: np.ndarray) -> np.ndarray:
    """bool [n, m] -> uint64 [n, ceil(m / 64)], bit c % 64 of word c // 64 = column c."""
    n, m = b.shape
    W = -(-m // 64)
    padded = np.zeros((n, W * 64), dtype=bool)
    padded[:, :m] = b
    return np.packbits(padded, axis=1, bitorder="little").view(np.uint64)


def unpack_rows(words: np.ndarray, m: int) -> np.ndarray:
    return np.unpackbits(words.view(np.uint8), axis=1, bitorder="little")[:, :m].astype(bool)


class BitStep:
    """One layer ``R -> A o R`` (boolean product) on bit-packed rows.

    Sparse adjacencies OR together the packed rows of each query's neighbours (cost ~ nnz(A) *
    n / 64 word operations); dense ones use a float32 matrix product thresholded at 0.5.
    """

    def __init__(self, A: np.ndarray):
        n = A.shape[0]
        self.n = n
        self.W = -(-n // 64)
        nnz = int(A.sum())
        self.sparse = nnz * 8 <= n * n
        if self.sparse:
            rows, cols = np.nonzero(A)  # every row has its diagonal, so no row is empty
            self.indices = cols
            self.indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=n))])
            budget = max(1, _BIT_STEP_BUDGET // self.W)
            self.chunks = []
            r0 = 0
            while r0 < n:
                r1 = int(np.searchsorted(self.indptr, self.indptr[r0] + budget, side="right")) - 1
                r1 = min(n, max(r1, r0 + 1))
                self.chunks.append((r0, r1, int(self.indptr[r0]), int(self.indptr[r1])))
                r0 = r1
        else:
            import torch

            self.matrix = torch.from_numpy(A.astype(np.float32))

    def __call__(self, R: np.ndarray) -> np.ndarray:
        if self.sparse:
            out = np.empty_like(R)
            for r0, r1, s0, s1 in self.chunks:
                out[r0:r1] = np.bitwise_or.reduceat(R[self.indices[s0:s1]], self.indptr[r0:r1] - s0, axis=0)
            return out
        import torch

        dense = torch.from_numpy(unpack_rows(R, self.n).astype(np.float32))
        return pack_rows((self.matrix @ dense).numpy() > 0.5)


def _hops(patterns: tuple[Pattern, ...], n: int, head: Any, n_heads: Any, max_layers: int | None) -> np.ndarray:
    steps = [BitStep(adjacency(p, n, head, n_heads)) for p in patterns]
    out = np.full((n, n), -1, dtype=np.int32)
    np.fill_diagonal(out, 0)
    R = pack_rows(np.eye(n, dtype=bool))
    reached = n
    quiet = 0  # consecutive layers that changed nothing; len(steps) of them = fixed point
    layer = 0
    limit = max_layers if max_layers is not None else None
    while (limit is None or layer < limit) and reached < n * n:
        new = steps[layer % len(steps)](R)
        layer += 1
        changed = new & ~R
        r, c = np.nonzero(changed)
        if r.size == 0:
            quiet += 1
            if quiet >= len(steps):
                break
            continue
        quiet = 0
        bits = np.unpackbits(changed[r, c].view(np.uint8).reshape(-1, 8), axis=1, bitorder="little")
        k, b = np.nonzero(bits)
        out[r[k], c[k] * 64 + b] = layer
        reached += k.size
        R = new
    return out


def hops(pattern, n: int, head: int | str = 0, max_layers: int | None = None, n_heads: int | None = None) -> np.ndarray:
    """int32 ``[n, n]``: the fewest layers after which information from ``j`` can reach ``i``.

    0 on the diagonal, -1 when ``j`` never reaches ``i`` (within ``max_layers`` layers if given,
    otherwise until nothing changes any more). ``head`` picks one head of the pattern, or "all"
    for the union of its heads in every layer; ``pattern`` may be a per-layer schedule (a list).
    Bit-parallel: ``n = 1024`` with a window of 1 (1023 layers) takes well under a second.

    Defined in Chapter 2 (used again in Chapter 3).
    """
    patterns = schedule(pattern)
    n = check_length("n", n, MAX_DENSE_N, "the dense attention graph")
    if max_layers is not None:
        max_layers = check_int("max_layers", max_layers, 0)
    return _hops(patterns, n, head, n_heads, max_layers)


def reach(pattern, n: int, layers: int, head: int | str = 0, n_heads: int | None = None) -> np.ndarray:
    """bool ``[n, n]``: ``R_L[i, j]`` = information from token ``j`` can reach position ``i``
    within ``layers`` layers (attention + residual, ``R_L = (mask | I)^L``).

    Defined in Chapter 2.
    """
    layers = check_int("layers", layers, 0)
    return hops(pattern, n, head, max_layers=layers, n_heads=n_heads) >= 0


def receptive_field(pattern, n: int, layers: int, position: int | None = None, head: int | str = 0,
                    n_heads: int | None = None) -> np.ndarray:
    """int64 ``[layers]``: how many tokens (itself included) can reach ``position`` (default the
    last token) after ``L = 1 .. layers`` layers.

    A single pattern is explored row by row from ``position`` (backwards along the attention
    graph, evaluating only the rows it needs), so ``n`` may go up to :data:`MAX_FIELD_N`; a
    schedule goes through :func:`hops` (``n`` up to :data:`MAX_DENSE_N`).

    Defined in Chapter 2.
    """
    patterns = schedule(pattern)
    layers = check_int("layers", layers, 1)
    limit = MAX_FIELD_N if len(patterns) == 1 else MAX_DENSE_N
    n = check_length("n", n, limit, "receptive_field")
    position = n - 1 if position is None else check_int("position", position, 0)
    if position >= n:
        raise ValueError(f"`position`={position} is out of range for n={n}")
    if len(patterns) > 1:
        row = hops(patterns, n, head, max_layers=layers, n_heads=n_heads)[position]
        counts = np.bincount(row[row >= 0], minlength=layers + 1)
        return np.cumsum(counts)[1:layers + 1].astype(np.int64)
    p = patterns[0]
    H, heads = pattern_heads(p, head, n_heads)
    p._check_lengths(n, n)
    keys = np.arange(n, dtype=np.int64)[None, :]
    seen = np.zeros(n, dtype=bool)
    seen[position] = True
    frontier = np.array([position], dtype=np.int64)
    rows_per_chunk = max(1, (1 << 22) // n)
    out = np.zeros(layers, dtype=np.int64)
    for L in range(layers):
        nxt = np.zeros(n, dtype=bool)
        for s in range(0, frontier.size, rows_per_chunk):
            q = frontier[s:s + rows_per_chunk, None]
            for h in heads:
                nxt |= np.asarray(p.mask_mod(0, h, q, keys), dtype=bool).any(axis=0)
        nxt &= ~seen
        seen |= nxt
        out[L] = int(seen.sum())
        frontier = np.nonzero(nxt)[0]
        if frontier.size == 0:
            out[L + 1:] = out[L]
            break
    return out


def connected_fraction(patterns, n, max_layers, head, n_heads) -> np.ndarray:
    h = _hops(patterns, n, head, n_heads, max_layers)
    counts = np.bincount(h[h >= 0].ravel(), minlength=max_layers + 1)[:max_layers + 1]
    return np.cumsum(counts) / float(n * n)


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
    queries that read each key (column sums).

    Defined in Chapter 5.
    """
    m = as_graph(mask)
    return m.sum(axis=1).astype(np.int64), m.sum(axis=0).astype(np.int64)


def distances(mask) -> np.ndarray:
    """int32 ``[n, n]``: fewest layers for information from ``j`` to reach ``i`` (-1: never).

    Defined in Chapter 5.
    """
    m = as_graph(mask)
    n = m.shape[0]
    out = np.full((n, n), -1, dtype=np.int32)
    if n == 0:
        return out
    A = m.copy()
    np.fill_diagonal(A, True)
    step = BitStep(A)
    np.fill_diagonal(out, 0)
    R = pack_rows(np.eye(n, dtype=bool))
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

    Defined in Chapter 5.
    """
    d = distances(mask)
    if d.size == 0:
        return 0
    return -1 if (d < 0).any() else int(d.max())


def is_connected(mask) -> bool:
    """True when information from every position can reach every position (strongly connected).

    Defined in Chapter 5.
    """
    return diameter(mask) >= 0
