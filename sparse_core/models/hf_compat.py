r"""Adapters between Hugging Face ``transformers`` attention layers and this library.

They exist to *prove* that the library's BigBird and Longformer patterns are the attention those
published implementations compute: same weights, same inputs, same outputs. Defined in Chapter 5,
which runs them side by side with the patterns.

BigBird (``BigBirdBlockSparseAttention``)
-----------------------------------------
HF draws its random blocks inside the layer (``_bigbird_block_rand_mask_with_head``, or
``_bigbird_block_rand_mask`` for lengths 1024/3072/4096) as ``rand_attn``, an int array
``[n_heads, n_blocks - 2, r]`` whose row ``t`` lists the random key blocks of query block
``t + 1`` (the first and last query blocks are global and have none). Two facts matter:

* in **train** mode the draw is seeded with ``np.random.seed(layer.seed)`` on every call, so it
  is reproducible (:func:`hf_bigbird_rand_attn` repeats it);
* in **eval** mode HF does not draw at all: every random slot is block 0. Block 0 is a global
  block that every row already sees, so eval-mode HF attends to block 0's keys ``1 + r`` times
  over (the same as adding :math:`\log(1 + r)` to those scores) and has no random edges.

The structure around the random blocks is BigBird's: query blocks 0 and ``n_blocks - 1`` see
everything; every other query block sees key blocks ``a - 1, a, a + 1`` (3-block window),
``0`` and ``n_blocks - 1`` (global) and its ``r`` random blocks -- exactly
``sparse_core.patterns.bigbird(..., num_global_blocks=1, window_blocks=3, plan=...)`` with the
plan from :func:`plan_from_hf`. :func:`inject_bigbird_plan` makes an HF layer use a given plan.

Longformer (``LongformerSelfAttention``)
----------------------------------------
HF's ``attention_window`` is the full two-sided width (even); the library's ``window`` is the
half-width :math:`w` (keep :math:`|i - j| \le w`), so ``attention_window = 2 * window``. Global
tokens are marked by a positive ``attention_mask`` and use separate ``*_global`` projections for
their own rows; with those set equal to the local ones (:func:`share_global_projections`) the
layer computes ``sparse_core.patterns.longformer(window, global_indices)``. The layer needs the
length to be a multiple of ``attention_window``; :func:`hf_longformer_forward` pads with masked
tokens as ``LongformerModel`` does and cuts the padding off again.

``transformers`` is imported only by the functions that build HF objects; everything here takes
the layers duck-typed (``query``/``key``/``value`` linear maps and the attributes HF uses).
"""
from __future__ import annotations

import contextlib
import itertools
from typing import Any, Iterator

import numpy as np

from ..patterns import bigbird, longformer
from ..patterns.base import Pattern

__all__ = [
    "plan_from_hf", "plan_to_hf", "hf_bigbird_rand_attn", "inject_bigbird_plan", "bigbird_pattern_from_hf",
    "hf_bigbird_forward", "bigbird_like_hf", "share_global_projections", "hf_longformer_forward",
    "longformer_like_hf", "project_heads",
]


# ---------------------------------------------------------------------------- BigBird plans

def plan_from_hf(rand_attn: Any) -> np.ndarray:
    """HF ``rand_attn`` ``[n_heads, n_blocks - 2, r]`` (or a list of per-head arrays, or one
    head's ``[n_blocks - 2, r]``) -> library plan int64 ``[n_heads, n_blocks, r]`` (global rows -1)."""
    arr = np.asarray(np.stack(rand_attn) if isinstance(rand_attn, (list, tuple)) else rand_attn)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.dtype.kind not in "iu":
        raise ValueError(f"`rand_attn` must be an integer array [n_heads, n_blocks - 2, r], got {arr.dtype} {arr.shape}")
    heads, rows, r = arr.shape
    plan = np.full((heads, rows + 2, r), -1, dtype=np.int64)
    plan[:, 1:-1] = arr
    return plan


def plan_to_hf(plan: Any) -> np.ndarray:
    """Library plan ``[n_heads, n_blocks, r]`` -> HF ``rand_attn`` int32 ``[n_heads, n_blocks - 2, r]``.

    Every non-global row must be full (no -1): HF has no "unused slot".
    """
    plan = np.asarray(plan)
    if plan.ndim == 2:
        plan = plan[None]
    if plan.ndim != 3 or plan.dtype.kind not in "iu" or plan.shape[1] < 3:
        raise ValueError(f"`plan` must be an integer array [n_heads, n_blocks >= 3, r], got {plan.dtype} {plan.shape}")
    inner = plan[:, 1:-1]
    if inner.size and inner.min() < 0:
        raise ValueError("`plan` has unused (-1) slots in non-global rows; HF needs exactly r blocks per row "
                         "(use more blocks or fewer random blocks)")
    return inner.astype(np.int32)


def _check_hf_plan(plan: np.ndarray, n_blocks: int) -> None:
    """A plan HF computes the same attention for: r distinct blocks per row, none in the window or global."""
    H, nb, r = plan.shape
    if nb != n_blocks:
        raise ValueError(f"`plan` is for {nb} blocks, the input has {n_blocks}")
    for a in range(1, nb - 1):
        row = plan[:, a]
        bad_range = (row < 0) | (row >= nb)
        clash = (np.abs(row - a) <= 1) | (row == 0) | (row == nb - 1)
        dup = np.array([len(set(x.tolist())) != r for x in row])
        if bad_range.any() or clash.any() or dup.any():
            raise ValueError(f"`plan` row {a} ({row.tolist()}): random blocks must be distinct key blocks in "
                             f"[1, {nb - 2}] outside the window {a - 1}..{a + 1}; HF would count a repeated "
                             "block twice in the softmax")


def hf_bigbird_rand_attn(layer: Any, seq_len: int) -> np.ndarray:
    """The ``rand_attn`` an HF ``BigBirdBlockSparseAttention`` draws in **train** mode for ``seq_len``.

    Repeats the layer's own draw (``np.random.seed(layer.seed)`` then HF's sampler) and restores
    numpy's global random state and the layer's mode afterwards. int32 ``[n_heads, n_blocks - 2, r]``.
    """
    B, r, H = layer.block_size, layer.num_random_blocks, layer.num_attention_heads
    if seq_len % B:
        raise ValueError(f"`seq_len`={seq_len} must be a multiple of the layer's block_size={B}")
    state = np.random.get_state()
    was_training = layer.training
    layer.train(True)
    try:
        np.random.seed(layer.seed)
        if seq_len in (1024, 3072, 4096):  # HF's legacy path for the paper's lengths
            rand = [layer._bigbird_block_rand_mask(layer.max_seqlen, layer.max_seqlen, B, B, r, last_idx=1024)
                    [: seq_len // B - 2] for _ in range(H)]
        else:
            plan_len, plan_num = layer._get_rand_attn_plan(seq_len, B, r)
            rand = layer._bigbird_block_rand_mask_with_head(
                from_seq_length=seq_len, to_seq_length=seq_len, from_block_size=B, to_block_size=B, num_heads=H,
                plan_from_length=plan_len, plan_num_rand_blocks=plan_num)
    finally:
        layer.train(was_training)
        np.random.set_state(state)
    return np.stack(rand).astype(np.int32)


@contextlib.contextmanager
def inject_bigbird_plan(layer: Any, plan: Any) -> Iterator[Any]:
    """Within the ``with`` block, ``layer`` (an HF ``BigBirdBlockSparseAttention``) uses ``plan``
    (library ``[n_heads, n_blocks, r]``) instead of drawing random blocks, in train and eval mode.

    The plan is checked first: HF needs ``r`` distinct blocks per non-global row outside the
    window and the global blocks (it would count a repeated block twice).
    """
    plan = np.asarray(plan)
    if plan.ndim == 2:
        plan = plan[None]
    rand = plan_to_hf(plan)
    H = layer.num_attention_heads
    if rand.shape[0] != H or rand.shape[2] != layer.num_random_blocks:
        raise ValueError(f"`plan` has {rand.shape[0]} heads and {rand.shape[2]} random blocks per row; the layer "
                         f"has {H} heads and num_random_blocks={layer.num_random_blocks}")
    _check_hf_plan(plan.astype(np.int64), plan.shape[1])
    nb = plan.shape[1]

    def _rows(seq_len, block):
        if seq_len // block != nb:
            raise ValueError(f"the injected plan is for {nb} blocks; the input has {seq_len // block}")

    def with_head(from_seq_length, to_seq_length, from_block_size, to_block_size, num_heads, *args, **kwargs):
        _rows(from_seq_length, from_block_size)
        return [rand[h].copy() for h in range(num_heads)]

    heads = itertools.cycle(range(H))

    def legacy(from_seq_length, to_seq_length, from_block_size, to_block_size, num_rand_blocks, last_idx=-1):
        return rand[next(heads)].copy()  # called once per head, in head order; HF slices it to n_blocks - 2

    saved = {name: layer.__dict__.get(name) for name in ("_bigbird_block_rand_mask_with_head", "_bigbird_block_rand_mask")}
    layer._bigbird_block_rand_mask_with_head = with_head
    layer._bigbird_block_rand_mask = legacy
    try:
        yield layer
    finally:
        for name, value in saved.items():
            if value is None:
                layer.__dict__.pop(name, None)
            else:
                layer.__dict__[name] = value


def bigbird_pattern_from_hf(rand_attn: Any, seq_len: int, block_size: int) -> Pattern:
    """The library's BigBird pattern with HF's structure (1 global block at each end, 3-block
    window) and HF's random blocks ``rand_attn`` ``[n_heads, n_blocks - 2, r]``."""
    plan = plan_from_hf(rand_attn)
    return bigbird(seq_len, block_size, num_random_blocks=plan.shape[2], num_global_blocks=1, window_blocks=3,
                   n_heads=plan.shape[0], plan=plan)


def hf_bigbird_forward(layer: Any, x: Any, plan: Any = None) -> Any:
    """Run HF ``BigBirdBlockSparseAttention`` on ``x`` ``[batch, n, hidden]`` (no padding: all
    masks ones; ``n`` a multiple of the block size) and return its context ``[batch, n, hidden]``.

    With ``plan`` (library ``[n_heads, n_blocks, r]``) the layer uses those random blocks
    (:func:`inject_bigbird_plan`); without, it draws its own (train mode) or uses block 0 (eval).
    """
    import torch
    from transformers.models.big_bird.modeling_big_bird import BigBirdModel

    b, n, _ = x.shape
    ones = torch.ones(b, n, dtype=x.dtype, device=x.device)
    blocked, band, from_mask, to_mask = BigBirdModel.create_masks_for_block_sparse_attn(ones, layer.block_size)
    ctx = inject_bigbird_plan(layer, plan) if plan is not None else contextlib.nullcontext()
    with ctx, torch.no_grad():
        out = layer(x, band_mask=band, from_mask=from_mask, to_mask=to_mask, from_blocked_mask=blocked,
                    to_blocked_mask=blocked)
    return out[0] if isinstance(out, tuple) else out


def project_heads(x: Any, linear: Any, n_heads: int) -> Any:
    """``linear(x)`` ``[batch, n, n_heads * d]`` -> ``[batch, n_heads, n, d]`` (HF's head split)."""
    b, n, _ = x.shape
    return linear(x).view(b, n, n_heads, -1).transpose(1, 2).contiguous()


def bigbird_like_hf(layer: Any, x: Any, plan: Any, *, kernel: bool = True) -> Any:
    """The library's computation of what an HF BigBird layer computes: the layer's projections, the
    BigBird pattern with ``plan``, and :func:`sparse_core.attention.ops.block_sparse_attention` (or, with
    ``kernel=False``, the float64 dense oracle). Returns ``[batch, n, hidden]`` like the layer."""
    import torch

    from ..attention.ops import block_sparse_attention
    from ..attention.reference import attention

    H, B = layer.num_attention_heads, layer.block_size
    b, n, _ = x.shape
    plan = np.asarray(plan)
    if plan.ndim == 2:
        plan = plan[None]
    pattern = bigbird(n, B, num_random_blocks=plan.shape[2], num_global_blocks=1, window_blocks=3, n_heads=H, plan=plan)
    with torch.no_grad():
        q, k, v = (project_heads(x, lin, H) for lin in (layer.query, layer.key, layer.value))
        if kernel:
            o = block_sparse_attention(q, k, v, pattern.to_layout(n, n, B, H))
        else:
            o = torch.as_tensor(attention(q, k, v, mask=pattern.to_dense(n, n, H)), dtype=x.dtype)
    return o.transpose(1, 2).reshape(b, n, -1)


# ---------------------------------------------------------------------------- Longformer

def share_global_projections(layer: Any) -> Any:
    """Copy ``query``/``key``/``value`` into ``query_global``/``key_global``/``value_global`` (in place)."""
    import torch

    with torch.no_grad():
        for name in ("query", "key", "value"):
            getattr(layer, name + "_global").weight.copy_(getattr(layer, name).weight)
            getattr(layer, name + "_global").bias.copy_(getattr(layer, name).bias)
    return layer


def _hf_window(layer: Any) -> int:
    return 2 * int(layer.one_sided_attn_window_size)


def hf_longformer_forward(layer: Any, x: Any, global_indices=()) -> Any:
    """Run HF ``LongformerSelfAttention`` on ``x`` ``[batch, n, hidden]`` with the tokens
    ``global_indices`` global (the same for every batch row) and return ``[batch, n, hidden]``.

    Any ``n`` works: the input is padded to a multiple of ``attention_window`` with masked tokens
    (``attention_mask < 0``, as ``LongformerModel`` pads) and the padding is cut off the output.
    """
    import torch

    b, n, hidden = x.shape
    aw = _hf_window(layer)
    if aw < 4:
        raise ValueError(f"HF's LongformerSelfAttention cannot run with attention_window={aw}: its chunked "
                         "kernel slices by 1 - window and breaks for a one-sided window of 1; use attention_window >= 4")
    n_pad = -(-n // aw) * aw
    g = np.unique(np.asarray(list(global_indices), dtype=np.int64))
    if g.size and (g.min() < 0 or g.max() >= n):
        raise ValueError(f"`global_indices` must lie in [0, {n}), got {g.tolist()}")
    xp = torch.zeros(b, n_pad, hidden, dtype=x.dtype)
    xp[:, :n] = x
    mask = torch.zeros(b, n_pad, dtype=x.dtype)
    mask[:, n:] = -10000.0  # padding: masked everywhere
    mask[:, torch.as_tensor(g, dtype=torch.long)] = 10000.0  # global attention
    is_index_masked = mask < 0
    is_index_global_attn = mask > 0
    with torch.no_grad():
        out = layer(xp, attention_mask=mask, is_index_masked=is_index_masked, is_index_global_attn=is_index_global_attn,
                    is_global_attn=bool(is_index_global_attn.any()))
    return out[0][:, :n]


def longformer_like_hf(layer: Any, x: Any, global_indices=(), *, block_size: int = 16, kernel: bool = True) -> Any:
    """The library's computation of an HF Longformer layer with shared global projections:
    ``longformer(window=attention_window // 2, global_indices)`` through the block-sparse kernel
    (or the float64 oracle with ``kernel=False``). Returns ``[batch, n, hidden]``."""
    import torch

    from ..attention.ops import block_sparse_attention
    from ..attention.reference import attention

    H = layer.num_heads
    b, n, _ = x.shape
    pattern = longformer(int(layer.one_sided_attn_window_size), list(global_indices))
    with torch.no_grad():
        q, k, v = (project_heads(x, lin, H) for lin in (layer.query, layer.key, layer.value))
        if kernel:
            o = block_sparse_attention(q, k, v, pattern.to_layout(n, n, block_size, 1))
        else:
            o = torch.as_tensor(attention(q, k, v, mask=pattern.to_dense(n, n, 1)), dtype=x.dtype)
    return o.transpose(1, 2).reshape(b, n, -1)
