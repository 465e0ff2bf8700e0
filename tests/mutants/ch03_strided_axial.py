"""Plausible wrong answers to Chapter 3's exercises. Each must fail at least one graded check.

Every mutant starts from the reference answer and changes one thing a student might get wrong.
"""
import numpy as np


def _offsets(n):
    return np.arange(n)[:, None] - np.arange(n)[None, :]


# ---------------------------------------------------------------- 3.1 strided_mask

def _strided(n, stride, causal=True, local_lo=0, local_hi=None, column_index=False, upper=False, swap=False,
             every_skips_diagonal=False, one_sided=False):
    d = _offsets(n)
    if upper:
        d = -d  # keeps j >= i: the wrong causal direction
    local_hi = stride if local_hi is None else local_hi
    hit = (np.arange(n)[None, :] % stride == 0) if column_index else (d % stride == 0)
    if every_skips_diagonal:
        hit = hit & (d != 0)
    if causal:
        local = (d >= local_lo) & (d < local_hi)
        every = hit & (d >= 0)
    else:
        local = (d >= local_lo) & (d < local_hi) if one_sided else np.abs(d) < local_hi
        every = hit
    local = np.broadcast_to(local, (n, n))
    every = np.broadcast_to(every, (n, n))
    return np.stack([every, local] if swap else [local, every])


def strided_window_off_by_one(n, stride, causal=True):
    return _strided(n, stride, causal, local_hi=stride + 1)


def strided_window_one_short(n, stride, causal=True):
    return _strided(n, stride, causal, local_hi=stride - 1)


def strided_local_missing_diagonal(n, stride, causal=True):
    return _strided(n, stride, causal, local_lo=1, local_hi=stride + 1)


def strided_every_missing_diagonal(n, stride, causal=True):
    return _strided(n, stride, causal, every_skips_diagonal=True)


def strided_wrong_causal_direction(n, stride, causal=True):
    return _strided(n, stride, causal, upper=True)


def strided_key_index_not_offset(n, stride, causal=True):
    return _strided(n, stride, causal, column_index=True)


def strided_heads_swapped(n, stride, causal=True):
    return _strided(n, stride, causal, swap=True)


def strided_always_causal(n, stride, causal=True):
    return _strided(n, stride, True)


def strided_noncausal_band_one_sided(n, stride, causal=True):
    return _strided(n, stride, causal, one_sided=True)


# ---------------------------------------------------------------- 3.2 fixed_mask

def _fixed(n, stride, c, causal=True, summary="end", window="block", upper=False, strict=False,
           summary_causal=True, c_shift=0):
    i = np.arange(n)[:, None]
    j = np.arange(n)[None, :]
    if window == "block":
        win = (i // stride) == (j // stride)
    else:  # a sliding window of the same length
        win = (i - j >= 0) & (i - j < stride)
    r = j % stride
    cc = c + c_shift
    summ = np.broadcast_to((r < cc) if summary == "start" else (r >= stride - cc), (n, n))
    if causal:
        keep = (j >= i) if upper else ((j < i) if strict else (j <= i))
        win = win & keep
        summ = summ & keep if summary_causal else summ
    return np.stack([np.broadcast_to(win, (n, n)), summ])


def fixed_summary_at_window_start(n, stride, c, causal=True):
    return _fixed(n, stride, c, causal, summary="start")


def fixed_one_summary_column_too_few(n, stride, c, causal=True):
    return _fixed(n, stride, c, causal, c_shift=-1)


def fixed_one_summary_column_too_many(n, stride, c, causal=True):
    return _fixed(n, stride, c, causal, c_shift=1)


def fixed_sliding_window_not_block(n, stride, c, causal=True):
    return _fixed(n, stride, c, causal, window="sliding")


def fixed_summary_ignores_causal(n, stride, c, causal=True):
    return _fixed(n, stride, c, causal, summary_causal=False)


def fixed_wrong_causal_direction(n, stride, c, causal=True):
    return _fixed(n, stride, c, causal, upper=True)


def fixed_missing_diagonal(n, stride, c, causal=True):
    return _fixed(n, stride, c, causal, strict=True)


# ---------------------------------------------------------------- 3.3 reachable_in_two_hops

def two_hops_one_hop_only(first, second):
    return np.array(second, dtype=bool)


def two_hops_union_not_product(first, second):
    return np.asarray(first, bool) | np.asarray(second, bool)


def two_hops_wrong_order(first, second):
    return (np.asarray(first, np.int64) @ np.asarray(second, np.int64)) > 0


def two_hops_transposed(first, second):
    return ((np.asarray(second, np.int64) @ np.asarray(first, np.int64)) > 0).T


def two_hops_with_residual(first, second):
    a = np.asarray(first, bool).copy()
    b = np.asarray(second, bool).copy()
    np.fill_diagonal(a, True)
    np.fill_diagonal(b, True)
    return (b.astype(np.int64) @ a.astype(np.int64)) > 0


def two_hops_counts_not_bool(first, second):
    return np.asarray(second, np.int64) @ np.asarray(first, np.int64)


def two_hops_one_hop_or_two(first, second):
    return ((np.asarray(second, np.int64) @ np.asarray(first, np.int64)) > 0) | np.asarray(second, bool)


# ---------------------------------------------------------------- 3.4 axial_masks

def _axial(height, width, causal=False, swap=False, column_major=False, col_mod=None, upper=False, strict=False):
    n = height * width
    t = np.arange(n)
    i, j = t[:, None], t[None, :]
    if column_major:  # pixel t = (t % height, t // height)
        row = (i % height) == (j % height)
        col = (i // height) == (j // height)
    else:
        row = (i // width) == (j // width)
        col = (i - j) % (col_mod or width) == 0
    if causal:
        keep = (j >= i) if upper else ((j < i) if strict else (j <= i))
        row, col = row & keep, col & keep
    return (col, row) if swap else (row, col)


def axial_row_col_swapped(height, width, causal=False):
    return _axial(height, width, causal, swap=True)


def axial_column_major(height, width, causal=False):
    return _axial(height, width, causal, column_major=True)


def axial_column_stride_is_height(height, width, causal=False):
    return _axial(height, width, causal, col_mod=height)


def axial_wrong_causal_direction(height, width, causal=False):
    return _axial(height, width, causal, upper=True)


def axial_missing_diagonal(height, width, causal=False):
    return _axial(height, width, causal, strict=True)


def axial_ignores_causal(height, width, causal=False):
    return _axial(height, width, False)


# ---------------------------------------------------------------- 3.5 strided_pair_count

def _count(n, stride, causal=True, overlap=True, every_plus_one=True, force_causal=False):
    i = np.arange(n, dtype=np.int64)
    if causal or force_causal:
        local = np.minimum(i + 1, stride)
        every = i // stride + (1 if every_plus_one else 0)
    else:
        local = np.minimum(i, stride - 1) + np.minimum(n - 1 - i, stride - 1) + 1
        every = i // stride + (n - 1 - i) // stride + (1 if every_plus_one else 0)
    return int(local.sum() + every.sum() - (n if overlap else 0))


def count_diagonal_twice(n, stride, causal=True):
    return _count(n, stride, causal, overlap=False)


def count_strided_head_off_by_one(n, stride, causal=True):
    return _count(n, stride, causal, every_plus_one=False)


def count_always_causal(n, stride, causal=True):
    return _count(n, stride, causal, force_causal=True)


def count_asymptotic_formula(n, stride, causal=True):
    # the leading terms n*l + n^2/(2l): right order of growth, wrong count
    return n * stride + n * n / (2 * stride) if causal else 2 * n * stride + n * n / stride


def count_dense_mask(n, stride, causal=True):
    d = np.arange(n)[:, None] - np.arange(n)[None, :]
    if causal:
        keep = ((d >= 0) & (d < stride)) | ((d >= 0) & (d % stride == 0))
    else:
        keep = (np.abs(d) < stride) | (d % stride == 0)
    return int(keep.sum())


MUTANTS = {
    "3.1": [strided_window_off_by_one, strided_window_one_short, strided_local_missing_diagonal,
            strided_every_missing_diagonal, strided_wrong_causal_direction, strided_key_index_not_offset,
            strided_heads_swapped, strided_always_causal, strided_noncausal_band_one_sided],
    "3.2": [fixed_summary_at_window_start, fixed_one_summary_column_too_few, fixed_one_summary_column_too_many,
            fixed_sliding_window_not_block, fixed_summary_ignores_causal, fixed_wrong_causal_direction,
            fixed_missing_diagonal],
    "3.3": [two_hops_one_hop_only, two_hops_union_not_product, two_hops_wrong_order, two_hops_transposed,
            two_hops_with_residual, two_hops_counts_not_bool, two_hops_one_hop_or_two],
    "3.4": [axial_row_col_swapped, axial_column_major, axial_column_stride_is_height, axial_wrong_causal_direction,
            axial_missing_diagonal, axial_ignores_causal],
    "3.5": [count_diagonal_twice, count_strided_head_off_by_one, count_always_causal, count_asymptotic_formula,
            count_dense_mask],
}
