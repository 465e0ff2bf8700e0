"""Chapter 7 -- Linformer: is attention low-rank?

Fill in each function, then grade it:

    python -m sparse_core grade --chapter 7

Shapes use the course notation: ``n`` positions, head dimension ``d``, value dimension
``d_v``; Linformer's projected length is ``k_proj`` (the paper's ``k``; the key array is
``k`` as everywhere else in the course). ``E`` and ``F`` are ``[seq_len, k_proj]`` and act
along the *sequence*: ``E^T K`` is ``[k_proj, d]``. Leading ``...`` dimensions (batch,
heads) broadcast as in numpy. Work in numpy.
Float inputs may have any precision, float16 included: compute and return float64.
"""
from __future__ import annotations

import numpy as np

__all__ = [
    "linformer_attention",
    "energy_rank",
    "best_rank_k",
    "jl_projection",
    "linformer_flops",
]


def linformer_attention(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    E: np.ndarray,
    F: np.ndarray,
    scale: float | None = None,
) -> np.ndarray:
    """Exercise 7.1 -- Linformer attention: project keys and values along the sequence.

    ``K_bar = E^T K`` and ``V_bar = F^T V`` squeeze the ``n`` keys and values into ``k_proj``
    rows; then ordinary softmax attention runs over those ``k_proj`` rows:

        out = softmax(scale * Q K_bar^T) V_bar,   softmax over the last axis (length k_proj).

    ``E`` and ``F`` are built for a maximum length ``seq_len >= n``; a shorter input uses their
    **first** ``n`` rows (as the ``linformer`` package does).

    Args:
        q: ``[..., n_q, d]``; k: ``[..., n, d]``; v: ``[..., n, d_v]``.
        E: ``[..., seq_len, k_proj]`` projection of the keys, ``seq_len >= n``; leading
            dimensions broadcast (one ``E`` for all heads, or one per head ``[h, seq_len, k_proj]``).
        F: ``[..., seq_len, k_proj]`` projection of the values (pass ``E`` again to share them).
        scale: multiplier of the scores, ``1/sqrt(d)`` when None.

    Returns:
        float64 ``[..., n_q, d_v]``.

    Example:
        >>> q = np.zeros((2, 1)); k = np.zeros((3, 1)); v = np.array([[0.0], [3.0], [6.0]])
        >>> E = F = np.array([[1.0, 0.0], [0.0, 0.5], [0.0, 0.5]])   # keep row 0, average rows 1, 2
        >>> linformer_attention(q, k, v, E, F)    # equal scores over the 2 projected rows
        array([[2.25],
               [2.25]])

    Hint: roughly 8 lines. Slice ``E[..., :n, :]`` before transposing its last two axes.
    """
    q = np.asarray(q, dtype=np.float64)
    k = np.asarray(k, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    n = k.shape[-2]
    E = np.asarray(E, dtype=np.float64)[..., :n, :]
    F = np.asarray(F, dtype=np.float64)[..., :n, :]
    if scale is None:
        scale = 1.0 / np.sqrt(q.shape[-1])
    k_bar = np.swapaxes(E, -1, -2) @ k
    v_bar = np.swapaxes(F, -1, -2) @ v
    s = (q @ np.swapaxes(k_bar, -1, -2)) * scale
    p = np.exp(s - s.max(axis=-1, keepdims=True))
    return (p / p.sum(axis=-1, keepdims=True)) @ v_bar


def energy_rank(singular_values: np.ndarray, fraction: float) -> int:
    """Exercise 7.2 -- how many singular values hold a given fraction of the energy.

    The *energy* of a matrix is its squared Frobenius norm, ``||P||_F^2 = sum_i s_i^2``. Return
    the smallest ``r`` such that the ``r`` largest singular values hold at least ``fraction``
    of it:

        r = min { r : s_(1)^2 + ... + s_(r)^2 >= fraction * sum_i s_i^2 },

    where ``s_(1) >= s_(2) >= ...`` are the values sorted in decreasing order. By Eckart-Young
    this is the smallest rank whose best approximation has relative squared error
    ``<= 1 - fraction``. All-zero input has rank 0.

    Args:
        singular_values: 1-D float array ``[m]`` of non-negative values, **in any order**.
        fraction: in ``(0, 1]``.

    Returns:
        a Python ``int`` in ``0 .. m``.

    Raises:
        ValueError: if ``fraction`` is not in ``(0, 1]``, or a value is negative.

    Example:
        >>> energy_rank(np.array([1.0, 3.0, 1.0, 1.0]), 0.75)   # energies 9, 1, 1, 1 of 12
        1
        >>> energy_rank(np.array([1.0, 3.0, 1.0, 1.0]), 0.9)    # cumulative 9, 10, 11, 12: 11 is the first >= 10.8
        3

    Hint: roughly 7 lines: sort, square, ``np.cumsum``, then ``np.searchsorted``.
    """
    s = np.asarray(singular_values, dtype=np.float64)
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"`fraction` must be in (0, 1], got {fraction!r}")
    if np.any(s < 0):
        raise ValueError("`singular_values` must be non-negative")
    energy = np.cumsum(np.sort(s)[::-1] ** 2)
    if energy.size == 0 or energy[-1] == 0:
        return 0
    return int(np.searchsorted(energy, fraction * energy[-1], side="left")) + 1


def best_rank_k(P: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exercise 7.3 -- the best rank-``k`` approximation (Eckart-Young) and its error.

    With the thin SVD ``P = U diag(s) V^T`` (``s`` decreasing), the rank-``k`` matrix closest
    to ``P`` in Frobenius (and spectral) norm keeps the ``k`` largest singular values:

        P_k = U[:, :k] diag(s[:k]) V^T[:k, :],     ||P - P_k||_F = sqrt(s_(k+1)^2 + s_(k+2)^2 + ...).

    Args:
        P: float ``[..., m, n]`` (a batch of matrices, e.g. ``[heads, n, n]`` attention matrices).
        k: rank to keep, ``>= 0``; ``k >= min(m, n)`` returns ``P`` itself with error 0.

    Returns:
        ``(P_k, error)``: ``P_k`` float64 ``[..., m, n]`` of rank at most ``k``, and ``error``
        float64 ``[...]``, the Frobenius norm ``||P - P_k||_F`` of each matrix (absolute, not
        relative; a single matrix gives a scalar).

    Example:
        >>> P_k, err = best_rank_k(np.diag([3.0, 2.0, 1.0]), 1)
        >>> P_k
        array([[3., 0., 0.],
               [0., 0., 0.],
               [0., 0., 0.]])
        >>> float(err)                            # sqrt(2^2 + 1^2)
        2.23606797749979

    Hint: roughly 5 lines with ``np.linalg.svd(P, full_matrices=False)``.
    """
    P = np.asarray(P, dtype=np.float64)
    U, s, Vh = np.linalg.svd(P, full_matrices=False)
    P_k = (U[..., :, :k] * s[..., None, :k]) @ Vh[..., :k, :]
    error = np.sqrt(np.sum(s[..., k:] ** 2, axis=-1))
    return P_k, error


def jl_projection(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """Exercise 7.4 -- a Johnson-Lindenstrauss projection matrix for Linformer.

    Return ``E`` of shape ``[n, k]`` with independent entries ``E_ij ~ N(0, 1/k)`` (mean 0,
    variance ``1/k``, standard deviation ``1/sqrt(k)``). Then for every fixed vector ``x`` of
    length ``n``, ``E^T x`` (length ``k``) has ``E ||E^T x||^2 = ||x||^2``: norms and inner
    products survive the projection up to a distortion that shrinks like ``1/sqrt(k)`` -- the
    lemma behind Linformer's Theorem 1. Draw every random number from ``rng``.

    Args:
        n: sequence length (rows), ``>= 1``.
        k: projected length (columns), ``>= 1``.
        rng: a ``numpy.random.Generator``; the same seed must give the same matrix.

    Returns:
        float64 ``[n, k]``.

    Example:
        >>> E = jl_projection(4096, 256, np.random.default_rng(0))
        >>> E.shape, round(float(E.var() * 256), 2)      # variance 1/k
        ((4096, 256), 1.0)

    Hint: roughly 1 line.
    """
    return rng.standard_normal((n, k)) / np.sqrt(k)


def linformer_flops(n: int, k: int, d: int, d_v: int | None = None, n_heads: int = 1, batch: int = 1) -> dict:
    """Exercise 7.5 -- count the matrix-product FLOPs of Linformer attention.

    Count, for ``batch * n_heads`` heads with ``n`` queries and ``n`` keys (a multiply-add
    counts 2 FLOPs; softmax, scaling and the Q/K/V projections of ``x`` are not counted):

    * ``"projection"``: ``E^T K`` (``[k, n] @ [n, d]``) and ``F^T V`` (``[k, n] @ [n, d_v]``);
    * ``"attention"``: ``Q K_bar^T`` (``[n, d] @ [d, k]``) and ``P V_bar`` (``[n, k] @ [k, d_v]``);
    * ``"total"``: their sum;
    * ``"dense"``: ordinary attention on the same heads, ``Q K^T`` and ``P V`` with ``n x n`` scores.

    Args:
        n: sequence length; k: projected length; d: head dimension of queries and keys;
        d_v: head dimension of values (``d`` when None); n_heads, batch: multiply every count.

    Returns:
        ``{"projection": int, "attention": int, "total": int, "dense": int}``.

    Example:
        >>> linformer_flops(8, 2, 4)
        {'projection': 256, 'attention': 256, 'total': 512, 'dense': 1024}

    Hint: roughly 6 lines.
    """
    d_v = d if d_v is None else d_v
    heads = batch * n_heads
    projection = heads * 2 * n * k * (d + d_v)
    attention = heads * 2 * n * k * (d + d_v)
    dense = heads * 2 * n * n * (d + d_v)
    return {"projection": projection, "attention": attention, "total": projection + attention, "dense": dense}
