"""Decoding kernel: a few query rows against a long key-value cache, over the blocks a pattern keeps.

Defined in Chapter 4 (the decoding section); the language model of Chapter 9 uses it through
:meth:`sparse_core.attention.cores.BlockSparseCore.rows` when it generates.

A decoding step has ``T`` new query rows (1 when sampling, a few when verifying draft tokens) at
positions ``offset .. offset + T - 1`` and ``S = offset + T`` cached keys. Dense attention reads
all ``S`` keys and values of every head per step; a pattern that keeps ``w`` keys per row (a
window, global tokens, strided columns) needs only the key blocks that hold them. Decoding is
memory-bound (each key and value is used by ``T`` rows only), so the kernel's work is reading those
blocks once:

* :func:`decode_tables` lists, per layout head, the key blocks the rows keep and a uint8 token
  mask ``[T, block]`` per partial block. It takes the candidate blocks from the (cached) square
  layout of the pattern at a power-of-two length ``>= S`` (at ``S`` for a pattern defined up to a
  fixed length; every block when the pattern has no layout at that length) and evaluates the pattern's
  ``mask_mod`` on those blocks only: ``O(T * w)`` work per step, never ``O(S)``.
* :func:`decode_forward`: one task per (batch, query head, split of the kept blocks); per kept
  block, scores of the ``T`` rows against its keys (dot products vectorised over ``d``), the mask,
  a base-2 online softmax and ``acc += p v``; keys and values are read in place from the cache
  (``[B, kv_heads, capacity, d]``, grouped-query heads shared, nothing copied). With fewer tasks
  than threads the blocks are split and the partial results merged by their log-sum-exp
  (as FlashDecoding does).
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from . import microkernels as mk

__all__ = ["decode_tables", "decode_forward", "merge_splits", "run_decode", "cache_base"]

LOG2E = 1.4426950408889634
LN2 = 0.6931471805599453
_FM = {"contract", "reassoc", "arcp"}


def decode_tables(pattern, n_heads: int, block_size: int, offset: int, n_rows: int, n_k: int,
                  causal: bool = True, layout_for=None) -> dict:
    """Kept key blocks of the query rows ``offset .. offset + n_rows - 1`` against ``n_k`` keys.

    Returns ``indptr [n_heads + 1]``, ``indices`` (key blocks, ascending per head), ``tile_of``
    (index into ``tiles``, -1 for a block every row keeps whole) and ``tiles [n_tiles, n_rows,
    block_size]`` uint8 (at least one tile). ``n_heads``: the layout heads (1 when the pattern
    is shared). The rule is the pattern's ``mask_mod`` (``& j <= i`` when ``causal``).
    ``layout_for(pattern, n_q, n_k, block_size, n_heads)`` gives the candidate layout
    (:func:`sparse_core.attention.cores.layout_for`, the library's cache, when the core calls).
    """
    if layout_for is None:  # uncached; the attention core passes its layout cache

        def layout_for(pattern, n_q, n_k, block_size, n_heads):
            return pattern.to_layout(n_q, n_k, block_size, n_heads)
    B = block_size
    n_cap = max(B, 1 << max(0, n_k - 1).bit_length())
    lay = None
    for n in (n_cap, n_k):  # a pattern defined up to a fixed length (a BigBird plan): its own length
        try:
            lay = layout_for(pattern, n, n, B, n_heads)
            break
        except ValueError:
            pass
    qb0, qb1 = offset // B, (offset + n_rows - 1) // B
    i = np.arange(offset, offset + n_rows, dtype=np.int64)[:, None, None]      # (T, 1, 1)
    jj = np.arange(B, dtype=np.int64)[None, None, :]                            # (1, 1, B)
    indptr, indices, tile_of, tiles = [0], [], [], []
    for h in range(n_heads):
        if lay is None:  # no layout at this length (global indices beyond a short prompt): every block
            cand = np.arange(-(-n_k // B), dtype=np.int64)
        else:
            cand = np.unique(lay.indices[lay.indptr[h, qb0]:lay.indptr[h, qb1 + 1]])
        cand = cand[cand * B < n_k]
        if len(cand):
            j = cand[None, :, None] * B + jj                                   # (1, nb, B)
            keep = np.asarray(pattern.mask_mod(0, h, i, j), dtype=bool) & (j < n_k)
            if causal:
                keep &= j <= i
            keep = np.broadcast_to(keep, (n_rows, len(cand), B))               # (T, nb, B)
            valid = np.broadcast_to(j < n_k, keep.shape)
            any_ = keep.any(axis=(0, 2))
            full = (keep | ~valid).all(axis=(0, 2))
            for b in np.flatnonzero(any_):
                indices.append(int(cand[b]))
                if full[b]:
                    tile_of.append(-1)
                else:
                    tile_of.append(len(tiles))
                    tiles.append(keep[:, b, :])
        indptr.append(len(indices))
    t = np.zeros((max(1, len(tiles)), n_rows, B), dtype=np.uint8)
    if tiles:
        t[: len(tiles)] = np.stack(tiles)
    return {"indptr": np.asarray(indptr, dtype=np.int64), "indices": np.asarray(indices, dtype=np.int64),
            "tile_of": np.asarray(tile_of, dtype=np.int64), "tiles": t}


@njit(parallel=True, cache=True, fastmath=_FM)
def decode_forward(q, k, v, scale2, block, n_heads, n_k, n_split, indptr, indices, tile_of, tiles, po, pm, pl):
    """Partial results of every split: ``po [n_split, B, nh, T, dv]`` (unnormalised), ``pm``
    (running max, base 2) and ``pl`` (sum) ``[n_split, B, nh, T]``. ``q [B, nh, T, d]``;
    ``k``, ``v`` ``[B, kv_heads, capacity, d]`` (``n_k`` rows used)."""
    Bt, nh, T, d = q.shape
    n_kv = k.shape[1]
    dv = v.shape[3]
    group = nh // n_kv
    zero = q.dtype.type(0.0)
    for task in prange(Bt * nh * n_split):
        sp = task % n_split
        bh = task // n_split
        b = bh // nh
        h = bh % nh
        kvh = h // group
        lh = h % n_heads
        p0, p1 = indptr[lh], indptr[lh + 1]
        per = (p1 - p0 + n_split - 1) // n_split
        s0 = p0 + sp * per
        s1 = min(p1, s0 + per)
        qs = np.empty((T, d), dtype=q.dtype)
        for t in range(T):
            for c in range(d):
                qs[t, c] = q[b, h, t, c] * scale2
        m = np.full(T, -np.inf, dtype=q.dtype)
        l = np.zeros(T, dtype=q.dtype)
        acc = np.zeros((T, dv), dtype=q.dtype)
        s = np.empty(T * block, dtype=q.dtype)  # scores of the T rows against one key block
        bad = np.zeros(T, dtype=np.bool_)
        for p in range(s0, s1):
            kb = indices[p]
            j0 = kb * block
            nc = min(block, n_k - j0)
            tid = tile_of[p]
            for t in range(T):
                for j in range(nc):
                    x = zero
                    for c in range(d):
                        x += qs[t, c] * k[b, kvh, j0 + j, c]
                    s[t * block + j] = x
            for t in range(T):
                if tid >= 0:
                    for j in range(nc):
                        if tiles[tid, t, j] == 0:
                            s[t * block + j] = -np.inf
                mx, tot, a, grew, nan = mk.softmax_row(s, t * block, nc, m[t])
                if nan:
                    bad[t] = True
                if grew:
                    l[t] = l[t] * a + tot
                    for c in range(dv):
                        acc[t, c] *= a
                    m[t] = mx
                else:
                    l[t] += tot
            for j in range(nc):
                for t in range(T):
                    w = s[t * block + j]
                    if w != zero:
                        for c in range(dv):
                            acc[t, c] += w * v[b, kvh, j0 + j, c]
        for t in range(T):
            for c in range(dv):
                po[sp, b, h, t, c] = acc[t, c]
            pm[sp, b, h, t] = np.nan if bad[t] else m[t]
            pl[sp, b, h, t] = l[t]


@njit(cache=True)
def merge_splits(po, pm, pl, out, lse):
    """``out [B, nh, T, dv]``, ``lse`` (natural log) from the splits' partial results: each split
    rescaled by ``2**(m_s - m)``; fully masked rows give 0 and ``-inf``; a NaN score gives NaN."""
    n_split, Bt, nh, T, dv = po.shape
    for b in range(Bt):
        for h in range(nh):
            for t in range(T):
                mx = -np.inf
                nan = False
                for sp in range(n_split):
                    x = pm[sp, b, h, t]
                    if x != x or pl[sp, b, h, t] != pl[sp, b, h, t]:
                        nan = True
                    elif x > mx:
                        mx = x
                tot = 0.0
                for c in range(dv):
                    out[b, h, t, c] = 0.0
                if not nan and mx != -np.inf:
                    for sp in range(n_split):
                        if pl[sp, b, h, t] > 0:
                            a = 2.0 ** (pm[sp, b, h, t] - mx)
                            tot += pl[sp, b, h, t] * a
                            for c in range(dv):
                                out[b, h, t, c] += po[sp, b, h, t, c] * a
                if nan or tot != tot:
                    for c in range(dv):
                        out[b, h, t, c] = np.nan
                    lse[b, h, t] = np.nan
                elif tot > 0:
                    for c in range(dv):
                        out[b, h, t, c] /= tot
                    lse[b, h, t] = (mx + math.log2(tot)) * LN2
                else:
                    lse[b, h, t] = -np.inf


def cache_base(x: np.ndarray) -> np.ndarray:
    """A C-contiguous ``[B, heads, capacity, d]`` array over the memory of ``x [B, heads, n, d]``.

    ``x`` may be the first ``n`` rows of a larger buffer (a key-value cache with spare capacity:
    strides ``(heads * cap * d, cap * d, d, 1)``); the rows beyond ``n`` are never read. Anything
    else is copied."""
    if x.ndim == 4 and x.flags.c_contiguous:
        return x
    it = x.itemsize
    Bt, H, n, d = x.shape
    st = x.strides
    if x.ndim == 4 and st[3] == it and st[2] == d * it and st[1] % (d * it) == 0 and st[0] == H * st[1]:
        cap = st[1] // (d * it)
        if cap >= n:
            base = np.lib.stride_tricks.as_strided(x, shape=(Bt, H, cap, d), strides=st)
            if base.flags.c_contiguous:
                return base
    return np.ascontiguousarray(x)


def run_decode(q: np.ndarray, k: np.ndarray, v: np.ndarray, tables: dict, block_size: int, n_heads: int,
               scale: float, n_k: int | None = None, threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(out [B, nh, T, dv], lse [B, nh, T])`` of the rows ``q [B, nh, T, d]`` against ``k, v
    [B, kv_heads, >= n_k, d]`` (``n_k`` default ``k.shape[2]``), over ``tables`` from
    :func:`decode_tables` (``n_heads`` its layout heads)."""
    import numba

    Bt, nh, T, d = q.shape
    n_k = k.shape[2] if n_k is None else n_k
    q = np.ascontiguousarray(q)
    kb, vb = cache_base(k), cache_base(v)
    threads = numba.get_num_threads() if threads is None else threads
    per_head = np.diff(tables["indptr"]).max() if len(tables["indptr"]) > 1 else 0
    n_split = int(max(1, min(per_head, -(-2 * threads // max(1, Bt * nh)))))
    po = np.empty((n_split, Bt, nh, T, v.shape[3]), dtype=q.dtype)
    pm = np.empty((n_split, Bt, nh, T), dtype=q.dtype)
    pl = np.empty((n_split, Bt, nh, T), dtype=q.dtype)
    mk.call(decode_forward, q, kb, vb, q.dtype.type(scale * LOG2E), block_size, n_heads, n_k, n_split,
            tables["indptr"], tables["indices"], tables["tile_of"], tables["tiles"], po, pm, pl)
    out = np.empty((Bt, nh, T, v.shape[3]), dtype=q.dtype)
    lse = np.empty((Bt, nh, T), dtype=q.dtype)
    merge_splits(po, pm, pl, out, lse)
    return out, lse
