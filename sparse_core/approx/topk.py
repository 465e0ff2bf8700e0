r"""Top-:math:`k` attention: each query keeps only its :math:`k` largest scores.

.. math::

    S = \{(i, j) : j \in \operatorname{top}_k(s_{i,\cdot})\}, \qquad
    o_i = \sum_{j : (i,j) \in S} \operatorname{softmax}_{S}(s_{i\cdot})_j \, v_j .

Ties are broken toward the **smaller key index** (the order of a stable sort by descending score,
the same rule as :func:`sparse_core.patterns.topk`). With ``causal=True`` only keys ``j <= i``
compete; a query with fewer than :math:`k` of them keeps them all. The selection itself is not
differentiable; gradients flow through the kept scores (as in Gupta et al. 2021, "Memory-efficient
Transformers via Top-k Attention", and Wang et al. 2022, "KVT").

Two implementations, equal up to rounding of the scores:

* :func:`topk_attention` -- materialises the ``[n_q, n_k]`` scores (clear, for reference);
* :func:`topk_attention_blockwise` -- streams over key blocks keeping a running top-:math:`k`
  (values and indices) per query, then gathers the :math:`k` chosen keys and values: peak memory
  ``block_size * (k + block_size)`` scores per batch-head; the ``n x n`` matrix never exists.

:class:`TopKCore` is the attention core of the layer :class:`TopKSelfAttention` (and of the
distillation's top-k student). Defined in Chapter 6.
"""
from __future__ import annotations

import math

import torch

from ._common import causal_pair_count, check_bool, check_qkv, masked_attention
from .. import _validation as V
from ..attention.cores import AttentionCore
from ..attention.layer import MultiHeadAttention

__all__ = ["topk_attention", "topk_attention_blockwise", "topk_mask", "mask_from_scores", "TopKCore",
           "TopKSelfAttention"]


def _stable_topk(s: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the ``k`` largest entries of the last axis, ties to the smaller index."""
    return torch.sort(s, dim=-1, descending=True, stable=True).indices[..., :k]


def topk_mask(q, k, topk: int, scale=None, causal: bool = False) -> torch.Tensor:
    """The boolean ``[..., n_q, n_k]`` mask of the pairs :func:`topk_attention` keeps."""
    q, k, _, scale = check_qkv(q, k, k, scale)
    topk = V.check_positive_int("topk", topk)
    check_bool("causal", causal)
    s = torch.matmul(q, k.transpose(-1, -2)).detach() * scale
    return mask_from_scores(s, topk, causal)


def mask_from_scores(s: torch.Tensor, topk: int, causal: bool = False) -> torch.Tensor:
    """Boolean ``[..., n_q, n_k]``: the ``topk`` largest of the scores ``s`` in each row (ties to the
    smaller key index; causal: among keys ``j <= i`` only)."""
    n_q, n_k = s.shape[-2:]
    allowed = None
    if causal:
        allowed = torch.arange(n_k, device=s.device)[None, :] <= torch.arange(n_q, device=s.device)[:, None]
        s = torch.where(allowed, s, torch.full((), -math.inf, dtype=s.dtype, device=s.device))
    keep = torch.zeros(s.shape, dtype=torch.bool, device=s.device)
    keep.scatter_(-1, _stable_topk(s, min(topk, n_k)), True)
    return keep if allowed is None else keep & allowed


def topk_attention(q, k, v, topk: int, scale=None, causal: bool = False) -> torch.Tensor:
    """Exact top-``k`` attention (dense scores).

    ``q [..., n_q, d]``, ``k [..., n_k, d]``, ``v [..., n_k, d_v]`` -> ``[..., n_q, d_v]`` in the
    input dtype. Equals ``reference.attention(q, k, v, mask=topk_mask(q, k, topk, scale, causal))``.
    """
    q, k, v, scale = check_qkv(q, k, v, scale)
    topk = V.check_positive_int("topk", topk)
    check_bool("causal", causal)
    s = torch.matmul(q, k.transpose(-1, -2)) * scale
    return masked_attention(s, mask_from_scores(s.detach(), topk, causal), v)


def topk_attention_blockwise(q, k, v, topk: int, scale=None, causal: bool = False,
                             block_size: int = 64) -> torch.Tensor:
    """Top-``k`` attention without the ``n_q x n_k`` score matrix.

    For each tile of ``block_size`` queries, key blocks are scanned in order; the running best
    ``k`` (score, index) pairs are merged with each new block by a stable sort, so ties keep the
    smaller index exactly as in :func:`topk_attention`. The chosen keys and values are then gathered
    (``[tile, k, d]``) and the softmax is taken over them. Causal: key blocks after the tile are
    skipped and keys ``j > i`` get score ``-inf`` (never kept).
    Shapes as :func:`topk_attention`.
    """
    q, k, v, scale = check_qkv(q, k, v, scale)
    topk = V.check_positive_int("topk", topk)
    block_size = V.check_positive_int("block_size", block_size)
    check_bool("causal", causal)
    n_q, n_k = q.shape[-2], k.shape[-2]
    kk = min(topk, n_k)
    lead = q.shape[:-2]
    dev = q.device
    outs = []
    for i0 in range(0, n_q, block_size):
        i1 = min(i0 + block_size, n_q)
        qb = q[..., i0:i1, :]
        best_s = qb.new_empty(*lead, i1 - i0, 0)
        best_i = torch.empty(*lead, i1 - i0, 0, dtype=torch.long, device=dev)
        j_end = min(n_k, i1) if causal else n_k
        with torch.no_grad():
            for j0 in range(0, j_end, block_size):
                j1 = min(j0 + block_size, j_end)
                s = torch.matmul(qb, k[..., j0:j1, :].transpose(-1, -2)) * scale
                if causal:
                    s = s.masked_fill(~(torch.arange(j0, j1, device=dev)[None, :]
                                        <= torch.arange(i0, i1, device=dev)[:, None]), -math.inf)
                idx = torch.arange(j0, j1, device=dev).expand(*s.shape)
                cat_s, cat_i = torch.cat([best_s, s], -1), torch.cat([best_i, idx], -1)
                order = _stable_topk(cat_s, min(kk, cat_s.shape[-1]))
                best_s, best_i = cat_s.gather(-1, order), cat_i.gather(-1, order)
        # gather the chosen keys/values: [..., tile, k, d]
        flat = best_i.reshape(*lead, -1)
        kg = k.gather(-2, flat[..., None].expand(*flat.shape, k.shape[-1])).view(*best_i.shape, k.shape[-1])
        vg = v.gather(-2, flat[..., None].expand(*flat.shape, v.shape[-1])).view(*best_i.shape, v.shape[-1])
        s = torch.einsum("...cd,...ckd->...ck", qb, kg) * scale
        keep = (best_i <= torch.arange(i0, i1, device=dev)[:, None]) if causal else None
        o = masked_attention(s[..., None, :], None if keep is None else keep[..., None, :], vg)
        outs.append(o[..., 0, :])
    return torch.cat(outs, dim=-2)


class TopKCore(AttentionCore):
    """Top-``topk`` attention on ``(B, nh, T, hs)``: :func:`topk_attention` (``block_size=None``) or
    :func:`topk_attention_blockwise`. Stats: every allowed score is computed (``hs`` multiply-adds
    per pair), ``topk`` values per query are summed. The layer that uses it is defined in Chapter 6."""

    def __init__(self, topk: int, causal: bool = False, block_size: int | None = None):
        super().__init__()
        self.topk = V.check_positive_int("topk", topk)
        self.causal = check_bool("causal", causal)
        self.block_size = None if block_size is None else V.check_positive_int("block_size", block_size)

    def forward(self, q, k, v, x=None):
        if self.block_size is not None:
            return topk_attention_blockwise(q, k, v, self.topk, causal=self.causal, block_size=self.block_size)
        s = torch.matmul(q, k.transpose(-1, -2)) * (1.0 / math.sqrt(q.shape[-1]))  # (B, nh, T, T)
        keep = mask_from_scores(s.detach(), self.topk, self.causal)
        if self.stats is not None:
            B, nh, T, hs = q.shape
            kept = int(keep.sum())
            self.stats.update(pairs=kept, macs=causal_pair_count(B, nh, T, self.causal) * hs + kept * hs)
        return masked_attention(s, keep, v)

    def extra_repr(self):
        return f"topk={self.topk}, causal={self.causal}, block_size={self.block_size}"


class TopKSelfAttention(MultiHeadAttention):
    """Multi-head self-attention keeping the ``topk`` largest scores per query. Defined in Chapter 6.

    ``x [batch, n, d_model] -> [batch, n, d_model]``; interface of ``SparseSelfAttention``.
    ``block_size=None`` uses the dense-score version, an integer the blockwise one.
    """

    def __init__(self, d_model: int, n_heads: int, topk: int, causal: bool = False,
                 block_size: int | None = None, bias: bool = True):
        super().__init__(d_model, n_heads, bias=bias)
        self.set_core(TopKCore(topk, causal, block_size))
