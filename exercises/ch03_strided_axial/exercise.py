# Generated from solutions/ch03_strided_axial/exercise.py by scripts/make_stubs.py.
# This copy is yours: fill in the functions and edit it freely
# (running scripts/make_stubs.py again overwrites it).
"""Chapter 3 -- Strided, fixed and axial attention (Sparse Transformer).

Fill in each function, then grade it:

    python -m sparse_core grade --chapter 3

Masks are boolean numpy arrays, ``True`` = *may attend*, rows are queries ``i`` and columns
keys ``j``; ``causal`` keeps ``j <= i``. Indices start at 0. A factorized pattern is returned
as its heads stacked on a leading axis: ``[2, n, n]``, head 0 then head 1.
Work in numpy; build masks from index arithmetic (``np.arange`` and broadcasting), no loops
over pairs needed.
"""
from __future__ import annotations

import numpy as np

__all__ = [
    "strided_mask",
    "fixed_mask",
    "reachable_in_two_hops",
    "axial_masks",
    "strided_pair_count",
]


def strided_mask(n: int, stride: int, causal: bool = True) -> np.ndarray:
    """Exercise 3.1 -- the Sparse Transformer's strided pattern, as its two heads.

    With ``l = stride`` and the offset ``d = i - j``:

    * head 0 (local): the previous ``l`` positions, ``0 <= d < l``; without ``causal`` the
      symmetric band ``|d| < l``;
    * head 1 (strided): every ``l``-th position, ``d mod l == 0``; with ``causal`` also
      ``d >= 0``.

    Args:
        n: sequence length (``n_q = n_k = n``), ``>= 0``.
        stride: the stride ``l``, ``>= 1``.
        causal: keep only ``j <= i``.

    Returns:
        bool array ``[2, n, n]``: ``out[0]`` the local head, ``out[1]`` the strided head.
        Their union ``out.any(axis=0)`` is the (unfactorized) strided pattern.

    Example:
        >>> m = strided_mask(5, 2)
        >>> m[0].astype(int)              # local: i - j in {0, 1}
        array([[1, 0, 0, 0, 0],
               [1, 1, 0, 0, 0],
               [0, 1, 1, 0, 0],
               [0, 0, 1, 1, 0],
               [0, 0, 0, 1, 1]])
        >>> m[1].astype(int)              # strided: i - j in {0, 2, 4}
        array([[1, 0, 0, 0, 0],
               [0, 1, 0, 0, 0],
               [1, 0, 1, 0, 0],
               [0, 1, 0, 1, 0],
               [1, 0, 1, 0, 1]])

    Hint: roughly 5 lines. Build ``d = i - j`` once with broadcasting; the strided head tests
    the *offset* ``i - j``, not the key index ``j``.
    """
    raise NotImplementedError("Exercise 3.1: strided_mask")


def fixed_mask(n: int, stride: int, c: int, causal: bool = True) -> np.ndarray:
    """Exercise 3.2 -- the Sparse Transformer's fixed pattern, as its two heads.

    The sequence is cut into windows of ``l = stride`` positions (``0..l-1``, ``l..2l-1``, ...;
    the last may be shorter). With ``c`` summary columns per window:

    * head 0 (window): ``floor(j / l) == floor(i / l)``, the same window;
    * head 1 (summary): ``j mod l >= l - c``, the **last** ``c`` positions of every window.

    With ``causal`` both heads also require ``j <= i`` (so early rows of head 1 can be empty).

    Args:
        n: sequence length, ``>= 0``.
        stride: window length ``l``, ``>= 1``.
        c: summary columns per window, ``1 <= c <= l``.
        causal: keep only ``j <= i``.

    Returns:
        bool array ``[2, n, n]``: ``out[0]`` the window head, ``out[1]`` the summary head.

    Example:
        >>> m = fixed_mask(6, 3, 1)
        >>> m[0].astype(int)              # windows {0,1,2}, {3,4,5}
        array([[1, 0, 0, 0, 0, 0],
               [1, 1, 0, 0, 0, 0],
               [1, 1, 1, 0, 0, 0],
               [0, 0, 0, 1, 0, 0],
               [0, 0, 0, 1, 1, 0],
               [0, 0, 0, 1, 1, 1]])
        >>> m[1].astype(int)              # summary columns 2 and 5 (j mod 3 == 2)
        array([[0, 0, 0, 0, 0, 0],
               [0, 0, 0, 0, 0, 0],
               [0, 0, 1, 0, 0, 0],
               [0, 0, 1, 0, 0, 0],
               [0, 0, 1, 0, 0, 0],
               [0, 0, 1, 0, 0, 1]])

    Hint: roughly 6 lines. Rows 0 and 1 of the summary head are fully masked: that is
    correct, not a bug.
    """
    raise NotImplementedError("Exercise 3.2: fixed_mask")


def reachable_in_two_hops(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Exercise 3.3 -- which tokens can pass information to which in two attention layers.

    Layer 1 attends with the mask ``first``, then layer 2 with ``second``. Attention from
    query ``k`` to key ``j`` moves information from token ``j`` to position ``k``, so ``j``
    reaches ``i`` in two hops when some ``k`` has ``first[k, j]`` (hop 1: ``k`` reads ``j``)
    and ``second[i, k]`` (hop 2: ``i`` reads ``k``):

        out[i, j] = any_k  second[i, k] and first[k, j]

    No residual connection is added: a pair counts only through a path of two attention
    hops (add the diagonal to a mask yourself to model the residual).

    Args:
        first: bool ``[m, n]``, the mask of layer 1 (``m`` queries over ``n`` keys).
        second: bool ``[p, m]``, the mask of layer 2 (its keys are layer 1's ``m`` outputs).

    Returns:
        bool ``[p, n]``.

    Example:
        >>> first = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 1]], bool)   # 1 reads 0
        >>> second = np.array([[1, 0, 0], [0, 1, 0], [0, 1, 1]], bool)  # 2 reads 1
        >>> reachable_in_two_hops(first, second).astype(int)         # so 2 gets 0 via 1
        array([[1, 0, 0],
               [1, 1, 0],
               [1, 1, 1]])

    Hint: roughly 2 lines: a matrix product of integer copies, then ``> 0``. Mind the order.
    """
    raise NotImplementedError("Exercise 3.3: reachable_in_two_hops")


def axial_masks(height: int, width: int, causal: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Exercise 3.4 -- row and column attention on a ``height x width`` image grid.

    Pixels are flattened row by row (raster order): token ``t`` is pixel
    ``(row, col) = (t // width, t % width)``, ``n = height * width``.

    * the row mask keeps pairs in the same row: ``i // width == j // width``;
    * the column mask keeps pairs in the same column: ``i % width == j % width``.

    With ``causal`` both also require ``j <= i`` (raster order).

    Args:
        height: rows ``H`` of the grid, ``>= 1``; width: columns ``W``, ``>= 1``.
        causal: keep only ``j <= i``.

    Returns:
        ``(row_mask, col_mask)``, each bool ``[n, n]`` with ``n = height * width``.

    Example:
        >>> row, col = axial_masks(2, 3)          # pixels 0 1 2 / 3 4 5
        >>> row[4].astype(int), col[4].astype(int)   # pixel 4 = (1, 1)
        (array([0, 0, 0, 1, 1, 1]), array([0, 1, 0, 0, 1, 0]))

    Hint: roughly 6 lines.
    """
    raise NotImplementedError("Exercise 3.4: axial_masks")


def strided_pair_count(n: int, stride: int, causal: bool = True) -> int:
    """Exercise 3.5 -- count the pairs of the strided pattern without building a mask.

    Count ``|S|``, the pairs ``(i, j)`` allowed by the *union* of the two heads of Exercise
    3.1 (local or strided) for length ``n`` and stride ``l``. A pair both heads allow is
    counted once. It must work for ``n`` in the millions: O(n) time at most, no
    ``n x n`` array.

    Args:
        n: sequence length, ``>= 0``; stride: ``l >= 1``; causal: keep only ``j <= i``.

    Returns:
        a Python ``int``.

    Example:
        >>> strided_pair_count(5, 2)      # 9 local + 9 strided - 5 on both (the diagonal)
        13
        >>> strided_pair_count(5, 2, causal=False)
        21

    Hint: roughly 8 lines: per query, the local head keeps ``min(i + 1, l)`` keys and the
    strided head ``i // l + 1`` (causal); the two share only ``d = 0``.
    """
    raise NotImplementedError("Exercise 3.5: strided_pair_count")
