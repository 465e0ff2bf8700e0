# Generated from solutions/ch09_case_study/exercise.py by scripts/make_stubs.py.
# This copy is yours: fill in the functions and edit it freely
# (running scripts/make_stubs.py again overwrites it).
"""Chapter 9 -- The case study: a Pythia-style language model with block-sparse attention.

Fill in each function, then grade it:

    python -m sparse_core grade --chapter 9

Exercises 9.1 and 9.2 rebuild two pieces of the GPT-NeoX architecture (they must agree with
``sparse_core.models.GPTNeoX``); 9.3 and 9.4 are the measurements of a training run; 9.5 and
9.6 are the cost model that explains the speed-ups. Work in numpy unless an exercise says
otherwise; 9.2 receives callables and works with whatever arrays they accept.
"""
from __future__ import annotations

import numpy as np

__all__ = [
    "partial_rotary",
    "gpt_neox_block",
    "perplexity",
    "loss_at_time",
    "attention_flop_fraction",
    "amdahl_speedup",
]


def partial_rotary(x: np.ndarray, offset: int = 0, rotary_pct: float = 0.25, base: float = 10000.0) -> np.ndarray:
    """Exercise 9.1 -- rotary position embedding on the first part of each head (GPT-NeoX).

    Let ``d = x.shape[-1]`` and ``r = int(d * rotary_pct)`` (even). Token ``t`` (row ``t`` of
    the ``n`` axis) sits at position ``p = offset + t``. With frequencies
    ``theta_m = base ** (-2 m / r)`` for ``m = 0 .. r/2 - 1``, angles ``a = p * [theta, theta]``
    (the ``r/2`` frequencies written twice) and the rotary part split into halves
    ``u = [u1, u2] = x[..., :r]``:

        out[..., :r] = u * cos(a) + [-u2, u1] * sin(a)      ("rotate half" convention)
        out[..., r:] = x[..., r:]                           (passed through unchanged)

    Args:
        x: float array ``[..., n, d]`` (queries or keys of one or more heads).
        offset: position of the first row (the number of cached tokens when decoding).
        rotary_pct: fraction of each head that is rotated (0.25 in Pythia).
        base: the frequency base (10000 in Pythia).

    Returns:
        float64 array ``[..., n, d]``.

    Example:
        >>> x = np.ones((2, 8))  # n = 2 positions, d = 8, r = 2: one frequency (theta_0 = 1)
        >>> np.round(partial_rotary(x), 3)
        array([[ 1.   ,  1.   ,  1.   ,  1.   ,  1.   ,  1.   ,  1.   ,  1.   ],
               [-0.301,  1.382,  1.   ,  1.   ,  1.   ,  1.   ,  1.   ,  1.   ]])

    Hint: roughly 8 lines. Position 1 rotates the pair ``(x_0, x_1)`` by 1 radian:
    ``(cos 1 - sin 1, cos 1 + sin 1)``.
    """
    raise NotImplementedError("Exercise 9.1: partial_rotary")


def gpt_neox_block(x, ln1, ln2, attn, mlp, parallel: bool = True):
    """Exercise 9.2 -- one GPT-NeoX layer, given its four sublayers as functions.

    The parallel residual (GPT-NeoX, Pythia, GPT-J) feeds both sublayers the same input:

        x + attn(ln1(x)) + mlp(ln2(x))

    and the sequential residual (GPT-2, ``parallel=False``) feeds the MLP the updated stream:

        y = x + attn(ln1(x));   y + mlp(ln2(y))

    Args:
        x: the residual stream ``[batch, n, d_model]`` (a torch tensor or numpy array).
        ln1, ln2: the two LayerNorms, functions ``[..., d_model] -> [..., d_model]``.
        attn, mlp: the attention and MLP sublayers, functions of the same shape.
        parallel: the parallel form (True) or the sequential one (False).

    Returns:
        the new residual stream, same shape and type as ``x``.

    Example:
        >>> double = lambda t: 2 * t
        >>> ident = lambda t: t
        >>> gpt_neox_block(np.array([1.0]), ident, ident, double, double)
        array([5.])
        >>> gpt_neox_block(np.array([1.0]), ident, ident, double, double, parallel=False)
        array([9.])

    Hint: roughly 4 lines. Each sublayer is called exactly once.
    """
    raise NotImplementedError("Exercise 9.2: gpt_neox_block")


def perplexity(batch_losses, batch_tokens) -> float:
    """Exercise 9.3 -- validation perplexity from per-batch mean losses.

    Evaluation runs in batches; batch ``b`` predicts ``batch_tokens[b]`` tokens with a *mean*
    next-token cross-entropy of ``batch_losses[b]`` nats (the last batch is often smaller).
    The perplexity is the exponential of the mean loss **per token** over the whole split:

        PPL = exp( sum_b N_b * loss_b / sum_b N_b )

    Args:
        batch_losses: float sequence ``[n_batches]`` of mean losses (nats).
        batch_tokens: int sequence ``[n_batches]`` of predicted tokens per batch (positive).

    Returns:
        a Python float.

    Example:
        >>> round(perplexity([np.log(4.0), np.log(16.0)], [100, 100]), 6)  # per-token mean: log 8
        8.0
        >>> round(perplexity([np.log(4.0), np.log(16.0)], [300, 100]), 3)  # weighted: 4**0.75 * 16**0.25
        5.657

    Hint: roughly 3 lines.
    """
    raise NotImplementedError("Exercise 9.3: perplexity")


def loss_at_time(times, losses, t) -> np.ndarray:
    """Exercise 9.4 -- a validation curve read at equal wall-clock time.

    A run was evaluated at cumulative training times ``times[0] < times[1] < ...`` (seconds)
    with validation losses ``losses``. Its loss at time ``t`` is the straight line between the
    two evaluations around ``t`` (linear interpolation); at an evaluation time it is that
    evaluation's loss. Outside ``[times[0], times[-1]]`` the run says nothing: return NaN there
    (no clamping, no extrapolation) -- a run that finished sooner has no loss at a later time.

    Args:
        times: float array ``[k]``, strictly increasing, ``k >= 1``.
        losses: float array ``[k]``.
        t: float array ``[m]`` (any order) or a scalar.

    Returns:
        float64 array of the shape of ``t`` (a 0-d array for a scalar).

    Example:
        >>> loss_at_time([10.0, 20.0, 40.0], [6.0, 5.0, 4.0], [5.0, 10.0, 15.0, 30.0, 50.0])
        array([nan, 6. , 5.5, 4.5, nan])

    Hint: roughly 5 lines (``np.interp`` does the inside).
    """
    raise NotImplementedError("Exercise 9.4: loss_at_time")


def attention_flop_fraction(n: int, hidden_size: int, num_layers: int, intermediate_size: int, vocab_size: int,
                            pairs: float | None = None) -> float:
    """Exercise 9.5 -- the share of a GPT-NeoX forward pass spent in attention, counted in FLOPs.

    Count matrix products only, a multiply-add as 2 FLOPs, for one sequence of ``n`` tokens,
    with ``h = hidden_size``, ``i = intermediate_size``, ``V = vocab_size``, ``L = num_layers``:

    * per layer: the query/key/value projection ``2 n h (3h)``, the output projection
      ``2 n h h``, the MLP ``2 n h i`` twice, and the attention core: ``QK^T`` and ``PV`` over
      ``P`` kept (query, key) pairs per head, ``2 P d`` each per head, ``h / d`` heads;
    * once: the output layer ``2 n h V`` (the input embedding is a lookup: 0 FLOPs).

    ``pairs`` is ``P``; None means causal dense attention, ``P = n (n + 1) / 2``. Return the
    attention core's FLOPs divided by the total.

    Args:
        n, hidden_size, num_layers, intermediate_size, vocab_size: positive ints.
        pairs: kept pairs per head, ``0 <= P <= n * n``, or None.

    Returns:
        a float in ``[0, 1)``.

    Example:
        >>> round(attention_flop_fraction(2048, 512, 6, 2048, 50304), 4)  # Pythia-70M at 2048 tokens
        0.1236

    Hint: roughly 6 lines. The head dimension cancels.
    """
    raise NotImplementedError("Exercise 9.5: attention_flop_fraction")


def amdahl_speedup(fraction, part_speedup):
    """Exercise 9.6 -- Amdahl's law: the whole speed-up when one part gets faster.

    A part taking the fraction ``f`` of the time is made ``s`` times faster; the rest is
    unchanged. The new time is ``(1 - f) + f / s`` of the old, so the whole speeds up by

        S = 1 / ((1 - f) + f / s)

    ``s = inf`` (the part disappears) gives the ceiling ``1 / (1 - f)``.

    Args:
        fraction: ``f`` in ``[0, 1]``, float or array.
        part_speedup: ``s > 0`` (``inf`` allowed), float or array broadcastable with ``f``.

    Returns:
        float or float64 array of the broadcast shape.

    Example:
        >>> amdahl_speedup(0.5, 2.0)
        1.3333333333333333
        >>> amdahl_speedup(0.1, np.inf)  # attention at 10% can never give more than 1.11x
        1.1111111111111112

    Hint: roughly 2 lines.
    """
    raise NotImplementedError("Exercise 9.6: amdahl_speedup")
