# Generated from solutions/ch02_local/exercise.py by scripts/make_stubs.py.
# This copy is yours: fill in the functions and edit it freely
# (running scripts/make_stubs.py again overwrites it).
"""Chapter 2 -- Local attention: sliding window, dilated and block-local.

Fill in each function, then grade it:

    python -m sparse_core grade --chapter 2

Shapes use the course notation: ``n_q`` queries, ``n_k`` keys (``n`` when they are equal),
head dimension ``d``, value dimension ``d_v``; ``window`` is the half-width ``w`` of a window
(keep ``|i - j| <= w``), and masks are boolean with ``True`` = *may attend*. Work in numpy;
every function receives and returns numpy arrays.
Float inputs may have any precision, float16 included: compute and return float64.
"""
from __future__ import annotations

import numpy as np

__all__ = [
    "window_mask",
    "dilated_mask",
    "window_block_layout",
    "receptive_field",
    "local_attention",
]


def window_mask(n_q: int, n_k: int, window: int, causal: bool = False) -> np.ndarray:
    """Exercise 2.1 -- the sliding-window mask.

    Args:
        n_q: number of queries; n_k: number of keys (they may differ).
        window: half-width ``w >= 0`` of the window.
        causal: keep only keys at or before the query.

    Returns:
        bool array ``[n_q, n_k]``: ``True`` where ``|i - j| <= window``, or, with ``causal``,
        where ``i - window <= j <= i``. The diagonal ``j = i`` is always kept.

    Example:
        >>> window_mask(4, 4, 1).astype(int)
        array([[1, 1, 0, 0],
               [1, 1, 1, 0],
               [0, 1, 1, 1],
               [0, 0, 1, 1]])
        >>> window_mask(3, 4, 1, causal=True).astype(int)
        array([[1, 0, 0, 0],
               [1, 1, 0, 0],
               [0, 1, 1, 0]])

    Hint: roughly 3 lines, with ``offset = i - j`` built by broadcasting two ``np.arange``.
    """
    raise NotImplementedError("Exercise 2.1: window_mask")


def dilated_mask(n: int, window: int, dilation: int, causal: bool = False) -> np.ndarray:
    """Exercise 2.2 -- the dilated sliding-window mask.

    Query ``i`` attends keys ``j = i + k * dilation`` for ``k = -window, ..., window``
    (``k = -window, ..., 0`` with ``causal``), i.e. every ``dilation``-th key within reach
    ``window * dilation``. ``dilation = 1`` is the ordinary sliding window.

    Args:
        n: sequence length (queries = keys).
        window: number of steps ``w >= 0`` on each side.
        dilation: step ``delta >= 1`` between kept keys.
        causal: keep only keys at or before the query.

    Returns:
        bool array ``[n, n]``.

    Example:
        >>> dilated_mask(6, 1, 2).astype(int)
        array([[1, 0, 1, 0, 0, 0],
               [0, 1, 0, 1, 0, 0],
               [1, 0, 1, 0, 1, 0],
               [0, 1, 0, 1, 0, 1],
               [0, 0, 1, 0, 1, 0],
               [0, 0, 0, 1, 0, 1]])

    Hint: roughly 4 lines: the offset ``i - j`` must be a multiple of ``dilation`` *and*
    within ``window * dilation``.
    """
    raise NotImplementedError("Exercise 2.2: dilated_mask")


def window_block_layout(n: int, window: int, block_size: int, causal: bool = False) -> np.ndarray:
    """Exercise 2.3 -- the block layout of a sliding window, without an ``n x n`` mask.

    Cut the ``n x n`` attention matrix into ``block_size x block_size`` tiles (the last row and
    column of tiles are shorter when ``block_size`` does not divide ``n``). A tile is *kept*
    iff at least one of its pairs is allowed by ``window_mask(n, n, window, causal)``.

    Args:
        n: sequence length; window: half-width ``w >= 0``; block_size: tile edge ``B >= 1``.
        causal: the window keeps ``i - w <= j <= i`` only.

    Returns:
        bool array ``[n_blocks, n_blocks]`` with ``n_blocks = ceil(n / block_size)``;
        entry ``[qb, kb]`` is ``True`` iff query block ``qb`` must visit key block ``kb``.
        Memory must stay proportional to the number of blocks: never build the token mask.

    Example:
        >>> window_block_layout(10, 2, 4).astype(int)      # 3 blocks: rows 0-3, 4-7, 8-9
        array([[1, 1, 0],
               [1, 1, 1],
               [0, 1, 1]])

    Hint: roughly 4 lines. The closest pair of tiles ``qb`` and ``kb`` is
    ``(|qb - kb| - 1) * B + 1`` tokens apart when ``qb != kb``.
    """
    raise NotImplementedError("Exercise 2.3: window_block_layout")


def receptive_field(mask: np.ndarray, n_layers: int) -> np.ndarray:
    """Exercise 2.4 -- the receptive field of every position after ``n_layers`` layers.

    One layer of attention with a residual connection moves information from token ``j`` to
    position ``i`` when ``mask[i, j]`` or ``i == j``: its adjacency is ``A = mask | I``.
    After ``L`` layers ``j`` can influence ``i`` iff ``(A^L)[i, j]`` in boolean arithmetic
    (a path of at most ``L`` steps from ``j`` to ``i``).

    Args:
        mask: bool ``[n, n]``, ``mask[i, j]`` = query ``i`` may attend key ``j``. It need not
            contain the diagonal, be symmetric, or be a window.
        n_layers: ``L >= 0``.

    Returns:
        int64 ``[n]``: entry ``i`` is the number of tokens ``j`` (``i`` itself included) that
        can influence position ``i`` after ``L`` layers. ``L = 0`` gives all ones.

    Example:
        >>> m = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], dtype=bool)   # i attends i - 1
        >>> receptive_field(m, 1), receptive_field(m, 2)
        (array([1, 2, 2]), array([1, 2, 3]))

    Hint: roughly 7 lines. Keep the reach matrix boolean after every layer (integer or float
    matrix powers overflow for many layers), and stop early once it no longer changes.
    """
    raise NotImplementedError("Exercise 2.4: receptive_field")


def local_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, window: int,
                    causal: bool = False) -> np.ndarray:
    """Exercise 2.5 -- sliding-window attention in ``O(n * window)`` memory.

    Exactly ``attention(q, k, v, mask=window_mask(n, n, window, causal))`` with scale
    ``1/sqrt(d)``, but computing only the ``2 * window + 1`` (causal: ``window + 1``) scores
    of each query's band: never build an ``[n, n]`` array.

    Args:
        q: ``[..., n, d]``; k: ``[..., n, d]``; v: ``[..., n, d_v]`` (self-attention:
            queries and keys have the same length ``n``; leading dimensions are equal).
        window: half-width ``w >= 0``; causal: keep ``i - w <= j <= i`` only.

    Returns:
        float64 ``[..., n, d_v]``.

    Example:
        >>> q = np.zeros((3, 2)); k = np.zeros((3, 2)); v = np.array([[0.0], [3.0], [6.0]])
        >>> local_attention(q, k, v, window=1)       # equal scores: the mean over each band
        array([[1.5],
               [3. ],
               [4.5]])

    Hint: roughly 12 lines. For each offset ``o`` in the band, the key of query ``i`` is
    ``i + o``: zero-pad ``k`` and ``v`` by ``w`` rows on each side and slice, giving scores
    ``[..., n, band]``; mask the offsets that fall outside ``0..n-1``; then a stable softmax.
    """
    raise NotImplementedError("Exercise 2.5: local_attention")
