# Generated from solutions/ch06_content/exercise.py by scripts/make_stubs.py.
# This copy is yours: fill in the functions and edit it freely
# (running scripts/make_stubs.py again overwrites it).
"""Chapter 6 -- Content-based sparsity: top-k, routing, learned masks and Native Sparse Attention.

Fill in each function, then grade it:

    python -m sparse_core grade --chapter 6

Shapes use the course notation: ``n_q`` queries, ``n_k`` keys, head dimension ``d``, value
dimension ``d_v``; leading ``...`` dimensions (batch, heads) broadcast as in numpy. Masks are
boolean with ``True`` = may attend; ``causal`` keeps key ``j <= `` query ``i`` (top-left aligned).
Work in numpy; every function receives and returns numpy arrays.
Float inputs may have any precision, float16 included: compute and return float64.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = [
    "topk_mask",
    "topk_attention",
    "kmeans_route",
    "routing_mask",
    "row_entropy",
    "top_mass",
    "l1_gate_penalty",
    "nsa_select_blocks",
]


def topk_mask(scores: np.ndarray, k: int, causal: bool = False) -> np.ndarray:
    """Exercise 6.1 -- the top-k mask: each query keeps its ``k`` largest scores.

    Args:
        scores: float array ``[..., n_q, n_k]`` (no NaN).
        k: keys kept per query, ``>= 1``.
        causal: only keys ``j <= i`` compete; a query with fewer than ``k`` of them keeps
            them all.

    Returns:
        bool array ``[..., n_q, n_k]``, ``True`` at the ``min(k, allowed)`` largest allowed
        scores of each row. Ties go to the **smaller key index** (the order of a stable sort
        by descending score).

    Example:
        >>> topk_mask(np.array([[1.0, 3.0, 3.0, 2.0]]), 2)
        array([[False,  True,  True, False]])
        >>> topk_mask(np.array([[5.0, 5.0, 5.0]]), 1)          # a tie: the smaller index wins
        array([[ True, False, False]])
        >>> topk_mask(np.array([[0.0, 9.0], [1.0, 0.0]]), 2, causal=True)
        array([[ True, False],
               [ True,  True]])

    Hint: roughly 8 lines. ``np.argsort(-s, kind="stable")`` keeps ties in index order; set the
    scores of forbidden keys to ``-inf`` first and remove them from the result afterwards.
    """
    raise NotImplementedError("Exercise 6.1: topk_mask")


def topk_attention(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    top_k: int,
    causal: bool = False,
    scale: float | None = None,
) -> np.ndarray:
    """Exercise 6.2 -- top-k attention: softmax over each query's ``top_k`` best keys only.

    Args:
        q: ``[..., n_q, d]``; k: ``[..., n_k, d]``; v: ``[..., n_k, d_v]``.
        top_k: keys kept per query, ``>= 1``.
        causal: keys ``j > i`` are never kept (and do not compete).
        scale: score multiplier, ``1/sqrt(d)`` when None.

    Returns:
        float64 ``[..., n_q, d_v]``: ``softmax_S(s) v`` with ``s = scale * q k^T`` and ``S`` the
        mask of Exercise 6.1 applied to ``s`` (ties to the smaller key index).

    Example:
        >>> q = np.array([[1.0, 0.0]]); k = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
        >>> v = np.array([[10.0], [20.0], [30.0]])
        >>> topk_attention(q, k, v, top_k=1)                 # only key 0 survives
        array([[10.]])

    Hint: roughly 6 lines, using your ``topk_mask`` and a masked softmax.
    """
    raise NotImplementedError("Exercise 6.2: topk_attention")


def kmeans_route(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Exercise 6.3 -- route each vector to its nearest centroid on the unit sphere.

    Routing attention compares directions, not lengths: both the vectors and the centroids are
    normalised to unit length, and each vector goes to the centroid of largest cosine
    similarity.

    Args:
        x: float ``[..., n, d]`` (queries or keys; no zero rows).
        centroids: float ``[C, d]`` (shared by all leading indices; no zero rows).

    Returns:
        integer array ``[..., n]`` of cluster ids in ``0 .. C-1``; ties go to the smaller id.

    Example:
        >>> cent = np.array([[1.0, 0.0], [0.0, 1.0]])
        >>> kmeans_route(np.array([[3.0, 1.0], [0.1, 0.2], [-1.0, 5.0]]), cent)
        array([0, 1, 1])
        >>> kmeans_route(np.array([[1.0, 0.0]]), np.array([[5.0, 0.0], [0.1, 0.0]]))  # cosine, not dot
        array([0])

    Hint: roughly 4 lines.
    """
    raise NotImplementedError("Exercise 6.3: kmeans_route")


def routing_mask(q_ids: np.ndarray, k_ids: np.ndarray, causal: bool = False) -> np.ndarray:
    """Exercise 6.4 -- the routing mask: a query sees the keys of its own cluster.

    Args:
        q_ids: integer ``[..., n_q]``, the cluster of each query.
        k_ids: integer ``[..., n_k]``, the cluster of each key (leading dims broadcast with
            ``q_ids``).
        causal: also require ``j <= i``.

    Returns:
        bool ``[..., n_q, n_k]``: ``True`` where ``q_ids[i] == k_ids[j]`` (and ``j <= i``).

    Example:
        >>> routing_mask(np.array([0, 1, 0]), np.array([0, 1, 0]), causal=True)
        array([[ True, False, False],
               [False,  True, False],
               [ True, False,  True]])

    Hint: roughly 4 lines; broadcast ``[..., n_q, 1]`` against ``[..., 1, n_k]``.
    """
    raise NotImplementedError("Exercise 6.4: routing_mask")


def row_entropy(p: np.ndarray) -> np.ndarray:
    """Exercise 6.5 -- the entropy of each attention row, in nats.

    .. math:: H(p_{i\\cdot}) = -\\sum_j p_{ij} \\log p_{ij}, \\qquad 0 \\log 0 = 0 .

    Args:
        p: float ``[..., n_k]``, non-negative rows (attention probabilities; a fully masked
            row is all zeros and has entropy 0).

    Returns:
        float64 ``[...]``: one entropy per row, natural logarithm (nats), never NaN.

    Example:
        >>> row_entropy(np.array([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]]))
        array([0.69314718, 0.        ])

    Hint: roughly 3 lines. ``np.log(0)`` is ``-inf`` and ``0 * -inf`` is NaN: take the log
    only where ``p > 0``.
    """
    raise NotImplementedError("Exercise 6.5: row_entropy")


def top_mass(p: np.ndarray, fraction: float, mask: np.ndarray | None = None) -> np.ndarray:
    """Exercise 6.6 -- how much of each row's mass its largest keys hold.

    A row with ``m`` allowed keys keeps ``r = ceil(fraction * m)`` of them, with ``fraction``
    read as the decimal it is written as (so at least one key when ``m >= 1``). The result is
    the sum of the ``r`` largest ``p`` of the row among the allowed keys; a row with no allowed
    key gives 0.

    Args:
        p: float ``[..., n_k]``, non-negative rows (attention probabilities).
        fraction: in ``(0, 1]``, e.g. 0.1 for "the top 10% of keys".
        mask: optional bool, broadcastable to ``p``; ``True`` = the key is allowed (counts in
            ``m``). None: every key is allowed, ``m = n_k``.

    Returns:
        float64 ``[...]``.

    Example:
        >>> p = np.array([[0.1, 0.4, 0.2, 0.3]])
        >>> top_mass(p, 0.25), top_mass(p, 0.3)              # ceil(1.0) = 1 key; ceil(1.2) = 2 keys
        (array([0.4]), array([0.7]))
        >>> top_mass(np.array([[1.0, 0.0, 0.0]]), 0.5, mask=np.array([[True, False, False]]))
        array([1.])

    Hint: roughly 7 lines. Sort each row in descending order (masked keys last), then sum the
    entries whose rank is below that row's ``r``. Careful: ``0.07 * 100`` is
    ``7.000000000000001`` in floating point, so round ``fraction * m`` (to 9 decimals, say)
    before the ceiling.
    """
    raise NotImplementedError("Exercise 6.6: top_mass")


def l1_gate_penalty(gates: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Exercise 6.7 -- the L1 sparsity penalty of a learned pair gate.

    .. math:: \\Omega(g) = \\frac{1}{|S|} \\sum_{(i, j) \\in S} |g_{ij}| ,

    the mean absolute gate over the allowed pairs ``S`` of *all* rows, heads and batches
    together (one number). ``lambda * Omega`` is added to the training loss.

    Args:
        gates: float ``[..., n_q, n_k]`` (sigmoid outputs lie in (0, 1); any real value is
            accepted and counts as ``|g|``).
        mask: optional bool broadcastable to ``gates``; ``True`` = the pair is allowed. None:
            every pair.

    Returns:
        a Python ``float``; ``0.0`` when no pair is allowed.

    Example:
        >>> g = np.array([[0.9, 0.1], [0.5, 0.3]])
        >>> l1_gate_penalty(g)                                   # (0.9 + 0.1 + 0.5 + 0.3) / 4
        0.45
        >>> l1_gate_penalty(g, mask=np.array([[True, False], [True, True]]))   # (0.9 + 0.5 + 0.3) / 3
        0.5666666666666667

    Hint: roughly 5 lines.
    """
    raise NotImplementedError("Exercise 6.7: l1_gate_penalty")


def nsa_select_blocks(
    block_scores: np.ndarray,
    n_select: int,
    block_size: int,
    causal: bool = False,
) -> np.ndarray:
    """Exercise 6.8 -- Native Sparse Attention's block selection.

    Keys are cut into blocks ``beta_b = {bB, ..., bB + B - 1}`` of ``block_size`` ``B``;
    ``block_scores[..., i, b]`` is the importance of block ``b`` for query ``i`` (in NSA, the
    compressed branch's attention probabilities). Each query keeps ``n_select`` blocks:

    * not causal: the ``n_select`` highest-scoring blocks;
    * causal: only blocks that *start* at or before ``i`` (``bB <= i``) are candidates; the
      query's own block ``floor(i / B)`` is always kept (its compressed summary is not complete
      yet, so its score says nothing); the other ``n_select - 1`` are the highest-scoring
      remaining candidates. A query with fewer candidates keeps them all.

    Ties go to the smaller block index.

    Args:
        block_scores: float ``[..., n_q, n_blocks]`` (no NaN); query ``i`` is at position ``i``.
        n_select: blocks kept per query, ``>= 1``.
        block_size: ``B >= 1``.
        causal: as above.

    Returns:
        bool ``[..., n_q, n_blocks]``, ``True`` at the selected blocks.

    Example:
        >>> sc = np.array([[0.1, 0.7, 0.2]] * 6)               # 6 queries, 3 blocks of B = 2
        >>> nsa_select_blocks(sc, 2, 2).astype(int)[0]
        array([0, 1, 1])
        >>> nsa_select_blocks(sc, 2, 2, causal=True).astype(int)
        array([[1, 0, 0],
               [1, 0, 0],
               [1, 1, 0],
               [1, 1, 0],
               [0, 1, 1],
               [0, 1, 1]])

    Hint: roughly 10 lines: give the own block score ``+inf`` and non-candidates ``-inf``,
    take the top ``n_select`` by a stable sort, then drop the non-candidates.
    """
    raise NotImplementedError("Exercise 6.8: nsa_select_blocks")
