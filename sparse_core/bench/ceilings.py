"""What the machine can do, measured in the benchmark's own run: the ceilings of a roofline.

* :func:`matmul_peak` -- ``torch.mm`` of two 2048x2048 float32 matrices (MKL/oneDNN: what
  PyTorch's dense attention is built on);
* :func:`microkernel_peak` -- the project's register-blocked micro-kernel on tiles that stay in
  cache (:func:`sparse_core.kernels.cpu.tile_products` over one key/value tile): the rate of its
  fused multiply-adds when no memory traffic limits them;
* :func:`memory_bandwidth` -- a large float32 copy (read + write bytes per second, all threads);
* :func:`load_reference` -- the shared forward-only reference kernel, when its file is at hand
  (``../shared/perf-reference/reference_kernels.py``): compiled with the SLP vectoriser on, as its
  README asks, through :func:`sparse_core.kernels.microkernels.slp_dispatcher`.

Used by ``python -m sparse_core bench kernels`` (Chapter 4).
"""
from __future__ import annotations

import importlib.util
import time
from pathlib import Path

__all__ = ["matmul_peak", "microkernel_peak", "memory_bandwidth", "load_reference", "DEFAULT_REFERENCE"]

#: where the shared reference kernel lives, relative to the repository root
DEFAULT_REFERENCE = "../shared/perf-reference/reference_kernels.py"


def _best(fn, repeats):
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def matmul_peak(n: int = 2048, repeats: int = 3):
    """``(fn, flops)``: one ``torch.mm`` of ``n x n`` float32 matrices and its FLOPs."""
    import torch

    a = torch.randn(n, n, generator=torch.Generator().manual_seed(0))
    return (lambda: a @ a), 2.0 * n ** 3


def microkernel_peak(block: int = 128, d: int = 64, tasks: int | None = None, per_row: int = 64):
    """``(fn, flops)``: the micro-kernel's tile products on one cache-resident key/value tile per task."""
    import numba
    import numpy as np

    from ..kernels import cpu
    from ..kernels.microkernels import call

    tasks = tasks or numba.get_num_threads()
    Bp = -(-block // cpu.CC) * cpu.CC
    dvp = -(-d // cpu.CC) * cpu.CC
    rng = np.random.default_rng(0)
    qt = rng.standard_normal((tasks, Bp, d), np.float32)
    kT = rng.standard_normal((tasks, 1, d, Bp), np.float32)
    vt = rng.standard_normal((tasks, 1, Bp, dvp), np.float32)
    return (lambda: call(cpu.tile_products, qt, kT, vt, per_row)), 4.0 * Bp * Bp * d * tasks * per_row


def memory_bandwidth(mib: int = 256, repeats: int = 3) -> float:
    """Bytes per second of copying ``mib`` MiB of float32 into another buffer (read + write)."""
    import torch

    a = torch.ones(mib * 2 ** 18)
    b = torch.empty_like(a)
    return 2 * a.numel() * 4 / _best(lambda: b.copy_(a), repeats)


def load_reference(path: str | None):
    """``run(q [H, n, d] float32, row_ptr, col_idx, block)`` of the shared reference kernel (4x16
    micro-kernel, as measured in its README), or None when ``path`` is None or missing."""
    if not path or not Path(path).is_file():
        return None
    spec = importlib.util.spec_from_file_location("perf_reference_kernels", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    from ..kernels.microkernels import slp_dispatcher

    kernel = slp_dispatcher(mod.make_bsa_gemm(4, 16))
    return lambda q, k, v, row_ptr, col_idx, block: kernel(q, k, v, row_ptr, col_idx, block)
