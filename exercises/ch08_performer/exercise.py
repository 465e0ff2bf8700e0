# Generated from solutions/ch08_performer/exercise.py by scripts/make_stubs.py.
# This copy is yours: fill in the functions and edit it freely
# (running scripts/make_stubs.py again overwrites it).
"""Chapter 8 -- Performer: softmax attention as a kernel, approximated with random features.

Fill in each function, then grade it:

    python -m sparse_core grade --chapter 8

Shapes use the course notation: ``n_q`` queries, ``n_k`` keys, head dimension ``d``, value
dimension ``d_v``, ``m`` random features; leading ``...`` dimensions (batch, heads) broadcast
as in numpy. A projection matrix ``w`` is ``[m, d]``: row ``w[r]`` is the direction of
feature ``r``. Work in numpy and float64; every function receives and returns numpy arrays.
"""
from __future__ import annotations

import numpy as np

__all__ = [
    "positive_features",
    "trig_features",
    "orthogonal_gaussian",
    "favor_attention",
    "causal_favor",
]


def positive_features(x: np.ndarray, w: np.ndarray, shift=0.0) -> np.ndarray:
    """Exercise 8.1 -- positive random features of the softmax kernel, with a shift.

    For each row ``x_i`` and feature ``r``:

        phi(x_i)_r = exp(w_r . x_i - |x_i|^2 / 2 - shift_ir) / sqrt(m)

    With ``shift = 0`` and Gaussian rows ``w_r ~ N(0, I_d)``, ``phi(x) . phi(y)`` is an
    unbiased estimate of ``exp(x . y)``. A shift is subtracted *inside* the exponent, so that
    huge exponents never overflow or underflow before they are shifted; Exercise 8.4 chooses
    shifts that cancel in the attention ratio.

    Args:
        x: ``[..., n, d]`` (already scaled: the kernel is ``exp(x . y)``, no ``1/sqrt(d)``).
        w: ``[m, d]`` projection matrix.
        shift: a number or an array broadcastable to ``[..., n, m]`` (for example one value
            per row ``[..., n, 1]`` or per feature ``[..., 1, m]``). Default 0.

    Returns:
        float64 ``[..., n, m]``, every entry ``> 0`` (or 0 after underflow).

    Example:
        >>> x = np.array([[1.0, 0.0]]); w = np.array([[0.0, 0.0], [2.0, 0.0]])
        >>> positive_features(x, w)          # exp([0 - 0.5, 2 - 0.5]) / sqrt(2)
        array([[0.42888194, 3.16903273]])
        >>> positive_features(x, w, shift=1.5)
        array([[0.0956965 , 0.70710678]])

    Hint: roughly 3 lines. Form the exponent ``x @ w.T - |x|^2 / 2 - shift`` first, then
    take ``exp`` once.
    """
    raise NotImplementedError("Exercise 8.1: positive_features")


def trig_features(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Exercise 8.2 -- trigonometric random features of the softmax kernel.

    For each row ``x_i`` (``m`` = number of rows of ``w``):

        phi(x_i) = exp(|x_i|^2 / 2) / sqrt(m) * [sin(w_1 . x_i), ..., sin(w_m . x_i),
                                                  cos(w_1 . x_i), ..., cos(w_m . x_i)]

    (the ``m`` sines first, then the ``m`` cosines). With Gaussian rows,
    ``phi(x) . phi(y) = exp((|x|^2 + |y|^2)/2) / m * sum_r cos(w_r . (x - y))`` is an
    unbiased estimate of ``exp(x . y)`` -- which can be negative.

    Args:
        x: ``[..., n, d]``; w: ``[m, d]``.

    Returns:
        float64 ``[..., n, 2 m]``.

    Example:
        >>> x = np.array([[1.0, 0.0]]); w = np.array([[np.pi / 2, 0.0]])
        >>> trig_features(x, w)              # e^0.5 * [sin(pi/2), cos(pi/2)]
        array([[1.64872127e+00, 1.00955061e-16]])

    Hint: roughly 4 lines.
    """
    raise NotImplementedError("Exercise 8.2: trig_features")


def orthogonal_gaussian(m: int, d: int, rng: np.random.Generator) -> np.ndarray:
    """Exercise 8.3 -- orthogonal random features: Gaussian rows made orthogonal in blocks.

    Build ``ceil(m / d)`` blocks of ``d`` rows each. For a block, draw a ``d x d`` matrix
    of independent ``N(0, 1)`` entries and orthonormalise it: ``q, r = np.linalg.qr(g)``,
    then multiply column ``j`` of ``q`` by the sign of ``r[j, j]``. That sign fix makes ``q``
    a uniformly random (Haar) orthogonal matrix; without it Householder QR returns a ``q``
    whose column ``j`` leans towards ``-e_j`` (``q[0, 0]`` is always negative), so the
    directions are not uniform and the kernel estimate is biased. Use the columns of the fixed
    ``q`` (the rows of ``q.T``) as the block's ``d`` orthonormal directions. Stack the blocks and keep the first ``m`` rows.
    Then give every row the length of an independent Gaussian vector: multiply row ``r`` by
    ``|g_r|`` with ``g_r ~ N(0, I_d)``, so each row has a chi-distributed norm (``d``
    degrees of freedom) -- marginally every row is exactly a ``N(0, I_d)`` vector, but rows
    of one block are orthogonal.

    Args:
        m: number of features (rows), ``>= 1``; may be smaller or larger than ``d``, and
            need not be a multiple of it.
        d: dimension, ``>= 1``.
        rng: a ``numpy.random.Generator``; draw every random number from it (same seed, same
            matrix).

    Returns:
        float64 ``[m, d]``: rows ``b*d .. b*d + d - 1`` (block ``b``) are pairwise
        orthogonal; different blocks are independent.

    Example:
        >>> w = orthogonal_gaussian(5, 2, np.random.default_rng(0))
        >>> w.shape, bool(abs(w[0] @ w[1]) < 1e-12), bool(abs(w[2] @ w[3]) < 1e-12)
        ((5, 2), True, True)

    Hint: roughly 8 lines. ``q * np.sign(np.diag(r))`` scales the columns.
    """
    raise NotImplementedError("Exercise 8.3: orthogonal_gaussian")


def favor_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, w: np.ndarray, scale: float | None = None) -> np.ndarray:
    """Exercise 8.4 -- FAVOR+ attention (non-causal), linear in the sequence length.

    With ``x_i = sqrt(scale) q_i`` and ``y_j = sqrt(scale) k_j`` (so ``x_i . y_j`` is the
    attention score; for the default scale ``1/sqrt(d)`` that multiplies q and k by
    ``d**-0.25``), and ``phi`` the positive features of Exercise 8.1:

        out_i = sum_j (phi(x_i) . phi(y_j)) v_j  /  sum_j phi(x_i) . phi(y_j)

    computed as ``phi(X) (phi(Y)^T V)`` over ``phi(X) (phi(Y)^T 1)``: never build the
    ``[n_q, n_k]`` matrix. It must stay finite for scores in the thousands (where
    ``exp`` of the features' exponents overflows or underflows in float64): use shifts that
    cancel. Writing ``a_ir`` and ``b_jr`` for the exponents of queries and keys, subtract
    ``c_r = max_j b_jr`` from the keys' exponents and add it to the queries', then subtract
    ``M_i = max_r (a_ir + c_r)`` from each query's exponents: every factor is ``<= 1`` and
    the largest term of each denominator is 1.

    Args:
        q: ``[..., n_q, d]``; k: ``[..., n_k, d]``; v: ``[..., n_k, d_v]``.
        w: ``[m, d]`` projection matrix (Gaussian rows, i.i.d. or orthogonal).
        scale: score multiplier ``tau``; ``1/sqrt(d)`` when None.

    Returns:
        float64 ``[..., n_q, d_v]``.

    Example:
        >>> q = np.zeros((1, 2)); k = np.zeros((3, 2)); v = np.array([[0.0], [3.0], [6.0]])
        >>> favor_attention(q, k, v, np.ones((4, 2)))   # equal kernel values: the mean of v
        array([[3.]])

    Hint: roughly 10 lines, using ``positive_features`` with array shifts.
    """
    raise NotImplementedError("Exercise 8.4: favor_attention")


def causal_favor(q: np.ndarray, k: np.ndarray, v: np.ndarray, w: np.ndarray, chunk: int = 64,
                 scale: float | None = None) -> np.ndarray:
    """Exercise 8.5 -- causal FAVOR+ by prefix sums, one chunk of queries at a time.

    The causal estimate replaces every sum over keys by a sum over ``j <= i``:

        out_i = sum_{j<=i} (phi(x_i) . phi(y_j)) v_j  /  sum_{j<=i} phi(x_i) . phi(y_j)

    (``x``, ``y`` as in Exercise 8.4). Compute it in chunks of ``chunk`` consecutive
    queries: carry the state ``S = sum_j phi(y_j) v_j^T`` (``[m, d_v]``) and ``z = sum_j
    phi(y_j)`` (``[m]``) over all earlier chunks, and inside a chunk add the exact
    lower-triangular part (``j <= i``, diagonal included). Memory beyond the features is
    ``O(chunk^2 m + m d_v)``: never build an ``[n, n]`` matrix.

    Requirements: **exactly causal** -- changing ``q``, ``k`` or ``v`` at positions ``>= t``
    leaves the outputs at positions ``< t`` bit-for-bit unchanged (so no stabilising shift
    may look at later keys) -- and finite for scores in the thousands. A shift that is causal:
    the prefix maximum ``c_r(i) = max_{j<=i} b_jr``; the weight of pair ``(i, j)`` is then
    ``sum_r exp(a_ir + c_r(i) - M_i) exp(b_jr - c_r(j)) exp(c_r(j) - c_r(i))``, every factor
    ``<= 1``, and the carried state is rescaled by ``exp(c_old - c_new)`` when ``c`` grows.

    Args:
        q: ``[..., n, d]``; k: ``[..., n, d]``; v: ``[..., n, d_v]`` (same ``n``).
        w: ``[m, d]`` projection matrix.
        chunk: queries per chunk, ``>= 1`` (the last chunk may be shorter).
        scale: score multiplier; ``1/sqrt(d)`` when None.

    Returns:
        float64 ``[..., n, d_v]``.

    Example:
        >>> v = np.array([[1.0], [3.0], [8.0]]); z = np.zeros((3, 2))
        >>> causal_favor(z, z, v, np.ones((4, 2)), chunk=2)   # running means of v
        array([[1.],
               [2.],
               [4.]])

    Hint: roughly 25 lines. Get it right without shifts first (moderate inputs), then add
    the prefix-maximum shift.
    """
    raise NotImplementedError("Exercise 8.5: causal_favor")
