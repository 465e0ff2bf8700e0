"""Performer / FAVOR+: package equivalence, exact causality, chunked == quadratic, stability, convergence."""
import math

import numpy as np
import pytest
import torch

from sparse_core import reference
from sparse_core.approx.performer import (PerformerSelfAttention, favor_attention, favor_attention_quadratic,
                                          gaussian_orthogonal_random_matrix)


def _qkv(seed, shape=(2, 3), n=37, d=16, dv=8, dtype=torch.float64, norm=None):
    g = torch.Generator().manual_seed(seed)
    q, k = (torch.randn(*shape, n, d, generator=g, dtype=dtype) for _ in range(2))
    v = torch.randn(*shape, n, dv, generator=g, dtype=dtype)
    if norm is not None:
        q, k = (norm * t / t.norm(dim=-1, keepdim=True) for t in (q, k))
    return q, k, v


def _log_features_f64(x, w, scale):
    """a_r = w_r . x' - |x'|^2 / 2, x' = sqrt(scale) x, written independently in float64."""
    xs = x.double() * math.sqrt(scale)
    return xs @ w.double().T - 0.5 * (xs ** 2).sum(-1, keepdim=True)


def _explicit_favor(q, k, v, w, causal):
    """Unstabilised float64 FAVOR+: phi(q) phi(k)^T (masked) v / row sums (moderate norms only)."""
    scale = q.shape[-1] ** -0.5
    fq = torch.exp(_log_features_f64(q, w, scale)) / math.sqrt(w.shape[0])
    fk = torch.exp(_log_features_f64(k, w, scale)) / math.sqrt(w.shape[0])
    A = fq @ fk.transpose(-1, -2)
    if causal:
        A = A * torch.ones(A.shape[-2:], dtype=torch.bool).tril()
    return (A @ v.double()) / A.sum(-1, keepdim=True)


# ------------------------------------------------------------------ equivalence with performer-pytorch

@pytest.mark.parametrize("seed,n,d,m", [(0, 37, 16, 24), (1, 64, 32, 110), (2, 5, 8, 8)])
@pytest.mark.parametrize("dtype,atol", [(torch.float32, 2e-5), (torch.float64, 1e-12)])
def test_equals_performer_pytorch_fast_attention(seed, n, d, m, dtype, atol):
    pp = pytest.importorskip("performer_pytorch", reason="performer-pytorch is not installed (extra 'equiv')")
    torch.manual_seed(seed)
    fa = pp.FastAttention(d, nb_features=m, causal=False).to(dtype)
    w = gaussian_orthogonal_random_matrix(m, d, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    fa.projection_matrix.copy_(w)
    q, k, v = _qkv(seed, (2, 3), n, d, d, dtype)
    ref = fa(q, k, v)
    ours = favor_attention(q, k, v, w, kernel="performer_pytorch")
    torch.testing.assert_close(ours, ref, atol=atol, rtol=0)
    # The stable default estimates the same kernel without the +1e-4 bias: close but not equal.
    stable = favor_attention(q, k, v, w)
    assert (stable - ref).abs().max() > 0


def test_projection_matches_package_construction():
    """Same algorithm as performer_pytorch.gaussian_orthogonal_random_matrix: orthogonal blocks, row norms."""
    w = gaussian_orthogonal_random_matrix(40, 16, scaling=1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    torch.testing.assert_close(w.norm(dim=1), torch.full((40,), 4.0, dtype=torch.float64))
    for blk in (w[:16], w[16:32]):
        torch.testing.assert_close(blk @ blk.T, 16 * torch.eye(16, dtype=torch.float64), atol=1e-10, rtol=0)
    w0 = gaussian_orthogonal_random_matrix(40, 16, scaling=0, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    u = w0[:16] / w0[:16].norm(dim=1, keepdim=True)
    torch.testing.assert_close(u @ u.T, torch.eye(16, dtype=torch.float64), atol=1e-10, rtol=0)
    assert not torch.allclose(w0.norm(dim=1), w0.norm(dim=1)[0])  # Gaussian row norms vary
    wi = gaussian_orthogonal_random_matrix(40, 16, orthogonal=False, generator=torch.Generator().manual_seed(0))
    assert wi.shape == (40, 16) and abs(float((wi[:16] @ wi[:16].T - torch.diag(torch.diag(wi[:16] @ wi[:16].T))).abs().max())) > 1


def test_haar_blocks_have_unbiased_directions():
    """Sign-corrected QR gives isotropic rows; plain Householder QR leans row r of a block towards -e_r."""
    g = torch.Generator().manual_seed(3)
    d, blocks = 8, 3000
    for haar, biased in ((True, False), (False, True)):
        w = gaussian_orthogonal_random_matrix(d * blocks, d, generator=g, dtype=torch.float64, haar=haar)
        u = (w / w.norm(dim=1, keepdim=True)).view(blocks, d, d)
        diag_mean = torch.diagonal(u.mean(0))               # E[u_r . e_r] for row r of a block
        se = (1.0 / (d * blocks)) ** 0.5
        assert bool((diag_mean.abs() > 8 * se).any()) == biased, (haar, diag_mean)
        for blk in u[:3]:
            torch.testing.assert_close(blk @ blk.T, torch.eye(d, dtype=torch.float64), atol=1e-10, rtol=0)


# ------------------------------------------------------------------ exactness of our two algorithms

@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("seed,n,chunk", [(0, 37, 8), (1, 50, 64), (2, 33, 1), (3, 64, 16)])
def test_stable_equals_explicit_kernel_attention(seed, n, chunk, causal):
    q, k, v = _qkv(seed, (2, 3), n, 16, 8)
    w = gaussian_orthogonal_random_matrix(48, 16, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    ref = _explicit_favor(q, k, v, w, causal)
    torch.testing.assert_close(favor_attention(q, k, v, w, causal=causal, chunk_size=chunk), ref, atol=1e-12, rtol=0)
    torch.testing.assert_close(favor_attention_quadratic(q, k, v, w, causal=causal), ref, atol=1e-12, rtol=0)


def test_quadratic_form_is_the_oracle_softmax_of_log_kernel():
    """o = masked_softmax(log A) v, with log A_ij = logsumexp_r(a_ir + b_jr), via the float64 oracle's softmax."""
    q, k, v = _qkv(5, (1, 2), 29, 8, 4, norm=6.0)
    w = gaussian_orthogonal_random_matrix(20, 8, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    a, b = _log_features_f64(q, w, 8 ** -0.5), _log_features_f64(k, w, 8 ** -0.5)
    log_a = torch.logsumexp(a[..., :, None, :] + b[..., None, :, :], -1)
    for causal in (False, True):
        mask = torch.ones(29, 29, dtype=torch.bool).tril() if causal else None
        ref = reference.masked_softmax(log_a, mask) @ v
        torch.testing.assert_close(favor_attention(q, k, v, w, causal=causal, chunk_size=7), ref, atol=1e-12, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("t", [0, 1, 15, 16, 30, 44])
def test_causal_is_exact_a_later_token_never_changes_an_earlier_output(dtype, t):
    q, k, v = _qkv(7, (2, 2), 45, 16, 8, dtype)
    w = gaussian_orthogonal_random_matrix(32, 16, generator=torch.Generator().manual_seed(7), dtype=dtype)
    out = favor_attention(q, k, v, w, causal=True, chunk_size=16)
    k2, v2, q2 = k.clone(), v.clone(), q.clone()
    k2[..., t, :] *= 40.0  # a huge later key: would move any global stabiliser
    v2[..., t:, :] = torch.randn_like(v2[..., t:, :]) * 1e3
    q2[..., t + 1:, :] = 0.0
    out2 = favor_attention(q2, k2, v2, w, causal=True, chunk_size=16)
    assert torch.equal(out[..., :t, :], out2[..., :t, :])
    assert not torch.equal(out[..., t:, :], out2[..., t:, :])


def test_causal_module_is_exact_at_the_layer_level():
    layer = PerformerSelfAttention(32, 4, n_features=40, causal=True, chunk_size=8).double()
    x = torch.randn(2, 41, 32, dtype=torch.float64)
    y = layer(x)
    x2 = x.clone()
    x2[:, 20:] = torch.randn(2, 21, 32, dtype=torch.float64) * 10
    assert torch.equal(layer(x2)[:, :20], y[:, :20])


# ------------------------------------------------------------------ stability

@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_no_nan_or_inf_at_large_logits(causal, dtype):
    q, k, v = _qkv(11, (1, 2), 300, 32, 8, dtype, norm=30.0)
    w = gaussian_orthogonal_random_matrix(64, 32, generator=torch.Generator().manual_seed(11), dtype=dtype)
    out = favor_attention(q, k, v, w, causal=causal, chunk_size=32)
    assert torch.isfinite(out).all()
    # outputs are convex combinations of the values
    assert (out.abs().amax(-2) <= v.abs().amax(-2) * (1 + 1e-5)).all()
    if dtype == torch.float64:  # and equal to the log-space quadratic form, which cannot overflow
        torch.testing.assert_close(out, favor_attention_quadratic(q, k, v, w, causal=causal), atol=1e-9, rtol=0)


def test_package_kernel_underflows_where_ours_does_not():
    """performer-pytorch's shared key shift makes the true kernel vanish under its +1e-4 at large logits."""
    q, k, v = _qkv(12, (1, 1), 64, 16, 4, torch.float32, norm=30.0)
    k[..., 0, :] *= 3  # one dominant key sets the global shift for all keys
    w = gaussian_orthogonal_random_matrix(32, 16, generator=torch.Generator().manual_seed(12), dtype=torch.float32)
    ref = favor_attention_quadratic(q.double(), k.double(), v.double(), w.double())
    ours = favor_attention(q, k, v, w)
    pkg = favor_attention(q, k, v, w, kernel="performer_pytorch")
    err_ours, err_pkg = (ours.double() - ref).abs().max(), (pkg.double() - ref).abs().max()
    assert err_ours < 1e-4 < err_pkg


@pytest.mark.parametrize("causal", [False, True])
def test_long_sequence_16k_is_finite(causal):
    q, k, v = _qkv(13, (1, 1), 16384, 16, 8, torch.float32, norm=20.0)
    w = gaussian_orthogonal_random_matrix(32, 16, generator=torch.Generator().manual_seed(13))
    out = favor_attention(q, k, v, w, causal=causal, chunk_size=128)
    assert out.shape == (1, 1, 16384, 8) and torch.isfinite(out).all()


def test_gradients_are_finite_at_large_logits():
    q, k, v = _qkv(14, (1, 2), 70, 16, 8, torch.float32, norm=30.0)
    q.requires_grad_(), k.requires_grad_(), v.requires_grad_()
    w = gaussian_orthogonal_random_matrix(32, 16, generator=torch.Generator().manual_seed(14))
    (favor_attention(q, k, v, w, causal=True, chunk_size=16).sum() + favor_attention(q, k, v, w).sum()).backward()
    assert all(torch.isfinite(t.grad).all() for t in (q, k, v))


def test_gradient_matches_the_quadratic_form():
    q, k, v = _qkv(15, (1, 2), 23, 8, 4)
    w = gaussian_orthogonal_random_matrix(16, 8, generator=torch.Generator().manual_seed(15), dtype=torch.float64)
    for causal in (False, True):
        grads = []
        for fn in (lambda *a: favor_attention(*a, w, causal=causal, chunk_size=5),
                   lambda *a: favor_attention_quadratic(*a, w, causal=causal)):
            ins = [t.clone().requires_grad_() for t in (q, k, v)]
            fn(*ins).square().sum().backward()
            grads.append([t.grad for t in ins])
        for g1, g2 in zip(*grads):
            torch.testing.assert_close(g1, g2, atol=1e-10, rtol=0)


# ------------------------------------------------------------------ approximation quality

def test_error_against_softmax_attention_decreases_with_features():
    """Mean error over 12 seeds falls with m (theory: ~ 1/sqrt(m)); checked with wide margins."""
    errs = {}
    for m in (8, 64, 512):
        e = []
        for seed in range(12):
            q, k, v = _qkv(100 + seed, (1, 2), 64, 16, 8, norm=2.0)
            w = gaussian_orthogonal_random_matrix(m, 16, generator=torch.Generator().manual_seed(seed))
            exact = reference.attention(q, k, v)
            e.append(float((favor_attention(q, k, v, w.double()) - exact).abs().mean()))
        errs[m] = np.mean(e)
    assert errs[8] > 1.5 * errs[64] > 1.5 * 1.5 * errs[512], errs
    assert errs[512] < 0.05, errs


def test_orthogonal_features_beat_iid_on_average():
    e = {True: [], False: []}
    for seed in range(12):
        q, k, v = _qkv(200 + seed, (1, 2), 64, 16, 8, norm=2.0)
        exact = reference.attention(q, k, v)
        for ortho in (True, False):
            w = gaussian_orthogonal_random_matrix(16, 16, orthogonal=ortho, generator=torch.Generator().manual_seed(seed))
            e[ortho].append(float((favor_attention(q, k, v, w.double()) - exact).square().mean()))
    assert np.mean(e[True]) < np.mean(e[False])


# ------------------------------------------------------------------ module

def test_feature_redraw_follows_the_interval_in_training_only():
    layer = PerformerSelfAttention(32, 4, n_features=16, feature_redraw_interval=2)
    x = torch.randn(1, 10, 32)
    w0 = layer.projection_matrix.clone()
    layer.eval()
    for _ in range(5):
        layer(x)
    assert torch.equal(layer.projection_matrix, w0)
    layer.train()
    layer(x), layer(x)
    assert torch.equal(layer.projection_matrix, w0)
    layer(x)  # third call: two have run since the draw
    assert not torch.equal(layer.projection_matrix, w0)
    w1 = layer.projection_matrix.clone()
    layer.redraw_features()
    assert not torch.equal(layer.projection_matrix, w1)
    fixed = PerformerSelfAttention(32, 4, n_features=16)
    w = fixed.projection_matrix.clone()
    for _ in range(4):
        fixed(x)
    assert torch.equal(fixed.projection_matrix, w)


def test_module_equals_functional_and_default_features():
    layer = PerformerSelfAttention(32, 2).double()
    assert layer.n_features == int(16 * math.log(16)) and layer.projection_matrix.shape == (44, 16)
    x = torch.randn(2, 19, 32, dtype=torch.float64)
    q, k, v = layer.qkv(x).view(2, 19, 3, 2, 16).permute(2, 0, 3, 1, 4)
    o = favor_attention(q, k, v, layer.projection_matrix)
    torch.testing.assert_close(layer(x), layer.out(o.transpose(1, 2).reshape(2, 19, 32)), atol=1e-13, rtol=0)


@pytest.mark.parametrize("make,match", [
    (lambda: favor_attention(torch.zeros(1, 4, 8), torch.zeros(1, 4, 8), torch.zeros(1, 4, 2), torch.zeros(5, 7)), "`projection` must be a tensor \\[n_features, d=8\\]"),
    (lambda: favor_attention(torch.zeros(1, 4, 8), torch.zeros(1, 5, 8), torch.zeros(1, 5, 2), torch.zeros(5, 8), causal=True), "same length"),
    (lambda: favor_attention(torch.zeros(1, 4, 8), torch.zeros(1, 4, 8), torch.zeros(1, 3, 2), torch.zeros(5, 8)), "`v` must have as many rows"),
    (lambda: favor_attention(torch.zeros(1, 4, 8), torch.zeros(1, 4, 8), torch.zeros(1, 4, 2), torch.zeros(5, 8), kernel="relu"), "`kernel` must be one of"),
    (lambda: favor_attention(torch.zeros(1, 4, 8), torch.zeros(1, 4, 8), torch.zeros(1, 4, 2), torch.zeros(5, 8), causal=True, kernel="performer_pytorch"), "non-causal"),
    (lambda: gaussian_orthogonal_random_matrix(0, 4), "`n_features` must be a positive integer"),
    (lambda: gaussian_orthogonal_random_matrix(4, 4, scaling=2), "`scaling` must be 0"),
    (lambda: PerformerSelfAttention(32, 4, feature_redraw_interval=0), "`feature_redraw_interval` must be a positive integer"),
    (lambda: PerformerSelfAttention(32, 4)(torch.zeros(3, 32)), "`x` must be a tensor \\[batch, n, d_model=32\\]"),
])
def test_bad_arguments(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()


def test_causal_chunked_memory_is_linear_in_n():
    from test_approx_topk import _largest_tensor_made

    q, k, v = _qkv(16, (1, 1), 1024, 16, 16)
    w = gaussian_orthogonal_random_matrix(32, 16, generator=torch.Generator().manual_seed(16), dtype=torch.float64)
    biggest = _largest_tensor_made(lambda: favor_attention(q, k, v, w, causal=True, chunk_size=16))
    assert biggest <= 1024 * 32  # features [n, m]; chunk tensors 16 x 16 x 32; never n x n
    assert _largest_tensor_made(lambda: favor_attention_quadratic(q[..., :64, :], k[..., :64, :], v[..., :64, :], w, causal=True)) >= 64 * 64 * 32
