"""``block_sparse_attention``: attention that computes only the blocks a ``BlockLayout`` keeps.

numpy arrays and CPU torch tensors run the fused Numba CPU kernels (:mod:`sparse_core.kernels.cpu`:
register-blocked micro-kernels for the tile products, the softmax between them);
CUDA torch tensors (float32) run the Numba CUDA kernels (:mod:`sparse_core.kernels.cuda`) on the
tensors' memory, zero-copy through ``__cuda_array_interface__``, on the current torch stream.
Both torch paths are ``torch.autograd.Function`` subclasses with a FlashAttention-2-style
backward, so they train. Defined in Chapter 4 (CPU) and Chapter 4b (CUDA).

This module keeps the dispatch and the autograd Functions; the input checks are
:func:`sparse_core.kernels.inputs.check_inputs` and the kernel-ready tables of a layout
:func:`sparse_core.kernels.tables.kernel_tables` (re-exported here, where the chapters import it).
"""
from __future__ import annotations

import math
from typing import Any


from .. import _validation as V
from ..kernels.inputs import check_inputs
from ..kernels.tables import device_tables, kernel_tables
from ..patterns.layout import BlockLayout

__all__ = ["block_sparse_attention", "kernel_tables"]


def _torch():
    import torch

    return torch


def _cpu():
    from ..kernels import cpu  # numba compiles on first use: imported when a CPU kernel runs

    return cpu


def _make_function():
    torch = _torch()

    class BlockSparseAttention(torch.autograd.Function):
        @staticmethod
        def forward(ctx, q, k, v, layout, scale):
            out, lse = _cpu().run_forward(*(x.detach().contiguous().numpy() for x in (q, k, v)), layout, scale)
            out_t, lse_t = torch.from_numpy(out), torch.from_numpy(lse)
            ctx.save_for_backward(q, k, v, out_t, lse_t)
            ctx.layout, ctx.scale = layout, scale
            ctx.mark_non_differentiable(lse_t)
            return out_t, lse_t

        @staticmethod
        def backward(ctx, dout, dlse):
            q, k, v, out, lse = ctx.saved_tensors
            dq, dk, dv = _cpu().run_backward(*(x.detach().contiguous().numpy() for x in (q, k, v, out, lse)),
                                             dout.contiguous().numpy(), ctx.layout, ctx.scale)
            return torch.from_numpy(dq), torch.from_numpy(dk), torch.from_numpy(dv), None, None

    return BlockSparseAttention


def require_cuda_backend(device: Any = "cuda") -> None:
    """Raise a ``RuntimeError`` saying why when the CUDA kernels cannot run (no usable
    ``numba.cuda``: no GPU, no driver)."""
    from ..kernels import cuda as K

    ok, reason = K.available()
    if not ok:
        raise RuntimeError(f"the inputs are CUDA tensors ({device}) but the CUDA kernels cannot run: {reason}")


def _numba_cuda_backend():
    """(views, stream_of, context_of) for torch CUDA tensors: zero-copy Numba views, the current
    torch stream of the device, and that device's Numba context."""
    torch = _torch()
    from numba import cuda

    def views(*tensors):
        return [cuda.as_cuda_array(x, sync=False) for x in tensors]  # zero-copy; same stream, no sync

    def stream_of(device):
        return cuda.external_stream(torch.cuda.current_stream(device).cuda_stream)

    def context_of(device):
        return cuda.gpus[device.index if device.index is not None else torch.cuda.current_device()]

    return views, stream_of, context_of


def _make_cuda_function(backend=None):
    """The autograd Function of the CUDA path. ``backend`` = ``(views, stream_of, context_of)``
    (default :func:`_numba_cuda_backend`); the simulator tests pass host stand-ins (numpy views of
    CPU tensors) to run this same code without a GPU."""
    torch = _torch()

    from ..kernels import cuda as K

    views, stream_of, context_of = backend if backend is not None else _numba_cuda_backend()

    class BlockSparseAttentionCUDA(torch.autograd.Function):
        @staticmethod
        def forward(ctx, q, k, v, layout, scale):
            dev = q.device
            q3, k3, v3 = (x.detach().reshape((-1,) + tuple(x.shape[-2:])).contiguous() for x in (q, k, v))
            BH, n_q, n_k, d_v = q3.shape[0], q3.shape[1], k3.shape[1], v3.shape[2]
            out = torch.zeros((BH, n_q, d_v), device=dev, dtype=torch.float32)
            lse = torch.full((BH, n_q), -math.inf, device=dev, dtype=torch.float32)
            if BH and n_q and n_k:
                tab = device_tables(layout, dev)
                with context_of(dev):
                    names = list(tab)
                    dtab = dict(zip(names, views(*(tab[n] for n in names))))
                    K.launch_forward(*views(q3, k3, v3, out, lse), dtab, layout.block_size, layout.n_heads,
                                     scale, stream=stream_of(dev))
            ctx.save_for_backward(q3, k3, v3, out, lse)
            ctx.layout, ctx.scale, ctx.shapes = layout, scale, (q.shape, k.shape, v.shape)
            lead = tuple(q.shape[:-2])
            lse_t = lse.reshape(lead + (n_q,))
            ctx.mark_non_differentiable(lse_t)
            return out.reshape(lead + (n_q, d_v)), lse_t

        @staticmethod
        def backward(ctx, dout, dlse):
            q3, k3, v3, out, lse = ctx.saved_tensors
            layout, dev = ctx.layout, q3.device
            BH, n_q, n_k = q3.shape[0], q3.shape[1], k3.shape[1]
            group = BH // max(1, k3.shape[0])
            dq = torch.zeros_like(q3)  # dk, dv per query head; a group's share is summed below
            dk = torch.zeros((BH,) + tuple(k3.shape[1:]), device=dev, dtype=torch.float32)
            dv = torch.zeros((BH,) + tuple(v3.shape[1:]), device=dev, dtype=torch.float32)
            if BH and n_q and n_k:
                do3 = dout.reshape(out.shape).to(torch.float32).contiguous()
                delta, lse2 = torch.empty_like(lse), torch.empty_like(lse)
                tab = device_tables(layout, dev)
                with context_of(dev):
                    names = list(tab)
                    dtab = dict(zip(names, views(*(tab[n] for n in names))))
                    K.launch_backward(*views(q3, k3, v3, out, lse, do3, dq, dk, dv, delta, lse2), dtab,
                                      layout.block_size, layout.n_heads, ctx.scale, stream=stream_of(dev))
            sq, sk, sv = ctx.shapes
            if group > 1:
                dk = dk.view((k3.shape[0], group) + tuple(k3.shape[1:])).sum(1)
                dv = dv.view((v3.shape[0], group) + tuple(v3.shape[1:])).sum(1)
            return dq.reshape(sq), dk.reshape(sk), dv.reshape(sv), None, None

    return BlockSparseAttentionCUDA


_FUNCTION = None
_CUDA_FUNCTION = None


def block_sparse_attention(q: Any, k: Any, v: Any, layout: BlockLayout, scale: float | None = None,
                           *, return_lse: bool = False) -> Any:
    """Attention over the blocks ``layout`` keeps, with the token mask inside partial blocks.

    Parameters
    ----------
    q, k, v:
        ``[batch, heads, n_q, d]``, ``[batch, kv_heads, n_k, d]``, ``[batch, kv_heads, n_k, d_v]``
        (or without the batch dimension), float32 or float64, numpy arrays or CPU torch tensors
        (differentiable); or float32 CUDA torch tensors (differentiable; run by the Numba CUDA
        kernels). Non-contiguous inputs are copied. ``kv_heads`` divides ``heads``
        (grouped-query attention, FlexAttention's ``enable_gqa``): query head ``h`` uses key/value
        head ``h // (heads // kv_heads)``; ``kv_heads = 1`` is multi-query attention. Both the CPU
        and the CUDA kernels read the shared heads in place (no copy per query head).
    layout:
        ``pattern.to_layout(n_q, n_k, block_size, n_heads)``; ``n_heads`` must equal the inputs'
        heads, or be 1 to share one layout across heads.
    scale:
        Score multiplier, ``1/sqrt(d)`` by default.

    Returns ``out`` ``[..., n_q, d_v]`` in the inputs' dtype (and ``lse`` ``[..., n_q]`` if asked;
    ``-inf`` on fully masked rows, whose output and gradient are zero).
    """
    global _FUNCTION, _CUDA_FUNCTION
    backend = check_inputs(q, k, v, layout)
    scale = V.check_scale(scale, q.shape[-1])
    if backend == "numpy":
        out, lse = _cpu().run_forward(q, k, v, layout, scale)
    elif q.device.type == "cuda":
        require_cuda_backend(q.device)
        if _CUDA_FUNCTION is None:
            _CUDA_FUNCTION = _make_cuda_function()
        out, lse = _CUDA_FUNCTION.apply(q, k, v, layout, scale)
    else:
        if _FUNCTION is None:
            _FUNCTION = _make_function()
        out, lse = _FUNCTION.apply(q, k, v, layout, scale)
    return (out, lse) if return_lse else out
