"""A small Transformer for the tasks of Chapter 11, with any attention method of the course.

``TaskModel(config)``: token and learned position embeddings, ``n_layers`` pre-LayerNorm blocks
(attention from :func:`sparse_core.approx.methods.make_attention`, then a GELU MLP of
``4 d_model``), a final LayerNorm and a head: per position over the vocabulary
(``n_classes=None``: MQAR, causal) or over ``n_classes`` from the mean of the non-pad positions
(ListOps, bidirectional). Every model of a comparison has the same width, depth and budget; only
``method`` (and its options) changes.

``token_shift``: each position's input also carries the previous token's embedding (a causal
convolution of width 2, like the short convolutions in front of the mixers of Zoology's models).
On MQAR it spares the model learning a previous-token head from absolute positions: the value's
position then holds its key, and recall is one attention hop from the queried key to it, found by
content and as far back as the pair lies -- the part of the task that tests the attention method.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..approx.methods import make_attention, method_options

__all__ = ["TaskModelConfig", "TaskModel"]


@dataclass
class TaskModelConfig:
    vocab_size: int
    max_len: int
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 2
    method: str = "dense"
    options: dict[str, Any] = field(default_factory=dict)
    causal: bool = True
    #: None: a prediction per position over the vocabulary; else classes from the pooled sequence
    n_classes: int | None = None
    pad_id: int = 0
    token_shift: bool = False

    def __post_init__(self):
        for name in ("vocab_size", "max_len", "d_model", "n_layers", "n_heads"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ValueError(f"`{name}` must be a positive integer, got {v!r}")
        method_options(self.method, **self.options)  # names the method and its options, or raises

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class _Block(nn.Module):
    def __init__(self, cfg: TaskModelConfig):
        super().__init__()
        d = cfg.d_model
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = make_attention(cfg.method, d, cfg.n_heads, cfg.max_len, causal=cfg.causal, **cfg.options)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(self, x):                                    # (B, T, C)
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class TaskModel(nn.Module):
    """Defined in Chapter 11."""

    def __init__(self, config: TaskModelConfig):
        super().__init__()
        self.config = config
        d = config.d_model
        self.tok = nn.Embedding(config.vocab_size, d)
        self.pos = nn.Embedding(config.max_len, d)
        self.shift = nn.Linear(d, d, bias=False) if config.token_shift else None
        self.blocks = nn.ModuleList(_Block(config) for _ in range(config.n_layers))
        self.ln = nn.LayerNorm(d)
        self.head = nn.Linear(d, config.n_classes or config.vocab_size)
        nn.init.normal_(self.pos.weight, std=0.02)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """``ids (B, T)`` -> logits ``(B, T, vocab)`` or ``(B, n_classes)``."""
        B, T = ids.shape
        if T > self.config.max_len:
            raise ValueError(f"sequence of {T} tokens is longer than `max_len`={self.config.max_len}")
        e = self.tok(ids)                                                     # (B, T, C)
        x = e + self.pos(torch.arange(T, device=ids.device))
        if self.shift is not None:  # + W e_{t-1} (nothing before the first token)
            x = x + self.shift(torch.nn.functional.pad(e, (0, 0, 1, 0))[:, :-1])
        for block in self.blocks:
            x = block(x)
        x = self.ln(x)
        if self.config.n_classes is None:
            return self.head(x)                                               # (B, T, vocab)
        keep = (ids != self.config.pad_id).unsqueeze(-1).to(x.dtype)          # (B, T, 1)
        pooled = (x * keep).sum(1) / keep.sum(1).clamp(min=1.0)               # (B, C)
        return self.head(pooled)                                              # (B, n_classes)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
