r"""Synthesizer attention (Tay et al. 2021, "Synthesizer: Rethinking Self-Attention for Transformer
Models"): attention weights that do not come from query-key dot products.

* **Dense** -- each token predicts its own row of scores from itself alone, per head :math:`h`:
  :math:`B_i = W_2\, \operatorname{relu}(W_1 x_i + b_1) + b_2 \in \mathbb{R}^{\ell}`;
* **Random** -- the scores are a matrix :math:`R \in \mathbb{R}^{\ell \times \ell}` per head,
  learned (or fixed at its random initialisation, ``trainable=False``) and independent of the input.

Both then do :math:`o_i = \sum_j \operatorname{softmax}_j(s_{ij})\, v_j` with
:math:`s_{ij} = B_i[j]` or :math:`R_{ij}`, :math:`v_j = W_V x_j`, over :math:`j < n`
(:math:`j \le i` if causal). :math:`\ell` = ``max_len`` is the longest sequence the layer accepts;
shorter ones use the leading :math:`n` entries. :func:`synthesizer_attention` is the shared core:
with :math:`q = s` and :math:`k = I_n` it is the dense oracle with ``scale=1``.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ._common import HeadsAttention, check_bool, masked_attention
from .. import _validation as V

__all__ = ["synthesizer_attention", "DenseSynthesizerAttention", "RandomSynthesizerAttention"]


def synthesizer_attention(scores: torch.Tensor, v: torch.Tensor, causal: bool = False) -> torch.Tensor:
    """``softmax(scores) @ v`` (causal: over ``j <= i``). ``scores [..., n, n]``, ``v [..., n, d_v]`` -> ``[..., n, d_v]``."""
    for name, t in (("scores", scores), ("v", v)):
        if not isinstance(t, torch.Tensor) or t.ndim < 2:
            raise ValueError(f"`{name}` must be a tensor with at least 2 dimensions, got {getattr(t, 'shape', type(t).__name__)}")
        V.check_float(name, t)
    n = v.shape[-2]
    if scores.shape[-2:] != (n, n):
        raise ValueError(f"`scores` must have shape [..., n, n] with n={n} (the rows of v), got {tuple(scores.shape)}")
    check_bool("causal", causal)
    keep = None
    if causal:
        keep = torch.arange(n, device=v.device)[None, :] <= torch.arange(n, device=v.device)[:, None]
    return masked_attention(scores, keep, v)


class _SynthesizerBase(HeadsAttention):
    def __init__(self, d_model, n_heads, max_len, causal, bias):
        super().__init__(d_model, n_heads, bias)
        self.max_len = V.check_positive_int("max_len", max_len)
        self.causal = check_bool("causal", causal)
        # only values are needed; keep `qkv`'s place for a uniform interface but drop q and k
        del self.qkv
        self.value = nn.Linear(d_model, d_model, bias=bias)

    def forward(self, x):
        self.check_input(x)
        n = x.shape[1]
        if n > self.max_len:
            raise ValueError(f"`x` has n={n} positions; this layer was built for at most max_len={self.max_len}")
        v = self.split_heads(self.value(x))
        return self.out(self.merge_heads(synthesizer_attention(self.scores(x), v, self.causal)))

    @classmethod
    def from_multihead(cls, *args, **kwargs):
        raise TypeError(f"{cls.__name__} has no query/key projections to copy from nn.MultiheadAttention")


class DenseSynthesizerAttention(_SynthesizerBase):
    """Dense Synthesizer: ``x [batch, n, d_model] -> [batch, n, d_model]``, ``n <= max_len``."""

    def __init__(self, d_model: int, n_heads: int, max_len: int, hidden: int | None = None,
                 causal: bool = False, bias: bool = True):
        super().__init__(d_model, n_heads, max_len, causal, bias)
        self.hidden = V.check_positive_int("hidden", hidden if hidden is not None else d_model // n_heads)
        self.w1 = nn.Linear(d_model, n_heads * self.hidden)
        self.w2 = nn.Parameter(torch.empty(n_heads, self.hidden, max_len))
        self.b2 = nn.Parameter(torch.zeros(n_heads, max_len))
        nn.init.uniform_(self.w2, -1 / math.sqrt(self.hidden), 1 / math.sqrt(self.hidden))

    def scores(self, x):
        """``B [batch, n_heads, n, n]``: row ``i`` is predicted from ``x_i`` alone."""
        b, n, _ = x.shape
        h = torch.relu(self.w1(x)).view(b, n, self.n_heads, self.hidden).transpose(1, 2)
        return torch.einsum("bhnr,hrl->bhnl", h, self.w2[..., :n]) + self.b2[:, None, :n]

    def extra_repr(self):
        return f"d_model={self.d_model}, n_heads={self.n_heads}, max_len={self.max_len}, hidden={self.hidden}, causal={self.causal}"


class RandomSynthesizerAttention(_SynthesizerBase):
    """Random Synthesizer: ``x [batch, n, d_model] -> [batch, n, d_model]``, ``n <= max_len``.

    ``R [n_heads, max_len, max_len]`` starts as ``N(0, 1)`` draws from ``seed``; ``trainable=False``
    keeps it fixed (a buffer), as the paper's "fixed random" variant.
    """

    def __init__(self, d_model: int, n_heads: int, max_len: int, causal: bool = False, trainable: bool = True,
                 seed: int = 0, bias: bool = True):
        super().__init__(d_model, n_heads, max_len, causal, bias)
        self.trainable = check_bool("trainable", trainable)
        r = torch.randn(n_heads, max_len, max_len, generator=torch.Generator().manual_seed(int(seed)))
        if trainable:
            self.R = nn.Parameter(r)
        else:
            self.register_buffer("R", r)

    def scores(self, x):
        """``R [1, n_heads, n, n]`` (the same for every input)."""
        n = x.shape[1]
        return self.R[None, :, :n, :n].to(x.dtype)

    def extra_repr(self):
        return f"d_model={self.d_model}, n_heads={self.n_heads}, max_len={self.max_len}, causal={self.causal}, trainable={self.trainable}"
