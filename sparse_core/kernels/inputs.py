"""Input checks shared by the block-sparse entry points (:mod:`sparse_core.attention.ops` and
:func:`sparse_core.kernels.cuda.attention_numpy`)."""
from __future__ import annotations

from typing import Any

import numpy as np

from .. import _validation as V
from ..patterns.layout import BlockLayout

__all__ = ["check_inputs"]


def check_inputs(q: Any, k: Any, v: Any, layout: BlockLayout) -> str:
    """Check the inputs of :func:`~sparse_core.attention.ops.block_sparse_attention` and return their
    backend (``"numpy"`` or ``"torch"``); raise a one-line ``TypeError``/``ValueError`` naming the
    argument otherwise. ``k`` and ``v`` may have fewer heads than ``q`` (a divisor of its heads:
    grouped-query or multi-query attention). Chapter 4 calls the kernels it guards."""
    backend = V.backend_of(q=q, k=k, v=v)
    if not isinstance(layout, BlockLayout):
        raise TypeError(f"`layout` must be a BlockLayout (pattern.to_layout(...)), got {type(layout).__name__}")
    for name, x in (("q", q), ("k", k), ("v", v)):
        if x.ndim not in (3, 4):
            raise ValueError(f"`{name}` must be [batch, heads, n, d] (or [heads, n, d]), got shape {tuple(x.shape)}")
        if backend == "torch":
            if x.device != q.device:
                raise ValueError(f"`{name}` is on {x.device} but `q` is on {q.device}; put q, k, v on one device")
            if x.device.type == "cuda":
                if x.dtype != _torch().float32:
                    raise TypeError(f"`{name}` is a CUDA tensor of dtype {x.dtype}; the CUDA kernels take "
                                    "float32 (cast it first)")
                continue
            if x.device.type != "cpu":
                raise ValueError(f"`{name}` is on {x.device}; block_sparse_attention runs on the CPU "
                                 "or on CUDA devices")
            ok = x.dtype in (_torch().float32, _torch().float64)
        else:
            ok = x.dtype in (np.float32, np.float64)
        if not ok:
            raise TypeError(f"`{name}` must be float32 or float64, got {x.dtype} (cast it first)")
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"`q`, `k`, `v` must share one dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.ndim == k.ndim == v.ndim):
        raise ValueError("`q`, `k`, `v` must have the same number of dimensions")
    if q.shape[:-3] != k.shape[:-3] or k.shape[:-2] != v.shape[:-2]:
        raise ValueError(f"batch/head dimensions differ: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
    if (q.shape[-3] % k.shape[-3]) if k.shape[-3] else q.shape[-3]:
        raise ValueError(f"`k` and `v` must have a number of heads dividing the {q.shape[-3]} heads of `q` "
                         f"(grouped-query attention), got {k.shape[-3]}")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"`k` must have the head dimension of `q` ({q.shape[-1]}), got {tuple(k.shape)}")
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"`v` must have as many rows as `k` ({k.shape[-2]}), got {tuple(v.shape)}")
    heads = q.shape[-3]
    if (q.shape[-2], k.shape[-2]) != (layout.n_q, layout.n_k):
        raise ValueError(f"`layout` is for n_q={layout.n_q}, n_k={layout.n_k}; the inputs have "
                         f"n_q={q.shape[-2]}, n_k={k.shape[-2]}")
    if layout.n_heads not in (1, heads):
        raise ValueError(f"`layout` has {layout.n_heads} heads; the inputs have {heads}")
    return backend


def _torch():
    import torch

    return torch
