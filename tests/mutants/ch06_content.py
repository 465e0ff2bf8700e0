"""Plausible wrong answers to Chapter 6's exercises. Each must fail at least one graded check.

Every mutant starts from a correct answer and changes one thing a student might get wrong.
"""
import math

import numpy as np

from sparse_core import reference as ref


# ---------------------------------------------------------------- 6.1 topk_mask

def _topk(scores, k, causal=False, *, largest=True, ties_small=True, causal_dir="lower", mask_first=True,
          kind="stable"):
    s = np.asarray(scores, dtype=np.float64)
    n_q, n_k = s.shape[-2:]
    allowed = None
    if causal:
        i, j = np.arange(n_q)[:, None], np.arange(n_k)[None, :]
        allowed = j <= i if causal_dir == "lower" else j >= i
        if mask_first:
            s = np.where(allowed, s, -np.inf if largest else np.inf)
    key = -s if largest else s
    if ties_small:
        order = np.argsort(key, axis=-1, kind=kind)[..., :min(k, n_k)]
    else:
        order = (n_k - 1 - np.argsort(key[..., ::-1], axis=-1, kind="stable"))[..., :min(k, n_k)]
    keep = np.zeros(s.shape, dtype=bool)
    np.put_along_axis(keep, order, True, axis=-1)
    return keep if allowed is None else keep & allowed


def topk_picks_smallest(scores, k, causal=False):
    return _topk(scores, k, causal, largest=False)


def topk_ties_to_larger_index(scores, k, causal=False):
    return _topk(scores, k, causal, ties_small=False)


def topk_causal_upper(scores, k, causal=False):
    return _topk(scores, k, causal, causal_dir="upper")


def topk_over_masked_keys(scores, k, causal=False):
    """Takes the top k over all keys, then removes the future ones: early rows keep fewer than k."""
    return _topk(scores, k, causal, mask_first=False)


def topk_ignores_causal(scores, k, causal=False):
    return _topk(scores, k, False)


def topk_int_mask(scores, k, causal=False):
    return _topk(scores, k, causal).astype(np.int64)


# ---------------------------------------------------------------- 6.2 topk_attention

def _topk_attn(q, k, v, top_k, causal=False, scale=None, *, use_scale=True, renormalise=True, by_abs=False,
               causal_select=True):
    q, k, v = (np.asarray(t, dtype=np.float64) for t in (q, k, v))
    tau = (1.0 / math.sqrt(q.shape[-1]) if scale is None else scale) if use_scale else 1.0
    s = np.matmul(q, np.swapaxes(k, -1, -2)) * tau
    keep = _topk(np.abs(s) if by_abs else s, top_k, causal and causal_select)
    if renormalise:
        return ref.attention(q, k, v, mask=keep, scale=tau)
    p = ref.masked_softmax(s, ref.causal_mask(*s.shape[-2:]) if causal else None)
    return np.matmul(np.where(keep, p, 0.0), v)


def topk_attention_no_scale(q, k, v, top_k, causal=False, scale=None):
    return _topk_attn(q, k, v, top_k, causal, scale, use_scale=False)


def topk_attention_not_renormalised(q, k, v, top_k, causal=False, scale=None):
    """Dense softmax, then zero the dropped keys: the weights no longer sum to 1."""
    return _topk_attn(q, k, v, top_k, causal, scale, renormalise=False)


def topk_attention_by_magnitude(q, k, v, top_k, causal=False, scale=None):
    return _topk_attn(q, k, v, top_k, causal, scale, by_abs=True)


def topk_attention_ignores_causal(q, k, v, top_k, causal=False, scale=None):
    return _topk_attn(q, k, v, top_k, causal, scale, causal_select=False)


def topk_attention_is_dense(q, k, v, top_k, causal=False, scale=None):
    return ref.attention(q, k, v, scale=scale, causal=causal)


def topk_attention_ignores_explicit_scale(q, k, v, top_k, causal=False, scale=None):
    return _topk_attn(q, k, v, top_k, causal, None)


# ---------------------------------------------------------------- 6.3 kmeans_route

def route_by_dot_product(x, centroids):
    return np.argmax(np.asarray(x) @ np.asarray(centroids).T, axis=-1)


def route_by_euclidean_distance(x, centroids):
    d = ((np.asarray(x)[..., :, None, :] - np.asarray(centroids)) ** 2).sum(-1)
    return np.argmin(d, axis=-1)


def route_farthest(x, centroids):
    x = np.asarray(x) / np.linalg.norm(x, axis=-1, keepdims=True)
    c = np.asarray(centroids) / np.linalg.norm(centroids, axis=-1, keepdims=True)
    return np.argmin(x @ c.T, axis=-1)


def route_ties_to_larger_id(x, centroids):
    x = np.asarray(x) / np.linalg.norm(x, axis=-1, keepdims=True)
    c = np.asarray(centroids) / np.linalg.norm(centroids, axis=-1, keepdims=True)
    sim = (x @ c.T)[..., ::-1]
    return c.shape[0] - 1 - np.argmax(sim, axis=-1)


def route_returns_similarity(x, centroids):
    x = np.asarray(x) / np.linalg.norm(x, axis=-1, keepdims=True)
    c = np.asarray(centroids) / np.linalg.norm(centroids, axis=-1, keepdims=True)
    return np.max(x @ c.T, axis=-1)


# ---------------------------------------------------------------- 6.4 routing_mask

def _rmask(q_ids, k_ids, causal, direction="lower"):
    qi, ki = np.asarray(q_ids), np.asarray(k_ids)
    keep = qi[..., :, None] == ki[..., None, :]
    if causal:
        i, j = np.arange(qi.shape[-1])[:, None], np.arange(ki.shape[-1])[None, :]
        if direction == "lower":
            keep = keep & (j <= i)
        elif direction == "upper":
            keep = keep & (j >= i)
        else:  # bottom-right aligned
            keep = keep & (j - ki.shape[-1] <= i - qi.shape[-1])
    return keep


def routing_causal_upper(q_ids, k_ids, causal=False):
    return _rmask(q_ids, k_ids, causal, "upper")


def routing_causal_bottom_right(q_ids, k_ids, causal=False):
    return _rmask(q_ids, k_ids, causal, "bottom_right")


def routing_ignores_causal(q_ids, k_ids, causal=False):
    return _rmask(q_ids, k_ids, False)


def routing_transposed(q_ids, k_ids, causal=False):
    return np.swapaxes(_rmask(k_ids, q_ids, causal), -1, -2)


def routing_strict_causal(q_ids, k_ids, causal=False):
    keep = _rmask(q_ids, k_ids, False)
    if causal:
        keep = keep & (np.arange(np.shape(k_ids)[-1])[None, :] < np.arange(np.shape(q_ids)[-1])[:, None])
    return keep


# ---------------------------------------------------------------- 6.5 row_entropy

def entropy_nan_on_zeros(p):
    p = np.asarray(p, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return -(p * np.log(p)).sum(-1)


def entropy_log2(p):
    p = np.asarray(p, dtype=np.float64)
    return -(p * np.log2(np.where(p > 0, p, 1.0))).sum(-1)


def entropy_normalised(p):
    p = np.asarray(p, dtype=np.float64)
    h = -(p * np.log(np.where(p > 0, p, 1.0))).sum(-1)
    return h / max(math.log(p.shape[-1]), 1e-300)


def entropy_wrong_sign(p):
    p = np.asarray(p, dtype=np.float64)
    return (p * np.log(np.where(p > 0, p, 1.0))).sum(-1)


def entropy_wrong_axis(p):
    p = np.asarray(p, dtype=np.float64)
    return -(p * np.log(np.where(p > 0, p, 1.0))).sum(-2)


# ---------------------------------------------------------------- 6.6 top_mass

def _top_mass(p, fraction, mask=None, *, count="ceil_exact", honour_mask=True, smallest=False):
    p = np.asarray(p, dtype=np.float64)
    allowed = np.ones(p.shape, dtype=bool) if mask is None or not honour_mask else np.broadcast_to(mask, p.shape)
    m = allowed.sum(-1) if count != "n_k" else np.full(p.shape[:-1], p.shape[-1])
    x = fraction * m
    r = {"ceil_exact": np.ceil(np.round(x, 9)), "floor": np.floor(np.round(x, 9)), "round": np.round(x),
         "ceil_naive": np.ceil(x), "n_k": np.ceil(np.round(x, 9))}[count].astype(int)
    fill = np.inf if smallest else -np.inf
    v = np.where(allowed, p, fill)
    srt = np.sort(v, -1) if smallest else -np.sort(-v, -1)
    srt = np.where(np.isfinite(srt), srt, 0.0)
    return np.where(np.arange(p.shape[-1]) < r[..., None], srt, 0.0).sum(-1)


def top_mass_floor(p, fraction, mask=None):
    return _top_mass(p, fraction, mask, count="floor")


def top_mass_round(p, fraction, mask=None):
    return _top_mass(p, fraction, mask, count="round")


def top_mass_naive_ceil(p, fraction, mask=None):
    return _top_mass(p, fraction, mask, count="ceil_naive")


def top_mass_counts_all_keys(p, fraction, mask=None):
    """r from n_k instead of the number of allowed keys."""
    return _top_mass(p, fraction, mask, count="n_k")


def top_mass_ignores_mask(p, fraction, mask=None):
    return _top_mass(p, fraction, mask, honour_mask=False)


def top_mass_smallest(p, fraction, mask=None):
    return _top_mass(p, fraction, mask, smallest=True)


# ---------------------------------------------------------------- 6.7 l1_gate_penalty

def _allowed(g, mask):
    return np.ones(g.shape, dtype=bool) if mask is None else np.broadcast_to(mask, g.shape)


def l1_counts_masked_pairs(gates, mask=None):
    g = np.abs(np.asarray(gates, dtype=np.float64))
    return float(np.where(_allowed(g, mask), g, 0.0).mean())


def l1_sum_not_mean(gates, mask=None):
    g = np.abs(np.asarray(gates, dtype=np.float64))
    return float(np.where(_allowed(g, mask), g, 0.0).sum())


def l1_mean_of_row_means(gates, mask=None):
    g = np.abs(np.asarray(gates, dtype=np.float64))
    a = _allowed(g, mask)
    cnt = a.sum(-1)
    rows = np.where(a, g, 0.0).sum(-1) / np.maximum(cnt, 1)
    return float(rows[cnt > 0].mean()) if (cnt > 0).any() else 0.0


def l1_no_abs(gates, mask=None):
    g = np.asarray(gates, dtype=np.float64)
    a = _allowed(g, mask)
    return float(g[a].mean()) if a.any() else 0.0


def l1_nan_when_empty(gates, mask=None):
    g = np.abs(np.asarray(gates, dtype=np.float64))
    a = _allowed(g, mask)
    with np.errstate(invalid="ignore"):
        return float(np.where(a, g, 0.0).sum() / a.sum())


def l1_squared(gates, mask=None):
    g = np.asarray(gates, dtype=np.float64) ** 2
    a = _allowed(g, mask)
    return float(g[a].mean()) if a.any() else 0.0


# ---------------------------------------------------------------- 6.8 nsa_select_blocks

def _select(block_scores, n_select, block_size, causal=False, *, force_own=True, restrict=True, ties_small=True,
            largest=True, own_offset=0, extra_own=False):
    s = np.asarray(block_scores, dtype=np.float64)
    if not largest:
        s = -s
    n_q, n_b = s.shape[-2:]
    cand = None
    if causal:
        i, b = np.arange(n_q)[:, None], np.arange(n_b)[None, :]
        cand = b * block_size <= i
        own = b == (i + own_offset) // block_size
        if force_own:
            s = np.where(own, np.inf, s)
        if restrict:
            s = np.where(cand, s, -np.inf)
    count = min(n_select + (1 if (causal and extra_own) else 0), n_b)
    if ties_small:
        order = np.argsort(-s, axis=-1, kind="stable")[..., :count]
    else:
        order = (n_b - 1 - np.argsort(-s[..., ::-1], axis=-1, kind="stable"))[..., :count]
    sel = np.zeros(s.shape, dtype=bool)
    np.put_along_axis(sel, order, True, axis=-1)
    return sel if (cand is None or not restrict) else sel & cand


def nsa_own_block_not_forced(block_scores, n_select, block_size, causal=False):
    return _select(block_scores, n_select, block_size, causal, force_own=False)


def nsa_selects_future_blocks(block_scores, n_select, block_size, causal=False):
    return _select(block_scores, n_select, block_size, causal, restrict=False)


def nsa_ties_to_larger_index(block_scores, n_select, block_size, causal=False):
    return _select(block_scores, n_select, block_size, causal, ties_small=False)


def nsa_picks_lowest(block_scores, n_select, block_size, causal=False):
    return _select(block_scores, n_select, block_size, causal, largest=False)


def nsa_own_block_off_by_one(block_scores, n_select, block_size, causal=False):
    return _select(block_scores, n_select, block_size, causal, own_offset=1)


def nsa_own_block_on_top(block_scores, n_select, block_size, causal=False):
    """Keeps n_select blocks besides the own one."""
    return _select(block_scores, n_select, block_size, causal, extra_own=True)


MUTANTS = {
    "6.1": [topk_picks_smallest, topk_ties_to_larger_index, topk_causal_upper, topk_over_masked_keys,
            topk_ignores_causal, topk_int_mask],
    "6.2": [topk_attention_no_scale, topk_attention_not_renormalised, topk_attention_by_magnitude,
            topk_attention_ignores_causal, topk_attention_is_dense, topk_attention_ignores_explicit_scale],
    "6.3": [route_by_dot_product, route_by_euclidean_distance, route_farthest, route_ties_to_larger_id,
            route_returns_similarity],
    "6.4": [routing_causal_upper, routing_causal_bottom_right, routing_ignores_causal, routing_transposed,
            routing_strict_causal],
    "6.5": [entropy_nan_on_zeros, entropy_log2, entropy_normalised, entropy_wrong_sign, entropy_wrong_axis],
    "6.6": [top_mass_floor, top_mass_round, top_mass_naive_ceil, top_mass_counts_all_keys, top_mass_ignores_mask,
            top_mass_smallest],
    "6.7": [l1_counts_masked_pairs, l1_sum_not_mean, l1_mean_of_row_means, l1_no_abs, l1_nan_when_empty, l1_squared],
    "6.8": [nsa_own_block_not_forced, nsa_selects_future_blocks, nsa_ties_to_larger_index, nsa_picks_lowest,
            nsa_own_block_off_by_one, nsa_own_block_on_top],
}
