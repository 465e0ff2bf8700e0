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
never). A *schedule* -- a list of patterns, layer :math:`\ell` using
``patterns[(\ell - 1) % len(patterns)]`` -- gives per-layer patterns such as WaveNet-style
dilation doubling; every function below that takes ``pattern`` accepts one.

Nothing here calls ``plt.show()``: plotting functions draw on ``ax`` (a new figure when it is
None) and return the Axes, so they work headless and in notebooks alike.
"""
from __future__ import annotations

import numbers
from typing import Any, Sequence

import numpy as np

from .base import EMPTY, FULL, PARTIAL, Pattern, check_int
from .layout import BlockLayout

__all__ = ["plot_mask", "plot_layout", "reach", "hops", "receptive_field", "plot_reach", "plot_hops",
           "MAX_DENSE_N"]

#: largest sequence length for which a dense ``n x n`` picture or graph computation is allowed
MAX_DENSE_N = 4096
#: largest sequence length for :func:`receptive_field` of a single pattern (evaluated row by row)
MAX_FIELD_N = 16384
#: largest block grid (per side) :func:`plot_layout` draws
MAX_BLOCKS = 4096
#: token overlay inside partial blocks is drawn by default up to this many tokens per side
AUTO_TOKEN_OVERLAY_N = 1024

FULL_COLOR = "#1f4e79"
PARTIAL_COLOR = "#9ecae1"
SKIP_COLOR = "#ffffff"

_BIT_STEP_BUDGET = 1 << 22  # uint64 words gathered at once in a bit-parallel propagation step


# ---------------------------------------------------------------------------- argument checks

def _check_pattern(pattern: Any, name: str = "pattern") -> Pattern:
    if not isinstance(pattern, Pattern):
        raise ValueError(f"`{name}` must be a Pattern (e.g. sparse_core.patterns.sliding_window(4)), "
                         f"got {type(pattern).__name__}")
    return pattern


def _schedule(pattern: Any) -> tuple[Pattern, ...]:
    """A Pattern, or a non-empty list of Patterns (layer l uses item (l - 1) % len), as a tuple."""
    if isinstance(pattern, Pattern):
        return (pattern,)
    if isinstance(pattern, (list, tuple)) and pattern:
        return tuple(_check_pattern(p, "pattern (schedule item)") for p in pattern)
    raise ValueError("`pattern` must be a Pattern or a non-empty list of Patterns (a per-layer schedule), "
                     f"got {pattern!r}")


def _check_n(name: str, n: Any, limit: int, what: str) -> int:
    n = check_int(name, n, 1)
    if n > limit:
        raise ValueError(f"`{name}`={n} is too large for {what} (at most {limit}: it needs {n} x {n} "
                         "arrays); use plot_layout / to_layout for long sequences")
    return n


def _heads(pattern: Pattern, head: Any, n_heads: Any) -> tuple[int, list[int]]:
    """(number of heads to build, heads to use). ``head="all"`` uses every head."""
    H = n_heads if n_heads is not None else (pattern.n_heads or 1)
    H = pattern._check_heads(H)
    if isinstance(head, str):
        if head != "all":
            raise ValueError(f"`head` must be a head index or \"all\", got {head!r}")
        return H, list(range(H))
    if isinstance(head, bool) or not isinstance(head, numbers.Integral):
        raise ValueError(f"`head` must be a head index or \"all\", got {head!r}")
    if not 0 <= head < H:
        hint = "" if pattern.n_heads else " (pass n_heads=... to look at other heads of a pattern that takes any number)"
        raise ValueError(f"`head`={head} is out of range: the pattern has {H} head(s), valid heads are "
                         f"0..{H - 1}{hint}")
    return H, [int(head)]


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
    _check_pattern(pattern)
    n_q = _check_n("n", n, MAX_DENSE_N, "a dense mask plot")
    n_k = n_q if n_k is None else _check_n("n_k", n_k, MAX_DENSE_N, "a dense mask plot")
    H, heads = _heads(pattern, head, n_heads)
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
    :data:`AUTO_TOKEN_OVERLAY_N` (it needs the layout's pattern). The title gives the block
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
        pattern = layout.pattern
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
        H, heads = _heads(pattern, head, n_heads)
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
        show_tokens = max(n_q, n_kk) <= AUTO_TOKEN_OVERLAY_N and pattern is not None and n_partial > 0
    elif not isinstance(show_tokens, bool):
        raise ValueError(f"`show_tokens` must be True, False or \"auto\", got {show_tokens!r}")
    tokens = None
    if show_tokens:
        if pattern is None:
            raise ValueError("show_tokens=True needs the layout's pattern (this layout has none)")
        if max(n_q, n_kk) > MAX_DENSE_N:
            raise ValueError(f"show_tokens=True needs a dense {n_q}x{n_kk} mask: at most {MAX_DENSE_N} per side")
        tokens = pattern.to_dense(n_q, n_kk, layout.n_heads)[head]

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
        title = (_wrap(repr(pattern)) + "\n" if pattern is not None else "") + line
    ax.set_title(title, fontsize="medium")
    return ax


def _head_density(layout: BlockLayout, head: int, bm: np.ndarray, tokens) -> float | None:
    """Allowed pairs / all pairs of one head, when it can be counted cheaply (else None)."""
    n_q, n_k, B = layout.n_q, layout.n_k, layout.block_size
    if tokens is not None:
        return float(tokens.mean())
    rows = np.minimum((np.arange(layout.n_qb) + 1) * B, n_q) - np.arange(layout.n_qb) * B
    cols = np.minimum((np.arange(layout.n_kb) + 1) * B, n_k) - np.arange(layout.n_kb) * B
    area = rows[:, None] * cols[None, :]
    kept = int(area[bm == FULL].sum())
    partial = bm == PARTIAL
    if partial.any():
        if layout.pattern is None or int(area[partial].sum()) > (1 << 26):
            return None
        qb, kb = np.nonzero(partial)
        kept += int(layout.pattern._count_in_blocks(np.full(qb.shape, head), qb, kb, n_q, n_k, B).sum())
    return kept / (n_q * n_k)


# ---------------------------------------------------------------------------- the attention graph

def _adjacency(pattern: Pattern, n: int, head: Any, n_heads: Any) -> np.ndarray:
    """``A = mask | I`` of one head (or the union of all heads for ``head="all"``), bool [n, n]."""
    H, heads = _heads(pattern, head, n_heads)
    dense = pattern.to_dense(n, n, H)
    A = dense[heads[0]] if len(heads) == 1 else dense[heads].any(axis=0)
    A = np.array(A, dtype=bool, copy=True)
    np.fill_diagonal(A, True)
    return A


def _pack(b: np.ndarray) -> np.ndarray:
    """bool [n, m] -> uint64 [n, ceil(m / 64)], bit c % 64 of word c // 64 = column c."""
    n, m = b.shape
    W = -(-m // 64)
    padded = np.zeros((n, W * 64), dtype=bool)
    padded[:, :m] = b
    return np.packbits(padded, axis=1, bitorder="little").view(np.uint64)


def _unpack(words: np.ndarray, m: int) -> np.ndarray:
    return np.unpackbits(words.view(np.uint8), axis=1, bitorder="little")[:, :m].astype(bool)


class _Step:
    """One layer ``R -> A o R`` (boolean product) on bit-packed rows.

    Sparse adjacencies OR together the packed rows of each query's neighbours (cost ~ nnz(A) *
    n / 64 word operations); dense ones use a float32 matrix product thresholded at 0.5.
    """

    def __init__(self, A: np.ndarray):
        n = A.shape[0]
        self.n = n
        self.W = -(-n // 64)
        nnz = int(A.sum())
        self.sparse = nnz * 8 <= n * n
        if self.sparse:
            rows, cols = np.nonzero(A)  # every row has its diagonal, so no row is empty
            self.indices = cols
            self.indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=n))])
            budget = max(1, _BIT_STEP_BUDGET // self.W)
            self.chunks = []
            r0 = 0
            while r0 < n:
                r1 = int(np.searchsorted(self.indptr, self.indptr[r0] + budget, side="right")) - 1
                r1 = min(n, max(r1, r0 + 1))
                self.chunks.append((r0, r1, int(self.indptr[r0]), int(self.indptr[r1])))
                r0 = r1
        else:
            import torch

            self.matrix = torch.from_numpy(A.astype(np.float32))

    def __call__(self, R: np.ndarray) -> np.ndarray:
        if self.sparse:
            out = np.empty_like(R)
            for r0, r1, s0, s1 in self.chunks:
                out[r0:r1] = np.bitwise_or.reduceat(R[self.indices[s0:s1]], self.indptr[r0:r1] - s0, axis=0)
            return out
        import torch

        dense = torch.from_numpy(_unpack(R, self.n).astype(np.float32))
        return _pack((self.matrix @ dense).numpy() > 0.5)


def _hops(patterns: tuple[Pattern, ...], n: int, head: Any, n_heads: Any, max_layers: int | None) -> np.ndarray:
    steps = [_Step(_adjacency(p, n, head, n_heads)) for p in patterns]
    out = np.full((n, n), -1, dtype=np.int32)
    np.fill_diagonal(out, 0)
    R = _pack(np.eye(n, dtype=bool))
    reached = n
    quiet = 0  # consecutive layers that changed nothing; len(steps) of them = fixed point
    layer = 0
    limit = max_layers if max_layers is not None else None
    while (limit is None or layer < limit) and reached < n * n:
        new = steps[layer % len(steps)](R)
        layer += 1
        changed = new & ~R
        r, c = np.nonzero(changed)
        if r.size == 0:
            quiet += 1
            if quiet >= len(steps):
                break
            continue
        quiet = 0
        bits = np.unpackbits(changed[r, c].view(np.uint8).reshape(-1, 8), axis=1, bitorder="little")
        k, b = np.nonzero(bits)
        out[r[k], c[k] * 64 + b] = layer
        reached += k.size
        R = new
    return out


def hops(pattern, n: int, head: int | str = 0, max_layers: int | None = None, n_heads: int | None = None) -> np.ndarray:
    """int32 ``[n, n]``: the fewest layers after which information from ``j`` can reach ``i``.

    0 on the diagonal, -1 when ``j`` never reaches ``i`` (within ``max_layers`` layers if given,
    otherwise until nothing changes any more). ``head`` picks one head of the pattern, or "all"
    for the union of its heads in every layer; ``pattern`` may be a per-layer schedule (a list).
    Bit-parallel: ``n = 1024`` with a window of 1 (1023 layers) takes well under a second.
    """
    patterns = _schedule(pattern)
    n = _check_n("n", n, MAX_DENSE_N, "the dense attention graph")
    if max_layers is not None:
        max_layers = check_int("max_layers", max_layers, 0)
    return _hops(patterns, n, head, n_heads, max_layers)


def reach(pattern, n: int, layers: int, head: int | str = 0, n_heads: int | None = None) -> np.ndarray:
    """bool ``[n, n]``: ``R_L[i, j]`` = information from token ``j`` can reach position ``i``
    within ``layers`` layers (attention + residual, ``R_L = (mask | I)^L``)."""
    layers = check_int("layers", layers, 0)
    return hops(pattern, n, head, max_layers=layers, n_heads=n_heads) >= 0


def receptive_field(pattern, n: int, layers: int, position: int | None = None, head: int | str = 0,
                    n_heads: int | None = None) -> np.ndarray:
    """int64 ``[layers]``: how many tokens (itself included) can reach ``position`` (default the
    last token) after ``L = 1 .. layers`` layers.

    A single pattern is explored row by row from ``position`` (backwards along the attention
    graph, evaluating only the rows it needs), so ``n`` may go up to :data:`MAX_FIELD_N`; a
    schedule goes through :func:`hops` (``n`` up to :data:`MAX_DENSE_N`).
    """
    patterns = _schedule(pattern)
    layers = check_int("layers", layers, 1)
    limit = MAX_FIELD_N if len(patterns) == 1 else MAX_DENSE_N
    n = _check_n("n", n, limit, "receptive_field")
    position = n - 1 if position is None else check_int("position", position, 0)
    if position >= n:
        raise ValueError(f"`position`={position} is out of range for n={n}")
    if len(patterns) > 1:
        row = hops(patterns, n, head, max_layers=layers, n_heads=n_heads)[position]
        counts = np.bincount(row[row >= 0], minlength=layers + 1)
        return np.cumsum(counts)[1:layers + 1].astype(np.int64)
    p = patterns[0]
    H, heads = _heads(p, head, n_heads)
    p._check_lengths(n, n)
    keys = np.arange(n, dtype=np.int64)[None, :]
    seen = np.zeros(n, dtype=bool)
    seen[position] = True
    frontier = np.array([position], dtype=np.int64)
    rows_per_chunk = max(1, (1 << 22) // n)
    out = np.zeros(layers, dtype=np.int64)
    for L in range(layers):
        nxt = np.zeros(n, dtype=bool)
        for s in range(0, frontier.size, rows_per_chunk):
            q = frontier[s:s + rows_per_chunk, None]
            for h in heads:
                nxt |= np.asarray(p.mask_mod(0, h, q, keys), dtype=bool).any(axis=0)
        nxt &= ~seen
        seen |= nxt
        out[L] = int(seen.sum())
        frontier = np.nonzero(nxt)[0]
        if frontier.size == 0:
            out[L + 1:] = out[L]
            break
    return out


def _connected_fraction(patterns, n, max_layers, head, n_heads) -> np.ndarray:
    h = _hops(patterns, n, head, n_heads, max_layers)
    counts = np.bincount(h[h >= 0].ravel(), minlength=max_layers + 1)[:max_layers + 1]
    return np.cumsum(counts) / float(n * n)


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
        items = [p if isinstance(p, Pattern) else _schedule(p) for p in pattern_or_list]
    else:
        raise ValueError("`pattern_or_list` must be a Pattern or a non-empty list of Patterns "
                         f"(or of per-layer schedules), got {pattern_or_list!r}")
    n = _check_n("n", n, MAX_DENSE_N, "plot_reach")
    max_layers = check_int("max_layers", max_layers, 1)
    if labels is None:
        labels = [_label(p) for p in items]
    elif len(labels) != len(items):
        raise ValueError(f"`labels` has {len(labels)} entries for {len(items)} patterns")
    fractions = [_connected_fraction(_schedule(item), n, max_layers, head, n_heads) for item in items]
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
        title = f"{_wrap('hops: ' + _label(pattern if isinstance(pattern, Pattern) else _schedule(pattern)))}\n" \
                f"n={n}, at most {int(h.max())} layers, {never} pairs never connected"
    ax.set_title(title, fontsize="medium")
    return ax
