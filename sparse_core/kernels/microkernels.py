"""Register-blocked tile products, the vectorisable ``exp2`` and the compiler setting they need.

Defined in Chapter 4; the fused CPU kernels of :mod:`sparse_core.kernels.cpu` are built on them.

A *micro-kernel* computes an ``RR x CC`` block of ``C = A B`` in ``RR * CC`` scalar accumulators
that stay in registers for the whole reduction: per reduction step it loads ``CC`` contiguous
values of one row of ``B`` once and one value of each of the ``RR`` rows of ``A`` (broadcast), and
does ``RR * CC`` fused multiply-adds; ``C`` is read and written once, at the end. LLVM's SLP
vectoriser packs the ``CC`` accumulators of a row into vector registers (``CC / 16`` AVX-512
registers in float32), so a step costs ``RR * CC / 16`` vector FMAs and ``CC / 16`` vector
loads, with no call and no store. Numba has no register arrays, so :func:`gemm` generates the
source of one such function per ``(RR, CC, accumulate)`` (indices unsigned: no negative-index
wrap-around code in the loop). ``A`` is addressed with a row stride and a reduction stride, so the
same function multiplies by a transposed tile (``P^T dO``, ``dS^T Q`` in the backward) without
copying it.

**The setting.** Numba compiles with LLVM's SLP vectoriser off (``NUMBA_SLP_VECTORIZE=0``), and
without it the micro-kernel is scalar code, several times slower. Numba reads
``numba.config.SLP_VECTORIZE`` each time it optimises a function, so :func:`call` switches it on
only while a kernel of this package compiles (on its first call for given argument types:
:func:`slp_dispatcher` wraps the dispatcher's compile step), holding
Numba's compiler lock so that no other function compiles meanwhile; users set no environment
variable, and no other Numba code in the process is compiled differently. The generated functions
are compiled (and cached on disk) like the module's own: their code objects name this file.
"""
from __future__ import annotations

import contextlib
import math

import numpy as np
from llvmlite import ir
from numba import njit, typeof, types
from numba.core import config as numba_config
from numba.core.compiler_lock import global_compiler_lock
from numba.extending import intrinsic, overload

__all__ = ["gemm", "exp2_neg", "softmax_row", "float32_from_bits", "slp_compile", "slp_dispatcher", "call"]


@contextlib.contextmanager
def slp_compile():
    """Compile with LLVM's SLP vectoriser on, and nothing else compiling meanwhile."""
    with global_compiler_lock:
        old = numba_config.SLP_VECTORIZE
        numba_config.SLP_VECTORIZE = 1
        try:
            yield
        finally:
            numba_config.SLP_VECTORIZE = old


def slp_dispatcher(kernel):
    """``kernel`` (a Numba dispatcher), made to compile every new signature under :func:`slp_compile`.

    Numba's dispatcher calls its ``_compile_for_args`` only when no compiled version matches the
    arguments; the instance's own attribute wraps it, so the usual call (type matching in C, a few
    microseconds) stays as it is -- a decoding step calls its kernel thousands of times.
    """
    if "_compile_for_args" not in kernel.__dict__:
        compile_for_args = kernel._compile_for_args

        def _compile_for_args(*args, **kws):
            with slp_compile():
                return compile_for_args(*args, **kws)

        kernel.__dict__["_compile_for_args"] = _compile_for_args
    return kernel


def call(kernel, *args):
    """``kernel(*args)``; a call that compiles (new argument types) compiles under :func:`slp_compile`."""
    return slp_dispatcher(kernel)(*args)


_GEMMS: dict = {}


def gemm(rr: int, cc: int, add: bool):
    """The generated micro-kernel ``C[coff + r*ldc + c] (=|+=) sum_k A[aoff + r*ars + k*aks] *
    B[boff + k*ldb + c]`` for ``r < M`` (a multiple of ``rr``), ``c < NC`` (a multiple of ``cc``),
    ``k < Kd``, on flat arrays of one dtype; ``zero`` is a 0 of that dtype."""
    key = (rr, cc, add)
    if key in _GEMMS:
        return _GEMMS[key]
    u = "np.uint64"
    name = f"gemm_{rr}x{cc}_{'add' if add else 'set'}"
    acc = [[f"s{r}_{c}" for c in range(cc)] for r in range(rr)]
    src = [f"def {name}(A, aoff, ars, aks, B, boff, ldb, C, coff, ldc, M, NC, Kd, zero):",
           f"    for r in range(0, M, {rr}):",
           f"        for c in range(0, NC, {cc}):"]
    src += [f"            pa{r} = {u}(aoff + (r + {r}) * ars)" for r in range(rr)]
    src += [f"            {acc[r][c]} = zero" for r in range(rr) for c in range(cc)]
    src += [f"            pb = {u}(boff + c)", "            for k in range(Kd):",
            f"                kk = {u}(k)", f"                q = pb + kk * {u}(ldb)",
            f"                ka = kk * {u}(aks)"]
    src += [f"                b{c} = B[q + {u}({c})]" for c in range(cc)]
    for r in range(rr):
        src.append(f"                x = A[pa{r} + ka]")
        src += [f"                {acc[r][c]} += x * b{c}" for c in range(cc)]
    op = "+=" if add else "="
    for r in range(rr):
        src.append(f"            pc = {u}(coff + (r + {r}) * ldc + c)")
        src += [f"            C[pc + {u}({c})] {op} {acc[r][c]}" for c in range(cc)]
    ns = {"np": np, "__name__": __name__}
    # the code object names this file, so Numba can cache the compiled function next to the module's
    exec(compile("\n".join(src), __file__, "exec"), ns)
    # 'contract' only: FMAs but no reassociation, so the loop vectoriser leaves the k loop alone and
    # the SLP vectoriser packs the independent accumulators of a row
    ns[name].source = "\n".join(src)  # the generated Python source, for reading (Chapter 4 prints one)
    _GEMMS[key] = njit(fastmath={"contract"}, cache=True)(ns[name])
    return _GEMMS[key]


@intrinsic
def float32_from_bits(typingctx, bits):
    """The float32 whose bit pattern is the low 32 bits of the integer ``bits`` (a register move,
    vectorisable)."""
    if not isinstance(bits, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        x = args[0]
        if bits.bitwidth > 32:
            x = builder.trunc(x, ir.IntType(32))
        elif bits.bitwidth < 32:
            x = builder.zext(x, ir.IntType(32))
        return builder.bitcast(x, ir.FloatType())

    return types.float32(bits), codegen


def exp2_neg(x):
    """``2 ** x`` for ``x <= 0`` (``-inf`` gives 0, NaN stays NaN), inside Numba code only."""
    raise NotImplementedError("exp2_neg runs inside Numba-compiled code")


@overload(exp2_neg, jit_options={"fastmath": {"contract", "reassoc", "arcp"}})
def _exp2_neg_impl(x):
    if x == types.float32:
        def impl(x):
            # 2**x = 2**k * 2**f with k = round(x), f in [-0.5, 0.5]: a degree-6 polynomial (relative
            # error ~2e-7) times 2**k built from the exponent bits; no libm call, so loops vectorise.
            # Below -126 the result is 0 (this includes -inf); NaN is passed through.
            t = max(x, np.float32(-126.0))
            k = np.int32(t - np.float32(0.5))  # truncation toward 0 of a negative number: ~round(t)
            f = t - np.float32(k)
            p = np.float32(1.5403530393381606e-4)
            p = p * f + np.float32(1.3333558146428443e-3)
            p = p * f + np.float32(9.618129107628477e-3)
            p = p * f + np.float32(5.550410866482158e-2)
            p = p * f + np.float32(0.2402265069591007)
            p = p * f + np.float32(0.6931471805599453)
            p = p * f + np.float32(1.0)
            e = p * float32_from_bits((k + np.int32(127)) << np.int32(23))
            return e if x > np.float32(-126.0) else (x if x != x else np.float32(0.0))
        return impl
    if x == types.float64:
        def impl(x):
            return math.exp2(x)  # exact to rounding: the float64 path is the exact one
        return impl
    return None


@njit(inline="always", fastmath={"contract", "reassoc", "arcp"})
def softmax_row(S, o, nc, mold):
    """One row ``S[o : o + nc]`` of base-2 scores in an online softmax whose running maximum is
    ``mold``: the scores become weights ``2**(S - m)`` in place. Returns ``(m, row sum, alpha,
    grew, nan)``: the new maximum, the weights' sum, the factor that rescales what was accumulated
    before (valid when ``grew``: the maximum rose), and whether a NaN score was seen (the maximum
    then ignores it; the NaN reaches the sum). A row that has seen only ``-inf`` gets weights 0."""
    zero = S.dtype.type(0.0)
    mx = mold
    for j in range(nc):  # vectorised max
        mx = max(mx, S[o + j])
    nan = mx != mx
    if nan:
        mx = mold
    shift = zero if mx == -np.inf else mx
    tot = zero
    for j in range(nc):
        e = exp2_neg(S[o + j] - shift)
        S[o + j] = e
        tot += e
    if mx > mold:
        return mx, tot, exp2_neg(mold - mx), True, nan  # alpha = 0 when mold = -inf
    return mold, tot, S.dtype.type(1.0), False, nan
