"""Register-blocked tile products and the fused float32 forward built on them.

Defined in Chapter 4. A *micro-kernel* computes an ``RR x CC`` block of ``C = A B`` in ``RR * CC``
scalar accumulators that live in registers for the whole reduction: per reduction step it loads
``CC`` contiguous values of ``B`` once and one value of each of the ``RR`` rows of ``A``, and does
``RR * CC`` fused multiply-adds. LLVM's SLP vectoriser packs the ``CC`` accumulators of a row into
vector registers, so the block costs ``RR * CC / lanes`` vector FMAs per step, no call and no
store until the end. The functions are generated (:func:`gemm`) because Numba has no register
arrays; indices are unsigned, so no negative-index wrap-around code sits in the loop.

Numba disables the SLP vectoriser by default (``NUMBA_SLP_VECTORIZE=0``) and reads that setting
when it optimises a function. :func:`slp_compile` switches it on only while the functions of this
module compile, holding Numba's compiler lock so that no other function compiles meanwhile; the
kernels of this module call no dispatcher shared with other kernels (the shared helpers they use
are ``inline="always"``, inlined into Numba IR), so no other kernel's code changes.

:func:`fused_forward` is the CPU forward for float32 (one task per (bh, query block); strips of
``RR`` query rows: ``S = Q K^T`` by micro-kernels, the token mask of a partial block applied on
the strip from its uint8 tile, online softmax in base 2 with the vectorisable ``exp2``, then
``acc += P V`` by micro-kernels). Arguments are laid out by :func:`sparse_core.kernels.cpu.run_forward`.
"""
from __future__ import annotations

import contextlib
import math

import numpy as np
from numba import njit, prange
from numba.core import config as _numba_config
from numba.core.compiler_lock import global_compiler_lock

from .scalar import exp2_poly

__all__ = ["gemm", "fused_forward", "tile_shape", "slp_compile", "TILE_SHAPES"]

LN2 = 0.6931471805599453
_FM = {"contract", "reassoc", "arcp"}  # as the other CPU kernels: NaN and -inf keep their meaning

#: (RR, CC) register block by head dimension, chosen by measurement (Chapter 4 gives the table)
TILE_SHAPES = {32: (4, 32), 64: (4, 32), 128: (4, 32)}
DEFAULT_SHAPE = (4, 32)


def tile_shape(d: int) -> tuple[int, int]:
    """The ``(RR, CC)`` register block used for head dimension ``d``."""
    return TILE_SHAPES.get(d, DEFAULT_SHAPE)


@contextlib.contextmanager
def slp_compile():
    """Compile with LLVM's SLP vectoriser on, and nothing else compiling meanwhile."""
    with global_compiler_lock:
        old = _numba_config.SLP_VECTORIZE
        _numba_config.SLP_VECTORIZE = 1
        try:
            yield
        finally:
            _numba_config.SLP_VECTORIZE = old


_GEMMS: dict = {}


def gemm(RR: int, CC: int, add: bool):
    """Generated ``C[coff + r*ldc + c] (=|+=) sum_k A[aoff + r*lda + k] * B[boff + k*ldb + c]`` for
    ``r < M`` (a multiple of ``RR``) and ``c < NC`` (a multiple of ``CC``), reduction length ``Kd``,
    on flat float32 arrays."""
    key = (RR, CC, add)
    if key in _GEMMS:
        return _GEMMS[key]
    u = "np.uint64"
    acc = [[f"s{r}_{c}" for c in range(CC)] for r in range(RR)]
    src = ["def kernel(A, aoff, lda, B, boff, ldb, C, coff, ldc, M, NC, Kd):",
           f"    for r in range(0, M, {RR}):",
           f"        for c in range(0, NC, {CC}):"]
    src += [f"            pa{r} = {u}(aoff + (r + {r}) * lda)" for r in range(RR)]
    src += [f"            {acc[r][c]} = np.float32(0.0)" for r in range(RR) for c in range(CC)]
    src += [f"            pb = {u}(boff + c)", "            for k in range(Kd):",
            f"                kk = {u}(k)", f"                q = pb + kk * {u}(ldb)"]
    src += [f"                b{c} = B[q + {u}({c})]" for c in range(CC)]
    for r in range(RR):
        src.append(f"                x = A[pa{r} + kk]")
        src += [f"                {acc[r][c]} += x * b{c}" for c in range(CC)]
    op = "+=" if add else "="
    for r in range(RR):
        src.append(f"            pc = {u}(coff + (r + {r}) * ldc + c)")
        src += [f"            C[pc + {u}({c})] {op} {acc[r][c]}" for c in range(CC)]
    ns = {"np": np}
    exec(compile("\n".join(src), f"<gemm {RR}x{CC} {'add' if add else 'set'}>", "exec"), ns)
    # 'contract' only: FMAs, no reassociation, so the loop vectoriser leaves the k loop alone and
    # the SLP vectoriser packs the independent accumulators
    _GEMMS[key] = njit(fastmath={"contract"})(ns["kernel"])
    return _GEMMS[key]


_FORWARDS: dict = {}


def fused_forward(RR: int, CC: int):
    """The fused float32 forward kernel for register block ``RR x CC`` (generated and compiled once)."""
    key = (RR, CC)
    if key not in _FORWARDS:
        _FORWARDS[key] = _make_forward(RR, CC, gemm(RR, CC, False), gemm(RR, CC, True))
    return _FORWARDS[key]


def _make_forward(RR, CC, g_set, g_add):
    @njit(fastmath=_FM)
    def softmax_strip(S, Bp, r, nr, nc, block, tiles, tid, m, l, acc, dvp, ibuf, fbuf, bad):
        """Rows ``r .. r+RR`` of the score strip ``S`` [RR, Bp] -> weights, updating m, l and acc."""
        for rr in range(RR):
            i = r + rr
            o = rr * Bp
            if tid >= 0 and i < block:
                for j in range(nc):
                    if tiles[tid, i, j] == 0:
                        S[o + j] = -np.inf
            for j in range(nc, Bp):
                S[o + j] = -np.inf
            mold = m[i]
            mx = mold
            for j in range(nc):
                mx = max(mx, S[o + j])
            if mx != mx:
                bad[i] = True
                mx = mold
            shift = np.float32(0.0) if mx == -np.inf else mx
            for j in range(Bp):
                x = S[o + j] - shift
                p, n = exp2_poly(x)
                S[o + j] = p
                ibuf[j] = n
            tot = np.float32(0.0)
            for j in range(Bp):
                e = S[o + j] * fbuf[j]
                S[o + j] = e
                tot += e
            if mx > mold:
                a = exp2_poly_scalar(mold - mx) if mold > -np.inf else np.float32(0.0)
                l[i] = l[i] * a + tot
                ao = i * dvp
                for c in range(dvp):
                    acc[ao + c] *= a
                m[i] = mx
            else:
                l[i] += tot

    @njit(parallel=True, fastmath=_FM)
    def forward(qp, kT, vt, scale2, block, n_heads, n_q, n_k, indptr, indices, tile_of, tiles, out, lse):
        """qp [BH, n_qb*block, d]; kT [BH, n_kb, d, Bp]; vt [BH, n_kb, Bp, dvp] (zero padded)."""
        BH, _, d = qp.shape
        n_kb, Bp = kT.shape[1], kT.shape[3]
        dvp = vt.shape[3]
        dv = out.shape[2]
        n_qb = indptr.shape[1] - 1
        Bq = (block + RR - 1) // RR * RR
        kTf = kT.ravel()
        vtf = vt.ravel()
        for task in prange(BH * n_qb):
            bh = task // n_qb
            qb = task % n_qb
            h = bh % n_heads
            r0 = qb * block
            nr = min(block, n_q - r0)
            Q = np.zeros(Bq * d, dtype=np.float32)
            for i in range(nr):
                for x in range(d):
                    Q[i * d + x] = qp[bh, r0 + i, x] * scale2
            m = np.full(Bq, -np.inf, dtype=np.float32)
            l = np.zeros(Bq, dtype=np.float32)
            bad = np.zeros(Bq, dtype=np.bool_)
            acc = np.zeros(Bq * dvp, dtype=np.float32)
            S = np.empty(RR * Bp, dtype=np.float32)
            ibuf = np.empty(Bp, dtype=np.int32)
            fbuf = ibuf.view(np.float32)
            for p in range(indptr[h, qb], indptr[h, qb + 1]):
                kb = indices[p]
                nc = min(block, n_k - kb * block)
                tid = tile_of[p]
                koff = (bh * n_kb + kb) * d * Bp
                voff = (bh * n_kb + kb) * Bp * dvp
                for r in range(0, nr, RR):
                    g_set(Q, r * d, d, kTf, koff, Bp, S, 0, Bp, RR, Bp, d)
                    softmax_strip(S, Bp, r, nr, nc, block, tiles, tid, m, l, acc, dvp, ibuf, fbuf, bad)
                    g_add(S, 0, Bp, vtf, voff, dvp, acc, r * dvp, dvp, RR, dvp, Bp)
            for i in range(nr):
                if bad[i] or l[i] != l[i]:
                    for c in range(dv):
                        out[bh, r0 + i, c] = np.nan
                    lse[bh, r0 + i] = np.nan
                elif l[i] > 0:
                    inv = np.float32(1.0) / l[i]
                    for c in range(dv):
                        out[bh, r0 + i, c] = acc[i * dvp + c] * inv
                    lse[bh, r0 + i] = (m[i] + math.log2(l[i])) * LN2
                else:
                    for c in range(dv):
                        out[bh, r0 + i, c] = 0.0
                    lse[bh, r0 + i] = -np.inf

    return forward


@njit(inline="always", fastmath=_FM)
def exp2_poly_scalar(x):
    """``2 ** x`` (float32, x <= 0) from :func:`exp2_poly` without the buffer trick."""
    p, n = exp2_poly(x)
    return p * np.float32(2.0) ** np.float32(n // 8388608 - 127) if p != 0 else p
