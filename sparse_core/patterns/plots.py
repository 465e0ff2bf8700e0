r"""Pictures of patterns and of the attention graph they induce.

* :func:`plot_mask` -- the token mask of one head (black = may attend, white = masked);
* :func:`plot_layout` -- the block layout: full, partial (with the token mask drawn faintly
  inside, for small sizes) and skipped blocks;
* :func:`reach`, :func:`hops`, :func:`receptive_field` -- how far information travels through a
  stack of attention layers;
* :func:`plot_reach` -- the fraction of connected ``(i, j)`` pairs against the number of layers,
  for one or several patterns; :func:`plot_hops` -- the heatmap of :func:`hops`.

The attention graph
-------------------
Attention from query :math:`i` to key :math:`j` moves information from token :math:`j` to
token :math:`i`. One layer (attention plus the residual connection) therefore has the adjacency
:math:`A = M \lor I` (``M`` the pattern's mask of one head, or of all heads with
``head="all"``), and after :math:`L` layers

.. math:: R_L = A^L \ (\text{boolean}), \qquad R_L[i, j] = \text{information from } j
          \text{ can reach position } i.

``hops[i, j]`` is the smallest :math:`L` with :math:`R_L[i, j]` (0 on the diagonal, -1 when
never). A *schedule* -- a list of patterns, layer :math:`\nu` using
``patterns[(\nu - 1) % len(patterns)]`` -- gives per-layer patterns such as WaveNet-style
dilation doubling; every function below that takes ``pattern`` accepts one.

Nothing here calls ``plt.show()``: plotting functions draw on ``ax`` (a new figure when it is
None) and return the Axes, so they work headless and in notebooks alike.
"""
from __future__ import annotations

import numbers
from typing import Any, Sequence

import numpy as np

from .base import EMPTY, FULL, PARTIAL, Pattern, check_int
from .graph import (MAX_DENSE_N, MAX_FIELD_N, check_length, check_pattern, connected_fraction, hops, pattern_heads,
                    reach, receptive_field, schedule)
from .layout import BlockLayout

__all__ = ["plot_mask", "plot_layout", "reach", "hops", "receptive_field", "plot_reach", "plot_hops",
           "MAX_DENSE_N"]

#: largest block grid (per side) :func:`plot_layout` draws
MAX_BLOCKS = 4096
#: token overlay inside partial blocks is drawn by default up to this many tokens per side
AUTO_TOKEN_OVERLAY_N = 1024

FULL_COLOR = "#1f4e79"
PARTIAL_COLOR = "#9ecae1"
SKIP_COLOR = "#ffffff"



# ---------------------------------------------------------------------------- argument checks

def _wrap(text: str, width: int = 60) -> str:
    """Long reprs on several title lines."""
    import textwrap

    return "\n".join(textwrap.wrap(text, width, break_long_words=True, break_on_hyphens=False)) or text


def _new_axes(ax, figsize=(5, 5)):
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt  # only when a new figure is needed

    _, ax = plt.subplots(figsize=figsize)
    return ax


def _index_ticks(ax, n_q: int, n_k: int) -> None:
    from matplotlib.ticker import MaxNLocator, MultipleLocator

    for axis, n in ((ax.xaxis, n_k), (ax.yaxis, n_q)):
        axis.set_major_locator(MultipleLocator(1) if n <= 16 else MaxNLocator(nbins=8, integer=True))


# ---------------------------------------------------------------------------- masks and layouts

def plot_mask(pattern: Pattern, n: int, n_k: int | None = None, head: int = 0, n_heads: int | None = None,
              ax=None, title: str | None = None):
    """Token mask of ``head`` (or "all": the union of the heads): black = may attend, white = masked.

    Returns the Axes. ``n`` queries and ``n_k`` keys (default ``n``); rows are queries ``i``,
    columns keys ``j``. ``n_heads`` (default: the pattern's own head count, else 1) is how many
    heads the pattern is built for; ``head`` must be below it. Sizes above :data:`MAX_DENSE_N`
    raise ValueError.
    """
    check_pattern(pattern)
    n_q = check_length("n", n, MAX_DENSE_N, "a dense mask plot")
    n_k = n_q if n_k is None else check_length("n_k", n_k, MAX_DENSE_N, "a dense mask plot")
    H, heads = pattern_heads(pattern, head, n_heads)
    mask = pattern.to_dense(n_q, n_k, H)[heads].any(axis=0)
    ax = _new_axes(ax)
    ax.imshow(mask, cmap="gray_r", vmin=0, vmax=1, interpolation="nearest", aspect="equal")
    ax.set_xlabel("key index j")
    ax.set_ylabel("query index i")
    _index_ticks(ax, n_q, n_k)
    if title is None:
        where = "" if H == 1 else (f", head {heads[0]}" if head != "all" else f", union of {H} heads")
        title = f"{_wrap(repr(pattern))}\n{n_q}x{n_k}{where}: {100 * mask.mean():.1f}% of pairs"
    ax.set_title(title, fontsize="medium")
    return ax


def plot_layout(layout_or_pattern, n: int | None = None, block_size: int | None = None, *, n_k: int | None = None,
                n_heads: int | None = None, head: int = 0, ax=None, title: str | None = None,
                show_tokens: bool | str = "auto"):
    """Block layout of one head: full, partial and skipped blocks, with a legend. Returns the Axes.

    Pass a :class:`BlockLayout`, or a pattern with ``n`` (queries; ``n_k`` keys, default ``n``)
    and ``block_size``. Inside partial blocks the token mask is drawn faintly when
    ``show_tokens`` is True, or when "auto" and both lengths are at most
    :data:`AUTO_TOKEN_OVERLAY_N` (a layout carries its token masks). The title gives the block
    density and, when it is cheap to count, the token density of that head.
    """
    if isinstance(layout_or_pattern, BlockLayout):
        layout = layout_or_pattern
        given = {"n": (n, layout.n_q), "block_size": (block_size, layout.block_size), "n_k": (n_k, layout.n_k),
                 "n_heads": (n_heads, layout.n_heads)}
        for name, (value, actual) in given.items():
            if value is not None and value != actual:
                raise ValueError(f"`{name}`={value!r} conflicts with the layout's {name}={actual} "
                                 "(leave it out when passing a BlockLayout)")
        pattern = None  # a layout keeps no pattern: its label names it, its tiles give the tokens
        H = layout.n_heads
        if isinstance(head, bool) or not isinstance(head, numbers.Integral) or not 0 <= head < H:
            raise ValueError(f"`head` must be an integer in 0..{H - 1} for this layout of {H} head(s), got {head!r}")
        head = int(head)
    elif isinstance(layout_or_pattern, Pattern):
        pattern = layout_or_pattern
        if n is None or block_size is None:
            raise ValueError("plot_layout(pattern, n, block_size): a pattern needs `n` and `block_size`")
        n_q = check_int("n", n, 1)
        n_kk = n_q if n_k is None else check_int("n_k", n_k, 1)
        B = check_int("block_size", block_size, 1)
        for name, length in (("n", n_q), ("n_k", n_kk)):
            if -(-length // B) > MAX_BLOCKS:
                raise ValueError(f"`{name}`={length} with block_size={B} gives more than {MAX_BLOCKS} blocks "
                                 "per side: too many to draw; use a larger block_size")
        H, heads = pattern_heads(pattern, head, n_heads)
        if isinstance(head, str):
            raise ValueError("plot_layout shows one head: pass an integer `head`")
        head = heads[0]
        layout = pattern.to_layout(n_q, n_kk, B, H)
    else:
        raise ValueError("`layout_or_pattern` must be a BlockLayout or a Pattern, "
                         f"got {type(layout_or_pattern).__name__}")
    n_q, n_kk, B = layout.n_q, layout.n_k, layout.block_size
    if layout.n_qb > MAX_BLOCKS or layout.n_kb > MAX_BLOCKS:
        raise ValueError(f"the layout has {layout.n_qb}x{layout.n_kb} blocks: too many to draw "
                         f"(at most {MAX_BLOCKS} per side)")
    if n_q == 0 or n_kk == 0:
        raise ValueError("the layout is empty (n_q or n_k is 0): nothing to draw")

    bm = layout.to_block_mask()[head]
    n_full = int((bm == FULL).sum())
    n_partial = int((bm == PARTIAL).sum())
    n_skip = int((bm == EMPTY).sum())

    if show_tokens == "auto":
        show_tokens = max(n_q, n_kk) <= AUTO_TOKEN_OVERLAY_N and n_partial > 0
    elif not isinstance(show_tokens, bool):
        raise ValueError(f"`show_tokens` must be True, False or \"auto\", got {show_tokens!r}")
    tokens = None
    if show_tokens:
        if max(n_q, n_kk) > MAX_DENSE_N:
            raise ValueError(f"show_tokens=True needs a dense {n_q}x{n_kk} mask: at most {MAX_DENSE_N} per side")
        tokens = layout.to_dense()[head]

    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    ax = _new_axes(ax, figsize=(6, 5))
    cmap = ListedColormap([SKIP_COLOR, PARTIAL_COLOR, FULL_COLOR])
    # the image spans whole blocks; the limits below cut the ragged last row/column to size
    ax.imshow(bm, cmap=cmap, vmin=-0.5, vmax=2.5, interpolation="nearest",
              extent=(0, layout.n_kb * B, layout.n_qb * B, 0), aspect="equal")
    if tokens is not None:
        inside = np.repeat(np.repeat(bm == PARTIAL, B, axis=0), B, axis=1)[:n_q, :n_kk] & tokens
        rgba = np.zeros((n_q, n_kk, 4))
        rgba[inside, 3] = 0.45
        ax.imshow(rgba, interpolation="nearest", extent=(0, n_kk, n_q, 0), aspect="equal")
    if layout.n_qb <= 64 and layout.n_kb <= 64:
        ax.vlines(np.arange(1, layout.n_kb) * B, 0, n_q, colors="0.75", linewidth=0.5)
        ax.hlines(np.arange(1, layout.n_qb) * B, 0, n_kk, colors="0.75", linewidth=0.5)
    ax.set_xlim(0, n_kk)
    ax.set_ylim(n_q, 0)
    ax.set_xlabel("key index j")
    ax.set_ylabel("query index i")
    from matplotlib.ticker import MaxNLocator
    ax.xaxis.set_major_locator(MaxNLocator(nbins=8, integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(nbins=8, integer=True))
    handles = [Patch(facecolor=FULL_COLOR, edgecolor="0.5", label=f"full ({n_full})"),
               Patch(facecolor=PARTIAL_COLOR, edgecolor="0.5",
                     label=f"partial ({n_partial})" + (", token mask inside" if tokens is not None else "")),
               Patch(facecolor=SKIP_COLOR, edgecolor="0.5", label=f"skipped ({n_skip})")]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize="small", frameon=False)
    if title is None:
        total = bm.size
        where = f", head {head}" if layout.n_heads > 1 else ""
        line = f"{n_q}x{n_kk}, block {B}{where}: {n_full + n_partial}/{total} blocks ({100 * (n_full + n_partial) / total:.1f}%)"
        density = _head_density(layout, head, bm, tokens)
        if density is not None:
            line += f", {100 * density:.1f}% of pairs"
        name = repr(pattern) if pattern is not None else layout.label
        title = (_wrap(name) + "\n" if name else "") + line
    ax.set_title(title, fontsize="medium")
    return ax


def _head_density(layout: BlockLayout, head: int, bm: np.ndarray, tokens) -> float | None:
    """Allowed pairs / all pairs of one head (exact: full blocks plus the bits of partial tiles)."""
    n_q, n_k, B = layout.n_q, layout.n_k, layout.block_size
    if tokens is not None:
        return float(tokens.mean())
    rows = np.minimum((np.arange(layout.n_qb) + 1) * B, n_q) - np.arange(layout.n_qb) * B
    cols = np.minimum((np.arange(layout.n_kb) + 1) * B, n_k) - np.arange(layout.n_kb) * B
    area = rows[:, None] * cols[None, :]
    kept = int(area[bm == FULL].sum())
    tiles = layout.tile_of[(layout.block_heads() == head) & ~layout.full]
    kept += int(np.bitwise_count(layout.tile_bits[tiles]).sum(dtype=np.int64))
    return kept / (n_q * n_k)


# ---------------------------------------------------------------------------- the attention graph

def _label(item) -> str:
    if isinstance(item, Pattern):
        return repr(item)
    text = " / ".join(map(repr, item))
    return "layers: " + (text if len(text) <= 70 else text[:67] + "...")


def plot_reach(pattern_or_list, n: int, max_layers: int, ax=None, labels: Sequence[str] | None = None,
               head: int | str = 0, n_heads: int | None = None, logy: bool = False, title: str | None = None):
    """Fraction of the ``n * n`` pairs ``(i, j)`` with ``j`` able to reach ``i`` after ``L = 0 ..
    max_layers`` layers, one curve per pattern. Returns the Axes.

    ``pattern_or_list``: a Pattern, or a list whose items are Patterns or per-layer schedules
    (tuples/lists of Patterns). Causal patterns level off at ``(n + 1) / (2n)`` (dotted line).
    Windows grow linearly in ``L``; strided patterns connect everything causal in 2 layers; a
    schedule of doubling dilations grows exponentially.
    """
    if isinstance(pattern_or_list, Pattern):
        items = [pattern_or_list]
    elif isinstance(pattern_or_list, (list, tuple)) and pattern_or_list:
        items = [p if isinstance(p, Pattern) else schedule(p) for p in pattern_or_list]
    else:
        raise ValueError("`pattern_or_list` must be a Pattern or a non-empty list of Patterns "
                         f"(or of per-layer schedules), got {pattern_or_list!r}")
    n = check_length("n", n, MAX_DENSE_N, "plot_reach")
    max_layers = check_int("max_layers", max_layers, 1)
    if labels is None:
        labels = [_label(p) for p in items]
    elif len(labels) != len(items):
        raise ValueError(f"`labels` has {len(labels)} entries for {len(items)} patterns")
    fractions = [connected_fraction(schedule(item), n, max_layers, head, n_heads) for item in items]
    ax = _new_axes(ax, figsize=(6.5, 4.5))
    L = np.arange(max_layers + 1)
    for frac, label in zip(fractions, labels):
        ax.plot(L, frac, marker="o", markersize=3, label=label)
    ax.axhline(1.0, color="0.6", linestyle=":", linewidth=1)
    ax.axhline((n + 1) / (2 * n), color="0.6", linestyle=":", linewidth=1)
    ax.text(max_layers, (n + 1) / (2 * n), "causal limit ", ha="right", va="bottom", fontsize="x-small", color="0.4")
    ax.set_xlabel("layers L")
    ax.set_ylabel("fraction of (i, j) pairs connected")
    if logy:
        ax.set_yscale("log")
    else:
        ax.set_ylim(0, 1.05)
    from matplotlib.ticker import MaxNLocator
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(title if title is not None else f"Reach of the attention graph, n={n}", fontsize="medium")
    ax.legend(fontsize="x-small")
    return ax


def plot_hops(pattern, n: int, head: int | str = 0, max_layers: int | None = None, n_heads: int | None = None,
              ax=None, title: str | None = None):
    """Heatmap of :func:`hops` (white = never reaches). Returns the Axes (with a colorbar)."""
    h = hops(pattern, n, head, max_layers=max_layers, n_heads=n_heads)
    ax = _new_axes(ax, figsize=(5.5, 5))
    from matplotlib import colormaps
    from matplotlib.colors import BoundaryNorm

    cmap = colormaps["viridis"].with_extremes(bad="white")
    top = max(1, int(h.max()))
    norm = BoundaryNorm(np.arange(-0.5, top + 1.5), cmap.N) if top <= 24 else None
    image = ax.imshow(np.ma.masked_less(h, 0), cmap=cmap, norm=norm, interpolation="nearest", aspect="equal",
                      **({} if norm is not None else {"vmin": 0, "vmax": top}))
    bar = ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    bar.set_label("layers (white = never)")
    if top <= 24:
        from matplotlib.ticker import MaxNLocator
        bar.locator = MaxNLocator(integer=True)
        bar.update_ticks()
    ax.set_xlabel("key index j (source)")
    ax.set_ylabel("query index i (destination)")
    _index_ticks(ax, n, n)
    if title is None:
        never = int((h < 0).sum())
        title = f"{_wrap('hops: ' + _label(pattern if isinstance(pattern, Pattern) else schedule(pattern)))}\n" \
                f"n={n}, at most {int(h.max())} layers, {never} pairs never connected"
    ax.set_title(title, fontsize="medium")
    return ax
