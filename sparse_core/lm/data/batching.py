"""Contiguous batching: a token stream cut into sequences, and a resumable batch order.

The stream ``t_0 t_1 ... t_{N-1}`` is cut into ``S = (N - 1) // n`` non-overlapping sequences;
sequence ``s`` has inputs ``t[s n : s n + n]`` and targets shifted by one,
``t[s n + 1 : s n + n + 1]``, so every token but the first is predicted exactly once per epoch.
Training visits the sequences in a random order per epoch, drawn from ``(seed, epoch)``; a batch
is a pure function of its step number, so resuming at step ``k`` continues the exact data order
without saving any iterator state.
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
    """Training batches ``(inputs, targets)``, each ``[batch_size, seq_len]`` int64, by step number."""

    def __init__(self, tokens, seq_len: int, batch_size: int, seed: int = 0):
        self.tokens = _check(tokens, seq_len, batch_size)
        self.seq_len, self.batch_size, self.seed = int(seq_len), int(batch_size), int(seed)
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
        """The batch of training step ``step`` (0-based); epochs follow each other."""
        epoch, k = divmod(int(step), self.steps_per_epoch)
        seqs = self.order(epoch)[k * self.batch_size:(k + 1) * self.batch_size]
        return _gather(self.tokens, seqs, self.seq_len)


def eval_batches(tokens, seq_len: int, batch_size: int, max_batches: int | None = None) -> Iterator:
    """Evaluation batches in order, covering the first ``max_batches * batch_size`` sequences (all
    of them by default; the last batch may be smaller)."""
    tokens = _check(tokens, seq_len, batch_size)
    n = num_sequences(tokens.size, seq_len)
    if max_batches is not None:
        n = min(n, max_batches * batch_size)
    for s in range(0, n, batch_size):
        yield _gather(tokens, np.arange(s, min(s + batch_size, n)), seq_len)
