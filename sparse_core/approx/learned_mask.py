r"""An adaptive learned mask: a small network decides, per pair, how much a query may look at a key.

The gate is a one-hidden-layer MLP on the concatenation :math:`[q_i; k_j]` (shared by the heads):

.. math::

    g_{ij} = \sigma\big(w_2^\top \operatorname{relu}(W_1 [q_i; k_j] + b_1) + b_2\big) \in (0, 1),

computed without forming the concatenation: :math:`W_1 [q_i; k_j] = W_q q_i + W_k k_j`.
It *multiplies the unnormalised attention weights* (equivalently, adds :math:`\log g_{ij}` to the
scores):

.. math::

    o_i = \frac{\sum_j g_{ij}\, e^{s_{ij}} v_j}{\sum_j g_{ij}\, e^{s_{ij}}}
        = \sum_j \operatorname{softmax}_j\big(s_{ij} + \log g_{ij}\big) v_j ,

so :math:`g \equiv 1` is dense attention and :math:`g_{ij} \to 0` removes the pair. The sparsity
pressure is an L1 penalty on the gates, :math:`\lambda \cdot \operatorname{mean}_{(i,j)} g_{ij}`
(:meth:`LearnedMaskSelfAttention.l1_penalty`, over the allowed pairs of the last forward;
:math:`|g| = g`). With ``hard=True`` the gate is thresholded, :math:`S = \{(i, j): g_{ij} > 1/2\}`,
and the layer is exact softmax attention over :math:`S` (the dense oracle with that mask) -- the
inference-time sparse version. The idea follows learned/adaptive attention masks such as
Sukhbaatar et al. 2019 ("Adaptive Attention Span") and the L0/L1-gated sparsification of
Louizos et al. 2018, here in its simplest per-pair form.

Cost: the gate needs ``hidden`` numbers per pair; it is computed ``chunk`` queries at a time.

:class:`LearnedMaskCore` is the attention core of :class:`LearnedMaskSelfAttention` and of the
distillation's ``mask`` student. Defined in Chapter 6.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._common import causal_keep, causal_pair_count, check_bool, check_qkv, masked_attention
from .. import _validation as V
from ..attention.cores import AttentionCore
from ..attention.layer import MultiHeadAttention

__all__ = ["PairGate", "gated_attention", "LearnedMaskCore", "LearnedMaskSelfAttention"]


class PairGate(nn.Module):
    """``g(q, k)``: ``q [..., n_q, d]``, ``k [..., n_k, d]`` -> gate logits ``[..., n_q, n_k]``."""

    def __init__(self, d_head: int, hidden: int = 16, init_open: float = 2.0):
        super().__init__()
        self.w_q = nn.Linear(d_head, hidden, bias=True)  # its bias is b_1
        self.w_k = nn.Linear(d_head, hidden, bias=False)
        self.w_2 = nn.Linear(hidden, 1, bias=True)
        with torch.no_grad():
            self.w_2.bias.fill_(init_open)  # gates start mostly open: sigmoid(2) ~ 0.88

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.w_q(q)[..., :, None, :] + self.w_k(k)[..., None, :, :])
        return self.w_2(h)[..., 0]


def gated_attention(q, k, v, gate_logits_fn, scale=None, causal: bool = False, hard: bool = False,
                    chunk: int = 256):
    """Attention with a multiplicative pair gate ``g = sigmoid(gate_logits_fn(q_chunk, k))``.

    ``q [..., n_q, d]``, ``k [..., n_k, d]``, ``v [..., n_k, d_v]``; ``gate_logits_fn(q, k)``
    returns ``[..., n_q, n_k]`` logits. Returns ``(out [..., n_q, d_v], gate_sum, n_pairs)`` where
    ``gate_sum`` is the (differentiable) sum of ``g`` over the allowed pairs. Soft: weights
    ``g e^s / sum(g e^s)``; hard: exact attention over ``{g > 1/2}`` (i.e. gate logit ``> 0``).
    """
    q, k, v, scale = check_qkv(q, k, v, scale)
    check_bool("causal", causal)
    check_bool("hard", hard)
    chunk = V.check_positive_int("chunk", chunk)
    n_q, n_k = q.shape[-2], k.shape[-2]
    outs, gate_sum, n_pairs = [], q.new_zeros(()), 0
    for i0 in range(0, n_q, chunk):
        i1 = min(i0 + chunk, n_q)
        s = torch.matmul(q[..., i0:i1, :], k.transpose(-1, -2)) * scale
        logits = gate_logits_fn(q[..., i0:i1, :], k)
        keep = causal_keep(i0, i1, 0, n_k, q.device) if causal else None
        g = torch.sigmoid(logits)
        if keep is None:
            gate_sum = gate_sum + g.sum()
            n_pairs += g.numel()
        else:
            gate_sum = gate_sum + torch.where(keep, g, torch.zeros_like(g)).sum()
            n_pairs += int(keep.sum()) * (g.numel() // keep.numel())
        if hard:
            hk = logits > 0
            keep = hk if keep is None else keep & hk
            outs.append(masked_attention(s, keep, v))
        else:
            outs.append(masked_attention(s + F.logsigmoid(logits), keep, v))
    return torch.cat(outs, dim=-2), gate_sum, n_pairs


class LearnedMaskCore(AttentionCore):
    """Attention with a learned pair gate ``gate`` (:class:`PairGate`) on ``(B, nh, T, hs)``.

    Keeps the mean gate of the last forward for :meth:`l1_penalty`. Stats: every allowed pair is
    scored and gated (``hs + hidden`` multiply-adds), soft gating sums every value (``hs`` more),
    hard gating only the kept ones; ``pairs`` counts the pairs with ``g > 1/2`` (the hard set) and
    ``gate_sum`` adds the gates. The layer that uses it is defined in Chapter 6.
    """

    def __init__(self, d_head: int, hidden: int = 16, causal: bool = False, hard: bool = False, chunk: int = 256,
                 init_open: float = 2.0):
        super().__init__()
        self.hidden = V.check_positive_int("hidden", hidden)
        self.causal = check_bool("causal", causal)
        self.hard = check_bool("hard", hard)
        self.chunk = V.check_positive_int("chunk", chunk)
        self.gate = PairGate(d_head, hidden, init_open)
        self._l1 = None

    def forward(self, q, k, v, x=None):
        out, gate_sum, n_pairs = gated_attention(q, k, v, self.gate, causal=self.causal, hard=self.hard,
                                                 chunk=self.chunk)
        self._l1 = gate_sum / max(n_pairs, 1)
        if self.stats is not None:
            self._count(q, k, gate_sum)
        return out

    @torch.no_grad()
    def _count(self, q, k, gate_sum):
        B, nh, T, hs = q.shape
        n_k, c = k.shape[-2], self.chunk
        kept = 0
        for i0 in range(0, T, c):
            open_ = self.gate(q[..., i0:i0 + c, :], k) > 0
            kept += int((open_ & causal_keep(i0, min(i0 + c, T), 0, n_k, q.device) if self.causal else open_).sum())
        allowed = causal_pair_count(B, nh, T, self.causal)
        macs = allowed * (hs + self.hidden) + kept * hs if self.hard else allowed * (2 * hs + self.hidden)
        self.stats.update(pairs=kept, gate_sum=float(gate_sum), macs=macs)

    def l1_penalty(self) -> torch.Tensor:
        """Mean gate value over the allowed pairs of the last forward (differentiable)."""
        if self._l1 is None:
            raise RuntimeError("l1_penalty() needs a forward pass first")
        return self._l1

    def gates(self, q, k) -> torch.Tensor:
        """The gate matrix ``g (B, nh, T, T)`` of ``q, k (B, nh, T, hs)`` (0 where causality forbids)."""
        g = torch.sigmoid(self.gate(q, k))
        if self.causal:
            g = g * causal_keep(0, q.shape[-2], 0, k.shape[-2], q.device)
        return g

    def extra_repr(self):
        return f"hidden={self.hidden}, causal={self.causal}, hard={self.hard}"


class LearnedMaskSelfAttention(MultiHeadAttention):
    """Multi-head attention with a learned pair gate: ``x [batch, n, d_model] -> [batch, n, d_model]``.

    After each forward, :meth:`l1_penalty` returns ``mean g`` over the allowed pairs (a tensor
    with gradient); add ``lambda * layer.l1_penalty()`` to the loss to push gates toward 0.
    ``hard=True`` (typically at inference) keeps exactly the pairs with ``g > 1/2``. Defined in
    Chapter 6.
    """

    def __init__(self, d_model: int, n_heads: int, hidden: int = 16, causal: bool = False,
                 hard: bool = False, chunk: int = 256, bias: bool = True):
        super().__init__(d_model, n_heads, bias=bias)
        self.set_core(LearnedMaskCore(self.d_head, hidden, causal, hard, chunk))

    def l1_penalty(self) -> torch.Tensor:
        """Mean gate value over the allowed pairs of the last forward (differentiable)."""
        return self.core.l1_penalty()

    def gates(self, x: torch.Tensor) -> torch.Tensor:
        """The gate matrix ``g [batch, n_heads, n, n]`` for ``x`` (0 where causality forbids)."""
        self.check_input(x)
        q, k, _ = self.qkv_heads(x)
        return self.core.gates(q, k)
