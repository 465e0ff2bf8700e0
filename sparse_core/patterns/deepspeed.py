r"""DeepSpeed's block-sparse attention layouts (``deepspeed.ops.sparse_attention``, v0.19.6).

Each constructor takes the arguments of one DeepSpeed ``SparsityConfig`` (same names, same
defaults) plus ``seq_len`` (and ``seed`` where DeepSpeed draws random blocks), and returns a
:class:`~.base.BlockTablePattern` whose table ``[num_heads, nb, nb]`` (``nb = seq_len // block``)
equals ``config.make_layout(seq_len)``; :func:`deepspeed_layout` returns it as DeepSpeed's 0/1
int array. Block ``(a, b)`` of head ``h`` kept means query block ``a`` attends key block ``b``.

* ``deepspeed_fixed`` = ``FixedSparsityConfig`` (Sparse Transformer "fixed"): the blocks are
  cut into consecutive local windows of ``num_local_blocks`` (each attends to itself, causally
  if unidirectional), and the last ``num_global_blocks`` blocks of every window (shifted one
  group earlier per head for ``num_different_global_patterns`` > 1; clamped to the end of a
  short last window) are global columns -- every row (unidirectional: every row from the global
  block on) attends them -- and, with ``horizontal_global_attention``, global rows too.
* ``deepspeed_variable`` = ``VariableSparsityConfig``: ``num_random_blocks`` random key blocks
  per row (drawn from all blocks, even when unidirectional), local windows whose sizes are given
  by ``local_window_blocks`` (the last size repeats to the end), and global columns (optionally
  rows) at ``global_block_indices`` or the spans ``[global_block_indices[i],
  global_block_end_indices[i])``.
* ``deepspeed_bigbird`` = ``BigBirdSparsityConfig``: ``num_random_blocks`` random key blocks per
  row (unidirectional: drawn among blocks ``<=`` the row), a sliding window of
  ``num_sliding_window_blocks // 2`` blocks each side, and the first ``num_global_blocks``
  blocks as global rows and columns; unidirectional keeps the lower block triangle of it all.
* ``deepspeed_bslongformer`` = ``BSLongformerSparsityConfig``: the same sliding window plus
  global rows and columns at ``global_block_indices`` (or spans, as in Variable);
  unidirectional keeps the lower block triangle.

* ``deepspeed_local`` = ``LocalSlidingWindowSparsityConfig``: block ``a`` keeps the blocks
  ``a - num_sliding_window_blocks // 2 .. a`` (unidirectional, the default) or also as many after
  it (bidirectional), clipped at the ends.
* ``deepspeed_dense`` = ``DenseSparsityConfig``: every block.

Random blocks are drawn with ``random.Random(seed).sample`` in DeepSpeed's order (heads in
order, rows in order; only head 0 unless ``different_layout_per_head``), so
``random.seed(seed); config.make_layout(seq_len)`` gives the same layout. Index arguments
follow DeepSpeed's (Python) indexing, so negative global indices count from the end.
Every kept block is entirely allowed, so ``to_layout(seq_len, seq_len, block, num_heads)``
marks all of them full.
"""
from __future__ import annotations

import inspect
import numbers
import random
from typing import Any, Callable, Sequence

import numpy as np

from .base import BlockTablePattern, Pattern, check_int

__all__ = ["DeepSpeedPattern", "deepspeed_fixed", "deepspeed_variable", "deepspeed_bigbird",
           "deepspeed_bslongformer", "deepspeed_local", "deepspeed_dense", "deepspeed_layout"]

_DIRECTIONS = ("bidirectional", "unidirectional")


class DeepSpeedPattern(BlockTablePattern):
    """A DeepSpeed layout as a block-table pattern; ``kind`` is fixed/variable/bigbird/bslongformer/local/dense."""

    def __init__(self, kind: str, table: np.ndarray, block: int, settings: dict):
        super().__init__(table, block)
        self.kind = kind
        self.settings = dict(settings)
        self.num_heads = int(table.shape[0])
        self.seq_len = int(table.shape[1]) * block

    def deepspeed_layout(self) -> np.ndarray:
        """int64 ``[num_heads, nb, nb]``, 1 = kept block: DeepSpeed's ``make_layout`` format."""
        return self.table.astype(np.int64)

    def _name(self) -> str:
        return f"deepspeed_{self.kind}"

    def _params(self) -> dict:
        """Settings that differ from the constructor's defaults (num_heads and seq_len always)."""
        defaults = _DEFAULTS.get(self.kind, {})
        return {k: v for k, v in self.settings.items()
                if k in ("num_heads", "seq_len") or (k in defaults and not _same(v, defaults[k]))}


def deepspeed_layout(pattern: Pattern) -> np.ndarray:
    """DeepSpeed's 0/1 int64 layout ``[num_heads, nb, nb]`` of a ``deepspeed_*`` pattern."""
    if not isinstance(pattern, DeepSpeedPattern):
        raise TypeError(f"deepspeed_layout takes a pattern made by a deepspeed_* constructor, got {pattern!r}")
    return pattern.deepspeed_layout()


# ---------------------------------------------------------------------------- argument checks

def _check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"`{name}` must be True or False, got {value!r}")
    return bool(value)


def _check_common(num_heads, seq_len, block, different_layout_per_head, attention) -> tuple:
    heads = check_int("num_heads", num_heads, 1)
    block = check_int("block", block, 1)
    seq_len = check_int("seq_len", seq_len, 1)
    if seq_len % block:
        raise ValueError(f"`seq_len`={seq_len} must be a multiple of `block`={block} (DeepSpeed layouts have "
                         f"whole blocks only)")
    per_head = _check_bool("different_layout_per_head", different_layout_per_head)
    if attention not in _DIRECTIONS:
        raise ValueError(f"`attention` must be 'bidirectional' or 'unidirectional', got {attention!r}")
    return heads, seq_len, block, seq_len // block, per_head, attention == "unidirectional"


def _check_at_most(name: str, value: int, nb: int, what: str) -> None:
    if value > nb:
        raise ValueError(f"`{name}`={value} is more than the {nb} blocks of a row ({what})")


def _index_list(name: str, value: Any) -> list[int]:
    try:
        items = list(value)
    except TypeError:
        raise ValueError(f"`{name}` must be a list of integers, got {value!r}") from None
    for v in items:
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise ValueError(f"`{name}` must be a list of integers, got {value!r}")
    return [int(v) for v in items]


def _global_spans(global_block_indices, global_block_end_indices, nb: int) -> tuple[list, list | None]:
    """Validated starts (and ends) of Variable/BSLongformer global blocks."""
    starts = _index_list("global_block_indices", global_block_indices)
    if global_block_end_indices is None:
        for s in starts:
            if s < -nb:
                raise ValueError(f"`global_block_indices` entry {s} is out of range for {nb} blocks")
        return starts, None
    ends = _index_list("global_block_end_indices", global_block_end_indices)
    if len(ends) != len(starts):
        raise ValueError(f"`global_block_end_indices` must have one end per start: {len(starts)} "
                         f"`global_block_indices` but {len(ends)} ends")
    for s, e in zip(starts, ends):
        if s >= e:
            raise ValueError(f"`global_block_end_indices`: each start must be smaller than its end, "
                             f"got start {s} and end {e}")
    return starts, ends


# ---------------------------------------------------------------------------- shared pieces

def _pattern(name: str, heads: int, seq_len: int, block: int, per_head: bool,
             one_head: Callable[[int], np.ndarray], **params) -> "DeepSpeedPattern":
    """The DeepSpeed pattern ``name`` from its head tables; ``params`` (after the four every
    config shares) are what its repr shows."""
    return DeepSpeedPattern(name, _build(heads, per_head, one_head), block, {
        "num_heads": heads, "seq_len": seq_len, "block": block, "different_layout_per_head": per_head, **params})


def _build(num_heads: int, per_head: bool, one_head: Callable[[int], np.ndarray]) -> np.ndarray:
    """Stack head tables; without ``per_head`` head 0 is computed once and copied to all heads."""
    if per_head:
        return np.stack([one_head(h) for h in range(num_heads)])
    return np.repeat(one_head(0)[None], num_heads, axis=0)


def _block_windows(window_id: np.ndarray, unidirectional: bool) -> np.ndarray:
    """Blocks attend the blocks of their own window (only earlier ones if unidirectional)."""
    t = window_id[:, None] == window_id[None, :]
    if unidirectional:
        t = np.tril(t)
    return t


def _sliding(nb: int, num_sliding_window_blocks: int) -> np.ndarray:
    a = np.arange(nb)
    return np.abs(a[:, None] - a[None, :]) <= num_sliding_window_blocks // 2


def _random_rows(rng: random.Random, t: np.ndarray, r: int, causal_draws: bool) -> None:
    """``r`` distinct random key blocks per row, rows in order (DeepSpeed's draw order)."""
    nb = t.shape[0]
    for row in range(nb):
        cols = rng.sample(range(row + 1 if causal_draws else nb), r)
        t[row, cols] = True


def _set_globals(t: np.ndarray, starts: list, ends: list | None, rows_from_start: bool,
                 horizontal: bool) -> None:
    """Global columns (from row 0, or from the global block on) and optionally global rows.

    Starts at or past the end are ignored and ends are clipped, as DeepSpeed does; other
    indices are used as Python indices/slices, which is what DeepSpeed's tensor indexing does.
    """
    nb = t.shape[0]
    for k, s in enumerate(starts):
        if s >= nb:
            continue
        if ends is None:
            s = s % nb  # a single (possibly negative) index
            cols = slice(s, s + 1)
        else:
            cols = slice(s, min(ends[k], nb))
        t[slice(cols.start if rows_from_start else 0, None), cols] = True
        if horizontal:
            t[cols, :] = True


# ---------------------------------------------------------------------------- constructors

def deepspeed_fixed(num_heads: int, seq_len: int, block: int = 16, different_layout_per_head: bool = False,
                    num_local_blocks: int = 4, num_global_blocks: int = 1, attention: str = "bidirectional",
                    horizontal_global_attention: bool = False, num_different_global_patterns: int = 1) -> Pattern:
    """``FixedSparsityConfig(...).make_layout(seq_len)`` as a pattern (see the module docstring)."""
    heads, seq_len, block, nb, per_head, uni = _check_common(num_heads, seq_len, block,
                                                             different_layout_per_head, attention)
    L = check_int("num_local_blocks", num_local_blocks, 1)
    G = check_int("num_global_blocks", num_global_blocks, 1)
    if L % G:
        raise ValueError(f"`num_local_blocks`={L} must be a multiple of `num_global_blocks`={G}")
    horizontal = _check_bool("horizontal_global_attention", horizontal_global_attention)
    if horizontal and uni:
        raise ValueError("`horizontal_global_attention` needs attention='bidirectional'")
    P = check_int("num_different_global_patterns", num_different_global_patterns, 1)
    if P > 1 and not per_head:
        raise ValueError(f"`num_different_global_patterns`={P} needs different_layout_per_head=True")
    if P > L // G:
        raise ValueError(f"`num_different_global_patterns`={P} can be at most num_local_blocks // "
                         f"num_global_blocks = {L // G}")

    window = np.arange(nb) // L
    local = _block_windows(window, uni)
    whole = nb - nb % L  # blocks covered by complete windows

    def one_head(h: int) -> np.ndarray:
        t = local.copy()
        offset = L - (1 + h % P) * G  # first global block inside each window
        starts = list(range(offset, whole, L))
        if whole < nb:  # a short last window: its global group, moved back if it would overhang
            starts.append(min(whole + offset, nb - G))
        for s in starts:
            cols = slice(s, s + G)
            t[slice(s if uni else 0, None), cols] = True
            if horizontal:
                t[cols, :] = True
        return t

    return _pattern("fixed", heads, seq_len, block, per_head, one_head,
                    num_local_blocks=L, num_global_blocks=G, attention=attention,
                    horizontal_global_attention=horizontal, num_different_global_patterns=P)


def deepspeed_variable(num_heads: int, seq_len: int, block: int = 16, different_layout_per_head: bool = False,
                       num_random_blocks: int = 0, local_window_blocks: Sequence[int] = (4,),
                       global_block_indices: Sequence[int] = (0,), global_block_end_indices: Sequence[int] | None = None,
                       attention: str = "bidirectional", horizontal_global_attention: bool = False,
                       seed: int = 0) -> Pattern:
    """``random.seed(seed); VariableSparsityConfig(...).make_layout(seq_len)`` as a pattern."""
    heads, seq_len, block, nb, per_head, uni = _check_common(num_heads, seq_len, block,
                                                             different_layout_per_head, attention)
    r = check_int("num_random_blocks", num_random_blocks, 0)
    _check_at_most("num_random_blocks", r, nb, "random blocks are distinct")
    sizes = _index_list("local_window_blocks", local_window_blocks)
    if not sizes or min(sizes) < 0 or sizes[-1] < 1:
        raise ValueError(f"`local_window_blocks` must be a non-empty list of non-negative window sizes "
                         f"ending in a positive one (it repeats to the end), got {local_window_blocks!r}")
    starts, ends = _global_spans(global_block_indices, global_block_end_indices, nb)
    horizontal = _check_bool("horizontal_global_attention", horizontal_global_attention)
    if horizontal and uni:
        raise ValueError("`horizontal_global_attention` needs attention='bidirectional'")
    seed = _check_seed(seed)

    # window id of every block: the listed windows, then the last size repeated
    edges = np.concatenate([[0], np.cumsum(sizes)])
    a = np.arange(nb)
    window = np.searchsorted(edges, a, side="right") - 1
    tail = a >= edges[-1]
    window[tail] = len(sizes) + (a[tail] - edges[-1]) // sizes[-1]
    local = _block_windows(window, uni)

    rng = random.Random(seed)

    def one_head(h: int) -> np.ndarray:
        t = np.zeros((nb, nb), dtype=bool)
        _random_rows(rng, t, r, causal_draws=False)
        t |= local
        _set_globals(t, starts, ends, rows_from_start=uni, horizontal=horizontal)
        return t

    return _pattern("variable", heads, seq_len, block, per_head, one_head,
                    num_random_blocks=r, local_window_blocks=sizes, global_block_indices=starts,
                    global_block_end_indices=ends, attention=attention,
                    horizontal_global_attention=horizontal, seed=seed)


def deepspeed_bigbird(num_heads: int, seq_len: int, block: int = 16, different_layout_per_head: bool = False,
                      num_random_blocks: int = 1, num_sliding_window_blocks: int = 3, num_global_blocks: int = 1,
                      attention: str = "bidirectional", seed: int = 0) -> Pattern:
    """``random.seed(seed); BigBirdSparsityConfig(...).make_layout(seq_len)`` as a pattern."""
    heads, seq_len, block, nb, per_head, uni = _check_common(num_heads, seq_len, block,
                                                             different_layout_per_head, attention)
    r = check_int("num_random_blocks", num_random_blocks, 0)
    _check_at_most("num_random_blocks", r, nb, "random blocks are distinct")
    if uni and r > 1:
        raise ValueError(f"`num_random_blocks`={r}: with attention='unidirectional' the first block row has "
                         f"a single block to draw from, so at most 1 random block (DeepSpeed's make_layout "
                         f"fails with 'Sample larger than population')")
    W = check_int("num_sliding_window_blocks", num_sliding_window_blocks, 0)
    _check_at_most("num_sliding_window_blocks", W, nb, "sliding window")
    G = check_int("num_global_blocks", num_global_blocks, 0)
    _check_at_most("num_global_blocks", G, nb, "global blocks")
    seed = _check_seed(seed)

    fixed_part = _sliding(nb, W)
    fixed_part[:G, :] = True
    fixed_part[:, :G] = True
    rng = random.Random(seed)

    def one_head(h: int) -> np.ndarray:
        t = np.zeros((nb, nb), dtype=bool)
        _random_rows(rng, t, r, causal_draws=uni)
        t |= fixed_part
        return np.tril(t) if uni else t

    return _pattern("bigbird", heads, seq_len, block, per_head, one_head,
                    num_random_blocks=r, num_sliding_window_blocks=W, num_global_blocks=G,
                    attention=attention, seed=seed)


def deepspeed_bslongformer(num_heads: int, seq_len: int, block: int = 16, different_layout_per_head: bool = False,
                           num_sliding_window_blocks: int = 3, global_block_indices: Sequence[int] = (0,),
                           global_block_end_indices: Sequence[int] | None = None,
                           attention: str = "bidirectional") -> Pattern:
    """``BSLongformerSparsityConfig(...).make_layout(seq_len)`` as a pattern."""
    heads, seq_len, block, nb, per_head, uni = _check_common(num_heads, seq_len, block,
                                                             different_layout_per_head, attention)
    W = check_int("num_sliding_window_blocks", num_sliding_window_blocks, 0)
    _check_at_most("num_sliding_window_blocks", W, nb, "sliding window")
    starts, ends = _global_spans(global_block_indices, global_block_end_indices, nb)

    t = _sliding(nb, W)
    _set_globals(t, starts, ends, rows_from_start=False, horizontal=True)
    if uni:
        t = np.tril(t)
    return _pattern("bslongformer", heads, seq_len, block, per_head, lambda h: t,
                    num_sliding_window_blocks=W, global_block_indices=starts,
                    global_block_end_indices=ends, attention=attention)


def deepspeed_local(num_heads: int, seq_len: int, block: int = 16, num_sliding_window_blocks: int = 3,
                    attention: str = "unidirectional") -> Pattern:
    """``LocalSlidingWindowSparsityConfig(...).make_layout(seq_len)`` as a pattern: block ``a`` keeps
    ``max(0, a - W // 2) .. a`` (unidirectional, DeepSpeed's default) or ``.. a + W // 2``
    (bidirectional). Like DeepSpeed, a window wider than the row of blocks is refused."""
    heads, seq_len, block, nb, _, uni = _check_common(num_heads, seq_len, block, False, attention)
    W = check_int("num_sliding_window_blocks", num_sliding_window_blocks, 0)
    _check_at_most("num_sliding_window_blocks", W, nb, "sliding window")
    a = np.arange(nb)
    offset = a[:, None] - a[None, :]  # query block minus key block
    t = (offset <= W // 2) & (offset >= (0 if uni else -(W // 2)))
    return _pattern("local", heads, seq_len, block, False, lambda h: t,
                    num_sliding_window_blocks=W, attention=attention)


def deepspeed_dense(num_heads: int, seq_len: int, block: int = 16, different_layout_per_head: bool = False) -> Pattern:
    """``DenseSparsityConfig(...).make_layout(seq_len)`` as a pattern: every block of every head."""
    heads, seq_len, block, nb, per_head, _ = _check_common(num_heads, seq_len, block, different_layout_per_head,
                                                           "bidirectional")
    return _pattern("dense", heads, seq_len, block, per_head, lambda h: np.ones((nb, nb), dtype=bool))


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise ValueError(f"`seed` must be an integer (it seeds random.Random, as random.seed does for "
                         f"DeepSpeed), got {seed!r}")
    return int(seed)


def _same(value: Any, default: Any) -> bool:
    if isinstance(default, tuple):
        default = list(default)
    return type(value) is type(default) and value == default


_DEFAULTS = {
    kind: {name: p.default for name, p in inspect.signature(fn).parameters.items()
           if p.default is not inspect.Parameter.empty}
    for kind, fn in [("fixed", deepspeed_fixed), ("variable", deepspeed_variable),
                     ("bigbird", deepspeed_bigbird), ("bslongformer", deepspeed_bslongformer),
                     ("local", deepspeed_local), ("dense", deepspeed_dense)]
}
