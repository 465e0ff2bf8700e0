"""Kernel-ready forms of a :class:`~sparse_core.patterns.BlockLayout`, built once per layout.

Defined in Chapter 4 (the CPU tables) and Chapter 4b (their device copies). A layout holds the
kept blocks and their token masks compactly (CSR per head, bit-packed tiles); the kernels want
int64 CSR arrays, uint8 ``[B, B]`` tiles and the same blocks listed by key block for dK/dV.
:func:`kernel_tables` builds those arrays and :func:`device_tables` copies them to a device;
both are cached here, keyed by the layout (a :class:`weakref.WeakKeyDictionary`: an entry lives
as long as its layout, and layouts hash by content, so an equal layout -- e.g. one unpickled --
finds the same tables). Nothing is stored inside the layout.
"""
from __future__ import annotations

import weakref
from typing import Any

import numpy as np

from ..patterns.layout import BlockLayout, unpack_tiles

__all__ = ["kernel_tables", "device_tables", "TABLE_KEYS", "clear_cache"]

#: the arrays the kernels read (the keys of :func:`kernel_tables`)
TABLE_KEYS = ("indptr", "indices", "tile_of", "tiles", "t_indptr", "t_indices", "t_tile_of")

_TABLES: "weakref.WeakKeyDictionary[BlockLayout, dict]" = weakref.WeakKeyDictionary()
_DEVICE: "weakref.WeakKeyDictionary[BlockLayout, dict]" = weakref.WeakKeyDictionary()


def kernel_tables(layout: BlockLayout) -> dict:
    """Arrays the kernels need, computed once per layout and cached (not in the layout).

    Defined in Chapter 4. ``tiles[t]`` is a token mask (uint8 ``[B, B]``, at least one tile so
    the array is never empty), ``tile_of[p]`` the tile of kept block ``p`` (-1 when full);
    ``t_*`` list the same blocks by key block (for dK/dV; ``t_tile_of`` points into the same
    ``tiles``, which are indexed ``[query offset, key offset]``).
    """
    if not isinstance(layout, BlockLayout):
        raise TypeError(f"`layout` must be a BlockLayout (pattern.to_layout(...)), got {type(layout).__name__}")
    cached = _TABLES.get(layout)
    if cached is not None:
        return cached
    B = layout.block_size
    heads, rows, cols = layout.block_heads(), layout.block_rows(), layout.indices.astype(np.int64)
    tiles = np.zeros((max(1, layout.n_tiles), B, B), dtype=np.uint8)
    tiles[: layout.n_tiles] = unpack_tiles(layout.tile_bits, B)
    tile_of = np.ascontiguousarray(layout.tile_of, dtype=np.int64)
    tr = layout.transpose()
    order = np.lexsort((rows, cols, heads))
    tables = {
        "indptr": np.ascontiguousarray(layout.indptr, dtype=np.int64),
        "indices": np.ascontiguousarray(layout.indices, dtype=np.int64),
        "tile_of": tile_of,
        "tiles": tiles,
        "t_indptr": np.ascontiguousarray(tr.indptr, dtype=np.int64),
        "t_indices": np.ascontiguousarray(tr.indices, dtype=np.int64),
        "t_tile_of": np.ascontiguousarray(tile_of[order]),
    }
    _TABLES[layout] = tables
    return tables


def device_tables(layout: BlockLayout, device: Any, to_device=None) -> dict:
    """:func:`kernel_tables` copied to ``device``, cached per (layout, device).

    Chapter 4b uses these device copies. ``to_device(array, device)`` makes one copy; the default makes a
    torch tensor on ``device`` (``torch.from_numpy(a).to(device)``).
    """
    per_device = _DEVICE.get(layout)
    if per_device is None:
        per_device = _DEVICE[layout] = {}
    key = str(device)
    if key not in per_device:
        if to_device is None:
            import torch

            def to_device(a, dev):
                return torch.from_numpy(a).to(dev)

        t = kernel_tables(layout)
        per_device[key] = {name: to_device(np.ascontiguousarray(t[name]), device) for name in TABLE_KEYS}
    return per_device[key]


def clear_cache() -> None:
    """Drop every cached table (host and device)."""
    _TABLES.clear()
    _DEVICE.clear()
