"""block_sparse_attention (Numba CPU kernels) against the float64 oracle, SDPA and FlexAttention."""
import warnings

import numpy as np
import pytest
import torch

from sparse_core import patterns as P
from sparse_core.attention.ops import block_sparse_attention
from sparse_core.attention.reference import attention

TOL = {np.float64: 1e-12, np.float32: 1e-5}

PATTERNS = [  # (id, pattern, heads): every family; lengths below are not multiples of the blocks
    ("dense", P.dense(), 2),
    ("causal", P.causal(), 2),
    ("window", P.sliding_window(5, causal=True), 2),
    ("dilated", P.dilated(2, [1, 3]), 2),
    ("block-local", P.block_local(10), 2),
    ("strided", P.strided(6), 2),
    ("fixed", P.fixed(8, 2, num_patterns=2), 2),
    ("axial", P.axial(9, 9), 2),
    ("global", P.global_tokens([0, 40]), 2),
    ("random", P.random_pattern(0.15, seed=2), 3),
    ("longformer", P.longformer(3, [1, 50]), 2),
    ("bigbird", P.bigbird(75, 8, num_random_blocks=2, n_heads=2), 2),
    ("topk", P.topk(np.random.default_rng(0).standard_normal((2, 75, 75)), 6, causal=True), 2),
    ("masked-rows", P.sliding_window(2) & P.global_tokens([3, 4, 70]), 2),
]


def _inputs(seed, shape_q, n_k, d_v, dtype):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal(shape_q).astype(dtype)
    k = rng.standard_normal(shape_q[:-2] + (n_k, shape_q[-1])).astype(dtype)
    v = rng.standard_normal(shape_q[:-2] + (n_k, d_v)).astype(dtype)
    return q, k, v


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name,pattern,H", PATTERNS, ids=[p[0] for p in PATTERNS])
def test_forward_matches_oracle(name, pattern, H, dtype):
    n = 81 if name == "axial" else 75
    for seed, (batch, B, d, d_v) in enumerate([(1, 8, 16, 16), (2, 16, 8, 5)]):
        q, k, v = _inputs(seed, (batch, H, n, d), n, d_v, dtype)
        lay = pattern.to_layout(n, n, B, H)
        out, lse = block_sparse_attention(q, k, v, lay, return_lse=True)
        assert out.dtype == dtype and out.shape == (batch, H, n, d_v)
        mask = pattern.to_dense(n, n, H)
        ref, ref_lse = attention(q, k, v, mask=mask, return_lse=True)
        np.testing.assert_allclose(out, ref, atol=TOL[dtype], rtol=0, err_msg=f"{name} B={B}")
        np.testing.assert_array_equal(np.isneginf(lse), np.isneginf(ref_lse))
        fin = np.isfinite(ref_lse)
        np.testing.assert_allclose(lse[fin], ref_lse[fin], atol=TOL[dtype] * 10, rtol=1e-6)
        assert np.all(out[np.broadcast_to(~mask.any(-1), out.shape[:-1])] == 0)


def test_rectangular_and_shared_layout():
    p = P.sliding_window(4) | P.global_tokens([0])
    q, k, v = _inputs(5, (2, 3, 37, 8), 53, 6, np.float64)
    lay = p.to_layout(37, 53, 8, 1)  # one layout shared by the 3 heads
    ref = attention(q, k, v, mask=p.to_dense(37, 53, 1)[0])
    np.testing.assert_allclose(block_sparse_attention(q, k, v, lay), ref, atol=1e-12)
    lay_t = P.sliding_window(4).to_layout(53, 37, 16, 3)
    q2, k2, v2 = _inputs(6, (3, 53, 8), 37, 8, np.float64)  # no batch dimension
    ref2 = attention(q2, k2, v2, mask=P.sliding_window(4).to_dense(53, 37, 3))
    np.testing.assert_allclose(block_sparse_attention(q2, k2, v2, lay_t), ref2, atol=1e-12)


@pytest.mark.parametrize("name,pattern,H", [PATTERNS[i] for i in (2, 5, 9, 11, 13)], ids=lambda x: x if isinstance(x, str) else "")
def test_gradients_equal_autograd_through_the_oracle(name, pattern, H):
    n = 75
    q, k, v = (torch.tensor(x, requires_grad=True) for x in _inputs(7, (2, H, n, 8), n, 8, np.float64))
    lay = pattern.to_layout(n, n, 16, H)
    out = block_sparse_attention(q, k, v, lay)
    grad = torch.randn_like(out, generator=torch.Generator().manual_seed(0))
    (out * grad).sum().backward()
    q2, k2, v2 = (x.detach().clone().requires_grad_() for x in (q, k, v))
    mask = torch.from_numpy(pattern.to_dense(n, n, H))
    (attention(q2, k2, v2, mask=mask) * grad).sum().backward()
    for a, b in ((q, q2), (k, k2), (v, v2)):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-12, rtol=0)
    rows = ~mask.any(-1)
    if rows.any():
        assert (q.grad[:, rows] == 0).all()  # rows: [H, n]; fully masked rows get zero gradient


def test_float32_gradients_within_tolerance():
    p = P.bigbird(90, 16, 1, n_heads=2)
    q, k, v = (torch.tensor(x, requires_grad=True) for x in _inputs(8, (1, 2, 90, 16), 90, 16, np.float32))
    lay = p.to_layout(90, 90, 16, 2)
    block_sparse_attention(q, k, v, lay).square().sum().backward()
    q2, k2, v2 = (x.detach().double().requires_grad_() for x in (q, k, v))
    attention(q2, k2, v2, mask=torch.from_numpy(p.to_dense(90, 90, 2))).square().sum().backward()
    for a, b in ((q, q2), (k, k2), (v, v2)):
        torch.testing.assert_close(a.grad.double(), b.grad, atol=2e-4, rtol=1e-4)


def test_gradcheck_float64():
    p = P.longformer(2, [0])
    lay = p.to_layout(19, 19, 4, 1)
    q, k, v = (torch.tensor(x, requires_grad=True) for x in _inputs(9, (1, 2, 19, 3), 19, 2, np.float64))
    assert torch.autograd.gradcheck(lambda a, b, c: block_sparse_attention(a, b, c, lay), (q, k, v))


def test_equals_sdpa_and_flex_attention():
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    p = P.longformer(8, [0, 3]) | P.random_pattern(0.05)
    n, H = 128, 2
    q, k, v = (torch.tensor(x) for x in _inputs(10, (2, H, n, 16), n, 16, np.float32))
    ours = block_sparse_attention(q, k, v, p.to_layout(n, n, 32, H))
    mask = torch.from_numpy(p.to_dense(n, n, H))
    sdpa = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    torch.testing.assert_close(ours, sdpa, atol=1e-5, rtol=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bm = create_block_mask(p.mask_mod, None, H, n, n, device="cpu", BLOCK_SIZE=32)
        flex = flex_attention(q, k, v, block_mask=bm)
    torch.testing.assert_close(ours, flex, atol=1e-5, rtol=0)


def test_non_contiguous_inputs_and_nan_propagation():
    p = P.sliding_window(3)
    q, k, v = _inputs(11, (1, 2, 40, 8), 40, 8, np.float64)
    qt = np.swapaxes(np.ascontiguousarray(np.swapaxes(q, 2, 3)), 2, 3)  # same values, not C-contiguous
    assert not qt.flags.c_contiguous
    lay = p.to_layout(40, 40, 8, 2)
    np.testing.assert_allclose(block_sparse_attention(qt, k, v, lay), attention(q, k, v, mask=p.to_dense(40, 40, 2)),
                               atol=1e-12)
    q[0, 0, 5, 0] = np.nan
    out = block_sparse_attention(q, k, v, lay)
    assert np.isnan(out[0, 0, 5]).all()
    assert np.isfinite(np.delete(out[0, 0], 5, axis=0)).all()  # other rows are not hidden or poisoned
    k[0, 1, 20, 0] = np.inf
    ref = attention(q, k, v, mask=p.to_dense(40, 40, 2))
    np.testing.assert_array_equal(np.isnan(block_sparse_attention(q, k, v, lay)), np.isnan(ref))


@pytest.mark.parametrize(
    "args,exc,match",
    [
        (lambda q, k, v, lay: (q[0, 0], k, v, lay), ValueError, "must be \\[batch, heads, n, d\\]"),
        (lambda q, k, v, lay: (q.astype(np.float16), k, v, lay), TypeError, "float32 or float64"),
        (lambda q, k, v, lay: (q.astype(np.float32), k, v, lay), TypeError, "share one dtype"),
        (lambda q, k, v, lay: (q, k[:, :, :30], v, lay), ValueError, "as many rows as `k`"),
        (lambda q, k, v, lay: (q[:, :, :30], k, v, lay), ValueError, "`layout` is for n_q=40"),
        (lambda q, k, v, lay: (np.concatenate([q, q], 1), np.concatenate([k, k], 1), np.concatenate([v, v], 1), lay),
         ValueError, "`layout` has 2 heads; the inputs have 4"),
        (lambda q, k, v, lay: (q, k, v, "layout"), TypeError, "`layout` must be a BlockLayout"),
        (lambda q, k, v, lay: (torch.from_numpy(q), k, v, lay), TypeError, "a mix"),
    ],
)
def test_bad_input_is_a_clear_error(args, exc, match):
    q, k, v = _inputs(12, (1, 2, 40, 8), 40, 8, np.float64)
    lay = P.causal().to_layout(40, 40, 8, 2)
    with pytest.raises(exc, match=match):
        block_sparse_attention(*args(q, k, v, lay))


@pytest.mark.parametrize("name,pattern,H", PATTERNS, ids=[p[0] for p in PATTERNS])
def test_every_family_equals_flex_attention_eager(name, pattern, H):
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    n = 81 if name == "axial" else 75
    q, k, v = (torch.tensor(x) for x in _inputs(13, (1, H, n, 8), n, 8, np.float32))
    ours = block_sparse_attention(q, k, v, pattern.to_layout(n, n, 16, H))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bm = create_block_mask(pattern.mask_mod, None, H, n, n, device="cpu", BLOCK_SIZE=16)
        flex = flex_attention(q, k, v, block_mask=bm)
    rows = torch.from_numpy(pattern.to_dense(n, n, H).any(-1))[None]  # flex's output on fully masked rows is 0 too
    torch.testing.assert_close(ours[rows], flex[rows], atol=1e-5, rtol=0)
    assert (ours[~rows] == 0).all()


def test_mask_mod_works_in_compiled_flex_attention():
    """torch.compile(flex_attention) inlines mask_mod on 0-d tensors; it must lower and agree."""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    p = P.longformer(16, [0, 5]) | P.random_pattern(0.02, seed=4)
    n, H = 256, 2
    q, k, v = (torch.tensor(x) for x in _inputs(14, (1, H, n, 16), n, 16, np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bm = create_block_mask(p.mask_mod, None, H, n, n, device="cpu", BLOCK_SIZE=128)
        flex = torch.compile(flex_attention)(q, k, v, block_mask=bm)
    torch.testing.assert_close(block_sparse_attention(q, k, v, p.to_layout(n, n, 64, H)), flex, atol=1e-5, rtol=0)
