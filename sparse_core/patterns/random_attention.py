r"""Random attention: each pair is kept with probability ``density``, independently, per head.

The choice is a deterministic function of ``(seed, h, i, j)`` -- a 32-bit integer hash -- so the
pattern needs no storage, is the same in numpy and torch, and is reproducible: the same seed
always gives the same mask at every length.
"""
from __future__ import annotations

import numpy as np

from .base import Pattern, check_int, check_prob, is_tensor

_M32 = 0xFFFFFFFF


def hash32(seed: int, h, i, j):
    """A 32-bit mix of four integers (elementwise on int64 numpy arrays or torch tensors)."""
    x = (i * 0x9E3779B1 + j * 0x85EBCA77 + h * 0xC2B2AE3D + seed * 0x27D4EB2F) & _M32
    x = ((x ^ (x >> 16)) * 0x7FEB352D) & _M32
    x = ((x ^ (x >> 15)) * 0x846CA68B) & _M32
    return x ^ (x >> 16)


class RandomPattern(Pattern):
    def __init__(self, density: float, seed: int = 0):
        self.density = check_prob("density", density)
        self.seed = check_int("seed", seed, 0) & _M32
        self._threshold = int(round(self.density * (1 << 32)))

    def _mask(self, h, i, j):
        if is_tensor(i) or is_tensor(j) or is_tensor(h):  # torch (also under FlexAttention's tracing)
            import torch

            # the hash needs 64-bit arithmetic: int32 indices would overflow and sign-extend
            i, j, h = (x.to(torch.int64) if is_tensor(x) else x for x in (i, j, h))
            return hash32(self.seed, h, i, j) < self._threshold
        i = np.asarray(i, dtype=np.int64)
        j = np.asarray(j, dtype=np.int64)
        h = np.asarray(h, dtype=np.int64)
        with np.errstate(over="ignore"):  # int64 products wrap; only the low 32 bits are kept
            return hash32(self.seed, h, i, j) < self._threshold

    def _name(self):
        return "random_pattern"

    def _params(self):
        return {"density": self.density, "seed": self.seed}


def random_pattern(density: float, seed: int = 0) -> Pattern:
    """Keep each (head, query, key) with probability ``density`` (seeded, different per head)."""
    return RandomPattern(density, seed)
