"""Chapter 4 -- Block-sparse layouts and kernels.

Fill in each function, then grade it:

    python -m sparse_core grade --chapter 4

A *layout* lists, for every query block, the key blocks a kernel computes, in CSR form:
query block ``qb`` keeps the key blocks ``col_idx[row_ptr[qb]:row_ptr[qb + 1]]`` (sorted).
Block ``(qb, kb)`` covers queries ``qb*B .. min((qb+1)*B, n_q) - 1`` and keys
``kb*B .. min((kb+1)*B, n_k) - 1``, with ``B = block_size``: the last block row/column is
shorter when a length is not a multiple of ``B``. Shapes use the course notation: ``n_q``
queries, ``n_k`` keys, head dimension ``d``, value dimension ``d_v``. Work in numpy.
"""
from __future__ import annotations

import numpy as np

__all__ = [
    "layout_from_mask",
    "block_sparse_forward",
    "block_row_backward",
    "layout_flops",
]


def layout_from_mask(mask: np.ndarray, block_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Exercise 4.1 -- the CSR block layout of a token mask.

    Block ``(qb, kb)`` is kept iff at least one pair ``(i, j)`` inside it is allowed.

    Args:
        mask: bool ``[n_q, n_k]``, ``True`` = may attend; ``n_q`` and ``n_k`` need not be
            multiples of ``block_size``.
        block_size: ``B >= 1``.

    Returns:
        ``(row_ptr, col_idx)``, integer arrays: ``row_ptr`` ``[n_qb + 1]`` with
        ``row_ptr[0] = 0`` and ``n_qb = ceil(n_q / B)``; ``col_idx`` ``[nnz]``, the kept key
        blocks of query block ``qb`` in increasing order at positions
        ``row_ptr[qb] .. row_ptr[qb + 1] - 1``.

    Example:
        >>> m = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 1]], dtype=bool)
        >>> layout_from_mask(m, 2)       # blocks: rows {0,1} x cols {0,1}; rows {2} x cols {2}
        (array([0, 1, 2]), array([0, 1]))

    Hint: roughly 7 lines. Pad the mask to whole blocks, reshape to
    ``[n_qb, B, n_kb, B]`` and reduce with ``any``.
    """
    m = np.asarray(mask, dtype=bool)
    n_q, n_k = m.shape
    B = int(block_size)
    n_qb, n_kb = -(-n_q // B), -(-n_k // B)
    padded = np.zeros((n_qb * B, n_kb * B), dtype=bool)
    padded[:n_q, :n_k] = m
    kept = padded.reshape(n_qb, B, n_kb, B).any(axis=(1, 3))
    row_ptr = np.concatenate([[0], np.cumsum(kept.sum(axis=1))]).astype(np.int64)
    return row_ptr, np.nonzero(kept)[1].astype(np.int64)


def block_sparse_forward(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    row_ptr: np.ndarray,
    col_idx: np.ndarray,
    block_size: int,
    mask: np.ndarray | None = None,
    scale: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exercise 4.2 -- block-sparse attention forward with an online softmax over the CSR.

    For each query block, visit only its kept key blocks (in ``col_idx`` order) and keep a
    running maximum ``m``, normaliser ``l`` and un-normalised output ``acc`` per query,
    rescaling by ``exp(m_old - m_new)`` when the maximum grows (Chapter 1's recurrence). The
    allowed pairs are those inside kept blocks, and, when ``mask`` is given, also allowed by
    ``mask`` (apply it inside each tile). Never read keys/values of blocks that are not
    kept, and never build more than one ``[..., B, B]`` tile of scores.

    Args:
        q: ``[..., n_q, d]``; k: ``[..., n_k, d]``; v: ``[..., n_k, d_v]`` (leading dims
            broadcast; every head uses the same layout).
        row_ptr: ``[n_qb + 1]``; col_idx: ``[nnz]`` -- the layout, as in Exercise 4.1.
        block_size: ``B``.
        mask: optional bool, broadcastable to ``[..., n_q, n_k]``, ``True`` = may attend.
        scale: score multiplier, ``1/sqrt(d)`` when None.

    Returns:
        ``(out, lse)``: float64 ``[..., n_q, d_v]`` and ``[..., n_q]``, equal to dense masked
        attention over the allowed pairs. A query with no allowed pair gets output 0 and
        ``lse = -inf`` (never NaN).

    Example:
        >>> q = np.zeros((2, 2)); k = np.zeros((2, 2)); v = np.array([[2.0], [4.0]])
        >>> block_sparse_forward(q, k, v, np.array([0, 1, 1]), np.array([0]), 1)
        (array([[2.],
               [0.]]), array([  0., -inf]))

    Hint: roughly 25 lines. Shift by 0 instead of ``m`` while a row has seen no allowed key.
    """
    q = np.asarray(q, dtype=np.float64)
    k = np.asarray(k, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    n_q, d = q.shape[-2:]
    n_k, d_v = k.shape[-2], v.shape[-1]
    B = int(block_size)
    scale = 1.0 / np.sqrt(d) if scale is None else float(scale)
    shapes = [q.shape[:-2], k.shape[:-2], v.shape[:-2]]
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        shapes.append(mask.shape[:-2])
    batch = np.broadcast_shapes(*shapes)
    out = np.zeros(batch + (n_q, d_v))
    lse = np.full(batch + (n_q,), -np.inf)
    for qb in range(len(row_ptr) - 1):
        r0, r1 = qb * B, min(qb * B + B, n_q)
        qt = q[..., r0:r1, :] * scale
        m = np.full(batch + (r1 - r0, 1), -np.inf)
        l = np.zeros(batch + (r1 - r0, 1))
        acc = np.zeros(batch + (r1 - r0, d_v))
        for p in range(row_ptr[qb], row_ptr[qb + 1]):
            c0 = int(col_idx[p]) * B
            c1 = min(c0 + B, n_k)
            s = qt @ np.swapaxes(k[..., c0:c1, :], -1, -2)
            if mask is not None:
                s = np.where(mask[..., r0:r1, c0:c1], s, -np.inf)
            m_new = np.maximum(m, s.max(axis=-1, keepdims=True))
            shift = np.where(np.isneginf(m_new), 0.0, m_new)
            alpha = np.exp(m - shift)
            w = np.exp(s - shift)
            l = alpha * l + w.sum(axis=-1, keepdims=True)
            acc = alpha * acc + w @ v[..., c0:c1, :]
            m = m_new
        seen = l > 0
        out[..., r0:r1, :] = acc / np.where(seen, l, 1.0)
        lse[..., r0:r1] = np.where(seen, m + np.log(np.where(seen, l, 1.0)), -np.inf)[..., 0]
    return out, lse


def block_row_backward(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    do: np.ndarray,
    lse: np.ndarray,
    delta: np.ndarray,
    row_ptr: np.ndarray,
    col_idx: np.ndarray,
    block_size: int,
    qb: int,
    mask: np.ndarray | None = None,
    scale: float | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exercise 4.3 -- the backward pass of one query block row, from ``lse`` and ``D``.

    With ``O`` the forward output and ``dO`` the gradient of the loss with respect to it,
    recompute the probabilities of the allowed pairs of query block ``qb`` from the saved
    log-sum-exp, ``P_ij = exp(s_ij - lse_i)`` (0 for pairs that are not allowed), and form
    ``dP = dO V^T`` and ``dS = P * (dP - D)`` tile by tile over the block row's kept key
    blocks. Return this block row's share of the gradients:
    ``dQ_rows = scale * dS K``, ``dK += scale * dS^T Q_rows``, ``dV += P^T dO_rows``.
    Summed over all query blocks, the ``dK``/``dV`` shares give the full gradients.

    Args:
        q: ``[n_q, d]``; k: ``[n_k, d]``; v: ``[n_k, d_v]``; do: ``[n_q, d_v]`` (one head).
        lse: ``[n_q]``, the forward log-sum-exp (``-inf`` for a fully masked row).
        delta: ``[n_q]``, ``D_i = sum_c dO_ic * O_ic``.
        row_ptr, col_idx, block_size: the layout (Exercise 4.1); qb: the query block.
        mask: optional bool ``[n_q, n_k]`` applied inside the kept blocks.
        scale: score multiplier, ``1/sqrt(d)`` when None.

    Returns:
        ``(dq, dk, dv)``: float64 ``[r1 - r0, d]`` for the rows ``r0 = qb*B .. r1 - 1`` of the
        block, and ``[n_k, d]``, ``[n_k, d_v]`` (zero outside the block row's kept blocks).
        A fully masked row contributes 0, never NaN.

    Example:
        With one block covering everything, ``dq`` is the whole ``dQ`` and ``dk``, ``dv``
        the whole ``dK``, ``dV`` of ``softmax(scale * q k^T) v``.

    Hint: roughly 18 lines.
    """
    q, k, v, do = (np.asarray(x, dtype=np.float64) for x in (q, k, v, do))
    n_q, d = q.shape
    n_k = k.shape[0]
    B = int(block_size)
    scale = 1.0 / np.sqrt(d) if scale is None else float(scale)
    r0, r1 = qb * B, min(qb * B + B, n_q)
    Q, dO = q[r0:r1], do[r0:r1]
    L = np.asarray(lse, dtype=np.float64)[r0:r1, None]
    D = np.asarray(delta, dtype=np.float64)[r0:r1, None]
    live = np.isfinite(L)
    L = np.where(live, L, 0.0)
    dq, dk, dv = np.zeros((r1 - r0, d)), np.zeros((n_k, d)), np.zeros((n_k, v.shape[1]))
    for p in range(row_ptr[qb], row_ptr[qb + 1]):
        c0 = int(col_idx[p]) * B
        c1 = min(c0 + B, n_k)
        s = scale * (Q @ k[c0:c1].T)
        allowed = live if mask is None else live & np.asarray(mask, dtype=bool)[r0:r1, c0:c1]
        P = np.where(allowed, np.exp(np.where(allowed, s - L, 0.0)), 0.0)
        dv[c0:c1] += P.T @ dO
        dS = P * (dO @ v[c0:c1].T - D)
        dq += scale * (dS @ k[c0:c1])
        dk[c0:c1] += scale * (dS.T @ Q)
    return dq, dk, dv


def layout_flops(
    row_ptr: np.ndarray,
    col_idx: np.ndarray,
    block_size: int,
    d: int,
    n_q: int,
    n_k: int,
    d_v: int | None = None,
) -> int:
    """Exercise 4.4 -- matmul FLOPs of a block-sparse forward pass over a layout.

    Count, for one head, the FLOPs of ``S = Q K^T`` and ``O = P V`` on every kept block,
    a multiply-add counting 2. A kernel computes whole tiles, so every pair of a kept block
    counts (a token mask inside a block does not reduce the work), but a block in the last
    block row or column has its *real* size, ``min(B, n_q - qb*B) x min(B, n_k - kb*B)``,
    not ``B x B``. The softmax is not counted.

    Args:
        row_ptr: ``[n_qb + 1]``; col_idx: ``[nnz]`` -- the layout (Exercise 4.1).
        block_size: ``B``; d: head dimension; n_q, n_k: lengths; d_v: value dimension
            (``d`` when None).

    Returns:
        int: ``2 * (d + d_v) * sum over kept blocks of rows * cols``.

    Example:
        >>> layout_flops(np.array([0, 1, 2]), np.array([0, 1]), 2, d=4, n_q=3, n_k=3)
        80

        (a 2x2 block and a 1x1 block: 5 pairs, each ``2 * (4 + 4)`` FLOPs)

    Hint: roughly 6 lines.
    """
    d_v = d if d_v is None else d_v
    B = int(block_size)
    counts = np.diff(np.asarray(row_ptr, dtype=np.int64))
    rows = np.minimum(B, n_q - np.arange(counts.size, dtype=np.int64) * B)
    cols = np.minimum(B, n_k - np.asarray(col_idx, dtype=np.int64) * B)
    pairs = int((np.repeat(rows, counts) * cols).sum())
    return 2 * (d + d_v) * pairs
