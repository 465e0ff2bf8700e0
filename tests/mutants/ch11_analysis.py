"""Plausible wrong answers to Chapter 11's exercises. Each must fail at least one graded check.

Every mutant starts from the reference answer and changes one thing a student might get wrong.
"""
import math
import statistics

import numpy as np
import torch

OPERATORS = ("[MAX", "[MIN", "[MED", "[SM")


# ---------------------------------------------------------------- 11.1
def _mqar(rng, seq_len, num_kv_pairs, vocab_size, *, distinct=True, offset=True, shift_label=False, ordered=False,
          last_slot=True, values_low=None, label_filler=-100, validate=True, use_rng=True):
    if validate:
        for name, value in (("seq_len", seq_len), ("num_kv_pairs", num_kv_pairs), ("vocab_size", vocab_size)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}")
    P, n, half = num_kv_pairs, seq_len, (vocab_size - 1) // 2
    if validate and n < 4 * P:
        raise ValueError(f"`seq_len`={n} is too short")
    if validate and half < P:
        raise ValueError(f"`vocab_size`={vocab_size} has too few keys")
    if not use_rng:
        rng = np.random.default_rng()
    keys = rng.permutation(half)[:P] + 1 if distinct else rng.integers(1, half + 1, size=P)
    values = rng.integers(half + 1 if values_low is None else values_low, 2 * half + 1, size=P)
    x = np.full(n, 0, dtype=np.int64)
    y = np.full(n, label_filler, dtype=np.int64)
    x[0:2 * P:2], x[1:2 * P:2] = keys, values
    if offset:
        slots = rng.permutation((n - 2 * P) // 2 - (0 if last_slot else 1))[:P]
        pos = 2 * P + 2 * (np.sort(slots) if ordered else slots)
    else:
        pos = 2 * rng.permutation(n // 2)[:P]
    order = np.arange(P) if ordered else rng.permutation(P)
    x[pos], x[pos + 1] = keys[order], values[order]
    y[pos + 1 if shift_label else pos] = values[order]
    if label_filler != -100:
        y[np.setdiff1d(np.arange(n), pos)] = label_filler
    return x, y


def mqar_keys_not_distinct(rng, seq_len, num_kv_pairs, vocab_size):
    return _mqar(rng, seq_len, num_kv_pairs, vocab_size, distinct=False)


def mqar_query_inside_context(rng, seq_len, num_kv_pairs, vocab_size):
    # forgot the offset 2P: a query slot may fall on the context
    return _mqar(rng, seq_len, num_kv_pairs, vocab_size, offset=False)


def mqar_label_at_value(rng, seq_len, num_kv_pairs, vocab_size):
    # the label shifted by one: at the value's position instead of the key's
    return _mqar(rng, seq_len, num_kv_pairs, vocab_size, shift_label=True)


def mqar_queries_in_context_order(rng, seq_len, num_kv_pairs, vocab_size):
    # random slots, but the keys queried in the order of the context
    return _mqar(rng, seq_len, num_kv_pairs, vocab_size, ordered=True)


def mqar_never_last_slot(rng, seq_len, num_kv_pairs, vocab_size):
    return _mqar(rng, seq_len, num_kv_pairs, vocab_size, last_slot=False)


def mqar_values_from_whole_vocab(rng, seq_len, num_kv_pairs, vocab_size):
    return _mqar(rng, seq_len, num_kv_pairs, vocab_size, values_low=1)


def mqar_unlabelled_as_zero(rng, seq_len, num_kv_pairs, vocab_size):
    return _mqar(rng, seq_len, num_kv_pairs, vocab_size, label_filler=0)


def mqar_global_random_state(rng, seq_len, num_kv_pairs, vocab_size):
    return _mqar(rng, seq_len, num_kv_pairs, vocab_size, use_rng=False)


def mqar_no_checks(rng, seq_len, num_kv_pairs, vocab_size):
    return _mqar(rng, seq_len, num_kv_pairs, vocab_size, validate=False)


def mqar_sorted_keys(rng, seq_len, num_kv_pairs, vocab_size):
    x, y = _mqar(rng, seq_len, num_kv_pairs, vocab_size)
    P = num_kv_pairs
    keys, values = x[0:2 * P:2].copy(), x[1:2 * P:2].copy()
    o = np.argsort(keys)
    x[0:2 * P:2], x[1:2 * P:2] = keys[o], values[o]
    return x, y


# ---------------------------------------------------------------- 11.2
def _listops(tokens, median, sm=lambda a: sum(a) % 10, validate=True):
    stack, result = [], []
    for t in tokens:
        if t in OPERATORS:
            stack.append([t])
            continue
        if t == "]":
            if validate and not stack:
                raise ValueError("']' closes no operator")
            op, *args = stack.pop()
            if validate and not args:
                raise ValueError("no arguments")
            value = {"[MAX": max, "[MIN": min, "[MED": median, "[SM": sm}[op](args)
        elif validate and not (len(t) == 1 and t in "0123456789"):
            raise ValueError(f"unknown token {t!r}")
        else:
            value = int(t)
        (stack[-1] if stack else result).append(value)
    if validate and (stack or len(result) != 1):
        raise ValueError("malformed")
    return result[-1] if result else 0


def listops_median_rounds_up(tokens):
    return _listops(tokens, lambda a: math.ceil(np.median(a)))


def listops_upper_median(tokens):
    return _listops(tokens, lambda a: sorted(a)[len(a) // 2])


def listops_median_low(tokens):
    return _listops(tokens, statistics.median_low)


def listops_median_round(tokens):
    return _listops(tokens, lambda a: round(float(np.median(a))))


def listops_sum_without_mod(tokens):
    return _listops(tokens, lambda a: int(np.median(a)), sm=sum)


def listops_no_validation(tokens):
    return _listops(tokens, lambda a: int(np.median(a)), validate=False)


def listops_recursive(tokens):
    # right values, but one Python call per nesting level
    def node(i):
        t = tokens[i]
        if t in OPERATORS:
            args, i = [], i + 1
            while i < len(tokens) and tokens[i] != "]":
                v, i = node(i)
                args.append(v)
            if i >= len(tokens) or not args:
                raise ValueError("malformed")
            f = {"[MAX": max, "[MIN": min, "[MED": lambda a: int(np.median(a)), "[SM": lambda a: sum(a) % 10}[t]
            return f(args), i + 1
        if len(t) == 1 and t.isdigit():
            return int(t), i + 1
        raise ValueError(f"unknown token {t!r}")

    if not tokens:
        raise ValueError("empty")
    value, end = node(0)
    if end != len(tokens):
        raise ValueError("trailing tokens")
    return value


# ---------------------------------------------------------------- 11.3
def _validated(n, t):
    n, t = np.asarray(n, dtype=float).ravel(), np.asarray(t, dtype=float).ravel()
    if n.size != t.size or n.size < 2 or (n <= 0).any() or (t <= 0).any() or np.all(n == n[0]):
        raise ValueError("unusable points")
    return np.log(n), np.log(t)


def exponent_least_squares(n, t):
    ln, lt = _validated(n, t)
    return float(np.polyfit(ln, lt, 1)[0])


def exponent_consecutive_slopes(n, t):
    # the median of the slopes between neighbours in n only
    ln, lt = _validated(n, t)
    o = np.argsort(ln, kind="stable")
    ln, lt = ln[o], lt[o]
    d = np.diff(ln)
    return float(np.median(np.diff(lt)[d != 0] / d[d != 0]))


def exponent_mean_of_pairwise_slopes(n, t):
    ln, lt = _validated(n, t)
    i, j = np.triu_indices(ln.size, 1)
    k = ln[i] != ln[j]
    return float(np.mean((lt[j] - lt[i])[k] / (ln[j] - ln[i])[k]))


def exponent_endpoints(n, t):
    # the slope between the smallest and the largest n
    ln, lt = _validated(n, t)
    return float((lt[np.argmax(ln)] - lt[np.argmin(ln)]) / (ln.max() - ln.min()))


def exponent_lower_median(n, t):
    ln, lt = _validated(n, t)
    i, j = np.triu_indices(ln.size, 1)
    k = ln[i] != ln[j]
    s = np.sort((lt[j] - lt[i])[k] / (ln[j] - ln[i])[k])
    return float(s[(s.size - 1) // 2])


def exponent_keeps_equal_n_pairs(n, t):
    ln, lt = _validated(n, t)
    i, j = np.triu_indices(ln.size, 1)
    with np.errstate(all="ignore"):
        return float(np.median((lt[j] - lt[i]) / (ln[j] - ln[i])))


def exponent_no_checks(n, t):
    ln, lt = np.log(np.asarray(n, dtype=float)), np.log(np.asarray(t, dtype=float))
    i, j = np.triu_indices(ln.size, 1)
    k = ln[i] != ln[j]
    return float(np.median((lt[j] - lt[i])[k] / (ln[j] - ln[i])[k]))


# ---------------------------------------------------------------- 11.4
def _front(cost, quality, dominated_fn, order=lambda c, i: (c[i], i)):
    cost, quality = np.asarray(cost, dtype=float).ravel(), np.asarray(quality, dtype=float).ravel()
    if cost.size != quality.size:
        raise ValueError("lengths differ")
    keep = [i for i in range(cost.size) if not any(dominated_fn(cost, quality, i, j) for j in range(cost.size) if j != i)]
    return sorted(keep, key=lambda i: order(cost, i))


def front_strict_in_both(cost, quality):
    # keeps the weakly dominated points: only "better in both" dominates
    return _front(cost, quality, lambda c, q, i, j: c[j] < c[i] and q[j] > q[i])


def front_drops_duplicates(cost, quality):
    # "at least as good in both" dominates: a duplicate removes its copy (and itself)
    return _front(cost, quality, lambda c, q, i, j: c[j] <= c[i] and q[j] >= q[i] and j < i)


def front_sorted_by_index(cost, quality):
    return _front(cost, quality, lambda c, q, i, j: c[j] <= c[i] and q[j] >= q[i] and (c[j] < c[i] or q[j] > q[i]),
                  order=lambda c, i: i)


def front_higher_cost_better(cost, quality):
    return _front(cost, quality, lambda c, q, i, j: c[j] >= c[i] and q[j] >= q[i] and (c[j] > c[i] or q[j] > q[i]))


def front_sweep_ignoring_ties(cost, quality):
    # sort by cost, keep each point that beats the best quality so far: wrong for equal costs and duplicates
    cost, quality = np.asarray(cost, dtype=float).ravel(), np.asarray(quality, dtype=float).ravel()
    if cost.size != quality.size:
        raise ValueError("lengths differ")
    out, best = [], -np.inf
    for i in np.argsort(cost, kind="stable"):
        if quality[i] > best:
            out.append(int(i))
            best = quality[i]
    return out


# ---------------------------------------------------------------- 11.5
def _grad(layer, x, select):
    xp = x.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(select(layer(xp)), xp)
    return g


def probe_gradient_of_mean(layer, x):
    return _grad(layer, x, lambda o: o.mean()).pow(2).sum(dim=(0, 2)).sqrt()


def probe_first_position(layer, x):
    return _grad(layer, x, lambda o: o[:, 0].sum()).pow(2).sum(dim=(0, 2)).sqrt()


def probe_mean_of_last_position(layer, x):
    return _grad(layer, x, lambda o: o[:, -1].mean()).pow(2).sum(dim=(0, 2)).sqrt()


def probe_squared_norm(layer, x):
    return _grad(layer, x, lambda o: o[:, -1].sum()).pow(2).sum(dim=(0, 2))


def probe_first_example_only(layer, x):
    return _grad(layer, x, lambda o: o[:, -1].sum())[0].norm(dim=-1)


def probe_sum_of_norms(layer, x):
    return _grad(layer, x, lambda o: o[:, -1].sum()).norm(dim=-1).sum(0)


def probe_input_in_place(layer, x):
    x.requires_grad_(True)
    (g,) = torch.autograd.grad(layer(x)[:, -1].sum(), x)
    return g.pow(2).sum(dim=(0, 2)).sqrt()


def probe_backward(layer, x):
    xp = x.detach().clone().requires_grad_(True)
    layer(xp)[:, -1].sum().backward()
    return xp.grad.pow(2).sum(dim=(0, 2)).sqrt()


MUTANTS = {
    "11.1": [mqar_keys_not_distinct, mqar_query_inside_context, mqar_label_at_value, mqar_queries_in_context_order,
             mqar_never_last_slot, mqar_values_from_whole_vocab, mqar_unlabelled_as_zero, mqar_global_random_state,
             mqar_no_checks, mqar_sorted_keys],
    "11.2": [listops_median_rounds_up, listops_upper_median, listops_median_low, listops_median_round,
             listops_sum_without_mod, listops_no_validation, listops_recursive],
    "11.3": [exponent_least_squares, exponent_consecutive_slopes, exponent_mean_of_pairwise_slopes, exponent_endpoints,
             exponent_lower_median, exponent_keeps_equal_n_pairs, exponent_no_checks],
    "11.4": [front_strict_in_both, front_drops_duplicates, front_sorted_by_index, front_higher_cost_better,
             front_sweep_ignoring_ties],
    "11.5": [probe_gradient_of_mean, probe_first_position, probe_mean_of_last_position, probe_squared_norm,
             probe_first_example_only, probe_sum_of_norms, probe_input_in_place, probe_backward],
}
