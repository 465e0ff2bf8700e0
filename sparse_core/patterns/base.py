"""The ``Pattern`` contract and the machinery every pattern family shares.

A pattern is a rule "may query ``i`` of head ``h`` attend to key ``j``?". One object serves
three uses, so they can never disagree:

* ``mask_mod(b, h, q_idx, kv_idx)`` -- the rule itself, elementwise on numpy arrays or torch
  tensors, with the signature and meaning of PyTorch FlexAttention's ``mask_mod`` (so it can be
  handed to ``torch.nn.attention.flex_attention.create_block_mask`` unchanged);
* ``to_dense(n_q, n_k, n_heads)`` -- the boolean ``[n_heads, n_q, n_k]`` mask for the dense
  oracle and for pictures;
* ``to_layout(n_q, n_k, block_size, n_heads)`` -- the :class:`~.layout.BlockLayout` that drives
  the block-sparse kernels, built without ever making an ``n_q x n_k`` array.

Layouts are exact: a block is *full* only if every pair in it is allowed, *partial* if some
are, and dropped if none are. Each family classifies blocks with a closed form (prefix sums over
diagonals, rows, columns or block tables); only what no closed form covers -- e.g. two partial
parts of a union meeting in one block -- is decided by evaluating the rule on that tile.
"""
from __future__ import annotations

import numbers
from typing import Any, Iterable, Sequence

import numpy as np

from .layout import TILE_BUDGET, BlockLayout, ceil_div, evaluate_tiles, pack_tiles

try:
    import torch
except ImportError:  # pragma: no cover
    torch = None

EMPTY, PARTIAL, FULL = 0, 1, 2
_TILE_BUDGET = 1 << 20  # token pairs evaluated at once when a tile must be looked at (bounds memory)


# ---------------------------------------------------------------------------- small helpers

def is_tensor(x: Any) -> bool:
    return torch is not None and isinstance(x, torch.Tensor)


def lookup(table: np.ndarray, index: Any) -> Any:
    """``table[index]`` for a numpy index or a torch tensor index (the table follows the index)."""
    if is_tensor(index):
        return torch.as_tensor(table, device=index.device)[index]
    return table[index]


def check_int(name: str, value: Any, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        kind = "a positive" if minimum == 1 else ("a non-negative" if minimum == 0 else f"an integer >= {minimum}")
        raise ValueError(f"`{name}` must be {kind} integer, got {value!r}")
    return int(value)


def check_prob(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"`{name}` must be a number in [0, 1], got {value!r}")
    return float(value)


def per_head_ints(name: str, value: Any, minimum: int) -> np.ndarray:
    """An int or a list of ints (one per head) as an int64 array."""
    values = [value] if isinstance(value, numbers.Integral) and not isinstance(value, bool) else value
    try:
        values = list(values)
    except TypeError:
        raise ValueError(f"`{name}` must be an integer or a list of integers (one per head), got {value!r}") from None
    if not values:
        raise ValueError(f"`{name}` must not be empty")
    return np.array([check_int(name, v, minimum) for v in values], dtype=np.int64)


def _broadcast_bool(result: Any, i: Any, j: Any) -> Any:
    if is_tensor(result) or is_tensor(i) or is_tensor(j):
        t = [x for x in (result, i, j) if is_tensor(x)][0]
        if not is_tensor(result):
            result = torch.as_tensor(result, device=t.device)
        if result.dtype != torch.bool:
            result = result.to(torch.bool)
        shape = torch.broadcast_shapes(*(tuple(x.shape) if is_tensor(x) else np.shape(x) for x in (result, i, j)))
        # no expand when nothing changes: compiled FlexAttention cannot lower a 0-d expand
        return result if tuple(result.shape) == tuple(shape) else torch.broadcast_to(result, shape)
    shape = np.broadcast_shapes(np.shape(result), np.shape(i), np.shape(j))
    return np.broadcast_to(np.asarray(result, dtype=bool), shape)


def _distinct_rows(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(first, inverse)`` of the distinct rows of an int array ``[m, k]``, as
    ``np.unique(keys, axis=0, return_index=True, return_inverse=True)`` but column by column
    (1-D sorts are much faster than sorting rows)."""
    code = np.zeros(keys.shape[0], dtype=np.int64)
    for col in keys.T:
        _, inv = np.unique(col, return_inverse=True)
        _, code = np.unique(code * (int(inv.max()) + 1) + inv, return_inverse=True)
    _, first, inverse = np.unique(code, return_index=True, return_inverse=True)
    return first, inverse.reshape(-1)


def _clip_tiles(tiles: np.ndarray, r0, c0, n_q: int, n_k: int, B: int) -> np.ndarray:
    """``tiles`` (bool ``[m, B, B]`` at rows ``r0``, columns ``c0``) with the pairs beyond ``n_q`` /
    ``n_k`` set False; only the tiles on the last block row or column are touched."""
    edge = np.flatnonzero((r0 + B > n_q) | (c0 + B > n_k))
    if edge.size:
        ar = np.arange(B, dtype=np.int64)
        tiles[edge] &= ((r0[edge, None] + ar < n_q)[:, :, None] & (c0[edge, None] + ar < n_k)[:, None, :])
    return tiles


# ---------------------------------------------------------------------------- the contract

class Pattern:
    """Base class. Subclasses implement ``_mask(h, i, j)``; the rest is shared."""

    #: number of heads the pattern's per-head parameters describe (None = any number)
    n_heads: int | None = None

    # -- to be implemented by families ---------------------------------------
    def _mask(self, h: Any, i: Any, j: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def _params(self) -> dict:
        return {}

    def _name(self) -> str:
        return type(self).__name__

    def _check_lengths(self, n_q: int, n_k: int) -> None:
        """Raise ValueError when the pattern is not defined for these lengths."""

    # -- block classification (override with a closed form where one exists) --
    def _prepare(self, h: int, n_q: int, n_k: int) -> Any:
        return None

    def _classify(self, ctx: Any, h: int, r0, r1, c0, c1, n_q: int, n_k: int) -> np.ndarray:
        """EMPTY/PARTIAL/FULL for blocks with rows [r0, r1) and columns [c0, c1) (int64 arrays)."""
        counts = self._tile_counts(h, r0, r1, c0, c1, n_q, n_k)
        size = (r1 - r0) * (c1 - c0)
        return np.where(counts == 0, EMPTY, np.where(counts == size, FULL, PARTIAL)).astype(np.int8)

    def _tile_counts(self, h: int, r0, r1, c0, c1, n_q: int, n_k: int) -> np.ndarray:
        """Allowed pairs in each block, by evaluating the rule on the tiles (chunked)."""
        r0, r1, c0, c1 = (np.asarray(x, dtype=np.int64) for x in (r0, r1, c0, c1))
        out = np.zeros(r0.shape, dtype=np.int64)
        if r0.size == 0:
            return out
        bq = int((r1 - r0).max())
        bk = int((c1 - c0).max())
        step = max(1, _TILE_BUDGET // max(1, bq * bk))
        ar_q = np.arange(bq)[None, :, None]
        ar_k = np.arange(bk)[None, None, :]
        for s in range(0, r0.size, step):
            sl = slice(s, s + step)
            i = r0[sl, None, None] + ar_q
            j = c0[sl, None, None] + ar_k
            valid = (i < r1[sl, None, None]) & (j < c1[sl, None, None])
            i = np.minimum(i, n_q - 1)
            j = np.minimum(j, n_k - 1)
            m = np.asarray(self._mask(h, i, j), dtype=bool) & valid
            out[sl] = m.sum(axis=(1, 2))
        return out

    # -- public API ------------------------------------------------------------
    @property
    def mask_mod(self):
        """FlexAttention-style rule ``mask_mod(b, h, q_idx, kv_idx) -> bool``.

        True where query ``q_idx`` of head ``h`` may attend key ``kv_idx``. Works elementwise
        (with broadcasting) on numpy integer arrays, Python ints and torch tensors; ``b`` (the
        batch index) is accepted for compatibility and ignored. It is a plain four-argument
        function (not a bound method), so FlexAttention recognises it as a mask_mod:
        ``create_block_mask(pattern.mask_mod, B, H, Q_LEN, KV_LEN)``.
        """
        fn = self.__dict__.get("_mask_mod_fn")
        if fn is None:
            pattern = self

            def mask_mod(b, h, q_idx, kv_idx):
                return pattern._mask_mod(b, h, q_idx, kv_idx)

            mask_mod.__doc__ = f"mask_mod of {self!r}"
            self.__dict__["_mask_mod_fn"] = fn = mask_mod
        return fn

    def _mask_mod(self, b: Any, h: Any, q_idx: Any, kv_idx: Any) -> Any:
        if not (is_tensor(q_idx) or is_tensor(kv_idx) or is_tensor(h)):
            q_idx = np.asarray(q_idx, dtype=np.int64)
            kv_idx = np.asarray(kv_idx, dtype=np.int64)
            h = np.asarray(h, dtype=np.int64) if not isinstance(h, numbers.Integral) else int(h)
        return _broadcast_bool(self._mask(h, q_idx, kv_idx), q_idx, kv_idx)

    def _check_heads(self, n_heads: Any) -> int:
        n_heads = check_int("n_heads", n_heads, 1)
        if self.n_heads is not None and self.n_heads > 1 and n_heads != self.n_heads:
            raise ValueError(f"`n_heads`={n_heads} does not match this pattern, which has per-head "
                             f"parameters for {self.n_heads} heads: {self!r}")
        return n_heads

    def to_dense(self, n_q: int, n_k: int, n_heads: int = 1) -> np.ndarray:
        """Boolean ``[n_heads, n_q, n_k]`` mask (True = may attend)."""
        n_q = check_int("n_q", n_q, 0)
        n_k = check_int("n_k", n_k, 0)
        n_heads = self._check_heads(n_heads)
        self._check_lengths(n_q, n_k)
        out = np.zeros((n_heads, n_q, n_k), dtype=bool)
        if n_q and n_k:
            i = np.arange(n_q, dtype=np.int64)[:, None]
            j = np.arange(n_k, dtype=np.int64)[None, :]
            for h in range(n_heads):
                out[h] = self.mask_mod(0, h, i, j)
        return out

    def to_layout(self, n_q: int, n_k: int, block_size: int, n_heads: int = 1) -> BlockLayout:
        """Exact :class:`BlockLayout` of this pattern: CSR per head and the token masks of its
        partial blocks; memory ~ kept blocks, never an ``n_q x n_k`` array. Defined in Chapter 4."""
        n_q = check_int("n_q", n_q, 0)
        n_k = check_int("n_k", n_k, 0)
        B = check_int("block_size", block_size, 1)
        n_heads = self._check_heads(n_heads)
        self._check_lengths(n_q, n_k)
        n_qb, n_kb = ceil_div(n_q, B), ceil_div(n_k, B)
        indptr = np.zeros((n_heads, n_qb + 1), dtype=np.int64)
        idx_parts, full_parts, tile_parts, bit_parts = [], [], [], []
        offset = n_tiles = 0
        rows_per_chunk = max(1, (1 << 18) // max(1, n_kb))  # bounded temporaries, never n x n
        kb_all = np.arange(n_kb, dtype=np.int64)
        evaluated = type(self)._classify is Pattern._classify  # no closed form: classify from the tiles
        for h in range(n_heads):
            indptr[h, 0] = offset
            if not (n_q and n_k):
                indptr[h, 1:] = offset
                continue
            ctx = self._prepare(h, n_q, n_k)
            starts, keys = [], []
            for q0 in range(0, n_qb, rows_per_chunk):
                qb = np.arange(q0, min(q0 + rows_per_chunk, n_qb), dtype=np.int64)
                r0 = np.repeat(qb, n_kb) * B
                c0 = np.tile(kb_all, qb.size) * B
                if evaluated:
                    cls, bits = self._classify_by_tiles(h, r0, c0, n_q, n_k, B)
                    bit_parts.append(bits)
                else:
                    cls = self._classify(ctx, h, r0, np.minimum(r0 + B, n_q), c0, np.minimum(c0 + B, n_k), n_q, n_k)
                keep = cls != EMPTY
                idx_parts.append((c0[keep] // B).astype(np.int32))
                full_parts.append(cls[keep] == FULL)
                part = cls == PARTIAL
                starts.append((r0[part], c0[part]))
                if not evaluated and keys is not None:
                    k = self._tile_keys(ctx, h, r0[part], c0[part], n_q, n_k, B)
                    keys = None if k is None else keys + [k]
                counts = keep.reshape(qb.size, n_kb).sum(axis=1)
                indptr[h, qb + 1] = offset + np.cumsum(counts)
                offset += int(counts.sum())
            r0p = np.concatenate([s[0] for s in starts]) if starts else np.zeros(0, np.int64)
            c0p = np.concatenate([s[1] for s in starts]) if starts else np.zeros(0, np.int64)
            ids = np.arange(r0p.size, dtype=np.int64)
            if not evaluated:
                if keys and r0p.size:  # equal keys, equal tiles: evaluate one block per key
                    first, ids = _distinct_rows(np.concatenate(keys))
                    r0p, c0p = r0p[first], c0p[first]
                bits = np.zeros((r0p.size, B, ceil_div(B, 8)), dtype=np.uint8)
                step = max(1, TILE_BUDGET // (B * B))
                for s in range(0, r0p.size, step):
                    bits[s:s + step] = pack_tiles(self._tiles(ctx, h, r0p[s:s + step], c0p[s:s + step], n_q, n_k, B))
                bit_parts.append(bits)
            tile_parts.append(n_tiles + ids.reshape(-1))
            n_tiles += int(ids.max()) + 1 if ids.size else 0
        indices = np.concatenate(idx_parts) if idx_parts else np.zeros(0, np.int32)
        full = np.concatenate(full_parts) if full_parts else np.zeros(0, bool)
        tile_of = np.full(indices.size, -1, dtype=np.int32)
        tile_of[~full] = np.concatenate(tile_parts) if tile_parts else np.zeros(0, np.int64)
        bits = np.concatenate(bit_parts) if bit_parts else np.zeros((0, B, ceil_div(B, 8)), np.uint8)
        return BlockLayout(n_q, n_k, B, n_heads, indptr, indices, full, bits, tile_of, repr(self))

    def _classify_by_tiles(self, h: int, r0, c0, n_q: int, n_k: int, B: int) -> tuple[np.ndarray, np.ndarray]:
        """EMPTY/PARTIAL/FULL of ``B``-aligned blocks and the packed tiles of the partial ones, from
        one evaluation of the rule on every tile (for patterns without a closed form)."""
        cls = np.empty(r0.shape, dtype=np.int8)
        bits = []
        area = (np.minimum(r0 + B, n_q) - r0) * (np.minimum(c0 + B, n_k) - c0)
        for sl, m in evaluate_tiles(self._mask, h, r0, c0, n_q, n_k, B):
            cnt = m.sum(axis=(1, 2))
            c = np.where(cnt == 0, EMPTY, np.where(cnt == area[sl], FULL, PARTIAL)).astype(np.int8)
            cls[sl] = c
            bits.append(pack_tiles(m[c == PARTIAL]))
        return cls, (np.concatenate(bits) if bits else np.zeros((0, B, ceil_div(B, 8)), np.uint8))

    def _tile_keys(self, ctx: Any, h: int, r0, c0, n_q: int, n_k: int, B: int) -> np.ndarray | None:
        """int64 ``[m, k]`` keys of the ``B``-aligned blocks at ``r0``, ``c0``: blocks with equal keys
        have equal token tiles, so :meth:`to_layout` evaluates the rule once per key. None: unknown."""
        return None

    def _tiles(self, ctx: Any, h: int, r0, c0, n_q: int, n_k: int, B: int) -> np.ndarray:
        """bool ``[m, B, B]`` token masks of the ``B``-aligned blocks at ``r0``, ``c0`` (False beyond
        the lengths). Families with a cheaper form than evaluating the rule override it."""
        out = np.zeros((len(r0), B, B), dtype=bool)
        for sl, m in evaluate_tiles(self._mask, h, r0, c0, n_q, n_k, B, budget=max(1, len(r0)) * B * B):
            out[sl] = m
        return out

    # -- composition -------------------------------------------------------------
    def __or__(self, other: "Pattern") -> "Pattern":
        return union(self, other)

    def __and__(self, other: "Pattern") -> "Pattern":
        return intersection(self, other)

    def restrict_causal(self) -> "Pattern":
        """This pattern with only ``j <= i`` kept."""
        return intersection(self, causal())

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={_short(v)}" for k, v in self._params().items())
        return f"{self._name()}({params})"

    def describe(self, n: int = 1024, block_size: int = 64, n_heads: int | None = None) -> str:
        """One line: repr plus token and block density at length ``n``."""
        heads = n_heads or self.n_heads or 1
        lay = self.to_layout(n, n, block_size, heads)
        return (f"{self!r}: n={n}, heads={heads}: {100 * lay.density:.2f}% of pairs, "
                f"{100 * lay.block_density:.2f}% of {block_size}x{block_size} blocks")


def _short(v: Any) -> str:
    if isinstance(v, np.ndarray):
        v = v.tolist()
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


# ---------------------------------------------------------------------------- families' bases

class DiagonalPattern(Pattern):
    """A rule on the offset ``d = i - j`` only (windows, causal, dilation, strides).

    Every offset between ``r0 - (c1 - 1)`` and ``(r1 - 1) - c0`` occurs in a block, so prefix
    sums of the rule over all offsets classify any block in O(1).
    """

    def _pred(self, h: Any, d: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def _mask(self, h, i, j):
        return self._pred(h, i - j)

    def _prepare(self, h, n_q, n_k):
        d = np.arange(-(n_k - 1), n_q, dtype=np.int64)
        ok = np.asarray(_broadcast_bool(self._pred(h, d), d, d), dtype=np.int64)
        return -(n_k - 1), np.concatenate([[0], np.cumsum(ok)])

    def _classify(self, ctx, h, r0, r1, c0, c1, n_q, n_k):
        lo, prefix = ctx
        dmin = r0 - (c1 - 1)
        dmax = (r1 - 1) - c0
        cnt = prefix[dmax - lo + 1] - prefix[dmin - lo]
        return np.where(cnt == 0, EMPTY, np.where(cnt == dmax - dmin + 1, FULL, PARTIAL)).astype(np.int8)

    def _tile_keys(self, ctx, h, r0, c0, n_q, n_k, B):
        # tile[a, b] = pred(r0 - c0 + a - b) inside the block's extent
        return np.stack([r0 - c0, np.minimum(B, n_q - r0), np.minimum(B, n_k - c0)], axis=1)

    def _tiles(self, ctx, h, r0, c0, n_q, n_k, B):
        # a Toeplitz tile: tile[a, b] = rule(r0 - c0 + a - b), read from windows of 2B - 1 offsets
        lo, prefix = ctx
        ok = np.zeros(prefix.size - 1 + 2 * B, dtype=bool)  # the rule on offsets lo - B .. n_q - 1 + B
        ok[B:B + prefix.size - 1] = np.diff(prefix) > 0
        windows = np.lib.stride_tricks.sliding_window_view(ok, 2 * B - 1)[np.asarray(r0 - c0 - lo + 1)]
        ar = np.arange(B)
        return _clip_tiles(windows[:, ar[:, None] - ar[None, :] + B - 1], r0, c0, n_q, n_k, B)


class _DiagonalCombo(DiagonalPattern):
    def __init__(self, parts: Sequence[DiagonalPattern], op: str):
        self.parts, self.op = tuple(parts), op
        self.n_heads = _common_heads(self.parts)

    def _pred(self, h, d):
        out = self.parts[0]._pred(h, d)
        for p in self.parts[1:]:
            out = (out | p._pred(h, d)) if self.op == "|" else (out & p._pred(h, d))
        return out

    def _check_lengths(self, n_q, n_k):
        for p in self.parts:
            p._check_lengths(n_q, n_k)

    def __repr__(self):
        return "(" + f" {self.op} ".join(map(repr, self.parts)) + ")"


class PartitionPattern(Pattern):
    """``i`` and ``j`` in the same segment of a partition into runs of ``size`` positions."""

    def __init__(self, size: int):
        self.size = size

    def _mask(self, h, i, j):
        return (i // self.size) == (j // self.size)

    def _classify(self, ctx, h, r0, r1, c0, c1, n_q, n_k):
        s = self.size
        gr0, gr1, gc0, gc1 = r0 // s, (r1 - 1) // s, c0 // s, (c1 - 1) // s
        overlap = (gr0 <= gc1) & (gc0 <= gr1)
        full = (gr0 == gr1) & (gc0 == gc1) & (gr0 == gc0)
        return np.where(~overlap, EMPTY, np.where(full, FULL, PARTIAL)).astype(np.int8)

    def _tile_keys(self, ctx, h, r0, c0, n_q, n_k, B):
        # (r0 + a) // s == (c0 + b) // s depends on r0 // s - c0 // s, r0 % s and c0 % s only
        s = self.size
        return np.stack([r0 // s - c0 // s, r0 % s, c0 % s, np.minimum(B, n_q - r0), np.minimum(B, n_k - c0)], axis=1)


class RowColPattern(Pattern):
    """``row(h, i) or col(h, j)``: global rows and/or columns (global tokens, summary columns)."""

    def _row(self, h, i):  # default: no global rows
        return i < 0

    def _col(self, h, j):
        return j < 0

    def _mask(self, h, i, j):
        return self._row(h, i) | self._col(h, j)

    def _prepare(self, h, n_q, n_k):
        i = np.arange(n_q, dtype=np.int64)
        j = np.arange(n_k, dtype=np.int64)
        rows = np.asarray(_broadcast_bool(self._row(h, i), i, i), dtype=np.int64)
        cols = np.asarray(_broadcast_bool(self._col(h, j), j, j), dtype=np.int64)
        return np.concatenate([[0], np.cumsum(rows)]), np.concatenate([[0], np.cumsum(cols)])

    def _classify(self, ctx, h, r0, r1, c0, c1, n_q, n_k):
        pr, pc = ctx
        nr = pr[r1] - pr[r0]
        nc = pc[c1] - pc[c0]
        full = (nr == r1 - r0) | (nc == c1 - c0)
        empty = (nr == 0) & (nc == 0)
        return np.where(empty, EMPTY, np.where(full, FULL, PARTIAL)).astype(np.int8)

    def _tile_keys(self, ctx, h, r0, c0, n_q, n_k, B):
        # tile[a, b] = row(r0 + a) | col(c0 + b): one id per distinct run of B rows / columns
        ids = []
        for prefix, start, n in ((ctx[0], r0, n_q), (ctx[1], c0, n_k)):
            flags = np.zeros(ceil_div(n, B) * B, dtype=bool)
            flags[:n] = np.diff(prefix) > 0
            _, inv = np.unique(flags.reshape(-1, B), axis=0, return_inverse=True)
            ids += [inv.reshape(-1)[start // B], np.minimum(B, n - start)]
        return np.stack(ids, axis=1)

    def _tiles(self, ctx, h, r0, c0, n_q, n_k, B):
        ar = np.arange(B, dtype=np.int64)
        rows = (np.diff(ctx[0]) > 0)[np.minimum(r0[:, None] + ar, n_q - 1)]
        cols = (np.diff(ctx[1]) > 0)[np.minimum(c0[:, None] + ar, n_k - 1)]
        return _clip_tiles(rows[:, :, None] | cols[:, None, :], r0, c0, n_q, n_k, B)


class BlockTablePattern(Pattern):
    """Allowed pairs given per ``block x block`` tile by a boolean table ``[heads, nb_q, nb_k]``."""

    def __init__(self, table: np.ndarray, block: int):
        self.table = np.ascontiguousarray(table, dtype=bool)
        self.block = block
        self.n_heads = self.table.shape[0] if self.table.shape[0] > 1 else None
        self._prefix = None

    def _head(self, h):
        return h % self.table.shape[0] if isinstance(h, numbers.Integral) else h % self.table.shape[0]

    def _mask(self, h, i, j):
        t = self.table
        flat = (self._head(h) * t.shape[1] + i // self.block) * t.shape[2] + j // self.block
        return lookup(t.reshape(-1), flat)

    def _check_lengths(self, n_q, n_k):
        nb_q, nb_k = ceil_div(n_q, self.block), ceil_div(n_k, self.block)
        if nb_q > self.table.shape[1] or nb_k > self.table.shape[2]:
            raise ValueError(f"this pattern is defined for at most {self.table.shape[1] * self.block} queries and "
                             f"{self.table.shape[2] * self.block} keys (its block table is "
                             f"{self.table.shape[1]}x{self.table.shape[2]} blocks of {self.block}); got n_q={n_q}, n_k={n_k}")

    def _prepare(self, h, n_q, n_k):
        t = self.table[h % self.table.shape[0]].astype(np.int64)
        p = np.zeros((t.shape[0] + 1, t.shape[1] + 1), dtype=np.int64)
        p[1:, 1:] = t.cumsum(0).cumsum(1)
        return p

    def _classify(self, ctx, h, r0, r1, c0, c1, n_q, n_k):
        p = ctx
        b = self.block
        a0, a1, b0, b1 = r0 // b, (r1 - 1) // b + 1, c0 // b, (c1 - 1) // b + 1
        cnt = p[a1, b1] - p[a0, b1] - p[a1, b0] + p[a0, b0]
        area = (a1 - a0) * (b1 - b0)
        return np.where(cnt == 0, EMPTY, np.where(cnt == area, FULL, PARTIAL)).astype(np.int8)


class TokenTablePattern(Pattern):
    """An explicit token-level table ``[heads, n_q, n_k]`` (content-based patterns)."""

    def __init__(self, table: np.ndarray):
        self.table = np.ascontiguousarray(table, dtype=bool)
        self.n_heads = self.table.shape[0] if self.table.shape[0] > 1 else None

    def _mask(self, h, i, j):
        t = self.table
        flat = ((h % t.shape[0]) * t.shape[1] + i) * t.shape[2] + j
        return lookup(t.reshape(-1), flat)

    def _check_lengths(self, n_q, n_k):
        if n_q > self.table.shape[1] or n_k > self.table.shape[2]:
            raise ValueError(f"this pattern's table covers {self.table.shape[1]} queries x {self.table.shape[2]} keys; "
                             f"got n_q={n_q}, n_k={n_k}")

    def _prepare(self, h, n_q, n_k):
        t = self.table[h % self.table.shape[0], :n_q, :n_k].astype(np.int64)
        p = np.zeros((n_q + 1, n_k + 1), dtype=np.int64)
        p[1:, 1:] = t.cumsum(0).cumsum(1)
        return p

    def _classify(self, ctx, h, r0, r1, c0, c1, n_q, n_k):
        p = ctx
        cnt = p[r1, c1] - p[r0, c1] - p[r1, c0] + p[r0, c0]
        area = (r1 - r0) * (c1 - c0)
        return np.where(cnt == 0, EMPTY, np.where(cnt == area, FULL, PARTIAL)).astype(np.int8)


# ---------------------------------------------------------------------------- composition

def _common_heads(parts: Iterable[Pattern]) -> int | None:
    counts = {p.n_heads for p in parts if p.n_heads is not None and p.n_heads > 1}
    if len(counts) > 1:
        raise ValueError(f"cannot combine patterns with different per-head counts {sorted(counts)}")
    return counts.pop() if counts else None


class _Combination(Pattern):
    def __init__(self, parts: Sequence[Pattern], op: str):
        if not parts or not all(isinstance(p, Pattern) for p in parts):
            raise TypeError("union/intersection take Pattern objects")
        self.parts, self.op = tuple(parts), op
        self.n_heads = _common_heads(self.parts)

    def _mask(self, h, i, j):
        out = self.parts[0].mask_mod(0, h, i, j)
        for p in self.parts[1:]:
            out = (out | p.mask_mod(0, h, i, j)) if self.op == "|" else (out & p.mask_mod(0, h, i, j))
        return out

    def _check_lengths(self, n_q, n_k):
        for p in self.parts:
            p._check_lengths(n_q, n_k)

    def _prepare(self, h, n_q, n_k):
        return [p._prepare(h, n_q, n_k) for p in self.parts]

    def _classify(self, ctx, h, r0, r1, c0, c1, n_q, n_k):
        classes = np.stack([p._classify(c, h, r0, r1, c0, c1, n_q, n_k) for p, c in zip(self.parts, ctx)])
        n_partial = (classes == PARTIAL).sum(axis=0)
        if self.op == "|":
            out = np.where((classes == FULL).any(axis=0), FULL, np.where(n_partial > 0, PARTIAL, EMPTY))
            unsure = ~(classes == FULL).any(axis=0) & (n_partial >= 2)  # may add up to a full block
        else:
            out = np.where((classes == EMPTY).any(axis=0), EMPTY, np.where(n_partial > 0, PARTIAL, FULL))
            unsure = ~(classes == EMPTY).any(axis=0) & (n_partial >= 2)  # may cancel to an empty block
        out = out.astype(np.int8)
        if unsure.any():
            out[unsure] = Pattern._classify(self, None, h, r0[unsure], r1[unsure], c0[unsure], c1[unsure], n_q, n_k)
        return out

    def _tile_keys(self, ctx, h, r0, c0, n_q, n_k, B):
        keys = [p._tile_keys(c, h, r0, c0, n_q, n_k, B) for p, c in zip(self.parts, ctx)]
        return None if any(k is None for k in keys) else np.concatenate(keys, axis=1)

    def _tiles(self, ctx, h, r0, c0, n_q, n_k, B):
        out = self.parts[0]._tiles(ctx[0], h, r0, c0, n_q, n_k, B)
        for p, c in zip(self.parts[1:], ctx[1:]):
            t = p._tiles(c, h, r0, c0, n_q, n_k, B)
            out = (out | t) if self.op == "|" else (out & t)
        return out

    def __repr__(self):
        return "(" + f" {self.op} ".join(map(repr, self.parts)) + ")"


def union(*patterns: Pattern) -> Pattern:
    """Pairs allowed by any of the patterns."""
    if patterns and all(isinstance(p, DiagonalPattern) for p in patterns):
        return _DiagonalCombo(patterns, "|")
    return _Combination(patterns, "|")


def intersection(*patterns: Pattern) -> Pattern:
    """Pairs allowed by all of the patterns."""
    if patterns and all(isinstance(p, DiagonalPattern) for p in patterns):
        return _DiagonalCombo(patterns, "&")
    return _Combination(patterns, "&")


class PerHead(Pattern):
    """Head ``h`` follows ``patterns[h % len(patterns)]`` (e.g. factorized strided heads)."""

    def __init__(self, patterns: Sequence[Pattern]):
        if not patterns or not all(isinstance(p, Pattern) for p in patterns):
            raise TypeError("`patterns` must be a non-empty list of Pattern objects")
        self.parts = tuple(patterns)
        self.n_heads = len(self.parts)

    def _mask(self, h, i, j):
        L = len(self.parts)
        if isinstance(h, numbers.Integral):
            return self.parts[h % L].mask_mod(0, h, i, j)
        out = self.parts[0].mask_mod(0, h, i, j)
        for k, p in enumerate(self.parts[1:], start=1):
            here = p.mask_mod(0, h, i, j)
            sel = (h % L) == k
            out = torch.where(sel, here, out) if is_tensor(out) or is_tensor(here) else np.where(sel, here, out)
        return out

    def _check_lengths(self, n_q, n_k):
        for p in self.parts:
            p._check_lengths(n_q, n_k)

    def _prepare(self, h, n_q, n_k):
        return self.parts[h % len(self.parts)]._prepare(h, n_q, n_k)

    def _classify(self, ctx, h, r0, r1, c0, c1, n_q, n_k):
        return self.parts[h % len(self.parts)]._classify(ctx, h, r0, r1, c0, c1, n_q, n_k)

    def _tile_keys(self, ctx, h, r0, c0, n_q, n_k, B):
        return self.parts[h % len(self.parts)]._tile_keys(ctx, h, r0, c0, n_q, n_k, B)

    def _tiles(self, ctx, h, r0, c0, n_q, n_k, B):
        return self.parts[h % len(self.parts)]._tiles(ctx, h, r0, c0, n_q, n_k, B)

    def __repr__(self):
        return f"per_head([{', '.join(map(repr, self.parts))}])"


def per_head(patterns: Sequence[Pattern]) -> Pattern:
    """A pattern whose head ``h`` uses ``patterns[h % len(patterns)]``; needs ``n_heads == len(patterns)``."""
    return PerHead(patterns)


class NamedPattern(Pattern):
    """A composed pattern shown under a readable constructor name (``strided``, ``longformer``, ...):
    every question is answered by ``inner``; only the repr differs."""

    def __init__(self, inner: Pattern, name: str, params: dict):
        self.inner, self.name, self.params = inner, name, params
        self.n_heads = inner.n_heads

    def _mask(self, h, i, j):
        return self.inner.mask_mod(0, h, i, j)

    def _check_lengths(self, n_q, n_k):
        self.inner._check_lengths(n_q, n_k)

    def _prepare(self, h, n_q, n_k):
        return self.inner._prepare(h, n_q, n_k)

    def _classify(self, ctx, h, r0, r1, c0, c1, n_q, n_k):
        return self.inner._classify(ctx, h, r0, r1, c0, c1, n_q, n_k)

    def _tile_keys(self, ctx, h, r0, c0, n_q, n_k, B):
        return self.inner._tile_keys(ctx, h, r0, c0, n_q, n_k, B)

    def _tiles(self, ctx, h, r0, c0, n_q, n_k, B):
        return self.inner._tiles(ctx, h, r0, c0, n_q, n_k, B)

    def _name(self):
        return self.name

    def _params(self):
        return self.params


# ---------------------------------------------------------------------------- dense and causal

class _Dense(DiagonalPattern):
    def _pred(self, h, d):
        return d == d

    def _name(self):
        return "dense"


class _Causal(DiagonalPattern):
    def _pred(self, h, d):
        return d >= 0

    def _name(self):
        return "causal"


def dense() -> Pattern:
    """Every pair: the ordinary attention matrix."""
    return _Dense()


def causal() -> Pattern:
    """``j <= i`` (top-left aligned, as ``is_causal=True``)."""
    return _Causal()
