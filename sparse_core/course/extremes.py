"""Inputs at the edges of floating point, the same for every softmax-like exercise.

A softmax written from its definition is right on random scores and wrong at the edges, and each
edge catches a different slip:

* scores in the thousands overflow ``exp`` unless the row maximum is subtracted first;
* a row whose scores are *all* very negative (below ``-1e4``) underflows to ``0 / 0`` without the
  shift, and is taken for a masked row by code that masks with a finite fill such as ``-1e4``
  or recognises masked rows by a threshold;
* rows whose maxima differ by hundreds (queries of very different norms) break a shift by one
  maximum for the whole matrix instead of one per row;
* float16 inputs (scores of 2.4e4 fit in float16, their exponentials and sums do not) break code
  that computes in the input's dtype: the exercises compute in float64 whatever they receive.

:func:`extreme_qkv` and :func:`extreme_scores` build seeded inputs with all four at once;
:func:`score_extremes` measures them, so a test can require every softmax-like exercise to be
checked at each edge.
"""
from __future__ import annotations

import numpy as np

__all__ = ["THOUSANDS", "VERY_NEGATIVE", "SPREAD", "ROW_FACTORS", "extreme_qkv", "extreme_scores",
           "score_extremes", "EXTREME_NOTE"]

THOUSANDS = 1e3  # some allowed score at least this large
VERY_NEGATIVE = -1e4  # some row whose allowed scores are all at most this
SPREAD = 800.0  # row maxima of one call that differ by at least this (exp(-800) = 0 in float64)

# per query row, cycled: scores ~ 6 x factor at every key (all keys lean the same way)
ROW_FACTORS = (400.0, -4000.0, 0.01, 40.0, -2.0, 1.0)

EXTREME_NOTE = (" (extreme rows, cycled: scores ~ +2400, all ~ -24000, ~ 0, ~ +240, ~ -12, ~ 6 at every key: subtract "
                "each row's own maximum over its allowed keys, never mask with a finite fill like -1e4, compute in "
                "float64 whatever the input dtype)")


def extreme_qkv(seed: int, lead: tuple, n_q: int, n_k: int, d: int, d_v: int, dtype=np.float64,
                scale: float | None = None):
    """Seeded ``q [*lead, n_q, d]``, ``k [*lead, n_k, d]``, ``v [*lead, n_k, d_v]`` whose scaled scores
    ``scale * q k^T`` (default scale ``1/sqrt(d)``) are extreme row by row (:data:`ROW_FACTORS`).

    Every key leans along the first axis (``k[..., 0] ~ 6``), and query row ``i`` is
    ``f_i / scale * (e_1 + 0.1 g)``, so row ``i`` scores about ``6 f_i`` at *every* key: the
    extremes hold whichever keys a pattern allows. Values stay within float16's range for
    ``d <= 64``, so ``dtype=np.float16`` gives the same inputs rounded to half precision.
    """
    rng = np.random.default_rng(seed)
    tau = 1.0 / np.sqrt(d) if scale is None else scale
    k = rng.standard_normal(tuple(lead) + (n_k, d))
    k[..., 0] += 6.0
    e1 = np.zeros(d)
    e1[0] = 1.0
    factors = np.resize(np.asarray(ROW_FACTORS), n_q)
    q = factors[:, None] / tau * (e1 + 0.1 * rng.standard_normal(tuple(lead) + (n_q, d)))
    v = rng.standard_normal(tuple(lead) + (n_k, d_v))
    return tuple(a.astype(dtype) for a in (q, k, v))


def extreme_scores(seed: int, shape: tuple, dtype=np.float64) -> np.ndarray:
    """Seeded scores ``[..., n_q, n_k]`` whose rows cycle through :data:`ROW_FACTORS` times 6, with
    a spread of a few units inside each row (so the softmax is neither one-hot nor uniform)."""
    rng = np.random.default_rng(seed)
    n_q = shape[-2]
    centre = 6.0 * np.resize(np.asarray(ROW_FACTORS), n_q)[:, None]
    return (centre + 2.0 * rng.standard_normal(shape)).astype(dtype)


def score_extremes(scores: np.ndarray, allowed: np.ndarray | None = None) -> dict:
    """Which edges one call's scaled scores reach: ``{"thousands", "very_negative_row", "spread"}``.

    ``scores [..., n_q, n_k]`` (any float dtype); ``allowed`` broadcastable to it (``None`` = all).
    Rows with no allowed key are ignored.
    """
    s = np.asarray(scores, dtype=np.float64)
    a = np.ones(s.shape, bool) if allowed is None else np.broadcast_to(np.asarray(allowed, bool), s.shape)
    live = a.any(-1)  # [..., n_q]
    row_max = np.where(a, s, -np.inf).max(-1)
    hi = np.where(live, row_max, -np.inf).max(-1)  # per matrix: the largest and smallest row maxima
    lo = np.where(live, row_max, np.inf).min(-1)
    spread = np.where(live.any(-1), hi - lo, 0.0)
    return {"thousands": bool((row_max[live] >= THOUSANDS).any()),
            "very_negative_row": bool(((row_max <= VERY_NEGATIVE) & live).any()),
            "spread": bool((spread >= SPREAD).any())}
