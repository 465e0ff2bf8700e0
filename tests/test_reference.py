"""The float64 oracle: against independent computations, torch SDPA, edge cases and bad input."""
import math

import numpy as np
import pytest
import torch

from sparse_core import reference as ref

SHAPES = [  # (batch dims, n_q, n_k, d, d_v): lengths that are not multiples of any block size
    ((), 1, 1, 1, 1),
    ((), 7, 13, 4, 3),
    ((2,), 33, 17, 8, 8),
    ((2, 3), 65, 130, 16, 5),
]


def _qkv(seed, batch, n_q, n_k, d, d_v, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(batch + (n_q, d)).astype(dtype),
            rng.standard_normal(batch + (n_k, d)).astype(dtype),
            rng.standard_normal(batch + (n_k, d_v)).astype(dtype))


def _loop_attention(q, k, v, mask, scale):
    """A deliberately naive per-row loop in Python floats (math.exp), independent of the oracle."""
    out = np.zeros(q.shape[:-1] + (v.shape[-1],))
    for idx in np.ndindex(q.shape[:-2]):
        for i in range(q.shape[-2]):
            allowed = [j for j in range(k.shape[-2]) if mask[idx + (i, j)]]
            if not allowed:
                continue
            s = [scale * float(np.dot(q[idx + (i,)], k[idx + (j,)])) for j in allowed]
            m = max(s)
            w = [math.exp(x - m) for x in s]
            z = sum(w)
            out[idx + (i,)] = sum(wj / z * v[idx + (j,)] for wj, j in zip(w, allowed))
    return out


@pytest.mark.parametrize("seed,shape", list(enumerate(SHAPES)))
def test_matches_naive_loop_with_mask_and_masked_rows(seed, shape):
    batch, n_q, n_k, d, d_v = shape
    q, k, v = _qkv(seed, *shape)
    rng = np.random.default_rng(100 + seed)
    mask = rng.random(batch + (n_q, n_k)) < 0.5
    mask[..., 0, :] = False  # fully masked row
    got = ref.attention(q, k, v, mask=mask)
    expected = _loop_attention(q, k, v, mask, 1 / math.sqrt(d))
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    assert np.all(got[..., 0, :] == 0)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("seed,shape", list(enumerate(SHAPES[1:])))
def test_matches_torch_sdpa(seed, shape, causal):
    q, k, v = _qkv(seed, *shape)
    tq, tk, tv = (torch.from_numpy(x) for x in (q, k, v))
    n_q, n_k = shape[1], shape[2]
    mask = ref.causal_mask(n_q, n_k) if causal else np.ones((n_q, n_k), bool)
    expected = torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, attn_mask=torch.from_numpy(mask))
    np.testing.assert_allclose(ref.attention(q, k, v, causal=causal), expected.numpy(), atol=1e-12, rtol=0)


def test_torch_input_gives_differentiable_float64_and_zero_grad_on_masked_rows():
    q, k, v = (torch.from_numpy(x).requires_grad_() for x in _qkv(1, (2,), 9, 11, 4, 4))
    mask = torch.rand(9, 11, generator=torch.Generator().manual_seed(0)) < 0.5
    mask[3] = False
    out, lse = ref.attention(q, k, v, mask=mask, return_lse=True)
    assert out.dtype == torch.float64 and lse.shape == (2, 9)
    assert torch.isneginf(lse[:, 3]).all() and torch.isfinite(lse[:, [0, 1, 2, 4]]).all()
    out.square().sum().backward()
    for t in (q, k, v):
        assert torch.isfinite(t.grad).all()
    assert (q.grad[:, 3] == 0).all()
    # gradient equals SDPA's on the rows that have keys
    q2, k2, v2 = (t.detach().clone().requires_grad_() for t in (q, k, v))
    mask2 = mask.clone()
    mask2[3] = True  # SDPA would give NaN on a fully masked row; compare the rest
    sd = torch.nn.functional.scaled_dot_product_attention(q2, k2, v2, attn_mask=mask2)
    keep = torch.ones(9, dtype=torch.bool)
    keep[3] = False
    sd[:, keep].square().sum().backward()
    torch.testing.assert_close(q.grad[:, keep], q2.grad[:, keep], atol=1e-12, rtol=0)
    torch.testing.assert_close(v.grad, v2.grad, atol=1e-12, rtol=0)


def test_gradcheck_float64():
    q, k, v = (torch.from_numpy(x).requires_grad_() for x in _qkv(2, (), 5, 6, 3, 2))
    mask = torch.tensor(ref.causal_mask(5, 6))
    assert torch.autograd.gradcheck(lambda a, b, c: ref.attention(a, b, c, mask=mask), (q, k, v))


def test_lse_matches_logsumexp():
    q, k, v = _qkv(3, (2,), 8, 10, 4, 4)
    _, lse = ref.attention(q, k, v, return_lse=True, scale=0.7)
    s = 0.7 * q @ np.swapaxes(k, -1, -2)
    np.testing.assert_allclose(lse, np.log(np.exp(s).sum(-1)), atol=1e-12)


def test_large_logits_are_stable():
    q, k, v = _qkv(4, (), 6, 9, 4, 4)
    out = ref.attention(q * 1e3, k, v)
    assert np.all(np.isfinite(out))
    # with huge logits the softmax is the argmax
    idx = np.argmax(q @ k.T, axis=-1)
    np.testing.assert_allclose(out, v[idx], atol=1e-12)


def test_float32_and_float16_inputs_are_computed_in_float64():
    q, k, v = _qkv(5, (), 7, 7, 4, 4)
    for dtype in (np.float32, np.float16):
        q_, k_, v_ = (x.astype(dtype) for x in (q, k, v))
        got = ref.attention(q_, k_, v_)
        assert got.dtype == np.float64
        np.testing.assert_allclose(got, ref.attention(*(x.astype(np.float64) for x in (q_, k_, v_))), atol=0)


def test_mask_broadcasts_over_batch_and_heads():
    q, k, v = _qkv(6, (2, 3), 5, 7, 4, 4)
    mask = np.random.default_rng(0).random((5, 7)) < 0.5
    full = np.broadcast_to(mask, (2, 3, 5, 7))
    np.testing.assert_array_equal(ref.attention(q, k, v, mask=mask), ref.attention(q, k, v, mask=full))


def test_causal_is_top_left_aligned_and_anded_with_mask():
    np.testing.assert_array_equal(ref.causal_mask(2, 3), [[True, False, False], [True, True, False]])
    np.testing.assert_array_equal(ref.causal_mask(3, 2), [[True, False], [True, True], [True, True]])
    q, k, v = _qkv(7, (), 6, 6, 4, 4)
    mask = np.random.default_rng(1).random((6, 6)) < 0.5
    np.testing.assert_array_equal(ref.attention(q, k, v, mask=mask, causal=True),
                                  ref.attention(q, k, v, mask=mask & ref.causal_mask(6, 6)))


def test_nan_input_propagates():
    q, k, v = _qkv(8, (), 4, 5, 3, 3)
    q[2, 1] = np.nan
    out = ref.attention(q, k, v)
    assert np.isnan(out[2]).all() and np.isfinite(np.delete(out, 2, axis=0)).all()


def test_weights_and_masked_softmax_rows_sum_to_one_or_zero():
    q, k, _ = _qkv(9, (3,), 6, 8, 4, 4)
    mask = np.random.default_rng(2).random((3, 6, 8)) < 0.4
    mask[1, 2] = False
    p = ref.attention_weights(q, k, mask=mask)
    sums = p.sum(-1)
    np.testing.assert_allclose(sums[mask.any(-1)], 1.0, atol=1e-12)
    assert np.all(sums[~mask.any(-1)] == 0) and np.all(p[~mask] == 0)
    np.testing.assert_allclose(ref.masked_softmax(q @ np.swapaxes(k, -1, -2) / 2, mask), p, atol=1e-12)
    pt = ref.masked_softmax(torch.from_numpy(q @ np.swapaxes(k, -1, -2) / 2), torch.from_numpy(mask))
    np.testing.assert_allclose(pt.numpy(), p, atol=1e-12)


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        (dict(q=np.zeros((3, 4)), k=np.zeros((5, 3)), v=np.zeros((5, 2))), ValueError, "`k` must have the same head dimension"),
        (dict(q=np.zeros((3, 4)), k=np.zeros((5, 4)), v=np.zeros((6, 2))), ValueError, "`v` must have as many rows"),
        (dict(q=np.zeros(4), k=np.zeros((5, 4)), v=np.zeros((5, 2))), ValueError, "`q` must have at least 2"),
        (dict(q=np.zeros((3, 4), int), k=np.zeros((5, 4)), v=np.zeros((5, 2))), TypeError, "`q` must have dtype"),
        (dict(q=np.zeros((3, 4)), k=torch.zeros(5, 4), v=np.zeros((5, 2))), TypeError, "a mix"),
        (dict(q=[[0.0]], k=np.zeros((1, 1)), v=np.zeros((1, 1))), TypeError, "`q` must be a numpy.ndarray"),
        (dict(q=np.zeros((2, 3, 4)), k=np.zeros((4, 5, 4)), v=np.zeros((4, 5, 2))), ValueError, "do not broadcast"),
        (dict(q=np.zeros((3, 4)), k=np.zeros((5, 4)), v=np.zeros((5, 2)), mask=np.ones((3, 4), bool)), ValueError, "`mask` of shape"),
        (dict(q=np.zeros((3, 4)), k=np.zeros((5, 4)), v=np.zeros((5, 2)), mask=np.ones((3, 5))), TypeError, "`mask` must be boolean"),
        (dict(q=np.zeros((3, 4)), k=np.zeros((5, 4)), v=np.zeros((5, 2)), scale=float("nan")), ValueError, "`scale` must be finite"),
        (dict(q=np.zeros((3, 4)), k=np.zeros((5, 4)), v=np.zeros((5, 2)), scale="1"), TypeError, "`scale` must be a real"),
        (dict(q=np.zeros((3, 4)), k=np.zeros((5, 4)), v=np.zeros((5, 2)), causal=1), TypeError, "`causal` must be a bool"),
        (dict(q=torch.zeros(3, 4), k=torch.zeros(5, 4), v=torch.zeros(5, 2), mask=torch.ones(3, 5)), TypeError, "`mask` must be boolean"),
    ],
)
def test_bad_input_names_the_argument(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        ref.attention(**kwargs)


@pytest.mark.parametrize("to", [np.asarray, torch.from_numpy])
def test_no_keys_gives_zeros_and_neg_inf_lse(to):
    q, k, v = (to(x) for x in _qkv(15, (2,), 3, 0, 4, 5))
    out, lse = ref.attention(q, k, v, return_lse=True)
    assert tuple(out.shape) == (2, 3, 5) and (np.asarray(out) == 0).all()
    assert np.isneginf(np.asarray(lse)).all()
