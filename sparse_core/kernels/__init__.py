"""Block-sparse attention kernels (Numba) and what they read. Use them through
:func:`sparse_core.attention.ops.block_sparse_attention`.

* :mod:`sparse_core.kernels.tables` -- the kernel-ready form of a ``BlockLayout`` (padded CSR
  tables, uint8 token tiles, the transposed CSR for dK/dV) and its device copies, built once
  and cached per layout (Chapters 4 and 4b);
* :mod:`sparse_core.kernels.inputs` -- ``check_inputs``, the input checks every entry point shares;
* :mod:`sparse_core.kernels.microkernels` -- the register-blocked tile products, the vectorisable
  ``exp2`` and the compile-time setting (SLP vectoriser) the CPU kernels need (Chapter 4);
* :mod:`sparse_core.kernels.cpu` -- the fused Numba CPU kernels, forward and backward, grouped-query
  heads included (Chapter 4);
* :mod:`sparse_core.kernels.cuda` -- the Numba CUDA kernels (Chapter 4b);
* :mod:`sparse_core.kernels.cudasim` -- the strict CUDA simulator that grades the GPU puzzles (Chapter 4b).
"""
