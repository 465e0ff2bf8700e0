"""Pattern pictures and the attention graph: reach/hops against an independent BFS, headless plots.

The reference below walks the dense mask with a plain breadth-first search (edge j -> i when
query i may attend key j), independently of the bit-parallel implementation in
``sparse_core.patterns.plots``.
"""
import math
from collections import deque

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from sparse_core import patterns as P  # noqa: E402
from sparse_core.patterns import plots  # noqa: E402

N = 40


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def bfs_hops(mask: np.ndarray) -> np.ndarray:
    """Fewest layers from j to i over edges j -> i (mask[i, j]); 0 on the diagonal, -1 never."""
    n = mask.shape[0]
    out = np.full((n, n), -1, dtype=np.int64)
    targets = [[i for i in range(n) if mask[i, k]] for k in range(n)]  # who reads key k
    for j in range(n):
        out[j, j] = 0
        queue = deque([j])
        while queue:
            k = queue.popleft()
            for i in targets[k]:
                if out[i, j] < 0:
                    out[i, j] = out[k, j] + 1
                    queue.append(i)
    return out


def reach_by_products(masks, L):
    """R_L = A_L o ... o A_1 with A = mask | I, by integer matrix products (layer l uses masks[(l-1) % len])."""
    n = masks[0].shape[0]
    R = np.eye(n, dtype=np.int64)
    for layer in range(L):
        A = (masks[layer % len(masks)] | np.eye(n, dtype=bool)).astype(np.int64)
        R = ((A @ R) > 0).astype(np.int64)
    return R.astype(bool)


# (id, pattern, heads to build, head, n)
GRAPH_CASES = [
    ("window", P.sliding_window(3), None, 0, N),
    ("window-causal", P.sliding_window(2, causal=True), None, 0, N),
    ("window-130", P.sliding_window(2), None, 0, 130),  # several 64-bit words per row
    ("strided", P.strided(5), None, 0, N),
    ("strided-factorized-h0", P.strided(4, factorized=True), None, 0, N),
    ("strided-factorized-h1", P.strided(4, factorized=True), None, 1, N),
    ("fixed", P.fixed(6, 2), None, 0, N),
    ("dilated", P.dilated(1, 3), None, 0, N),
    ("dilated-per-head", P.dilated(2, [1, 4]), None, 1, N),
    ("axial", P.axial(5, 8), None, 0, N),
    ("longformer", P.longformer(1, [0]), None, 0, N),
    ("bigbird", P.bigbird(N, 4, num_random_blocks=1), None, 0, N),
    ("dense", P.dense(), None, 0, N),  # dense adjacency: float matmul path
    ("random-sparse", P.random_pattern(0.04, seed=1), 2, 1, N),
    ("random-dense-130", P.random_pattern(0.3, seed=2), None, 0, 130),  # matmul path, several words
    ("block-local", P.block_local(7), None, 0, N),  # never connects different blocks
]


@pytest.mark.parametrize("name,pattern,H,head,n", GRAPH_CASES, ids=[c[0] for c in GRAPH_CASES])
def test_hops_match_breadth_first_search(name, pattern, H, head, n):
    H = H or pattern.n_heads or 1
    mask = pattern.to_dense(n, n, H)[head]
    expected = bfs_hops(mask)
    nh = None if pattern.n_heads else H  # patterns without per-head parameters take any head count
    got = plots.hops(pattern, n, head=head, n_heads=nh)
    assert got.shape == (n, n)
    np.testing.assert_array_equal(got, expected)
    for L in (0, 1, 2, 5):
        np.testing.assert_array_equal(plots.reach(pattern, n, L, head=head, n_heads=nh),
                                      reach_by_products([mask], L), err_msg=f"{name} L={L}")
        limited = plots.hops(pattern, n, head=head, max_layers=L, n_heads=nh)
        np.testing.assert_array_equal(limited, np.where(expected <= L, expected, -1))


def test_symmetric_window_needs_ceil_distance_over_w_layers():
    i, j = np.indices((N, N))
    for w in (1, 2, 3, 7):
        np.testing.assert_array_equal(plots.hops(P.sliding_window(w), N), np.ceil(np.abs(i - j) / w).astype(int))


def test_causal_window_never_reaches_the_future():
    i, j = np.indices((N, N))
    for w in (1, 3):
        h = plots.hops(P.sliding_window(w, causal=True), N)
        assert (h[j > i] == -1).all()
        np.testing.assert_array_equal(h[j <= i], np.ceil((i - j)[j <= i] / w).astype(int))
        r = plots.reach(P.sliding_window(w, causal=True), N, 100)
        assert not r[j > i].any() and r[j <= i].all()


@pytest.mark.parametrize("stride", [2, 3, 5, 6])
def test_strided_reaches_every_earlier_token_within_two_layers(stride):
    i, j = np.indices((N, N))
    h = plots.hops(P.strided(stride), N)
    assert (h[j <= i] >= 0).all() and (h[j <= i] <= 2).all()
    assert (h[j > i] == -1).all()
    assert plots.reach(P.strided(stride), N, 2)[j <= i].all()
    # the factorized version needs both heads in a layer ("all") to do the same
    hf = plots.hops(P.strided(stride, factorized=True), N, head="all")
    assert (hf[j <= i] >= 0).all() and (hf[j <= i] <= 2).all()


def test_dense_is_one_hop():
    h = plots.hops(P.dense(), N)
    np.testing.assert_array_equal(h, 1 - np.eye(N, dtype=int))


def test_union_of_heads_matches_bfs_on_the_union():
    p = P.dilated(1, [1, 5])
    union = p.to_dense(N, N, 2).any(axis=0)
    np.testing.assert_array_equal(plots.hops(p, N, head="all"), bfs_hops(union))


def test_schedule_of_doubling_dilations_grows_exponentially():
    schedule = [P.dilated(1, 2 ** k, causal=True) for k in range(6)]
    np.testing.assert_array_equal(plots.receptive_field(schedule, 128, 6), [2, 4, 8, 16, 32, 64])
    masks = [p.to_dense(64, 64)[0] for p in schedule]
    for L in (1, 3, 7):
        np.testing.assert_array_equal(plots.reach(schedule, 64, L), reach_by_products(masks, L))


def test_receptive_field_counts_tokens_that_reach_the_position():
    for p in (P.sliding_window(2), P.strided(4), P.longformer(1, [3]), P.random_pattern(0.05, seed=4)):
        field = plots.receptive_field(p, N, 6)
        rows = [plots.reach(p, N, L)[N - 1].sum() for L in range(1, 7)]
        np.testing.assert_array_equal(field, rows, err_msg=repr(p))
        field5 = plots.receptive_field(p, N, 6, position=5)
        np.testing.assert_array_equal(field5, [plots.reach(p, N, L)[5].sum() for L in range(1, 7)])
    # long sequences go row by row, no n x n arrays
    w, n = 64, 8192
    np.testing.assert_array_equal(plots.receptive_field(P.sliding_window(w, causal=True), n, 4),
                                  [min(n, 1 + L * w) for L in range(1, 5)])


def test_hops_of_1024_tokens_is_fast_and_exact():
    import time

    t0 = time.perf_counter()
    h = plots.hops(P.sliding_window(1), 1024)  # 1023 layers until the fixed point
    elapsed = time.perf_counter() - t0
    i, j = np.indices((1024, 1024))
    np.testing.assert_array_equal(h, np.abs(i - j))
    assert elapsed < 30  # a hang guard, not a benchmark


# ---------------------------------------------------------------------------- plots

def _tick_values(axis):
    return [t for t in axis.get_majorticklocs()]


def test_plot_mask_draws_the_mask_headless():
    p = P.strided(4)
    ax = plots.plot_mask(p, 16)
    assert ax.get_xlabel() == "key index j" and ax.get_ylabel() == "query index i"
    assert repr(p).split("(")[0] in ax.get_title() and "% of pairs" in ax.get_title()
    image = ax.get_images()[0].get_array()
    np.testing.assert_array_equal(np.asarray(image, dtype=bool), p.to_dense(16, 16)[0])
    assert all(float(t).is_integer() for t in _tick_values(ax.xaxis))
    assert set(range(16)) <= set(int(t) for t in _tick_values(ax.yaxis))

    union = plots.plot_mask(P.strided(4, factorized=True), 16, head="all")
    np.testing.assert_array_equal(np.asarray(union.get_images()[0].get_array(), dtype=bool), p.to_dense(16, 16)[0])
    assert "union of 2 heads" in union.get_title()

    fig, given = plt.subplots()
    out = plots.plot_mask(P.dilated(1, [1, 3]), 20, n_k=30, head=1, ax=given, title="mine")
    assert out is given and out.get_title() == "mine"
    np.testing.assert_array_equal(np.asarray(out.get_images()[0].get_array(), dtype=bool),
                                  P.dilated(1, [1, 3]).to_dense(20, 30, 2)[1])


def test_plot_layout_from_pattern_and_from_layout():
    p = P.longformer(5, [0, 1])
    ax = plots.plot_layout(p, 100, 16)
    lay = p.to_layout(100, 100, 16)
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert texts[0] == f"full ({lay.n_full})"
    assert texts[1].startswith(f"partial ({lay.n_partial})")
    assert texts[2] == f"skipped ({lay.n_qb * lay.n_kb - lay.nnz})"
    title = ax.get_title()
    assert "longformer" in title and f"{lay.nnz}/{lay.n_qb * lay.n_kb} blocks" in title
    assert f"{100 * lay.density:.1f}% of pairs" in title
    assert ax.get_xlabel() == "key index j" and ax.get_ylabel() == "query index i"
    assert len(ax.get_images()) == 2  # blocks + faint token mask inside partial blocks
    assert ax.get_xlim() == (0, 100) and ax.get_ylim() == (100, 0)

    bb = P.bigbird(256, 16, n_heads=2)
    layout = bb.to_layout(256, 256, 32, 2)
    ax2 = plots.plot_layout(layout, head=1, show_tokens=False)
    assert len(ax2.get_images()) == 1 and "head 1" in ax2.get_title()
    assert f"{np.count_nonzero(layout.to_block_mask()[1])}/64 blocks" in ax2.get_title()


def test_plot_reach_and_plot_hops():
    items = [P.sliding_window(2, causal=True), P.strided(8), [P.dilated(1, 2 ** k, causal=True) for k in range(5)]]
    ax = plots.plot_reach(items, 64, 6, labels=["window", "strided", "doubling"])
    assert ax.get_xlabel() == "layers L" and "fraction" in ax.get_ylabel()
    assert "n=64" in ax.get_title()
    lines = [line for line in ax.get_lines() if line.get_label() in ("window", "strided", "doubling")]
    assert len(lines) == 3
    for line, item in zip(lines, items):
        masks = [p.to_dense(64, 64)[0] for p in (item if isinstance(item, list) else [item])]
        expected = [reach_by_products(masks, L).mean() for L in range(7)]
        np.testing.assert_allclose(line.get_ydata(), expected)
    assert lines[1].get_ydata()[2] == pytest.approx(65 / 128)  # strided: all of j <= i in 2 layers

    ax = plots.plot_reach(P.sliding_window(1), 32, 3, logy=True)
    assert ax.get_yscale() == "log" and ax.get_legend() is not None

    ax = plots.plot_hops(P.sliding_window(3, causal=True), 30)
    assert ax.get_title().startswith("hops: sliding_window")
    data = ax.get_images()[0].get_array()
    assert np.ma.is_masked(data) and data.mask.sum() == 30 * 29 // 2  # the future never reaches


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: plots.plot_mask(P.sliding_window(1), 8, head=1), "`head`=1 is out of range"),
        (lambda: plots.plot_mask(P.dilated(1, [1, 2]), 8, head=2), "`head`=2 is out of range"),
        (lambda: plots.plot_mask(P.sliding_window(1), 5000), "too large"),
        (lambda: plots.plot_mask(P.sliding_window(1), 8, n_k=10_000), "`n_k`=10000 is too large"),
        (lambda: plots.plot_mask(P.sliding_window(1), 0), "`n` must be a positive integer"),
        (lambda: plots.plot_mask("window", 8), "must be a Pattern"),
        (lambda: plots.plot_mask(P.sliding_window(1), 8, head="first"), "head index or \"all\""),
        (lambda: plots.plot_layout(P.sliding_window(1), 8, 4, head="all"), "shows one head"),
        (lambda: plots.plot_layout(P.sliding_window(1)), "needs `n` and `block_size`"),
        (lambda: plots.plot_layout(P.causal().to_layout(16, 16, 4), n=20), "conflicts with the layout"),
        (lambda: plots.plot_layout(P.causal().to_layout(16, 16, 4), head=1), "integer in 0..0"),
        (lambda: plots.plot_layout(P.causal(), 1 << 20, 16), "too many to draw"),
        (lambda: plots.plot_layout(P.causal(), 16, 4, show_tokens="yes"), "`show_tokens`"),
        (lambda: plots.plot_layout(np.zeros((4, 4)), 16, 4), "BlockLayout or a Pattern"),
        (lambda: plots.hops(P.sliding_window(1), 4097), "too large"),
        (lambda: plots.hops(P.sliding_window(1), 8, max_layers=-1), "`max_layers`"),
        (lambda: plots.hops([], 8), "non-empty list"),
        (lambda: plots.hops([P.causal(), "x"], 8), "must be a Pattern"),
        (lambda: plots.reach(P.sliding_window(1), 8, -1), "`layers` must be a non-negative integer"),
        (lambda: plots.receptive_field(P.sliding_window(1), 8, 2, position=8), "`position`=8 is out of range"),
        (lambda: plots.receptive_field(P.sliding_window(1), 8, 0), "`layers` must be a positive integer"),
        (lambda: plots.receptive_field(P.sliding_window(1), 100_000, 2), "too large"),
        (lambda: plots.plot_reach([], 8, 2), "non-empty list"),
        (lambda: plots.plot_reach([P.causal()], 8, 2, labels=["a", "b"]), "`labels` has 2 entries"),
        (lambda: plots.plot_reach(P.causal(), 8, 0), "`max_layers` must be a positive integer"),
        (lambda: plots.plot_hops(P.sliding_window(1), 9000), "too large"),
        (lambda: plots.plot_hops(P.axial(2, 2), 8), "covers 4 tokens"),
    ],
)
def test_bad_arguments_raise_value_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()
    assert not plt.get_fignums(), "no figure is left open by a call that fails its checks"


def test_module_is_headless_and_never_shows(monkeypatch):
    monkeypatch.setattr(plt, "show", lambda *a, **k: pytest.fail("plt.show() must not be called"))
    plots.plot_mask(P.causal(), 8)
    plots.plot_layout(P.causal(), 8, 4)
    plots.plot_reach(P.causal(), 8, 2)
    plots.plot_hops(P.causal(), 8)
    assert math.isclose(plots.reach(P.causal(), 8, 1).mean(), 36 / 64)
