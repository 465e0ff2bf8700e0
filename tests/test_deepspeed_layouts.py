"""DeepSpeed-compatible layouts: hand-drawn small cases, token expansion, bad arguments, and
equality with DeepSpeed 0.19.6's own ``make_layout`` when DeepSpeed is installed.

The DeepSpeed comparison loads only ``deepspeed/ops/sparse_attention/sparsity_config.py`` (it
imports just torch and random) from the installed package by file path, so importing
DeepSpeed's heavy ``__init__`` is never needed. Install it with the optional extra
``pip install -e ".[deepspeed]"`` (``DS_BUILD_OPS=0`` is enough; no ops are compiled).
"""
import importlib.metadata
import importlib.util
import itertools
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from sparse_core.patterns.deepspeed import (deepspeed_bigbird, deepspeed_bslongformer, deepspeed_dense,
                                            deepspeed_fixed, deepspeed_layout, deepspeed_local, deepspeed_variable)
from sparse_core.patterns import dense

DS_VERSION = "0.19.6"


def M(text):
    """A 0/1 matrix drawn as rows of digits, e.g. M('10 11') -> [[1, 0], [1, 1]]."""
    return np.array([[int(c) for c in row] for row in text.split()], dtype=np.int64)


# ============================================================================ hand-drawn layouts
# Written from DeepSpeed's documented definitions, independently of the implementation.

def test_fixed_two_local_blocks_one_global_nb4():
    # windows {0,1} {2,3}; the last block of each window (1 and 3) is a global column
    p = deepspeed_fixed(1, 64, 16, num_local_blocks=2, num_global_blocks=1)
    assert deepspeed_layout(p).tolist() == M("1101 1101 0111 0111")[None].tolist()


def test_fixed_unidirectional_global_columns_start_at_the_global_block():
    p = deepspeed_fixed(1, 64, 16, num_local_blocks=2, attention="unidirectional")
    assert deepspeed_layout(p)[0].tolist() == M("1000 1100 0110 0111").tolist()


def test_fixed_horizontal_global_attention():
    p = deepspeed_fixed(1, 64, 16, num_local_blocks=2, horizontal_global_attention=True)
    assert deepspeed_layout(p)[0].tolist() == M("1101 1111 0111 1111").tolist()


def test_fixed_different_global_patterns_per_head():
    # head 0 uses the last block of each window, head 1 the one before, head 2 the last again
    p = deepspeed_fixed(3, 64, 16, different_layout_per_head=True, num_local_blocks=2,
                        num_different_global_patterns=2)
    lay = deepspeed_layout(p)
    assert lay[0].tolist() == M("1101 1101 0111 0111").tolist()
    assert lay[1].tolist() == M("1110 1110 1011 1011").tolist()
    assert lay[2].tolist() == lay[0].tolist()


def test_fixed_short_last_window_global_is_clamped_to_the_end():
    # nb=5, windows {0,1} {2,3} {4}: the short window's global block would be 5, clamped to 4
    p = deepspeed_fixed(1, 80, 16, num_local_blocks=2)
    assert deepspeed_layout(p)[0].tolist() == M("11011 11011 01111 01111 01011").tolist()


def test_fixed_two_global_blocks_per_window():
    # nb=8, windows of 4, global groups = blocks 2,3 and 6,7
    p = deepspeed_fixed(1, 128, 16, num_local_blocks=4, num_global_blocks=2)
    expected = M("11110011 11110011 11110011 11110011 00111111 00111111 00111111 00111111")
    assert deepspeed_layout(p)[0].tolist() == expected.tolist()


def test_fixed_unidirectional_global_group_reaches_above_the_diagonal():
    # global group {2,3}: its columns are kept from row 2 on, so (2, 3) -- a future block -- is
    # kept; DeepSpeed does the same (it cuts global columns at the group's first row, not at tril)
    p = deepspeed_fixed(1, 128, 16, num_local_blocks=4, num_global_blocks=2, attention="unidirectional")
    expected = M("10000000 11000000 11110000 11110000 00111000 00111100 00111111 00111111")
    assert deepspeed_layout(p)[0].tolist() == expected.tolist()


def test_variable_window_list_repeats_last_size():
    # nb=6, windows [1, 2] then 2 repeated: {0} {1,2} {3,4} {5}; global column 0
    p = deepspeed_variable(1, 96, 16, local_window_blocks=[1, 2])
    assert deepspeed_layout(p)[0].tolist() == M("100000 111000 111000 100110 100110 100001").tolist()


def test_variable_unidirectional_global_span():
    # span [2, 4) is global: its columns are kept from row 2 on -- including (2, 3), above the
    # diagonal: DeepSpeed's unidirectional Variable layout does not cut spans at the diagonal
    p = deepspeed_variable(1, 96, 16, local_window_blocks=[1, 2], global_block_indices=[2],
                           global_block_end_indices=[4], attention="unidirectional")
    assert deepspeed_layout(p)[0].tolist() == M("100000 010000 011100 001100 001110 001101").tolist()


def test_variable_horizontal_and_out_of_range_global_index():
    # index 9 is past the 4 blocks and ignored; block 1 is a global row and column
    p = deepspeed_variable(1, 64, 16, local_window_blocks=[1], global_block_indices=[1, 9],
                           horizontal_global_attention=True)
    assert deepspeed_layout(p)[0].tolist() == M("1100 1111 0110 0101").tolist()


def test_bigbird_without_random_blocks():
    p = deepspeed_bigbird(1, 80, 16, num_random_blocks=0)
    assert deepspeed_layout(p)[0].tolist() == M("11111 11100 11110 10111 10011").tolist()
    p = deepspeed_bigbird(1, 80, 16, num_random_blocks=0, attention="unidirectional")
    assert deepspeed_layout(p)[0].tolist() == M("10000 11000 11100 10110 10011").tolist()


def test_bigbird_even_window_acts_like_next_odd_one():
    a = deepspeed_bigbird(1, 128, 16, num_random_blocks=0, num_sliding_window_blocks=4)
    b = deepspeed_bigbird(1, 128, 16, num_random_blocks=0, num_sliding_window_blocks=5)
    np.testing.assert_array_equal(deepspeed_layout(a), deepspeed_layout(b))


def _reference_random(nb, heads, r, seed, causal):
    """Random blocks per the definition: random.Random(seed).sample, head by head, row by row."""
    rng = random.Random(seed)
    out = np.zeros((heads, nb, nb), dtype=np.int64)
    for h in range(heads):
        for row in range(nb):
            for c in rng.sample(range(row + 1 if causal else nb), r):
                out[h, row, c] = 1
    return out


@pytest.mark.parametrize("seed", [0, 1, 42])
def test_bigbird_random_blocks_follow_random_sample_order(seed):
    nb, heads, r = 8, 3, 2
    rand = _reference_random(nb, heads, r, seed, causal=False)
    diag = np.eye(nb, dtype=np.int64)[None]
    p = deepspeed_bigbird(heads, nb * 16, 16, different_layout_per_head=True, num_random_blocks=r,
                          num_sliding_window_blocks=1, num_global_blocks=0, seed=seed)
    np.testing.assert_array_equal(deepspeed_layout(p), np.maximum(rand, diag))
    # one shared layout: only head 0 is drawn, and copied
    p = deepspeed_bigbird(heads, nb * 16, 16, num_random_blocks=r, num_sliding_window_blocks=1,
                          num_global_blocks=0, seed=seed)
    np.testing.assert_array_equal(deepspeed_layout(p), np.maximum(np.repeat(rand[:1], heads, 0), diag))
    # unidirectional: draws among blocks at or before the row
    rand = _reference_random(nb, 1, 1, seed, causal=True)
    p = deepspeed_bigbird(1, nb * 16, 16, num_random_blocks=1, num_sliding_window_blocks=1,
                          num_global_blocks=0, attention="unidirectional", seed=seed)
    np.testing.assert_array_equal(deepspeed_layout(p), np.maximum(rand, diag))


@pytest.mark.parametrize("seed", [0, 5])
def test_variable_random_blocks_are_drawn_before_local_and_global(seed):
    nb, heads, r = 6, 2, 3
    rand = _reference_random(nb, heads, r, seed, causal=False)
    p = deepspeed_variable(heads, nb * 16, 16, different_layout_per_head=True, num_random_blocks=r,
                           local_window_blocks=[1], global_block_indices=[], seed=seed,
                           attention="unidirectional")
    # unidirectional Variable draws random blocks from the whole row (they may lie in the future)
    np.testing.assert_array_equal(deepspeed_layout(p), np.maximum(rand, np.eye(nb, dtype=np.int64)[None]))


def test_bslongformer_global_rows_and_columns():
    p = deepspeed_bslongformer(1, 80, 16, num_sliding_window_blocks=1, global_block_indices=[2])
    assert deepspeed_layout(p)[0].tolist() == M("10100 01100 11111 00110 00101").tolist()
    p = deepspeed_bslongformer(1, 80, 16, num_sliding_window_blocks=1, global_block_indices=[2],
                               attention="unidirectional")
    assert deepspeed_layout(p)[0].tolist() == M("10000 01000 11100 00110 00101").tolist()


def test_bslongformer_spans_and_negative_index():
    p = deepspeed_bslongformer(1, 80, 16, num_sliding_window_blocks=0, global_block_indices=[1],
                               global_block_end_indices=[3])
    assert deepspeed_layout(p)[0].tolist() == M("11100 11111 11111 01110 01101").tolist()
    p = deepspeed_bslongformer(1, 64, 16, num_sliding_window_blocks=0, global_block_indices=[-1])
    assert deepspeed_layout(p)[0].tolist() == M("1001 0101 0011 1111").tolist()


# ============================================================================ token level and layouts

def _examples():
    return [
        deepspeed_fixed(2, 96, 16, num_local_blocks=2),
        deepspeed_fixed(4, 128, 16, True, num_local_blocks=4, num_global_blocks=2, num_different_global_patterns=2,
                        horizontal_global_attention=True),
        deepspeed_fixed(3, 112, 16, attention="unidirectional", num_local_blocks=3),
        deepspeed_variable(2, 128, 16, True, num_random_blocks=2, local_window_blocks=[2, 3],
                           global_block_indices=[0, 5], global_block_end_indices=[2, 6], seed=4),
        deepspeed_bigbird(3, 128, 32, True, num_random_blocks=1, seed=2),
        deepspeed_bigbird(1, 96, 16, num_random_blocks=1, attention="unidirectional", seed=9),
        deepspeed_bslongformer(2, 128, 16, global_block_indices=[1, 6], attention="unidirectional"),
    ]


@pytest.mark.parametrize("p", _examples(), ids=repr)
def test_to_dense_expands_the_block_table(p):
    lay = deepspeed_layout(p)
    H, nb, _ = lay.shape
    B = p.block
    expected = np.kron(lay, np.ones((B, B), dtype=np.int64)).astype(bool)
    np.testing.assert_array_equal(p.to_dense(nb * B, nb * B, H), expected)
    # prefixes of the sequence are the top-left corner
    np.testing.assert_array_equal(p.to_dense(nb * B - 5, nb * B - 3, H), expected[:, :-5, :-3])
    # mask_mod on torch tensors agrees
    i = torch.arange(nb * B)[:, None]
    j = torch.arange(nb * B)[None, :]
    for h in range(H):
        np.testing.assert_array_equal(p.mask_mod(0, h, i, j).numpy(), expected[h])


@pytest.mark.parametrize("p", _examples(), ids=repr)
def test_to_layout_keeps_exactly_the_table_blocks_all_full(p):
    lay = deepspeed_layout(p)
    H, nb, _ = lay.shape
    bm = p.to_layout(p.seq_len, p.seq_len, p.block, p.num_heads).to_block_mask()
    np.testing.assert_array_equal(bm > 0, lay.astype(bool))
    assert set(np.unique(bm[bm > 0]).tolist()) <= {2}  # every kept block is full
    # a finer layout describes the same token mask, still with full blocks only
    fine = p.to_layout(p.seq_len, p.seq_len, p.block // 2, p.num_heads)
    assert fine.n_partial == 0
    np.testing.assert_array_equal(fine.to_dense(), p.to_dense(p.seq_len, p.seq_len, H))


def test_table_shape_heads_and_layout_dtype():
    p = deepspeed_bigbird(4, 256, 32, seed=1)
    lay = deepspeed_layout(p)
    assert lay.shape == (4, 8, 8) and lay.dtype == np.int64 and set(np.unique(lay)) <= {0, 1}
    assert p.table.shape == (4, 8, 8) and p.n_heads == 4
    assert all((lay[h] == lay[0]).all() for h in range(4))  # one layout shared by all heads
    with pytest.raises(ValueError, match="n_heads"):
        p.to_layout(256, 256, 32, 2)


def test_seed_makes_layouts_reproducible_and_different():
    a = deepspeed_bigbird(2, 512, 32, True, num_random_blocks=2, seed=3)
    b = deepspeed_bigbird(2, 512, 32, True, num_random_blocks=2, seed=3)
    c = deepspeed_bigbird(2, 512, 32, True, num_random_blocks=2, seed=4)
    np.testing.assert_array_equal(deepspeed_layout(a), deepspeed_layout(b))
    assert not np.array_equal(deepspeed_layout(a), deepspeed_layout(c))
    state = random.getstate()
    deepspeed_variable(2, 512, 32, True, num_random_blocks=2, seed=3)
    assert random.getstate() == state  # the global random module is left alone


def test_repr_names_the_constructor_and_non_default_settings():
    assert repr(deepspeed_fixed(2, 64)) == "deepspeed_fixed(num_heads=2, seq_len=64)"
    r = repr(deepspeed_variable(1, 64, 32, local_window_blocks=[1, 2], seed=7))
    assert r == "deepspeed_variable(num_heads=1, seq_len=64, block=32, local_window_blocks=[1, 2], seed=7)"
    assert repr(deepspeed_bigbird(1, 64, attention="unidirectional")).startswith("deepspeed_bigbird(")
    assert "global_block_indices=[1]" in repr(deepspeed_bslongformer(1, 64, global_block_indices=[1]))


def test_local_sliding_window_by_hand():
    # unidirectional (DeepSpeed's default): block a keeps a - 1 .. a with 3 window blocks
    assert deepspeed_layout(deepspeed_local(1, 64, 16)).tolist() == M("1000 1100 0110 0011")[None].tolist()
    bi = deepspeed_local(2, 80, 16, num_sliding_window_blocks=5, attention="bidirectional")
    assert deepspeed_layout(bi).tolist() == [M("11100 11110 11111 01111 00111").tolist()] * 2
    assert deepspeed_layout(deepspeed_local(1, 48, 16, num_sliding_window_blocks=0)).tolist() == [np.eye(3).tolist()]


def test_dense_config_keeps_every_block_and_equals_the_dense_pattern():
    p = deepspeed_dense(3, 96, 32)
    assert deepspeed_layout(p).shape == (3, 3, 3) and deepspeed_layout(p).all()
    assert np.array_equal(p.to_dense(96, 96, n_heads=3), dense().to_dense(96, 96, n_heads=3))


def test_local_and_dense_refuse_what_deepspeed_refuses_and_name_the_argument():
    with pytest.raises(ValueError, match="`num_sliding_window_blocks`=5 is more than the 4 blocks"):
        deepspeed_local(1, 64, 16, num_sliding_window_blocks=5)
    with pytest.raises(ValueError, match="`attention`"):
        deepspeed_local(1, 64, attention="causal")
    with pytest.raises(ValueError, match="`seq_len`=40 must be a multiple of `block`=16"):
        deepspeed_dense(1, 40)


def test_deepspeed_layout_rejects_other_patterns():
    with pytest.raises(TypeError, match="deepspeed"):
        deepspeed_layout(dense())


BAD = [
    (deepspeed_fixed, dict(num_heads=1, seq_len=100, block=16), "seq_len"),
    (deepspeed_fixed, dict(num_heads=0, seq_len=64), "num_heads"),
    (deepspeed_fixed, dict(num_heads=1, seq_len=64, block=0), "block"),
    (deepspeed_fixed, dict(num_heads=1, seq_len=64, num_local_blocks=4, num_global_blocks=3), "num_local_blocks"),
    (deepspeed_fixed, dict(num_heads=1, seq_len=64, num_global_blocks=0), "num_global_blocks"),
    (deepspeed_fixed, dict(num_heads=1, seq_len=64, attention="causal"), "attention"),
    (deepspeed_fixed, dict(num_heads=1, seq_len=64, attention="unidirectional",
                           horizontal_global_attention=True), "horizontal_global_attention"),
    (deepspeed_fixed, dict(num_heads=2, seq_len=64, num_different_global_patterns=2), "num_different_global_patterns"),
    (deepspeed_fixed, dict(num_heads=2, seq_len=64, different_layout_per_head=True, num_local_blocks=4,
                           num_global_blocks=2, num_different_global_patterns=3), "num_different_global_patterns"),
    (deepspeed_fixed, dict(num_heads=2, seq_len=64, different_layout_per_head=True,
                           num_different_global_patterns=0), "num_different_global_patterns"),
    (deepspeed_fixed, dict(num_heads=1, seq_len=64, different_layout_per_head="yes"), "different_layout_per_head"),
    (deepspeed_variable, dict(num_heads=1, seq_len=60, block=16), "seq_len"),
    (deepspeed_variable, dict(num_heads=1, seq_len=64, num_random_blocks=5), "num_random_blocks"),
    (deepspeed_variable, dict(num_heads=1, seq_len=64, local_window_blocks=[]), "local_window_blocks"),
    (deepspeed_variable, dict(num_heads=1, seq_len=64, local_window_blocks=[2, 0]), "local_window_blocks"),
    (deepspeed_variable, dict(num_heads=1, seq_len=64, global_block_indices=[0, 2],
                              global_block_end_indices=[1]), "global_block_end_indices"),
    (deepspeed_variable, dict(num_heads=1, seq_len=64, global_block_indices=[2],
                              global_block_end_indices=[2]), "global_block_end_indices"),
    (deepspeed_variable, dict(num_heads=1, seq_len=64, global_block_indices=[-5]), "global_block_indices"),
    (deepspeed_variable, dict(num_heads=1, seq_len=64, attention="causal"), "attention"),
    (deepspeed_variable, dict(num_heads=1, seq_len=64, attention="unidirectional",
                              horizontal_global_attention=True), "horizontal_global_attention"),
    (deepspeed_variable, dict(num_heads=1, seq_len=64, seed=None), "seed"),
    (deepspeed_bigbird, dict(num_heads=1, seq_len=64, num_random_blocks=5), "num_random_blocks"),
    (deepspeed_bigbird, dict(num_heads=1, seq_len=64, num_random_blocks=2, attention="unidirectional"),
     "num_random_blocks"),
    (deepspeed_bigbird, dict(num_heads=1, seq_len=64, num_sliding_window_blocks=5), "num_sliding_window_blocks"),
    (deepspeed_bigbird, dict(num_heads=1, seq_len=64, num_global_blocks=5), "num_global_blocks"),
    (deepspeed_bigbird, dict(num_heads=1, seq_len=64, num_global_blocks=-1), "num_global_blocks"),
    (deepspeed_bigbird, dict(num_heads=1, seq_len=64, attention="both"), "attention"),
    (deepspeed_bslongformer, dict(num_heads=1, seq_len=65), "seq_len"),
    (deepspeed_bslongformer, dict(num_heads=1, seq_len=64, num_sliding_window_blocks=5), "num_sliding_window_blocks"),
    (deepspeed_bslongformer, dict(num_heads=1, seq_len=64, global_block_indices=[1, 3],
                                  global_block_end_indices=[3, 2]), "global_block_end_indices"),
    (deepspeed_bslongformer, dict(num_heads=1, seq_len=64, global_block_indices=0), "global_block_indices"),
    (deepspeed_bslongformer, dict(num_heads=1, seq_len=64, attention="causal"), "attention"),
]


@pytest.mark.parametrize("fn, kwargs, name", BAD, ids=lambda x: getattr(x, "__name__", None) if callable(x) else None)
def test_bad_arguments_raise_value_error_naming_the_argument(fn, kwargs, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        fn(**kwargs)


# ============================================================================ against DeepSpeed itself

def _load_sparsity_config():
    """DeepSpeed's sparsity_config module, loaded by path without importing deepspeed/__init__."""
    try:
        version = importlib.metadata.version("deepspeed")
    except importlib.metadata.PackageNotFoundError:
        return None, "deepspeed is not installed (optional extra: pip install -e '.[deepspeed]')"
    if version != DS_VERSION:
        return None, f"deepspeed {version} is installed; these checks are written for {DS_VERSION}"
    spec = importlib.util.find_spec("deepspeed")  # a top-level spec: deepspeed/__init__ is not run
    if spec is not None and spec.submodule_search_locations:
        root = Path(list(spec.submodule_search_locations)[0])
    else:
        root = Path(importlib.metadata.distribution("deepspeed").locate_file("deepspeed"))
    path = root / "ops" / "sparse_attention" / "sparsity_config.py"
    if not path.is_file():
        return None, f"{path} not found in the installed deepspeed"
    mod_spec = importlib.util.spec_from_file_location("_deepspeed_sparsity_config", path)
    module = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(module)
    return module, None


@pytest.fixture(scope="module")
def ds():
    module, reason = _load_sparsity_config()
    if module is None:
        pytest.skip(reason)
    return module


@pytest.fixture
def keep_random_state():
    state = random.getstate()
    yield
    random.setstate(state)


def _ds_layout(config, seq_len, seed=None):
    if seed is not None:
        random.seed(seed)
    return config.make_layout(seq_len).numpy()


def _check_same(ours, theirs, settings):
    lay = deepspeed_layout(ours)
    assert lay.shape == theirs.shape, settings
    if not np.array_equal(lay, theirs):
        diff = np.argwhere(lay != theirs)[:5].tolist()
        raise AssertionError(f"layouts differ for {settings} at (head, row, col) {diff}")
    bm = ours.to_layout(ours.seq_len, ours.seq_len, ours.block, ours.num_heads).to_block_mask()
    assert np.array_equal(bm > 0, theirs.astype(bool)), settings
    assert (bm[bm > 0] == 2).all(), settings


SIZES = [(64, 16), (128, 16), (256, 32), (512, 64), (160, 16), (48, 16), (16, 16), (208, 16)]


@pytest.mark.parametrize("seq_len, block", SIZES)
def test_fixed_matches_deepspeed(ds, seq_len, block):
    n = 0
    for heads, per_head, L, G, attention, horizontal in itertools.product(
            [1, 2, 3, 4], [False, True], [1, 2, 3, 4, 6], [1, 2, 3], ["bidirectional", "unidirectional"],
            [False, True]):
        if L % G or (horizontal and attention == "unidirectional"):
            continue
        for P in range(1, (L // G if per_head else 1) + 1):
            kw = dict(num_heads=heads, block=block, different_layout_per_head=per_head, num_local_blocks=L,
                      num_global_blocks=G, attention=attention, horizontal_global_attention=horizontal,
                      num_different_global_patterns=P)
            theirs = _ds_layout(ds.FixedSparsityConfig(**kw), seq_len)
            _check_same(deepspeed_fixed(seq_len=seq_len, **kw), theirs, kw)
            n += 1
    assert n > 200


VARIABLE_WINDOWS = [[4], [1], [2, 3], [1, 2, 3], [3, 0, 2], [5, 1], [20]]
VARIABLE_GLOBALS = [([0], None), ([], None), ([0, 3], None), ([1, 100], None), ([-1], None),
                    ([0, 4], [2, 7]), ([1], [100]), ([-3], [-1]), ([2, 5], [3, 6])]


@pytest.mark.parametrize("seq_len, block", SIZES)
def test_variable_matches_deepspeed(ds, keep_random_state, seq_len, block):
    nb = seq_len // block
    n = 0
    for (heads, per_head), windows, (starts, ends), attention, horizontal, r in itertools.product(
            [(1, False), (3, False), (2, True), (4, True)], VARIABLE_WINDOWS, VARIABLE_GLOBALS,
            ["bidirectional", "unidirectional"], [False, True], [0, 1, 3]):
        if (horizontal and attention == "unidirectional") or r > nb:
            continue
        for seed in ([0] if r == 0 else [0, 11]):
            kw = dict(num_heads=heads, block=block, different_layout_per_head=per_head, num_random_blocks=r,
                      local_window_blocks=windows, global_block_indices=starts, global_block_end_indices=ends,
                      attention=attention, horizontal_global_attention=horizontal)
            theirs = _ds_layout(ds.VariableSparsityConfig(**kw), seq_len, seed)
            _check_same(deepspeed_variable(seq_len=seq_len, seed=seed, **kw), theirs, {**kw, "seed": seed})
            n += 1
    assert n > 200


@pytest.mark.parametrize("seq_len, block", SIZES)
def test_bigbird_matches_deepspeed(ds, keep_random_state, seq_len, block):
    nb = seq_len // block
    n = 0
    for (heads, per_head), r, W, G, attention, seed in itertools.product(
            [(1, False), (3, False), (2, True), (4, True)], [0, 1, 2, 3], [0, 1, 3, 4, 7], [0, 1, 2],
            ["bidirectional", "unidirectional"], [0, 1, 2024]):
        if r > nb or W > nb or G > nb or (attention == "unidirectional" and r > 1):
            continue
        kw = dict(num_heads=heads, block=block, different_layout_per_head=per_head, num_random_blocks=r,
                  num_sliding_window_blocks=W, num_global_blocks=G, attention=attention)
        theirs = _ds_layout(ds.BigBirdSparsityConfig(**kw), seq_len, seed)
        _check_same(deepspeed_bigbird(seq_len=seq_len, seed=seed, **kw), theirs, {**kw, "seed": seed})
        n += 1
    assert n > 50


@pytest.mark.parametrize("seq_len, block", SIZES)
def test_bslongformer_matches_deepspeed(ds, seq_len, block):
    nb = seq_len // block
    n = 0
    for (heads, per_head), W, (starts, ends), attention in itertools.product(
            [(1, False), (3, False), (2, True)], [0, 1, 2, 3, 5], VARIABLE_GLOBALS,
            ["bidirectional", "unidirectional"]):
        if W > nb:
            continue
        kw = dict(num_heads=heads, block=block, different_layout_per_head=per_head, num_sliding_window_blocks=W,
                  global_block_indices=starts, global_block_end_indices=ends, attention=attention)
        theirs = _ds_layout(ds.BSLongformerSparsityConfig(**kw), seq_len)
        _check_same(deepspeed_bslongformer(seq_len=seq_len, **kw), theirs, kw)
        n += 1
    assert n > 30


@pytest.mark.parametrize("seq_len, block", SIZES)
def test_local_and_dense_match_deepspeed(ds, seq_len, block):
    nb = seq_len // block
    n = 0
    for heads, W, attention in itertools.product([1, 2, 4], [0, 1, 2, 3, 4, 5, 7], ["bidirectional", "unidirectional"]):
        if W > nb:
            continue
        kw = dict(num_heads=heads, block=block, num_sliding_window_blocks=W, attention=attention)
        _check_same(deepspeed_local(seq_len=seq_len, **kw), _ds_layout(ds.LocalSlidingWindowSparsityConfig(**kw), seq_len),
                    kw)
        n += 1
    for heads, per_head in itertools.product([1, 3], [False, True]):
        kw = dict(num_heads=heads, block=block, different_layout_per_head=per_head)
        _check_same(deepspeed_dense(seq_len=seq_len, **kw), _ds_layout(ds.DenseSparsityConfig(**kw), seq_len), kw)
    assert n >= 6


def test_default_settings_match_deepspeed(ds, keep_random_state):
    for seq_len in (64, 256):
        _check_same(deepspeed_fixed(4, seq_len), _ds_layout(ds.FixedSparsityConfig(4), seq_len), "fixed")
        _check_same(deepspeed_variable(4, seq_len, seed=3),
                    _ds_layout(ds.VariableSparsityConfig(4), seq_len, 3), "variable")
        _check_same(deepspeed_bigbird(4, seq_len, seed=3),
                    _ds_layout(ds.BigBirdSparsityConfig(4), seq_len, 3), "bigbird")
        _check_same(deepspeed_bslongformer(4, seq_len),
                    _ds_layout(ds.BSLongformerSparsityConfig(4), seq_len), "bslongformer")
        _check_same(deepspeed_local(4, seq_len), _ds_layout(ds.LocalSlidingWindowSparsityConfig(4), seq_len), "local")
        _check_same(deepspeed_dense(4, seq_len), _ds_layout(ds.DenseSparsityConfig(4), seq_len), "dense")


DS_REJECTS = [  # settings DeepSpeed rejects (in the constructor or in make_layout), and we do too
    ("FixedSparsityConfig", deepspeed_fixed, dict(num_heads=1, block=16), 100),
    ("FixedSparsityConfig", deepspeed_fixed, dict(num_heads=1, num_local_blocks=4, num_global_blocks=3), 64),
    ("FixedSparsityConfig", deepspeed_fixed, dict(num_heads=1, attention="causal"), 64),
    ("FixedSparsityConfig", deepspeed_fixed, dict(num_heads=1, attention="unidirectional",
                                                  horizontal_global_attention=True), 64),
    ("FixedSparsityConfig", deepspeed_fixed, dict(num_heads=2, num_different_global_patterns=2), 64),
    ("FixedSparsityConfig", deepspeed_fixed, dict(num_heads=2, different_layout_per_head=True,
                                                  num_different_global_patterns=5), 64),
    ("VariableSparsityConfig", deepspeed_variable, dict(num_heads=1, num_random_blocks=5), 64),
    ("VariableSparsityConfig", deepspeed_variable, dict(num_heads=1, global_block_indices=[0, 1],
                                                        global_block_end_indices=[2]), 64),
    ("VariableSparsityConfig", deepspeed_variable, dict(num_heads=1, global_block_indices=[3],
                                                        global_block_end_indices=[1]), 64),
    ("VariableSparsityConfig", deepspeed_variable, dict(num_heads=1, local_window_blocks=[]), 64),
    ("VariableSparsityConfig", deepspeed_variable, dict(num_heads=1, local_window_blocks=[2, 0]), 64),
    ("VariableSparsityConfig", deepspeed_variable, dict(num_heads=1, global_block_indices=[-5]), 64),
    ("VariableSparsityConfig", deepspeed_variable, dict(num_heads=1, attention="causal"), 64),
    ("BigBirdSparsityConfig", deepspeed_bigbird, dict(num_heads=1, num_random_blocks=5), 64),
    ("BigBirdSparsityConfig", deepspeed_bigbird, dict(num_heads=1, num_random_blocks=2,
                                                      attention="unidirectional"), 64),
    ("BigBirdSparsityConfig", deepspeed_bigbird, dict(num_heads=1, num_sliding_window_blocks=5), 64),
    ("BigBirdSparsityConfig", deepspeed_bigbird, dict(num_heads=1, num_global_blocks=5), 64),
    ("BigBirdSparsityConfig", deepspeed_bigbird, dict(num_heads=1, attention="causal"), 64),
    ("BSLongformerSparsityConfig", deepspeed_bslongformer, dict(num_heads=1, num_sliding_window_blocks=5), 64),
    ("BSLongformerSparsityConfig", deepspeed_bslongformer, dict(num_heads=1, global_block_indices=[2],
                                                                global_block_end_indices=[2]), 64),
    ("BSLongformerSparsityConfig", deepspeed_bslongformer, dict(num_heads=1, block=16), 40),
    ("LocalSlidingWindowSparsityConfig", deepspeed_local, dict(num_heads=1, num_sliding_window_blocks=5), 64),
    ("LocalSlidingWindowSparsityConfig", deepspeed_local, dict(num_heads=1, block=16), 40),
    ("DenseSparsityConfig", deepspeed_dense, dict(num_heads=1, block=16), 40),
]


@pytest.mark.parametrize("config, fn, kwargs, seq_len", DS_REJECTS,
                         ids=[f"{c}-{i}" for i, (c, *_rest) in enumerate(DS_REJECTS)])
def test_settings_deepspeed_rejects_are_rejected(ds, keep_random_state, config, fn, kwargs, seq_len):
    with pytest.raises(Exception):
        getattr(ds, config)(**kwargs).make_layout(seq_len)
    with pytest.raises(ValueError):
        fn(seq_len=seq_len, **kwargs)


def test_deepspeed_accepts_unknown_attention_in_bslongformer_we_do_not(ds):
    # DeepSpeed's BSLongformer treats any attention other than 'unidirectional' as bidirectional
    lay = ds.BSLongformerSparsityConfig(1, attention="causal").make_layout(64).numpy()
    assert lay.tolist() == deepspeed_layout(deepspeed_bslongformer(1, 64)).tolist()
    with pytest.raises(ValueError, match="`attention`"):
        deepspeed_bslongformer(1, 64, attention="causal")
