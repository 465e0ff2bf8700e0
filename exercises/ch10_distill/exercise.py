# Generated from solutions/ch10_distill/exercise.py by scripts/make_stubs.py.
# This copy is yours: fill in the functions and edit it freely
# (running scripts/make_stubs.py again overwrites it).
"""Chapter 10 -- Distilling sparse attention from a dense teacher.

Fill in each function, then grade it:

    python -m sparse_core grade --chapter 10

Work in torch. Logits are ``[..., vocab]`` (every leading position is one token); gates are
``[..., n_q, n_k]`` with ``n_q == n_k == n`` for causal self-attention (query ``i`` may see keys
``j <= i``). Model parameter names follow :class:`sparse_core.models.GPTNeoX`:
``layers.{i}.attention.query_key_value.weight`` etc.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["kl_divergence", "freeze_all_but_attention", "l1_mask_penalty", "gate_density"]


def kl_divergence(teacher_logits: torch.Tensor, student_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Exercise 10.1 -- distillation loss: mean over tokens of T^2 KL(P_teacher^T || P_student^T), in log space.

    Args:
        teacher_logits: float tensor ``[..., vocab]`` (no gradient needed through it).
        student_logits: float tensor ``[..., vocab]``, same shape.
        temperature: T > 0; both distributions are ``softmax(logits / T)``.

    Returns:
        0-d tensor, differentiable with respect to ``student_logits``:
        ``T^2 * mean_t sum_v p_tv (log p_tv - log q_tv)`` with ``log p = log_softmax(teacher / T)``
        and ``log q = log_softmax(student / T)``, computed in at least float32. Exactly 0 for
        identical logits, finite (no NaN) for logits as large as +-1e4.

    Example:
        >>> t = torch.tensor([[0.0, 0.0], [5.0, 0.0]]); s = torch.zeros(2, 2)
        >>> round(kl_divergence(t, s).item(), 4)   # (0 + KL([0.9933, 0.0067] || [0.5, 0.5])) / 2
        0.3265
        >>> kl_divergence(t, t).item()
        0.0

    Hint: roughly 4 lines. Never take the log of a probability: use log_softmax on both sides.
    """
    raise NotImplementedError("Exercise 10.1: kl_divergence")


def freeze_all_but_attention(model: nn.Module, mode: str = "attention") -> list[str]:
    """Exercise 10.2 -- freeze every parameter except the attention parameters; return their names.

    Args:
        model: a GPT-NeoX model (parameters named ``layers.{i}.attention.<...>``, ``embed_in.weight``,
            ``layers.{i}.post_attention_layernorm.weight``, ...).
        mode: ``"attention"`` -- every parameter of every layer's attention module
            (``layers.{i}.attention.*``); ``"new"`` -- the same minus the teacher's projections
            ``layers.{i}.attention.query_key_value.*`` and ``layers.{i}.attention.dense.*`` (only
            what a student attention adds).

    Returns:
        The sorted list of the trainable names. Afterwards exactly those parameters have
        ``requires_grad == True`` (set it to True even if it was False before); all others False.

    Example:
        >>> m = GPTNeoX(preset("tiny", vocab_size=50, num_layers=1))
        >>> freeze_all_but_attention(m)
        ['layers.0.attention.dense.bias', 'layers.0.attention.dense.weight',
         'layers.0.attention.query_key_value.bias', 'layers.0.attention.query_key_value.weight']

    Hint: roughly 8 lines. Split the name on "."; beware ``post_attention_layernorm``.
    """
    raise NotImplementedError("Exercise 10.2: freeze_all_but_attention")


def l1_mask_penalty(gates: torch.Tensor, lam: float, causal: bool = True) -> torch.Tensor:
    """Exercise 10.3 -- L1 penalty of a learned attention gate: lam * mean of |g| over the allowed pairs.

    Args:
        gates: tensor ``[..., n, n]`` of gate values in [0, 1] (``g_ij`` for query i, key j).
        lam: penalty weight lambda >= 0.
        causal: if True only the pairs ``j <= i`` are allowed (the others are ignored, whatever
            their value); else every pair.

    Returns:
        0-d tensor ``lam * sum_{allowed} |g_ij| / (number of allowed pairs)`` (over every leading
        index too), differentiable with respect to ``gates``.

    Example:
        >>> g = torch.tensor([[0.5, 9.0], [1.0, 0.0]])   # g[0, 1] is a future key: ignored
        >>> l1_mask_penalty(g, 2.0).item()               # 2 * (0.5 + 1 + 0) / 3
        1.0

    Hint: roughly 4 lines. ``torch.ones(n, n, dtype=torch.bool).tril()`` is the causal mask.
    """
    raise NotImplementedError("Exercise 10.3: l1_mask_penalty")


def gate_density(gates: torch.Tensor, threshold: float = 0.5, causal: bool = True) -> float:
    """Exercise 10.4 -- density of a thresholded gate: kept pairs / allowed pairs.

    Args:
        gates: tensor ``[..., n, n]`` of gate values.
        threshold: a pair is kept when ``g_ij > threshold`` (strictly).
        causal: if True the allowed pairs are ``j <= i`` (a future pair never counts); else all.

    Returns:
        Python float in [0, 1]: (allowed pairs with ``g > threshold``) / (allowed pairs), over
        every leading index.

    Example:
        >>> gate_density(torch.tensor([[0.9, 0.9], [0.5, 0.7]]))   # kept: (0,0), (1,1) of 3 allowed
        0.6666666666666666

    Hint: roughly 4 lines.
    """
    raise NotImplementedError("Exercise 10.4: gate_density")
