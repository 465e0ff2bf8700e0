"""Contiguous batching: a token stream cut into sequences, and a resumable batch order.

The stream ``t_0 t_1 ... t_{N-1}`` is cut into ``S = (N - 1) // n`` non-overlapping sequences;
sequence ``s`` has inputs ``t[s n : s n + n]`` and targets shifted by one,
``t[s n + 1 : s n + n + 1]``, so every token but the first is predicted exactly once per epoch.
Training visits the sequences in a random order per epoch, drawn from ``(seed, epoch)``; a batch
is a pure function of its step number, so resuming at step ``k`` continues the exact data order
without saving any iterator state.

Sharded across ``world_size`` processes (data-parallel training), ``batch_size`` is the *global*
batch: step ``k`` draws the same ``batch_size`` sequences as a single process would, and rank
``r`` takes the ``r``-th of ``world_size`` equal consecutive slices of them. So N ranks together
see exactly the batch of one rank with the same ``batch_size``, and the order (hence a
checkpoint) does not depend on the number of ranks.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

__all__ = ["TokenBatches", "eval_batches", "num_sequences"]


def num_sequences(n_tokens: int, seq_len: int) -> int:
    return max(0, (n_tokens - 1) // seq_len)


def _check(tokens, seq_len, batch_size):
    tokens = np.asarray(tokens)
    if tokens.ndim != 1 or tokens.dtype.kind not in "iu":
        raise ValueError(f"`tokens` must be a 1-D integer array, got {tokens.dtype} of shape {tokens.shape}")
    for name, v in (("seq_len", seq_len), ("batch_size", batch_size)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v <= 0:
            raise ValueError(f"`{name}` must be a positive integer, got {v!r}")
    return tokens


def _gather(tokens: np.ndarray, seqs: np.ndarray, seq_len: int):
    starts = seqs[:, None] * seq_len + np.arange(seq_len + 1)[None, :]
    chunk = torch.from_numpy(tokens[starts].astype(np.int64))
    return chunk[:, :-1], chunk[:, 1:]


class TokenBatches:
    """Training batches ``(inputs, targets)``, each ``[batch_size, seq_len]`` int64, by step number;
    with ``world_size > 1`` each rank gets its ``[batch_size // world_size, seq_len]`` shard."""

    def __init__(self, tokens, seq_len: int, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1):
        self.tokens = _check(tokens, seq_len, batch_size)
        self.seq_len, self.batch_size, self.seed = int(seq_len), int(batch_size), int(seed)
        self.rank, self.world_size = _check_shard(rank, world_size, self.batch_size)
        self.shard_size = self.batch_size // self.world_size
        self.n_sequences = num_sequences(self.tokens.size, self.seq_len)
        self.steps_per_epoch = self.n_sequences // self.batch_size
        if self.steps_per_epoch == 0:
            raise ValueError(f"{self.tokens.size} tokens make {self.n_sequences} sequences of {seq_len}: fewer than "
                             f"one batch of {batch_size}; use a smaller seq_len or batch_size")
        self._perm: tuple[int, np.ndarray] | None = None

    def order(self, epoch: int) -> np.ndarray:
        if self._perm is None or self._perm[0] != epoch:
            rng = np.random.default_rng([self.seed, epoch])
            self._perm = (epoch, rng.permutation(self.n_sequences))
        return self._perm[1]

    def batch(self, step: int):
        """The batch (this rank's shard of it) of training step ``step`` (0-based); epochs follow each other."""
        epoch, k = divmod(int(step), self.steps_per_epoch)
        start = k * self.batch_size + self.rank * self.shard_size
        seqs = self.order(epoch)[start:start + self.shard_size]
        return _gather(self.tokens, seqs, self.seq_len)

    def describe(self) -> dict:
        """What fixes the global batch order (saved with a checkpoint; no rank or world size in it)."""
        return {"seed": self.seed, "batch_size": self.batch_size, "seq_len": self.seq_len,
                "n_sequences": self.n_sequences, "steps_per_epoch": self.steps_per_epoch}


def _check_shard(rank, world_size, batch_size: int) -> tuple[int, int]:
    for name, v, low in (("rank", rank, 0), ("world_size", world_size, 1)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
            raise ValueError(f"`{name}` must be an integer >= {low}, got {v!r}")
    if rank >= world_size:
        raise ValueError(f"`rank` must be below `world_size`={world_size}, got {rank}")
    if batch_size % world_size:
        raise ValueError(f"`batch_size`={batch_size} (the global batch) must be divisible by the number of "
                         f"processes, {world_size}")
    return int(rank), int(world_size)


def eval_batches(tokens, seq_len: int, batch_size: int, max_batches: int | None = None) -> Iterator:
    """Evaluation batches in order, covering the first ``max_batches * batch_size`` sequences (all
    of them by default; the last batch may be smaller).

    Defined in Chapter 9.
    """
    tokens = _check(tokens, seq_len, batch_size)
    n = num_sequences(tokens.size, seq_len)
    if max_batches is not None:
        n = min(n, max_batches * batch_size)
    for s in range(0, n, batch_size):
        yield _gather(tokens, np.arange(s, min(s + batch_size, n)), seq_len)
