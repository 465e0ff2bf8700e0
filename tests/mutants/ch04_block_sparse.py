"""Plausible wrong answers to Chapter 4's exercises. Each must fail at least one graded check.

Every mutant starts from a correct answer and changes one thing a student might get wrong.
"""
import numpy as np

from sparse_core import reference as ref


# ---------------------------------------------------------------- 4.1 layout_from_mask

def _layout(mask, block_size, *, ceil=True, reduce="any", shrink=0, leading_zero=True, cumulative=True,
            transpose=False):
    m = np.asarray(mask, dtype=bool)
    if transpose:
        m = m.T
    n_q, n_k = m.shape
    B = block_size
    n_qb, n_kb = (-(-n_q // B), -(-n_k // B)) if ceil else (n_q // B, n_k // B)
    kept = np.zeros((n_qb, n_kb), dtype=bool)
    for r in range(n_qb):
        for c in range(n_kb):
            tile = m[r * B:(r + 1) * B - shrink, c * B:(c + 1) * B - shrink]
            kept[r, c] = tile.size > 0 and (tile.any() if reduce == "any" else tile.all())
    counts = kept.sum(axis=1)
    row_ptr = np.cumsum(counts) if cumulative else counts
    if leading_zero:
        row_ptr = np.concatenate([[0], row_ptr])
    return row_ptr.astype(np.int64), np.nonzero(kept)[1].astype(np.int64)


def layout_floor_division(mask, block_size):
    return _layout(mask, block_size, ceil=False)


def layout_all_instead_of_any(mask, block_size):
    return _layout(mask, block_size, reduce="all")


def layout_inclusive_end_off_by_one(mask, block_size):
    return _layout(mask, block_size, shrink=1)


def layout_no_leading_zero(mask, block_size):
    return _layout(mask, block_size, leading_zero=False)


def layout_counts_not_offsets(mask, block_size):
    return _layout(mask, block_size, cumulative=False)


def layout_transposed(mask, block_size):
    return _layout(mask, block_size, transpose=True)


# ---------------------------------------------------------------- 4.2 block_sparse_forward

def _forward(q, k, v, row_ptr, col_idx, block_size, mask=None, scale=None, *, shift=True, rescale=True,
             use_mask=True, guard=True, drop_short=False, skip_last=False, lse_max=False, default_scale=None):
    q, k, v = (np.asarray(x, dtype=np.float64) for x in (q, k, v))
    n_q, d = q.shape[-2:]
    n_k, d_v = k.shape[-2], v.shape[-1]
    B = block_size
    if scale is None:
        scale = 1.0 / np.sqrt(d) if default_scale is None else default_scale
    shapes = [q.shape[:-2], k.shape[:-2], v.shape[:-2]]
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        shapes.append(mask.shape[:-2])
    batch = np.broadcast_shapes(*shapes)
    out = np.zeros(batch + (n_q, d_v))
    lse = np.full(batch + (n_q,), -np.inf)
    for qb in range(len(row_ptr) - 1):
        r0, r1 = qb * B, min(qb * B + B, n_q)
        qt = q[..., r0:r1, :] * scale
        m = np.full(batch + (r1 - r0, 1), -np.inf)
        l = np.zeros(batch + (r1 - r0, 1))
        acc = np.zeros(batch + (r1 - r0, d_v))
        stop = row_ptr[qb + 1] - (1 if skip_last else 0)
        for p in range(row_ptr[qb], stop):
            c0 = int(col_idx[p]) * B
            c1 = min(c0 + B, n_k)
            if drop_short and c1 - c0 < B:
                continue
            s = qt @ np.swapaxes(k[..., c0:c1, :], -1, -2)
            if mask is not None and use_mask:
                s = np.where(mask[..., r0:r1, c0:c1], s, -np.inf)
            m_new = np.maximum(m, s.max(axis=-1, keepdims=True)) if shift else np.zeros_like(m)
            sh = np.where(np.isneginf(m_new), 0.0, m_new) if guard else m_new
            alpha = np.exp(m - sh) if (rescale and shift) else 1.0
            w = np.exp(s - sh)
            l = alpha * l + w.sum(axis=-1, keepdims=True)
            acc = alpha * acc + w @ v[..., c0:c1, :]
            m = m_new if shift else np.maximum(m, s.max(axis=-1, keepdims=True))
        if guard:
            seen = l > 0
            out[..., r0:r1, :] = acc / np.where(seen, l, 1.0)
            val = m if lse_max else m + np.log(np.where(seen, l, 1.0))
            if not shift:
                val = np.log(np.where(seen, l, 1.0))
            lse[..., r0:r1] = np.where(seen, val, -np.inf)[..., 0]
        else:
            out[..., r0:r1, :] = acc / l
            lse[..., r0:r1] = (m + np.log(l))[..., 0]
    return out, lse


def forward_no_max_shift(q, k, v, row_ptr, col_idx, block_size, mask=None, scale=None):
    return _forward(q, k, v, row_ptr, col_idx, block_size, mask, scale, shift=False)


def forward_no_rescale(q, k, v, row_ptr, col_idx, block_size, mask=None, scale=None):
    return _forward(q, k, v, row_ptr, col_idx, block_size, mask, scale, rescale=False)


def forward_unscaled_scores(q, k, v, row_ptr, col_idx, block_size, mask=None, scale=None):
    return _forward(q, k, v, row_ptr, col_idx, block_size, mask, scale, default_scale=1.0)


def forward_ignores_token_mask(q, k, v, row_ptr, col_idx, block_size, mask=None, scale=None):
    return _forward(q, k, v, row_ptr, col_idx, block_size, mask, scale, use_mask=False)


def forward_nan_on_fully_masked_rows(q, k, v, row_ptr, col_idx, block_size, mask=None, scale=None):
    return _forward(q, k, v, row_ptr, col_idx, block_size, mask, scale, guard=False)


def forward_drops_short_edge_block(q, k, v, row_ptr, col_idx, block_size, mask=None, scale=None):
    return _forward(q, k, v, row_ptr, col_idx, block_size, mask, scale, drop_short=True)


def forward_skips_last_kept_block(q, k, v, row_ptr, col_idx, block_size, mask=None, scale=None):
    return _forward(q, k, v, row_ptr, col_idx, block_size, mask, scale, skip_last=True)


def forward_lse_is_max(q, k, v, row_ptr, col_idx, block_size, mask=None, scale=None):
    return _forward(q, k, v, row_ptr, col_idx, block_size, mask, scale, lse_max=True)


def forward_dense_in_disguise(q, k, v, row_ptr, col_idx, block_size, mask=None, scale=None):
    """Dense attention with the layout expanded to a token mask: right values, wrong work."""
    n_q, n_k = q.shape[-2], k.shape[-2]
    B = block_size
    keep = np.zeros((n_q, n_k), dtype=bool)
    for r in range(len(row_ptr) - 1):
        for c in col_idx[row_ptr[r]:row_ptr[r + 1]]:
            keep[r * B:(r + 1) * B, c * B:(c + 1) * B] = True
    if mask is not None:
        keep = keep & mask
    return ref.attention(q, k, v, mask=keep, scale=scale, return_lse=True)


# ---------------------------------------------------------------- 4.3 block_row_backward

def _backward(q, k, v, do, lse, delta, row_ptr, col_idx, block_size, qb, mask=None, scale=None, *,
              use_delta=True, scale_grads=True, probs="lse", use_mask=True, guard=True, default_scale=None):
    q, k, v, do = (np.asarray(x, dtype=np.float64) for x in (q, k, v, do))
    n_q, d = q.shape
    n_k = k.shape[0]
    B = block_size
    if scale is None:
        scale = 1.0 / np.sqrt(d) if default_scale is None else default_scale
    r0, r1 = qb * B, min(qb * B + B, n_q)
    Q, dO = q[r0:r1], do[r0:r1]
    L = np.asarray(lse, dtype=np.float64)[r0:r1, None]
    D = np.asarray(delta, dtype=np.float64)[r0:r1, None]
    live = np.isfinite(L) if guard else np.ones_like(L, dtype=bool)
    if guard:
        L = np.where(live, L, 0.0)
    dq, dk, dv = np.zeros((r1 - r0, d)), np.zeros((n_k, d)), np.zeros((n_k, v.shape[1]))
    g = scale if scale_grads else 1.0
    for p in range(row_ptr[qb], row_ptr[qb + 1]):
        c0 = int(col_idx[p]) * B
        c1 = min(c0 + B, n_k)
        s = scale * (Q @ k[c0:c1].T)
        allowed = live if (mask is None or not use_mask) else live & np.asarray(mask, dtype=bool)[r0:r1, c0:c1]
        if probs == "lse":
            if guard:
                P = np.where(allowed, np.exp(np.where(allowed, s - L, 0.0)), 0.0)
            else:  # masked scores set to -inf, then exp(s - lse): -inf - (-inf) on a fully masked row
                P = np.exp(np.where(allowed, s, -np.inf) - L)
        elif probs == "exp":
            P = np.where(allowed, np.exp(s), 0.0)
        else:  # a softmax of this tile alone
            sm = np.where(allowed, s, -np.inf)
            mx = sm.max(-1, keepdims=True)
            mx = np.where(np.isneginf(mx), 0.0, mx)
            e = np.where(allowed, np.exp(sm - mx), 0.0)
            P = e / np.where(e.sum(-1, keepdims=True) > 0, e.sum(-1, keepdims=True), 1.0)
        dv[c0:c1] += P.T @ dO
        dP = dO @ v[c0:c1].T
        dS = P * (dP - D) if use_delta else P * dP
        dq += g * (dS @ k[c0:c1])
        dk[c0:c1] += g * (dS.T @ Q)
    return dq, dk, dv


def backward_missing_delta(q, k, v, do, lse, delta, row_ptr, col_idx, block_size, qb, mask=None, scale=None):
    return _backward(q, k, v, do, lse, delta, row_ptr, col_idx, block_size, qb, mask, scale, use_delta=False)


def backward_unscaled_gradients(q, k, v, do, lse, delta, row_ptr, col_idx, block_size, qb, mask=None, scale=None):
    return _backward(q, k, v, do, lse, delta, row_ptr, col_idx, block_size, qb, mask, scale, scale_grads=False)


def backward_probs_without_lse(q, k, v, do, lse, delta, row_ptr, col_idx, block_size, qb, mask=None, scale=None):
    return _backward(q, k, v, do, lse, delta, row_ptr, col_idx, block_size, qb, mask, scale, probs="exp")


def backward_softmax_per_tile(q, k, v, do, lse, delta, row_ptr, col_idx, block_size, qb, mask=None, scale=None):
    return _backward(q, k, v, do, lse, delta, row_ptr, col_idx, block_size, qb, mask, scale, probs="tile")


def backward_ignores_token_mask(q, k, v, do, lse, delta, row_ptr, col_idx, block_size, qb, mask=None, scale=None):
    return _backward(q, k, v, do, lse, delta, row_ptr, col_idx, block_size, qb, mask, scale, use_mask=False)


def backward_nan_on_fully_masked_rows(q, k, v, do, lse, delta, row_ptr, col_idx, block_size, qb, mask=None,
                                      scale=None):
    return _backward(q, k, v, do, lse, delta, row_ptr, col_idx, block_size, qb, mask, scale, guard=False)


def backward_unscaled_scores(q, k, v, do, lse, delta, row_ptr, col_idx, block_size, qb, mask=None, scale=None):
    return _backward(q, k, v, do, lse, delta, row_ptr, col_idx, block_size, qb, mask, scale, default_scale=1.0)


# ---------------------------------------------------------------- 4.4 layout_flops

def _flops(row_ptr, col_idx, block_size, d, n_q, n_k, d_v=None, *, padded=False, pv=True, two=True,
           edge_mod=False, ignore_dv=False):
    d_v = d if (d_v is None or ignore_dv) else d_v
    B = block_size
    total = 0
    for r in range(len(row_ptr) - 1):
        for c in col_idx[row_ptr[r]:row_ptr[r + 1]]:
            if padded:
                rows = cols = B
            elif edge_mod:
                rows = n_q % B if r == -(-n_q // B) - 1 else B
                cols = n_k % B if c == -(-n_k // B) - 1 else B
            else:
                rows, cols = min(B, n_q - r * B), min(B, n_k - int(c) * B)
            total += rows * cols
    return (2 if two else 1) * ((d + d_v) if pv else d) * int(total)


def flops_padded_blocks(row_ptr, col_idx, block_size, d, n_q, n_k, d_v=None):
    return _flops(row_ptr, col_idx, block_size, d, n_q, n_k, d_v, padded=True)


def flops_forgets_pv(row_ptr, col_idx, block_size, d, n_q, n_k, d_v=None):
    return _flops(row_ptr, col_idx, block_size, d, n_q, n_k, d_v, pv=False)


def flops_no_factor_two(row_ptr, col_idx, block_size, d, n_q, n_k, d_v=None):
    return _flops(row_ptr, col_idx, block_size, d, n_q, n_k, d_v, two=False)


def flops_edge_by_modulo(row_ptr, col_idx, block_size, d, n_q, n_k, d_v=None):
    return _flops(row_ptr, col_idx, block_size, d, n_q, n_k, d_v, edge_mod=True)


def flops_ignores_d_v(row_ptr, col_idx, block_size, d, n_q, n_k, d_v=None):
    return _flops(row_ptr, col_idx, block_size, d, n_q, n_k, d_v, ignore_dv=True)


def flops_dense(row_ptr, col_idx, block_size, d, n_q, n_k, d_v=None):
    d_v = d if d_v is None else d_v
    return 2 * (d + d_v) * n_q * n_k


# ---------------------------------------------------------------- 4.5 block_scores_kernel (GPU puzzle)
# Each mutant is a factory like the answer's; the checks load it from this file in the simulator.

def scores_naive_global_reads(cuda, block_size, d):
    """Right scores, no shared memory: every thread reads its q row and k row from global memory."""
    B, D = int(block_size), int(d)

    @cuda.jit
    def kernel(q, k, indptr, indices, s):
        qb, tx, ty = cuda.blockIdx.x, cuda.threadIdx.x, cuda.threadIdx.y
        row = qb * B + ty
        for p in range(indptr[qb], indptr[qb + 1]):
            key = indices[p] * B + tx
            acc = np.float32(0.0)
            if row < q.shape[0] and key < k.shape[0]:
                for x in range(D):
                    acc += q[row, x] * k[key, x]
            s[p, ty, tx] = acc

    return kernel


def _tiled(cuda, block_size, d, *, stage_k=True, sync_after_load=True, sync_before_load=True, wrong_index=False,
           off_by_one=False, zero_pad=True, first_columns_only=False, zero_fill_by_one_thread=False):
    B, D = int(block_size), int(d)
    f32 = np.float32
    XEND = min(D, B) if first_columns_only else D

    @cuda.jit
    def kernel(q, k, indptr, indices, s):
        qb, tx, ty = cuda.blockIdx.x, cuda.threadIdx.x, cuda.threadIdx.y
        Qs = cuda.shared.array((B, D), f32)
        Ks = cuda.shared.array((B, D), f32)
        row = qb * B + ty
        n_q = q.shape[0] + (1 if off_by_one else 0)
        n_k = k.shape[0] + (1 if off_by_one else 0)
        for x in range(tx, XEND, B):
            Qs[ty, x] = q[row, x] if row < n_q else f32(0.0)
        for p in range(indptr[qb], indptr[qb + 1]):
            kb = indices[p]
            key = kb * B + ty
            if sync_before_load:
                cuda.syncthreads()
            if stage_k:
                for x in range(tx, XEND, B):
                    if key < n_k:
                        Ks[ty, x] = k[key, x]
                    elif zero_pad:
                        Ks[ty, x] = f32(0.0)
            if sync_after_load:
                cuda.syncthreads()
            if zero_fill_by_one_thread and tx == 0:
                for j in range(B):
                    s[p, ty, j] = f32(0.0)
            acc = f32(0.0)
            for x in range(D):
                if stage_k:
                    acc += Qs[ty, x] * (Ks[ty, x] if wrong_index else Ks[tx, x])
                elif kb * B + tx < k.shape[0]:
                    acc += Qs[ty, x] * k[kb * B + tx, x]
            s[p, ty, tx] = acc

    return kernel


def scores_k_from_global(cuda, block_size, d):
    """Q staged in shared memory, but every thread reads its keys from global memory."""
    return _tiled(cuda, block_size, d, stage_k=False)


def scores_no_sync_after_load(cuda, block_size, d):
    """No cuda.syncthreads() between loading the K tile and reading it."""
    return _tiled(cuda, block_size, d, sync_after_load=False)


def scores_no_sync_before_reload(cuda, block_size, d):
    """No cuda.syncthreads() before the next K tile overwrites the one other threads still read."""
    return _tiled(cuda, block_size, d, sync_before_load=False)


def scores_wrong_tile_index(cuda, block_size, d):
    """Reads row ty of the K tile instead of row tx (the thread's key)."""
    return _tiled(cuda, block_size, d, wrong_index=True)


def scores_off_by_one_bounds(cuda, block_size, d):
    """Bounds test <= instead of <: reads one row past the end of q and k."""
    return _tiled(cuda, block_size, d, off_by_one=True)


def scores_no_zero_padding(cuda, block_size, d):
    """Leaves the tile rows past the end of k unwritten (garbage, or the previous tile's keys)."""
    return _tiled(cuda, block_size, d, zero_pad=False)


def scores_loads_first_block_of_columns(cuda, block_size, d):
    """Loads only the columns x < B of each tile row: wrong when d > B."""
    return _tiled(cuda, block_size, d, first_columns_only=True)


def scores_zero_fill_by_one_thread(cuda, block_size, d):
    """Thread x = 0 zeroes its whole output row, then every thread writes its score: two writers."""
    return _tiled(cuda, block_size, d, zero_fill_by_one_thread=True)


# ---------------------------------------------------------------- 4.6 global_reads

def _reads(row_ptr, col_idx, block_size, n_q, n_k, d, *, padded=False, q_once=True, q_per_block=False,
           q_only_kept_rows=False, two=True):
    B = block_size
    counts = np.diff(np.asarray(row_ptr, dtype=np.int64))
    rows = np.minimum(B, n_q - np.arange(counts.size) * B)
    cols = np.minimum(B, n_k - np.asarray(col_idx, dtype=np.int64) * B)
    if padded:
        rows, cols = np.full_like(rows, B), np.full_like(cols, B)
    naive = (2 if two else 1) * d * int((np.repeat(rows, counts) * cols).sum())
    tiled = d * int(cols.sum())
    if q_per_block:
        tiled += d * int((np.repeat(rows, counts)).sum())
    elif q_only_kept_rows:
        tiled += d * int(rows[counts > 0].sum())
    elif q_once:
        tiled += n_q * d
    return naive, tiled


def reads_padded_blocks(row_ptr, col_idx, block_size, n_q, n_k, d):
    return _reads(row_ptr, col_idx, block_size, n_q, n_k, d, padded=True)


def reads_forgets_q(row_ptr, col_idx, block_size, n_q, n_k, d):
    return _reads(row_ptr, col_idx, block_size, n_q, n_k, d, q_once=False)


def reads_q_per_kept_block(row_ptr, col_idx, block_size, n_q, n_k, d):
    return _reads(row_ptr, col_idx, block_size, n_q, n_k, d, q_per_block=True)


def reads_q_only_for_rows_with_blocks(row_ptr, col_idx, block_size, n_q, n_k, d):
    return _reads(row_ptr, col_idx, block_size, n_q, n_k, d, q_only_kept_rows=True)


def reads_naive_counts_k_only(row_ptr, col_idx, block_size, n_q, n_k, d):
    return _reads(row_ptr, col_idx, block_size, n_q, n_k, d, two=False)


def flops_int32(row_ptr, col_idx, block_size, d, n_q, n_k, d_v=None):
    """Right formula in 32-bit integers (numpy's default integer on some platforms): wraps past 2^31."""
    B, dv = block_size, d if d_v is None else d_v
    counts = np.diff(np.asarray(row_ptr)).astype(np.int32)
    rows = np.repeat(np.minimum(B, n_q - np.arange(counts.size, dtype=np.int32) * B), counts).astype(np.int32)
    cols = np.minimum(B, n_k - np.asarray(col_idx).astype(np.int32) * B).astype(np.int32)
    with np.errstate(over="ignore"):
        return int(np.int32(2 * (d + dv)) * (rows * cols).sum(dtype=np.int32))


def reads_int32(row_ptr, col_idx, block_size, n_q, n_k, d):
    """Right formulas in 32-bit integers: wrap past 2^31."""
    B = block_size
    counts = np.diff(np.asarray(row_ptr)).astype(np.int32)
    rows = np.repeat(np.minimum(B, n_q - np.arange(counts.size, dtype=np.int32) * B), counts).astype(np.int32)
    cols = np.minimum(B, n_k - np.asarray(col_idx).astype(np.int32) * B).astype(np.int32)
    with np.errstate(over="ignore"):
        naive = np.int32(2 * d) * (rows * cols).sum(dtype=np.int32)
        tiled = np.int32(n_q * d) + np.int32(d) * cols.sum(dtype=np.int32)
    return int(naive), int(tiled)


MUTANTS = {
    "4.1": [layout_floor_division, layout_all_instead_of_any, layout_inclusive_end_off_by_one,
            layout_no_leading_zero, layout_counts_not_offsets, layout_transposed],
    "4.2": [forward_no_max_shift, forward_no_rescale, forward_unscaled_scores, forward_ignores_token_mask,
            forward_nan_on_fully_masked_rows, forward_drops_short_edge_block, forward_skips_last_kept_block,
            forward_lse_is_max, forward_dense_in_disguise],
    "4.3": [backward_missing_delta, backward_unscaled_gradients, backward_probs_without_lse,
            backward_softmax_per_tile, backward_ignores_token_mask, backward_nan_on_fully_masked_rows,
            backward_unscaled_scores],
    "4.4": [flops_int32, flops_padded_blocks, flops_forgets_pv, flops_no_factor_two, flops_edge_by_modulo, flops_ignores_d_v,
            flops_dense],
    "4.5": [scores_naive_global_reads, scores_k_from_global, scores_no_sync_after_load, scores_no_sync_before_reload,
            scores_wrong_tile_index, scores_off_by_one_bounds, scores_no_zero_padding,
            scores_loads_first_block_of_columns, scores_zero_fill_by_one_thread],
    "4.6": [reads_int32, reads_padded_blocks, reads_forgets_q, reads_q_per_kept_block, reads_q_only_for_rows_with_blocks,
            reads_naive_counts_k_only],
}
