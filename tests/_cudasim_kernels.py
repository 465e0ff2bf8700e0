"""Small kernels for ``tests/test_cudasim_strict.py``: factories ``make(cuda, ...)`` run by the strict simulator."""
import numpy as np


def copy_through_shared(cuda, n):
    """Correct: stage x in shared memory, barrier, read it back reversed."""
    @cuda.jit
    def kernel(x, out):
        t = cuda.threadIdx.x
        tile = cuda.shared.array(n, np.float32)
        tile[t] = x[t]
        cuda.syncthreads()
        out[t] = tile[n - 1 - t]
    return kernel


def reverse_without_barrier(cuda, n):
    @cuda.jit
    def kernel(x, out):
        t = cuda.threadIdx.x
        tile = cuda.shared.array(n, np.float32)
        tile[t] = x[t]
        out[t] = tile[n - 1 - t]
    return kernel


def overwrite_while_read(cuda, n):
    """Two rounds through one tile with a barrier after each load but none before the reload."""
    @cuda.jit
    def kernel(x, out):
        t = cuda.threadIdx.x
        tile = cuda.shared.array(n, np.float32)
        acc = np.float32(0.0)
        for r in range(2):
            tile[t] = x[r, t]
            cuda.syncthreads()
            acc += tile[n - 1 - t]
        out[t] = acc
    return kernel


def add_shares(cuda, n):
    @cuda.jit
    def kernel(x, out):
        out[cuda.threadIdx.x] += x[cuda.blockIdx.x, cuda.threadIdx.x]
    return kernel


def past_the_end(cuda, n):
    @cuda.jit
    def kernel(x, out):
        t = cuda.threadIdx.x
        out[t] = x[t + 1]
    return kernel


def not_written_yet(cuda, n):
    raise NotImplementedError("Exercise 0.0: not_written_yet")


def spins(cuda, n):
    @cuda.jit
    def kernel(x, out):
        while True:
            pass
    return kernel
