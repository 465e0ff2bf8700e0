"""Synthesizer: softmax of synthesized scores = the oracle with q = scores, k = I, scale = 1."""
import pytest
import torch

from sparse_core import reference
from sparse_core.approx.synthesizer import DenseSynthesizerAttention, RandomSynthesizerAttention, synthesizer_attention


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("seed,n", [(0, 17), (1, 64), (2, 1)])
def test_core_is_the_oracle_with_identity_keys(seed, n, causal):
    g = torch.Generator().manual_seed(seed)
    s = 5 * torch.randn(2, 3, n, n, generator=g, dtype=torch.float64)
    v = torch.randn(2, 3, n, 4, generator=g, dtype=torch.float64)
    ref = reference.attention(s, torch.eye(n, dtype=torch.float64), v, scale=1.0, causal=causal)
    torch.testing.assert_close(synthesizer_attention(s, v, causal), ref, atol=1e-12, rtol=0)


@pytest.mark.parametrize("causal", [False, True])
def test_dense_synthesizer_scores_come_from_each_token_alone(causal):
    torch.manual_seed(0)
    layer = DenseSynthesizerAttention(32, 4, max_len=40, hidden=6, causal=causal).double()
    x = torch.randn(2, 27, 32, dtype=torch.float64)
    y = layer(x)
    # explicit per-head two-layer MLP: B_i = W2_h relu(W1_h x_i + b1_h) + b2_h, first n entries
    h = torch.relu(layer.w1(x)).view(2, 27, 4, 6).transpose(1, 2)
    B = torch.stack([h[:, i] @ layer.w2[i, :, :27] + layer.b2[i, :27] for i in range(4)], 1)
    v = layer.value(x).view(2, 27, 4, 8).transpose(1, 2)
    o = reference.attention(B, torch.eye(27, dtype=torch.float64), v, scale=1.0, causal=causal)
    torch.testing.assert_close(y, layer.out(o.transpose(1, 2).reshape(2, 27, 32)), atol=1e-12, rtol=0)
    # row i of the scores depends on x_i only
    x2 = x.clone()
    x2[:, 5] += 1.0
    assert torch.equal(layer.scores(x2)[:, :, 6:], layer.scores(x)[:, :, 6:])
    assert not torch.equal(layer.scores(x2)[:, :, 5], layer.scores(x)[:, :, 5])


@pytest.mark.parametrize("trainable", [True, False])
def test_random_synthesizer_ignores_the_input_in_its_weights(trainable):
    layer = RandomSynthesizerAttention(16, 2, max_len=30, causal=True, trainable=trainable, seed=3).double()
    assert ("R" in dict(layer.named_parameters())) == trainable
    x = torch.randn(3, 21, 16, dtype=torch.float64)
    v = layer.value(x).view(3, 21, 2, 8).transpose(1, 2)
    o = reference.attention(layer.R[:, :21, :21], torch.eye(21, dtype=torch.float64), v, scale=1.0, causal=True)
    torch.testing.assert_close(layer(x), layer.out(o.transpose(1, 2).reshape(3, 21, 16)), atol=1e-12, rtol=0)
    assert torch.equal(layer.R, RandomSynthesizerAttention(16, 2, 30, trainable=trainable, seed=3).double().R)


@pytest.mark.parametrize("cls", [DenseSynthesizerAttention, RandomSynthesizerAttention])
def test_causal_exact_and_float32_training(cls):
    layer = cls(32, 4, max_len=50, causal=True)
    x = torch.randn(2, 33, 32)
    y = layer(x)
    x2 = x.clone()
    x2[:, 10:] *= -7
    assert torch.equal(layer(x2)[:, :10], y[:, :10])
    y.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in layer.parameters())


@pytest.mark.parametrize("make,match", [
    (lambda: DenseSynthesizerAttention(32, 4, max_len=8)(torch.zeros(1, 9, 32)), "at most max_len=8"),
    (lambda: RandomSynthesizerAttention(32, 4, max_len=0), "`max_len` must be a positive integer"),
    (lambda: DenseSynthesizerAttention(32, 4, 8, hidden=0), "`hidden` must be a positive integer"),
    (lambda: synthesizer_attention(torch.zeros(4, 5), torch.zeros(4, 2)), "`scores` must have shape \\[..., n, n\\] with n=4"),
    (lambda: RandomSynthesizerAttention.from_multihead(torch.nn.MultiheadAttention(8, 2), 8), "no query/key projections"),
])
def test_bad_arguments(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()
