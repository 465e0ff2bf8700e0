"""The students of distillation: GPT-NeoX attention layers with a cheaper attention core.

A student layer is a :class:`sparse_core.models.gpt_neox.Attention` -- the teacher's
``query_key_value``, ``dense`` and rotary embedding -- whose core is one of :data:`STUDENT_CORES`
(``DistillConfig.student``; the table is in :mod:`sparse_core.lm.distill`'s docstring). The
cores' own parameters keep their names under the layer (``layers.{i}.attention.gate.w_q.weight``),
and each core counts what it computes (:func:`record_stats`). Defined in Chapter 10.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
from collections import Counter
from typing import Callable

import torch
from torch import nn

from ..approx._common import causal_pair_count
from ..approx.learned_mask import LearnedMaskCore
from ..approx.nsa import NSACore
from ..approx.performer import FavorCore, gaussian_orthogonal_random_matrix
from ..approx.topk import TopKCore
from ..attention.cores import AttentionCore, BlockSparseCore
from ..models.gpt_neox import Attention, GPTNeoX, GPTNeoXConfig, attention_pattern

__all__ = ["STUDENT_CORES", "StudentAttention", "student_layers", "attention_parameter_names",
           "freeze_all_but_attention", "l1_penalty", "record_stats", "hard_gates"]


# ---------------------------------------------------------------------------- the cores, by student kind
# Each takes (model config, layer index, distillation config) and starts the student as close to the
# teacher as its method allows.

def _mask_core(config: GPTNeoXConfig, index: int, cfg) -> AttentionCore:
    core = LearnedMaskCore(config.head_dim, cfg.hidden, causal=True, chunk=128, init_open=2.0)
    with torch.no_grad():  # near-constant gates (~0.88) at the start: the student starts as the teacher
        nn.init.normal_(core.gate.w_2.weight, std=1e-2)
    return core


def _nsa_core(config: GPTNeoXConfig, index: int, cfg) -> AttentionCore:
    core = NSACore(config.hidden_size, config.num_heads, cfg.nsa_block, cfg.nsa_select, cfg.nsa_window,
                   causal=True, pos_std=0.0)
    with torch.no_grad():  # mean pooling, and gates (cmp, slc, win) = (0.02, 0.5, 0.5) for every token
        nn.init.eye_(core.phi_k.weight)
        nn.init.eye_(core.phi_v.weight)
        nn.init.zeros_(core.gate.weight)
        core.gate.bias.copy_(torch.tensor([-4.0, 0.0, 0.0]).repeat(config.num_heads))
    return core


def _performer_core(config: GPTNeoXConfig, index: int, cfg) -> AttentionCore:
    dh = config.head_dim
    m = cfg.n_features or max(1, int(dh * math.log(dh)))
    g = torch.Generator().manual_seed(cfg.seed * 1000 + index)  # a fixed random matrix per layer
    return FavorCore(gaussian_orthogonal_random_matrix(m, dh, generator=g), causal=True, chunk_size=cfg.chunk_size)


def _topk_core(config: GPTNeoXConfig, index: int, cfg) -> AttentionCore:
    return TopKCore(cfg.topk, causal=True)


def _block_core(config: GPTNeoXConfig, index: int, cfg) -> AttentionCore:
    pc = dataclasses.replace(config, attention=cfg.pattern, window=cfg.window, stride=cfg.stride,
                             block_size=cfg.block_size)
    return BlockSparseCore(attention_pattern(pc), cfg.block_size, config.num_heads, causal=True)


#: student kind -> ``make(model_config, layer_index, distill_config) -> core``
STUDENT_CORES: dict[str, Callable[..., AttentionCore]] = {
    "mask": _mask_core, "nsa": _nsa_core, "performer": _performer_core, "topk": _topk_core, "block": _block_core}


class StudentAttention(Attention):
    """A GPT-NeoX attention layer whose core is the student ``cfg.student`` (see the module docstring
    of :mod:`sparse_core.lm.distill`). Defined in Chapter 10.

    Same ``query_key_value``, ``dense``, rotary embedding and state-dict names as
    :class:`sparse_core.models.gpt_neox.Attention`, plus the core's own parameters. Computes whole
    sequences only (no key-value cache): generate with :func:`sparse_core.lm.distill.generate_full`.
    While recording (:func:`record_stats`) it adds the exact causal baseline, ``causal_pairs`` and
    ``dense_macs`` (``2 hs`` per pair), next to what its core computed.
    """

    def __init__(self, config: GPTNeoXConfig, index: int, cfg):
        super().__init__(config, None, index)
        if cfg.student not in STUDENT_CORES:
            raise ValueError(f"`student` must be one of {', '.join(STUDENT_CORES)}, got {cfg.student!r}")
        self.kind = cfg.student
        self.set_core(STUDENT_CORES[cfg.student](config, index, cfg))

    def forward(self, x, cos, sin, cache=None, pos0: int = 0):
        if cache is not None or pos0 != 0:
            raise ValueError("a distilled student computes whole sequences (no key-value cache); "
                             "use sparse_core.lm.distill.generate_full")
        if self.core.stats is not None:
            pairs = causal_pair_count(x.shape[0], self.n_heads, x.shape[1], True)
            self.core.stats.update(causal_pairs=pairs, dense_macs=pairs * 2 * self.d_head)
        return super().forward(x, cos, sin)

    def extra_repr(self) -> str:
        return f"kind={self.kind}, {super().extra_repr()}"


def student_layers(model: nn.Module) -> list[StudentAttention]:
    """The student attention layers of ``model``, in order."""
    return [m for m in model.modules() if isinstance(m, StudentAttention)]


# ---------------------------------------------------------------------------- what is trained

def _attention_index(name: str) -> bool:
    parts = name.split(".")
    return len(parts) > 3 and parts[0] == "layers" and parts[2] == "attention"


def attention_parameter_names(model: GPTNeoX, mode: str) -> list[str]:
    """Names of the parameters trained in ``mode`` (``"new"`` or ``"attention"``), sorted."""
    if mode not in ("new", "attention"):
        raise ValueError(f"`mode` must be 'new' or 'attention', got {mode!r}")
    names = []
    for name, _ in model.named_parameters():
        if not _attention_index(name):
            continue
        projection = name.split(".")[3] in ("query_key_value", "dense")
        if mode == "attention" or not projection:
            names.append(name)
    return sorted(names)


def freeze_all_but_attention(model: GPTNeoX, mode: str) -> list[str]:
    """Set ``requires_grad`` True exactly on :func:`attention_parameter_names` (False elsewhere);
    returns those names. Raises if there are none. Defined in Chapter 10."""
    names = attention_parameter_names(model, mode)
    if not names:
        raise ValueError(f"no attention parameters to train in mode {mode!r} (does the model have a student "
                         "attention with its own parameters?)")
    keep = set(names)
    for name, p in model.named_parameters():
        p.requires_grad_(name in keep)
        if name not in keep:
            p.grad = None
    return names


def l1_penalty(model: GPTNeoX) -> torch.Tensor | None:
    """Mean over the learned-mask layers of the mean gate of their last forward (None if no such layer)."""
    vals = [m.core.l1_penalty() for m in student_layers(model) if isinstance(m.core, LearnedMaskCore)]
    return torch.stack(vals).mean() if vals else None


@contextlib.contextmanager
def record_stats(model: GPTNeoX):
    """Within the block every student layer adds what it computed to one ``Counter`` (yielded):
    ``pairs`` (attended pairs), ``causal_pairs``, ``macs``, ``dense_macs`` (and ``gate_sum``)."""
    counter: Counter = Counter()
    cores = [m.core for m in student_layers(model)]
    for core in cores:
        core.stats = counter
    try:
        yield counter
    finally:
        for core in cores:
            core.stats = None


@contextlib.contextmanager
def hard_gates(model: GPTNeoX, hard: bool):
    """Within the block the learned-mask students keep exactly the pairs with ``g > 1/2`` (``hard``)."""
    cores = [m.core for m in student_layers(model) if isinstance(m.core, LearnedMaskCore)]
    old = [core.hard for core in cores]
    for core in cores:
        core.hard = hard
    try:
        yield
    finally:
        for core, h in zip(cores, old):
            core.hard = h
