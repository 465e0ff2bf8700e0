"""Fused Numba CPU kernels for block-sparse attention over a :class:`~sparse_core.patterns.BlockLayout`.

Defined in Chapter 4. Every tile product is a register-blocked micro-kernel
(:func:`sparse_core.kernels.microkernels.gemm`, ``RR x CC`` accumulators, no BLAS call) on
contiguous, zero-padded tiles; the token mask of a partial block, the online softmax (base 2, a
vectorisable polynomial ``exp2`` in float32, ``math.exp2`` in float64) and the rescaling of the
accumulator run between the two products of the forward, inside one task. The kernels compile with
LLVM's SLP vectoriser on (:func:`sparse_core.kernels.microkernels.call` arranges it; no environment
variable is needed).

Arguments (prepared by :func:`run_forward` / :func:`run_backward`):

* ``q [BH, n_q, d]``, ``dout``, ``out`` as given (``bh = b * n_heads + h``); keys and values of
  ``n_kv_heads`` heads (``n_heads`` a multiple: query head ``h`` reads key/value head
  ``h // (n_heads // n_kv_heads)``, grouped-query attention, no copy per query head), laid out
  per key block: ``kT [BHkv, n_kb, d, Bp]`` (keys transposed), ``kt [BHkv, n_kb, Bp, dp]``,
  ``vt [BHkv, n_kb, Bp, dvp]``, ``vT [BHkv, n_kb, d_v, Bp]``, where ``Bp``, ``dp``, ``dvp`` are the
  block size and head dimensions rounded up to ``CC`` (zeros in the padding);
* ``indptr``/``indices``/``tile_of`` the layout by query block, ``t_*`` by key block (head ``h``
  of the inputs uses the layout's head ``h % layout.n_heads``); ``tiles[t]`` a uint8 token mask.

Forward, one task per (bh, query block), strips of ``RR`` query rows per kept key block:
``S = Q K^T`` (micro-kernel), mask, running max, ``P = exp2(S - m)``, rescale, ``acc += P V``
(micro-kernel). Scores are pre-multiplied by ``scale * log2(e)``. Returns ``out`` and ``lse``
(natural log; ``-inf`` for a fully masked row, whose output is 0). NaN scores (or inf - inf from
inf inputs) give NaN rows.

Backward as in FlashAttention-2: ``P = exp2(S - lse2)`` is recomputed from the saved log-sum-exp,
``D = rowsum(dO * O)``, ``dS = P * (dO V^T - D)``. ``dK``/``dV``: one task per (batch, key/value
head, key block) over every query head of its group and the query blocks that keep the block;
``dQ``: one task per (bh, query block). Each output tile has exactly one writer: the parallel loops
are race-free without atomics. Extra memory: the padded K/V tiles (the size of K and V) and
per-task tiles of ``O(block x (block + d))``.
"""
from __future__ import annotations

import math
import types as pytypes

import numpy as np
from numba import njit, prange

from . import microkernels as mk
from .tables import kernel_tables

__all__ = ["run_forward", "run_backward", "forward", "backward_dkdv", "backward_dq", "tile_products",
           "forward_args", "backward_args", "RR", "CC", "variant"]

LOG2E = 1.4426950408889634
LN2 = 0.6931471805599453
_FM = {"contract", "reassoc", "arcp"}  # no 'nnan'/'ninf': NaN and -inf must keep their meaning

#: The register block of every tile product: RR rows x CC columns of accumulators (in float32,
#: CC = 32 is two 512-bit vectors per row). Chosen by measurement: ``scripts/microkernel_shapes.py``
#: times the forward and backward for several shapes (``results/kernels/microkernel_shapes.json``).
RR, CC = 8, 32
MM_SET = mk.gemm(RR, CC, False)
MM_ADD = mk.gemm(RR, CC, True)


def _up(x: int, m: int) -> int:
    return (x + m - 1) // m * m


@njit(inline="always")
def _task(task, n_blocks, block, n):
    """(bh, block index, first row, rows) of parallel task ``task``."""
    bh = task // n_blocks
    b = task % n_blocks
    r0 = b * block
    return bh, b, r0, min(block, n - r0)


@njit(inline="always")
def _load_rows(x, bh, r0, nr, ld, scale, buf):
    """buf[i * ld + c] = x[bh, r0 + i, c] * scale for i < nr, c < x.shape[2] (rest of buf untouched)."""
    c_n = x.shape[2]
    for i in range(nr):
        o = i * ld
        for c in range(c_n):
            buf[o + c] = x[bh, r0 + i, c] * scale


@njit(inline="always", fastmath=_FM)
def _mask_row(S, o, tiles, tid, i, nc):
    if tid >= 0:
        for j in range(nc):
            if tiles[tid, i, j] == 0:
                S[o + j] = -np.inf


@njit(inline="always", fastmath=_FM)
def _online_softmax_rows(S, Bp, r, nr, nc, tiles, tid, m, l, bad, acc, dvp):
    """Rows ``r .. r+RR`` of the score strip ``S [RR, Bp]`` -> weights ``2**(S - m_new)``; updates
    the running max ``m``, sum ``l`` and rescales the accumulator rows ``acc`` (``bad``: NaN seen)."""
    for rr in range(RR):
        i = r + rr
        if i >= nr:
            break
        o = rr * Bp
        _mask_row(S, o, tiles, tid, i, nc)
        mx, tot, a, grew, nan = mk.softmax_row(S, o, nc, m[i])
        if nan:
            bad[i] = True
        if grew:
            l[i] = l[i] * a + tot
            ao = i * dvp
            for c in range(dvp):
                acc[ao + c] *= a
            m[i] = mx
        else:
            l[i] += tot


@njit(parallel=True, cache=True, fastmath=_FM)
def forward(q, kT, vt, scale2, block, n_heads, group, n_k, indptr, indices, tile_of, tiles, out, lse):
    BH, n_q, d = q.shape
    n_kb, Bp = kT.shape[1], kT.shape[3]
    dvp = vt.shape[3]
    dv = out.shape[2]
    n_qb = indptr.shape[1] - 1
    zero = q.dtype.type(0.0)
    kTf = kT.ravel()
    vtf = vt.ravel()
    Bq = (block + RR - 1) // RR * RR
    for task in prange(BH * n_qb):
        bh, qb, r0, nr = _task(task, n_qb, block, n_q)
        kvh = bh // group  # grouped-query: b * n_kv_heads + h // group
        lh = bh % n_heads
        Qs = np.zeros(Bq * d, dtype=q.dtype)
        _load_rows(q, bh, r0, nr, d, scale2, Qs)
        m = np.full(Bq, -np.inf, dtype=q.dtype)
        l = np.zeros(Bq, dtype=q.dtype)
        bad = np.zeros(Bq, dtype=np.bool_)
        acc = np.zeros(Bq * dvp, dtype=q.dtype)
        S = np.zeros(RR * Bp, dtype=q.dtype)
        nrp = (nr + RR - 1) // RR * RR
        for p in range(indptr[lh, qb], indptr[lh, qb + 1]):
            kb = indices[p]
            nc = min(block, n_k - kb * block)
            ncp = (nc + CC - 1) // CC * CC
            tid = tile_of[p]
            koff = (kvh * n_kb + kb) * d * Bp
            voff = (kvh * n_kb + kb) * Bp * dvp
            for r in range(0, nrp, RR):
                MM_SET(Qs, r * d, d, 1, kTf, koff, Bp, S, 0, Bp, RR, ncp, d, zero)
                _online_softmax_rows(S, Bp, r, nr, nc, tiles, tid, m, l, bad, acc, dvp)
                MM_ADD(S, 0, Bp, 1, vtf, voff, dvp, acc, r * dvp, dvp, RR, dvp, nc, zero)
        for i in range(nr):
            if bad[i] or l[i] != l[i]:
                for c in range(dv):
                    out[bh, r0 + i, c] = np.nan
                lse[bh, r0 + i] = np.nan
            elif l[i] > 0:
                inv = q.dtype.type(1.0) / l[i]
                for c in range(dv):
                    out[bh, r0 + i, c] = acc[i * dvp + c] * inv
                lse[bh, r0 + i] = (m[i] + math.log2(l[i])) * LN2
            else:
                for c in range(dv):
                    out[bh, r0 + i, c] = 0.0
                lse[bh, r0 + i] = -np.inf


@njit(inline="always", fastmath=_FM)
def _probs_ds(Qs, dp, kTf, koff, dOs, dvp, vTf, voff, Bp, nr, nrp, nc, ncp, d, dv, lse2, delta, r0,
              tiles, tid, P, dS):
    """One kept block of the backward: ``P = exp2(S - lse2)`` (0 where masked or lse = -inf) and
    ``dS = P * (dO V^T - D)`` into the ``[Bq, Bp]`` tiles ``P``, ``dS`` (rows < nr, columns < ncp;
    columns nc .. ncp are 0)."""
    zero = Qs.dtype.type(0.0)
    MM_SET(Qs, 0, dp, 1, kTf, koff, Bp, P, 0, Bp, nrp, ncp, d, zero)
    MM_SET(dOs, 0, dvp, 1, vTf, voff, Bp, dS, 0, Bp, nrp, ncp, dv, zero)
    for i in range(nr):
        o = i * Bp
        sh = lse2[r0 + i]
        if sh == -np.inf:
            for j in range(ncp):
                P[o + j] = zero
        else:
            _mask_row(P, o, tiles, tid, i, nc)
            for j in range(nc):
                P[o + j] = mk.exp2_neg(P[o + j] - sh)
            for j in range(nc, ncp):
                P[o + j] = zero
        di = delta[r0 + i]
        for j in range(ncp):
            dS[o + j] = P[o + j] * (dS[o + j] - di)


@njit(parallel=True, cache=True, fastmath=_FM)
def backward_dkdv(q, do, kT, vT, lse2, delta, scale2, block, n_heads, group, n_k,
                  t_indptr, t_indices, t_tile_of, tiles, dk, dv_out):
    BH, n_q, d = q.shape
    dv = do.shape[2]
    n_kv, n_kb, _, Bp = kT.shape
    n_qb = t_indptr.shape[1] - 1
    zero = q.dtype.type(0.0)
    dp = (d + CC - 1) // CC * CC
    dvp = (dv + CC - 1) // CC * CC
    Bq = (block + RR - 1) // RR * RR
    kTf = kT.ravel()
    vTf = vT.ravel()
    for task in prange(n_kv * n_kb):
        kvh, kb, c0, nc = _task(task, n_kb, block, n_k)
        ncp = (nc + CC - 1) // CC * CC
        koff = (kvh * n_kb + kb) * d * Bp
        voff = (kvh * n_kb + kb) * dv * Bp
        acc_k = np.zeros(Bp * dp, dtype=q.dtype)
        acc_v = np.zeros(Bp * dvp, dtype=q.dtype)
        Qs = np.zeros(Bq * dp, dtype=q.dtype)
        dOs = np.zeros(Bq * dvp, dtype=q.dtype)
        P = np.zeros(Bq * Bp, dtype=q.dtype)
        dS = np.zeros(Bq * Bp, dtype=q.dtype)
        for g in range(group):
            bh = kvh * group + g
            lh = bh % n_heads
            for p in range(t_indptr[lh, kb], t_indptr[lh, kb + 1]):
                r0 = t_indices[p] * block
                nr = min(block, n_q - r0)
                nrp = (nr + RR - 1) // RR * RR
                for x in range(nr * dp, nrp * dp):  # rows nr .. nrp of a previous, longer block
                    Qs[x] = zero
                for x in range(nr * dvp, nrp * dvp):
                    dOs[x] = zero
                _load_rows(q, bh, r0, nr, dp, scale2, Qs)
                _load_rows(do, bh, r0, nr, dvp, q.dtype.type(1.0), dOs)
                _probs_ds(Qs, dp, kTf, koff, dOs, dvp, vTf, voff, Bp, nr, nrp, nc, ncp, d, dv,
                          lse2[bh], delta[bh], r0, tiles, t_tile_of[p], P, dS)
                MM_ADD(P, 0, 1, Bp, dOs, 0, dvp, acc_v, 0, dvp, ncp, dvp, nr, zero)  # dV += P^T dO
                MM_ADD(dS, 0, 1, Bp, Qs, 0, dp, acc_k, 0, dp, ncp, dp, nr, zero)  # dK += dS^T Q
        for j in range(nc):
            for x in range(d):
                dk[kvh, c0 + j, x] = acc_k[j * dp + x] * LN2  # Qs holds scale * log2(e) * Q
            for c in range(dv):
                dv_out[kvh, c0 + j, c] = acc_v[j * dvp + c]


@njit(parallel=True, cache=True, fastmath=_FM)
def backward_dq(q, do, kT, kt, vT, lse2, delta, scale2, scale, block, n_heads, group, n_k,
                indptr, indices, tile_of, tiles, dq):
    BH, n_q, d = q.shape
    dv = do.shape[2]
    n_kb, Bp = kT.shape[1], kT.shape[3]
    dp = kt.shape[3]
    n_qb = indptr.shape[1] - 1
    zero = q.dtype.type(0.0)
    dvp = (dv + CC - 1) // CC * CC
    Bq = (block + RR - 1) // RR * RR
    kTf = kT.ravel()
    ktf = kt.ravel()
    vTf = vT.ravel()
    for task in prange(BH * n_qb):
        bh, qb, r0, nr = _task(task, n_qb, block, n_q)
        nrp = (nr + RR - 1) // RR * RR
        kvh = bh // group
        lh = bh % n_heads
        Qs = np.zeros(Bq * dp, dtype=q.dtype)
        dOs = np.zeros(Bq * dvp, dtype=q.dtype)
        _load_rows(q, bh, r0, nr, dp, scale2, Qs)
        _load_rows(do, bh, r0, nr, dvp, q.dtype.type(1.0), dOs)
        acc = np.zeros(Bq * dp, dtype=q.dtype)
        P = np.zeros(Bq * Bp, dtype=q.dtype)
        dS = np.zeros(Bq * Bp, dtype=q.dtype)
        for p in range(indptr[lh, qb], indptr[lh, qb + 1]):
            kb = indices[p]
            nc = min(block, n_k - kb * block)
            ncp = (nc + CC - 1) // CC * CC
            koff = (kvh * n_kb + kb) * d * Bp
            voff = (kvh * n_kb + kb) * dv * Bp
            _probs_ds(Qs, dp, kTf, koff, dOs, dvp, vTf, voff, Bp, nr, nrp, nc, ncp, d, dv,
                      lse2[bh], delta[bh], r0, tiles, tile_of[p], P, dS)
            MM_ADD(dS, 0, Bp, 1, ktf, (kvh * n_kb + kb) * Bp * dp, dp, acc, 0, dp, nrp, dp, nc, zero)
        for i in range(nr):
            for x in range(d):
                dq[bh, r0 + i, x] = acc[i * dp + x] * scale


@njit(parallel=True, cache=True)
def pack_tiles(x, block, Bp, cp, transpose, out):
    """``x [BH, n, c]`` -> per key block ``out [BH, n_kb, Bp, cp]`` (or ``[BH, n_kb, c, Bp]`` when
    ``transpose``), zero padded; ``out`` arrives zeroed."""
    BH, n, c = x.shape
    n_kb = out.shape[1]
    for t in prange(BH * n_kb):
        bh = t // n_kb
        kb = t % n_kb
        j0 = kb * block
        nj = min(block, n - j0)
        if transpose:
            for j in range(nj):
                for y in range(c):
                    out[bh, kb, y, j] = x[bh, j0 + j, y]
        else:
            for j in range(nj):
                for y in range(c):
                    out[bh, kb, j, y] = x[bh, j0 + j, y]


@njit(parallel=True, cache=True)
def tile_products(q, kT, vt, n_per_row):
    """Only the forward's two tile products per kept block (``S = Q K^T``, ``acc += S V``, by the
    micro-kernels), no mask and no softmax.

    ``q [BH, n_qb * Bp, d]``, ``kT [BH, n_kb, d, Bp]``, ``vt [BH, n_kb, Bp, dvp]``; task ``(bh,
    query block)`` multiplies its query tile with ``n_per_row`` key/value tiles (cycling over
    ``kT``'s tiles), in strips of ``RR`` rows as :func:`forward` does. The benchmark times it next to
    the real kernel: its rate is what the tile products alone reach on this machine.
    """
    BH, _, d = q.shape
    n_kb, Bp = kT.shape[1], kT.shape[3]
    dvp = vt.shape[3]
    n_qb = q.shape[1] // Bp
    zero = q.dtype.type(0.0)
    qf = q.ravel()
    kTf = kT.ravel()
    vtf = vt.ravel()
    for task in prange(BH * n_qb):
        bh = task // n_qb
        qb = task % n_qb
        S = np.zeros(RR * Bp, dtype=q.dtype)
        acc = np.zeros(Bp * dvp, dtype=q.dtype)
        for t in range(n_per_row):
            kb = (qb + t) % n_kb
            for r in range(0, Bp, RR):
                MM_SET(qf, (bh * n_qb * Bp + qb * Bp + r) * d, d, 1, kTf, (bh * n_kb + kb) * d * Bp, Bp, S, 0,
                       Bp, RR, Bp, d, zero)
                MM_ADD(S, 0, Bp, 1, vtf, (bh * n_kb + kb) * Bp * dvp, dvp, acc, r * dvp, dvp, RR, dvp, Bp, zero)


def variant(rr: int, cc: int) -> dict:
    """Uncached copies of :func:`forward`, :func:`backward_dkdv`, :func:`backward_dq` and
    :func:`pack_tiles`-compatible kernels built on an ``rr x cc`` micro-kernel (same source), for
    measuring tile shapes (``scripts/microkernel_shapes.py``). Returns ``{name: kernel}``."""
    g = dict(globals())
    g.update(RR=rr, CC=cc, MM_SET=mk.gemm(rr, cc, False), MM_ADD=mk.gemm(rr, cc, True))
    out = {}
    for name in ("_online_softmax_rows", "_probs_ds"):
        f = globals()[name].py_func
        g[name] = njit(inline="always", fastmath=_FM)(pytypes.FunctionType(f.__code__, g, name))
    for name in ("forward", "backward_dkdv", "backward_dq"):
        f = globals()[name].py_func
        out[name] = njit(parallel=True, fastmath=_FM)(pytypes.FunctionType(f.__code__, g, name))
    return out


# --------------------------------------------------------------------------- host side
def _flat3(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.reshape((-1,) + x.shape[-2:]))


def _packed(x3: np.ndarray, n_kb: int, block: int, cols: int, transpose: bool, cc: int = CC) -> np.ndarray:
    """Per-key-block tiles of ``x3 [BH, n, c]``: ``[BH, n_kb, Bp, cols]`` or, transposed,
    ``[BH, n_kb, c, Bp]`` (``Bp`` = block rounded up to ``cc``), zero padded."""
    Bp = _up(block, cc)
    shape = (x3.shape[0], n_kb, x3.shape[2], Bp) if transpose else (x3.shape[0], n_kb, Bp, cols)
    out = np.zeros(shape, dtype=x3.dtype)
    mk.call(pack_tiles, x3, block, Bp, cols, transpose, out)
    return out


def forward_args(q: np.ndarray, k: np.ndarray, v: np.ndarray, layout, scale: float, cc: int = CC) -> tuple:
    """The arguments of :func:`forward` for numpy ``[..., heads, n, d]`` inputs (non-empty), its
    outputs ``out``, ``lse`` ``[BH, ...]`` among them; ``cc`` the column width of the micro-kernel."""
    t = kernel_tables(layout)
    B, n_kb = layout.block_size, layout.n_kb
    group = max(1, q.shape[-3] // max(1, k.shape[-3]))
    q3, k3, v3 = _flat3(q), _flat3(k), _flat3(v)
    n_q, n_k, dv = q3.shape[1], k3.shape[1], v3.shape[2]
    out = np.empty((q3.shape[0], n_q, dv), dtype=q3.dtype)
    lse = np.empty((q3.shape[0], n_q), dtype=q3.dtype)
    kT = _packed(k3, n_kb, B, 0, True, cc)
    vt = _packed(v3, n_kb, B, _up(dv, cc), False, cc)
    return (q3, kT, vt, q3.dtype.type(scale * LOG2E), B, layout.n_heads, group, n_k, t["indptr"], t["indices"],
            t["tile_of"], t["tiles"], out, lse)


def backward_args(q, k, v, out, lse, dout, layout, scale: float, cc: int = CC) -> tuple[tuple, tuple]:
    """The arguments of :func:`backward_dkdv` and :func:`backward_dq` (non-empty inputs), the
    gradients ``dq``, ``dk``, ``dv`` ``[BH, ...]`` among them."""
    t = kernel_tables(layout)
    B, n_qb, n_kb = layout.block_size, layout.n_qb, layout.n_kb
    group = max(1, q.shape[-3] // max(1, k.shape[-3]))
    q3, k3, v3, o3, do3 = (_flat3(x) for x in (q, k, v, out, dout))
    do3 = do3.astype(q3.dtype, copy=False)
    n_q, n_k, d = q3.shape[1], k3.shape[1], q3.shape[2]
    dq, dk, dvo = np.zeros_like(q3), np.zeros_like(k3), np.zeros_like(v3)
    dt = q3.dtype.type
    lse2 = np.full((q3.shape[0], n_qb * B), -np.inf, dtype=q3.dtype)
    lse2[:, :n_q] = lse.reshape(-1, n_q) * dt(LOG2E)
    delta = np.zeros((q3.shape[0], n_qb * B), dtype=q3.dtype)
    delta[:, :n_q] = np.einsum("bic,bic->bi", do3.astype(np.float64), o3.astype(np.float64))
    kT = _packed(k3, n_kb, B, 0, True, cc)
    vT = _packed(v3, n_kb, B, 0, True, cc)
    kt = _packed(k3, n_kb, B, _up(d, cc), False, cc)
    scale2 = dt(scale * LOG2E)
    dkdv = (q3, do3, kT, vT, lse2, delta, scale2, B, layout.n_heads, group, n_k,
            t["t_indptr"], t["t_indices"], t["t_tile_of"], t["tiles"], dk, dvo)
    dqa = (q3, do3, kT, kt, vT, lse2, delta, scale2, dt(scale), B, layout.n_heads, group, n_k,
           t["indptr"], t["indices"], t["tile_of"], t["tiles"], dq)
    return dkdv, dqa


def run_forward(q: np.ndarray, k: np.ndarray, v: np.ndarray, layout, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """``(out, lse)`` of the forward kernel on numpy ``[..., heads, n, d]`` arrays (checked by the
    caller; ``k``, ``v`` may have fewer heads, a divisor of ``q``'s: grouped-query attention): lays
    keys and values out tile by tile and runs :func:`forward`. The kernels it runs are defined in Chapter 4."""
    lead = q.shape[:-2]
    n_q, n_k, dv = q.shape[-2], k.shape[-2], v.shape[-1]
    if n_q and n_k and q.size:
        args = forward_args(q, k, v, layout, scale)
        mk.call(forward, *args)
        out, lse = args[-2], args[-1]
    else:
        out = np.zeros(lead + (n_q, dv), dtype=q.dtype)
        lse = np.full(lead + (n_q,), -np.inf, dtype=q.dtype)
    return out.reshape(lead + (n_q, dv)), lse.reshape(lead + (n_q,))


def run_backward(q: np.ndarray, k: np.ndarray, v: np.ndarray, out: np.ndarray, lse: np.ndarray, dout: np.ndarray,
                 layout, scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(dq, dk, dv)``: the gradients of ``sum(out * dout)`` from the backward kernels
    (:func:`backward_dkdv`, :func:`backward_dq`). The kernels it runs are defined in Chapter 4."""
    if not (q.shape[-2] and k.shape[-2] and q.size):
        return np.zeros_like(q), np.zeros_like(k), np.zeros_like(v)
    dkdv, dqa = backward_args(q, k, v, out, lse, dout, layout, scale)
    mk.call(backward_dkdv, *dkdv)
    mk.call(backward_dq, *dqa)
    return dqa[-1].reshape(q.shape), dkdv[-2].reshape(k.shape), dkdv[-1].reshape(v.shape)
