"""Graded checks for Chapter 10 (distilling sparse attention from a dense teacher).

The expected values are computed here independently, in float64 (the KL from probabilities of
a float64 softmax; penalties and densities from explicit loops over the allowed pairs), on
seeded random inputs of several shapes, extreme logits and temperatures.
"""
from __future__ import annotations

import math

import numpy as np

from ..compare import as_array, assert_close, call_repr
from . import CheckList

CHECKS = CheckList()
# what each exercise returns, as its docstring says: every call in every check is held to it
CHECKS.returns("10.1", "0-d tensor")
CHECKS.returns("10.2", "list of str")
CHECKS.returns("10.3", "0-d tensor")
CHECKS.returns("10.4", "float")


def _torch():
    import torch

    return torch


def _gen(seed: int):
    return _torch().Generator().manual_seed(seed)


def _kl_ref(t, s, temperature):
    torch = _torch()
    lp = torch.log_softmax(t.double() / temperature, -1)
    lq = torch.log_softmax(s.double() / temperature, -1)
    return float((lp.exp() * (lp - lq)).sum(-1).mean()) * temperature ** 2


def _scalar(value, what):
    torch = _torch()
    if not isinstance(value, torch.Tensor):
        raise AssertionError(f"{what}: expected a 0-d torch tensor, got {type(value).__name__}")
    if value.ndim != 0:
        raise AssertionError(f"{what}: expected a 0-d tensor (the mean over tokens), got shape {tuple(value.shape)}")
    return value


# ---------------------------------------------------------------- Exercise 10.1: KL divergence

@CHECKS.add("10.1", "kl_divergence", "matches the float64 KL at several temperatures", 3)
def _kl_random(fn):
    torch = _torch()
    for seed, shape, temperature in [(0, (3, 7, 11), 1.0), (1, (64, 50), 1.0), (2, (2, 5, 9, 30), 2.0),
                                     (3, (10, 40), 0.5), (4, (4, 13), 5.0)]:
        g = _gen(seed)
        t, s = torch.randn(*shape, generator=g) * 3, torch.randn(*shape, generator=g) * 3
        got = _scalar(fn(t, s, temperature), "kl_divergence")
        assert_close(as_array(got, "kl_divergence"), np.asarray(_kl_ref(t, s, temperature)), what="kl_divergence",
                     atol=1e-6, rtol=1e-4, context=call_repr("kl_divergence", t, s, temperature=temperature)
                     + "\n    (hint: mean over tokens, times T^2; KL(teacher || student), not the reverse)")


@CHECKS.add("10.1", "kl_divergence", "exactly zero for identical logits and the right gradient", 2)
def _kl_zero_and_gradient(fn):
    torch = _torch()
    g = _gen(5)
    z = torch.randn(6, 9, 17, generator=g) * 4
    for temperature in (1.0, 3.0):
        got = float(_scalar(fn(z, z.clone(), temperature), "kl_divergence"))
        if got != 0.0:
            raise AssertionError(f"kl_divergence of identical logits (T={temperature})\n    yours:    {got!r}\n"
                                 "    expected: 0.0 exactly (log_p - log_q is exactly 0)")
    t = torch.randn(5, 12, generator=g)
    s = torch.randn(5, 12, generator=g)
    for temperature in (1.0, 2.0):
        s1 = s.clone().requires_grad_(True)
        (g_yours,) = torch.autograd.grad(_scalar(fn(t, s1, temperature), "kl_divergence"), s1)
        s2 = s.double().clone().requires_grad_(True)
        lp = torch.log_softmax(t.double() / temperature, -1)
        ref = (lp.exp() * (lp - torch.log_softmax(s2 / temperature, -1))).sum(-1).mean() * temperature ** 2
        (g_ref,) = torch.autograd.grad(ref, s2)
        assert_close(g_yours.numpy(), g_ref.numpy(), what="gradient of kl_divergence w.r.t. student_logits",
                     atol=1e-6, rtol=1e-4, context=f"T={temperature}")


@CHECKS.add("10.1", "kl_divergence", "finite at logits of 1e4", 2)
def _kl_extreme(fn):
    torch = _torch()
    g = _gen(6)
    t = torch.randn(8, 30, generator=g).sign() * 1e4
    s = torch.randn(8, 30, generator=g).sign() * 1e4
    for temperature in (1.0, 0.5, 10.0):
        got = float(_scalar(fn(t, s, temperature), "kl_divergence"))
        if not math.isfinite(got):
            raise AssertionError(f"kl_divergence with logits of +-1e4 (T={temperature}) returned {got}: "
                                 "never take the log of a probability that can underflow to 0; use log_softmax")
        assert_close(np.asarray(got), np.asarray(_kl_ref(t, s, temperature)), what="kl_divergence", atol=1e-6,
                     rtol=1e-4, context=f"logits of +-1e4, T={temperature}")


@CHECKS.add("10.1", "kl_divergence", "extreme rows and half-precision logits, computed in float32", 1)
def _kl_extreme_rows_half(fn):
    torch = _torch()
    from ..extremes import EXTREME_NOTE, extreme_scores

    for seed, shape, dtype in [(7, (12, 300), torch.float64), (8, (6, 2000), torch.bfloat16),
                               (9, (6, 2000), torch.float16)]:
        t = torch.from_numpy(extreme_scores(seed, shape)).to(dtype)
        s = (t.double() + torch.randn(*shape, generator=_gen(seed), dtype=torch.float64) * 3).to(dtype)
        for temperature in (1.0, 2.0):
            got = _scalar(fn(t, s, temperature), "kl_divergence")
            if got.dtype not in (torch.float32, torch.float64):
                raise AssertionError(f"kl_divergence of {dtype} logits returned a {got.dtype} tensor; compute (and "
                                     "return) in at least float32")
            assert_close(np.asarray(float(got)), np.asarray(_kl_ref(t, s, temperature)), what="kl_divergence",
                         atol=1e-5, rtol=1e-4,
                         context=call_repr("kl_divergence", t, s, temperature=temperature) + EXTREME_NOTE)


# ---------------------------------------------------------------- Exercise 10.2: freezing

def _model(seed, layers=2):
    torch = _torch()
    from ...lm.distill import DistillConfig, make_student
    from ...models.gpt_neox import GPTNeoX, preset

    torch.manual_seed(seed)
    teacher = GPTNeoX(preset("tiny", vocab_size=40, hidden_size=32, num_layers=layers, intermediate_size=64))
    return teacher, make_student(teacher, DistillConfig(student="mask", hidden=4))


def _expected_names(model, mode):
    out = []
    for name, _ in model.named_parameters():
        p = name.split(".")
        if len(p) > 3 and p[0] == "layers" and p[2] == "attention":
            if mode == "attention" or p[3] not in ("query_key_value", "dense"):
                out.append(name)
    return sorted(out)


def _check_freeze(fn, model, mode, what):
    expected = _expected_names(model, mode)
    got = fn(model, mode)
    if got is None:
        raise AssertionError(f"freeze_all_but_attention({what}, {mode!r}) returned None (did you forget `return`?)")
    got = list(got)
    if got != expected:
        missing = sorted(set(expected) - set(got))
        extra = sorted(set(got) - set(expected))
        raise AssertionError(f"freeze_all_but_attention({what}, {mode!r}): wrong names"
                             f"\n    missing: {missing[:6]}\n    extra:   {extra[:6]}"
                             + ("\n    (the list must be sorted)" if not missing and not extra else ""))
    keep = set(expected)
    for name, p in model.named_parameters():
        if p.requires_grad != (name in keep):
            raise AssertionError(f"freeze_all_but_attention({what}, {mode!r}): {name}.requires_grad is "
                                 f"{p.requires_grad}, expected {name in keep}")


@CHECKS.add("10.2", "freeze_all_but_attention", "the attention parameters of a dense model", 2)
def _freeze_teacher(fn):
    for seed, layers in [(0, 1), (1, 3)]:
        teacher, _ = _model(seed, layers)
        _check_freeze(fn, teacher, "attention", f"dense GPTNeoX with {layers} layers")


@CHECKS.add("10.2", "freeze_all_but_attention", "only what the student adds", 2)
def _freeze_student_new(fn):
    _, student = _model(2)
    _check_freeze(fn, student, "new", "student with a learned mask")
    _check_freeze(fn, student, "attention", "student with a learned mask")


@CHECKS.add("10.2", "freeze_all_but_attention", "turns frozen parameters back on; gradients reach only them", 1)
def _freeze_refreezes_and_grads(fn):
    torch = _torch()
    teacher, student = _model(3)
    for p in student.parameters():
        p.requires_grad_(False)  # everything frozen before: the function must turn the right ones on
    names = fn(student, "new")
    _check_freeze(fn, student, "new", "student whose parameters were all frozen")
    x = torch.randint(0, 40, (2, 10), generator=_gen(3))
    student(x).float().pow(2).mean().backward()
    keep = set(names)
    for name, p in student.named_parameters():
        if (p.grad is not None) != (name in keep):
            raise AssertionError(f"after backward, {name}.grad is {'set' if p.grad is not None else 'None'}; "
                                 f"only the returned names may receive gradients")


# ---------------------------------------------------------------- Exercise 10.3: L1 penalty

def _allowed(n_q, n_k, causal):
    a = np.ones((n_q, n_k), dtype=bool)
    return np.tril(a) if causal else a


def _l1_ref(g, lam, causal):
    g = np.asarray(g, dtype=np.float64)
    a = np.broadcast_to(_allowed(*g.shape[-2:], causal), g.shape)
    return lam * np.abs(g)[a].sum() / a.sum()


@CHECKS.add("10.3", "l1_mask_penalty", "mean over the allowed pairs", 3)
def _l1_values(fn):
    torch = _torch()
    for seed, shape, lam, causal in [(0, (5, 5), 1.0, True), (1, (2, 3, 17, 17), 0.01, True),
                                     (2, (4, 9, 9), 0.5, False), (3, (1, 1), 2.0, True), (4, (3, 33, 33), 3.0, True)]:
        g = torch.rand(*shape, generator=_gen(seed))
        g = torch.where(torch.ones(shape[-2:], dtype=torch.bool).triu(1), g + 5.0, g)  # large future gates
        got = _scalar(fn(g, lam, causal), "l1_mask_penalty")
        assert_close(as_array(got, "l1_mask_penalty"), np.asarray(_l1_ref(g.numpy(), lam, causal)),
                     what="l1_mask_penalty", atol=1e-9, rtol=1e-5,
                     context=call_repr("l1_mask_penalty", g, lam, causal=causal)
                     + "\n    (hint: mean over the allowed pairs only; future gates are ignored when causal)")


@CHECKS.add("10.3", "l1_mask_penalty", "gradient", 1)
def _l1_gradient(fn):
    torch = _torch()
    g = torch.rand(2, 7, 7, generator=_gen(7), dtype=torch.float64).requires_grad_(True)
    (grad,) = torch.autograd.grad(_scalar(fn(g, 0.3, True), "l1_mask_penalty"), g)
    a = np.broadcast_to(_allowed(7, 7, True), (2, 7, 7))
    expected = np.where(a, 0.3 / a.sum(), 0.0)
    assert_close(grad.numpy(), expected, what="gradient of l1_mask_penalty", atol=1e-12,
                 context="gates in (0, 1), lam=0.3, causal")


# ---------------------------------------------------------------- Exercise 10.4: density

def _density_ref(g, threshold, causal):
    g = np.asarray(g, dtype=np.float64)
    a = np.broadcast_to(_allowed(*g.shape[-2:], causal), g.shape)
    return float((a & (g > threshold)).sum()) / float(a.sum())


@CHECKS.add("10.4", "gate_density", "kept pairs over allowed pairs", 2)
def _density_values(fn):
    torch = _torch()
    for seed, shape, thr, causal in [(0, (6, 6), 0.5, True), (1, (2, 4, 19, 19), 0.3, True), (2, (3, 8, 8), 0.5, False),
                                     (3, (1, 1), 0.5, True)]:
        g = torch.rand(*shape, generator=_gen(seed))
        g = torch.where(torch.ones(shape[-2:], dtype=torch.bool).triu(1), torch.ones_like(g), g)  # future: open
        got = fn(g, thr, causal)
        expected = _density_ref(g.numpy(), thr, causal)
        if not isinstance(got, (float, int)) and not (hasattr(got, "ndim") and got.ndim == 0):
            raise AssertionError(f"gate_density: expected a float, got {type(got).__name__}")
        assert_close(np.asarray(float(got)), np.asarray(expected), what="gate_density", atol=1e-12,
                     context=call_repr("gate_density", g, thr, causal=causal))


@CHECKS.add("10.4", "gate_density", "strict threshold", 1)
def _density_strict(fn):
    torch = _torch()
    g = torch.tensor([[0.5, 1.0, 1.0], [0.7, 0.5, 1.0], [0.2, 0.51, 0.5]])
    got = float(fn(g, 0.5, True))
    if got != 2 / 6:
        raise AssertionError(f"gate_density(g, 0.5) with gates equal to the threshold\n    yours:    {got}\n"
                             f"    expected: {2 / 6} (kept means g > threshold, strictly)")
