"""Plausible wrong answers to Chapter 5's exercises. Each must fail at least one graded check.

Every mutant starts from a correct answer and changes one thing a student might get wrong.
"""
import numpy as np

from sparse_core import reference as ref

# ---------------------------------------------------------------- 5.1 bigbird_layout


def _bigbird(n_blocks, plan, window_blocks=3, global_blocks=1, *, half=None, rows=True, cols=True, last=True,
             minus_one=False, random_in_global_rows=False, symmetric_random=False):
    plan = np.asarray(plan)
    a = np.arange(n_blocks)
    h = window_blocks // 2 if half is None else half
    layout = np.abs(a[:, None] - a[None, :]) <= h
    is_global = a < global_blocks
    if last:
        is_global |= a >= n_blocks - global_blocks
    if rows:
        layout |= is_global[:, None]
    if cols:
        layout |= is_global[None, :]
    for row in range(n_blocks):
        if is_global[row] and not random_in_global_rows:
            continue
        cols_ = plan[row] if minus_one else plan[row][plan[row] >= 0]
        layout[row, cols_] = True
        if symmetric_random:
            layout[cols_, row] = True
    return layout


def bigbird_window_full_width(n_blocks, plan, window_blocks=3, global_blocks=1):
    return _bigbird(n_blocks, plan, window_blocks, global_blocks, half=window_blocks)


def bigbird_window_too_narrow(n_blocks, plan, window_blocks=3, global_blocks=1):
    return _bigbird(n_blocks, plan, window_blocks, global_blocks, half=window_blocks // 2 - 1)


def bigbird_global_rows_only(n_blocks, plan, window_blocks=3, global_blocks=1):
    return _bigbird(n_blocks, plan, window_blocks, global_blocks, cols=False)


def bigbird_global_cols_only(n_blocks, plan, window_blocks=3, global_blocks=1):
    return _bigbird(n_blocks, plan, window_blocks, global_blocks, rows=False)


def bigbird_first_global_only(n_blocks, plan, window_blocks=3, global_blocks=1):
    return _bigbird(n_blocks, plan, window_blocks, global_blocks, last=False)


def bigbird_minus_one_is_last_block(n_blocks, plan, window_blocks=3, global_blocks=1):
    return _bigbird(n_blocks, plan, window_blocks, global_blocks, minus_one=True)


def bigbird_random_symmetric(n_blocks, plan, window_blocks=3, global_blocks=1):
    return _bigbird(n_blocks, plan, window_blocks, global_blocks, symmetric_random=True)


def bigbird_plan_ignored(n_blocks, plan, window_blocks=3, global_blocks=1):
    return _bigbird(n_blocks, np.full((n_blocks, 0), -1), window_blocks, global_blocks)


def bigbird_int_dtype(n_blocks, plan, window_blocks=3, global_blocks=1):
    return _bigbird(n_blocks, plan, window_blocks, global_blocks).astype(int)


# ---------------------------------------------------------------- 5.2 longformer_mask


def _longformer(n, window, global_idx, causal=False, *, strict=False, diag=True, rows=True, cols=True,
                upper=False, causal_globals_exempt=False):
    i = np.arange(n)[:, None]
    j = np.arange(n)[None, :]
    g = np.zeros(n, dtype=bool)
    g[np.asarray(list(global_idx), dtype=np.int64)] = True
    local = (np.abs(i - j) < window) if strict else (np.abs(i - j) <= window)
    if not diag:
        local &= i != j
    glob = np.zeros((n, n), dtype=bool)
    if rows:
        glob |= g[:, None]
    if cols:
        glob |= g[None, :]
    if causal:
        local &= (j >= i) if upper else (j <= i)
        if not causal_globals_exempt:
            glob &= (j >= i) if upper else (j <= i)
    return local | glob


def longformer_window_off_by_one(n, window, global_idx, causal=False):
    return _longformer(n, window, global_idx, causal, strict=True)


def longformer_no_diagonal(n, window, global_idx, causal=False):
    return _longformer(n, window, global_idx, causal, diag=False)


def longformer_globals_attend_but_not_attended(n, window, global_idx, causal=False):
    return _longformer(n, window, global_idx, causal, cols=False)


def longformer_globals_attended_but_not_attending(n, window, global_idx, causal=False):
    return _longformer(n, window, global_idx, causal, rows=False)


def longformer_causal_upper(n, window, global_idx, causal=False):
    return _longformer(n, window, global_idx, causal, upper=True)


def longformer_causal_globals_see_future(n, window, global_idx, causal=False):
    return _longformer(n, window, global_idx, causal, causal_globals_exempt=True)


def longformer_window_full_width(n, window, global_idx, causal=False):
    return _longformer(n, 2 * window, global_idx, causal) if window else _longformer(n, 1, global_idx, causal)


# ---------------------------------------------------------------- 5.3 graph_diameter


def _all_distances(mask, *, undirected=False):
    m = np.asarray(mask, dtype=bool)
    if undirected:
        m = m | m.T
    n = m.shape[0]
    dist = np.full((n, n), -1)
    for s in range(n):
        d = dist[s]
        d[s] = 0
        frontier = [s]
        while frontier:
            nxt = []
            for u in frontier:
                for v in np.flatnonzero(m[u]):
                    if d[v] < 0:
                        d[v] = d[u] + 1
                        nxt.append(v)
            frontier = nxt
    return dist


def diameter_counts_positions(mask):
    d = _all_distances(mask)
    return -1 if (d < 0).any() else int(d.max()) + 1


def diameter_ignores_unreachable(mask):
    return int(_all_distances(mask).max())


def diameter_undirected(mask):
    d = _all_distances(mask, undirected=True)
    return -1 if (d < 0).any() else int(d.max())


def diameter_inf_when_disconnected(mask):
    d = _all_distances(mask)
    return float("inf") if (d < 0).any() else int(d.max())


def diameter_matrix_powers_without_identity(mask):
    """Smallest L with every pair connected by a walk of *exactly* L steps (forgets the residual)."""
    m = np.asarray(mask, dtype=bool)
    n = m.shape[0]
    power = m.copy()
    for L in range(1, 2 * n + 1):
        if power.all():
            return L
        power = (power.astype(np.int64) @ m.astype(np.int64)) > 0
    return -1


def diameter_max_over_first_source(mask):
    d = _all_distances(mask)
    return -1 if (d[0] < 0).any() else int(d[0].max())


# ---------------------------------------------------------------- 5.4 sample_random_blocks


def _sample(n_blocks, r, seed=0, window_blocks=3, global_blocks=1, *, exclude_window=True, exclude_global=True,
            replace=False, first=False, rng=None, fill=-1, half=None):
    rng = rng or (seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed))
    plan = np.full((n_blocks, r), fill, dtype=np.int64)
    blocks = np.arange(n_blocks)
    is_global = (blocks < global_blocks) | (blocks >= n_blocks - global_blocks)
    h = window_blocks // 2 if half is None else half
    for a in range(n_blocks):
        if is_global[a]:
            continue
        ok = np.ones(n_blocks, dtype=bool)
        if exclude_global:
            ok &= ~is_global
        if exclude_window:
            ok &= np.abs(blocks - a) > h
        else:
            ok &= blocks != a
        candidates = blocks[ok]
        take = min(r, candidates.size)
        if first:
            plan[a, :take] = candidates[:take]
        elif replace:
            plan[a, :take] = rng.choice(candidates, size=take, replace=True) if take else []
        else:
            plan[a, :take] = rng.choice(candidates, size=take, replace=False)
    return plan


def sample_collides_with_window(n_blocks, r, seed=0, window_blocks=3, global_blocks=1):
    return _sample(n_blocks, r, seed, window_blocks, global_blocks, exclude_window=False)


def sample_window_off_by_one(n_blocks, r, seed=0, window_blocks=3, global_blocks=1):
    return _sample(n_blocks, r, seed, window_blocks, global_blocks, half=window_blocks // 2 - 1)


def sample_collides_with_global(n_blocks, r, seed=0, window_blocks=3, global_blocks=1):
    return _sample(n_blocks, r, seed, window_blocks, global_blocks, exclude_global=False)


def sample_with_replacement(n_blocks, r, seed=0, window_blocks=3, global_blocks=1):
    return _sample(n_blocks, r, seed, window_blocks, global_blocks, replace=True)


def sample_first_candidates(n_blocks, r, seed=0, window_blocks=3, global_blocks=1):
    return _sample(n_blocks, r, seed, window_blocks, global_blocks, first=True)


def sample_ignores_seed(n_blocks, r, seed=0, window_blocks=3, global_blocks=1):
    return _sample(n_blocks, r, seed, window_blocks, global_blocks, rng=np.random.default_rng())


def sample_fills_with_zero(n_blocks, r, seed=0, window_blocks=3, global_blocks=1):
    return _sample(n_blocks, r, seed, window_blocks, global_blocks, fill=0)


def sample_biased_to_near_blocks(n_blocks, r, seed=0, window_blocks=3, global_blocks=1):
    """Weights candidates by closeness: no collisions, but not uniform."""
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    plan = np.full((n_blocks, r), -1, dtype=np.int64)
    blocks = np.arange(n_blocks)
    is_global = (blocks < global_blocks) | (blocks >= n_blocks - global_blocks)
    for a in range(n_blocks):
        if is_global[a]:
            continue
        candidates = blocks[~is_global & (np.abs(blocks - a) > window_blocks // 2)]
        take = min(r, candidates.size)
        if take:
            w = 1.0 / np.abs(candidates - a) ** 2
            plan[a, :take] = rng.choice(candidates, size=take, replace=False, p=w / w.sum())
    return plan


# ---------------------------------------------------------------- 5.5 block_table_attention


def _table_attention(q, k, v, table, block_size, *, scale=None, transpose=False, shift=True, nan_rows=False,
                     ceil=False):
    n = q.shape[-2]
    blk = (np.arange(n) + (block_size - 1 if ceil else 0)) // block_size
    blk = np.minimum(blk, np.asarray(table).shape[0] - 1)
    t = np.asarray(table, dtype=bool)
    if transpose:
        t = t.T
    mask = t[blk[:, None], blk[None, :]]
    tau = 1.0 / np.sqrt(q.shape[-1]) if scale is None else scale
    s = np.matmul(q.astype(np.float64), np.swapaxes(k.astype(np.float64), -1, -2)) * tau
    if shift:
        s = np.where(mask, s, -np.inf)
        m = s.max(-1, keepdims=True)
        if not nan_rows:
            m = np.where(np.isneginf(m), 0.0, m)
        p = np.exp(s - m)
    else:
        p = np.where(mask, np.exp(s), 0.0)
    total = p.sum(-1, keepdims=True)
    if not nan_rows:
        total = np.where(total > 0, total, 1.0)
    return np.matmul(p / total, v.astype(np.float64))


def table_unscaled(q, k, v, table, block_size):
    return _table_attention(q, k, v, table, block_size, scale=1.0)


def table_scaled_by_d(q, k, v, table, block_size):
    return _table_attention(q, k, v, table, block_size, scale=1.0 / q.shape[-1])


def table_no_max_subtraction(q, k, v, table, block_size):
    return _table_attention(q, k, v, table, block_size, shift=False)


def table_transposed(q, k, v, table, block_size):
    return _table_attention(q, k, v, table, block_size, transpose=True)


def table_nan_on_empty_rows(q, k, v, table, block_size):
    return _table_attention(q, k, v, table, block_size, nan_rows=True)


def table_ceil_block_index(q, k, v, table, block_size):
    return _table_attention(q, k, v, table, block_size, ceil=True)


def table_dense(q, k, v, table, block_size):
    return ref.attention(q, k, v)


MUTANTS = {
    "5.1": [bigbird_window_full_width, bigbird_window_too_narrow, bigbird_global_rows_only, bigbird_global_cols_only,
            bigbird_first_global_only, bigbird_minus_one_is_last_block, bigbird_random_symmetric,
            bigbird_plan_ignored, bigbird_int_dtype],
    "5.2": [longformer_window_off_by_one, longformer_no_diagonal, longformer_globals_attend_but_not_attended,
            longformer_globals_attended_but_not_attending, longformer_causal_upper,
            longformer_causal_globals_see_future, longformer_window_full_width],
    "5.3": [diameter_counts_positions, diameter_ignores_unreachable, diameter_undirected,
            diameter_inf_when_disconnected, diameter_matrix_powers_without_identity, diameter_max_over_first_source],
    "5.4": [sample_collides_with_window, sample_window_off_by_one, sample_collides_with_global,
            sample_with_replacement, sample_first_candidates, sample_ignores_seed, sample_fills_with_zero,
            sample_biased_to_near_blocks],
    "5.5": [table_unscaled, table_scaled_by_d, table_no_max_subtraction, table_transposed, table_nan_on_empty_rows,
            table_ceil_block_index, table_dense],
}
