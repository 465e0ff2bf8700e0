"""Numba CUDA kernels for block-sparse attention over a :class:`~sparse_core.patterns.BlockLayout`.

Defined in Chapter 4b. The kernels read the same tables as the CPU kernels
(:func:`sparse_core.kernels.tables.kernel_tables`): the
kept blocks by query block (``indptr``/``indices``), by key block (``t_indptr``/``t_indices``),
and the token mask of every partial block (``tile_of`` / ``t_tile_of`` -> ``tiles``). Arrays are
float32 ``[BH, n, d]`` (``bh = b * heads + h``, head ``h`` uses layout head ``h % layout.n_heads``),
used in place: no padding, every load checks its bounds.

Work split (``TX = 8`` threads across columns, ``TY`` across rows; a thread owns the rows
``ty + TY * i`` and the columns ``tx + TX * j`` of every tile, so shared-memory reads are
broadcasts or consecutive words):

* forward -- one thread block per (query block, batch*head) (a query block of more than ``BM``
  rows is split over ``B / BM`` thread blocks, each owning ``BM`` rows). ``Q * scale * log2 e``
  is staged once in shared memory; for each kept key block, ``BN`` keys at a time, the K tile is
  staged, ``S = Q K^T`` accumulated in registers, the running row maximum reduced across the
  row's ``TX`` threads through shared memory, ``P = exp2(S - m)`` written to shared memory, the
  V tile staged (over K) and ``O += P V`` accumulated in registers (online softmax in base 2).
  Each thread keeps a partial row sum; the sums are reduced at the end. Output: ``O / l`` and
  ``lse = (m + log2 l) ln 2`` (``0`` and ``-inf`` for a row with no allowed key).
* backward (FlashAttention-2): ``delta = rowsum(dO * O)`` (a small kernel), then ``dK, dV``:
  one thread block per (key block, batch*head) over the query blocks that keep it (transposed
  layout), ``P^T = exp2(K Q^T - lse_2)``, ``dV += P^T dO``, ``dS^T = P^T (V dO^T - delta)``,
  ``dK += dS^T Q``; and ``dQ``: one thread block per (query block, batch*head), ``dQ += dS K``.
  Every output element has exactly one writer: no atomics, no races.

Every ``cuda.syncthreads()`` is reached by all threads of a block: the loops around them run over
the kept blocks of the thread block's (query or key) block, the same for all its threads, and
no thread returns early. Shared memory stays under the 48 KiB static limit (tile sizes are chosen
by :func:`tile_config`).

The kernels are compiled lazily (:func:`kernels`); importing this module needs neither a GPU nor
the simulator. With ``NUMBA_ENABLE_CUDASIM=1`` they run in Numba's CUDA simulator (tiny sizes).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .inputs import check_inputs
from .tables import kernel_tables

__all__ = ["available", "tile_config", "kernels", "launch_forward", "launch_backward", "attention_numpy",
           "SHARED_LIMIT", "TX"]

LOG2E = 1.4426950408889634
LN2 = 0.6931471805599453
TX = 8  #: threads across the columns of a tile
SHARED_LIMIT = 48 * 1024  #: static shared memory per thread block (bytes)
_BM_CHOICES = (64, 32, 16, 8, 4)
_BN_CHOICES = (32, 16, 8)


def available() -> tuple[bool, str]:
    """``(True, "")`` when ``numba.cuda`` can launch kernels (a GPU, or the simulator), else
    ``(False, reason)``."""
    try:
        from numba import cuda
    except Exception as e:  # pragma: no cover - numba-cuda is a dependency
        return False, f"numba.cuda cannot be imported ({type(e).__name__}: {e})"
    try:
        if cuda.is_available():
            return True, ""
    except Exception as e:  # pragma: no cover - depends on the driver
        return False, f"numba.cuda.is_available() failed ({type(e).__name__}: {e})"
    return False, ("numba.cuda finds no usable CUDA GPU (no NVIDIA driver or device); "
                   "set NUMBA_ENABLE_CUDASIM=1 before importing numba to use the simulator")


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def _odd(n: int) -> int:
    """Smallest odd stride >= n: column reads ``x[tx + TX * j, c]`` hit distinct banks."""
    return n if n % 2 else n + 1


def _pad(n: int) -> int:
    """Smallest stride >= n that is 8 or 24 mod 32: the 4 rows x 8 columns a warp touches in a
    ``[rows, stride]`` tile land on 32 distinct banks."""
    s = n
    while s % 32 not in (8, 24):
        s += 1
    return s


@dataclass(frozen=True)
class TileConfig:
    """Tile sizes of one kernel: ``BM`` rows per thread block (``TY * TM``), ``BN`` columns per
    step (``TX * TN``), ``splits = ceil(block / BM)`` thread blocks per layout block, ``steps =
    ceil(block / BN)`` column steps per kept block; ``shared_bytes`` of static shared memory."""
    kind: str
    block: int
    d: int
    d_v: int
    BM: int
    BN: int
    TY: int
    TM: int
    TN: int
    splits: int
    steps: int
    shared_bytes: int

    @property
    def threads(self) -> int:
        return TX * self.TY


def _shared_floats(kind: str, BM: int, BN: int, d: int, d_v: int) -> int:
    TD, TDV = _ceil(d, TX) * TX, _ceil(d_v, TX) * TX
    if kind == "forward":
        return d * _odd(BM) + BN * _odd(max(d, TDV)) + BM * _pad(BN) + BM * TX
    if kind == "dkdv":
        return (d + d_v) * _odd(BM) + BN * (_odd(TD) + _odd(TDV)) + BM * _pad(BN) + 2 * BN
    if kind == "dq":
        return (d + d_v) * _odd(BM) + BN * (_odd(TD) + _odd(d_v)) + BM * _pad(BN)
    raise ValueError(f"`kind` must be 'forward', 'dkdv' or 'dq', got {kind!r}")


def _shape(rows: int, block: int) -> tuple[int, int, int]:
    """(TY, TM, BM) for at most ``rows`` rows (capped to the block), with TX * TY a multiple of 32."""
    BM0 = min(rows, block)
    TY = max(4, 4 * _ceil(BM0 // 4, 4)) if BM0 >= 16 else 4
    TM = _ceil(BM0, TY)
    return TY, TM, TY * TM


def tile_config(kind: str, block: int, d: int, d_v: int, tiles: tuple[int, int] | None = None) -> TileConfig:
    """Tile sizes for ``kind`` in ``('forward', 'dkdv', 'dq')`` whose shared memory fits
    :data:`SHARED_LIMIT`: the most multiply-adds per shared-memory load (``TM TN / (TM + TN)``
    for a thread's ``TM x TN`` block of ``S``), then the largest ``BM``; ``tiles=(BM, BN)``
    forces them (tests)."""
    def score(c):
        TY, TM, BM = _shape(c[0], block)
        TN = _ceil(min(c[1], block), TX)
        return (-TM * TN / (TM + TN), -BM)

    choices = [tiles] if tiles is not None else sorted(((m, n) for m in _BM_CHOICES for n in _BN_CHOICES), key=score)
    for BM0, BN0 in choices:
        TY, TM, BM = _shape(BM0, block)
        TN = _ceil(min(BN0, block), TX)
        BN = TX * TN
        nbytes = 4 * _shared_floats(kind, BM, BN, d, d_v)
        if nbytes <= SHARED_LIMIT or tiles is not None:
            if nbytes > SHARED_LIMIT:
                raise ValueError(f"`tiles`={tiles} needs {nbytes} bytes of shared memory (limit {SHARED_LIMIT})")
            return TileConfig(kind, block, d, d_v, BM, BN, TY, TM, TN, _ceil(block, BM), _ceil(block, BN), nbytes)
    raise ValueError(f"head dimensions d={d}, d_v={d_v} are too large for the CUDA kernels' shared memory "
                     f"({SHARED_LIMIT} bytes); use d, d_v <= 256")


# --------------------------------------------------------------------------- kernel factories
_CACHE: dict = {}
#: ``numba.cuda``, bound on first use. The kernels must see it as a module global: the simulator
#: runs them with every global that is ``numba.cuda`` swapped for its fake module.
cuda = None


def _load():
    global cuda
    if cuda is None:
        from numba import cuda as numba_cuda

        cuda = numba_cuda
    return cuda


def kernels(block: int, d: int, d_v: int, tiles: tuple[int, int] | None = None) -> dict:
    """The compiled kernels for one (block size, head dims): ``forward``, ``delta``, ``dkdv``,
    ``dq`` and their :class:`TileConfig` (``cfg_forward``, ...). Cached; compiled on first launch."""
    key = (block, d, d_v, tiles)
    if key not in _CACHE:
        cf, ck, cq = (tile_config(kind, block, d, d_v, tiles) for kind in ("forward", "dkdv", "dq"))
        _CACHE[key] = {"forward": _build_forward(cf), "delta": _build_delta(), "dkdv": _build_dkdv(ck),
                       "dq": _build_dq(cq), "cfg_forward": cf, "cfg_dkdv": ck, "cfg_dq": cq}
    return _CACHE[key]


def _tile_ops(cfg: TileConfig):
    """Device functions the kernels of one :class:`TileConfig` share: staging tiles in shared
    memory, a thread's ``TM x TN`` register-tile product, accumulating ``P Y`` and storing rows.

    They are inlined into the kernels at Numba IR level (``inline="always"``), so a kernel
    compiles to the code it had when these loops were written out in it; the constants of
    ``cfg`` are compile-time constants of the closures.
    """
    _load()

    B, BM, BN, TY, TM, TN, RS = cfg.block, cfg.BM, cfg.BN, cfg.TY, cfg.TM, cfg.TN, cfg.splits
    NT = TX * TY
    ZERO = np.float32(0.0)

    @cuda.jit(device=True, inline="always")
    def place(n_heads):
        """(bh, layout block, rb, r0, layout head, tx, ty, tid) of this thread: thread block
        ``blockIdx.x`` owns rows ``rb .. rb + BM`` of layout block ``blockIdx.x // splits``,
        whose first row is ``r0``, for batch*head ``blockIdx.y``."""
        bh = cuda.blockIdx.y
        blk = cuda.blockIdx.x // RS
        rb = (cuda.blockIdx.x % RS) * BM
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        return bh, blk, rb, blk * B + rb, bh % n_heads, tx, ty, ty * TX + tx

    @cuda.jit(device=True, inline="always")
    def stage_rows_t(dst, src, bh, r0, rb, n, width, scale, tid):
        """``dst[x, r] = src[bh, r0 + r, x] * scale`` for the ``BM`` rows of this thread block
        (0 beyond the block or ``n``)."""
        for e in range(tid, BM * width, NT):
            r = e // width
            x = e - r * width
            val = ZERO
            if rb + r < B and r0 + r < n:
                val = src[bh, r0 + r, x] * scale
            dst[x, r] = val

    @cuda.jit(device=True, inline="always")
    def stage_cols(dst, src, bh, k0, c0, n, width, ncols, tid):
        """``dst[j, x] = src[bh, k0 + j, x]`` for the ``BN`` rows of one step, ``x < width`` (0 for
        ``x >= ncols`` and beyond the block or ``n``)."""
        for e in range(tid, BN * width, NT):
            j = e // width
            x = e - j * width
            val = ZERO
            if x < ncols and c0 + j < B and k0 + j < n:
                val = src[bh, k0 + j, x]
            dst[j, x] = val

    @cuda.jit(device=True, inline="always")
    def outer(s, a, b, depth, ar, br, tx, ty):
        """``s[i, jj] = sum_x a[x, ty + TY i] * b[tx + TX jj, x]``: this thread's register tile."""
        for i in range(TM):
            for jj in range(TN):
                s[i, jj] = ZERO
        for x in range(depth):
            for i in range(TM):
                ar[i] = a[x, ty + TY * i]
            for jj in range(TN):
                br[jj] = b[tx + TX * jj, x]
            for i in range(TM):
                for jj in range(TN):
                    s[i, jj] += ar[i] * br[jj]

    @cuda.jit(device=True, inline="always")
    def accumulate(acc, p, y, width, ar, yr, tx, ty):
        """``acc[i, c] += sum_j p[ty + TY i, j] * y[j, tx + TX c]`` over the ``BN`` columns of ``p``."""
        for j in range(BN):
            for i in range(TM):
                ar[i] = p[ty + TY * i, j]
            for c in range(width):
                yr[c] = y[j, tx + TX * c]
            for i in range(TM):
                for c in range(width):
                    acc[i, c] += ar[i] * yr[c]

    @cuda.jit(device=True, inline="always")
    def store_rows(out, acc, bh, r0, rb, n, width, ncols, scale, tx, ty):
        """``out[bh, r0 + lr, tx + TX c] = acc[i, c] * scale`` for this thread's rows and columns."""
        for i in range(TM):
            lr = ty + TY * i
            row = r0 + lr
            if rb + lr < B and row < n:
                for c in range(width):
                    col = tx + TX * c
                    if col < ncols:
                        out[bh, row, col] = acc[i, c] * scale

    return place, stage_rows_t, stage_cols, outer, accumulate, store_rows


def _build_forward(cfg: TileConfig):
    _load()

    B, D, DV = cfg.block, cfg.d, cfg.d_v
    BM, BN, TY, TM, TN, RS, NCH = cfg.BM, cfg.BN, cfg.TY, cfg.TM, cfg.TN, cfg.splits, cfg.steps
    NT = TX * TY
    TDV = _ceil(DV, TX)
    QS, KS, PS = _odd(BM), _odd(max(D, TX * TDV)), _pad(BN)
    f32 = np.float32
    NEG, ZERO, ONE, CLN2 = f32(-np.inf), f32(0.0), f32(1.0), f32(LN2)
    place, stage_rows_t, stage_cols, outer, accumulate, _ = _tile_ops(cfg)

    @cuda.jit
    def forward(q, k, v, scale2, n_heads, group, indptr, indices, tile_of, tiles, out, lse):
        n_q = q.shape[1]
        n_k = k.shape[1]
        bh, qb, rb, r0, h, tx, ty, tid = place(n_heads)  # rb: first row inside the query block
        kvh = bh // group  # grouped-query: the key/value head of this query head
        Qs = cuda.shared.array((D, QS), f32)  # Q^T * scale2
        KV = cuda.shared.array((BN, KS), f32)  # K tile, then V tile
        Ps = cuda.shared.array((BM, PS), f32)
        red = cuda.shared.array((BM, TX), f32)
        m = cuda.local.array(TM, f32)
        lsum = cuda.local.array(TM, f32)
        acc = cuda.local.array((TM, TDV), f32)
        s = cuda.local.array((TM, TN), f32)
        qr = cuda.local.array(TM, f32)
        kr = cuda.local.array(TN, f32)
        vr = cuda.local.array(TDV, f32)
        for i in range(TM):
            m[i] = NEG
            lsum[i] = ZERO
            for c in range(TDV):
                acc[i, c] = ZERO
        stage_rows_t(Qs, q, bh, r0, rb, n_q, D, scale2, tid)
        for p in range(indptr[h, qb], indptr[h, qb + 1]):
            kb = indices[p]
            t = tile_of[p]
            for ch in range(NCH):
                c0 = ch * BN
                k0 = kb * B + c0
                cuda.syncthreads()  # readers of KV, Ps, red from the previous step are done
                stage_cols(KV, k, kvh, k0, c0, n_k, D, D, tid)
                cuda.syncthreads()
                outer(s, Qs, KV, D, qr, kr, tx, ty)
                for i in range(TM):
                    lr = ty + TY * i
                    mx = NEG
                    for jj in range(TN):
                        lc = c0 + tx + TX * jj
                        ok = lc < B and kb * B + lc < n_k
                        if ok and t >= 0 and rb + lr < B:
                            ok = tiles[t, rb + lr, lc] != 0
                        if not ok:
                            s[i, jj] = NEG
                        mx = max(mx, s[i, jj])
                    red[lr, tx] = mx
                cuda.syncthreads()  # row maxima visible; every thread is done reading K
                for i in range(TM):
                    lr = ty + TY * i
                    mx = m[i]
                    for u in range(TX):
                        mx = max(mx, red[lr, u])
                    alpha = ONE
                    shift = ZERO  # nothing allowed in this row so far: every weight is exp2(-inf) = 0
                    if mx != NEG:
                        alpha = math.exp2(m[i] - mx)  # 0 when m[i] = -inf
                        shift = mx
                    m[i] = mx
                    rs = ZERO
                    for jj in range(TN):
                        pv = math.exp2(s[i, jj] - shift)
                        Ps[lr, tx + TX * jj] = pv
                        rs += pv
                    lsum[i] = lsum[i] * alpha + rs
                    for c in range(TDV):
                        acc[i, c] *= alpha
                stage_cols(KV, v, kvh, k0, c0, n_k, DV, DV, tid)
                cuda.syncthreads()
                accumulate(acc, Ps, KV, TDV, qr, vr, tx, ty)
        cuda.syncthreads()
        for i in range(TM):
            red[ty + TY * i, tx] = lsum[i]
        cuda.syncthreads()
        for i in range(TM):
            lr = ty + TY * i
            row = r0 + lr
            tot = ZERO
            for u in range(TX):
                tot += red[lr, u]
            if rb + lr < B and row < n_q:
                if tot > ZERO:
                    inv = ONE / tot
                    for c in range(TDV):
                        col = tx + TX * c
                        if col < DV:
                            out[bh, row, col] = acc[i, c] * inv
                    if tx == 0:
                        lse[bh, row] = (m[i] + math.log2(tot)) * CLN2
                else:
                    for c in range(TDV):
                        col = tx + TX * c
                        if col < DV:
                            out[bh, row, col] = ZERO
                    if tx == 0:
                        lse[bh, row] = NEG

    return forward


def _build_delta():
    _load()

    f32 = np.float32

    @cuda.jit
    def delta(o, do, lse, out, lse2):
        """out[bh, i] = sum_c o * do; lse2 = lse * log2(e) (-inf stays -inf). One thread per row."""
        i = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
        bh = cuda.blockIdx.y
        if i < o.shape[1]:
            tot = f32(0.0)
            for c in range(o.shape[2]):
                tot += o[bh, i, c] * do[bh, i, c]
            out[bh, i] = tot
            lse2[bh, i] = lse[bh, i] * f32(LOG2E)

    return delta


def _build_dkdv(cfg: TileConfig):
    _load()

    B, D, DV = cfg.block, cfg.d, cfg.d_v
    BM, BN, TY, TM, TN, RS, NCH = cfg.BM, cfg.BN, cfg.TY, cfg.TM, cfg.TN, cfg.splits, cfg.steps
    NT = TX * TY
    TD, TDV = _ceil(D, TX), _ceil(DV, TX)
    RSTR, QSTR, OSTR, PS = _odd(BM), _odd(TX * TD), _odd(TX * TDV), _pad(BN)
    f32 = np.float32
    NEG, ZERO, ONE = f32(-np.inf), f32(0.0), f32(1.0)
    place, stage_rows_t, stage_cols, outer, accumulate, store_rows = _tile_ops(cfg)

    @cuda.jit
    def dkdv(q, k, v, do, lse2, delta, scale2, scale, n_heads, group, t_indptr, t_indices, t_tile_of, tiles, dk, dv):
        n_q = q.shape[1]
        n_k = k.shape[1]
        bh, kb, rb, r0, h, tx, ty, tid = place(n_heads)  # rb: first key inside the key block
        kvh = bh // group  # dk, dv [bh]: this query head's share of its key/value head's gradient
        Ks = cuda.shared.array((D, RSTR), f32)  # K^T * scale2
        Vs = cuda.shared.array((DV, RSTR), f32)  # V^T
        Qc = cuda.shared.array((BN, QSTR), f32)
        Oc = cuda.shared.array((BN, OSTR), f32)  # dO
        Ps = cuda.shared.array((BM, PS), f32)  # P^T, then dS^T
        Lc = cuda.shared.array(BN, f32)
        Dc = cuda.shared.array(BN, f32)
        acc_k = cuda.local.array((TM, TD), f32)
        acc_v = cuda.local.array((TM, TDV), f32)
        s = cuda.local.array((TM, TN), f32)
        dp = cuda.local.array((TM, TN), f32)
        ar = cuda.local.array(TM, f32)
        br = cuda.local.array(TN, f32)
        cr = cuda.local.array(TD, f32)
        er = cuda.local.array(TDV, f32)
        for i in range(TM):
            for c in range(TD):
                acc_k[i, c] = ZERO
            for c in range(TDV):
                acc_v[i, c] = ZERO
        stage_rows_t(Ks, k, kvh, r0, rb, n_k, D, scale2, tid)
        stage_rows_t(Vs, v, kvh, r0, rb, n_k, DV, ONE, tid)
        for p in range(t_indptr[h, kb], t_indptr[h, kb + 1]):
            qb = t_indices[p]
            t = t_tile_of[p]
            for ch in range(NCH):
                c0 = ch * BN
                q0 = qb * B + c0
                cuda.syncthreads()  # readers of Qc, Oc, Ps from the previous step are done
                stage_cols(Qc, q, bh, q0, c0, n_q, TX * TD, D, tid)
                stage_cols(Oc, do, bh, q0, c0, n_q, TX * TDV, DV, tid)
                for j in range(tid, BN, NT):
                    lv = NEG
                    dv_ = ZERO
                    if c0 + j < B and q0 + j < n_q:
                        lv = lse2[bh, q0 + j]
                        dv_ = delta[bh, q0 + j]
                    Lc[j] = lv
                    Dc[j] = dv_
                cuda.syncthreads()
                outer(s, Ks, Qc, D, ar, br, tx, ty)
                outer(dp, Vs, Oc, DV, ar, br, tx, ty)
                for i in range(TM):
                    lr = ty + TY * i
                    for jj in range(TN):
                        lc = tx + TX * jj
                        lv = Lc[lc]
                        ok = lv != NEG and rb + lr < B and r0 + lr < n_k
                        if ok and t >= 0:
                            ok = tiles[t, c0 + lc, rb + lr] != 0
                        pv = ZERO
                        if ok:
                            pv = math.exp2(s[i, jj] - lv)
                        Ps[lr, lc] = pv
                        s[i, jj] = pv * (dp[i, jj] - Dc[lc])  # dS^T
                cuda.syncthreads()
                accumulate(acc_v, Ps, Oc, TDV, ar, er, tx, ty)
                cuda.syncthreads()
                for i in range(TM):
                    for jj in range(TN):
                        Ps[ty + TY * i, tx + TX * jj] = s[i, jj]
                cuda.syncthreads()
                accumulate(acc_k, Ps, Qc, TD, ar, cr, tx, ty)
        store_rows(dk, acc_k, bh, r0, rb, n_k, TD, D, scale, tx, ty)
        store_rows(dv, acc_v, bh, r0, rb, n_k, TDV, DV, ONE, tx, ty)

    return dkdv


def _build_dq(cfg: TileConfig):
    _load()

    B, D, DV = cfg.block, cfg.d, cfg.d_v
    BM, BN, TY, TM, TN, RS, NCH = cfg.BM, cfg.BN, cfg.TY, cfg.TM, cfg.TN, cfg.splits, cfg.steps
    NT = TX * TY
    TD = _ceil(D, TX)
    RSTR, KSTR, VSTR, PS = _odd(BM), _odd(TX * TD), _odd(DV), _pad(BN)
    f32 = np.float32
    NEG, ZERO, ONE = f32(-np.inf), f32(0.0), f32(1.0)
    place, stage_rows_t, stage_cols, outer, accumulate, store_rows = _tile_ops(cfg)

    @cuda.jit
    def dq_kernel(q, k, v, do, lse2, delta, scale2, scale, n_heads, group, indptr, indices, tile_of, tiles, dq):
        n_q = q.shape[1]
        n_k = k.shape[1]
        bh, qb, rb, r0, h, tx, ty, tid = place(n_heads)
        kvh = bh // group
        Qs = cuda.shared.array((D, RSTR), f32)  # Q^T * scale2
        Os = cuda.shared.array((DV, RSTR), f32)  # dO^T
        Kc = cuda.shared.array((BN, KSTR), f32)
        Vc = cuda.shared.array((BN, VSTR), f32)
        Ps = cuda.shared.array((BM, PS), f32)  # dS
        acc = cuda.local.array((TM, TD), f32)
        s = cuda.local.array((TM, TN), f32)
        dp = cuda.local.array((TM, TN), f32)
        lr2 = cuda.local.array(TM, f32)
        dl = cuda.local.array(TM, f32)
        ar = cuda.local.array(TM, f32)
        br = cuda.local.array(TN, f32)
        cr = cuda.local.array(TD, f32)
        for i in range(TM):
            lr = ty + TY * i
            lv = NEG
            dv_ = ZERO
            if rb + lr < B and r0 + lr < n_q:
                lv = lse2[bh, r0 + lr]
                dv_ = delta[bh, r0 + lr]
            lr2[i] = lv
            dl[i] = dv_
            for c in range(TD):
                acc[i, c] = ZERO
        stage_rows_t(Qs, q, bh, r0, rb, n_q, D, scale2, tid)
        stage_rows_t(Os, do, bh, r0, rb, n_q, DV, ONE, tid)
        for p in range(indptr[h, qb], indptr[h, qb + 1]):
            kb = indices[p]
            t = tile_of[p]
            for ch in range(NCH):
                c0 = ch * BN
                k0 = kb * B + c0
                cuda.syncthreads()  # readers of Kc, Vc, Ps from the previous step are done
                stage_cols(Kc, k, kvh, k0, c0, n_k, TX * TD, D, tid)
                stage_cols(Vc, v, kvh, k0, c0, n_k, DV, DV, tid)
                cuda.syncthreads()
                outer(s, Qs, Kc, D, ar, br, tx, ty)
                outer(dp, Os, Vc, DV, ar, br, tx, ty)
                for i in range(TM):
                    lr = ty + TY * i
                    for jj in range(TN):
                        lc = c0 + tx + TX * jj
                        ok = lr2[i] != NEG and lc < B and kb * B + lc < n_k
                        if ok and t >= 0:
                            ok = tiles[t, rb + lr, lc] != 0
                        pv = ZERO
                        if ok:
                            pv = math.exp2(s[i, jj] - lr2[i])
                        Ps[lr, tx + TX * jj] = pv * (dp[i, jj] - dl[i])
                cuda.syncthreads()
                accumulate(acc, Ps, Kc, TD, ar, cr, tx, ty)
        store_rows(dq, acc, bh, r0, rb, n_q, TD, D, scale, tx, ty)

    return dq_kernel


# --------------------------------------------------------------------------- launchers
def _grid(n_blocks: int, cfg: TileConfig, bh: int):
    return (n_blocks * cfg.splits, bh), (TX, cfg.TY)


def launch_forward(q, k, v, out, lse, tables, block, n_heads, scale, stream=0, tiles=None) -> None:
    """Run the forward kernel on device arrays (anything with ``__cuda_array_interface__`` that
    Numba accepts): ``q [BH, n_q, d]``, ``k [BHkv, n_k, d]``, ``v [BHkv, n_k, d_v]`` float32
    (``BHkv`` divides ``BH``: grouped-query heads, query row ``bh`` reads ``bh // (BH // BHkv)``),
    outputs ``out [BH, n_q, d_v]``, ``lse [BH, n_q]``; ``tables`` the device copies of
    :func:`~sparse_core.kernels.tables.kernel_tables` (:func:`~sparse_core.kernels.tables.device_tables`)."""
    BH, n_q, d = q.shape
    d_v = v.shape[2]
    ks = kernels(block, d, d_v, tiles)
    cfg = ks["cfg_forward"]
    grid, threads = _grid(_ceil(n_q, block), cfg, BH)
    ks["forward"][grid, threads, stream](q, k, v, np.float32(scale * LOG2E), n_heads, BH // k.shape[0], tables["indptr"],
                                         tables["indices"], tables["tile_of"], tables["tiles"], out, lse)


def launch_backward(q, k, v, out, lse, dout, dq, dk, dv, delta, lse2, tables, block, n_heads, scale,
                    stream=0, tiles=None) -> None:
    """Run the backward kernels (``delta``, then ``dK, dV``, then ``dQ``) on device arrays;
    ``delta`` and ``lse2`` are float32 ``[BH, n_q]`` scratch buffers. ``dk``, ``dv`` are
    ``[BH, n_k, d]`` per *query* head: with grouped-query inputs (``k``, ``v`` of ``BHkv`` rows) the
    caller sums each group (one writer per output tile, no atomics); K and V are never copied."""
    BH, n_q, d = q.shape
    n_k, d_v = v.shape[1], v.shape[2]
    ks = kernels(block, d, d_v, tiles)
    s2, s1 = np.float32(scale * LOG2E), np.float32(scale)
    group = BH // k.shape[0]
    ks["delta"][(_ceil(n_q, 128), BH), 128, stream](out, dout, lse, delta, lse2)
    grid, threads = _grid(_ceil(n_k, block), ks["cfg_dkdv"], BH)
    ks["dkdv"][grid, threads, stream](q, k, v, dout, lse2, delta, s2, s1, n_heads, group, tables["t_indptr"],
                                      tables["t_indices"], tables["t_tile_of"], tables["tiles"], dk, dv)
    grid, threads = _grid(_ceil(n_q, block), ks["cfg_dq"], BH)
    ks["dq"][grid, threads, stream](q, k, v, dout, lse2, delta, s2, s1, n_heads, group, tables["indptr"],
                                    tables["indices"], tables["tile_of"], tables["tiles"], dq)


def attention_numpy(q, k, v, layout, scale=None, dout=None, tiles=None) -> dict:
    """Run the CUDA kernels on numpy arrays (copied to the device and back), for tests and the
    simulator: ``q [..., n_q, d]``, ``k [..., n_k, d]``, ``v [..., n_k, d_v]`` (cast to float32).

    Returns ``{"out", "lse"}`` and, when ``dout`` (shaped like the output) is given, also
    ``{"dq", "dk", "dv"}`` -- the gradients of ``sum(out * dout)``.
    """
    from numba import cuda

    q, k, v = (np.asarray(x, dtype=np.float32) for x in (q, k, v))
    check_inputs(q, k, v, layout)
    group = q.shape[-3] // k.shape[-3] if k.shape[-3] else 1
    d = q.shape[-1]
    scale = 1.0 / math.sqrt(d) if scale is None else float(scale)
    lead = q.shape[:-2]
    q3, k3, v3 = (np.ascontiguousarray(x.reshape((-1,) + x.shape[-2:])) for x in (q, k, v))
    BH, n_q = q3.shape[:2]
    n_k, d_v = v3.shape[1], v3.shape[2]
    res = {"out": np.zeros((BH, n_q, d_v), np.float32), "lse": np.full((BH, n_q), -np.inf, np.float32)}
    if dout is not None:
        res.update(dq=np.zeros_like(q3), dk=np.zeros_like(k3), dv=np.zeros_like(v3))
    BHkv = k3.shape[0]
    if BH and n_q and n_k:
        tab = {name: cuda.to_device(x) for name, x in kernel_tables(layout).items()}
        qd, kd, vd = (cuda.to_device(x) for x in (q3, k3, v3))
        d_out, d_lse = cuda.device_array((BH, n_q, d_v), np.float32), cuda.device_array((BH, n_q), np.float32)
        launch_forward(qd, kd, vd, d_out, d_lse, tab, layout.block_size, layout.n_heads, scale, tiles=tiles)
        res["out"], res["lse"] = d_out.copy_to_host(), d_lse.copy_to_host()
        if dout is not None:
            do3 = np.ascontiguousarray(np.asarray(dout, np.float32).reshape(BH, n_q, d_v))
            g = {name: cuda.device_array(shape, np.float32) for name, shape in
                 (("dq", q3.shape), ("dk", (BH,) + k3.shape[1:]), ("dv", (BH,) + v3.shape[1:]),
                  ("delta", res["lse"].shape), ("lse2", res["lse"].shape))}
            launch_backward(qd, kd, vd, d_out, d_lse, cuda.to_device(do3), g["dq"], g["dk"], g["dv"],
                            g["delta"], g["lse2"], tab, layout.block_size, layout.n_heads, scale, tiles=tiles)
            # per query head -> per key/value head: the sum over each group
            res.update(dq=g["dq"].copy_to_host(),
                       dk=g["dk"].copy_to_host().reshape((BHkv, group) + k3.shape[1:]).sum(1),
                       dv=g["dv"].copy_to_host().reshape((BHkv, group) + v3.shape[1:]).sum(1))
    shapes = {"out": lead + (n_q, d_v), "lse": lead + (n_q,), "dq": q.shape, "dk": k.shape, "dv": v.shape}
    return {name: x.reshape(shapes[name]) for name, x in res.items()}
