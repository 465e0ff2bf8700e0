"""Block-sparse attention kernels (Numba). Use them through :mod:`sparse_core.attention.ops`."""
