"""Graded checks for Chapter 11 (benchmarking and analysis).

The expected values are computed here independently of the library functions the exercises
re-implement: MQAR examples are checked against the rules of the task (their random choices are
the reader's, so the checks test invariants, repeatability and that every choice does vary);
ListOps values against a recursive evaluator written here, on expressions drawn with the LRA
generator rules (:func:`sparse_core.lra.listops.generate_listops`); Theil-Sen slopes and Pareto
fronts against explicit loops over every pair of points; gradient probes against a float64
autograd computation on a copy of the layer, and against the pattern's own zeros.
"""
from __future__ import annotations

import copy

import numpy as np

from ..compare import as_array, assert_close, call_repr
from . import CheckList

CHECKS = CheckList()
# what each exercise returns, as its docstring says: every call in every check is held to it
CHECKS.returns("11.1", "(int64 array, int64 array)")
CHECKS.returns("11.2", "int")
CHECKS.returns("11.3", "float")
CHECKS.returns("11.4", "list of int")
CHECKS.returns("11.5", "float tensor")


def _torch():
    import torch

    return torch


# ---------------------------------------------------------------- Exercise 11.1: MQAR

IGNORE = -100


def _call_mqar(fn, seed, n, P, V):
    ctx = f"mqar_example(default_rng({seed}), seq_len={n}, num_kv_pairs={P}, vocab_size={V})"
    got = fn(np.random.default_rng(seed), n, P, V)
    if got is None:
        raise AssertionError(f"{ctx} returned None (did you forget `return`?)")
    if not isinstance(got, tuple) or len(got) != 2:
        raise AssertionError(f"{ctx}: expected a tuple (x, y), got {type(got).__name__}")
    x, y = (as_array(a, f"mqar_example: {w}") for a, w in zip(got, ("x", "y")))
    return x, y, ctx


def _mqar_violation(x, y, n, P, V):
    """The first rule the example breaks, in words, or None."""
    for name, a in (("x", x), ("y", y)):
        if a.shape != (n,):
            return f"{name} has shape {a.shape}, expected ({n},)"
        if a.dtype != np.int64:
            return f"{name} has dtype {a.dtype}, expected int64"
    half = (V - 1) // 2
    keys, values = x[0:2 * P:2], x[1:2 * P:2]
    if len(set(keys.tolist())) != P:
        return f"the context keys x[0:{2 * P}:2] = {keys.tolist()} are not {P} distinct keys"
    if keys.min() < 1 or keys.max() > half:
        return f"a context key is outside 1..{half}: {keys.tolist()}"
    if values.min() < half + 1 or values.max() > 2 * half:
        return f"a context value is outside {half + 1}..{2 * half}: {values.tolist()}"
    queried = np.flatnonzero(y != IGNORE)
    if len(queried) != P:
        return f"{len(queried)} labelled positions (y != -100) at {queried.tolist()}, expected one per key: {P}"
    slots = (n - 2 * P) // 2
    for p in queried.tolist():
        if p < 2 * P:
            return f"position {p} is labelled, inside the context 0..{2 * P - 1}: queries come after the context"
        if (p - 2 * P) % 2 or p > 2 * P + 2 * (slots - 1):
            return (f"query at position {p}: queries sit at the slots 2P, 2P + 2, ..., "
                    f"{2 * P + 2 * (slots - 1)} (even positions after the context)")
    if sorted(x[queried].tolist()) != sorted(keys.tolist()):
        return f"the queried tokens x[{queried.tolist()}] = {x[queried].tolist()} are not each key once: {keys.tolist()}"
    value_of = dict(zip(keys.tolist(), values.tolist()))
    for p in queried.tolist():
        if y[p] != value_of[int(x[p])]:
            return (f"y[{p}] = {int(y[p])}, but key {int(x[p])} has the value {value_of[int(x[p])]} in the context "
                    "(the label sits at the key's position, not the value's)")
        if x[p + 1] != value_of[int(x[p])]:
            return f"x[{p + 1}] = {int(x[p + 1])}: the queried key {int(x[p])} must be followed by its value {value_of[int(x[p])]}"
    used = set(range(2 * P)) | set(queried.tolist()) | set((queried + 1).tolist())
    rest = [p for p in range(n) if p not in used and x[p] != 0]
    if rest:
        return f"positions {rest[:6]} hold {x[rest[:6]].tolist()}, not the filler 0"
    return None


def _check_mqar(fn, seed, n, P, V):
    x, y, ctx = _call_mqar(fn, seed, n, P, V)
    problem = _mqar_violation(x, y, n, P, V)
    if problem:
        shown = (f"\n    x: {x.tolist()}\n    y: {y.tolist()}" if x.size <= 40 else "")
        raise AssertionError(f"{ctx}: {problem}{shown}\n    (rules: context k1 v1 ... kP vP, each key once at an "
                             "even slot after it followed by its value, label = value at the key, -100 and filler "
                             "0 elsewhere)")
    return x, y


@CHECKS.add("11.1", "mqar_example", "the rules of the task: context, queries, labels, filler", 3)
def _mqar_rules(fn):
    for n, P, V in [(16, 2, 9), (64, 8, 40), (48, 5, 12), (256, 16, 64), (20, 3, 100)]:
        for seed in range(8):
            _check_mqar(fn, seed, n, P, V)


@CHECKS.add("11.1", "mqar_example", "edge settings: 4P == n, odd n, even V, one pair", 1)
def _mqar_edges(fn):
    # n = 4P fills every slot; odd n leaves the last position as filler; V even leaves V - 1 unused
    for n, P, V in [(8, 2, 5), (32, 8, 17), (33, 4, 20), (17, 4, 9), (10, 1, 3), (4, 1, 4), (41, 10, 22)]:
        for seed in range(6):
            x, _ = _check_mqar(fn, seed, n, P, V)
            if n % 2 and x[-1] != 0:
                raise AssertionError(f"mqar_example(seq_len={n}): odd n leaves the last position as filler, "
                                     f"got x[-1] = {int(x[-1])}")


@CHECKS.add("11.1", "mqar_example", "random choices from rng: repeatable, and every choice varies", 2)
def _mqar_random(fn):
    n, P, V = 16, 2, 9
    a, _, ctx = _call_mqar(fn, 5, n, P, V)
    b, _, _ = _call_mqar(fn, 5, n, P, V)
    if not np.array_equal(a, b):
        raise AssertionError(f"{ctx}: two generators with the same seed gave different examples; draw every "
                             "random choice from `rng` (not np.random.* or random.*)")
    xs = [_check_mqar(fn, seed, n, P, V)[0] for seed in range(300)]
    if len({tuple(x.tolist()) for x in xs}) < 200:
        raise AssertionError("mqar_example: 300 seeds gave fewer than 200 different examples")
    half = (V - 1) // 2
    seen_keys = {int(k) for x in xs for k in x[0:2 * P:2]}
    if seen_keys != set(range(1, half + 1)):
        raise AssertionError(f"mqar_example: over 300 examples the keys were only {sorted(seen_keys)}, "
                             f"expected every key 1..{half} to appear")
    seen_values = {int(v) for x in xs for v in x[1:2 * P:2]}
    if seen_values != set(range(half + 1, 2 * half + 1)):
        raise AssertionError(f"mqar_example: over 300 examples the values were only {sorted(seen_values)}, "
                             f"expected every value {half + 1}..{2 * half} to appear")
    if all(x[0] < x[2] for x in xs) or all(x[0] > x[2] for x in xs):
        raise AssertionError("mqar_example: the context keys always come sorted; put them in a random order")
    starts = 2 * P + 2 * np.arange((n - 2 * P) // 2)
    used = {int(p) for x in xs for p in starts if x[p] != 0}
    if used != set(starts.tolist()):
        missing = sorted(set(starts.tolist()) - used)
        raise AssertionError(f"mqar_example(seq_len={n}, num_kv_pairs={P}): over 300 examples no key was ever "
                             f"queried at positions {missing}; every slot 2P, 2P + 2, ..., n - 2 must be possible")
    first = [int(x[starts][x[starts] != 0][0]) == int(x[0]) for x in xs]
    if all(first) or not any(first):
        raise AssertionError("mqar_example: the keys are always queried in the same order as in the context; "
                             "query them in a random order")


@CHECKS.add("11.1", "mqar_example", "refuses impossible settings, naming the argument", 1)
def _mqar_refuses(fn):
    _check_mqar(fn, 0, 16, 2, 9)  # refusing everything is not an answer: valid settings must give an example
    cases = [((15, 4, 20), "seq_len", "shorter than 4 x num_kv_pairs"), ((16, 2, 4), "vocab_size", "only 1 key"),
             ((16, 0, 9), "num_kv_pairs", "no pairs"), ((0, 1, 9), "seq_len", "seq_len 0"),
             ((16, 2, 0), "vocab_size", "vocab_size 0"), ((16, -1, 9), "num_kv_pairs", "negative pairs"),
             ((16.5, 2, 9), "seq_len", "not an integer")]
    for (n, P, V), name, why in cases:
        ctx = f"mqar_example(rng, seq_len={n}, num_kv_pairs={P}, vocab_size={V}) ({why})"
        try:
            fn(np.random.default_rng(0), n, P, V)
        except ValueError as exc:
            if name not in str(exc):
                raise AssertionError(f"{ctx} raised ValueError({str(exc)!r}); its message must name `{name}`") from None
            continue
        except NotImplementedError:
            raise
        except Exception as exc:  # noqa: BLE001 - the wrong exception is the answer under test
            raise AssertionError(f"{ctx} raised {type(exc).__name__}: {exc}; expected a ValueError naming "
                                 f"`{name}`") from None
        raise AssertionError(f"{ctx} returned an example; expected a ValueError naming `{name}`")


# ---------------------------------------------------------------- Exercise 11.2: ListOps

_OPS = {"[MAX": max, "[MIN": min, "[SM": lambda a: sum(a) % 10}


def _med(args):
    s = sorted(args)
    m = len(s)
    return s[m // 2] if m % 2 else (s[m // 2 - 1] + s[m // 2]) // 2  # the mean of the middle two, rounded down


def _ref_value(tokens):
    """A recursive evaluator (the generated expressions are at most 10 deep)."""
    def node(i):
        t = tokens[i]
        if t.isdigit():
            return int(t), i + 1
        args, i = [], i + 1
        while tokens[i] != "]":
            v, i = node(i)
            args.append(v)
        return (_med(args) if t == "[MED" else _OPS[t](args)), i + 1

    value, end = node(0)
    assert end == len(tokens)
    return value


def _check_listops(fn, tokens, expected=None, note=""):
    expected = _ref_value(tokens) if expected is None else expected
    shown = " ".join(tokens) if len(tokens) <= 30 else f"{' '.join(tokens[:20])} ... ({len(tokens)} tokens)"
    got = fn(list(tokens))
    if got is None:
        raise AssertionError(f"listops_value({shown}) returned None (did you forget `return`?)")
    if isinstance(got, bool) or not isinstance(got, (int, np.integer)) or got != expected:
        raise AssertionError(f"listops_value({shown}){note}\n    yours:    {got!r}\n    expected: {expected}")


@CHECKS.add("11.2", "listops_value", "small expressions of every operator", 1)
def _listops_small(fn):
    cases = [("7", 7), ("[MAX 2 9 [MIN 4 7 ] 0 ]", 9), ("[MIN 5 3 8 ]", 3), ("[SM 7 8 ]", 5), ("[SM 9 9 9 ]", 7),
             ("[MED 9 1 5 ]", 5), ("[MAX 4 ]", 4), ("[SM [SM 5 5 ] 0 ]", 0), ("[MIN [MAX 1 2 ] [MAX 3 0 ] ]", 2),
             ("[MED [SM 6 6 ] [MIN 9 8 ] 1 ]", 2)]
    for text, expected in cases:
        _check_listops(fn, text.split(), expected)


@CHECKS.add("11.2", "listops_value", "the median of an even count rounds down", 1)
def _listops_median(fn):
    for text, expected in [("[MED 1 2 ]", 1), ("[MED 1 4 ]", 2), ("[MED 0 9 ]", 4), ("[MED 2 3 4 5 ]", 3),
                           ("[MED 3 4 8 9 ]", 6), ("[MED 5 5 1 1 ]", 3), ("[MED 7 0 ]", 3), ("[MED 8 1 6 3 ]", 4)]:
        _check_listops(fn, text.split(), expected, " (int(numpy.median(args)): the mean of the two middle "
                                                   "arguments, rounded down)")


@CHECKS.add("11.2", "listops_value", "matches a recursive evaluator on generated expressions", 3)
def _listops_generated(fn):
    from ...lra.listops import generate_listops

    rng = np.random.default_rng(11)
    for lo, hi, count in [(2, 30, 60), (30, 300, 60), (300, 1000, 20), (1000, 2000, 6)]:
        for _ in range(count):
            _check_listops(fn, generate_listops(rng, max_depth=10, max_args=10, min_length=lo, max_length=hi),
                           note=" (an expression drawn with the LRA generator's rules)")


@CHECKS.add("11.2", "listops_value", "malformed expressions raise ValueError", 1)
def _listops_malformed(fn):
    _check_listops(fn, ["[MAX", "2", "[MIN", "4", "7", "]", "0", "]"], 4, " (a well-formed expression: refusing "
                   "everything is not an answer)")
    cases = [([], "nothing at all"), (["]"], "']' with no open operator"), (["[MAX", "1"], "an operator never closed"),
             (["[MAX", "]"], "an operator closed without arguments"), (["1", "2"], "two top-level expressions"),
             (["[MAX", "1", "]", "2"], "a value after the expression"), (["[ADD", "1", "2", "]"], "an unknown operator"),
             (["[SM", "10", "2", "]"], "'10' is not a digit"), (["[MAX", "1", "2", "]", "]"], "one ']' too many"),
             (["[MIN", "x", "]"], "an unknown token")]
    for tokens, why in cases:
        try:
            got = fn(list(tokens))
        except ValueError:
            continue
        except NotImplementedError:
            raise
        except Exception as exc:  # noqa: BLE001 - the wrong exception is the answer under test
            raise AssertionError(f"listops_value({tokens}) ({why}) raised {type(exc).__name__}: {exc}; "
                                 "expected a ValueError") from None
        raise AssertionError(f"listops_value({tokens}) ({why}) returned {got!r}; expected a ValueError")


@CHECKS.add("11.2", "listops_value", "nesting 3000 deep", 1)
def _listops_deep(fn):
    # [SM [SM ... [SM 1 1 ] 1 ] ... 1 ]: the innermost is 2, every level adds 1
    for depth in (1500, 3000):
        tokens = ["[SM"] * depth + ["1"] + ["1", "]"] * depth
        try:
            _check_listops(fn, tokens, (1 + depth) % 10, f" (nesting {depth} deep)")
        except RecursionError:
            raise AssertionError(f"listops_value on an expression nested {depth} deep hit Python's recursion limit; "
                                 "evaluate with an explicit stack instead of recursive calls") from None


# ---------------------------------------------------------------- Exercise 11.3: the scaling exponent

def _theil_sen_ref(n, t):
    ln, lt = np.log(np.asarray(n, dtype=np.float64)), np.log(np.asarray(t, dtype=np.float64))
    slopes = []
    for i in range(len(ln)):
        for j in range(i + 1, len(ln)):
            if ln[i] != ln[j]:
                slopes.append((lt[j] - lt[i]) / (ln[j] - ln[i]))
    return float(np.median(slopes))


def _least_squares(n, t):
    return float(np.polyfit(np.log(n), np.log(t), 1)[0])


def _check_exponent(fn, n, t, expected, atol, note=""):
    got = fn(n, t)
    if got is None:
        raise AssertionError("fit_exponent returned None (did you forget `return`?)")
    got = as_array(got, "fit_exponent")
    if got.shape != ():
        raise AssertionError(f"fit_exponent: expected one number, got shape {got.shape}")
    assert_close(got, np.asarray(expected), what="fit_exponent", atol=atol,
                 context=call_repr("fit_exponent", n, t) + note)


@CHECKS.add("11.3", "fit_exponent", "exact power laws", 2)
def _exponent_exact(fn):
    for b, a, n in [(1.0, 3.0, [1, 2, 4, 8]), (1.5, 0.01, [100, 200, 400, 800, 1600]), (2.0, 2e-9, [512, 1024, 2048]),
                    (0.5, 7.0, [3, 10, 30, 100, 300, 1000]), (3.0, 1.0, [2, 3])]:
        nn = np.asarray(n, dtype=np.float64)
        _check_exponent(fn, nn, a * nn ** b, b, 1e-9, f" (t = {a:g} n^{b:g} exactly)")


@CHECKS.add("11.3", "fit_exponent", "the Theil-Sen slope of noisy points", 2)
def _exponent_noisy(fn):
    rng = np.random.default_rng(3)
    for count, b in [(6, 1.0), (7, 2.0), (10, 1.5), (25, 1.2)]:
        n = np.sort(rng.integers(16, 20000, count)).astype(np.float64)
        t = 1e-6 * n ** b * np.exp(0.3 * rng.standard_normal(count))
        _check_exponent(fn, n, t, _theil_sen_ref(n, t), 1e-9,
                        " (noise of about 30%: the median over every pair i < j of the slopes in log-log space)")
    n = np.array([64, 64, 128, 128, 256, 512, 512], dtype=np.float64)  # repeated sizes: their pairs give no slope
    t = np.array([1.0, 1.2, 3.9, 4.4, 15.0, 70.0, 61.0])
    _check_exponent(fn, n, t, _theil_sen_ref(n, t), 1e-9, " (repeated sizes: skip the pairs with n_i == n_j)")


@CHECKS.add("11.3", "fit_exponent", "one or two wild outliers", 2)
def _exponent_outliers(fn):
    n = 256.0 * 2.0 ** np.arange(7)
    for b, wild in [(2.0, {6: 1 / 40}), (1.0, {0: 60.0}), (2.0, {5: 30.0, 6: 25.0}), (1.5, {1: 1e-3, 4: 1e3})]:
        t = 1e-9 * n ** b
        for i, factor in wild.items():
            t[i] *= factor
        expected = _theil_sen_ref(n, t)
        note = (f" (t = c n^{b:g} with {len(wild)} point(s) off by factors {list(wild.values())}: Theil-Sen gives "
                f"{expected:.4f}, a least-squares fit {_least_squares(n, t):.4f})")
        _check_exponent(fn, n, t, expected, 1e-9, note)


@CHECKS.add("11.3", "fit_exponent", "unsorted inputs and plain lists", 1)
def _exponent_unsorted(fn):
    rng = np.random.default_rng(4)
    n = np.sort(rng.integers(10, 5000, 9)).astype(np.float64)
    t = n ** 1.7 * np.exp(0.2 * rng.standard_normal(9))
    expected = _theil_sen_ref(n, t)
    for perm in (rng.permutation(9), np.arange(9)[::-1]):
        _check_exponent(fn, n[perm], t[perm], expected, 1e-9, " (the same points in another order)")
    _check_exponent(fn, [int(v) for v in n], [float(v) for v in t], expected, 1e-9, " (Python lists)")


@CHECKS.add("11.3", "fit_exponent", "refuses unusable inputs", 1)
def _exponent_refuses(fn):
    _check_exponent(fn, [1.0, 2.0, 4.0], [3.0, 12.0, 48.0], 2.0, 1e-9, " (usable points: refusing everything is not "
                    "an answer)")
    cases = [([10.0], [1.0], "one point"), ([], [], "no points"), ([1, 2, 4], [1.0, 2.0], "lengths differ"),
             ([1, 2, 4], [1.0, 0.0, 4.0], "a time of 0"), ([1, -2, 4], [1.0, 2.0, 4.0], "a negative size"),
             ([8, 8, 8], [1.0, 2.0, 3.0], "every n equal: no slope")]
    for n, t, why in cases:
        try:
            got = fn(n, t)
        except ValueError:
            continue
        except NotImplementedError:
            raise
        except Exception as exc:  # noqa: BLE001 - the wrong exception is the answer under test
            raise AssertionError(f"fit_exponent({n}, {t}) ({why}) raised {type(exc).__name__}: {exc}; "
                                 "expected a ValueError") from None
        raise AssertionError(f"fit_exponent({n}, {t}) ({why}) returned {got!r}; expected a ValueError")


# ---------------------------------------------------------------- Exercise 11.4: the Pareto front

def _front_ref(cost, quality):
    cost, quality = list(map(float, cost)), list(map(float, quality))
    keep = []
    for i in range(len(cost)):
        dominated = False
        for j in range(len(cost)):
            if (cost[j] <= cost[i] and quality[j] >= quality[i]
                    and (cost[j] < cost[i] or quality[j] > quality[i])):
                dominated = True
                break
        if not dominated:
            keep.append(i)
    return sorted(keep, key=lambda i: (cost[i], i))


def _check_front(fn, cost, quality, note=""):
    expected = _front_ref(cost, quality)
    got = fn(cost, quality)
    ctx = call_repr("pareto_front", cost, quality) + note
    if got is None:
        raise AssertionError(f"{ctx} returned None (did you forget `return`?)")
    try:
        got_list = [int(i) for i in got]
    except TypeError:
        raise AssertionError(f"{ctx}: expected a list of indices, got {type(got).__name__}") from None
    if got_list != expected:
        extra = sorted(set(got_list) - set(expected))
        missing = sorted(set(expected) - set(got_list))
        why = (f"\n    dominated, yet yours keeps: {extra}" if extra else "") + \
              (f"\n    undominated, yet yours drops: {missing}" if missing else "") + \
              ("\n    (same indices, wrong order: sort by cost, equal costs by index)" if not extra and not missing else "")
        pts = "" if len(cost) > 12 else "\n    points (cost, quality): " + ", ".join(
            f"{i}: ({float(c):g}, {float(q):g})" for i, (c, q) in enumerate(zip(cost, quality)))
        raise AssertionError(f"{ctx}\n    yours:    {got_list}\n    expected: {expected}{why}{pts}")


@CHECKS.add("11.4", "pareto_front", "matches a brute-force reference on random sets", 3)
def _front_random(fn):
    rng = np.random.default_rng(5)
    for size in (2, 5, 12, 40, 200):
        for _ in range(4):
            _check_front(fn, rng.random(size), rng.random(size))
    for size, levels in [(8, 3), (20, 4), (60, 5), (150, 6)]:  # integer grids: many ties and duplicates
        for _ in range(4):
            _check_front(fn, rng.integers(0, levels, size).astype(float), rng.integers(0, levels, size).astype(float),
                         " (values on a small grid: many equal costs, equal qualities and duplicates)")


@CHECKS.add("11.4", "pareto_front", "equal costs, equal qualities and duplicates", 1)
def _front_ties(fn):
    cases = [([1.0, 1.0], [0.5, 0.7], " (equal cost: the higher quality dominates)"),
             ([1.0, 2.0], [0.7, 0.7], " (equal quality: the lower cost dominates)"),
             ([2.0, 1.0, 2.0], [0.9, 0.5, 0.9], " (a duplicated undominated point: both copies stay)"),
             ([1.0, 3.0, 1.0, 2.0], [0.5, 0.9, 0.5, 0.5], " (duplicates at equal cost, and a point they dominate)"),
             ([3.0, 2.0, 2.0, 1.0], [0.9, 0.6, 0.8, 0.1], " (equal costs, listed worse first)"),
             ([3.0, 1.0, 2.0, 2.0, 4.0], [0.9, 0.5, 0.5, 0.8, 0.9], " (the docstring's example)")]
    for cost, quality, note in cases:
        _check_front(fn, cost, quality, note)


@CHECKS.add("11.4", "pareto_front", "all-equal points, one point, no points; lengths that differ", 1)
def _front_edges(fn):
    _check_front(fn, [2.0] * 5, [0.3] * 5, " (all points equal: none dominates another)")
    _check_front(fn, [1.5], [0.2], " (one point)")
    _check_front(fn, [], [], " (no points)")
    try:
        got = fn([1.0, 2.0, 3.0], [0.1, 0.2])
    except ValueError:
        return
    except NotImplementedError:
        raise
    except Exception as exc:  # noqa: BLE001 - the wrong exception is the answer under test
        raise AssertionError(f"pareto_front with 3 costs and 2 qualities raised {type(exc).__name__}: {exc}; "
                             "expected a ValueError") from None
    raise AssertionError(f"pareto_front with 3 costs and 2 qualities returned {got!r}; expected a ValueError")


# ---------------------------------------------------------------- Exercise 11.5: the gradient probe

def _layer(method, n, seed, d_model=16, n_heads=2, **options):
    torch = _torch()
    from ...approx.methods import make_attention

    torch.manual_seed(seed)
    return make_attention(method, d_model, n_heads, n, causal=True, **options)


def _probe_ref(layer, x):
    """Float64 autograd on a copy of the layer: the norm over batch and features of d(out[:, -1].sum())/dx."""
    torch = _torch()
    ref_layer = copy.deepcopy(layer).double()
    x64 = x.detach().double().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(ref_layer(x64)[:, -1, :].sum(), x64)
    return g.pow(2).sum(dim=(0, 2)).sqrt().numpy()


def _probe(fn, layer, x, what):
    torch = _torch()
    got = fn(layer, x)
    if got is None:
        raise AssertionError(f"position_grad_norms({what}) returned None (did you forget `return`?)")
    if not isinstance(got, torch.Tensor):
        raise AssertionError(f"position_grad_norms({what}): expected a torch tensor, got {type(got).__name__}")
    if not got.is_floating_point():
        raise AssertionError(f"position_grad_norms({what}): expected a float tensor, got {got.dtype}")
    if tuple(got.shape) != (x.shape[1],):
        raise AssertionError(f"position_grad_norms({what}): wrong shape\n    yours:    {tuple(got.shape)}\n"
                             f"    expected: ({x.shape[1]},) (one value per input position)")
    return got.detach().double().numpy()


def _probe_case(fn, method, n, batch, seed, **options):
    torch = _torch()
    layer = _layer(method, max(n, 64), seed, **options)
    x = torch.randn(batch, n, 16, generator=torch.Generator().manual_seed(seed))
    what = f"{method} layer {options or ''}, x {tuple(x.shape)}".replace(" {}", "").replace(" ,", ",")
    got = _probe(fn, layer, x, what)
    expected = _probe_ref(layer, x)
    assert_close(got, expected, what="position_grad_norms", atol=1e-6 * float(expected.max()), rtol=2e-4,
                 context=what + " (norm over batch and features of d(sum of out[:, -1, :])/dx[:, j, :])")
    return got


@CHECKS.add("11.5", "position_grad_norms", "matches a float64 autograd reference", 3)
def _probe_values(fn):
    got = _probe_case(fn, "dense", 24, 2, 0)
    if not (got > 0).all():
        raise AssertionError(f"position_grad_norms(dense causal layer): the last position sees every position, "
                             f"yet yours is 0 at {np.flatnonzero(got <= 0).tolist()}")
    _probe_case(fn, "dense", 40, 3, 1)
    _probe_case(fn, "local", 70, 2, 2, window=12, block_size=16)
    _probe_case(fn, "global_local", 48, 1, 3, window=6, num_global=2, block_size=16)


@CHECKS.add("11.5", "position_grad_norms", "a sliding window: exactly zero beyond it, also inside a block", 2)
def _probe_window(fn):
    torch = _torch()
    for n, w, B, seed in [(64, 8, 16, 4), (70, 5, 16, 5), (50, 20, 8, 6)]:
        layer = _layer("local", 128, seed, window=w, block_size=B)
        x = torch.randn(2, n, 16, generator=torch.Generator().manual_seed(seed))
        what = f"local layer, window={w}, block_size={B}, x {tuple(x.shape)}"
        got = _probe(fn, layer, x, what)
        inside = np.arange(n) >= n - 1 - w
        if (got[~inside] != 0).any():
            j = np.flatnonzero(got[~inside] != 0)
            raise AssertionError(f"position_grad_norms({what}): the last position sees only j >= {n - 1 - w}, yet "
                                 f"yours is nonzero at j = {j[:8].tolist()} (e.g. {got[j[0]]:.3g}); positions in the "
                                 "same block but outside the window must be exactly 0 too")
        if not (got[inside] > 0).all():
            raise AssertionError(f"position_grad_norms({what}): yours is 0 inside the window, at "
                                 f"j = {np.flatnonzero(inside & (got <= 0)).tolist()}")


@CHECKS.add("11.5", "position_grad_norms", "global tokens reach the last position", 1)
def _probe_global(fn):
    torch = _torch()
    n, w, g = 80, 6, 3
    layer = _layer("longformer", 128, 7, window=w, num_global=g, block_size=16)
    x = torch.randn(2, n, 16, generator=torch.Generator().manual_seed(7))
    what = f"longformer layer, window={w}, num_global={g}, x {tuple(x.shape)}"
    got = _probe(fn, layer, x, what)
    expected_nonzero = (np.arange(n) < g) | (np.arange(n) >= n - 1 - w)
    if not np.array_equal(got > 0, expected_nonzero):
        raise AssertionError(f"position_grad_norms({what}): nonzero positions\n"
                             f"    yours:    {np.flatnonzero(got > 0).tolist()}\n"
                             f"    expected: {np.flatnonzero(expected_nonzero).tolist()} (the {g} global tokens and "
                             "the window)")
    assert_close(got, _probe_ref(layer, x), what="position_grad_norms", atol=1e-6, rtol=2e-4, context=what)


@CHECKS.add("11.5", "position_grad_norms", "leaves the input and the layer's gradients alone", 1)
def _probe_side_effects(fn):
    torch = _torch()
    layer = _layer("dense", 64, 8)
    for leaf_requires_grad in (False, True):
        x = torch.randn(2, 12, 16, generator=torch.Generator().manual_seed(8))
        x.requires_grad_(leaf_requires_grad)
        before = x.detach().clone()
        got = fn(layer, x)
        what = f"position_grad_norms(dense layer, x with requires_grad={leaf_requires_grad})"
        if not torch.equal(x.detach(), before):
            raise AssertionError(f"{what} modified x in place")
        if x.requires_grad != leaf_requires_grad:
            raise AssertionError(f"{what}: x.requires_grad is {x.requires_grad} afterwards; differentiate with "
                                 "respect to a detached copy (x.detach().clone().requires_grad_(True))")
        if x.grad is not None:
            raise AssertionError(f"{what} left a .grad on x; differentiate a copy with torch.autograd.grad")
        if isinstance(got, torch.Tensor) and got.requires_grad:
            raise AssertionError(f"{what} returned a tensor that requires grad; return it detached")
        touched = [name for name, p in layer.named_parameters() if p.grad is not None]
        if touched:
            raise AssertionError(f"{what} filled the .grad of the layer's parameters {touched[:4]}; use "
                                 "torch.autograd.grad(s, x_copy), which computes only the input's gradient")
        got = _probe(fn, layer, x, what)  # leaving everything alone counts only with the right answer
        expected = _probe_ref(layer, x)
        assert_close(got, expected, what="position_grad_norms", atol=1e-6 * float(expected.max()), rtol=2e-4,
                     context=what)
