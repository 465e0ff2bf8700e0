"""Every pattern against an independent definition, its layout against its mask, and FlexAttention.

The reference masks below are written from the mathematical definitions with plain Python
loops, independently of the library's closed forms.
"""
import warnings

import numpy as np
import pytest
import torch

from sparse_core import patterns as P
from sparse_core.patterns.random_attention import hash32

LENGTHS = [(1, 1), (17, 17), (40, 40), (33, 50), (50, 29)]  # not multiples of the block sizes
BLOCKS = [1, 4, 16, 64]


def grid(n_q, n_k, H, rule):
    out = np.zeros((H, n_q, n_k), dtype=bool)
    for h in range(H):
        for i in range(n_q):
            for j in range(n_k):
                out[h, i, j] = bool(rule(h, i, j))
    return out


def _scores(seed, n_q, n_k, H=1):
    return np.random.default_rng(seed).standard_normal((H, n_q, n_k))


def _bigbird_rule(p):
    B, g, nb = p.block_size, p.num_global_blocks, -(-p.seq_len // p.block_size)

    def rule(h, i, j):
        a, b = i // B, j // B
        if a < g or a >= nb - g or b < g or b >= nb - g or abs(a - b) <= p.window_blocks // 2:
            return True
        return b in set(p.plan[h, a].tolist())
    return rule


TOPK_SCORES = _scores(3, 50, 50, 2)


def _topk_rule(k, causal):
    def rule(h, i, j):
        s = TOPK_SCORES[h, i].copy()
        cand = [c for c in range(s.size) if not causal or c <= i]
        ranked = sorted(cand, key=lambda c: (-s[c], c))[:k]
        return j in ranked
    return rule


# (id, pattern, heads, reference rule(h, i, j), lengths it is defined for)
CASES = [
    ("dense", P.dense(), 1, lambda h, i, j: True, None),
    ("causal", P.causal(), 1, lambda h, i, j: j <= i, None),
    ("window", P.sliding_window(3), 1, lambda h, i, j: abs(i - j) <= 3, None),
    ("window0", P.sliding_window(0), 1, lambda h, i, j: i == j, None),
    ("window-causal", P.sliding_window(5, causal=True), 1, lambda h, i, j: i - 5 <= j <= i, None),
    ("dilated", P.dilated(2, 3), 1, lambda h, i, j: any(j == i + k * 3 for k in range(-2, 3)), None),
    ("dilated-causal", P.dilated(3, 2, causal=True), 1, lambda h, i, j: any(j == i + k * 2 for k in range(-3, 1)), None),
    ("dilated-per-head", P.dilated(2, [1, 2, 4]), 3,
     lambda h, i, j: any(j == i + k * [1, 2, 4][h] for k in range(-2, 3)), None),
    ("block-local", P.block_local(6), 1, lambda h, i, j: i // 6 == j // 6, None),
    ("block-local-causal", P.block_local(6, causal=True), 1, lambda h, i, j: i // 6 == j // 6 and j <= i, None),
    ("strided", P.strided(4), 1, lambda h, i, j: j <= i and (i - j < 4 or (i - j) % 4 == 0), None),
    ("strided-bidir", P.strided(5, causal=False), 1, lambda h, i, j: abs(i - j) < 5 or (i - j) % 5 == 0, None),
    ("strided-factorized", P.strided(4, factorized=True), 2,
     lambda h, i, j: j <= i and ((i - j < 4) if h == 0 else ((i - j) % 4 == 0)), None),
    ("fixed", P.fixed(6, 2), 1, lambda h, i, j: j <= i and (i // 6 == j // 6 or j % 6 >= 4), None),
    ("fixed-bidir", P.fixed(5, 1, causal=False), 1, lambda h, i, j: i // 5 == j // 5 or j % 5 == 4, None),
    ("fixed-patterns", P.fixed(8, 2, num_patterns=3), 3,
     lambda h, i, j: j <= i and (i // 8 == j // 8 or 8 - 2 * (h + 1) <= j % 8 < 8 - 2 * h), None),
    ("fixed-factorized", P.fixed(6, 2, factorized=True), 2,
     lambda h, i, j: j <= i and ((i // 6 == j // 6) if h == 0 else (j % 6 >= 4)), None),
    ("axial", P.axial(7, 8), 1, lambda h, i, j: i // 8 == j // 8 or i % 8 == j % 8, ("max", 56)),
    ("axial-causal-factorized", P.axial(7, 8, causal=True, factorized=True), 2,
     lambda h, i, j: j <= i and ((i // 8 == j // 8) if h == 0 else (i % 8 == j % 8)), ("max", 56)),
    ("global", P.global_tokens([0, 5, 16]), 1, lambda h, i, j: i in (0, 5, 16) or j in (0, 5, 16), ("min", 17)),
    ("random", P.random_pattern(0.3, seed=7), 2,
     lambda h, i, j: hash32(7, h, i, j) < round(0.3 * 2**32), None),
    ("longformer", P.longformer(2, [0, 9]), 1, lambda h, i, j: abs(i - j) <= 2 or i in (0, 9) or j in (0, 9), ("min", 10)),
    ("longformer-causal", P.longformer(3, [1], causal=True), 1,
     lambda h, i, j: j <= i and (abs(i - j) <= 3 or i == 1 or j == 1), ("min", 2)),
    ("topk", P.topk(TOPK_SCORES, 4), 2, _topk_rule(4, False), ("max", 50)),
    ("topk-causal", P.topk(TOPK_SCORES, 3, causal=True), 2, _topk_rule(3, True), ("max", 50)),
    ("union", P.sliding_window(1) | P.global_tokens([3]) | P.random_pattern(0.1, seed=1), 1,
     lambda h, i, j: abs(i - j) <= 1 or 3 in (i, j) or hash32(1, h, i, j) < round(0.1 * 2**32), ("min", 4)),
    ("intersection", P.dilated(4, 2) & P.block_local(7), 1,
     lambda h, i, j: (i - j) % 2 == 0 and abs(i - j) <= 8 and i // 7 == j // 7, None),
    ("restrict-causal", P.axial(5, 10).restrict_causal(), 1,
     lambda h, i, j: j <= i and (i // 10 == j // 10 or i % 10 == j % 10), ("max", 50)),
    ("per-head", P.per_head([P.causal(), P.sliding_window(2), P.global_tokens([1])]), 3,
     lambda h, i, j: [j <= i, abs(i - j) <= 2, 1 in (i, j)][h], ("min", 2)),
]

BIGBIRD = P.bigbird(50, 4, num_random_blocks=2, n_heads=2, seed=3)
CASES.append(("bigbird", BIGBIRD, 2, _bigbird_rule(BIGBIRD), ("max", 50)))
BIGBIRD_PLAN = P.bigbird(48, 8, plan=np.array([[[-1], [4], [5], [0], [1], [-1]]]))
CASES.append(("bigbird-plan", BIGBIRD_PLAN, 1, _bigbird_rule(BIGBIRD_PLAN), ("max", 48)))


def _lengths(limit):
    """All LENGTHS, or for patterns defined on a range: ("max", m) keeps n <= m (and adds m x m),
    ("min", m) keeps n >= m (global indices below m must exist)."""
    if limit is None:
        return LENGTHS
    kind, m = limit
    if kind == "max":
        return [(a, b) for a, b in LENGTHS if max(a, b) <= m] + [(m, m)]
    return [(a, b) for a, b in LENGTHS if min(a, b) >= m] + [(m, m)]


@pytest.mark.parametrize("name,pattern,H,rule,limit", CASES, ids=[c[0] for c in CASES])
def test_to_dense_equals_definition(name, pattern, H, rule, limit):
    for n_q, n_k in _lengths(limit):
        np.testing.assert_array_equal(pattern.to_dense(n_q, n_k, H), grid(n_q, n_k, H, rule),
                                      err_msg=f"{name} n_q={n_q} n_k={n_k}")


@pytest.mark.parametrize("name,pattern,H,rule,limit", CASES, ids=[c[0] for c in CASES])
def test_layout_covers_exactly_the_mask(name, pattern, H, rule, limit):
    for n_q, n_k in _lengths(limit):
        dense = pattern.to_dense(n_q, n_k, H)
        for B in BLOCKS:
            lay = pattern.to_layout(n_q, n_k, B, H)
            assert lay.n_heads == H and lay.indptr.shape == (H, -(-n_q // B) + 1)
            bm = lay.to_block_mask()
            for h in range(H):
                for a in range(lay.n_qb):
                    kept, _ = lay.row(h, a)
                    assert np.all(np.diff(kept) > 0), "indices sorted and unique within a row"
                    for b in range(lay.n_kb):
                        tile = dense[h, a * B:(a + 1) * B, b * B:(b + 1) * B]
                        expected = 0 if not tile.any() else (2 if tile.all() else 1)
                        assert bm[h, a, b] == expected, f"{name} B={B} head {h} block ({a},{b})"
            np.testing.assert_array_equal(lay.to_dense(), dense)
            assert lay.kept_pairs() == dense.sum()
            assert lay.computed_pairs() >= lay.kept_pairs()
            assert lay.flops(8) == 2 * 16 * lay.computed_pairs()


@pytest.mark.parametrize("name,pattern,H,rule,limit", CASES, ids=[c[0] for c in CASES])
def test_mask_mod_through_flex_attention(name, pattern, H, rule, limit):
    from torch.nn.attention.flex_attention import create_block_mask, create_mask

    n = limit[1] if limit and limit[0] == "max" else 48
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = create_mask(pattern.mask_mod, 1, H, n, n, device="cpu")[0].numpy()
        np.testing.assert_array_equal(got, pattern.to_dense(n, n, H))
        if n % 16 == 0:  # FlexAttention's block classification must agree with ours
            bm = create_block_mask(pattern.mask_mod, 1, H, n, n, device="cpu", BLOCK_SIZE=16)
            ours = pattern.to_layout(n, n, 16, H).to_block_mask()
            np.testing.assert_array_equal(bm.kv_num_blocks[0].numpy(), (ours == 1).sum(-1))
            full = bm.full_kv_num_blocks[0].numpy() if bm.full_kv_num_blocks is not None else 0
            np.testing.assert_array_equal(full, (ours == 2).sum(-1))


def test_mask_mod_elementwise_on_numpy_ints_and_tensors():
    p = P.longformer(2, [0])
    assert bool(p.mask_mod(0, 0, 5, 0)) and not bool(p.mask_mod(0, 0, 5, 9))
    i = torch.arange(6)[:, None]
    j = torch.arange(6)[None, :]
    t = p.mask_mod(0, torch.tensor(0), i, j)
    assert isinstance(t, torch.Tensor) and t.dtype == torch.bool and t.shape == (6, 6)
    np.testing.assert_array_equal(t.numpy(), p.to_dense(6, 6)[0])


def test_random_pattern_is_seeded_per_head_and_has_its_density():
    a = P.random_pattern(0.25, seed=1).to_dense(200, 200, 2)
    b = P.random_pattern(0.25, seed=1).to_dense(200, 200, 2)
    c = P.random_pattern(0.25, seed=2).to_dense(200, 200, 2)
    np.testing.assert_array_equal(a, b)
    assert (a != c).any() and (a[0] != a[1]).any()
    assert abs(a.mean() - 0.25) < 0.01


def test_bigbird_random_blocks_avoid_window_and_globals_without_collisions():
    p = P.bigbird(64 * 20, 64, num_random_blocks=3, n_heads=4, seed=0)
    nb = 20
    for h in range(4):
        for a in range(1, nb - 1):
            row = p.plan[h, a]
            assert len(set(row.tolist())) == 3
            assert all(1 <= b < nb - 1 and abs(b - a) > 1 for b in row)
        assert (p.plan[h, 0] == -1).all() and (p.plan[h, nb - 1] == -1).all()
    assert (p.plan[0] != p.plan[1]).any()


def test_layout_of_65k_tokens_is_fast_and_small():
    import time
    import tracemalloc

    p = P.longformer(256, [0, 1, 2, 3])
    tracemalloc.start()
    t0 = time.perf_counter()
    lay = p.to_layout(65536, 65536, 128)
    elapsed = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 64 * 2**20, "layout building must not make n x n arrays (4 GiB as bool)"
    assert lay.nnz < 0.02 * lay.n_qb * lay.n_kb
    assert elapsed < 30  # a hang guard, not a benchmark (see python -m sparse_core bench layouts)


def test_repr_is_readable():
    assert repr(P.sliding_window(4, causal=True)) == "sliding_window(window=4, causal=True)"
    assert repr(P.dilated(2, [1, 2])) == "dilated(window=2, dilation=[1, 2], causal=False)"
    assert "global_tokens" in repr(P.sliding_window(1) | P.global_tokens([0]))
    lay = P.causal().to_layout(100, 100, 32)
    assert repr(lay).startswith("BlockLayout(n_q=100, n_k=100, block_size=32, n_heads=1, kept=10/16 blocks")
    assert "%" in P.causal().describe(256, 64)


def test_transpose_lists_the_same_blocks_by_key():
    p = P.bigbird(96, 8, num_random_blocks=2, n_heads=2)
    lay = p.to_layout(96, 96, 8, 2)
    tr = lay.transpose()
    np.testing.assert_array_equal(tr.to_block_mask(), np.swapaxes(lay.to_block_mask(), 1, 2))


def test_from_block_mask_round_trip():
    lay = P.strided(8).to_layout(70, 70, 16)
    again = P.BlockLayout.from_block_mask(lay.to_block_mask(), 70, 70, 16, pattern=lay)  # a layout has a mask_mod too
    assert again == lay


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: P.sliding_window(-1), "`window` must be a non-negative integer"),
        (lambda: P.sliding_window(2.5), "`window` must be a non-negative integer"),
        (lambda: P.dilated(2, 0), "`dilation` must be a positive integer"),
        (lambda: P.dilated(2, []), "`dilation` must not be empty"),
        (lambda: P.block_local(0), "`block` must be a positive integer"),
        (lambda: P.strided(0), "`stride` must be a positive integer"),
        (lambda: P.fixed(4, 3, num_patterns=2), "do not fit in a window"),
        (lambda: P.axial(0, 4), "`height` must be a positive integer"),
        (lambda: P.global_tokens([-1]), "`global_indices` must be non-negative"),
        (lambda: P.global_tokens([[0]]), "`global_indices` must be a 1-D list"),
        (lambda: P.random_pattern(1.5), "`density` must be a number in \\[0, 1\\]"),
        (lambda: P.bigbird(64, 16, num_global_blocks=3), "`num_global_blocks`=3 needs at least 6 blocks"),
        (lambda: P.bigbird(64, 16, plan=np.zeros((1, 4, 1), int) + 9), "`plan` entries must be key block indices"),
        (lambda: P.bigbird(64, 16, plan=np.zeros((2, 4, 1), int)), "`plan` must be an integer array"),
        (lambda: P.topk(np.zeros((3, 3)), 0), "`k` must be a positive integer"),
        (lambda: P.topk(np.full((3, 3), np.nan), 1), "`scores` contains NaN"),
        (lambda: P.causal().to_layout(10, 10, 0), "`block_size` must be a positive integer"),
        (lambda: P.causal().to_dense(-1, 4), "`n_q` must be a non-negative integer"),
        (lambda: P.dilated(1, [1, 2]).to_dense(8, 8, n_heads=3), "`n_heads`=3 does not match"),
        (lambda: P.axial(4, 4).to_dense(17, 17), "covers 16 tokens"),
        (lambda: P.bigbird(64, 16, 0).to_dense(80, 80), "defined for at most 64 queries"),
        (lambda: P.bigbird(64, 16, num_random_blocks=10), r"`num_random_blocks`=10 cannot be placed.*seq_len >= 240"),
        (lambda: P.bigbird(200, 16, num_random_blocks=9), r"num_random_blocks <= 8 or seq_len >= 224"),
        (lambda: P.topk(np.zeros((4, 4)), 1).to_dense(5, 5), "covers 4 queries x 4 keys"),
    ],
)
def test_bad_arguments_raise_clear_value_errors(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_combining_different_head_counts_is_an_error():
    with pytest.raises(ValueError, match="different per-head counts"):
        P.dilated(1, [1, 2]) | P.fixed(8, 2, num_patterns=3)
    with pytest.raises(TypeError, match="Pattern objects"):
        P.union(P.causal(), "window")


def test_random_pattern_same_mask_for_int32_and_int64_indices():
    p = P.random_pattern(0.3, seed=5)
    i = torch.arange(64, dtype=torch.int32)[:, None]
    j = torch.arange(64, dtype=torch.int32)[None, :]
    got = p.mask_mod(0, torch.tensor(1, dtype=torch.int32), i, j)
    np.testing.assert_array_equal(got.numpy(), p.to_dense(64, 64, 2)[1])


def test_global_indices_beyond_the_sequence_apply_once_it_reaches_them():
    far = P.global_tokens([0, 20])
    np.testing.assert_array_equal(far.to_dense(16, 16), P.global_tokens([0]).to_dense(16, 16))
    full = far.to_dense(24, 24)[0]
    assert full[20].all() and full[:, 20].all() and not full[5, 7]
    np.testing.assert_array_equal(far.to_layout(16, 16, 4).to_dense(), P.global_tokens([0]).to_layout(16, 16, 4).to_dense())
    lf = P.longformer(3, [0, 20])
    np.testing.assert_array_equal(lf.to_dense(9, 9), P.longformer(3, [0]).to_dense(9, 9))


@pytest.mark.parametrize("seq_len,block,g,w", [(64, 16, 1, 3), (200, 16, 1, 3), (160, 8, 2, 5), (90, 10, 0, 1),
                                             (96, 8, 1, 4), (48, 16, 2, 3)])
def test_max_random_blocks_is_what_the_fullest_draw_places_in_its_poorest_row(seq_len, block, g, w):
    nb = -(-seq_len // block)
    plan = P.sample_plan(nb, nb, g, w)  # ask for more than fits: every row takes all its candidates
    filled = (plan[0, g:nb - g] >= 0).sum(-1)
    expected = int(filled.min()) if filled.size else nb
    assert P.max_random_blocks(seq_len, block, g, w) == expected
    if filled.size:
        P.bigbird(seq_len, block, expected, g, w)  # exactly what fits is accepted
        with pytest.raises(ValueError, match=f"`num_random_blocks`={expected + 1} cannot be placed"):
            P.bigbird(seq_len, block, expected + 1, g, w)
