"""Linformer: equals the `linformer` package on the same weights, and the oracle on projected keys/values."""
import pytest
import torch
from torch import nn

from sparse_core import reference
from sparse_core.approx.linformer import LinformerSelfAttention, linformer_attention


@pytest.mark.parametrize("share_kv", [False, True])
@pytest.mark.parametrize("one_kv_head,dim_head", [(False, None), (True, None), (False, 5), (True, 24)])
@pytest.mark.parametrize("seed,dim,heads,seq_len,k,n", [(0, 32, 4, 64, 16, 64), (1, 48, 3, 50, 7, 33), (2, 16, 1, 9, 9, 9)])
@pytest.mark.parametrize("dtype,atol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
def test_equals_linformer_package(share_kv, one_kv_head, dim_head, seed, dim, heads, seq_len, k, n, dtype, atol):
    lf = pytest.importorskip("linformer", reason="linformer is not installed (extra 'equiv')")
    torch.manual_seed(seed)
    theirs = lf.LinformerSelfAttention(dim, seq_len, k=k, heads=heads, dim_head=dim_head, one_kv_head=one_kv_head,
                                       share_kv=share_kv, dropout=0.0).to(dtype).eval()
    ours = LinformerSelfAttention.from_linformer(theirs)
    assert ours.sharing == ("kv" if share_kv else "headwise") and ours.qkv.weight.dtype == dtype
    assert ours.n_kv_heads == (1 if one_kv_head else heads) and ours.d_head == (dim_head or dim // heads)
    x = torch.randn(2, n, dim, dtype=dtype, generator=torch.Generator().manual_seed(seed + 10), requires_grad=True)
    y = ours(x)
    x2 = x.detach().clone().requires_grad_()
    y2 = theirs(x2)
    torch.testing.assert_close(y, y2, atol=atol, rtol=0)
    y.square().sum().backward()
    y2.square().sum().backward()
    torch.testing.assert_close(x.grad, x2.grad, atol=20 * atol, rtol=0)
    torch.testing.assert_close(ours.proj_k.grad, theirs.proj_k.grad, atol=100 * atol, rtol=1e-5)


@pytest.mark.parametrize("seed,n,kproj", [(0, 37, 5), (1, 64, 64), (2, 3, 8)])
def test_functional_is_the_oracle_on_projected_keys(seed, n, kproj):
    g = torch.Generator().manual_seed(seed)
    q, k = (torch.randn(2, 3, n, 8, generator=g, dtype=torch.float64) for _ in range(2))
    v = torch.randn(2, 3, n, 6, generator=g, dtype=torch.float64)
    E, F = (torch.randn(3, n + 4, kproj, generator=g, dtype=torch.float64) for _ in range(2))  # per head
    ref = reference.attention(q, E[:, :n].transpose(-1, -2) @ k, F[:, :n].transpose(-1, -2) @ v)
    torch.testing.assert_close(linformer_attention(q, k, v, E, F), ref, atol=1e-12, rtol=0)
    ref_shared = reference.attention(q, E[0, :n].T @ k, E[0, :n].T @ v)
    torch.testing.assert_close(linformer_attention(q, k, v, E[0]), ref_shared, atol=1e-12, rtol=0)


def test_identity_projection_is_dense_attention():
    """E = F = I_n (k = n) keeps every key: Linformer reduces to exact softmax attention."""
    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(2, 2, 20, 8, generator=g, dtype=torch.float64) for _ in range(3))
    eye = torch.eye(20, dtype=torch.float64)
    torch.testing.assert_close(linformer_attention(q, k, v, eye, eye), reference.attention(q, k, v), atol=1e-12, rtol=0)


@pytest.mark.parametrize("sharing", ["none", "headwise", "kv"])
def test_sharing_modes_have_the_right_parameters(sharing):
    layer = LinformerSelfAttention(32, 4, seq_len=40, k=8, sharing=sharing).double()
    shape = (4, 40, 8) if sharing == "none" else (40, 8)
    assert layer.E.shape == shape and layer.F.shape == shape
    assert (layer.E is layer.F) == (sharing == "kv")
    x = torch.randn(3, 25, 32, dtype=torch.float64)
    q, k, v = layer.qkv(x).view(3, 25, 3, 4, 8).permute(2, 0, 3, 1, 4)
    o = reference.attention(q, layer.E[..., :25, :].transpose(-1, -2) @ k, layer.F[..., :25, :].transpose(-1, -2) @ v)
    torch.testing.assert_close(layer(x), layer.out(o.transpose(1, 2).reshape(3, 25, 32)), atol=1e-12, rtol=0)


def test_layerwise_sharing_uses_one_parameter():
    shared = nn.Parameter(torch.randn(30, 6))
    a = LinformerSelfAttention(16, 2, 30, 6, projection=shared)
    b = LinformerSelfAttention(16, 2, 30, 6, projection=shared)
    assert a.sharing == b.sharing == "layerwise" and a.E is b.F is shared
    (a(torch.randn(1, 30, 16)).sum() + b(torch.randn(1, 30, 16)).sum()).backward()
    assert shared.grad is not None and sum(p is shared for p in nn.ModuleList([a, b]).parameters()) == 1


def test_projection_leaks_the_future_which_is_why_causal_raises():
    """Changing the last token changes the first output: no mask after E^T K can prevent it."""
    layer = LinformerSelfAttention(16, 2, seq_len=12, k=4).double()
    x = torch.randn(1, 12, 16, dtype=torch.float64)
    x2 = x.clone()
    x2[:, -1] += 1.0
    assert not torch.allclose(layer(x)[:, 0], layer(x2)[:, 0])
    with pytest.raises(ValueError, match="no causal version"):
        LinformerSelfAttention(16, 2, seq_len=12, k=4, causal=True)
    with pytest.raises(ValueError, match="no causal version"):
        linformer_attention(x, x, x, torch.eye(12, dtype=torch.float64), causal=True)


@pytest.mark.parametrize("make,match", [
    (lambda: LinformerSelfAttention(16, 2, 8, 4)(torch.zeros(1, 9, 16)), "at most seq_len=8"),
    (lambda: LinformerSelfAttention(16, 2, 8, 4, sharing="layer"), "`sharing` must be one of"),
    (lambda: LinformerSelfAttention(16, 2, 8, 0), "`k` must be a positive integer"),
    (lambda: LinformerSelfAttention(16, 2, 8, 4, projection=nn.Parameter(torch.zeros(8, 3))), "`projection` must be an nn.Parameter"),
    (lambda: LinformerSelfAttention(15, 2, 8, 4), "divisible"),
    (lambda: linformer_attention(torch.zeros(1, 9, 4), torch.zeros(1, 9, 4), torch.zeros(1, 9, 4), torch.zeros(8, 2)), "`E` covers at most 8"),
    (lambda: linformer_attention(torch.zeros(1, 9, 4), torch.zeros(1, 9, 4), torch.zeros(1, 9, 4), "E"), "`E` must be a tensor"),
])
def test_bad_arguments(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()


def test_head_dim_and_one_kv_head_widths():
    layer = LinformerSelfAttention(30, 4, 40, k=8, num_kv_heads=1, head_dim=6)
    assert layer.qkv.weight.shape == (4 * 6 + 2 * 6, 30) and layer.out.weight.shape == (30, 24)
    assert layer(torch.randn(2, 40, 30)).shape == (2, 40, 30)
    assert "num_kv_heads=1, head_dim=6" in repr(layer)
    with pytest.raises(ValueError, match="`head_dim` must be None or a positive integer"):
        LinformerSelfAttention(30, 4, 40, head_dim=0)
    with pytest.raises(ValueError, match="`d_model`=30 must be divisible by `n_heads`=4"):
        LinformerSelfAttention(30, 4, 40)
