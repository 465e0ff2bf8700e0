"""Streaming (online-softmax) attention equals the oracle and keeps memory linear."""
import numpy as np
import pytest

from sparse_core.bench.timing import peak_traced_bytes
from sparse_core.attention.reference import attention, causal_mask
from sparse_core.attention.streaming import streaming_attention


def _qkv(seed, batch, n_q, n_k, d, d_v, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(batch + (n_q, d)).astype(dtype),
            rng.standard_normal(batch + (n_k, d)).astype(dtype),
            rng.standard_normal(batch + (n_k, d_v)).astype(dtype))


CASES = [  # batch, n_q, n_k, d, d_v, block_size, block_q
    ((), 1, 1, 2, 2, 4, None),
    ((), 37, 45, 8, 8, 8, 5),
    ((2,), 50, 50, 4, 3, 16, 16),
    ((2, 3), 65, 129, 16, 16, 32, 17),
    ((), 10, 10, 4, 4, 100, None),  # one block larger than the sequence
    ((2,), 9, 7, 4, 4, 1, 1),
]


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("seed,case", list(enumerate(CASES)))
def test_equals_oracle_float64(seed, case, causal):
    batch, n_q, n_k, d, d_v, bk, bq = case
    q, k, v = _qkv(seed, batch, n_q, n_k, d, d_v)
    out, lse = streaming_attention(q, k, v, causal=causal, block_size=bk, block_q=bq, return_lse=True)
    exp_out, exp_lse = attention(q, k, v, causal=causal, return_lse=True)
    np.testing.assert_allclose(out, exp_out, atol=1e-12, rtol=0)
    np.testing.assert_allclose(lse, exp_lse, atol=1e-12, rtol=0)


def test_mask_array_and_mask_function_with_fully_masked_rows():
    q, k, v = _qkv(10, (2,), 33, 41, 8, 8)
    rng = np.random.default_rng(0)
    mask = rng.random((33, 41)) < 0.3
    mask[[0, 17]] = False
    exp_out, exp_lse = attention(q, k, v, mask=mask, causal=True, return_lse=True)
    for m in (mask, lambda i, j: mask[i, j]):
        out, lse = streaming_attention(q, k, v, mask=m, causal=True, block_size=8, block_q=6, return_lse=True)
        np.testing.assert_allclose(out, exp_out, atol=1e-12, rtol=0)
        np.testing.assert_array_equal(np.isneginf(lse), np.isneginf(exp_lse))
        np.testing.assert_allclose(lse[np.isfinite(lse)], exp_lse[np.isfinite(exp_lse)], atol=1e-12)
        assert np.all(out[:, [0, 17]] == 0)


def test_float32_stays_float32_within_tolerance():
    q, k, v = _qkv(11, (2,), 70, 90, 16, 16, np.float32)
    out = streaming_attention(q, k, v, block_size=32)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, attention(q, k, v), atol=2e-6, rtol=0)


def test_large_logits_stay_finite():
    q, k, v = _qkv(12, (), 20, 40, 8, 8)
    out = streaming_attention(q * 500, k, v, block_size=7)
    np.testing.assert_allclose(out, attention(q * 500, k, v), atol=1e-12)


def test_extra_memory_is_linear_not_quadratic():
    n_q, n_k = 512, 8192
    q, k, v = _qkv(13, (), n_q, n_k, 16, 16, np.float32)
    peak = peak_traced_bytes(lambda: streaming_attention(q, k, v, block_size=128, causal=True))
    assert peak < 0.1 * n_q * n_k * 4, peak  # the full score matrix would be n_q * n_k * 4 bytes
    dense_peak = peak_traced_bytes(lambda: attention(q, k, v))
    assert dense_peak > n_q * n_k * 8  # sanity: the oracle does materialise it (float64)


def test_bad_input():
    q, k, v = _qkv(14, (), 4, 5, 3, 3)
    with pytest.raises(ValueError, match="`block_size` must be a positive integer"):
        streaming_attention(q, k, v, block_size=0)
    with pytest.raises(TypeError, match="`q` must be a numpy.ndarray"):
        import torch

        streaming_attention(torch.zeros(4, 3), k, v)
    with pytest.raises(ValueError, match="`mask` of shape"):
        streaming_attention(q, k, v, mask=np.ones((4, 4), bool))
    with pytest.raises(ValueError, match="`k` must have the same head dimension"):
        streaming_attention(q, k[:, :2], v)
