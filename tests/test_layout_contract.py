"""The layout is the whole contract between patterns and kernels: it carries the token masks of its
partial blocks, survives pickling without its pattern, and its kernel-ready form is cached outside it."""
import pickle

import numpy as np
import pytest
import torch

from sparse_core import patterns as P
from sparse_core.attention.ops import block_sparse_attention
from sparse_core.attention.reference import attention
from sparse_core.kernels import tables as T

CASES = [  # (pattern, n_q, n_k, block_size, heads): odd lengths, blocks that do not divide them
    (P.sliding_window(5, causal=True), 75, 75, 8, 2),
    (P.strided(6), 61, 61, 16, 2),
    (P.fixed(8, 2, num_patterns=2), 70, 70, 8, 2),
    (P.axial(9, 9), 81, 81, 10, 2),
    (P.random_pattern(0.2, seed=3), 53, 47, 8, 3),
    (P.longformer(3, [1, 50]), 67, 67, 16, 2),
    (P.block_local(10), 45, 45, 7, 1),
    (P.per_head([P.strided(4), P.sliding_window(3), P.global_tokens([2])]), 39, 39, 8, 3),
    (P.bigbird(75, 8, num_random_blocks=2, n_heads=2), 75, 75, 12, 2),
    (P.sliding_window(2) & P.global_tokens([3, 4, 70]), 73, 73, 8, 2),
]


@pytest.mark.parametrize("pattern,n_q,n_k,B,H", CASES, ids=[repr(c[0])[:30] for c in CASES])
def test_layout_carries_the_token_masks_of_its_partial_blocks(pattern, n_q, n_k, B, H):
    lay = pattern.to_layout(n_q, n_k, B, H)
    dense = pattern.to_dense(n_q, n_k, H)
    assert lay.n_partial > 0
    tiles = lay.tiles()
    assert tiles.shape == (lay.n_partial, B, B) and tiles.dtype == bool
    part = np.flatnonzero(~lay.full)
    heads, rows = lay.block_heads(), lay.block_rows()
    for t, p in enumerate(part):
        h, r0, c0 = heads[p], rows[p] * B, int(lay.indices[p]) * B
        want = np.zeros((B, B), dtype=bool)
        block = dense[h, r0:r0 + B, c0:c0 + B]
        want[: block.shape[0], : block.shape[1]] = block
        np.testing.assert_array_equal(tiles[t], want, err_msg=f"head {h}, block ({rows[p]}, {lay.indices[p]})")
        assert 0 < block.sum() < block.size  # really partial
    np.testing.assert_array_equal(lay.to_dense(), dense)
    i, j = np.arange(n_q)[:, None], np.arange(n_k)[None, :]
    for h in range(H):
        np.testing.assert_array_equal(lay.mask_mod(0, h, i, j), dense[h])
    assert lay.kept_pairs() == int(dense.sum())
    np.testing.assert_array_equal(lay.transpose().to_dense(), dense.transpose(0, 2, 1))


def test_layout_holds_no_pattern_and_shares_equal_tiles():
    lay = P.strided(16).to_layout(512, 512, 32)
    assert "pattern" not in lay.__dict__ and not any(isinstance(v, P.Pattern) for v in vars(lay).values())
    assert lay.n_tiles < lay.n_partial  # blocks on one diagonal of the strided columns share a tile
    np.testing.assert_array_equal(lay.to_dense(), P.strided(16).to_dense(512, 512))


def _torch_oracle(q, k, v, mask, scale):
    s = (q @ k.transpose(-1, -2)) * scale
    s = s.masked_fill(~mask, float("-inf"))
    w = torch.softmax(s, dim=-1).nan_to_num(0.0)
    return w @ v


def test_pickled_layout_runs_the_kernels_without_its_pattern():
    pattern = P.union(P.sliding_window(6, causal=True), P.random_pattern(0.1, seed=5))
    n, B, H, d = 77, 16, 2, 8
    data = pickle.dumps(pattern.to_layout(n, n, B, H))
    assert b"RandomPattern" not in data and b"patterns.base" not in data
    lay = pickle.loads(data)
    assert lay.n_partial > 0
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((2, H, n, d)) for _ in range(3))
    mask = pattern.to_dense(n, n, H)
    out = block_sparse_attention(q, k, v, lay)
    np.testing.assert_allclose(out, attention(q, k, v, mask=mask[None]), atol=1e-12)
    qt, kt, vt = (torch.tensor(x, requires_grad=True) for x in (q, k, v))
    block_sparse_attention(qt, kt, vt, lay).pow(2).sum().backward()
    qr, kr, vr = (torch.tensor(x, requires_grad=True) for x in (q, k, v))
    _torch_oracle(qr, kr, vr, torch.from_numpy(mask), d ** -0.5).pow(2).sum().backward()
    for a, b in ((qt, qr), (kt, kr), (vt, vr)):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-10, rtol=1e-10)


def test_kernel_ready_cache_is_keyed_by_the_layout():
    pattern = P.sliding_window(5, causal=True)
    a = pattern.to_layout(60, 60, 8)
    t = T.kernel_tables(a)
    assert T.kernel_tables(a) is t
    assert not any(isinstance(v, dict) for v in vars(a).values())  # nothing cached inside the layout
    b = pattern.to_layout(70, 70, 8)
    assert T.kernel_tables(b) is not t and T.kernel_tables(b)["indptr"].shape != t["indptr"].shape
    c = P.sliding_window(4, causal=True).to_layout(60, 60, 8)
    assert T.kernel_tables(c) is not t
    copy = pickle.loads(pickle.dumps(a))  # equal content: the same tables
    assert copy == a and hash(copy) == hash(a) and T.kernel_tables(copy) is t
    # the tables are right: tile t of partial block p is its token mask
    part = np.flatnonzero(~a.full)
    np.testing.assert_array_equal(t["tiles"][t["tile_of"][part]].astype(bool), a.tiles())
    assert (t["tile_of"][a.full] == -1).all()
    calls = []

    def to_device(x, dev):
        calls.append(dev)
        return ("copy", dev, x)

    d1 = T.device_tables(a, "dev0", to_device)
    assert T.device_tables(a, "dev0", to_device) is d1 and len(calls) == len(T.TABLE_KEYS)
    assert T.device_tables(a, "dev1", to_device) is not d1 and len(calls) == 2 * len(T.TABLE_KEYS)


def test_cache_entry_goes_with_its_layout():
    import gc

    lay = P.random_pattern(0.3, seed=9).to_layout(40, 40, 8)
    T.kernel_tables(lay)
    before = len(T._TABLES)
    del lay
    gc.collect()
    assert len(T._TABLES) == before - 1


def test_from_block_mask_takes_token_masks():
    bm = np.array([[2, 1], [0, 1]], dtype=np.int8)
    tiles = np.zeros((2, 4, 4), dtype=bool)
    tiles[0, 0, 0] = True  # pair (0, 4)
    tiles[1, 2, 1] = True  # pair (6, 5)
    tiles[1, 2, 3] = True  # pair (6, 7): beyond n_k = 6, dropped
    lay = P.BlockLayout.from_block_mask(bm, 7, 6, 4, tiles=tiles)
    want = np.zeros((7, 6), dtype=bool)
    want[:4, :4] = True
    want[0, 4] = want[6, 5] = True
    np.testing.assert_array_equal(lay.to_dense()[0], want)
    assert lay.kept_pairs() == 18 and lay.mask_mod(0, 0, 6, 5) and not lay.mask_mod(0, 0, 6, 4)
    full = P.BlockLayout.from_block_mask(np.ones((2, 2), bool), 7, 6, 4)
    assert full.n_partial == 0 and full.to_dense().all()
    with pytest.raises(ValueError, match="partial blocks but no token masks"):
        P.BlockLayout.from_block_mask(bm, 7, 6, 4)
    with pytest.raises(ValueError, match="`tiles` must be bool \\[2, 4, 4\\]"):
        P.BlockLayout.from_block_mask(bm, 7, 6, 4, tiles=tiles[:1])
    again = P.BlockLayout.from_block_mask(lay.to_block_mask(), 7, 6, 4, pattern=lay)
    assert again == lay
    strided = P.strided(8).to_layout(70, 70, 16, 1)
    from_pattern = P.BlockLayout.from_block_mask(strided.to_block_mask(), 70, 70, 16, pattern=P.strided(8))
    assert from_pattern == strided and from_pattern.n_tiles == from_pattern.n_partial  # one tile per block
    assert not any(isinstance(v, P.Pattern) for v in vars(from_pattern).values())


def test_layout_arrays_are_read_only():
    lay = P.sliding_window(3).to_layout(20, 20, 4)
    with pytest.raises(ValueError):
        lay.indices[0] = 1
    with pytest.raises(ValueError):
        pickle.loads(pickle.dumps(lay)).tile_bits[...] = 0


def test_layout_label_names_its_pattern_without_holding_it():
    pattern = P.longformer(5, [0, 1])
    lay = pattern.to_layout(100, 100, 16)
    assert lay.label == repr(pattern)
    again = pickle.loads(pickle.dumps(lay))
    assert again.label == repr(pattern) and again == lay
    assert P.sliding_window(3).to_layout(100, 100, 16) != lay
    import matplotlib

    matplotlib.use("Agg")
    from sparse_core.patterns import plots

    title = plots.plot_layout(again).get_title()
    assert title.startswith("longformer(") and f"{100 * lay.density:.1f}% of pairs" in title
