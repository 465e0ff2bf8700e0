r"""Native Sparse Attention (Yuan et al. 2025, "Native Sparse Attention: Hardware-Aligned and
Natively Trainable Sparse Attention").

Every query :math:`i` attends through three branches and mixes them with per-token gates
:math:`g^c_i = \sigma(w_c^\top x_i) \in (0, 1)`:

.. math::

    o_i = g^{\mathrm{cmp}}_i\, o^{\mathrm{cmp}}_i + g^{\mathrm{slc}}_i\, o^{\mathrm{slc}}_i
        + g^{\mathrm{win}}_i\, o^{\mathrm{win}}_i .

With blocks :math:`\beta_b = \{bB, \dots, bB + B - 1\} \cap [0, n)` of ``block_size`` :math:`B`:

* **compressed** -- each block becomes one key and one value,
  :math:`\tilde k_b = \varphi_k\big(\operatorname{mean}_{j \in \beta_b} (k_j + p^k_{j - bB})\big)`
  (:math:`p` a learned intra-block position embedding, :math:`\varphi` a learned linear map; the
  same for values), and :math:`o^{\mathrm{cmp}}_i` is softmax attention over the blocks query
  :math:`i` may see: all of them, or if causal only *complete past* blocks,
  :math:`bB + B - 1 \le i` (so early queries see none and get 0, the oracle's empty-row rule);
* **selected** -- the compressed attention probabilities :math:`p^{\mathrm{cmp}}_{ib}` rank the
  blocks; query :math:`i` keeps the ``n_select`` best (ties: smaller block index) and attends to
  every token in them, :math:`S^{\mathrm{slc}} = \{(i, j): \lfloor j/B \rfloor \in
  \operatorname{top}(i)\}`. Causal: candidates are blocks starting at or before :math:`i`, the
  block containing :math:`i` is always selected (its compressed key is not complete yet), and
  :math:`j \le i`;
* **sliding window** -- :math:`|i - j| \le w` (causal :math:`0 \le i - j \le w`), the
  :func:`sparse_core.patterns.sliding_window` set.

Simplifications of the paper, on purpose: compression blocks do not overlap (stride = block
length = selection block size), :math:`\varphi` is mean pooling plus a linear map (the paper uses
a small MLP), selection is per head (the paper shares it within a GQA group), and only the
current block is forced (the paper always activates the first block and two local blocks).

Optionally (``num_mem_kv``) learned memory key/value pairs join the compressed branch, visible to
every query, as in ``native-sparse-attention-pytorch``; with the choices above made there as well,
that package's ``SparseAttention`` (0.2.3) gives the same outputs (``tests/test_approx_nsa.py``), except
that it shows a causal query a block summary only after the block's last token.

Each branch is exact softmax attention over its set, so each equals the dense oracle with the
corresponding mask (and, for the compressed branch, the compressed keys and values).

:class:`NSACore` is the attention core of :class:`NSASelfAttention` and of the distillation's
``nsa`` student. Defined in Chapter 6.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ._common import check_bool, causal_keep, check_qkv, chunked_masked_attention, masked_attention
from .. import _validation as V
from ..attention.cores import AttentionCore
from ..attention.layer import MultiHeadAttention

__all__ = ["compress_blocks", "compressed_keep", "select_blocks", "selected_token_mask", "nsa_branches",
           "nsa_attention", "NSACore", "NSASelfAttention"]


def compress_blocks(x: torch.Tensor, block_size: int, pos: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of ``x_j + pos[j - bB]`` over each block: ``x [..., n, d]`` -> ``[..., ceil(n / B), d]``.

    The last block may be partial (the mean is over its real tokens). ``pos``: ``[B, d]`` or None.
    """
    block_size = V.check_positive_int("block_size", block_size)
    n, d = x.shape[-2:]
    nb = -(-n // block_size)
    if pos is not None:
        if pos.shape != (block_size, d):
            raise ValueError(f"`pos` must have shape [block_size={block_size}, d={d}], got {tuple(pos.shape)}")
        x = x + pos.repeat(nb, 1)[:n]
    pad = nb * block_size - n
    xp = torch.cat([x, x.new_zeros(*x.shape[:-2], pad, d)], dim=-2) if pad else x
    counts = torch.full((nb, 1), float(block_size), dtype=x.dtype, device=x.device)
    counts[-1] = block_size - pad
    return xp.view(*x.shape[:-2], nb, block_size, d).sum(-2) / counts


def compressed_keep(n_q: int, n_blocks: int, block_size: int, causal: bool, device=None) -> torch.Tensor:
    """Boolean ``[n_q, n_blocks]``: may query ``i`` see compressed block ``b``? (causal: ``bB + B - 1 <= i``)."""
    if not causal:
        return torch.ones(n_q, n_blocks, dtype=torch.bool, device=device)
    last = torch.arange(n_blocks, device=device) * block_size + block_size - 1
    return last[None, :] <= torch.arange(n_q, device=device)[:, None]


@torch.no_grad()
def select_blocks(q, k_cmp, block_size: int, n_select: int, scale: float, causal: bool) -> torch.Tensor:
    """Boolean ``[..., n_q, n_blocks]`` of the blocks each query selects (see the module docstring)."""
    n_q, nb = q.shape[-2], k_cmp.shape[-2]
    keep = compressed_keep(n_q, nb, block_size, causal, q.device)
    s = torch.matmul(q, k_cmp.transpose(-1, -2)) * scale
    p = masked_attention(s, keep, torch.eye(nb, dtype=s.dtype, device=s.device))  # probabilities [..., n_q, nb]
    if causal:
        start = torch.arange(nb, device=q.device)[None, :] * block_size
        i = torch.arange(n_q, device=q.device)[:, None]
        cand = start <= i
        current = (i // block_size) == torch.arange(nb, device=q.device)[None, :]
        imp = torch.where(current, torch.full_like(p, math.inf), p)
        imp = torch.where(cand, imp, torch.full_like(p, -math.inf))
    else:
        cand, imp = None, p
    top = torch.sort(imp, dim=-1, descending=True, stable=True).indices[..., : min(n_select, nb)]
    sel = torch.zeros(imp.shape, dtype=torch.bool, device=q.device).scatter_(-1, top, True)
    return sel if cand is None else sel & cand


def selected_token_mask(sel: torch.Tensor, block_size: int, n_k: int, causal: bool, i0: int = 0) -> torch.Tensor:
    """Expand selected blocks ``[..., C, n_blocks]`` to tokens ``[..., C, n_k]`` (queries ``i0:i0+C``)."""
    blk = torch.arange(n_k, device=sel.device) // block_size
    keep = sel[..., blk]
    if causal:
        keep = keep & causal_keep(i0, i0 + sel.shape[-2], 0, n_k, sel.device)
    return keep


def nsa_branches(q, k, v, k_cmp, v_cmp, block_size: int, n_select: int, window: int, scale=None,
                 causal: bool = False, chunk: int = 256, k_mem=None, v_mem=None):
    """The three branch outputs ``(o_cmp, o_slc, o_win)``, each ``[..., n, d_v]``.

    ``q, k [..., n, d]``, ``v [..., n, d_v]``; ``k_cmp [..., n_blocks, d]``, ``v_cmp [..., n_blocks, d_v]``
    with ``n_blocks = ceil(n / block_size)`` (e.g. from :func:`compress_blocks`). ``k_mem [..., m, d]``,
    ``v_mem [..., m, d_v]`` (optional, broadcast over the leading dimensions): memory key/value pairs
    that every query sees in the compressed branch beside the blocks (they take no part in the
    selection), as ``native-sparse-attention-pytorch``'s ``num_compressed_mem_kv``.
    """
    q, k, v, scale = check_qkv(q, k, v, scale, same_length=True)
    block_size = V.check_positive_int("block_size", block_size)
    n_select = V.check_positive_int("n_select", n_select)
    window = V.check_nonnegative_int("window", window)
    chunk = V.check_positive_int("chunk", chunk)
    check_bool("causal", causal)
    n = q.shape[-2]
    nb = -(-n // block_size)
    for name, t, dd in (("k_cmp", k_cmp, q.shape[-1]), ("v_cmp", v_cmp, v.shape[-1])):
        if not isinstance(t, torch.Tensor) or t.ndim < 2 or t.shape[-2:] != (nb, dd):
            raise ValueError(f"`{name}` must be a tensor [..., n_blocks={nb}, {dd}], "
                             f"got {getattr(t, 'shape', type(t).__name__)}")
        if t.dtype != q.dtype:
            raise TypeError(f"`{name}` must have the dtype of `q` ({q.dtype}), got {t.dtype}")
    # compressed (with the memory pairs first, visible to every query)
    keep_c = compressed_keep(n, nb, block_size, causal, q.device)
    kc, vc = k_cmp, v_cmp
    if (k_mem is None) != (v_mem is None):
        raise ValueError("`k_mem` and `v_mem` go together: pass both or neither")
    if k_mem is not None:
        lead = torch.broadcast_shapes(k_cmp.shape[:-2], k_mem.shape[:-2])
        m = k_mem.shape[-2]
        if k_mem.shape[-1] != q.shape[-1] or v_mem.shape[-1] != v.shape[-1] or v_mem.shape[-2] != m:
            raise ValueError(f"`k_mem`, `v_mem` must be [..., m, d={q.shape[-1]}] and [..., m, d_v={v.shape[-1]}], "
                             f"got {tuple(k_mem.shape)} and {tuple(v_mem.shape)}")
        kc = torch.cat([k_mem.expand(*lead, m, q.shape[-1]), k_cmp.expand(*lead, nb, q.shape[-1])], dim=-2)
        vc = torch.cat([v_mem.expand(*lead, m, v.shape[-1]), v_cmp.expand(*lead, nb, v.shape[-1])], dim=-2)
        keep_c = torch.cat([torch.ones(n, m, dtype=torch.bool, device=q.device), keep_c], dim=-1)
    o_cmp = masked_attention(torch.matmul(q, kc.transpose(-1, -2)) * scale, keep_c, vc)
    # selected
    sel = select_blocks(q, k_cmp, block_size, n_select, scale, causal)
    o_slc = chunked_masked_attention(q, k, v, scale,
                                     lambda i0, i1: selected_token_mask(sel[..., i0:i1, :], block_size, n, causal, i0),
                                     chunk)
    # sliding window: only keys within reach of the chunk
    outs = []
    for i0 in range(0, n, chunk):
        i1 = min(i0 + chunk, n)
        j0, j1 = max(0, i0 - window), (i1 if causal else min(n, i1 + window))
        d = torch.arange(i0, i1, device=q.device)[:, None] - torch.arange(j0, j1, device=q.device)[None, :]
        keep = (d >= 0) & (d <= window) if causal else d.abs() <= window
        s = torch.matmul(q[..., i0:i1, :], k[..., j0:j1, :].transpose(-1, -2)) * scale
        outs.append(masked_attention(s, keep, v[..., j0:j1, :]))
    return o_cmp, o_slc, torch.cat(outs, dim=-2)


def nsa_attention(q, k, v, gates, k_cmp, v_cmp, block_size: int, n_select: int, window: int, scale=None,
                  causal: bool = False, chunk: int = 256, k_mem=None, v_mem=None) -> torch.Tensor:
    """Gated sum of the three branches; ``gates [..., n, 3]`` in (0, 1) (cmp, slc, win). -> ``[..., n, d_v]``."""
    if not isinstance(gates, torch.Tensor) or gates.ndim < 2 or gates.shape[-1] != 3 or gates.shape[-2] != q.shape[-2]:
        raise ValueError(f"`gates` must be a tensor [..., n={q.shape[-2]}, 3], got {getattr(gates, 'shape', type(gates).__name__)}")
    branches = nsa_branches(q, k, v, k_cmp, v_cmp, block_size, n_select, window, scale, causal, chunk, k_mem, v_mem)
    return sum(gates[..., c, None] * o for c, o in enumerate(branches))


class NSACore(AttentionCore):
    """Native Sparse Attention on ``(B, nh, T, hs)``; the branch gates come from the layer input ``x``.

    Parameters: intra-block position embeddings ``pos_k``, ``pos_v`` ``[block_size, d_head]``
    (``N(0, pos_std^2)``; 0 keeps them zero), the compression maps ``phi_k``, ``phi_v``
    (``d_head -> d_head``) and the gate ``gate: d_model -> 3 n_heads`` (sigmoid). Stats: the
    compressed blocks seen, the selected tokens and the window tokens (each branch counted, as
    each is computed), ``2 hs`` multiply-adds each. The layer that uses it is defined in Chapter 6.
    """

    def __init__(self, d_model: int, n_heads: int, block_size: int = 32, n_select: int = 4, window: int = 64,
                 causal: bool = False, chunk: int = 256, pos_std: float = 0.02, num_mem_kv: int = 0):
        super().__init__()
        d_head = d_model // n_heads
        self.n_heads = n_heads
        self.block_size = V.check_positive_int("block_size", block_size)
        self.n_select = V.check_positive_int("n_select", n_select)
        self.window = V.check_nonnegative_int("window", window)
        self.causal = check_bool("causal", causal)
        self.chunk = V.check_positive_int("chunk", chunk)
        self.pos_k = nn.Parameter(torch.zeros(block_size, d_head))
        self.pos_v = nn.Parameter(torch.zeros(block_size, d_head))
        if pos_std:
            nn.init.normal_(self.pos_k, std=pos_std)
            nn.init.normal_(self.pos_v, std=pos_std)
        self.phi_k = nn.Linear(d_head, d_head, bias=False)
        self.phi_v = nn.Linear(d_head, d_head, bias=False)
        self.gate = nn.Linear(d_model, 3 * n_heads, bias=True)
        self.num_mem_kv = V.check_nonnegative_int("num_mem_kv", num_mem_kv)
        if self.num_mem_kv:  # learned memory pairs of the compressed branch, per head (zeros, as the reference)
            self.mem_k = nn.Parameter(torch.zeros(n_heads, self.num_mem_kv, d_head))
            self.mem_v = nn.Parameter(torch.zeros(n_heads, self.num_mem_kv, d_head))

    def compressed(self, k, v):
        """Compressed keys and values ``(B, nh, ceil(T / block_size), hs)``."""
        return (self.phi_k(compress_blocks(k, self.block_size, self.pos_k)),
                self.phi_v(compress_blocks(v, self.block_size, self.pos_v)))

    def gates(self, x):
        """Per-token branch gates ``(B, nh, T, 3)`` of the layer input ``x (B, T, C)``."""
        B, T, _ = x.shape
        return torch.sigmoid(self.gate(x)).view(B, T, self.n_heads, 3).transpose(1, 2)

    def forward(self, q, k, v, x=None):
        k_cmp, v_cmp = self.compressed(k, v)
        if self.stats is not None:
            self._count(q, k_cmp)
        mem = (self.mem_k, self.mem_v) if self.num_mem_kv else (None, None)
        return nsa_attention(q, k, v, self.gates(x), k_cmp, v_cmp, self.block_size, self.n_select, self.window,
                             causal=self.causal, chunk=self.chunk, k_mem=mem[0], v_mem=mem[1])

    @torch.no_grad()
    def _count(self, q, k_cmp):
        B, nh, T, hs = q.shape
        scale = 1.0 / math.sqrt(hs)
        cmp = int(compressed_keep(T, k_cmp.shape[-2], self.block_size, self.causal).sum()) * B * nh
        sel = select_blocks(q, k_cmp, self.block_size, self.n_select, scale, self.causal)
        slc = int(selected_token_mask(sel, self.block_size, T, self.causal).sum())
        i = np.arange(T)
        reach = np.minimum(i, self.window) + 1 + (0 if self.causal else np.minimum(T - 1 - i, self.window))
        win = B * nh * int(reach.sum())
        self.stats.update(pairs=cmp + slc + win, macs=(cmp + slc + win) * 2 * hs)

    def extra_repr(self):
        return (f"block_size={self.block_size}, n_select={self.n_select}, window={self.window}, "
                f"causal={self.causal}")


class NSASelfAttention(MultiHeadAttention):
    """Multi-head Native Sparse Attention: ``x [batch, n, d_model] -> [batch, n, d_model]``.

    Parameters beyond ``qkv``/``out``: intra-block position embeddings ``pos_k``, ``pos_v``
    ``[block_size, d_head]``, the compression maps ``phi_k``, ``phi_v`` (``d_head -> d_head``) and the
    gate ``gate: d_model -> 3 n_heads`` (sigmoid) -- those of :class:`NSACore`. Defined in Chapter 6.
    """

    def __init__(self, d_model: int, n_heads: int, block_size: int = 32, n_select: int = 4, window: int = 64,
                 causal: bool = False, chunk: int = 256, bias: bool = True, num_mem_kv: int = 0):
        super().__init__(d_model, n_heads, bias=bias)
        self.set_core(NSACore(d_model, n_heads, block_size, n_select, window, causal, chunk, num_mem_kv=num_mem_kv))
