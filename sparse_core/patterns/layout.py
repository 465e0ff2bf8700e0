"""``BlockLayout``: which key blocks each query block keeps, per head, and the token masks inside.

Defined in Chapter 4. A layout splits the ``n_q x n_k`` attention matrix into ``block_size x
block_size`` tiles (the last row/column of tiles may be smaller when a length is not a multiple
of the block size). For every head and query block it lists the kept key blocks, sorted, and
whether each kept block is *full* (every pair allowed: the kernel needs no token mask) or
*partial* (some pairs allowed). No kept block is empty.

A layout is the whole contract between a pattern and the kernels: it holds everything a kernel
needs and no reference to the :class:`~sparse_core.patterns.Pattern` it came from, so it can be
pickled, sent to another process, or built by hand (:meth:`BlockLayout.from_block_mask`).

Storage is proportional to the number of kept blocks:

* ``indptr[h, qb] .. indptr[h, qb + 1]`` are the positions in ``indices`` / ``full`` /
  ``tile_of`` of head ``h``'s query block ``qb`` (CSR per head);
* ``tile_of[p]`` is the token tile of kept block ``p`` (``-1`` for a full block);
* ``tile_bits[t]`` is tile ``t``: a bit mask ``[block_size, ceil(block_size / 8)]`` uint8,
  ``np.packbits(mask, axis=-1, bitorder="little")`` of the bool ``[block_size, block_size]``
  mask (row = query offset, column = key offset; pairs beyond ``n_q`` / ``n_k`` are 0).

Why bits and a tile index: a bit mask is 8 times smaller than a bool tile, which matters for
patterns without structure (``random_pattern`` keeps every block partial, so its tiles are
``n_q * n_k`` pairs); and many partial blocks share one tile (every interior block on one
diagonal of a sliding window, every block of a strided column), so a pattern stores each
distinct tile once and points to it. The kernels' uint8 tiles are unpacked once per layout by
:mod:`sparse_core.kernels.tables`, which caches them outside the layout.

Equality and hashing are by content: two layouts are equal when their shape facts and arrays
are equal, and the hash is a digest of that content (computed on first use). The arrays are
read-only, so a layout is a sound dictionary key -- the kernel-ready cache uses it as one.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np

__all__ = ["BlockLayout", "ceil_div", "pack_tiles", "unpack_tiles", "evaluate_tiles"]

TILE_BUDGET = 1 << 20  #: token pairs evaluated at once when tiles are computed from a rule


def ceil_div(a: int, b: int) -> int:
    """``ceil(a / b)`` for non-negative integers (numbers of blocks)."""
    return -(-a // b)


def pack_tiles(tiles: np.ndarray) -> np.ndarray:
    """bool ``[t, B, B]`` -> the packed uint8 ``[t, B, ceil(B / 8)]`` of ``BlockLayout.tile_bits``."""
    return np.packbits(np.asarray(tiles, dtype=bool), axis=-1, bitorder="little")


def unpack_tiles(bits: np.ndarray, block_size: int) -> np.ndarray:
    """uint8 (0/1) ``[t, B, B]`` from packed tiles."""
    return np.unpackbits(bits, axis=-1, count=block_size, bitorder="little")


def evaluate_tiles(rule: Callable[[Any, Any, Any], Any], h: int, r0: np.ndarray, c0: np.ndarray, n_q: int,
                   n_k: int, block_size: int, budget: int = TILE_BUDGET) -> Iterator[tuple[slice, np.ndarray]]:
    """Evaluate ``rule(h, i, j)`` on the ``block_size``-square tiles starting at rows ``r0`` and
    columns ``c0``, a chunk of tiles at a time (never more than ``budget`` pairs at once).

    Yields ``(sl, mask)``: ``mask`` bool ``[len(r0[sl]), B, B]``, False beyond ``n_q`` / ``n_k``.
    """
    B = block_size
    r0, c0 = np.asarray(r0, dtype=np.int64), np.asarray(c0, dtype=np.int64)
    step = max(1, budget // (B * B))
    ar = np.arange(B, dtype=np.int64)
    for s in range(0, r0.size, step):
        sl = slice(s, s + step)
        i = r0[sl, None, None] + ar[None, :, None]
        j = c0[sl, None, None] + ar[None, None, :]
        valid = (i < n_q) & (j < n_k)
        m = np.asarray(rule(h, np.minimum(i, n_q - 1), np.minimum(j, n_k - 1)), dtype=bool)
        yield sl, np.broadcast_to(m, valid.shape) & valid


def _frozen(x: np.ndarray, dtype) -> np.ndarray:
    a = np.asarray(x, dtype=dtype)
    if a.flags.writeable:
        a = a.view()
        a.flags.writeable = False
    return a


@dataclass(frozen=True, eq=False)
class BlockLayout:
    """Kept blocks per head in CSR form plus the token masks of the partial blocks (module doc).

    Defined in Chapter 4. Build one with ``pattern.to_layout(n_q, n_k, block_size, n_heads)``
    or :meth:`from_block_mask`; constructing it directly takes the arrays described in the
    module docstring (``tile_of`` / ``tile_bits`` may be omitted when every block is full).
    For compatibility the eighth positional argument may be a ``Pattern``: the token masks of
    the partial blocks are then computed from it (no reference to it is kept; ``label``
    becomes its repr). ``label`` names what the layout was made from, for pictures.
    """
    n_q: int
    n_k: int
    block_size: int
    n_heads: int
    indptr: np.ndarray  # int64 [n_heads, n_qb + 1], offsets into indices/full/tile_of
    indices: np.ndarray  # int32 [nnz], key block of each kept block, sorted within a row
    full: np.ndarray  # bool [nnz], True when every pair of the block is allowed
    tile_bits: Any = None  # uint8 [n_tiles, block_size, ceil(block_size / 8)], packed token masks
    tile_of: Any = None  # int32 [nnz], tile of each kept block, -1 when full
    label: str = ""  # what the layout was made from (a pattern's repr), for titles; not part of equality

    def __post_init__(self):
        B = self.block_size
        put = object.__setattr__
        put(self, "indptr", _frozen(self.indptr, np.int64))
        put(self, "indices", _frozen(self.indices, np.int32))
        put(self, "full", _frozen(self.full, bool))
        if self.indptr.shape != (self.n_heads, self.n_qb + 1):
            raise ValueError(f"`indptr` must have shape [{self.n_heads}, {self.n_qb + 1}], got {self.indptr.shape}")
        if self.full.shape != self.indices.shape or self.indices.ndim != 1:
            raise ValueError(f"`indices` and `full` must be 1-D of one length, got {self.indices.shape}, "
                             f"{self.full.shape}")
        rule = getattr(self.tile_bits, "mask_mod", None)
        if rule is not None:  # BlockLayout(..., pattern): the tiles from the pattern's rule
            if not self.label and not isinstance(self.tile_bits, BlockLayout):
                put(self, "label", repr(self.tile_bits))
            bits, tile_of = self._tiles_from_rule(lambda h, i, j: rule(0, h, i, j))
            put(self, "tile_bits", bits)
            put(self, "tile_of", tile_of)
        if self.tile_of is None:
            if self.n_partial:
                raise ValueError(f"the layout has {self.n_partial} partial blocks but no token masks: give "
                                 "`tile_bits` and `tile_of` (or build it with pattern.to_layout)")
            tile_of = np.full(self.nnz, -1, dtype=np.int32)
            put(self, "tile_of", tile_of)
        if self.tile_bits is None:
            put(self, "tile_bits", np.zeros((0, B, ceil_div(B, 8)), dtype=np.uint8))
        put(self, "tile_of", _frozen(self.tile_of, np.int32))
        put(self, "tile_bits", _frozen(self.tile_bits, np.uint8))
        if self.tile_bits.ndim != 3 or self.tile_bits.shape[1:] != (B, ceil_div(B, 8)):
            raise ValueError(f"`tile_bits` must have shape [n_tiles, {B}, {ceil_div(B, 8)}], got {self.tile_bits.shape}")
        if self.tile_of.shape != self.full.shape:
            raise ValueError(f"`tile_of` must have one entry per kept block ({self.nnz}), got {self.tile_of.shape}")
        if not np.array_equal(self.tile_of < 0, self.full) or (self.tile_of >= len(self.tile_bits)).any():
            raise ValueError("`tile_of` must be -1 exactly on full blocks and index `tile_bits` elsewhere")

    # ------------------------------------------------------------------ shape facts
    @property
    def n_qb(self) -> int:
        return ceil_div(self.n_q, self.block_size)

    @property
    def n_kb(self) -> int:
        return ceil_div(self.n_k, self.block_size)

    @property
    def nnz(self) -> int:
        return int(self.indices.size)

    @property
    def n_full(self) -> int:
        return int(self.full.sum())

    @property
    def n_partial(self) -> int:
        return self.nnz - self.n_full

    @property
    def n_tiles(self) -> int:
        """Distinct token tiles stored (partial blocks may share one)."""
        return int(self.tile_bits.shape[0])

    @property
    def nbytes(self) -> int:
        """Bytes of the layout's arrays."""
        return int(sum(a.nbytes for a in (self.indptr, self.indices, self.full, self.tile_of, self.tile_bits)))

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

    # ------------------------------------------------------------------ token masks
    def tiles(self) -> np.ndarray:
        """bool ``[n_partial, block_size, block_size]``: the token mask of every partial block, in
        the order of the partial blocks in ``indices`` (row = query offset, column = key offset)."""
        return unpack_tiles(self.tile_bits[self.tile_of[~self.full]], self.block_size).astype(bool)

    def mask_mod(self, b: Any, h: Any, q_idx: Any, kv_idx: Any) -> np.ndarray:
        """The layout's own token rule, FlexAttention-style: True where query ``q_idx`` of head
        ``h`` may attend key ``kv_idx`` (numpy, elementwise with broadcasting; ``b`` ignored;
        head ``h`` uses layout head ``h % n_heads``; indices outside the lengths are False)."""
        h, i, j = np.broadcast_arrays(*(np.asarray(x, dtype=np.int64) for x in (h, q_idx, kv_idx)))
        B, n_qb, n_kb = self.block_size, self.n_qb, self.n_kb
        valid = (i >= 0) & (i < self.n_q) & (j >= 0) & (j < self.n_k)
        i, j, h = np.where(valid, i, 0), np.where(valid, j, 0), h % self.n_heads
        keys = (self.block_heads() * n_qb + self.block_rows()) * n_kb + self.indices
        want = (h * n_qb + i // B) * n_kb + j // B
        p = np.minimum(np.searchsorted(keys, want), max(self.nnz - 1, 0))
        if self.nnz == 0:
            return np.zeros(valid.shape, dtype=bool)
        hit = valid & (keys[p] == want)
        t = np.where(hit, self.tile_of[p], -1)
        jj = j % B
        bits = self.tile_bits if self.n_tiles else np.zeros((1,) + self.tile_bits.shape[1:], np.uint8)
        bit = (bits[np.maximum(t, 0), i % B, jj >> 3] >> (jj & 7)) & 1
        return hit & ((t < 0) | (bit == 1))

    def _tiles_from_rule(self, rule) -> tuple[np.ndarray, np.ndarray]:
        """(tile_bits, tile_of) of the partial blocks, one tile each, by evaluating ``rule``."""
        B = self.block_size
        heads, rows, cols = self.block_heads(), self.block_rows(), self.indices.astype(np.int64)
        partial = np.flatnonzero(~self.full)
        tile_of = np.full(self.nnz, -1, dtype=np.int32)
        tile_of[partial] = np.arange(partial.size)
        bits = np.zeros((partial.size, B, ceil_div(B, 8)), dtype=np.uint8)
        for h in np.unique(heads[partial]):
            sel = partial[heads[partial] == h]
            for sl, m in evaluate_tiles(rule, int(h), rows[sel] * B, cols[sel] * B, self.n_q, self.n_k, B):
                bits[tile_of[sel[sl]]] = pack_tiles(m)
        return bits, tile_of

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
        """(query, key) pairs the pattern allows (exact: full blocks plus the bits of partial tiles)."""
        rows, cols = self._block_extent(self.block_rows(), self.indices.astype(np.int64))
        per_tile = np.bitwise_count(self.tile_bits).sum(axis=(1, 2), dtype=np.int64)
        return int((rows * cols)[self.full].sum()) + int(per_tile[self.tile_of[~self.full]].sum())

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
        out = np.zeros((self.n_heads, self.n_qb, B, self.n_kb, B), dtype=bool)
        heads, rows = self.block_heads(), self.block_rows()
        out[heads[self.full], rows[self.full], :, self.indices[self.full], :] = True
        part = ~self.full
        out[heads[part], rows[part], :, self.indices[part], :] = self.tiles()
        return out.reshape(self.n_heads, self.n_qb * B, self.n_kb * B)[:, : self.n_q, : self.n_k]

    def transpose(self) -> "BlockLayout":
        """The same kept blocks listed per *key* block (CSC of this layout), for backward passes.

        The result has ``n_q``/``n_k`` swapped; its ``indices`` are query blocks and its tiles
        are this layout's tiles transposed.
        """
        heads, rows, cols = self.block_heads(), self.block_rows(), self.indices.astype(np.int64)
        order = np.lexsort((rows, cols, heads))
        counts = np.zeros((self.n_heads, self.n_kb), dtype=np.int64)
        np.add.at(counts, (heads, cols), 1)
        indptr = np.concatenate([np.zeros((1,), np.int64), np.cumsum(counts.ravel())])
        indptr = np.stack([indptr[h * self.n_kb: (h + 1) * self.n_kb + 1] for h in range(self.n_heads)])
        bits = pack_tiles(unpack_tiles(self.tile_bits, self.block_size).transpose(0, 2, 1).astype(bool))
        return BlockLayout(self.n_k, self.n_q, self.block_size, self.n_heads, indptr,
                           rows[order].astype(np.int32), self.full[order], bits, self.tile_of[order],
                           f"transpose of {self.label}" if self.label else "")

    @classmethod
    def from_block_mask(cls, block_mask: Any, n_q: int, n_k: int, block_size: int,
                        pattern: Any = None, *, tiles: Any = None) -> "BlockLayout":
        """Build from a ``[n_heads, n_qb, n_kb]`` array: 0 skip, 1 partial, 2 full (bool: True = full).

        Chapter 4 builds layouts from patterns; this builds one from a block array. Partial blocks need their token masks: ``tiles`` (bool
        ``[n_partial, block_size, block_size]``, in the order of the partial blocks by head,
        query block, key block) or ``pattern`` (anything with a ``mask_mod``; evaluated once).
        """
        bm = np.asarray(block_mask)
        if bm.ndim == 2:
            bm = bm[None]
        if bm.ndim != 3:
            raise ValueError(f"`block_mask` must be [n_heads, n_qb, n_kb], got shape {bm.shape}")
        if bm.dtype == np.bool_:
            bm = bm.astype(np.int8) * 2
        expected = (ceil_div(n_q, block_size), ceil_div(n_k, block_size))
        if bm.shape[1:] != expected:
            raise ValueError(f"`block_mask` must have shape [n_heads, {expected[0]}, {expected[1]}] for "
                             f"n_q={n_q}, n_k={n_k}, block_size={block_size}; got {bm.shape}")
        h, r, c = np.nonzero(bm)
        counts = np.zeros((bm.shape[0], expected[0]), dtype=np.int64)
        np.add.at(counts, (h, r), 1)
        flat = np.concatenate([[0], np.cumsum(counts.ravel())])
        indptr = np.stack([flat[i * expected[0]: (i + 1) * expected[0] + 1] for i in range(bm.shape[0])])
        full = bm[h, r, c] == 2
        args = (n_q, n_k, block_size, bm.shape[0], indptr.astype(np.int64), c.astype(np.int32), full)
        if pattern is not None:
            return cls(*args, pattern)
        if tiles is None:
            return cls(*args)
        t = np.asarray(tiles, dtype=bool)
        if t.shape != (int((~full).sum()), block_size, block_size):
            raise ValueError(f"`tiles` must be bool [{int((~full).sum())}, {block_size}, {block_size}] (one per "
                             f"partial block), got shape {t.shape}")
        tile_of = np.full(full.size, -1, dtype=np.int32)
        tile_of[~full] = np.arange(t.shape[0])
        ar = np.arange(block_size)
        inside = ((r[~full, None] * block_size + ar < n_q)[:, :, None]
                  & (c[~full, None] * block_size + ar < n_k)[:, None, :])  # pairs beyond the lengths are 0
        return cls(*args, pack_tiles(t & inside), tile_of)

    # ------------------------------------------------------------------ display, equality
    def __repr__(self) -> str:
        total = self.n_heads * self.n_qb * self.n_kb
        return (f"BlockLayout(n_q={self.n_q}, n_k={self.n_k}, block_size={self.block_size}, "
                f"n_heads={self.n_heads}, kept={self.nnz}/{total} blocks "
                f"({100 * self.block_density:.1f}%), full={self.n_full}, partial={self.n_partial})")

    def digest(self) -> str:
        """Hex digest of the layout's content (shape facts and the token masks of partial blocks:
        tiles are compared by value, however they are shared). Computed once."""
        d = self.__dict__.get("_digest")
        if d is None:
            hsh = hashlib.blake2b(digest_size=16)
            hsh.update(np.array([self.n_q, self.n_k, self.block_size, self.n_heads], np.int64).tobytes())
            for a in (self.indptr, self.indices, self.full):
                hsh.update(np.ascontiguousarray(a).tobytes())
            hsh.update(np.ascontiguousarray(self.tile_bits[self.tile_of[~self.full]]).tobytes())
            d = hsh.hexdigest()
            object.__setattr__(self, "_digest", d)
        return d

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, BlockLayout):
            return NotImplemented
        return self is other or self.digest() == other.digest()

    def __hash__(self) -> int:
        return hash(self.digest())

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_digest"}

    def __setstate__(self, state: dict) -> None:
        for name in ("indptr", "indices", "full", "tile_bits", "tile_of"):
            state[name] = _frozen(state[name], state[name].dtype)
        self.__dict__.update(state)
