"""Numba CPU kernels for block-sparse attention over a :class:`~sparse_core.patterns.BlockLayout`.

Shapes: ``q [BH, n_q, d]``, ``k [BH, n_k, d]``, ``v [BH, n_k, d_v]`` (batch and heads flattened,
``bh = b * n_heads + h``; head ``h`` uses the layout's head ``h``), contiguous, float32 or float64.

Forward (one task per (bh, query block), in parallel): an online softmax over the kept key
blocks -- running maximum ``m``, normaliser ``l`` and un-normalised output ``acc`` per row --
with the token mask applied inside partial blocks. Returns ``out`` and the per-row log-sum-exp
``lse`` (``-inf`` for a fully masked row, whose output is 0).

Backward as in FlashAttention-2: probabilities are recomputed from ``lse``
(``P = exp(S - lse)``), ``D = rowsum(dO * O)``, ``dS = P * (dO V^T - D)``. ``dK``/``dV`` are
accumulated by one task per (bh, key block) walking the layout by columns; ``dQ`` by one task
per (bh, query block) walking it by rows. Every output block has exactly one writer, so the
parallel loops are race-free without atomics.

Token masks of partial blocks are passed as ``tiles [n_tiles, B, B]`` (uint8, 1 = keep);
``tile_of[p]`` is the tile of kept block ``p`` or -1 for a full block.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange


@njit(cache=True, inline="always")
def _scores(q, k, bh, r0, nr, c0, nc, scale, s):
    d = q.shape[2]
    for i in range(nr):
        for j in range(nc):
            acc = 0.0
            for x in range(d):
                acc += q[bh, r0 + i, x] * k[bh, c0 + j, x]
            s[i, j] = acc * scale


@njit(cache=True)
def _apply_tile(s, tiles, tid, nr, nc):
    if tid >= 0:
        for i in range(nr):
            for j in range(nc):
                if tiles[tid, i, j] == 0:
                    s[i, j] = -np.inf


@njit(parallel=True, cache=True)
def forward(q, k, v, scale, block, n_heads, indptr, indices, tile_of, tiles, out, lse):
    BH, n_q, _ = q.shape
    n_k = k.shape[1]
    dv = v.shape[2]
    n_qb = indptr.shape[1] - 1
    for task in prange(BH * n_qb):
        bh = task // n_qb
        qb = task % n_qb
        h = bh % n_heads
        r0 = qb * block
        nr = min(block, n_q - r0)
        m = np.full(block, -np.inf)
        l = np.zeros(block)
        nan_row = np.zeros(block, dtype=np.bool_)
        acc = np.zeros((block, dv))
        s = np.empty((block, block))
        for p in range(indptr[h, qb], indptr[h, qb + 1]):
            c0 = indices[p] * block
            nc = min(block, n_k - c0)
            _scores(q, k, bh, r0, nr, c0, nc, scale, s)
            _apply_tile(s, tiles, tile_of[p], nr, nc)
            for i in range(nr):
                mx = -np.inf
                for j in range(nc):
                    x = s[i, j]
                    if x != x:
                        nan_row[i] = True
                    elif x > mx:
                        mx = x
                m_new = max(m[i], mx)
                if m_new == -np.inf:
                    continue  # nothing allowed in this row yet
                alpha = math.exp(m[i] - m_new)
                total = 0.0
                for j in range(nc):
                    e = math.exp(s[i, j] - m_new)
                    s[i, j] = e
                    total += e
                l[i] = l[i] * alpha + total
                for c in range(dv):
                    a = acc[i, c] * alpha
                    for j in range(nc):
                        a += s[i, j] * v[bh, c0 + j, c]
                    acc[i, c] = a
                m[i] = m_new
        for i in range(nr):
            if nan_row[i] or l[i] != l[i]:  # NaN scores, or inf - inf from inf inputs: propagate
                for c in range(dv):
                    out[bh, r0 + i, c] = np.nan
                lse[bh, r0 + i] = np.nan
            elif l[i] > 0.0:
                inv = 1.0 / l[i]
                for c in range(dv):
                    out[bh, r0 + i, c] = acc[i, c] * inv
                lse[bh, r0 + i] = m[i] + math.log(l[i])
            else:
                for c in range(dv):
                    out[bh, r0 + i, c] = 0.0
                lse[bh, r0 + i] = -np.inf


@njit(cache=True)
def _probs_and_ds(q, k, v, do, lse, delta, bh, r0, nr, c0, nc, scale, tiles, tid, p_blk, ds_blk):
    """Recompute P for one block from lse, and dS = P * (dO V^T - D)."""
    _scores(q, k, bh, r0, nr, c0, nc, scale, p_blk)
    _apply_tile(p_blk, tiles, tid, nr, nc)
    dv = v.shape[2]
    for i in range(nr):
        li = lse[bh, r0 + i]
        for j in range(nc):
            if li == -np.inf:
                p_blk[i, j] = 0.0
            else:
                p_blk[i, j] = math.exp(p_blk[i, j] - li)
        for j in range(nc):
            dp = 0.0
            for c in range(dv):
                dp += do[bh, r0 + i, c] * v[bh, c0 + j, c]
            ds_blk[i, j] = p_blk[i, j] * (dp - delta[bh, r0 + i])


@njit(parallel=True, cache=True)
def backward_dkdv(q, k, v, do, lse, delta, scale, block, n_heads, t_indptr, t_indices, t_tile_of, tiles, dk, dv_out):
    """dK, dV: one task per (bh, key block); t_* is the layout listed by key block."""
    BH, n_q, d = q.shape
    n_k = k.shape[1]
    dv = v.shape[2]
    n_kb = t_indptr.shape[1] - 1
    for task in prange(BH * n_kb):
        bh = task // n_kb
        kb = task % n_kb
        h = bh % n_heads
        c0 = kb * block
        nc = min(block, n_k - c0)
        p_blk = np.empty((block, block))
        ds_blk = np.empty((block, block))
        acc_k = np.zeros((block, d))
        acc_v = np.zeros((block, dv))
        for p in range(t_indptr[h, kb], t_indptr[h, kb + 1]):
            r0 = t_indices[p] * block
            nr = min(block, n_q - r0)
            _probs_and_ds(q, k, v, do, lse, delta, bh, r0, nr, c0, nc, scale, tiles, t_tile_of[p], p_blk, ds_blk)
            for j in range(nc):
                for c in range(dv):
                    a = 0.0
                    for i in range(nr):
                        a += p_blk[i, j] * do[bh, r0 + i, c]
                    acc_v[j, c] += a
                for x in range(d):
                    a = 0.0
                    for i in range(nr):
                        a += ds_blk[i, j] * q[bh, r0 + i, x]
                    acc_k[j, x] += a
        for j in range(nc):
            for x in range(d):
                dk[bh, c0 + j, x] = acc_k[j, x] * scale
            for c in range(dv):
                dv_out[bh, c0 + j, c] = acc_v[j, c]


@njit(parallel=True, cache=True)
def backward_dq(q, k, v, do, lse, delta, scale, block, n_heads, indptr, indices, tile_of, tiles, dq):
    """dQ: one task per (bh, query block)."""
    BH, n_q, d = q.shape
    n_k = k.shape[1]
    n_qb = indptr.shape[1] - 1
    for task in prange(BH * n_qb):
        bh = task // n_qb
        qb = task % n_qb
        h = bh % n_heads
        r0 = qb * block
        nr = min(block, n_q - r0)
        p_blk = np.empty((block, block))
        ds_blk = np.empty((block, block))
        acc = np.zeros((block, d))
        for p in range(indptr[h, qb], indptr[h, qb + 1]):
            c0 = indices[p] * block
            nc = min(block, n_k - c0)
            _probs_and_ds(q, k, v, do, lse, delta, bh, r0, nr, c0, nc, scale, tiles, tile_of[p], p_blk, ds_blk)
            for i in range(nr):
                for x in range(d):
                    a = 0.0
                    for j in range(nc):
                        a += ds_blk[i, j] * k[bh, c0 + j, x]
                    acc[i, x] += a
        for i in range(nr):
            for x in range(d):
                dq[bh, r0 + i, x] = acc[i, x] * scale
