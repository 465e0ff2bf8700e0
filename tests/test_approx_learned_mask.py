"""Learned pair gate: soft = g-weighted softmax, hard = oracle over {g > 1/2}, L1 penalty = mean gate."""
import pytest
import torch

from sparse_core import reference
from sparse_core.approx.learned_mask import LearnedMaskSelfAttention, PairGate, gated_attention


def _qkv(seed, shape=(2, 3), n=29, d=8, dv=5, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(*shape, n, dd, generator=g, dtype=dtype) for dd in (d, d, dv))


def _gate(seed, d=8, hidden=6):
    torch.manual_seed(seed)
    gate = PairGate(d, hidden).double()
    with torch.no_grad():
        gate.w_2.bias.zero_()  # gates around 1/2: both sides of the threshold occur
    return gate


def _explicit_gate(gate, q, k):
    """sigmoid(w2 . relu(W1 [q_i; k_j] + b1) + b2), with the concatenation formed explicitly."""
    n_q, n_k = q.shape[-2], k.shape[-2]
    cat = torch.cat([q[..., :, None, :].expand(*q.shape[:-1], n_k, q.shape[-1]),
                     k[..., None, :, :].expand(*k.shape[:-2], n_q, n_k, k.shape[-1])], -1)
    W1 = torch.cat([gate.w_q.weight, gate.w_k.weight], 1)
    h = torch.relu(cat @ W1.T + gate.w_q.bias)
    return torch.sigmoid(h @ gate.w_2.weight[0] + gate.w_2.bias)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("seed,n,chunk", [(0, 29, 8), (1, 40, 64), (2, 7, 1)])
def test_soft_gate_multiplies_the_weights(seed, n, chunk, causal):
    q, k, v = _qkv(seed, (2, 3), n)
    gate = _gate(seed)
    g = _explicit_gate(gate, q, k)
    w = g * torch.exp(q @ k.transpose(-1, -2) / 8 ** 0.5)
    if causal:
        w = w * torch.ones(n, n, dtype=torch.bool).tril()
    ref = (w @ v) / w.sum(-1, keepdim=True)
    out, gsum, npairs = gated_attention(q, k, v, gate, causal=causal, chunk=chunk)
    torch.testing.assert_close(out, ref, atol=1e-12, rtol=0)
    allowed = torch.ones(n, n, dtype=torch.bool).tril() if causal else torch.ones(n, n, dtype=torch.bool)
    assert npairs == 6 * int(allowed.sum())
    torch.testing.assert_close(gsum, (g * allowed).sum(), atol=1e-10, rtol=0)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("seed", [3, 4])
def test_hard_gate_is_the_oracle_with_the_thresholded_mask(seed, causal):
    q, k, v = _qkv(seed, (2, 3), 33)
    gate = _gate(seed)
    mask = _explicit_gate(gate, q, k) > 0.5
    assert 0.1 < mask.double().mean() < 0.9
    ref = reference.attention(q, k, v, mask=mask, causal=causal)
    out, _, _ = gated_attention(q, k, v, gate, causal=causal, hard=True, chunk=10)
    torch.testing.assert_close(out, ref, atol=1e-12, rtol=0)
    empty = ~(mask & torch.ones(33, 33, dtype=torch.bool).tril() if causal else mask).any(-1)
    assert torch.equal(out[empty], torch.zeros_like(out[empty]))


def test_open_gates_give_dense_attention():
    q, k, v = _qkv(5)
    gate = _gate(5)
    with torch.no_grad():
        gate.w_2.bias.fill_(60.0)  # sigmoid(60) = 1 - 1e-26: log g = 0 in float64
        gate.w_2.weight.zero_()
    for causal in (False, True):
        out, _, _ = gated_attention(q, k, v, gate, causal=causal)
        torch.testing.assert_close(out, reference.attention(q, k, v, causal=causal), atol=1e-12, rtol=0)


def test_l1_penalty_is_the_mean_gate_and_training_on_it_closes_gates():
    layer = LearnedMaskSelfAttention(32, 4, hidden=8, causal=True)
    x = torch.randn(2, 24, 32)
    with pytest.raises(RuntimeError, match="forward pass first"):
        layer.l1_penalty()
    layer(x)
    g = layer.gates(x)
    allowed = torch.ones(24, 24, dtype=torch.bool).tril()
    torch.testing.assert_close(layer.l1_penalty(), g.sum() / (2 * 4 * int(allowed.sum())), atol=1e-6, rtol=0)
    assert torch.equal(g[..., ~allowed], torch.zeros_like(g[..., ~allowed]))
    start = float(layer.l1_penalty().detach())
    opt = torch.optim.SGD(layer.gate.parameters(), lr=5.0)
    for _ in range(20):
        opt.zero_grad()
        layer(x)
        layer.l1_penalty().backward()
        opt.step()
    layer(x)
    assert float(layer.l1_penalty().detach()) < 0.5 * start


@pytest.mark.parametrize("hard", [False, True])
def test_causal_layer_never_looks_ahead(hard):
    layer = LearnedMaskSelfAttention(32, 4, causal=True, hard=hard, chunk=8).double()
    x = torch.randn(2, 30, 32, dtype=torch.float64)
    x2 = x.clone()
    x2[:, 12:] = torch.randn(2, 18, 32, dtype=torch.float64) * 10
    assert torch.equal(layer(x)[:, :12], layer(x2)[:, :12])


def test_float32_layer_trains_with_finite_gradients():
    layer = LearnedMaskSelfAttention(32, 2, hidden=4)
    y = layer(torch.randn(3, 17, 32) * 30)
    (y.square().mean() + 0.1 * layer.l1_penalty()).backward()
    assert torch.isfinite(y).all() and all(torch.isfinite(p.grad).all() for p in layer.parameters())


@pytest.mark.parametrize("make,match", [
    (lambda: LearnedMaskSelfAttention(32, 4, hidden=0), "`hidden` must be a positive integer"),
    (lambda: LearnedMaskSelfAttention(32, 4, hard=None), "`hard` must be a bool"),
    (lambda: gated_attention(*_qkv(0, (1,), 4), _gate(0), chunk=0), "`chunk` must be a positive integer"),
    (lambda: LearnedMaskSelfAttention(32, 4)(torch.zeros(2, 5)), "`x` must be a tensor \\[batch, n, d_model=32\\]"),
])
def test_bad_arguments(make, match):
    with pytest.raises((ValueError, TypeError, RuntimeError), match=match):
        make()
