"""Plausible wrong answers to Chapter 9's exercises. Each must fail at least one graded check.

Every mutant starts from a correct answer and changes one thing a student might get wrong.
"""
import numpy as np

# ---------------------------------------------------------------- 9.1 partial_rotary


def _rope(x, offset=0, rotary_pct=0.25, base=10000.0, *, all_dims=False, interleaved=False, fixed_base=False,
          exponent_m=False, no_offset=False, sign=1.0, last_dims=False, repeat_freqs=False):
    x = np.asarray(x, dtype=np.float64)
    d = x.shape[-1]
    r = d if all_dims else int(d * rotary_pct)
    if r == 0:
        return x.copy()
    b = 10000.0 if fixed_base else base
    m = np.arange(0, r, 2, dtype=np.float64)
    theta = b ** (-(m / 2) / r) if exponent_m else b ** (-m / r)
    pos = (0 if no_offset else offset) + np.arange(x.shape[-2], dtype=np.float64)
    ang = pos[:, None] * theta[None, :]
    if interleaved or repeat_freqs:
        angles = np.repeat(ang, 2, axis=-1)
    else:
        angles = np.concatenate([ang, ang], axis=-1)
    if last_dims:
        u, rest = x[..., d - r:], x[..., :d - r]
    else:
        u, rest = x[..., :r], x[..., r:]
    if interleaved:
        rotated = np.stack([-u[..., 1::2], u[..., 0::2]], axis=-1).reshape(u.shape)
    else:
        half = r // 2
        rotated = np.concatenate([-u[..., half:], u[..., :half]], axis=-1)
    out = u * np.cos(angles) + sign * rotated * np.sin(angles)
    return np.concatenate([rest, out] if last_dims else [out, rest], axis=-1)


def rope_all_dims(x, offset=0, rotary_pct=0.25, base=10000.0):
    return _rope(x, offset, rotary_pct, base, all_dims=True)


def rope_interleaved_pairs(x, offset=0, rotary_pct=0.25, base=10000.0):
    return _rope(x, offset, rotary_pct, base, interleaved=True)


def rope_base_ignored(x, offset=0, rotary_pct=0.25, base=10000.0):
    return _rope(x, offset, rotary_pct, base, fixed_base=True)


def rope_exponent_m_over_r(x, offset=0, rotary_pct=0.25, base=10000.0):
    return _rope(x, offset, rotary_pct, base, exponent_m=True)


def rope_offset_ignored(x, offset=0, rotary_pct=0.25, base=10000.0):
    return _rope(x, offset, rotary_pct, base, no_offset=True)


def rope_rotates_backwards(x, offset=0, rotary_pct=0.25, base=10000.0):
    return _rope(x, offset, rotary_pct, base, sign=-1.0)


def rope_last_dims(x, offset=0, rotary_pct=0.25, base=10000.0):
    return _rope(x, offset, rotary_pct, base, last_dims=True)


def rope_frequencies_repeated_not_tiled(x, offset=0, rotary_pct=0.25, base=10000.0):
    return _rope(x, offset, rotary_pct, base, repeat_freqs=True)


# ---------------------------------------------------------------- 9.2 gpt_neox_block


def block_always_sequential(x, ln1, ln2, attn, mlp, parallel=True):
    y = x + attn(ln1(x))
    return y + mlp(ln2(y))


def block_always_parallel(x, ln1, ln2, attn, mlp, parallel=True):
    return x + attn(ln1(x)) + mlp(ln2(x))


def block_one_layernorm(x, ln1, ln2, attn, mlp, parallel=True):
    h = ln1(x)
    if parallel:
        return x + attn(h) + mlp(ln2(x) * 0 + h)
    y = x + attn(h)
    return y + mlp(ln2(y))


def block_no_residual(x, ln1, ln2, attn, mlp, parallel=True):
    if parallel:
        return attn(ln1(x)) + mlp(ln2(x))
    y = attn(ln1(x))
    return y + mlp(ln2(y))


def block_mlp_reads_attention(x, ln1, ln2, attn, mlp, parallel=True):
    a = attn(ln1(x))
    if parallel:
        return x + a + mlp(ln2(a))
    y = x + a
    return y + mlp(ln2(y))


def block_sequential_norms_old_stream(x, ln1, ln2, attn, mlp, parallel=True):
    if parallel:
        return x + attn(ln1(x)) + mlp(ln2(x))
    y = x + attn(ln1(x))
    return y + mlp(ln2(x))


def block_layernorm_after(x, ln1, ln2, attn, mlp, parallel=True):
    if parallel:
        return ln1(x + attn(x)) + mlp(ln2(x)) - x * 0
    y = ln1(x + attn(x))
    return ln2(y + mlp(y))


# ---------------------------------------------------------------- 9.3 perplexity


def ppl_of_summed_loss(batch_losses, batch_tokens):
    return float(np.exp(min(np.sum(batch_losses), 700.0)))


def ppl_unweighted_mean(batch_losses, batch_tokens):
    return float(np.exp(np.mean(batch_losses)))


def ppl_mean_of_batch_perplexities(batch_losses, batch_tokens):
    return float(np.average(np.exp(batch_losses), weights=batch_tokens))


def ppl_base_two(batch_losses, batch_tokens):
    return float(2.0 ** np.average(batch_losses, weights=batch_tokens))


def ppl_total_loss_over_batches(batch_losses, batch_tokens):
    losses, tokens = np.asarray(batch_losses, float), np.asarray(batch_tokens, float)
    return float(np.exp(np.sum(losses * tokens) / len(tokens) / tokens.max()))


def ppl_drops_last_batch(batch_losses, batch_tokens):
    losses, tokens = np.asarray(batch_losses, float), np.asarray(batch_tokens, float)
    if len(losses) > 1:
        losses, tokens = losses[:-1], tokens[:-1]
    return float(np.exp(np.sum(losses * tokens) / np.sum(tokens)))


# ---------------------------------------------------------------- 9.4 loss_at_time


def lat_clamped(times, losses, t):
    return np.interp(np.asarray(t, float), times, losses)


def lat_previous_evaluation(times, losses, t):
    times, losses, t = (np.asarray(a, float) for a in (times, losses, t))
    idx = np.searchsorted(times, t, side="right") - 1
    out = losses[np.clip(idx, 0, len(losses) - 1)]
    return np.where((t < times[0]) | (t > times[-1]), np.nan, out)


def lat_nearest_evaluation(times, losses, t):
    times, losses, t = (np.asarray(a, float) for a in (times, losses, t))
    idx = np.abs(t[..., None] - times).argmin(axis=-1)
    return np.where((t < times[0]) | (t > times[-1]), np.nan, losses[idx])


def lat_extrapolated(times, losses, t):
    times, losses, t = (np.asarray(a, float) for a in (times, losses, t))
    out = np.interp(t, times, losses)
    if len(times) > 1:
        lo = losses[0] + (t - times[0]) * (losses[1] - losses[0]) / (times[1] - times[0])
        hi = losses[-1] + (t - times[-1]) * (losses[-1] - losses[-2]) / (times[-1] - times[-2])
        out = np.where(t < times[0], lo, np.where(t > times[-1], hi, out))
    return out


def lat_open_interval(times, losses, t):
    times, losses, t = (np.asarray(a, float) for a in (times, losses, t))
    return np.where((t <= times[0]) | (t >= times[-1]), np.nan, np.interp(t, times, losses))


def lat_assumes_sorted_t(times, losses, t):
    times, losses, t = (np.asarray(a, float) for a in (times, losses, t))
    out = np.interp(np.sort(t), times, losses)
    return np.where((t < times[0]) | (t > times[-1]), np.nan, out)


# ---------------------------------------------------------------- 9.5 attention_flop_fraction


def _frac(n, h, L, i, V, pairs=None, *, full_square=False, no_output=False, embed_in=False, mlp_once=False,
          scores_only=False, qkv_once=False):
    if pairs is None:
        pairs = n * n if full_square else n * (n + 1) / 2
    att = L * (2.0 if scores_only else 4.0) * pairs * h
    proj = 2.0 * n * h * ((h if qkv_once else 3 * h) + h)
    mlp = 2.0 * n * h * i * (1 if mlp_once else 2)
    out = 0.0 if no_output else 2.0 * n * h * V * (2 if embed_in else 1)
    return att / (att + L * (proj + mlp) + out)


def frac_dense_full_square(n, hidden_size, num_layers, intermediate_size, vocab_size, pairs=None):
    return _frac(n, hidden_size, num_layers, intermediate_size, vocab_size, pairs, full_square=True)


def frac_without_output_layer(n, hidden_size, num_layers, intermediate_size, vocab_size, pairs=None):
    return _frac(n, hidden_size, num_layers, intermediate_size, vocab_size, pairs, no_output=True)


def frac_counts_input_embedding(n, hidden_size, num_layers, intermediate_size, vocab_size, pairs=None):
    return _frac(n, hidden_size, num_layers, intermediate_size, vocab_size, pairs, embed_in=True)


def frac_mlp_once(n, hidden_size, num_layers, intermediate_size, vocab_size, pairs=None):
    return _frac(n, hidden_size, num_layers, intermediate_size, vocab_size, pairs, mlp_once=True)


def frac_scores_only(n, hidden_size, num_layers, intermediate_size, vocab_size, pairs=None):
    return _frac(n, hidden_size, num_layers, intermediate_size, vocab_size, pairs, scores_only=True)


def frac_one_projection(n, hidden_size, num_layers, intermediate_size, vocab_size, pairs=None):
    return _frac(n, hidden_size, num_layers, intermediate_size, vocab_size, pairs, qkv_once=True)


def frac_attention_over_rest(n, hidden_size, num_layers, intermediate_size, vocab_size, pairs=None):
    f = _frac(n, hidden_size, num_layers, intermediate_size, vocab_size, pairs)
    return f / (1.0 - f)  # attention / (everything else) instead of attention / total


# ---------------------------------------------------------------- 9.6 amdahl_speedup


def amdahl_swapped(fraction, part_speedup):
    f, s = np.asarray(fraction, float), np.asarray(part_speedup, float)
    with np.errstate(all="ignore"):
        out = 1.0 / ((1.0 - s) + s / f)
    return float(out) if out.ndim == 0 else out


def amdahl_times_instead_of_divide(fraction, part_speedup):
    f, s = np.asarray(fraction, float), np.asarray(part_speedup, float)
    out = 1.0 / ((1.0 - f) + f * s)
    return float(out) if out.ndim == 0 else out


def amdahl_new_time(fraction, part_speedup):
    f, s = np.asarray(fraction, float), np.asarray(part_speedup, float)
    out = (1.0 - f) + f / s
    return float(out) if out.ndim == 0 else out


def amdahl_part_speedup_is_whole(fraction, part_speedup):
    out = np.broadcast_to(np.asarray(part_speedup, float), np.broadcast(fraction, part_speedup).shape).copy()
    return float(out) if out.ndim == 0 else out


def amdahl_ceiling_only(fraction, part_speedup):
    f = np.broadcast_to(np.asarray(fraction, float), np.broadcast(fraction, part_speedup).shape)
    with np.errstate(all="ignore"):
        out = 1.0 / (1.0 - f)
    return float(out) if out.ndim == 0 else out


def amdahl_weighted_speedups(fraction, part_speedup):
    f, s = np.asarray(fraction, float), np.asarray(part_speedup, float)
    out = (1.0 - f) + f * s  # a weighted mean of speed-ups is not the speed-up of the whole
    return float(out) if out.ndim == 0 else out


MUTANTS = {
    "9.1": [rope_all_dims, rope_interleaved_pairs, rope_base_ignored, rope_exponent_m_over_r, rope_offset_ignored,
            rope_rotates_backwards, rope_last_dims, rope_frequencies_repeated_not_tiled],
    "9.2": [block_always_sequential, block_always_parallel, block_one_layernorm, block_no_residual,
            block_mlp_reads_attention, block_sequential_norms_old_stream, block_layernorm_after],
    "9.3": [ppl_of_summed_loss, ppl_unweighted_mean, ppl_mean_of_batch_perplexities, ppl_base_two,
            ppl_total_loss_over_batches, ppl_drops_last_batch],
    "9.4": [lat_clamped, lat_previous_evaluation, lat_nearest_evaluation, lat_extrapolated, lat_open_interval,
            lat_assumes_sorted_t],
    "9.5": [frac_dense_full_square, frac_without_output_layer, frac_counts_input_embedding, frac_mlp_once,
            frac_scores_only, frac_one_projection, frac_attention_over_rest],
    "9.6": [amdahl_swapped, amdahl_times_instead_of_divide, amdahl_new_time, amdahl_part_speedup_is_whole,
            amdahl_ceiling_only, amdahl_weighted_speedups],
}
