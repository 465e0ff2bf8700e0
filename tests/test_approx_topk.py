"""Top-k attention: exact and blockwise both equal the float64 oracle with the top-k mask."""
import numpy as np
import pytest
import torch

from sparse_core import patterns as P
from sparse_core import reference
from sparse_core.approx.topk import TopKSelfAttention, topk_attention, topk_attention_blockwise, topk_mask


def _qkv(seed, shape=(2, 3), n_q=37, n_k=37, d=16, dv=8, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, n_q, d, generator=g, dtype=dtype), torch.randn(*shape, n_k, d, generator=g, dtype=dtype),
            torch.randn(*shape, n_k, dv, generator=g, dtype=dtype))


def _oracle_mask(q, k, topk, causal):
    """The top-k mask built by the library's TopK pattern from float64 scores (independent code path)."""
    s = (q.double() @ k.double().transpose(-1, -2) / q.shape[-1] ** 0.5).reshape(-1, q.shape[-2], k.shape[-2])
    masks = [P.topk(s[i].numpy(), topk, causal=causal).to_dense(q.shape[-2], k.shape[-2], 1)[0] for i in range(s.shape[0])]
    return torch.from_numpy(np.stack(masks)).reshape(*q.shape[:-2], q.shape[-2], k.shape[-2])


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("seed,n_q,n_k,topk,block", [(0, 37, 37, 5, 8), (1, 64, 64, 1, 16), (2, 50, 50, 80, 7),
                                                     (3, 33, 33, 32, 32), (4, 20, 45, 3, 6)])
def test_exact_and_blockwise_equal_the_oracle(seed, n_q, n_k, topk, block, causal):
    q, k, v = _qkv(seed, (2, 3), n_q, n_k)
    mask = _oracle_mask(q, k, topk, causal)
    ref = reference.attention(q, k, v, mask=mask)
    torch.testing.assert_close(topk_mask(q, k, topk, causal=causal), mask)
    torch.testing.assert_close(topk_attention(q, k, v, topk, causal=causal), ref, atol=1e-12, rtol=0)
    torch.testing.assert_close(topk_attention_blockwise(q, k, v, topk, causal=causal, block_size=block), ref,
                               atol=1e-12, rtol=0)
    kept = mask.sum(-1)
    expected = torch.clamp(torch.arange(n_q) + 1, max=min(topk, n_k)) if causal else torch.full((n_q,), min(topk, n_k))
    assert torch.equal(kept, expected.expand_as(kept))


@pytest.mark.parametrize("dtype,atol", [(torch.float32, 2e-6), (torch.float64, 1e-12)])
def test_float32_and_float64(dtype, atol):
    q, k, v = _qkv(5, (2, 2), 41, 41, 16, 8, dtype)
    ref = reference.attention(q, k, v, mask=_oracle_mask(q, k, 6, True))
    for out in (topk_attention(q, k, v, 6, causal=True), topk_attention_blockwise(q, k, v, 6, causal=True, block_size=8)):
        assert out.dtype == dtype
        torch.testing.assert_close(out.double(), ref, atol=atol, rtol=0)


def test_ties_go_to_the_smaller_index():
    """Integer data makes exact ties; both versions keep the first keys among equals, like the pattern."""
    g = torch.Generator().manual_seed(6)
    q = torch.randint(-2, 3, (1, 2, 30, 4), generator=g).double()
    k = torch.randint(-1, 2, (1, 2, 30, 4), generator=g).double()
    v = torch.randn(1, 2, 30, 3, generator=g, dtype=torch.float64)
    for causal in (False, True):
        mask = _oracle_mask(q, k, 4, causal)
        ref = reference.attention(q, k, v, mask=mask)
        torch.testing.assert_close(topk_mask(q, k, 4, causal=causal), mask)
        torch.testing.assert_close(topk_attention(q, k, v, 4, causal=causal), ref, atol=1e-12, rtol=0)
        for block in (1, 4, 7):
            torch.testing.assert_close(topk_attention_blockwise(q, k, v, 4, causal=causal, block_size=block), ref,
                                       atol=1e-12, rtol=0)
    # all scores equal: the first k keys win
    z = torch.zeros(1, 1, 6, 4, dtype=torch.float64)
    assert torch.equal(topk_mask(z, z, 2)[0, 0], torch.tensor([[True, True, False, False, False, False]] * 6))


def test_topk_equal_to_n_is_dense_attention_and_gradients_match():
    q, k, v = (t.requires_grad_() for t in _qkv(7, (1, 2), 19, 19))
    out = topk_attention_blockwise(q, k, v, 19, block_size=4)
    torch.testing.assert_close(out, reference.attention(q, k, v), atol=1e-12, rtol=0)
    out.square().sum().backward()
    g1 = [t.grad.clone() for t in (q, k, v)]
    for t in (q, k, v):
        t.grad = None
    topk_attention(q, k, v, 5).square().sum().backward()
    g_exact = [t.grad.clone() for t in (q, k, v)]
    for t in (q, k, v):
        t.grad = None
    topk_attention_blockwise(q, k, v, 5, block_size=4).square().sum().backward()
    for a, b in zip(g_exact, [t.grad for t in (q, k, v)]):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)
    assert all(torch.isfinite(g).all() for g in g1)


def test_causal_layer_never_looks_ahead():
    layer = TopKSelfAttention(32, 4, topk=3, causal=True, block_size=8).double()
    x = torch.randn(2, 30, 32, dtype=torch.float64)
    x2 = x.clone()
    x2[:, 17:] = 100 * torch.randn(2, 13, 32, dtype=torch.float64)
    assert torch.equal(layer(x)[:, :17], layer(x2)[:, :17])


def test_layer_exact_and_blockwise_agree_and_match_the_oracle():
    exact = TopKSelfAttention(32, 4, topk=5).double()
    block = TopKSelfAttention(32, 4, topk=5, block_size=8).double()
    block.load_state_dict(exact.state_dict())
    x = torch.randn(2, 27, 32, dtype=torch.float64)
    q, k, v = exact.qkv(x).view(2, 27, 3, 4, 8).permute(2, 0, 3, 1, 4)
    o = reference.attention(q, k, v, mask=_oracle_mask(q.detach(), k.detach(), 5, False))
    ref = exact.out(o.transpose(1, 2).reshape(2, 27, 32))
    torch.testing.assert_close(exact(x), ref, atol=1e-12, rtol=0)
    torch.testing.assert_close(block(x), ref, atol=1e-12, rtol=0)
    assert "topk=5" in repr(block)


@pytest.mark.parametrize("make,match", [
    (lambda: topk_attention(*_qkv(0, (1,), 4, 4), 0), "`topk` must be a positive integer"),
    (lambda: topk_attention_blockwise(*_qkv(0, (1,), 4, 4), 2, block_size=0), "`block_size` must be a positive integer"),
    (lambda: topk_attention(*_qkv(0, (1,), 4, 4), 2, causal=1), "`causal` must be a bool"),
    (lambda: topk_attention(torch.zeros(4, 8), torch.zeros(4, 7), torch.zeros(4, 2), 2), "same head dimension"),
    (lambda: topk_attention(np.zeros((4, 8)), np.zeros((4, 8)), np.zeros((4, 8)), 2), "must be a torch.Tensor"),
    (lambda: TopKSelfAttention(32, 4, topk=-1), "`topk` must be a positive integer"),
    (lambda: TopKSelfAttention(32, 4, topk=2)(torch.zeros(1, 5, 31)), "`x` must be a tensor \\[batch, n, d_model=32\\]"),
])
def test_bad_arguments(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()


def _largest_tensor_made(fn):
    """The most elements of any tensor produced by an aten op while ``fn`` runs."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Track(TorchDispatchMode):
        biggest = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in (out if isinstance(out, (tuple, list)) else (out,)):
                if isinstance(t, torch.Tensor):
                    Track.biggest = max(Track.biggest, t.numel())
            return out

    with Track():
        fn()
    return Track.biggest


def test_blockwise_never_makes_the_score_matrix():
    q, k, v = _qkv(8, (1, 1), 512, 512, 16, 16)
    biggest = _largest_tensor_made(lambda: topk_attention_blockwise(q, k, v, 8, causal=True, block_size=32))
    assert biggest <= 512 * 16  # the inputs/outputs; tiles are 32 x (8 + 32), gathers 32 x 8 x 16
    assert _largest_tensor_made(lambda: topk_attention(q, k, v, 8)) >= 512 * 512  # the dense version does
