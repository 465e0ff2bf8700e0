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

:class:`DenseSynthesizerCore` and :class:`RandomSynthesizerCore` are the attention cores of the two
layers (values only: the layers have no query or key projection). No chapter of the course builds
them; they are tested against that oracle in ``tests/test_approx_synthesizer.py``.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ._common import check_bool, masked_attention
from .. import _validation as V
from ..attention.cores import AttentionCore
from ..attention.layer import MultiHeadAttention

__all__ = ["synthesizer_attention", "DenseSynthesizerCore", "RandomSynthesizerCore", "DenseSynthesizerAttention",
           "RandomSynthesizerAttention"]


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


class _SynthesizerCore(AttentionCore):
    """Scores from ``x`` (:meth:`scores`), then ``softmax(scores) v``; sequences of at most ``max_len``."""

    def __init__(self, max_len: int, causal: bool):
        super().__init__()
        self.max_len = V.check_positive_int("max_len", max_len)
        self.causal = check_bool("causal", causal)

    def forward(self, q, k, v, x=None):
        n = x.shape[1]
        if n > self.max_len:
            raise ValueError(f"`x` has n={n} positions; this layer was built for at most max_len={self.max_len}")
        return synthesizer_attention(self.scores(x), v, self.causal)


class DenseSynthesizerCore(_SynthesizerCore):
    """Dense Synthesizer scores ``B (B, nh, T, T)``: row ``i`` is predicted from ``x_i`` alone."""

    def __init__(self, d_model: int, n_heads: int, max_len: int, hidden: int | None = None, causal: bool = False):
        super().__init__(max_len, causal)
        self.n_heads = n_heads
        self.hidden = V.check_positive_int("hidden", hidden if hidden is not None else d_model // n_heads)
        self.w1 = nn.Linear(d_model, n_heads * self.hidden)
        self.w2 = nn.Parameter(torch.empty(n_heads, self.hidden, max_len))
        self.b2 = nn.Parameter(torch.zeros(n_heads, max_len))
        nn.init.uniform_(self.w2, -1 / math.sqrt(self.hidden), 1 / math.sqrt(self.hidden))

    def scores(self, x):
        B, T, _ = x.shape
        h = torch.relu(self.w1(x)).view(B, T, self.n_heads, self.hidden).transpose(1, 2)
        return torch.einsum("bhnr,hrl->bhnl", h, self.w2[..., :T]) + self.b2[:, None, :T]

    def extra_repr(self):
        return f"max_len={self.max_len}, hidden={self.hidden}, causal={self.causal}"


class RandomSynthesizerCore(_SynthesizerCore):
    """Random Synthesizer scores ``R [1, n_heads, T, T]`` (the same for every input): ``N(0, 1)``
    draws from ``seed``, a parameter, or a buffer with ``trainable=False``."""

    def __init__(self, n_heads: int, max_len: int, causal: bool = False, trainable: bool = True, seed: int = 0):
        super().__init__(max_len, causal)
        self.trainable = check_bool("trainable", trainable)
        r = torch.randn(n_heads, self.max_len, self.max_len, generator=torch.Generator().manual_seed(int(seed)))
        if trainable:
            self.R = nn.Parameter(r)
        else:
            self.register_buffer("R", r)

    def scores(self, x):
        n = x.shape[1]
        return self.R[None, :, :n, :n].to(x.dtype)

    def extra_repr(self):
        return f"max_len={self.max_len}, causal={self.causal}, trainable={self.trainable}"


class _SynthesizerLayer(MultiHeadAttention):
    """Values only: the ``value`` projection (``d_model -> d_model``) replaces the fused ``qkv``."""

    def __init__(self, d_model, n_heads, bias):
        super().__init__(d_model, n_heads, bias=bias, qkv_layout=None)
        self.value = nn.Linear(d_model, d_model, bias=bias)

    def qkv_heads(self, x):
        return None, None, self.split_heads(self.value(x))                  # v: (B, nh, T, hs)

    @classmethod
    def from_multihead(cls, *args, **kwargs):
        raise TypeError(f"{cls.__name__} has no query/key projections to copy from nn.MultiheadAttention")


class DenseSynthesizerAttention(_SynthesizerLayer):
    """Dense Synthesizer: ``x [batch, n, d_model] -> [batch, n, d_model]``, ``n <= max_len``."""

    def __init__(self, d_model: int, n_heads: int, max_len: int, hidden: int | None = None,
                 causal: bool = False, bias: bool = True):
        super().__init__(d_model, n_heads, bias)
        self.set_core(DenseSynthesizerCore(d_model, n_heads, max_len, hidden, causal))


class RandomSynthesizerAttention(_SynthesizerLayer):
    """Random Synthesizer: ``x [batch, n, d_model] -> [batch, n, d_model]``, ``n <= max_len``.

    ``R [n_heads, max_len, max_len]`` starts as ``N(0, 1)`` draws from ``seed``; ``trainable=False``
    keeps it fixed (a buffer), as the paper's "fixed random" variant.
    """

    def __init__(self, d_model: int, n_heads: int, max_len: int, causal: bool = False, trainable: bool = True,
                 seed: int = 0, bias: bool = True):
        super().__init__(d_model, n_heads, bias)
        self.set_core(RandomSynthesizerCore(n_heads, max_len, causal, trainable, seed))
