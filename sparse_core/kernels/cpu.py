"""Numba CPU kernels for block-sparse attention over a :class:`~sparse_core.patterns.BlockLayout`.

Defined in Chapter 4. Layout of the arguments (prepared by :func:`run_forward` / :func:`run_backward`): inputs are padded to whole blocks
and stored tile by tile, so every tile product is one contiguous BLAS call (``np.dot`` inside
Numba calls SciPy's BLAS):

* ``qp [BH, n_qb * B, d]`` queries, ``kT [BH, n_kb, d, B]`` keys transposed per tile,
  ``kt [BH, n_kb, B, d]`` keys per tile, ``vt [BH, n_kb, B, d_v]`` and ``vT [BH, n_kb, d_v, B]``
  values per tile (``bh = b * n_heads + h``; head ``h`` uses the layout's head ``h``);
* ``indptr``/``indices`` the layout by query block, ``t_indptr``/``t_indices`` by key block;
  ``tile_of[p]`` the token mask (``tiles``, uint8) of kept block ``p`` or -1 for a full block.

Forward, one task per (bh, query block): online softmax over the kept key blocks in base 2
(scores are pre-multiplied by ``scale * log2(e)``; a vectorisable polynomial ``exp2`` is used in
float32, ``math.exp2`` in float64). Returns ``out`` and ``lse`` (natural log; ``-inf`` for a
fully masked row, whose output is 0). NaN scores (or inf - inf from inf inputs) give NaN rows.

Backward as in FlashAttention-2: ``P = exp(S - lse)`` is recomputed, ``D = rowsum(dO * O)``,
``dS = P * (dO V^T - D)``. ``dK``/``dV``: one task per (bh, key block) over the query blocks that
keep it; ``dQ``: one task per (bh, query block). Each output tile has exactly one writer: the
parallel loops are race-free without atomics.
"""
from __future__ import annotations

import math
import os

# Each Numba task calls BLAS on small tiles from its own thread; a multi-threaded BLAS inside
# that parallel region only oversubscribes the cores (and OpenBLAS warns about OpenMP loops).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from numba import njit, prange  # noqa: E402

from .tables import kernel_tables  # noqa: E402

LOG2E = 1.4426950408889634
LN2 = 0.6931471805599453
_FM = {"contract", "reassoc", "arcp"}  # no 'nnan'/'ninf': NaN and -inf must keep their meaning


@njit(inline="always")
def _task(task, n_blocks, n_heads, block, n):
    """(bh, block index, layout head, first row, rows) of parallel task ``task``."""
    bh = task // n_blocks
    b = task % n_blocks
    r0 = b * block
    return bh, b, bh % n_heads, r0, min(block, n - r0)


@njit(cache=True, fastmath=_FM)
def _exp2_rows(s, nr, nc, shift, ibuf, fbuf, rowsum, poly):
    """s[i, j] <- 2 ** (s[i, j] - shift[i]) for j < nc (0 beyond nc and where the result < 2**-126).

    ``poly``: float32 fast path -- a degree-6 polynomial for 2**f on [0, 1) times 2**n built from
    the exponent bits, which LLVM vectorises; otherwise ``math.exp2`` (exact to rounding).
    """
    B = s.shape[1]
    for i in range(nr):
        mi = shift[i]
        tot = s.dtype.type(0.0)
        if poly:
            for j in range(nc):
                x = s[i, j] - mi
                xc = max(x, np.float32(-126.0))
                n = math.floor(xc)
                f = xc - n
                p = np.float32(1.5353362e-4)
                p = p * f + np.float32(1.3398874e-3)
                p = p * f + np.float32(9.6184020e-3)
                p = p * f + np.float32(5.5503450e-2)
                p = p * f + np.float32(2.4022652e-1)
                p = p * f + np.float32(6.9314718e-1)
                p = p * f + np.float32(1.0)
                ibuf[j] = (np.int32(n) + np.int32(127)) << 23
                # x <= -126 underflows to 0 (this includes masked -inf); NaN stays NaN
                s[i, j] = p if x > np.float32(-126.0) else (x if x != x else np.float32(0.0))
            for j in range(nc):
                e = s[i, j] * fbuf[j]
                s[i, j] = e
                tot += e
        else:
            for j in range(nc):
                e = math.exp2(s[i, j] - mi)
                s[i, j] = e
                tot += e
        for j in range(nc, B):
            s[i, j] = 0.0
        rowsum[i] = tot


@njit(cache=True)
def _mask_tile(s, tiles, tid, nr, nc):
    if tid >= 0:
        for i in range(nr):
            for j in range(nc):
                if tiles[tid, i, j] == 0:
                    s[i, j] = -np.inf


@njit(parallel=True, cache=True, fastmath=_FM)
def forward(qp, kT, vt, scale2, block, n_heads, n_q, n_k, indptr, indices, tile_of, tiles, out, lse, poly):
    BH = qp.shape[0]
    dv = vt.shape[3]
    n_qb = indptr.shape[1] - 1
    dt = qp.dtype.type
    for task in prange(BH * n_qb):
        bh, qb, h, r0, nr = _task(task, n_qb, n_heads, block, n_q)
        Q = qp[bh, r0:r0 + block] * scale2
        m = np.full(block, -np.inf, dtype=qp.dtype)
        l = np.zeros(block, dtype=qp.dtype)
        bad = np.zeros(block, dtype=np.bool_)
        acc = np.zeros((block, dv), dtype=qp.dtype)
        ibuf = np.empty(block, dtype=np.int32)
        fbuf = ibuf.view(np.float32)
        rs = np.empty(block, dtype=qp.dtype)
        mnew = np.empty(block, dtype=qp.dtype)
        alpha = np.empty(block, dtype=qp.dtype)
        S = np.empty((block, block), dtype=qp.dtype)
        PV = np.empty((block, dv), dtype=qp.dtype)
        for p in range(indptr[h, qb], indptr[h, qb + 1]):
            kb = indices[p]
            nc = min(block, n_k - kb * block)
            np.dot(Q, kT[bh, kb], S)
            _mask_tile(S, tiles, tile_of[p], nr, nc)
            for i in range(nr):
                mx = m[i]
                for j in range(nc):  # vectorised max; a NaN score reaches the output through exp2 and l
                    mx = max(mx, S[i, j])
                if mx != mx:
                    bad[i] = True
                    mx = m[i]
                if mx == -np.inf:  # nothing allowed in this row so far: every weight is 0
                    mnew[i] = 0.0
                    alpha[i] = 1.0
                else:
                    mnew[i] = mx
                    alpha[i] = dt(2.0) ** (m[i] - mx)  # 0 when m[i] = -inf
                    m[i] = mx
            _exp2_rows(S, nr, nc, mnew, ibuf, fbuf, rs, poly)
            np.dot(S, vt[bh, kb], PV)
            for i in range(nr):
                a = alpha[i]
                l[i] = l[i] * a + rs[i]
                for c in range(dv):
                    acc[i, c] = acc[i, c] * a + PV[i, c]
        for i in range(nr):
            if bad[i] or l[i] != l[i]:
                for c in range(dv):
                    out[bh, r0 + i, c] = np.nan
                lse[bh, r0 + i] = np.nan
            elif l[i] > 0:
                inv = dt(1.0) / l[i]
                for c in range(dv):
                    out[bh, r0 + i, c] = acc[i, c] * inv
                lse[bh, r0 + i] = (m[i] + math.log2(l[i])) * LN2
            else:
                for c in range(dv):
                    out[bh, r0 + i, c] = 0.0
                lse[bh, r0 + i] = -np.inf


@njit(cache=True, fastmath=_FM)
def _probs(Q2, kT_tile, lse2, r0, nr, nc, tiles, tid, ibuf, fbuf, rs, shift, S, poly):
    """P of one block into ``S`` (zero rows where lse = -inf), recomputed from the base-2 lse."""
    np.dot(Q2, kT_tile, S)
    _mask_tile(S, tiles, tid, nr, nc)
    for i in range(nr):
        shift[i] = lse2[r0 + i]
        if shift[i] == -np.inf:
            for j in range(nc):
                S[i, j] = -np.inf
            shift[i] = 0.0
    _exp2_rows(S, nr, nc, shift, ibuf, fbuf, rs, poly)
    for i in range(nr, S.shape[0]):
        for j in range(S.shape[1]):
            S[i, j] = 0.0


@njit(inline="always")
def _scratch(block, dtype):
    """Per-task buffers of the backward kernels: P, dS ``[block, block]``, the exp2 scratch
    (``ibuf`` and its float32 view ``fbuf``), row sums and shifts ``[block]``."""
    ibuf = np.empty(block, dtype=np.int32)
    return (np.empty((block, block), dtype=dtype), np.empty((block, block), dtype=dtype), ibuf,
            ibuf.view(np.float32), np.empty(block, dtype=dtype), np.empty(block, dtype=dtype))


@njit(inline="always", fastmath=_FM)
def _ds_rows(P, dS, delta_row, r0, nr):
    """dS <- P * (dP - delta) on the first ``nr`` rows (``dS`` holds dP = dO V^T on entry)."""
    for i in range(nr):
        di = delta_row[r0 + i]
        for j in range(dS.shape[1]):
            dS[i, j] = P[i, j] * (dS[i, j] - di)


@njit(parallel=True, cache=True, fastmath=_FM)
def backward_dkdv(qp, kT, vT, dop, lse2, delta, scale2, scale, block, n_heads, n_q, n_k,
                  t_indptr, t_indices, t_tile_of, tiles, dk, dv_out, poly):
    BH = qp.shape[0]
    d = qp.shape[2]
    dv = vT.shape[2]
    n_kb = t_indptr.shape[1] - 1
    for task in prange(BH * n_kb):
        bh, kb, h, _, nc = _task(task, n_kb, n_heads, block, n_k)
        acc_k = np.zeros((block, d), dtype=qp.dtype)
        acc_v = np.zeros((block, dv), dtype=qp.dtype)
        tmp_k = np.empty((block, d), dtype=qp.dtype)
        tmp_v = np.empty((block, dv), dtype=qp.dtype)
        Q2 = np.empty((block, d), dtype=qp.dtype)
        P, dS, ibuf, fbuf, rs, shift = _scratch(block, qp.dtype)
        for p in range(t_indptr[h, kb], t_indptr[h, kb + 1]):
            r0 = t_indices[p] * block
            nr = min(block, n_q - r0)
            Q = qp[bh, r0:r0 + block]
            for i in range(block):
                for x in range(d):
                    Q2[i, x] = Q[i, x] * scale2
            _probs(Q2, kT[bh, kb], lse2[bh], r0, nr, nc, tiles, t_tile_of[p], ibuf, fbuf, rs, shift, P, poly)
            dO = dop[bh, r0:r0 + block]
            np.dot(P.T, dO, tmp_v)
            acc_v += tmp_v
            np.dot(dO, vT[bh, kb], dS)  # dP
            _ds_rows(P, dS, delta[bh], r0, nr)
            for i in range(nr, block):
                for j in range(block):
                    dS[i, j] = 0.0
            np.dot(dS.T, Q, tmp_k)
            acc_k += tmp_k
        for j in range(nc):
            for x in range(d):
                dk[bh, kb * block + j, x] = acc_k[j, x] * scale
            for c in range(dv):
                dv_out[bh, kb * block + j, c] = acc_v[j, c]


@njit(parallel=True, cache=True, fastmath=_FM)
def backward_dq(qp, kt, kT, vT, dop, lse2, delta, scale2, scale, block, n_heads, n_q, n_k,
                indptr, indices, tile_of, tiles, dq, poly):
    BH = qp.shape[0]
    d = qp.shape[2]
    n_qb = indptr.shape[1] - 1
    for task in prange(BH * n_qb):
        bh, qb, h, r0, nr = _task(task, n_qb, n_heads, block, n_q)
        Q2 = qp[bh, r0:r0 + block] * scale2
        dO = dop[bh, r0:r0 + block]
        acc = np.zeros((block, d), dtype=qp.dtype)
        tmp = np.empty((block, d), dtype=qp.dtype)
        P, dS, ibuf, fbuf, rs, shift = _scratch(block, qp.dtype)
        for p in range(indptr[h, qb], indptr[h, qb + 1]):
            kb = indices[p]
            nc = min(block, n_k - kb * block)
            _probs(Q2, kT[bh, kb], lse2[bh], r0, nr, nc, tiles, tile_of[p], ibuf, fbuf, rs, shift, P, poly)
            np.dot(dO, vT[bh, kb], dS)
            _ds_rows(P, dS, delta[bh], r0, nr)
            np.dot(dS, kt[bh, kb], tmp)
            acc += tmp
        for i in range(nr):
            for x in range(d):
                dq[bh, r0 + i, x] = acc[i, x] * scale


@njit(parallel=True, cache=True)
def tile_products(qp, kT, vt, n_per_row):
    """Only the forward's two BLAS products per kept block (``S = Q K^T``, ``S V``), no softmax.

    Shapes as for :func:`forward`; task ``(bh, query block)`` multiplies its query tile with
    ``n_per_row`` key/value tiles (cycling over ``kT``'s tiles). The benchmark times it next to
    the real kernel: its rate is the ceiling that one BLAS call per tile product can reach on
    this machine, whatever the softmax costs.
    """
    BH = qp.shape[0]
    n_kb = kT.shape[1]
    block = kT.shape[3]
    n_qb = qp.shape[1] // block
    dv = vt.shape[3]
    for task in prange(BH * n_qb):
        bh = task // n_qb
        qb = task % n_qb
        Q = qp[bh, qb * block:(qb + 1) * block]
        S = np.empty((block, block), dtype=qp.dtype)
        PV = np.empty((block, dv), dtype=qp.dtype)
        for t in range(n_per_row):
            kb = (qb + t) % n_kb
            np.dot(Q, kT[bh, kb], S)
            np.dot(S, vt[bh, kb], PV)


# --------------------------------------------------------------------------- host side
def _pad_rows(x: np.ndarray, n_blocks: int, block: int) -> np.ndarray:
    """[BH, n, c] -> [BH, n_blocks * block, c], zero padded (contiguous)."""
    out = np.zeros((x.shape[0], n_blocks * block, x.shape[2]), dtype=x.dtype)
    out[:, : x.shape[1]] = x
    return out


def _tiles(x: np.ndarray, n_blocks: int, block: int, transpose: bool) -> np.ndarray:
    """[BH, n, c] -> per-tile [BH, n_blocks, block, c] (or [.., c, block] when ``transpose``)."""
    t = _pad_rows(x, n_blocks, block).reshape(x.shape[0], n_blocks, block, x.shape[2])
    return np.ascontiguousarray(t.transpose(0, 1, 3, 2)) if transpose else t


def _flat3(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.reshape((-1,) + x.shape[-2:]))


def run_forward(q: np.ndarray, k: np.ndarray, v: np.ndarray, layout, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """``(out, lse)`` of the forward kernel on numpy ``[..., n, d]`` arrays (checked by the caller):
    pads them to whole blocks, lays them out tile by tile and runs :func:`forward`. The kernels it runs are defined in Chapter 4."""
    t = kernel_tables(layout)
    B, n_qb, n_kb = layout.block_size, layout.n_qb, layout.n_kb
    lead = q.shape[:-2]
    q3, k3, v3 = _flat3(q), _flat3(k), _flat3(v)
    n_q, n_k = q3.shape[1], k3.shape[1]
    out = np.empty((q3.shape[0], n_q, v3.shape[2]), dtype=q3.dtype)
    lse = np.empty((q3.shape[0], n_q), dtype=q3.dtype)
    if n_q and n_k and q3.shape[0]:
        forward(_pad_rows(q3, n_qb, B), _tiles(k3, n_kb, B, True), _tiles(v3, n_kb, B, False),
                    q3.dtype.type(scale * LOG2E), B, layout.n_heads, n_q, n_k, t["indptr"], t["indices"],
                    t["tile_of"], t["tiles"], out, lse, q3.dtype == np.float32)
    else:
        out[...] = 0
        lse[...] = -np.inf
    return out.reshape(lead + out.shape[-2:]), lse.reshape(lead + lse.shape[-1:])


def run_backward(q: np.ndarray, k: np.ndarray, v: np.ndarray, out: np.ndarray, lse: np.ndarray, dout: np.ndarray,
                 layout, scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(dq, dk, dv)``: the gradients of ``sum(out * dout)`` from the backward kernels
    (:func:`backward_dkdv`, :func:`backward_dq`). The kernels it runs are defined in Chapter 4."""
    t = kernel_tables(layout)
    B, n_qb, n_kb = layout.block_size, layout.n_qb, layout.n_kb
    shape_q, shape_k, shape_v = q.shape, k.shape, v.shape
    q3, k3, v3, o3, do3 = (_flat3(x) for x in (q, k, v, out, dout))
    n_q, n_k = q3.shape[1], k3.shape[1]
    dq, dk, dv = np.zeros_like(q3), np.zeros_like(k3), np.zeros_like(v3)
    if n_q and n_k and q3.shape[0]:
        dt = q3.dtype.type
        lse2 = np.full((q3.shape[0], n_qb * B), -np.inf, dtype=q3.dtype)
        lse2[:, :n_q] = lse.reshape(-1, n_q) * dt(LOG2E)
        delta = np.zeros((q3.shape[0], n_qb * B), dtype=q3.dtype)
        delta[:, :n_q] = (do3.astype(np.float64) * o3).sum(-1)
        qp, dop = _pad_rows(q3, n_qb, B), _pad_rows(do3, n_qb, B)
        kT, vT = _tiles(k3, n_kb, B, True), _tiles(v3, n_kb, B, True)
        poly = q3.dtype == np.float32
        scale2 = dt(scale * LOG2E)
        backward_dkdv(qp, kT, vT, dop, lse2, delta, scale2, dt(scale), B, layout.n_heads, n_q, n_k,
                          t["t_indptr"], t["t_indices"], t["t_tile_of"], t["tiles"], dk, dv, poly)
        backward_dq(qp, _tiles(k3, n_kb, B, False), kT, vT, dop, lse2, delta, scale2, dt(scale), B,
                        layout.n_heads, n_q, n_k, t["indptr"], t["indices"], t["tile_of"], t["tiles"], dq, poly)
    return dq.reshape(shape_q), dk.reshape(shape_k), dv.reshape(shape_v)
