r"""Analytic cost model of attention: FLOPs and bytes, to be checked against measurement.

Conventions (used throughout the course):

* a multiply-add counts as **2 FLOPs**;
* the two matrix products dominate: :math:`S = QK^\top` costs :math:`2 n_q n_k d` and
  :math:`O = PV` costs :math:`2 n_q n_k d_v` per (batch, head);
* the softmax costs a few operations per score (max, subtract, exp, sum, divide); we count
  them separately as ``softmax_ops = 5 * pairs`` because they run at a very different speed
  from matrix products;
* ``score_bytes`` is the size of one materialised ``[n_q, n_k]`` score (or probability) matrix
  per (batch, head); a straightforward implementation holds one or two of them at once;
* with ``causal=True`` only the kept pairs ``j <= i`` are counted (an implementation that
  skips the masked half does half the work; a dense kernel with a mask does not).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from .. import _validation as V

__all__ = ["AttentionCost", "attended_pairs", "attention_cost"]


def attended_pairs(n_q: int, n_k: int, causal: bool = False) -> int:
    """Number of (query, key) pairs attended: ``n_q * n_k``, or ``sum_i min(i + 1, n_k)`` if causal.

    Defined in Chapter 1.
    """
    n_q = V.check_nonnegative_int("n_q", n_q)
    n_k = V.check_nonnegative_int("n_k", n_k)
    if not causal:
        return n_q * n_k
    full = min(n_q, n_k)  # rows 0..full-1 keep i+1 keys, later rows keep all n_k
    return full * (full + 1) // 2 + (n_q - full) * n_k


@dataclass(frozen=True)
class AttentionCost:
    pairs: int
    matmul_flops: int
    softmax_ops: int
    score_bytes: int
    qkv_bytes: int
    out_bytes: int

    def as_dict(self) -> dict:
        return asdict(self)


def attention_cost(
    n_q: int,
    n_k: int,
    d: int,
    d_v: int | None = None,
    n_heads: int = 1,
    batch: int = 1,
    bytes_per_element: int = 4,
    causal: bool = False,
) -> AttentionCost:
    """FLOPs and memory of one dense attention call over ``batch * n_heads`` heads.

    Defined in Chapter 1 (Exercise 1.6).
    """
    d = V.check_positive_int("d", d)
    d_v = d if d_v is None else V.check_positive_int("d_v", d_v)
    n_heads = V.check_positive_int("n_heads", n_heads)
    batch = V.check_positive_int("batch", batch)
    bpe = V.check_positive_int("bytes_per_element", bytes_per_element)
    bh = batch * n_heads
    pairs = bh * attended_pairs(n_q, n_k, causal)
    return AttentionCost(
        pairs=pairs,
        matmul_flops=2 * pairs * (d + d_v),
        softmax_ops=5 * pairs,
        score_bytes=bh * n_q * n_k * bpe,
        qkv_bytes=bh * (n_q * d + n_k * d + n_k * d_v) * bpe,
        out_bytes=bh * n_q * d_v * bpe,
    )
