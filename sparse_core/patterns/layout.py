"""``BlockLayout``: which key blocks each query block keeps, per head, in CSR form.

A layout splits the ``n_q x n_k`` attention matrix into ``block_size x block_size`` tiles (the
last row/column of tiles may be smaller when a length is not a multiple of the block size). For
every head and query block it lists the kept key blocks, sorted, and whether each kept block is
*full* (every pair allowed: the kernel needs no token mask) or *partial* (the kernel applies the
pattern's token-level mask inside). No kept block is empty.

Storage is proportional to the number of kept blocks: ``indptr[h, qb] .. indptr[h, qb + 1]``
are the positions in ``indices`` / ``full`` of head ``h``'s query block ``qb``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from .base import Pattern

__all__ = ["BlockLayout"]


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True, eq=False)
class BlockLayout:
    n_q: int
    n_k: int
    block_size: int
    n_heads: int
    indptr: np.ndarray  # int64 [n_heads, n_qb + 1], offsets into indices/full
    indices: np.ndarray  # int32 [nnz], key block of each kept block, sorted within a row
    full: np.ndarray  # bool [nnz], True when every pair of the block is allowed
    pattern: "Pattern | None" = field(default=None, repr=False)

    # ------------------------------------------------------------------ shape facts
    @property
    def n_qb(self) -> int:
        return _ceil_div(self.n_q, self.block_size)

    @property
    def n_kb(self) -> int:
        return _ceil_div(self.n_k, self.block_size)

    @property
    def nnz(self) -> int:
        return int(self.indices.size)

    @property
    def n_full(self) -> int:
        return int(self.full.sum())

    @property
    def n_partial(self) -> int:
        return self.nnz - self.n_full

    def row(self, h: int, qb: int) -> tuple[np.ndarray, np.ndarray]:
        """Kept key blocks of head ``h``'s query block ``qb`` and their full flags."""
        lo, hi = self.indptr[h, qb], self.indptr[h, qb + 1]
        return self.indices[lo:hi], self.full[lo:hi]

    def block_rows(self) -> np.ndarray:
        """Query block of every kept block, aligned with ``indices``."""
        counts = np.diff(self.indptr, axis=1).ravel()
        return np.repeat(np.tile(np.arange(self.n_qb), self.n_heads), counts)

    def block_heads(self) -> np.ndarray:
        counts = np.diff(self.indptr, axis=1).sum(axis=1)
        return np.repeat(np.arange(self.n_heads), counts)

    def _block_extent(self, qb: np.ndarray, kb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        B = self.block_size
        rows = np.minimum((qb + 1) * B, self.n_q) - qb * B
        cols = np.minimum((kb + 1) * B, self.n_k) - kb * B
        return rows, cols

    # ------------------------------------------------------------------ counts
    @property
    def block_density(self) -> float:
        """Kept blocks / all blocks."""
        total = self.n_heads * self.n_qb * self.n_kb
        return self.nnz / total if total else 0.0

    def computed_pairs(self) -> int:
        """(query, key) pairs a block kernel computes: every token pair of every kept block."""
        rows, cols = self._block_extent(self.block_rows(), self.indices.astype(np.int64))
        return int((rows * cols).sum())

    def kept_pairs(self) -> int:
        """(query, key) pairs the pattern allows (exact; evaluates the mask in partial blocks)."""
        rows, cols = self._block_extent(self.block_rows(), self.indices.astype(np.int64))
        total = int((rows * cols)[self.full].sum())
        if self.n_partial:
            if self.pattern is None:
                raise ValueError("kept_pairs() needs the layout's pattern to count partial blocks")
            part = ~self.full
            total += int(self.pattern._count_in_blocks(
                self.block_heads()[part], self.block_rows()[part], self.indices[part].astype(np.int64),
                self.n_q, self.n_k, self.block_size).sum())
        return total

    @property
    def density(self) -> float:
        """Allowed pairs / all ``n_heads * n_q * n_k`` pairs (token level, exact)."""
        total = self.n_heads * self.n_q * self.n_k
        return self.kept_pairs() / total if total else 0.0

    def flops(self, d: int, d_v: int | None = None) -> int:
        """Matmul FLOPs of a block-sparse kernel over this layout (per batch element).

        Counts every pair of every kept block (a kernel computes whole tiles), 2 FLOPs per
        multiply-add, for ``S = Q K^T`` and ``O = P V``.
        """
        d_v = d if d_v is None else d_v
        return 2 * (d + d_v) * self.computed_pairs()

    # ------------------------------------------------------------------ conversions
    def to_block_mask(self) -> np.ndarray:
        """int8 ``[n_heads, n_qb, n_kb]``: 0 = skipped, 1 = partial, 2 = full."""
        out = np.zeros((self.n_heads, self.n_qb, self.n_kb), dtype=np.int8)
        out[self.block_heads(), self.block_rows(), self.indices] = np.where(self.full, 2, 1)
        return out

    def to_dense(self) -> np.ndarray:
        """Token-level bool ``[n_heads, n_q, n_k]`` the layout stands for (small sizes only)."""
        B = self.block_size
        bm = self.to_block_mask()
        expanded = np.repeat(np.repeat(bm, B, axis=1), B, axis=2)[:, : self.n_q, : self.n_k]
        out = expanded == 2
        if self.n_partial:
            if self.pattern is None:
                raise ValueError("to_dense() needs the layout's pattern to expand partial blocks")
            tokens = self.pattern.to_dense(self.n_q, self.n_k, self.n_heads)
            out |= (expanded == 1) & tokens
        return out

    def transpose(self) -> "BlockLayout":
        """The same kept blocks listed per *key* block (CSC of this layout), for backward passes.

        The result has ``n_q``/``n_k`` swapped; its ``indices`` are query blocks. Its pattern is
        None (the token mask of block (kb, qb) is the original pattern's mask of (qb, kb)).
        """
        heads, rows, cols = self.block_heads(), self.block_rows(), self.indices.astype(np.int64)
        order = np.lexsort((rows, cols, heads))
        counts = np.zeros((self.n_heads, self.n_kb), dtype=np.int64)
        np.add.at(counts, (heads, cols), 1)
        indptr = np.concatenate([np.zeros((1,), np.int64), np.cumsum(counts.ravel())])
        indptr = np.stack([indptr[h * self.n_kb: (h + 1) * self.n_kb + 1] for h in range(self.n_heads)])
        return BlockLayout(self.n_k, self.n_q, self.block_size, self.n_heads, indptr,
                           rows[order].astype(np.int32), self.full[order].copy(), None)

    @classmethod
    def from_block_mask(cls, block_mask: Any, n_q: int, n_k: int, block_size: int,
                        pattern: "Pattern | None" = None) -> "BlockLayout":
        """Build from a ``[n_heads, n_qb, n_kb]`` array: 0 skip, 1 partial, 2 full (bool: True = full)."""
        bm = np.asarray(block_mask)
        if bm.ndim == 2:
            bm = bm[None]
        if bm.ndim != 3:
            raise ValueError(f"`block_mask` must be [n_heads, n_qb, n_kb], got shape {bm.shape}")
        if bm.dtype == np.bool_:
            bm = bm.astype(np.int8) * 2
        expected = (_ceil_div(n_q, block_size), _ceil_div(n_k, block_size))
        if bm.shape[1:] != expected:
            raise ValueError(f"`block_mask` must have shape [n_heads, {expected[0]}, {expected[1]}] for "
                             f"n_q={n_q}, n_k={n_k}, block_size={block_size}; got {bm.shape}")
        h, r, c = np.nonzero(bm)
        counts = np.zeros((bm.shape[0], expected[0]), dtype=np.int64)
        np.add.at(counts, (h, r), 1)
        flat = np.concatenate([[0], np.cumsum(counts.ravel())])
        indptr = np.stack([flat[i * expected[0]: (i + 1) * expected[0] + 1] for i in range(bm.shape[0])])
        return cls(n_q, n_k, block_size, bm.shape[0], indptr.astype(np.int64), c.astype(np.int32),
                   bm[h, r, c] == 2, pattern)

    # ------------------------------------------------------------------ display
    def __repr__(self) -> str:
        total = self.n_heads * self.n_qb * self.n_kb
        return (f"BlockLayout(n_q={self.n_q}, n_k={self.n_k}, block_size={self.block_size}, "
                f"n_heads={self.n_heads}, kept={self.nnz}/{total} blocks "
                f"({100 * self.block_density:.1f}%), full={self.n_full}, partial={self.n_partial})")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, BlockLayout):
            return NotImplemented
        return (self.n_q, self.n_k, self.block_size, self.n_heads) == (
            other.n_q, other.n_k, other.block_size, other.n_heads) and np.array_equal(
            self.indptr, other.indptr) and np.array_equal(self.indices, other.indices) and np.array_equal(
            self.full, other.full)

    __hash__ = None  # mutable arrays inside
