"""The exercise machinery itself: stubs raise, stubs match solutions, checks catch wrong answers.

These run whatever ``--impl`` says: they look at exercises/ and solutions/ directly.
"""
import ast
import functools
import importlib.util
import inspect
import json
import re
from pathlib import Path

import numpy as np
import pytest

from sparse_core.course.checks import CHAPTER_MODULES, all_chapters, load_chapter
from sparse_core.course.impl import load_exercise
from sparse_core.course.manifest import find_chapter

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = all_chapters()


def _exercise_functions(path: Path) -> dict[str, str]:
    """function name -> exercise number, for every 'Exercise N.M' function in a file."""
    out = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.FunctionDef):
            m = re.match(r"Exercise (\d+\.\d+)\b", ast.get_docstring(node) or "")
            if m:
                out[node.name] = m.group(1)
    return out


def _load_script(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda c: c.slug)
def test_every_stub_raises_not_implemented(chapter):
    module = load_exercise(ROOT / "exercises", chapter.slug)
    functions = _exercise_functions(ROOT / "exercises" / chapter.slug / "exercise.py")
    assert functions, "no exercises found"
    for name, number in functions.items():
        fn = getattr(module, name)
        dummy = [None] * sum(p.default is inspect.Parameter.empty for p in inspect.signature(fn).parameters.values())
        with pytest.raises(NotImplementedError, match=rf"^Exercise {re.escape(number)}: {name}$"):
            fn(*dummy)


def test_stubs_are_generated_from_solutions():
    assert _load_script("make_stubs").main(["--check"]) == 0, "run: python scripts/make_stubs.py"


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda c: c.slug)
def test_stubs_say_where_they_come_from(chapter):
    stub = (ROOT / "exercises" / chapter.slug / "exercise.py").read_text()
    first = stub.splitlines()[:3]
    assert first[0] == f"# Generated from solutions/{chapter.slug}/exercise.py by scripts/make_stubs.py."
    assert "edit it freely" in " ".join(first)
    solution = (ROOT / "solutions" / chapter.slug / "exercise.py").read_text()
    assert ast.get_docstring(ast.parse(stub)) == ast.get_docstring(ast.parse(solution)), "the banner is comments only"


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda c: c.slug)
def test_exercise_files_are_complete(chapter):
    path = ROOT / "solutions" / chapter.slug / "exercise.py"
    functions = _exercise_functions(path)
    module = load_exercise(ROOT / "solutions", chapter.slug)
    checked = chapter.exercises()
    assert set(checked.values()) == set(functions), "every exercise has checks, every check an exercise"
    for name, number in functions.items():
        assert checked[number] == name
        doc = inspect.getdoc(getattr(module, name))
        assert re.search(r"roughly \d+ lines?", doc), f"{name}: docstring needs a 'roughly N lines' hint"
        assert "Example" in doc and "Args" in doc or "Count" in doc, f"{name}: docstring needs shapes and an example"
        assert name in module.__all__
        assert number.startswith(f"{chapter.number}.")


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda c: c.slug)
def test_chapter_defines_every_exercise(chapter):
    notebook = ROOT / find_chapter(chapter.slug).notebook
    text = "".join("".join(c["source"]) for c in json.loads(notebook.read_text())["cells"])
    for number, name in chapter.exercises().items():
        assert f"Exercise {number}" in text, f"{notebook.name} does not define Exercise {number}"
        assert name in text
    assert f"exercises/{chapter.slug}/exercise.py" in text


def test_chapter_registry_matches_folders():
    folders = {p.parent.name for p in (ROOT / "solutions").glob("ch*/exercise.py")}
    assert folders == set(CHAPTER_MODULES)
    assert folders == {p.parent.name for p in (ROOT / "exercises").glob("ch*/exercise.py")}
    assert {c.slug for c in CHAPTERS} == folders
    graded_tests = (ROOT / "tests" / "graded" / "test_graded.py").read_text()
    assert "all_chapters()" in graded_tests  # one test function per chapter, see test_course_manifest.py


def _mutants(slug):
    path = ROOT / "tests" / "mutants" / f"{slug}.py"
    spec = importlib.util.spec_from_file_location(f"_mutants_{slug}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.MUTANTS


MUTANT_CASES = [
    pytest.param(c, number, fn, id=f"{number}-{fn.__name__}")
    for c in CHAPTERS for number, fns in _mutants(c.slug).items() for fn in fns
]


@pytest.mark.parametrize("chapter,number,mutant", MUTANT_CASES)
def test_checks_reject_plausible_wrong_answers(chapter, number, mutant):
    checks = [c for c in chapter.checks if c.exercise == number]
    caught = []
    for check in checks:
        try:
            with np.errstate(all="ignore"):
                check.run(mutant)
        except AssertionError as exc:
            caught.append((check.name, str(exc)))
        except Exception as exc:  # noqa: BLE001 - a crash also scores zero
            caught.append((check.name, f"{type(exc).__name__}: {exc}"))
    assert caught, f"no check of Exercise {number} rejects the wrong answer {mutant.__name__}"
    for _, message in caught:
        assert message.strip(), "failures must explain themselves"


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda c: c.slug)
def test_every_exercise_has_mutants(chapter):
    assert set(_mutants(chapter.slug)) == set(chapter.exercises())


def test_reference_solutions_pass_every_check():
    for chapter in CHAPTERS:
        module = load_exercise(ROOT / "solutions", chapter.slug)
        for check in chapter.checks:
            check.run(getattr(module, check.function))


def test_wrong_mask_message_draws_the_grid():
    chapter = load_chapter("ch01_dense")
    check = next(c for c in chapter.checks if c.exercise == "1.2")
    mutants = {fn.__name__: fn for fn in _mutants("ch01_dense")["1.2"]}
    with pytest.raises(AssertionError) as info:
        check.run(mutants["causal_upper"])
    text = str(info.value)
    assert "yours" in text and "expected" in text and "#." in text and "!" in text


# ---------------------------------------------------------------- no points for non-answers

def _zero_like(x):
    """A value of the same type, shape and dtype as ``x`` that carries no answer: zeros, False, [] of names."""
    import torch

    if isinstance(x, np.ndarray):
        return np.zeros_like(x)
    if isinstance(x, torch.Tensor):
        return torch.zeros_like(x)
    if isinstance(x, (list, tuple)):
        if x and all(isinstance(y, str) for y in x):
            return type(x)()
        return type(x)(_zero_like(y) for y in x)
    if isinstance(x, dict):
        return {key: _zero_like(y) for key, y in x.items()}
    if isinstance(x, (bool, np.bool_, int, float, np.integer, np.floating)):
        return type(x)(0)
    return x


def _non_answers(solution):
    """What scores nothing: zeros of the right shape and dtype (after doing all the work, so every memory or
    time budget is met), None, and a refusal that names every argument (so every 'clear error' check is met)."""
    names = list(inspect.signature(solution).parameters)

    def zeros(*args, **kwargs):
        return _zero_like(solution(*args, **kwargs))

    def nothing(*args, **kwargs):
        return None

    def refuses(*args, **kwargs):
        raise ValueError("refused: " + ", ".join(names) + "; expected anything else")

    return {"zeros": zeros, "None": nothing, "refuses": refuses}


NON_ANSWER_CASES = [pytest.param(c, check, id=f"{c.slug}-{check.test_id}") for c in CHAPTERS for check in c.checks]


@pytest.mark.parametrize("chapter,check", NON_ANSWER_CASES)
def test_no_check_gives_points_for_a_non_answer(chapter, check):
    """Every check, resource and error checks included, first requires the right answer."""
    solution = getattr(load_exercise(ROOT / "solutions", chapter.slug), check.function)
    passed = []
    for kind, fn in _non_answers(solution).items():
        try:
            with np.errstate(all="ignore"):
                check.run(fn)
        except Exception:  # noqa: BLE001 - any failure scores zero, which is the point
            continue
        passed.append(kind)
    assert not passed, f"Exercise {check.exercise} '{check.name}' gives its points to the non-answers {passed}"


# ---------------------------------------------------------------- inputs left alone, documented return types

def _retyped(x):
    """The same values in another type or dtype than documented (value-preserving where possible)."""
    import torch

    if isinstance(x, np.ndarray):
        other = {np.dtype(bool): np.uint8, np.dtype(np.float32): np.float64}.get(
            x.dtype, np.float64 if x.dtype.kind in "iu" else np.longdouble)
        return x.astype(other)
    if isinstance(x, np.generic):
        return _retyped(np.asarray(x))
    if isinstance(x, torch.Tensor):
        return x.detach().numpy()  # a numpy array where a tensor is documented
    if isinstance(x, (bool, np.bool_)):
        return int(x)
    if isinstance(x, (int, np.integer)):
        return float(x)
    if isinstance(x, float):
        return [x]
    if isinstance(x, str):
        return x.encode()
    if isinstance(x, tuple):
        return tuple(_retyped(y) for y in x)
    if isinstance(x, list):
        return tuple(x) if x and all(isinstance(y, str) for y in x) else [_retyped(y) for y in x]
    if isinstance(x, dict):
        return {key: _retyped(y) for key, y in x.items()}
    return x


def _scribbled(solution, touched):
    """The right answer, after which every array argument is changed in place (as `q -= q.max()` would)."""
    import torch

    @functools.wraps(solution)
    def fn(*args, **kwargs):
        out = solution(*args, **kwargs)
        for a in list(args) + list(kwargs.values()):
            if isinstance(a, np.ndarray) and a.size and a.flags.writeable:
                a.flat[0] = ~a.flat[0] if a.dtype == bool else a.flat[0] + 1
                touched.append(True)
            elif isinstance(a, torch.Tensor) and a.numel() and not a.dtype == torch.bool:
                with torch.no_grad():
                    a.view(-1)[0] += 1
                touched.append(True)
        return out
    return fn


def _rejected(checks, fn):
    for check in checks:
        try:
            with np.errstate(all="ignore"):
                check.run(fn)
        except Exception:  # noqa: BLE001 - any failure scores zero
            return check.name
    return None


EXERCISE_CASES = [pytest.param(c, number, id=f"{number}-{fn}") for c in CHAPTERS for number, fn in c.exercises().items()]


@pytest.mark.parametrize("chapter,number", EXERCISE_CASES)
def test_every_call_must_return_the_documented_type(chapter, number):
    checks = [c for c in chapter.checks if c.exercise == number]
    spec = checks[0].returns
    assert spec, f"Exercise {number}: declare what it returns with CHECKS.returns({number!r}, ...)"
    if spec == "kernel":
        return
    solution = getattr(load_exercise(ROOT / "solutions", chapter.slug), checks[0].function)
    doc = inspect.getdoc(solution)
    returns_text = doc.split("Returns:", 1)[1].split("\n\n")[0]
    for word in re.findall(r"float64|float32|int64|bool|integer|tensor|float|int", spec):
        wanted = {"integer": "int"}.get(word, word)
        assert wanted in returns_text.lower(), (
            f"Exercise {number}: the spec {spec!r} says {word!r}, its docstring's Returns: does not")
    name = _rejected(checks, functools.wraps(solution)(lambda *a, **k: _retyped(solution(*a, **k))))
    assert name, f"Exercise {number}: no check rejects the right values returned as another type or dtype"


@pytest.mark.parametrize("chapter,number", EXERCISE_CASES)
def test_every_call_must_leave_its_inputs_alone(chapter, number):
    checks = [c for c in chapter.checks if c.exercise == number]
    if checks[0].returns == "kernel":
        return
    solution = getattr(load_exercise(ROOT / "solutions", chapter.slug), checks[0].function)
    touched = []
    name = _rejected(checks, _scribbled(solution, touched))
    assert name or not touched, f"Exercise {number}: no check notices its array arguments changed in place"


# ---------------------------------------------------------------- every softmax-like exercise at every edge

def _scaled_qk(a):
    q, k = (np.asarray(a[x], dtype=np.float64) for x in ("q", "k"))
    if "E" in a:  # Linformer: the scores are against the projected keys E^T k
        E = np.asarray(a["E"], dtype=np.float64)[..., :k.shape[-2], :]
        k = np.swapaxes(E, -1, -2) @ k
    scale = a.get("scale")
    tau = 1.0 / np.sqrt(q.shape[-1]) if scale is None else scale
    mask = a.get("mask")
    return q @ np.swapaxes(k, -1, -2) * tau, (None if mask is None else np.asarray(mask, bool)), q.dtype


def _mha_scores(a):
    x, n_heads = np.asarray(a["x"], np.float64), a["n_heads"]
    b, n, dm = x.shape
    dh = dm // n_heads
    q, k = ((x @ np.asarray(a[w], np.float64)).reshape(b, n, n_heads, dh).transpose(0, 2, 1, 3) for w in ("w_q", "w_k"))
    return q @ np.swapaxes(k, -1, -2) / np.sqrt(dh), None


def _edges(exercise, a):
    """(scaled scores, allowed or None, input dtype) of one recorded call, over all pairs unless masked."""
    if exercise == "1.1":
        return np.asarray(a["scores"], np.float64), a.get("mask"), np.asarray(a["scores"]).dtype
    if exercise == "1.4":
        s, m = _mha_scores(a)
        return s, m, np.asarray(a["x"]).dtype
    if exercise == "10.1":
        t = a["student_logits"].detach()
        return t.double().numpy()[None] / a.get("temperature", 1.0), None, t.dtype
    s, m, _ = _scaled_qk(a)
    return s, m, np.asarray(a["q"]).dtype


SOFTMAX_LIKE = ["1.1", "1.3", "1.4", "1.5", "2.5", "4.2", "4.3", "5.5", "6.2", "7.1", "10.1"]
HALF = {"10.1": ("torch.float16", "torch.bfloat16")}


@pytest.mark.parametrize("number", SOFTMAX_LIKE)
def test_every_softmax_like_exercise_is_checked_at_every_edge(number):
    """Scores in the thousands, a row all below -1e4, row maxima hundreds apart, half-precision inputs."""
    from sparse_core.course.extremes import score_extremes

    chapter = next(c for c in CHAPTERS if number in c.exercises())
    checks = [c for c in chapter.checks if c.exercise == number]
    solution = getattr(load_exercise(ROOT / "solutions", chapter.slug), checks[0].function)
    calls = []

    @functools.wraps(solution)
    def recording(*args, **kwargs):
        bound = inspect.signature(solution).bind(*args, **kwargs)
        bound.apply_defaults()
        calls.append(dict(bound.arguments))
        return solution(*args, **kwargs)

    for check in checks:
        with np.errstate(all="ignore"):
            check.run(recording)
    seen = {"thousands": False, "very_negative_row": False, "spread": False, "half": False}
    for a in calls:
        s, allowed, dtype = _edges(number, a)
        with np.errstate(all="ignore"):
            for key, hit in score_extremes(s, allowed).items():
                seen[key] |= hit
        seen["half"] |= str(dtype) in HALF.get(number, ("float16",))
    missing = [key for key, hit in seen.items() if not hit]
    assert not missing, f"Exercise {number}: no check reaches {missing} (sparse_core.course.extremes)"


def _ints_in(x):
    if isinstance(x, dict):
        return [v for y in x.values() for v in _ints_in(y)]
    if isinstance(x, (tuple, list)):
        return [v for y in x for v in _ints_in(y)]
    if isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_)):
        return [int(x)]
    return []


# exercises whose integer results (pairs, FLOPs, bytes, reads) outgrow 32 bits at realistic sizes
LARGE_COUNTS = ["1.6", "3.5", "4.4", "4.6", "7.5"]


@pytest.mark.parametrize("number", LARGE_COUNTS)
def test_integer_results_are_checked_beyond_32_bits(number):
    chapter = next(c for c in CHAPTERS if number in c.exercises())
    checks = [c for c in chapter.checks if c.exercise == number]
    solution = getattr(load_exercise(ROOT / "solutions", chapter.slug), checks[0].function)
    largest = [0]

    @functools.wraps(solution)
    def recording(*args, **kwargs):
        out = solution(*args, **kwargs)
        largest[0] = max([largest[0]] + _ints_in(out))
        return out

    for check in checks:
        check.run(recording)
    assert largest[0] > 2 ** 31, f"Exercise {number}: no check has a result beyond 2^31 (largest {largest[0]:,})"
