r"""Multi-query associative recall (MQAR; Arora et al. 2023, "Zoology").

A sequence of ``n`` tokens starts with ``P`` key-value pairs ``k_1 v_1 k_2 v_2 ... k_P v_P`` (keys
distinct, from the lower half of the vocabulary; values from the upper half, repeats allowed); the
rest is filler (token 0) in which every key appears once more, in random order at random slots,
each followed by its value. The model reads the sequence causally and, at each queried key, must
predict the value that followed that key in the context: the label of that position is its value
and every other position is unlabelled (:data:`IGNORE`). Answering needs attention from the query
to a position up to ``n`` tokens back, chosen by content: what a sliding window cannot see once
the pair lies beyond the window, and what a fixed-size recurrent state must compress.

Layout of one example (``n = 16``, ``P = 2``; ``.`` is filler, ``_`` unlabelled)::

    x:  k1 v1 k2 v2  .  .  k2 v2  .  .  .  .  k1 v1  .  .
    y:   _  _  _  _  _  _  v2  _  _  _  _  _  v1  _  _  _

Defined in Chapter 11.
"""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["IGNORE", "FILLER", "mqar_examples", "MQARBatches", "check_mqar"]

IGNORE = -100   #: label of unlabelled positions (``F.cross_entropy``'s default ``ignore_index``)
FILLER = 0      #: the token between queries


def check_mqar(seq_len: int, num_kv_pairs: int, vocab_size: int) -> None:
    """Raise ValueError naming the argument when the settings cannot make an example."""
    for name, v in (("seq_len", seq_len), ("num_kv_pairs", num_kv_pairs), ("vocab_size", vocab_size)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v <= 0:
            raise ValueError(f"`{name}` must be a positive integer, got {v!r}")
    if seq_len < 4 * num_kv_pairs:
        raise ValueError(f"`seq_len`={seq_len} is too short for `num_kv_pairs`={num_kv_pairs}: the context and the "
                         f"queries need 4 x {num_kv_pairs} = {4 * num_kv_pairs} tokens")
    if (vocab_size - 1) // 2 < num_kv_pairs:
        raise ValueError(f"`vocab_size`={vocab_size} has {(vocab_size - 1) // 2} keys, fewer than "
                         f"`num_kv_pairs`={num_kv_pairs} distinct keys")


def mqar_examples(rng: np.random.Generator, batch: int, seq_len: int, num_kv_pairs: int,
                  vocab_size: int) -> tuple[np.ndarray, np.ndarray]:
    """``batch`` examples: ``x, y`` int64 arrays ``(batch, seq_len)`` (module docstring)."""
    check_mqar(seq_len, num_kv_pairs, vocab_size)
    P, n = num_kv_pairs, seq_len
    half = (vocab_size - 1) // 2
    keys = np.argsort(rng.random((batch, half)), axis=1)[:, :P] + 1                     # distinct, 1..half
    values = rng.integers(half + 1, min(2 * half + 1, vocab_size), (batch, P))           # upper half
    x = np.full((batch, n), FILLER, dtype=np.int64)
    y = np.full((batch, n), IGNORE, dtype=np.int64)
    x[:, 0:2 * P:2], x[:, 1:2 * P:2] = keys, values
    slots = (n - 2 * P) // 2                                                             # query slots
    chosen = np.argsort(rng.random((batch, slots)), axis=1)[:, :P]                       # distinct slots
    order = np.argsort(rng.random((batch, P)), axis=1)                                   # which key where
    rows = np.arange(batch)[:, None]
    pos = 2 * P + 2 * chosen                                                             # key positions
    x[rows, pos] = keys[rows, order]
    x[rows, pos + 1] = values[rows, order]
    y[rows, pos] = values[rows, order]
    return x, y


class MQARBatches:
    """The engine's batch source: step ``s`` of rank ``r`` is a fixed function of ``(seed, s, r)``,
    so a resumed run sees the same examples; ``held_out`` examples come from another stream."""

    def __init__(self, seq_len: int, num_kv_pairs: int, vocab_size: int, batch_size: int, seed: int = 0,
                 rank: int = 0, world_size: int = 1):
        check_mqar(seq_len, num_kv_pairs, vocab_size)
        if batch_size % world_size:
            raise ValueError(f"`batch_size`={batch_size} must be divisible by the {world_size} processes")
        self.seq_len, self.num_kv_pairs, self.vocab_size = seq_len, num_kv_pairs, vocab_size
        self.batch_size, self.seed, self.rank, self.world_size = batch_size, seed, rank, world_size

    def batch(self, step: int):
        rng = np.random.default_rng([self.seed, 0, step, self.rank])
        x, y = mqar_examples(rng, self.batch_size // self.world_size, self.seq_len, self.num_kv_pairs,
                             self.vocab_size)
        return torch.from_numpy(x), torch.from_numpy(y)

    def held_out(self, batches: int):
        rng = np.random.default_rng([self.seed, 1])
        for _ in range(batches):
            x, y = mqar_examples(rng, self.batch_size, self.seq_len, self.num_kv_pairs, self.vocab_size)
            yield torch.from_numpy(x), torch.from_numpy(y)

    def describe(self) -> dict:
        return {"task": "mqar", "seed": self.seed, "batch_size": self.batch_size, "seq_len": self.seq_len,
                "num_kv_pairs": self.num_kv_pairs, "vocab_size": self.vocab_size}
