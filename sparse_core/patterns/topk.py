r"""Top-:math:`k` by content: given scores :math:`s_{ij}`, query :math:`i` keeps the :math:`k` keys
with the largest scores (ties go to the smaller index). With ``causal=True`` only keys
:math:`j \le i` compete (a row with fewer than :math:`k` of them keeps them all)."""
from __future__ import annotations

import numpy as np

from .base import Pattern, TokenTablePattern, check_int, is_tensor


class TopK(TokenTablePattern):
    def __init__(self, scores, k: int, causal: bool = False):
        if is_tensor(scores):
            scores = scores.detach().cpu().numpy()
        s = np.asarray(scores)
        if s.ndim == 2:
            s = s[None]
        if s.ndim != 3 or s.dtype.kind != "f":
            raise ValueError(f"`scores` must be a float array [n_q, n_k] or [n_heads, n_q, n_k], got {s.dtype} {s.shape}")
        if np.isnan(s).any():
            raise ValueError("`scores` contains NaN; top-k of NaN is undefined")
        self.k = check_int("k", k, 1)
        self.causal = bool(causal)
        s = s.astype(np.float64)
        if causal:
            allowed = np.arange(s.shape[2])[None, :] <= np.arange(s.shape[1])[:, None]
            s = np.where(allowed, s, -np.inf)
        order = np.argsort(-s, axis=-1, kind="stable")[..., : self.k]
        table = np.zeros(s.shape, dtype=bool)
        np.put_along_axis(table, order, True, axis=-1)
        if causal:
            table &= allowed
        super().__init__(table)

    def _name(self):
        return "topk"

    def _params(self):
        return {"k": self.k, "scores": f"[{', '.join(map(str, self.table.shape))}]", "causal": self.causal}


def topk(scores, k: int, causal: bool = False) -> Pattern:
    """Keep, per query, the ``k`` keys with the largest ``scores`` ([n_q, n_k] or [n_heads, n_q, n_k]).

    Defined in Chapter 6 (Exercise 6.1).
    """
    return TopK(scores, k, causal)
