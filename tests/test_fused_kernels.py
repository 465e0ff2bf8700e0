"""The fused CPU kernels (micro-kernel tile products, masks in the score tile, base-2 online
softmax) against the float64 oracle: head dimensions, lengths that are not multiples of the block,
fully masked rows, grouped-query heads, gradients; and their building blocks."""
import platform

import numpy as np
import pytest
import torch

from sparse_core import patterns as P
from sparse_core.attention.ops import block_sparse_attention
from sparse_core.attention.reference import attention
from sparse_core.kernels import cpu
from sparse_core.kernels import microkernels as mk


def _qkv(seed, batch, hq, hkv, n_q, n_k, d, dv, dtype):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((batch, hq, n_q, d)).astype(dtype),
            rng.standard_normal((batch, hkv, n_k, d)).astype(dtype),
            rng.standard_normal((batch, hkv, n_k, dv)).astype(dtype))


def _expand(x, group):
    return np.repeat(x, group, axis=1)


MASKED = P.sliding_window(3) & P.global_tokens([2, 3, 60])  # rows away from the globals see nothing


@pytest.mark.parametrize("d", [16, 32, 48, 64, 128])
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 2e-5)])
def test_head_dims_and_ragged_lengths_match_the_oracle(d, dtype, tol):
    for seed, (n, block, dv) in enumerate([(77, 32, d), (131, 64, 24), (200, 128, d + 3)]):
        pat = P.sliding_window(40, causal=True) | P.global_tokens([1, n - 2])
        q, k, v = _qkv(seed, 2, 2, 2, n, n, d, dv, dtype)
        lay = pat.to_layout(n, n, block, 1)
        out, lse = block_sparse_attention(q, k, v, lay, return_lse=True)
        ref, ref_lse = attention(q, k, v, mask=pat.to_dense(n, n, 1)[0], return_lse=True)
        assert out.dtype == dtype
        np.testing.assert_allclose(out, ref, atol=tol, rtol=0, err_msg=f"n={n} block={block}")
        np.testing.assert_allclose(lse, ref_lse, atol=10 * tol, rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_fully_masked_rows_are_zero_with_lse_minus_inf(dtype):
    n = 70
    q, k, v = _qkv(1, 1, 2, 2, n, n, 16, 16, dtype)
    lay = MASKED.to_layout(n, n, 16, 2)
    out, lse = block_sparse_attention(q, k, v, lay, return_lse=True)
    mask = MASKED.to_dense(n, n, 2)
    rows = ~mask.any(-1)
    assert rows.any() and (~rows).any()
    assert np.all(out[0][rows] == 0) and np.all(np.isneginf(lse[0][rows]))
    ref = attention(q, k, v, mask=mask)
    np.testing.assert_allclose(out, ref, atol=1e-12 if dtype == np.float64 else 2e-6, rtol=0)


@pytest.mark.parametrize("hq,hkv,layout_heads", [(4, 2, 4), (4, 1, 1), (6, 3, 1)])
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 2e-5)])
def test_grouped_query_forward_equals_repeated_kv(hq, hkv, layout_heads, dtype, tol):
    n, group = 90, hq // hkv
    pat = P.bigbird(n, 16, 1, n_heads=layout_heads) if layout_heads > 1 else P.sliding_window(7)
    q, k, v = _qkv(3, 2, hq, hkv, n, n, 32, 20, dtype)
    lay = pat.to_layout(n, n, 16, layout_heads)
    out = block_sparse_attention(q, k, v, lay)
    mask = pat.to_dense(n, n, layout_heads)
    ref = attention(q, _expand(k, group), _expand(v, group), mask=mask if layout_heads > 1 else mask[0])
    np.testing.assert_allclose(out, ref, atol=tol, rtol=0)
    same = block_sparse_attention(q, _expand(k, group), _expand(v, group), lay)
    np.testing.assert_allclose(out, same, atol=tol, rtol=0)


@pytest.mark.parametrize("hq,hkv", [(4, 2), (3, 1)])
def test_grouped_query_gradients_equal_repeat_interleave(hq, hkv):
    n, group = 75, hq // hkv
    pat = P.sliding_window(6, causal=True) | P.global_tokens([0])
    lay = pat.to_layout(n, n, 16, 1)
    q, k, v = (torch.tensor(x, requires_grad=True) for x in _qkv(4, 2, hq, hkv, n, n, 24, 16, np.float64))
    out = block_sparse_attention(q, k, v, lay)
    assert out.shape == (2, hq, n, 16)
    g = torch.randn_like(out, generator=torch.Generator().manual_seed(1))
    (out * g).sum().backward()
    q2, k2, v2 = (x.detach().clone().requires_grad_() for x in (q, k, v))
    mask = torch.from_numpy(pat.to_dense(n, n, 1)[0])
    ref = attention(q2, k2.repeat_interleave(group, 1), v2.repeat_interleave(group, 1), mask=mask)
    (ref * g).sum().backward()
    for a, b in ((q, q2), (k, k2), (v, v2)):
        assert a.grad.shape == b.grad.shape
        torch.testing.assert_close(a.grad, b.grad, atol=1e-12, rtol=0)


def test_gradients_with_ragged_blocks_and_masked_rows():
    n = 70
    lay = MASKED.to_layout(n, n, 32, 2)
    q, k, v = (torch.tensor(x, requires_grad=True) for x in _qkv(5, 1, 2, 2, n, n, 40, 33, np.float64))
    out = block_sparse_attention(q, k, v, lay)
    g = torch.randn_like(out, generator=torch.Generator().manual_seed(2))
    (out * g).sum().backward()
    q2, k2, v2 = (x.detach().clone().requires_grad_() for x in (q, k, v))
    mask = torch.from_numpy(MASKED.to_dense(n, n, 2))
    (attention(q2, k2, v2, mask=mask) * g).sum().backward()
    for a, b in ((q, q2), (k, k2), (v, v2)):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-12, rtol=0)
    assert (q.grad[0][~mask.any(-1)] == 0).all()


def test_float32_gradients_with_grouped_heads():
    n = 100
    pat = P.sliding_window(20)
    lay = pat.to_layout(n, n, 32, 1)
    q, k, v = (torch.tensor(x, requires_grad=True) for x in _qkv(6, 1, 4, 2, n, n, 64, 64, np.float32))
    block_sparse_attention(q, k, v, lay).square().sum().backward()
    q2, k2, v2 = (x.detach().double().requires_grad_() for x in (q, k, v))
    mask = torch.from_numpy(pat.to_dense(n, n, 1)[0])
    attention(q2, k2.repeat_interleave(2, 1), v2.repeat_interleave(2, 1), mask=mask).square().sum().backward()
    for a, b in ((q, q2), (k, k2), (v, v2)):
        torch.testing.assert_close(a.grad.double(), b.grad, atol=3e-4, rtol=1e-4)


def test_gradcheck_grouped_query_float64():
    lay = P.longformer(2, [0]).to_layout(13, 13, 4, 1)
    q, k, v = (torch.tensor(x, requires_grad=True) for x in _qkv(7, 1, 2, 1, 13, 13, 3, 2, np.float64))
    assert torch.autograd.gradcheck(lambda a, b, c: block_sparse_attention(a, b, c, lay), (q, k, v))


def test_kv_heads_must_divide_query_heads():
    q, k, v = _qkv(8, 1, 4, 3, 16, 16, 8, 8, np.float64)
    with pytest.raises(ValueError, match="`k` and `v` must have a number of heads dividing the 4 heads"):
        block_sparse_attention(q, k, v, P.causal().to_layout(16, 16, 8, 1))
    with pytest.raises(ValueError, match="batch/head dimensions differ"):
        block_sparse_attention(q, k[:, :2], v[:, :1], P.causal().to_layout(16, 16, 8, 1))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_micro_kernel_products_equal_numpy(dtype):
    rng = np.random.default_rng(9)
    rr, cc = cpu.RR, cpu.CC
    A = rng.standard_normal((2 * rr, 37)).astype(dtype)
    B = rng.standard_normal((37, 3 * cc)).astype(dtype)
    C = np.ones((2 * rr, 3 * cc), dtype)
    mk.call(cpu.MM_SET, A.ravel(), 0, 37, 1, B.ravel(), 0, 3 * cc, C.ravel(), 0, 3 * cc, 2 * rr, 3 * cc, 37, dtype(0))
    np.testing.assert_allclose(C, A @ B, rtol=1e-5 if dtype == np.float32 else 1e-13, atol=1e-4)
    # accumulate, A read transposed (row stride 1, reduction stride 2 * rr) from a [37, 2 * rr] array
    At = np.ascontiguousarray(A.T)
    mk.call(cpu.MM_ADD, At.ravel(), 0, 1, 2 * rr, B.ravel(), 0, 3 * cc, C.ravel(), 0, 3 * cc, 2 * rr, 3 * cc, 37,
            dtype(0))
    np.testing.assert_allclose(C, 2 * (A @ B), rtol=1e-5 if dtype == np.float32 else 1e-13, atol=1e-4)


def test_exp2_is_accurate_and_keeps_minus_inf_and_nan():
    from numba import njit

    @njit(fastmath={"contract", "reassoc", "arcp"})
    def run(x, out):
        for i in range(x.size):
            out[i] = mk.exp2_neg(x[i])

    x = np.concatenate([-np.linspace(0, 130, 20001), [-np.inf, np.nan]]).astype(np.float32)
    out = np.empty_like(x)
    run(x, out)
    want = np.exp2(x.astype(np.float64))
    fine = x > -126
    assert np.max(np.abs(out[fine] - want[fine]) / want[fine]) < 5e-7
    assert np.all(out[(x <= -126)] == 0) and np.isnan(out[-1])


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86 vector instructions")
def test_micro_kernel_is_vector_code_without_any_setting():
    from numba.core import config

    from numba import njit

    before = config.SLP_VECTORIZE
    g = njit(fastmath={"contract"})(mk.gemm(2, 16, False).py_func)  # uncached: compiled here, through mk.call
    a = np.ones(2 * 8, np.float32)
    b = np.ones(8 * 16, np.float32)
    c = np.zeros(2 * 16, np.float32)
    mk.call(g, a, 0, 8, 1, b, 0, 16, c, 0, 16, 2, 16, 8, np.float32(0))
    assert np.all(c == 8) and config.SLP_VECTORIZE == before
    asm = "".join(g.inspect_asm().values())
    assert "vfmadd231ps" in asm or "vfmadd213ps" in asm or "vfmadd132ps" in asm, "tile product is scalar code"
