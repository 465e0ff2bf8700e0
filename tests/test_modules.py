"""SparseSelfAttention is a drop-in for nn.MultiheadAttention: same outputs, same gradients."""
import numpy as np
import pytest
import torch

from sparse_core import patterns as P
from sparse_core.attention.cores import layout_for
from sparse_core.attention.layer import SparseSelfAttention


def _mha(seed, d_model=32, heads=4):
    torch.manual_seed(seed)
    return nn_mha(d_model, heads).double()


def nn_mha(d_model, heads):
    return torch.nn.MultiheadAttention(d_model, heads, batch_first=True)


@pytest.mark.parametrize("pattern", [None, P.sliding_window(4, causal=True), P.longformer(3, [0, 9]),
                                     P.bigbird(45, 8, 1, n_heads=4)], ids=["dense", "window", "longformer", "bigbird"])
def test_equals_multihead_attention_with_the_same_mask(pattern):
    mha = _mha(0)
    layer = SparseSelfAttention.from_multihead(mha, pattern, block_size=8)
    x = torch.randn(2, 45, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(1), requires_grad=True)
    y = layer(x)
    heads = (pattern.n_heads or 1) if pattern is not None else 1
    mask = torch.ones(45, 45, dtype=torch.bool) if pattern is None else torch.from_numpy(pattern.to_dense(45, 45, heads))
    # nn.MultiheadAttention's boolean mask is True where attention is NOT allowed
    if mask.ndim == 3 and mask.shape[0] == 1:
        mask = mask[0]
    attn_mask = ~mask.repeat(2, 1, 1) if mask.ndim == 3 else ~mask  # [batch * heads, n, n], batch-major
    x2 = x.detach().clone().requires_grad_()
    y2, _ = mha(x2, x2, x2, attn_mask=attn_mask, need_weights=False)
    torch.testing.assert_close(y, y2, atol=1e-12, rtol=0)
    y.square().sum().backward()
    y2.square().sum().backward()
    torch.testing.assert_close(x.grad, x2.grad, atol=1e-11, rtol=0)
    for a, b in ((layer.qkv.weight, mha.in_proj_weight), (layer.out.weight, mha.out_proj.weight)):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-10, rtol=0)


def test_float32_training_step_and_layout_cache():
    layer = SparseSelfAttention(64, 8, P.sliding_window(16, causal=True), block_size=32)
    opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    x = torch.randn(3, 100, 64)
    loss = layer(x).square().mean()
    loss.backward()
    opt.step()
    assert torch.isfinite(layer(x)).all()
    assert layer.layout(100) is layout_for(layer.pattern, 100, 100, 32, 1)  # the library's one layout cache
    assert "sliding_window" in repr(layer)


@pytest.mark.parametrize("make,match", [
    (lambda: SparseSelfAttention(30, 4), "divisible"),
    (lambda: SparseSelfAttention(32, 4, pattern="window"), "must be a sparse_core.patterns.Pattern"),
    (lambda: SparseSelfAttention(32, 4, block_size=0), "`block_size` must be a positive integer"),
    (lambda: SparseSelfAttention(32, 4, P.dilated(1, [1, 2]))(torch.zeros(1, 8, 32)), "describes 2 heads"),
    (lambda: SparseSelfAttention(32, 4)(torch.zeros(8, 32)), "`x` must be a tensor \\[batch, n, d_model=32\\]"),
])
def test_bad_arguments(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()
