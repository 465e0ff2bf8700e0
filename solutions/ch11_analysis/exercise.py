"""Chapter 11 -- Benchmarking and analysis: cost, long-range quality, training dynamics.

Fill in each function, then grade it:

    python -m sparse_core grade --chapter 11

The five functions are the reader's own versions of small pieces of the chapter's analysis: the
MQAR task generator (11.1) and the ListOps evaluator (11.2) of the quality comparison, the
scaling exponent of a cost curve (11.3), the Pareto front of a cost-versus-quality table (11.4)
and a gradient probe of which positions an attention layer's last token depends on (11.5).
Work in numpy for 11.1-11.4 (plain Python is fine too) and in torch for 11.5.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

__all__ = ["mqar_example", "listops_value", "fit_exponent", "pareto_front", "position_grad_norms"]

IGNORE = -100  # label of an unlabelled position (F.cross_entropy's default ignore_index)
FILLER = 0     # the token between the queries
OPERATORS = ("[MAX", "[MIN", "[MED", "[SM")


def mqar_example(rng: np.random.Generator, seq_len: int, num_kv_pairs: int,
                 vocab_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Exercise 11.1 -- one multi-query associative recall (MQAR) example.

    With ``n = seq_len``, ``P = num_kv_pairs``, ``V = vocab_size`` and ``half = (V - 1) // 2``:

    * keys: ``P`` *distinct* tokens drawn at random from ``1 .. half``;
    * values: ``P`` tokens drawn at random from ``half + 1 .. 2 * half`` (repeats allowed);
    * context: positions ``0 .. 2P - 1`` hold ``k_1 v_1 k_2 v_2 ... k_P v_P``;
    * queries: the ``(n - 2P) // 2`` *slots* after the context start at the even positions
      ``2P, 2P + 2, ...``; choose ``P`` distinct slots at random and put every key once, in a random
      order, at one of them, followed by its value (a key at position ``p``, its value at ``p + 1``);
    * every other position holds the filler token ``0`` (for odd ``n`` the last one always does);
    * labels: ``y[p]`` is the key's value at each query position ``p``, ``-100`` everywhere else.

    Args:
        rng: a ``numpy.random.Generator``; draw every random choice from it (same state, same example).
        seq_len: ``n >= 4 P`` (the context and the queries need ``4 P`` tokens).
        num_kv_pairs: ``P >= 1``.
        vocab_size: ``V`` with ``(V - 1) // 2 >= P`` (enough distinct keys).

    Returns:
        ``x, y``: int64 numpy arrays of shape ``(seq_len,)``. Settings that cannot make an example
        (not positive integers, ``n < 4P``, too few keys) raise ``ValueError`` whose message names
        the argument (``seq_len``, ``num_kv_pairs`` or ``vocab_size``).

    Example:
        >>> x, y = mqar_example(np.random.default_rng(0), 16, 2, 9)   # keys 1..4, values 5..8
        >>> x     # k1 v1 k2 v2, then key 1 queried at position 6 and key 3 at position 12
        array([3, 6, 1, 5, 0, 0, 1, 5, 0, 0, 0, 0, 3, 6, 0, 0])
        >>> y
        array([-100, -100, -100, -100, -100, -100, 5, -100, -100, -100, -100, -100, 6, -100, -100, -100])

    (your random choices may differ: the checks test the rules, not these numbers).

    Hint: roughly 15 lines. ``rng.permutation(half)[:P] + 1`` gives distinct keys; check the
    settings first, each with its own message.
    """
    # the settings: positive integers, room for the context and the queries, enough distinct keys
    for name, value in (("seq_len", seq_len), ("num_kv_pairs", num_kv_pairs), ("vocab_size", vocab_size)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
            raise ValueError(f"`{name}` must be a positive integer, got {value!r}")
    P, n, half = int(num_kv_pairs), int(seq_len), (int(vocab_size) - 1) // 2
    if n < 4 * P:
        raise ValueError(f"`seq_len`={n} is too short for {P} pairs: it needs 4 x {P} = {4 * P} tokens")
    if half < P:
        raise ValueError(f"`vocab_size`={vocab_size} has only {half} keys, fewer than `num_kv_pairs`={P}")
    keys = rng.permutation(half)[:P] + 1                      # distinct, from 1..half
    values = rng.integers(half + 1, 2 * half + 1, size=P)     # from half+1..2*half, repeats allowed
    x = np.full(n, FILLER, dtype=np.int64)
    y = np.full(n, IGNORE, dtype=np.int64)
    x[0:2 * P:2], x[1:2 * P:2] = keys, values                 # the context k1 v1 ... kP vP
    slots = rng.permutation((n - 2 * P) // 2)[:P]             # P distinct query slots
    order = rng.permutation(P)                                # which key goes to which slot
    pos = 2 * P + 2 * slots                                   # even positions after the context
    x[pos], x[pos + 1] = keys[order], values[order]
    y[pos] = values[order]                                    # predict the value at the query
    return x, y


def _apply(op: str, args: list[int]) -> int:
    if op == "[MAX":
        return max(args)
    if op == "[MIN":
        return min(args)
    if op == "[MED":
        return int(np.median(args))                           # the mean of the middle two, rounded down
    return sum(args) % 10                                     # [SM


def listops_value(tokens: list[str]) -> int:
    """Exercise 11.2 -- the value of a ListOps expression.

    An expression is a digit ``"0" .. "9"`` or an operator token followed by one or more
    expressions and ``"]"``: ``[MAX`` (largest argument), ``[MIN`` (smallest), ``[MED`` (median,
    ``int(numpy.median(args))``: with an even count, the mean of the two middle arguments rounded
    down) and ``[SM`` (sum modulo 10).

    Args:
        tokens: list of strings, e.g. ``["[MAX", "2", "9", "[MIN", "4", "7", "]", "0", "]"]``; nesting
            may be deep and expressions long (thousands of tokens).

    Returns:
        The value, a Python int in ``0 .. 9``. A malformed expression raises ``ValueError``: an
        unknown token, ``]`` with no open operator, an operator closed without arguments, an
        operator never closed, nothing at all, or more than one top-level expression.

    Example:
        >>> listops_value(["[MAX", "2", "9", "[MIN", "4", "7", "]", "0", "]"])
        9
        >>> listops_value(["[MED", "1", "4", "]"]), listops_value(["[SM", "7", "8", "]"])
        (2, 5)

    Hint: roughly 20 lines. Keep a stack of open operators and their arguments (an iterative
    evaluator); a recursive one needs as many nested calls as the expression is deep, and the
    checks go far deeper than Python's default recursion limit of 1000.
    """
    stack: list[list] = []        # one entry per open operator: [op, arg, arg, ...]
    result: list[int] = []        # the finished top-level expression(s)
    for t in tokens:
        if t in OPERATORS:
            stack.append([t])
            continue
        if t == "]":
            if not stack:
                raise ValueError("malformed expression: ']' closes no operator")
            op, *args = stack.pop()
            if not args:
                raise ValueError(f"malformed expression: {op} closed without arguments")
            value = _apply(op, args)
        elif isinstance(t, str) and len(t) == 1 and t in "0123456789":
            value = int(t)
        else:
            raise ValueError(f"unknown ListOps token {t!r}")
        (stack[-1] if stack else result).append(value)        # an argument, or the top level
    if stack:
        raise ValueError(f"malformed expression: {len(stack)} operator(s) never closed")
    if len(result) != 1:
        raise ValueError(f"malformed expression: {len(result)} top-level expressions, expected exactly 1")
    return result[0]


def fit_exponent(n, t) -> float:
    """Exercise 11.3 -- the exponent ``b`` of a power law ``t ~ a n^b``, robust to outliers.

    The Theil-Sen slope of the points ``(log n_i, log t_i)``: the median, over every pair
    ``i < j`` with ``n_i != n_j``, of the pairwise slope

        (log t_j - log t_i) / (log n_j - log n_i),

    with ``numpy.median``'s convention (the mean of the two middle slopes when their number is
    even). One or two wild timings move a least-squares fit far; they move this median little.

    Args:
        n: 1-d sequence of sizes (any order), all ``> 0``.
        t: 1-d sequence of the same length of measurements (seconds, bytes), all ``> 0``.

    Returns:
        ``b`` as a Python float. Fewer than 2 points, lengths that differ, a value ``<= 0`` (or not
        finite) or all ``n`` equal raise ``ValueError``.

    Example:
        >>> fit_exponent([1, 2, 4, 8], [3.0, 12.0, 48.0, 192.0])     # t = 3 n^2
        2.0
        >>> fit_exponent([1, 2, 4, 8, 16], [1, 2, 4, 8, 1000])       # one wild point: still 1.0
        1.0

    Hint: roughly 10 lines.
    """
    n = np.asarray(n, dtype=np.float64).ravel()
    t = np.asarray(t, dtype=np.float64).ravel()
    if n.size != t.size:
        raise ValueError(f"`n` and `t` must have the same length, got {n.size} and {t.size}")
    if n.size < 2:
        raise ValueError(f"need at least 2 points, got {n.size}")
    for name, a in (("n", n), ("t", t)):
        if not np.all(np.isfinite(a)) or np.any(a <= 0):
            raise ValueError(f"every `{name}` must be finite and > 0 (the fit is in log-log space)")
    ln, lt = np.log(n), np.log(t)
    i, j = np.triu_indices(n.size, k=1)                   # every pair i < j
    keep = ln[i] != ln[j]                                 # equal sizes give no slope
    if not keep.any():
        raise ValueError("every `n` is the same: no slope to fit")
    slopes = (lt[j] - lt[i])[keep] / (ln[j] - ln[i])[keep]
    return float(np.median(slopes))


def pareto_front(cost, quality) -> list[int]:
    """Exercise 11.4 -- the indices of the points of a cost/quality table that no other point dominates.

    Lower cost and higher quality are better. Point ``j`` *dominates* point ``i`` when
    ``cost[j] <= cost[i]`` and ``quality[j] >= quality[i]`` with at least one of the two strict.
    So identical points (duplicates) do not dominate each other: all copies of an undominated
    point are on the front; a point with the same cost as another but lower quality (or the same
    quality and a higher cost) is dominated.

    Args:
        cost: 1-d sequence of finite numbers (e.g. seconds per step).
        quality: 1-d sequence of the same length (e.g. accuracy).

    Returns:
        The undominated indices as a list of ints, sorted by cost, ties (duplicates) by index.
        Empty inputs give ``[]``; lengths that differ raise ``ValueError``.

    Example:
        >>> pareto_front([3.0, 1.0, 2.0, 2.0, 4.0], [0.9, 0.5, 0.5, 0.8, 0.9])
        [1, 3, 0]

    (point 2 is dominated by point 1: same quality, higher cost; point 4 by point 0).

    Hint: roughly 8 lines; comparing every pair (O(n^2)) is fine. If you sweep in cost order
    instead, mind equal costs.
    """
    cost = np.asarray(cost, dtype=np.float64).ravel()
    quality = np.asarray(quality, dtype=np.float64).ravel()
    if cost.size != quality.size:
        raise ValueError(f"`cost` and `quality` must have the same length, got {cost.size} and {quality.size}")
    # dominated[i]: some j is at least as good in both and strictly better in one
    no_worse = (cost[None, :] <= cost[:, None]) & (quality[None, :] >= quality[:, None])      # [i, j]
    better = (cost[None, :] < cost[:, None]) | (quality[None, :] > quality[:, None])
    dominated = (no_worse & better).any(axis=1)
    front = np.flatnonzero(~dominated)
    return [int(i) for i in sorted(front, key=lambda i: (cost[i], i))]


def position_grad_norms(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Exercise 11.5 -- which input positions the last position's output depends on, by gradients.

    With ``out = layer(x)`` of shape ``[batch, n, d_model]``, let ``s = out[:, -1, :].sum()`` (the sum
    of the last position's outputs over the batch and the features). The probe's value at position
    ``j`` is the Euclidean norm of ``ds/dx[:, j, :]`` over the batch and the features:

        rho_j = sqrt( sum_{batch, features} (ds / dx[batch, j, feature])^2 ).

    A causal dense layer gives ``rho_j > 0`` for every ``j``; a sliding window of half-width ``w``
    gives exactly ``0`` for ``j < n - 1 - w``; global tokens are nonzero wherever they are.

    Args:
        layer: a module ``[batch, n, d_model] -> [batch, n, d_model]`` (e.g. from
            ``sparse_core.approx.methods.make_attention``).
        x: float tensor ``[batch, n, d_model]``. Leave it as it is: not modified, not requiring grad,
            no ``.grad`` afterwards; leave the layer's parameters' ``.grad`` untouched too.

    Returns:
        Float tensor of shape ``(n,)``, detached.

    Example:
        >>> layer = make_attention("local", 16, 2, 64, causal=True, window=8, block_size=16)
        >>> rho = position_grad_norms(layer, torch.randn(2, 64, 16))
        >>> rho.shape, (rho > 0).nonzero().flatten().tolist()
        (torch.Size([64]), [55, 56, 57, 58, 59, 60, 61, 62, 63])

    Hint: roughly 5 lines. Differentiate with respect to a detached copy that requires grad, with
    ``torch.autograd.grad`` (``.backward()`` would also fill the parameters' ``.grad``).
    """
    x_probe = x.detach().clone().requires_grad_(True)         # the caller's tensor stays untouched
    s = layer(x_probe)[:, -1, :].sum()                        # the last position, summed
    (grad,) = torch.autograd.grad(s, x_probe)                 # [batch, n, d_model]; no parameter .grad
    return grad.pow(2).sum(dim=(0, 2)).sqrt().detach()        # norm over batch and features
