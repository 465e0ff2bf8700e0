"""Decoding speed: a few new query rows against a long key-value cache, the kernel against dense SDPA.

One step of generation per layer: ``T`` rows (1 when sampling, up to 16 when verifying drafted
tokens) at the end of a cache of ``S`` tokens, ``heads`` query heads (``kv_heads`` key/value heads),
a causal sliding window. Ours: :meth:`sparse_core.attention.cores.BlockSparseCore.rows`, the
path :func:`~sparse_core.models.gpt_neox.generate` takes, with its tables rebuilt every step as in
generation (the cache grows by one token each step, so nothing is reused). Dense:
``torch.nn.functional.scaled_dot_product_attention`` over the whole cache (no mask for one row; the
causal tail mask for several), grouped heads by ``enable_gqa``. Interleaved, medians of per-round
ratios; tokens/s = ``T / step``. Used by ``python -m sparse_core bench kernels`` (Chapter 4).
"""
from __future__ import annotations

import time

__all__ = ["decode_case"]


def decode_case(S: int, T: int, window: int, block_size: int, heads: int, kv_heads: int, d: int, rounds: int,
                steps: int = 20) -> dict:
    import numpy as np
    import torch
    import torch.nn.functional as F

    from .. import patterns as P
    from ..attention.cores import BlockSparseCore

    pattern = P.intersection(P.sliding_window(window, causal=True), P.causal())
    core = BlockSparseCore(pattern, block_size, None, causal=True)
    g = torch.Generator().manual_seed(S + T)
    q = torch.randn(1, heads, T, d, generator=g)
    k, v = (torch.randn(1, kv_heads, S, d, generator=g) for _ in range(2))
    mask = None if T == 1 else torch.arange(S)[None, :] <= torch.arange(S - T, S)[:, None]
    gqa = kv_heads != heads

    def dense():
        for _ in range(steps):
            F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)

    def ours():
        for _ in range(steps):
            core._step_mask = None  # a new step: the tables are built again
            core.rows(q, k, v, S - T)

    with torch.no_grad():
        keep = core.keep(torch.arange(S - T, S), S)  # (1, T, S): the window's rows
        ref = F.scaled_dot_product_attention(q, k, v, attn_mask=keep, enable_gqa=gqa)  # what ours must equal
        err = float((core.rows(q, k, v, S - T) - ref).abs().max())
        fns = {"dense": dense, "ours": ours}
        samples = {name: [] for name in fns}
        for fn in fns.values():
            fn()
        for _ in range(rounds):
            for name, fn in fns.items():
                t0 = time.perf_counter()
                fn()
                samples[name].append((time.perf_counter() - t0) / steps)
    kept_keys = float(keep.sum()) / T  # per row, mean
    med = {name: float(np.median(s)) for name, s in samples.items()}
    flops = 4.0 * T * kept_keys * d * heads
    blocks = len(core._step_mask[1]["indices"]) if core._step_mask is not None else 0
    kv_bytes = 2.0 * blocks * block_size * d * 4 * kv_heads
    return {
        "cache": S, "rows": T, "window": window, "heads": heads, "kv_heads": kv_heads, "d": d,
        "us_per_step": {name: 1e6 * t for name, t in med.items()},
        "tokens_per_s": {name: T / t for name, t in med.items()},
        "speedup_vs_dense": float(np.median([a / b for a, b in zip(samples["dense"], samples["ours"])])),
        "ours_gflops": flops / med["ours"] / 1e9, "ours_gb_per_s": kv_bytes / med["ours"] / 1e9,
        "flops_per_byte": flops / kv_bytes if kv_bytes else None, "max_abs_error_vs_masked_sdpa": err,
    }
