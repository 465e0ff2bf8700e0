# Generated from solutions/ch05_bigbird_longformer/exercise.py by scripts/make_stubs.py.
# This copy is yours: fill in the functions and edit it freely
# (running scripts/make_stubs.py again overwrites it).
"""Chapter 5 -- BigBird and Longformer.

Fill in each function, then grade it:

    python -m sparse_core grade --chapter 5

Masks are boolean numpy arrays with ``True`` = *may attend* (row = query, column = key).
BigBird works on *blocks*: ``n_blocks`` query blocks by ``n_blocks`` key blocks. Indices start
at 0. Work in numpy; every function receives and returns numpy arrays or Python ints.
Float inputs may have any precision, float16 included: compute and return float64.
"""
from __future__ import annotations

import numpy as np

__all__ = [
    "bigbird_layout",
    "longformer_mask",
    "graph_diameter",
    "sample_random_blocks",
    "block_table_attention",
]


def bigbird_layout(n_blocks: int, plan: np.ndarray, window_blocks: int = 3, global_blocks: int = 1) -> np.ndarray:
    """Exercise 5.1 -- the BigBird block layout for a given random plan.

    Query block ``a`` keeps key block ``b`` when

    * ``|a - b| <= window_blocks // 2`` (the sliding window; 3 blocks = the block itself and one
      neighbour on each side), or
    * ``a`` or ``b`` is global: one of the first ``global_blocks`` or the last ``global_blocks``
      blocks (global rows see everything, global columns are seen by everything), or
    * ``a`` is not global and ``b`` is in ``plan[a]`` (its random blocks; ``-1`` = unused slot).

    Args:
        n_blocks: number of blocks ``nb >= 1``.
        plan: int array ``[nb, r]`` of key-block indices in ``[0, nb)`` or ``-1``.
        window_blocks: odd window width in blocks.
        global_blocks: global blocks at *each* end (``2 * global_blocks <= nb``).

    Returns:
        bool array ``[nb, nb]``.

    Example:
        >>> plan = np.array([[-1], [4], [-1], [0], [-1], [-1]])
        >>> bigbird_layout(6, plan, window_blocks=3, global_blocks=0).astype(int)
        array([[1, 1, 0, 0, 0, 0],
               [1, 1, 1, 0, 1, 0],
               [0, 1, 1, 1, 0, 0],
               [1, 0, 1, 1, 1, 0],
               [0, 0, 0, 1, 1, 1],
               [0, 0, 0, 0, 1, 1]])

    Hint: roughly 8 lines. Careful: ``-1`` is a valid numpy index (the last block).
    """
    raise NotImplementedError("Exercise 5.1: bigbird_layout")


def longformer_mask(n: int, window: int, global_idx, causal: bool = False) -> np.ndarray:
    """Exercise 5.2 -- the Longformer token mask.

    Keep ``(i, j)`` when ``|i - j| <= window`` (a sliding window of half-width ``window``), or
    ``i`` is a global token, or ``j`` is a global token. With ``causal=True`` keep only the pairs
    of that set with ``j <= i`` (a query never reads a later key, global or not).

    Args:
        n: sequence length.
        window: half-width ``w >= 0`` (``w = 0`` keeps the diagonal).
        global_idx: sequence of global positions in ``[0, n)`` (may be empty, may repeat).
        causal: restrict to ``j <= i``.

    Returns:
        bool array ``[n, n]``.

    Example:
        >>> longformer_mask(5, 1, [0]).astype(int)
        array([[1, 1, 1, 1, 1],
               [1, 1, 1, 0, 0],
               [1, 1, 1, 1, 0],
               [1, 0, 1, 1, 1],
               [1, 0, 0, 1, 1]])

    Hint: roughly 6 lines.
    """
    raise NotImplementedError("Exercise 5.2: longformer_mask")


def graph_diameter(mask: np.ndarray) -> int:
    """Exercise 5.3 -- the diameter of the attention graph.

    The mask is a directed graph: one layer moves information from ``j`` to ``i`` when
    ``mask[i, j]`` (and every position keeps its own information: the residual connection, so
    the diagonal counts as allowed whatever ``mask`` says). The distance ``d(i, j)`` is the
    fewest layers after which information from ``j`` reaches ``i`` (``d(i, i) = 0``). The
    diameter is ``max d(i, j)`` over all ordered pairs -- and ``-1`` when some ``j`` never reaches
    some ``i`` (pairs that never connect are not ignored).

    Args:
        mask: bool ``[n, n]``, ``n >= 1``.

    Returns:
        a Python ``int`` (``-1`` when the graph is not strongly connected).

    Example:
        >>> graph_diameter(np.eye(4, dtype=bool) | np.eye(4, k=1, dtype=bool) | np.eye(4, k=-1, dtype=bool))
        3
        >>> graph_diameter(np.tril(np.ones((3, 3), dtype=bool)))   # causal: 2 never reaches 0
        -1

    Hint: roughly 12 lines: a breadth-first search from every position, following row ``i``'s
    allowed keys.
    """
    raise NotImplementedError("Exercise 5.3: graph_diameter")


def sample_random_blocks(n_blocks: int, r: int, seed=0, window_blocks: int = 3, global_blocks: int = 1) -> np.ndarray:
    """Exercise 5.4 -- draw BigBird's random blocks without collisions.

    For every non-global query block ``a`` draw ``r`` *distinct* key blocks uniformly at random
    among the *candidates*: blocks that are neither global (first or last ``global_blocks``) nor
    in ``a``'s window (``|a - b| <= window_blocks // 2``). If there are fewer than ``r``
    candidates take all of them (in random order) and fill the rest of the row with ``-1``.
    Global rows are all ``-1``. The draw must be reproducible: the same ``seed`` gives the same
    plan.

    Args:
        n_blocks: number of blocks ``nb``; r: random blocks per row (``>= 0``).
        seed: an int seed or a ``np.random.Generator``.
        window_blocks: odd window width in blocks; global_blocks: global blocks at each end.

    Returns:
        int array ``[nb, r]``: valid entries first in each row, ``-1`` after them.

    Example:
        >>> plan = sample_random_blocks(8, 2, seed=0)
        >>> plan.shape, plan[0].tolist(), plan[7].tolist()      # global rows are empty
        ((8, 2), [-1, -1], [-1, -1])
        >>> set(plan[3].tolist()) <= {1, 5, 6}                  # two of its 3 candidates
        True

    Hint: roughly 9 lines with ``rng.choice(candidates, size, replace=False)``.
    """
    raise NotImplementedError("Exercise 5.4: sample_random_blocks")


def block_table_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, table: np.ndarray,
                          block_size: int) -> np.ndarray:
    """Exercise 5.5 -- attention through a block table (the computation a BigBird kernel does).

    Query ``i`` may attend key ``j`` when ``table[i // block_size, j // block_size]``. Compute
    ``softmax(q k^T / sqrt(d))`` over the allowed keys only (stable: subtract the row maximum of
    the allowed scores) and multiply by ``v``; a query with no allowed key outputs zeros.

    Args:
        q: ``[..., n, d]``; k: ``[..., n, d]``; v: ``[..., n, d_v]`` (``n`` need not be a
            multiple of ``block_size``; the last block is shorter).
        table: bool ``[ceil(n / block_size), ceil(n / block_size)]`` (query block, key block).
        block_size: tokens per block.

    Returns:
        float64 ``[..., n, d_v]``.

    Example:
        >>> q = k = np.zeros((3, 2)); v = np.array([[1.0], [2.0], [6.0]])
        >>> block_table_attention(q, k, v, np.array([[True, False], [True, True]]), block_size=2)
        array([[1.5],
               [1.5],
               [3. ]])

    Hint: roughly 9 lines: expand the table to a token mask, then a masked softmax.
    """
    raise NotImplementedError("Exercise 5.5: block_table_attention")
