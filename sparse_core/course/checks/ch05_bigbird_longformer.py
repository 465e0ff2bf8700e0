"""Graded checks for Chapter 5 (BigBird and Longformer).

Expected answers come from the library, never from the reference solutions: the BigBird and
Longformer patterns (:mod:`sparse_core.patterns`), the graph functions
(:mod:`sparse_core.patterns.graph`) and the float64 oracle (:mod:`sparse_core.attention.reference`).
Random-block sampling is checked by its properties (no collisions, no repeats, uniform,
reproducible), not by the exact draws.
"""
from __future__ import annotations

import numbers

import numpy as np

from ...attention import reference as _ref
from ...patterns import bigbird as _bigbird
from ...patterns import longformer as _longformer
from ...patterns import sample_plan as _sample_plan
from ...patterns import graph as _graph
from ...patterns import sliding_window as _sliding_window
from ..extremes import EXTREME_NOTE, extreme_qkv
from ..compare import as_array, assert_close, assert_mask_equal, call_repr
from . import CheckList

CHECKS = CheckList()
# what each exercise returns, as its docstring says: every call in every check is held to it
CHECKS.returns("5.1", "bool array")
CHECKS.returns("5.2", "bool array")
CHECKS.returns("5.3", "int")
CHECKS.returns("5.4", "integer array")
CHECKS.returns("5.5", "float64 array")

ATOL64 = 1e-10


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


# ---------------------------------------------------------------- Exercise 5.1: BigBird layout

def _bigbird_expected(nb, plan, w, g):
    plan = np.asarray(plan, dtype=np.int64)
    return _bigbird(nb, 1, num_random_blocks=plan.shape[1], num_global_blocks=g, window_blocks=w,
                    plan=plan[None]).to_dense(nb, nb)[0]


def _bigbird_case(fn, nb, plan, w, g):
    before = np.array(plan, copy=True)
    got = fn(nb, plan, w, g)
    if not np.array_equal(before, plan):
        raise AssertionError("bigbird_layout: your function modified `plan` in place; work on a copy")
    ctx = f"bigbird_layout({nb}, plan, window_blocks={w}, global_blocks={g}) with plan rows {plan.tolist()}" \
        if nb <= 10 else f"bigbird_layout({nb}, plan int64[{nb}, {plan.shape[1]}], window_blocks={w}, global_blocks={g})"
    assert_mask_equal(got, _bigbird_expected(nb, plan, w, g), what="bigbird_layout", context=ctx)


@CHECKS.add("5.1", "bigbird_layout", "window and global blocks", 1)
def _bigbird_structure(fn):
    # no random blocks: window + global only
    for nb, w, g in [(6, 3, 1), (9, 3, 1), (12, 5, 2), (4, 3, 2), (7, 1, 0), (1, 3, 0)]:
        _bigbird_case(fn, nb, np.full((nb, 0), -1, dtype=np.int64), w, g)


@CHECKS.add("5.1", "bigbird_layout", "random blocks from the plan", 2)
def _bigbird_random(fn):
    for seed, nb, r, w, g in [(0, 8, 2, 3, 1), (1, 13, 3, 3, 1), (2, 16, 2, 5, 2), (3, 20, 4, 3, 1)]:
        plan = _sample_plan(nb, r, g, w, n_heads=1, seed=seed)[0]
        _bigbird_case(fn, nb, plan, w, g)


@CHECKS.add("5.1", "bigbird_layout", "unused slots without global blocks", 1)
def _bigbird_unused_slots(fn):
    # -1 marks an unused slot (and is not "the last block"); no global blocks to hide mistakes
    for seed, nb, r, w in [(4, 9, 3, 3), (5, 6, 3, 3), (6, 11, 2, 1)]:
        plan = _sample_plan(nb, r, 0, w, n_heads=1, seed=seed)[0]
        plan[::3, -1] = -1
        _bigbird_case(fn, nb, plan, w, 0)


# ---------------------------------------------------------------- Exercise 5.2: Longformer mask

def _longformer_case(fn, n, w, glob, causal=False):
    got = fn(n, w, glob, causal) if causal else fn(n, w, glob)
    expected = _longformer(w, list(glob), causal=causal).to_dense(n, n)[0]
    assert_mask_equal(got, expected, what="longformer_mask",
                      context=f"longformer_mask({n}, window={w}, global_idx={list(glob)}"
                              + (", causal=True)" if causal else ")"))


@CHECKS.add("5.2", "longformer_mask", "sliding window", 1)
def _longformer_window(fn):
    for n, w in [(1, 0), (5, 0), (9, 1), (17, 3), (12, 11), (6, 20)]:
        _longformer_case(fn, n, w, [])


@CHECKS.add("5.2", "longformer_mask", "global tokens", 2)
def _longformer_global(fn):
    for n, w, glob in [(5, 1, [0]), (11, 2, [0, 10]), (20, 3, [4, 5, 13]), (16, 1, [7, 7, 2]), (24, 0, [23])]:
        _longformer_case(fn, n, w, glob)


@CHECKS.add("5.2", "longformer_mask", "causal", 1)
def _longformer_causal(fn):
    for n, w, glob in [(8, 2, []), (13, 3, [0]), (15, 1, [6, 14]), (10, 4, [9])]:
        _longformer_case(fn, n, w, glob, causal=True)


# ---------------------------------------------------------------- Exercise 5.3: graph diameter

def _diameter_case(fn, mask, label):
    got = fn(mask.copy())
    expected = _graph.diameter(mask)
    if isinstance(got, (bool, np.bool_)) or not isinstance(got, numbers.Integral):
        raise AssertionError(f"graph_diameter for {label}: expected an int, got {type(got).__name__} {got!r}"
                             + (" (use -1, not inf, when the graph is not connected)" if isinstance(got, float) else ""))
    if int(got) != expected:
        hint = ""
        if expected == -1:
            hint = "\n    hint: some position never reaches another; the diameter is then -1"
        elif int(got) == expected + 1:
            hint = "\n    hint: count layers (edges), not positions"
        raise AssertionError(f"graph_diameter for {label}\n    yours:    {int(got)}\n    expected: {expected}{hint}")


def _window_mask(n, w):
    return _sliding_window(w).to_dense(n, n)[0]


@CHECKS.add("5.3", "graph_diameter", "paths windows and no diagonal", 1)
def _diameter_paths(fn):
    for n, w in [(1, 0), (2, 1), (5, 1), (17, 2), (40, 3)]:
        _diameter_case(fn, _window_mask(n, w), f"a sliding window n={n}, w={w}")
    # the diagonal is not needed: one position is at distance 0 from itself
    _diameter_case(fn, np.zeros((1, 1), dtype=bool), "one position with mask [[False]]")
    band = np.eye(9, k=1, dtype=bool) | np.eye(9, k=-1, dtype=bool)  # neighbours only, no diagonal
    _diameter_case(fn, band, "a band |i - j| == 1 without the diagonal, n=9")
    cycle = np.roll(np.eye(7, dtype=bool), 1, axis=1)  # i reads i + 1 (mod 7): a directed cycle
    _diameter_case(fn, cycle, "a directed cycle i -> i+1 (mod 7) without the diagonal")


@CHECKS.add("5.3", "graph_diameter", "direction and disconnection", 2)
def _diameter_directed(fn):
    n = 10
    causal = np.tril(np.ones((n, n), dtype=bool))
    _diameter_case(fn, causal, "a causal mask (j <= i), n=10")
    one_way = np.eye(n, dtype=bool) | np.eye(n, k=-1, dtype=bool)  # i reads i - 1 only
    _diameter_case(fn, one_way, "i reads i and i - 1 only, n=10")
    star = np.eye(n, dtype=bool)
    star[:, 0] = True  # everyone reads 0, 0 reads nobody else
    _diameter_case(fn, star, "every position reads position 0 only")
    star[0, :] = True  # now 0 reads everyone too: a global token
    _diameter_case(fn, star, "position 0 global (reads and is read by all)")


@CHECKS.add("5.3", "graph_diameter", "random and BigBird graphs", 1)
def _diameter_sparse(fn):
    for seed, n, density in [(20, 12, 0.12), (21, 30, 0.08), (22, 30, 0.02), (23, 60, 0.05)]:
        mask = _rng(seed).random((n, n)) < density
        _diameter_case(fn, mask, f"a random mask n={n}, density {density} (seed {seed})")
    for seed, nb, r, g in [(24, 64, 2, 0), (25, 96, 3, 1), (26, 128, 1, 0)]:
        mask = _bigbird(nb, 1, num_random_blocks=r, num_global_blocks=g, seed=seed).to_dense(nb, nb)[0]
        _diameter_case(fn, mask, f"a BigBird block graph nb={nb}, r={r}, global={g}")
    two_parts = np.zeros((8, 8), dtype=bool)
    two_parts[:4, :4] = two_parts[4:, 4:] = True
    _diameter_case(fn, two_parts, "two disconnected cliques of 4")


# ---------------------------------------------------------------- Exercise 5.4: random blocks

def _plan_properties(plan, nb, r, w, g, ctx):
    plan = as_array(plan, "sample_random_blocks")
    if plan.shape != (nb, r):
        raise AssertionError(f"sample_random_blocks for {ctx}: wrong shape\n    yours:    {plan.shape}\n"
                             f"    expected: {(nb, r)}")
    if plan.dtype.kind not in "iu":
        raise AssertionError(f"sample_random_blocks for {ctx}: expected an integer array, got dtype {plan.dtype}")
    blocks = np.arange(nb)
    is_global = (blocks < g) | (blocks >= nb - g)
    for a in range(nb):
        row = plan[a].tolist()
        where = f"sample_random_blocks for {ctx}, row {a}: {row}"
        if is_global[a]:
            if any(x != -1 for x in row):
                raise AssertionError(f"{where}: block {a} is global, its row must be all -1")
            continue
        candidates = set(blocks[~is_global & (np.abs(blocks - a) > w // 2)].tolist())
        take = min(r, len(candidates))
        valid, rest = row[:take], row[take:]
        if any(x == -1 for x in valid) or any(x != -1 for x in rest):
            raise AssertionError(f"{where}: expected {take} blocks first, then {r - take} slots of -1 "
                                 f"(the row has {len(candidates)} candidates)")
        bad = [x for x in valid if x not in candidates]
        if bad:
            kinds = []
            for x in bad:
                if not 0 <= x < nb:
                    kinds.append(f"{x} is not a block index")
                elif is_global[x]:
                    kinds.append(f"{x} is a global block")
                else:
                    kinds.append(f"{x} is in the window of block {a} (|{a} - {x}| <= {w // 2})")
            raise AssertionError(f"{where}: random blocks must avoid the window and the global blocks: "
                                 + "; ".join(kinds))
        if len(set(valid)) != len(valid):
            raise AssertionError(f"{where}: a block is drawn twice; draw without replacement")
    return plan


@CHECKS.add("5.4", "sample_random_blocks", "no collisions or repeats", 2)
def _sample_properties(fn):
    for seed, nb, r, w, g in [(0, 16, 3, 3, 1), (1, 10, 4, 5, 2), (2, 6, 3, 3, 1), (3, 9, 0, 3, 1),
                              (4, 12, 2, 3, 0), (5, 30, 5, 7, 3), (6, 3, 2, 3, 1)]:
        ctx = call_repr("sample_random_blocks", nb, r, seed=seed, window_blocks=w, global_blocks=g)
        _plan_properties(fn(nb, r, seed, w, g), nb, r, w, g, ctx)


@CHECKS.add("5.4", "sample_random_blocks", "reproducible and random", 1)
def _sample_reproducible(fn):
    nb, r = 20, 3
    a = as_array(fn(nb, r, 7), "sample_random_blocks")
    b = as_array(fn(nb, r, 7), "sample_random_blocks")
    if not np.array_equal(a, b):
        raise AssertionError("sample_random_blocks: the same seed (7) gave two different plans; draw from "
                             "np.random.default_rng(seed)")
    plans = [as_array(fn(nb, r, s), "sample_random_blocks") for s in range(8)]
    if all(np.array_equal(plans[0], p) for p in plans[1:]):
        raise AssertionError("sample_random_blocks: seeds 0..7 all gave the same plan; the blocks must be random")
    gen = fn(nb, r, np.random.default_rng(3))
    _plan_properties(gen, nb, r, 3, 1, "a np.random.Generator as seed")


@CHECKS.add("5.4", "sample_random_blocks", "uniform over candidates", 1)
def _sample_uniform(fn):
    # row 6 of 12 blocks (window 3, 1 global each end) has 7 candidates {1..4, 8..10}: each must
    # be drawn about equally often over many seeds (expected 2 * 400 / 7 ~ 114 times)
    nb, r, trials = 12, 2, 400
    counts = np.zeros(nb, dtype=np.int64)
    for s in range(trials):
        plan = _plan_properties(fn(nb, r, 1000 + s), nb, r, 3, 1, f"seed {1000 + s}")
        np.add.at(counts, plan[6], 1)
    cand = [1, 2, 3, 4, 8, 9, 10]
    expected = r * trials / len(cand)
    low, high = counts[cand].min(), counts[cand].max()
    if low < 0.5 * expected or high > 1.5 * expected:
        raise AssertionError(
            f"sample_random_blocks: over {trials} seeds, row 6 of {nb} blocks drew its candidates "
            f"{dict(zip(cand, counts[cand].tolist()))} times; each should be drawn about {expected:.0f} times "
            "(choose uniformly among all candidates)")


# ---------------------------------------------------------------- Exercise 5.5: block-table attention

def _table_expected(q, k, v, table, B):
    n = q.shape[-2]
    mask = np.repeat(np.repeat(np.asarray(table, dtype=bool), B, axis=0), B, axis=1)[:n, :n]
    return _ref.attention(q, k, v, mask=mask)


def _table_case(fn, seed, lead, n, d, d_v, table, B, logit_scale=1.0):
    rng = _rng(seed)
    q = rng.standard_normal(lead + (n, d)) * logit_scale
    k = rng.standard_normal(lead + (n, d))
    v = rng.standard_normal(lead + (n, d_v))
    ctx = call_repr("block_table_attention", q, k, v, table, block_size=B)
    assert_close(fn(q, k, v, table, B), _table_expected(q, k, v, table, B), what="block_table_attention",
                 atol=ATOL64 * max(1.0, logit_scale), context=ctx)


@CHECKS.add("5.5", "block_table_attention", "BigBird tables", 2)
def _table_bigbird(fn):
    for seed, n, B, r in [(30, 64, 8, 2), (31, 45, 4, 1), (32, 100, 8, 3)]:
        nb = -(-n // B)
        table = _bigbird(nb, 1, num_random_blocks=r, seed=seed).to_dense(nb, nb)[0]
        _table_case(fn, seed, (2, 3), n, 8, 5, table, B)


@CHECKS.add("5.5", "block_table_attention", "ragged blocks and empty rows", 1)
def _table_ragged_and_empty(fn):
    rng = _rng(40)
    for seed, n, B in [(41, 13, 4), (42, 30, 7), (43, 5, 8)]:
        nb = -(-n // B)
        table = rng.random((nb, nb)) < 0.5
        table[0] = False  # a query block with no key block: its queries output zeros
        _table_case(fn, seed, (2,), n, 4, 4, table, B)
    # an asymmetric table: rows are query blocks, columns key blocks
    table = np.array([[True, False, False], [True, True, False], [False, True, True]])
    _table_case(fn, 44, (), 11, 4, 3, table, 4)


@CHECKS.add("5.5", "block_table_attention", "large logits", 1)
def _table_large_logits(fn):
    nb = 6
    table = _bigbird(nb, 1, num_random_blocks=1, seed=5).to_dense(nb, nb)[0]
    _table_case(fn, 45, (2,), 44, 8, 4, table, 8, logit_scale=300.0)


@CHECKS.add("5.5", "block_table_attention", "extreme rows and float16 inputs", 1)
def _table_extreme(fn):
    for seed, n, B, d, dtype in [(46, 44, 8, 8, np.float64), (47, 30, 4, 16, np.float16)]:
        nb = -(-n // B)
        table = _bigbird(nb, 1, num_random_blocks=1, seed=seed).to_dense(nb, nb)[0]
        q, k, v = extreme_qkv(seed, (2,), n, n, d, 4, dtype)
        expected = _table_expected(*(a.astype(np.float64) for a in (q, k, v)), table, B)
        assert_close(fn(q, k, v, table, B), expected, what="block_table_attention", atol=ATOL64,
                     context=call_repr("block_table_attention", q, k, v, table, block_size=B) + EXTREME_NOTE)
