r"""BigBird (Zaheer et al., 2020) at block granularity.

The sequence is cut into blocks of ``block_size``. Query block :math:`a` keeps key block
:math:`b` when

* :math:`|a - b| \le \lfloor \text{window\_blocks} / 2 \rfloor` (a window of 3 blocks by default),
* :math:`a` or :math:`b` is one of the first or last ``num_global_blocks`` blocks (global), or
* :math:`b` is one of the ``num_random_blocks`` random blocks of row :math:`a` (not for global
  rows), drawn per head without repetition among the blocks that are neither global nor in the
  window.

The random choice is a *plan*, an int array ``[n_heads, n_blocks, num_random_blocks]`` (-1 =
unused slot). It is drawn from ``seed`` or passed in explicitly (to reproduce another
implementation's choice).
"""
from __future__ import annotations

import numpy as np

from .base import BlockTablePattern, Pattern, check_int
from .layout import ceil_div


def sample_plan(n_blocks: int, num_random_blocks: int, num_global_blocks: int = 1, window_blocks: int = 3,
                n_heads: int = 1, seed: int = 0) -> np.ndarray:
    """Draw a random-block plan: per head and non-global row, distinct blocks outside window and globals.

    Defined in Chapter 5 (Exercise 5.4).
    """
    r = check_int("num_random_blocks", num_random_blocks, 0)
    g = num_global_blocks
    half = window_blocks // 2
    plan = np.full((n_heads, n_blocks, r), -1, dtype=np.int64)
    middle = np.arange(g, max(g, n_blocks - g))
    for h in range(n_heads):
        rng = np.random.default_rng([seed, h])
        for a in range(g, n_blocks - g):
            candidates = middle[np.abs(middle - a) > half]
            take = min(r, candidates.size)
            if take:
                plan[h, a, :take] = rng.choice(candidates, size=take, replace=False)
    return plan


def _fewest_candidates(n_blocks: int, g: int, window_blocks: int) -> int | None:
    """The fewest random-block candidates of any non-global row (None when every row is global).

    A row draws from the ``M = n_blocks - 2 g`` middle blocks outside its window of
    ``2 (window_blocks // 2) + 1`` blocks; the central row has its whole window (or all ``M``)
    inside the middle, so it has the fewest: ``max(0, M - window)``.
    """
    middle = n_blocks - 2 * g
    if middle <= 0:
        return None
    return max(0, middle - (2 * (window_blocks // 2) + 1))


def max_random_blocks(seq_len: int, block_size: int, num_global_blocks: int = 1, window_blocks: int = 3) -> int:
    """The most random blocks every non-global row of a BigBird pattern can hold (distinct, outside its
    window and the globals); ``bigbird`` refuses more. When every row is global none are needed,
    and the number of blocks is returned.
    """
    nb = ceil_div(check_int("seq_len", seq_len, 1), check_int("block_size", block_size, 1))
    fewest = _fewest_candidates(nb, check_int("num_global_blocks", num_global_blocks, 0),
                                check_int("window_blocks", window_blocks, 1))
    return nb if fewest is None else fewest


def _check_random_fits(seq_len, block_size, nb, r, g, w) -> None:
    """Refuse a num_random_blocks that some row cannot hold (DeepSpeed raises too; drawing fewer would
    silently build another pattern than the one asked for)."""
    fewest = _fewest_candidates(nb, g, w)
    if r == 0 or fewest is None or fewest >= r:
        return
    need = r + 2 * g + 2 * (w // 2) + 1  # blocks for which the central row has r candidates
    raise ValueError(
        f"`num_random_blocks`={r} cannot be placed: seq_len={seq_len} in blocks of {block_size} is {nb} blocks, and "
        f"with {g} global block(s) at each end and a window of {w} blocks some row has only {fewest} other "
        f"block(s) to draw from; use num_random_blocks <= {fewest} or seq_len >= {need * block_size}")


class BigBird(BlockTablePattern):
    def __init__(self, seq_len, block_size, num_random_blocks, num_global_blocks, window_blocks, seed, n_heads, plan):
        self.seq_len = check_int("seq_len", seq_len, 1)
        self.block_size = check_int("block_size", block_size, 1)
        r = check_int("num_random_blocks", num_random_blocks, 0)
        g = check_int("num_global_blocks", num_global_blocks, 0)
        w = check_int("window_blocks", window_blocks, 1)
        heads = check_int("n_heads", n_heads, 1)
        nb = ceil_div(self.seq_len, self.block_size)
        if 2 * g > nb:
            raise ValueError(f"`num_global_blocks`={g} needs at least {2 * g} blocks, the sequence has {nb}")
        if plan is None:
            _check_random_fits(self.seq_len, self.block_size, nb, r, g, w)
            plan = sample_plan(nb, r, g, w, heads, check_int("seed", seed, 0))
        else:
            plan = np.asarray(plan)
            if plan.ndim == 2:
                plan = plan[None]
            if plan.ndim != 3 or plan.shape[:2] != (heads, nb) or plan.dtype.kind not in "iu":
                raise ValueError(f"`plan` must be an integer array [n_heads={heads}, n_blocks={nb}, r], "
                                 f"got {plan.dtype} {plan.shape}")
            if plan.size and (plan.min() < -1 or plan.max() >= nb):
                raise ValueError(f"`plan` entries must be key block indices in [0, {nb}) or -1, got range "
                                 f"[{plan.min()}, {plan.max()}]")
            plan = plan.astype(np.int64)
        self.plan = plan
        self.num_random_blocks, self.num_global_blocks, self.window_blocks, self.seed = plan.shape[2], g, w, seed
        a = np.arange(nb)
        table = np.abs(a[:, None] - a[None, :]) <= w // 2
        is_global = (a < g) | (a >= nb - g)
        table = table | is_global[:, None] | is_global[None, :]
        table = np.repeat(table[None], heads, axis=0)
        hh, rows, slots = np.nonzero(plan >= 0)
        keep = ~is_global[rows]
        table[hh[keep], rows[keep], plan[hh[keep], rows[keep], slots[keep]]] = True
        super().__init__(table, self.block_size)
        self.n_heads = heads if heads > 1 else None

    def _name(self):
        return "bigbird"

    def _params(self):
        return {"seq_len": self.seq_len, "block_size": self.block_size, "num_random_blocks": self.num_random_blocks,
                "num_global_blocks": self.num_global_blocks, "window_blocks": self.window_blocks, "seed": self.seed}


def bigbird(seq_len: int, block_size: int, num_random_blocks: int = 3, num_global_blocks: int = 1,
            window_blocks: int = 3, seed: int = 0, n_heads: int = 1, plan=None) -> Pattern:
    """BigBird block pattern for sequences of ``seq_len`` tokens (see module docstring).

    Defined in Chapter 5 (Exercise 5.1).
    """
    return BigBird(seq_len, block_size, num_random_blocks, num_global_blocks, window_blocks, seed, n_heads, plan)
