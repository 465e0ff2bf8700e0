"""The method registry of Chapter 11 (sparse_core.approx.methods): every method builds, keeps
shapes, is causal when asked, and is the layer it names."""
import pytest
import torch

from sparse_core import approx as A
from sparse_core.attention.cores import BlockSparseCore, DenseCore
from sparse_core.approx.methods import COMPLEXITY, DEFAULTS, METHODS, make_attention, method_options

CASES = [(m, c) for m in METHODS for c in (False, True) if not (m == "linformer" and c)]


@pytest.mark.parametrize("method,causal", CASES)
def test_every_method_keeps_shape_and_causal_ones_never_look_ahead(method, causal):
    torch.manual_seed(0)
    n = 450  # not a multiple of the blocks; BigBird's 2 random blocks of 64 need at least 7 blocks
    layer = make_attention(method, 32, 2, n, causal=causal).double().eval()
    x = torch.randn(2, n, 32, dtype=torch.double)
    y = layer(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    x2 = x.clone()
    x2[:, 300:] += 1.0
    y2 = layer(x2)
    if causal:
        torch.testing.assert_close(y2[:, :300], y[:, :300], atol=1e-10, rtol=0)
    else:  # bidirectional methods let later tokens change earlier outputs (most methods)
        assert method in ("local", "strided", "fixed") or not torch.allclose(y2[:, :300], y[:, :300])


def test_layers_are_the_methods_they_name():
    assert isinstance(make_attention("dense", 32, 2, 64).core, DenseCore)
    local = make_attention("local", 32, 2, 64, window=8, block_size=16)
    assert isinstance(local.core, BlockSparseCore) and local.core.block_size == 16
    assert "window=8" in repr(local.core.pattern) or "8" in repr(local.core.pattern)
    assert isinstance(make_attention("topk", 32, 2, 64, topk=5), A.TopKSelfAttention)
    assert isinstance(make_attention("linformer", 32, 2, 64, k=16), A.LinformerSelfAttention)
    assert isinstance(make_attention("performer", 32, 2, 64), A.PerformerSelfAttention)
    assert isinstance(make_attention("synthesizer", 32, 2, 64), A.DenseSynthesizerAttention)
    assert set(COMPLEXITY) == set(METHODS) == set(DEFAULTS)


def test_a_window_covering_everything_is_dense_attention():
    torch.manual_seed(0)
    dense = make_attention("dense", 32, 2, 70, causal=True).double()
    local = make_attention("local", 32, 2, 70, causal=True, window=80, block_size=16).double()
    local.load_state_dict(dense.state_dict())
    x = torch.randn(3, 70, 32, dtype=torch.double)
    torch.testing.assert_close(local(x), dense(x), atol=1e-10, rtol=0)


@pytest.mark.parametrize("call,match", [
    (lambda: make_attention("lokal", 32, 2, 64), "`method` must be one of dense, local"),
    (lambda: make_attention("dense", 32, 2, 64, window=3), "method 'dense' does not take 'window'"),
    (lambda: make_attention("topk", 32, 2, 64, window=3), r"\(it takes: topk\)"),
    (lambda: make_attention("linformer", 32, 2, 64, causal=True), "'linformer' is not causal"),
    (lambda: make_attention("local", 32, 2, 0), "`n` must be a positive integer"),
])
def test_bad_arguments_say_what_was_expected(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_options_fill_from_defaults():
    assert method_options("local", window=7) == {"window": 7, "block_size": 64}
