"""The extreme inputs of the softmax-like checks reach every edge they claim, in float16 too."""
import numpy as np
import pytest

from sparse_core.course.extremes import extreme_qkv, extreme_scores, score_extremes


@pytest.mark.parametrize("d", [4, 8, 16, 64])
@pytest.mark.parametrize("dtype", [np.float64, np.float16])
def test_extreme_qkv_reaches_every_edge_at_every_key(d, dtype):
    q, k, v = extreme_qkv(0, (2,), 12, 30, d, 3, dtype)
    assert q.dtype == k.dtype == v.dtype == dtype and np.isfinite(q).all()
    s = q.astype(np.float64) @ np.swapaxes(k.astype(np.float64), -1, -2) / np.sqrt(d)
    assert score_extremes(s) == {"thousands": True, "very_negative_row": True, "spread": True}
    # a band of three keys per row still reaches them: every key of a row scores alike
    band = np.abs(np.arange(12)[:, None] - np.arange(30)[None, :]) <= 1
    assert score_extremes(s, band) == {"thousands": True, "very_negative_row": True, "spread": True}
    assert (np.sign(s[:, 1]) < 0).all()  # row 1 (factor -4000) is negative at every key


def test_extreme_scores_and_what_ordinary_scores_miss():
    assert all(score_extremes(extreme_scores(1, (2, 12, 7))).values())
    assert not any(score_extremes(np.random.default_rng(2).standard_normal((3, 12, 7)) * 3).values())


def test_masked_rows_and_masked_extremes_do_not_count():
    s = np.array([[5000.0, 0.0], [-20000.0, -20000.0]])
    only_first_column = np.array([[False, True], [False, False]])  # the 5000 is masked, row 1 is empty
    assert score_extremes(s, only_first_column) == {"thousands": False, "very_negative_row": False, "spread": False}
