"""The cost model against brute-force counts, and the measurement helpers."""
import numpy as np
import pytest

from sparse_core.bench.timing import fit_power_law, peak_traced_bytes, time_callable
from sparse_core.attention.cost import attended_pairs, attention_cost
from sparse_core.attention.reference import causal_mask


@pytest.mark.parametrize("n_q,n_k", [(1, 1), (5, 5), (3, 8), (8, 3), (17, 16), (0, 4)])
def test_attended_pairs_equals_mask_count(n_q, n_k):
    assert attended_pairs(n_q, n_k) == n_q * n_k
    assert attended_pairs(n_q, n_k, causal=True) == int(causal_mask(n_q, n_k).sum())


def test_attention_cost_counts():
    c = attention_cost(4096, 2048, 64, 32, n_heads=8, batch=2, bytes_per_element=2)
    assert c.pairs == 16 * 4096 * 2048
    assert c.matmul_flops == 2 * c.pairs * (64 + 32)
    assert c.score_bytes == 16 * 4096 * 2048 * 2
    assert c.qkv_bytes == 16 * (4096 * 64 + 2048 * 64 + 2048 * 32) * 2
    cc = attention_cost(1000, 1000, 64, causal=True)
    assert cc.pairs == 1000 * 1001 // 2 and cc.score_bytes == 1000 * 1000 * 4
    assert set(c.as_dict()) == {"pairs", "matmul_flops", "softmax_ops", "score_bytes", "qkv_bytes", "out_bytes"}


@pytest.mark.parametrize("bad", [dict(d=0), dict(n_heads=-1), dict(batch=1.5), dict(bytes_per_element=True)])
def test_cost_bad_input(bad):
    kwargs = dict(n_q=4, n_k=4, d=8) | bad
    with pytest.raises(ValueError, match=f"`{next(iter(bad))}` must be a positive integer"):
        attention_cost(**kwargs)


def test_fit_power_law_recovers_exponent():
    x = np.array([10, 20, 40, 80, 160])
    slope, pre = fit_power_law(x, 3.0 * x**2.0)
    assert slope == pytest.approx(2.0) and pre == pytest.approx(3.0)
    with pytest.raises(ValueError, match="positive"):
        fit_power_law([1, 2], [0, 1])


def test_peak_traced_bytes_sees_numpy_temporaries():
    peak = peak_traced_bytes(lambda: np.ones((1000, 1000)).sum())
    assert 8_000_000 <= peak < 9_000_000


def test_time_callable_reports_samples():
    t = time_callable(lambda: sum(range(1000)), repeats=3, warmup=1)
    assert len(t.samples) == 3 and all(s > 0 for s in t.samples)
    lo, hi = t.iqr
    assert lo <= t.median <= hi
    with pytest.raises(ValueError, match="`repeats`"):
        time_callable(lambda: None, repeats=0)
