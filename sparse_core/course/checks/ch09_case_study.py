"""Graded checks for Chapter 9 (the case study: GPT-NeoX with block-sparse attention).

Expected answers come from the library where it has the answer: the GPT-NeoX model's own
rotary embedding and layer (:mod:`sparse_core.models.gpt_neox`) for 9.1 and 9.2, its FLOP
count :func:`~sparse_core.models.gpt_neox.forward_flops` for 9.5. Perplexity, interpolation
and Amdahl's law (9.3, 9.4, 9.6) are checked against their one-line definitions on inputs
chosen so that the usual slips give different numbers.
"""
from __future__ import annotations

import math
import numbers

import numpy as np
import torch

from ...models.gpt_neox import GPTNeoX, forward_flops, preset
from ..compare import as_array, assert_close, call_repr, describe
from . import CheckList

CHECKS = CheckList()
# what each exercise returns, as its docstring says: every call in every check is held to it
CHECKS.returns("9.1", "float64 array")
CHECKS.returns("9.2", "like x")
CHECKS.returns("9.3", "float")
CHECKS.returns("9.4", "float64 array")
CHECKS.returns("9.5", "float")
CHECKS.returns("9.6", "float or float64 array")

ATOL64 = 1e-10


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _scalar(value, what: str) -> float:
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    if isinstance(value, torch.Tensor) and value.ndim == 0:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise AssertionError(f"{what}: expected a float, got {describe(value)} ({type(value).__name__})")
    return float(value)


def _close_scalar(got, expected: float, what: str, context: str, rtol: float = 1e-9) -> None:
    got = _scalar(got, what)
    if not math.isclose(got, expected, rel_tol=rtol, abs_tol=1e-12):
        raise AssertionError(f"{what}: wrong value for {context}\n    yours:    {got!r}\n    expected: {expected!r}")


# ---------------------------------------------------------------- Exercise 9.1: partial rotary

def _rope_model(head_dim: int, rotary_pct: float, base: float, dtype=torch.float64) -> GPTNeoX:
    """A one-head GPT-NeoX whose first layer's rotary embedding is the expected answer. In float64
    its frequencies are recomputed in float64 (the model keeps them in float32), by the model's
    own formula, so the comparison can be tight."""
    cfg = preset("tiny", vocab_size=16, hidden_size=head_dim, num_heads=1, num_layers=1, intermediate_size=8,
                 rotary_pct=rotary_pct, rotary_base=float(base))
    model = GPTNeoX(cfg).to(dtype)
    if dtype == torch.float64:
        r = cfg.rotary_ndims
        model.inv_freq = 1.0 / (float(base) ** (torch.arange(0, r, 2, dtype=torch.float64) / max(r, 1)))
    return model


def _rope_expected(x: np.ndarray, offset: int, rotary_pct: float, base: float, dtype=torch.float64) -> np.ndarray:
    model = _rope_model(x.shape[-1], rotary_pct, base, dtype)
    cos, sin = model._rotary(offset, x.shape[-2], dtype)
    with torch.no_grad():
        return model.layers[0].attention.rope(torch.as_tensor(x, dtype=dtype), cos, sin).numpy().astype(np.float64)


def _rope_case(fn, x, offset, pct, base, atol=ATOL64, dtype=torch.float64):
    before = x.copy()
    got = as_array(fn(x, offset, pct, base), "partial_rotary")
    if not np.array_equal(before, x):
        raise AssertionError("partial_rotary: your function modified `x` in place; work on a copy")
    r = int(x.shape[-1] * pct)
    assert_close(got, _rope_expected(x, offset, pct, base, dtype), what="partial_rotary", atol=atol,
                 context=call_repr("partial_rotary", x, offset=offset, rotary_pct=pct, base=base)
                 + f" (rotary dims r = {r} of d = {x.shape[-1]})")


@CHECKS.add("9.1", "partial_rotary", "Pythia rotary on a quarter of the head", 2)
def _rope_pythia(fn):
    # Pythia's setting: 25% of a head, base 10000; several heads and batches, offsets as in decoding
    for seed, shape, offset in [(0, (5, 16), 0), (1, (2, 3, 37, 64), 0), (2, (4, 19, 32), 11), (3, (3, 8), 250)]:
        x = _rng(seed).standard_normal(shape)
        _rope_case(fn, x, offset, 0.25, 10000.0)


@CHECKS.add("9.1", "partial_rotary", "other fractions and bases", 1)
def _rope_fraction_and_base(fn):
    for seed, shape, offset, pct, base in [(4, (2, 9, 16), 3, 0.5, 10000.0), (5, (11, 8), 0, 1.0, 10000.0),
                                           (6, (2, 13, 32), 5, 0.25, 500.0), (7, (7, 24), 2, 0.25, 10.0),
                                           (8, (3, 6, 8), 1, 0.0, 10000.0)]:
        x = _rng(seed).standard_normal(shape)
        _rope_case(fn, x, offset, pct, base)


@CHECKS.add("9.1", "partial_rotary", "equals the float32 model", 1)
def _rope_float32_model(fn):
    # the unmodified model in float32 (its own float32 frequencies): tolerance for float32 rounding
    for seed, shape, offset in [(9, (2, 4, 33, 64), 0), (10, (17, 16), 40)]:
        x = _rng(seed).standard_normal(shape).astype(np.float32)
        _rope_case(fn, x, offset, 0.25, 10000.0, atol=1e-4, dtype=torch.float32)


# ---------------------------------------------------------------- Exercise 9.2: GPT-NeoX block

def _layer(parallel: bool, seed: int, hidden=64, heads=4, inter=96):
    torch.manual_seed(seed)
    cfg = preset("tiny", vocab_size=16, hidden_size=hidden, num_heads=heads, num_layers=1, intermediate_size=inter,
                 use_parallel_residual=parallel)
    model = GPTNeoX(cfg).double()
    with torch.no_grad():  # move every weight away from its initial value (LayerNorms start as identities)
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return model


def _block_case(fn, parallel: bool, seed: int, batch: int, n: int):
    model = _layer(parallel, seed)
    layer = model.layers[0]
    cos, sin = model._rotary(0, n, torch.float64)
    x = torch.randn(batch, n, model.config.hidden_size, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    calls = {"ln1": 0, "ln2": 0, "attn": 0, "mlp": 0}

    def counted(name, f):
        def g(t):
            calls[name] += 1
            return f(t)
        return g

    with torch.no_grad():
        expected = layer(x, cos, sin, None, 0)
        got = fn(x.clone(), counted("ln1", layer.input_layernorm), counted("ln2", layer.post_attention_layernorm),
                 counted("attn", lambda h: layer.attention(h, cos, sin, None, 0)), counted("mlp", layer.mlp),
                 parallel)
    form = "x + attn(ln1(x)) + mlp(ln2(x))" if parallel else "y = x + attn(ln1(x)); y + mlp(ln2(y))"
    ctx = f"gpt_neox_block(x tensor float64[{batch}, {n}, 64], ln1, ln2, attn, mlp, parallel={parallel}): {form}"
    assert_close(as_array(got, "gpt_neox_block"), expected.numpy(), what="gpt_neox_block", atol=1e-9, context=ctx)
    if any(v != 1 for v in calls.values()):
        raise AssertionError(f"gpt_neox_block: each sublayer must be called exactly once; your calls: {calls}")


@CHECKS.add("9.2", "gpt_neox_block", "parallel residual equals the model layer", 2)
def _block_parallel(fn):
    for seed, b, n in [(0, 2, 9), (1, 1, 33)]:
        _block_case(fn, True, seed, b, n)


@CHECKS.add("9.2", "gpt_neox_block", "sequential residual equals the model layer", 1)
def _block_sequential(fn):
    for seed, b, n in [(2, 2, 9), (3, 3, 17)]:
        _block_case(fn, False, seed, b, n)


@CHECKS.add("9.2", "gpt_neox_block", "plain functions", 1)
def _block_numpy(fn):
    # plain functions on numpy arrays: every sublayer different, none linear in the same way
    x = np.array([[0.5, -1.0, 2.0]])
    ln1, ln2 = (lambda t: t - t.mean()), (lambda t: t / 2.0)
    attn, mlp = (lambda t: t ** 2), (lambda t: np.sin(t))
    for parallel in (True, False):
        if parallel:
            expected = x + attn(ln1(x)) + mlp(ln2(x))
        else:
            y = x + attn(ln1(x))
            expected = y + mlp(ln2(y))
        got = fn(x.copy(), ln1, ln2, attn, mlp, parallel)
        assert_close(got, expected, what="gpt_neox_block", atol=ATOL64,
                     context=f"numpy x = {x.tolist()}, ln1 = t - mean(t), ln2 = t / 2, attn = t**2, mlp = sin, "
                             f"parallel={parallel}")


# ---------------------------------------------------------------- Exercise 9.3: perplexity

def _ppl_expected(losses, tokens):
    losses, tokens = np.asarray(losses, float), np.asarray(tokens, float)
    return math.exp(float(np.sum(losses * tokens) / np.sum(tokens)))


def _ppl_cases(fn, cases):
    for losses, tokens, note in cases:
        _close_scalar(fn(list(losses), list(tokens)), _ppl_expected(losses, tokens), "perplexity",
                      f"batch_losses={np.round(losses, 4).tolist()}, batch_tokens={list(tokens)} ({note})")


@CHECKS.add("9.3", "perplexity", "equal batches", 1)
def _ppl_equal_batches(fn):
    rng = _rng(30)
    _ppl_cases(fn, [([math.log(8.0)], [512], "one batch: perplexity 8"),
                    (rng.uniform(3.0, 7.0, 5), [4096] * 5, "five equal batches"),
                    (rng.uniform(4.0, 9.0, 12), [2048] * 12, "losses up to 9 nats")])


@CHECKS.add("9.3", "perplexity", "unequal batches", 2)
def _ppl_unequal_batches(fn):
    rng = _rng(31)
    _ppl_cases(fn, [([math.log(4.0), math.log(16.0)], [300, 100], "the last batch is smaller"),
                    (rng.uniform(3.0, 6.0, 7), [4096] * 6 + [1000], "a short last batch"),
                    (rng.uniform(2.0, 8.0, 9), rng.integers(1, 5000, 9).tolist(), "random batch sizes")])


# ---------------------------------------------------------------- Exercise 9.4: loss at time

def _lat_expected(times, losses, t):
    times, losses, t = (np.asarray(a, dtype=np.float64) for a in (times, losses, t))
    return np.where((t < times[0]) | (t > times[-1]), np.nan, np.interp(t, times, losses))


def _lat_case(fn, times, losses, t, note):
    got = as_array(fn(np.array(times, dtype=float), np.array(losses, dtype=float), np.array(t, dtype=float)),
                   "loss_at_time")
    expected = _lat_expected(times, losses, t)
    ctx = f"loss_at_time(times={list(np.round(times, 3))}, losses={list(np.round(losses, 3))}, t={list(np.round(np.ravel(t), 3))}) ({note})"
    if got.shape != expected.shape:
        raise AssertionError(f"loss_at_time: shape {got.shape}, expected {expected.shape} (the shape of t)\n    {ctx}")
    nan_got, nan_exp = np.isnan(got), np.isnan(expected)
    if not np.array_equal(nan_got, nan_exp):
        i = int(np.argmax(nan_got != nan_exp))
        raise AssertionError(f"loss_at_time: at t = {np.ravel(t)[i]!r} yours is {np.ravel(got)[i]!r}, expected "
                             f"{np.ravel(expected)[i]!r} (NaN outside [times[0], times[-1]], a number inside)\n    {ctx}")
    assert_close(np.where(nan_exp, 0.0, got), np.where(nan_exp, 0.0, expected), what="loss_at_time", atol=ATOL64,
                 context=ctx)


@CHECKS.add("9.4", "loss_at_time", "interpolation inside the run", 2)
def _lat_inside(fn):
    _lat_case(fn, [10.0, 20.0, 40.0], [6.0, 5.0, 4.0], [10.0, 12.5, 20.0, 25.0, 39.0, 40.0], "inside and at the ends")
    rng = _rng(40)
    times = np.cumsum(rng.uniform(1.0, 9.0, 10))
    losses = 7.0 - np.cumsum(rng.uniform(0.0, 0.5, 10))
    _lat_case(fn, times, losses, rng.uniform(times[0], times[-1], 25), "random times, unsorted t")


@CHECKS.add("9.4", "loss_at_time", "NaN outside the run", 1)
def _lat_outside(fn):
    _lat_case(fn, [10.0, 20.0, 40.0], [6.0, 5.0, 4.0], [0.0, 5.0, 15.0, 41.0, 100.0], "before the first and after the last")
    _lat_case(fn, [3.0], [5.5], [2.0, 3.0, 4.0], "a single evaluation")


@CHECKS.add("9.4", "loss_at_time", "scalar time", 1)
def _lat_scalar(fn):
    got = as_array(fn(np.array([1.0, 3.0]), np.array([2.0, 4.0]), 2.5), "loss_at_time")
    _close_scalar(got.reshape(()) if got.size == 1 else got, 3.5, "loss_at_time", "a scalar t = 2.5 between (1, 2) and (3, 4)")
    got = as_array(fn(np.array([1.0, 3.0]), np.array([2.0, 4.0]), 5.0), "loss_at_time")
    if got.size != 1 or not np.isnan(got).all():
        raise AssertionError(f"loss_at_time: a scalar t = 5.0 after the last time must give NaN, got {got!r}")


# ---------------------------------------------------------------- Exercise 9.5: attention FLOP fraction

def _frac_case(fn, preset_name, n, pairs=None, **over):
    cfg = preset(preset_name, **over)
    expected = forward_flops(cfg, n, pairs)["attention_fraction"]
    args = (n, cfg.hidden_size, cfg.num_layers, cfg.intermediate_size, cfg.vocab_size)
    got = fn(*args) if pairs is None else fn(*args, pairs)
    _close_scalar(got, expected, "attention_flop_fraction",
                  f"attention_flop_fraction{args + ((pairs,) if pairs is not None else ())} ({preset_name}"
                  f"{'' if pairs is not None else ', causal dense'})", rtol=1e-9)


@CHECKS.add("9.5", "attention_flop_fraction", "causal dense attention", 2)
def _frac_dense(fn):
    for name, n in [("pythia-70m", 512), ("pythia-70m", 2048), ("tiny", 1024), ("pythia-160m", 4096), ("small", 1)]:
        _frac_case(fn, name, n)


@CHECKS.add("9.5", "attention_flop_fraction", "given kept pairs", 1)
def _frac_sparse(fn):
    for name, n, pairs in [("pythia-70m", 2048, 2048 * 256), ("tiny", 512, 0), ("small", 1024, 1024 * 1024),
                           ("tiny", 300, 12345.5)]:
        _frac_case(fn, name, n, pairs)


@CHECKS.add("9.5", "attention_flop_fraction", "every size matters", 1)
def _frac_shapes(fn):
    # layers, MLP width and vocabulary each change the answer
    for over in [dict(num_layers=1), dict(intermediate_size=64), dict(vocab_size=50), dict(hidden_size=256, num_heads=2)]:
        _frac_case(fn, "tiny", 700, None, **over)


# ---------------------------------------------------------------- Exercise 9.6: Amdahl

def _amdahl_expected(f, s):
    f, s = np.asarray(f, float), np.asarray(s, float)
    return 1.0 / ((1.0 - f) + f / s)


@CHECKS.add("9.6", "amdahl_speedup", "scalars", 2)
def _amdahl_scalars(fn):
    for f, s in [(0.5, 2.0), (0.1, 4.0), (0.9, 10.0), (0.0, 3.0), (1.0, 3.0), (0.25, 1.0), (0.3, 0.5)]:
        _close_scalar(fn(f, s), float(_amdahl_expected(f, s)), "amdahl_speedup", f"fraction={f}, part_speedup={s}")


@CHECKS.add("9.6", "amdahl_speedup", "infinite part speed-up", 1)
def _amdahl_limits(fn):
    for f in (0.034, 0.12, 0.5):
        _close_scalar(fn(f, math.inf), 1.0 / (1.0 - f), "amdahl_speedup",
                      f"fraction={f}, part_speedup=inf (the ceiling 1 / (1 - f))")


@CHECKS.add("9.6", "amdahl_speedup", "broadcast arrays", 1)
def _amdahl_arrays(fn):
    f = np.array([[0.05], [0.2], [0.6]])
    s = np.array([1.5, 2.0, 8.0, np.inf])
    got = as_array(fn(f, s), "amdahl_speedup")
    assert_close(got, _amdahl_expected(f, s), what="amdahl_speedup", atol=ATOL64,
                 context="fraction float64[3, 1], part_speedup float64[4] (broadcast to [3, 4])")
