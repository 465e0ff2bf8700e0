"""A property test of block_sparse_attention against the float64 oracle: random patterns, shapes
(zero, one and odd lengths, n_q != n_k), heads, batches, dtypes and block sizes, forward and
gradients. Hypothesis draws the cases from a fixed seed (``derandomize``) with a bounded count, so
CI runs the same examples every time; a failure prints the smallest case it found."""
import numpy as np
import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

from sparse_core import patterns as P  # noqa: E402
from sparse_core.attention.ops import block_sparse_attention  # noqa: E402
from sparse_core.reference import attention  # noqa: E402

TOL = {torch.float64: dict(atol=1e-10, rtol=1e-9), torch.float32: dict(atol=2e-5, rtol=2e-4)}
GRAD_TOL = {torch.float64: dict(atol=1e-9, rtol=1e-8), torch.float32: dict(atol=2e-4, rtol=2e-3)}


@st.composite
def patterns(draw, heads):
    kind = draw(st.sampled_from(["window", "causal_window", "strided", "global", "random", "dense", "causal",
                                 "union", "per_head"]))
    if kind == "window":
        return P.sliding_window(draw(st.integers(0, 40)))
    if kind == "causal_window":
        return P.sliding_window(draw(st.integers(0, 40)), causal=True)
    if kind == "strided":
        return P.strided(draw(st.integers(1, 24)))
    if kind == "global":
        return P.global_tokens(draw(st.lists(st.integers(0, 80), max_size=4)))
    if kind == "random":
        return P.random_pattern(draw(st.floats(0.0, 1.0)), seed=draw(st.integers(0, 5)))
    if kind == "dense":
        return P.dense()
    if kind == "causal":
        return P.causal()
    if kind == "union":
        return P.union(P.sliding_window(draw(st.integers(0, 10)), causal=True),
                       P.global_tokens([draw(st.integers(0, 30))]))
    return P.per_head([P.sliding_window(draw(st.integers(0, 20))) for _ in range(heads)])


@st.composite
def cases(draw):
    heads = draw(st.integers(1, 3))
    pattern = draw(patterns(heads))
    n_q = draw(st.sampled_from([0, 1, 2, 7, 16, 33, 61]))
    n_k = draw(st.sampled_from([n_q, 0, 1, 9, 40, 70]))
    return dict(pattern=pattern, heads=heads, n_q=n_q, n_k=n_k, batch=draw(st.integers(1, 2)),
                d=draw(st.sampled_from([4, 16])), block=draw(st.sampled_from([8, 16, 32])),
                dtype=draw(st.sampled_from([torch.float32, torch.float64])), seed=draw(st.integers(0, 10**6)))


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_block_sparse_attention_equals_the_oracle(case):
    heads, n_q, n_k, dtype = case["heads"], case["n_q"], case["n_k"], case["dtype"]
    layout_heads = case["pattern"].n_heads or 1
    layout = case["pattern"].to_layout(n_q, n_k, case["block"], layout_heads)
    mask = torch.from_numpy(case["pattern"].to_dense(n_q, n_k, layout_heads))      # (H or 1, n_q, n_k)
    g = torch.Generator().manual_seed(case["seed"])
    shape_q, shape_k = (case["batch"], heads, n_q, case["d"]), (case["batch"], heads, n_k, case["d"])
    q = (torch.randn(shape_q, generator=g) * 2).to(dtype).requires_grad_()
    k = (torch.randn(shape_k, generator=g) * 2).to(dtype).requires_grad_()
    v = torch.randn(shape_k, generator=g).to(dtype).requires_grad_()
    out = block_sparse_attention(q, k, v, layout)
    assert out.shape == shape_q and out.dtype == dtype and torch.isfinite(out).all()
    q2, k2, v2 = (x.detach().double().requires_grad_() for x in (q, k, v))
    ref = attention(q2, k2, v2, mask=mask)
    torch.testing.assert_close(out.double(), ref, **TOL[dtype])
    if out.numel() == 0:
        return
    grad = torch.randn(shape_q, generator=g)
    (out * grad.to(dtype)).sum().backward()
    (ref * grad.double()).sum().backward()
    for name, a, b in (("dq", q.grad, q2.grad), ("dk", k.grad, k2.grad), ("dv", v.grad, v2.grad)):
        assert a is not None and torch.isfinite(a).all(), name
        torch.testing.assert_close(a.double(), b, **GRAD_TOL[dtype], msg=lambda m, n=name: f"{n}: {m}")
    empty = ~mask.any(-1)                                                        # fully masked rows give zeros
    if empty.any():
        rows = empty.expand(case["batch"], heads, n_q)
        assert (out.detach()[rows] == 0).all()
