"""pytest plugin for graded tests (enabled for the whole test-suite in pyproject.toml).

* ``--impl`` chooses whose code the graded tests import (see :mod:`sparse_core.course.impl`);
  the ``course_impl`` fixture loads one chapter's ``exercise.py`` from it.
* ``--grade-report FILE`` streams one JSON line per test start and result, with the exercise
  number and points from ``@pytest.mark.exercise(...)``: the grade command reads it, and it
  survives a crash of the test process.
* ``--grade-only`` / ``--grade-skip-file`` select tests for the grade command.
* ``--grade-cpu-limit S`` re-arms ``RLIMIT_CPU`` before each test: S more CPU seconds.
"""
from __future__ import annotations

import errno
import json
import traceback
from pathlib import Path

import pytest

from . import impl as _impl


def pytest_addoption(parser):
    group = parser.getgroup("sparse-course grading")
    group.addoption("--impl", default=None,
                    help="code under test for graded tests: exercises (default), solutions, or a folder "
                         f"laid out like exercises/ (env: {_impl.ENV_VAR})")
    group.addoption("--grade-report", default=None, help="write per-test JSON lines here")
    group.addoption("--grade-only", default=None,
                    help="comma-separated chapter numbers (1) or exercise numbers (1.5) to keep")
    group.addoption("--grade-skip-file", default=None, help="file of test ids to deselect, one per line")
    group.addoption("--grade-cpu-limit", default=None, type=float,
                    help="CPU seconds each graded test may use (RLIMIT_CPU, re-armed before each test)")


def pytest_configure(config):
    config.addinivalue_line("markers", "exercise(number, points): graded test of an exercise")
    path = config.getoption("--grade-report")
    config._grade_report = open(path, "a", buffering=1) if path else None


def pytest_unconfigure(config):
    if getattr(config, "_grade_report", None):
        config._grade_report.close()


def _emit(config, **event):
    fh = getattr(config, "_grade_report", None)
    if fh:
        fh.write(json.dumps(event) + "\n")
        fh.flush()


def _exercise_of(item):
    marker = item.get_closest_marker("exercise")
    if marker is None:
        return None, 0
    return str(marker.args[0]), int(marker.kwargs.get("points", 1))


def pytest_collection_modifyitems(session, config, items):
    only = config.getoption("--grade-only")
    skip_file = config.getoption("--grade-skip-file")
    skip = set()
    if skip_file and Path(skip_file).exists():
        skip = {line.strip() for line in Path(skip_file).read_text().splitlines() if line.strip()}
    wanted = [w.strip() for w in only.split(",")] if only else None
    keep, drop = [], []
    for item in items:
        number, _ = _exercise_of(item)
        ok = item.nodeid not in skip
        if ok and wanted is not None:
            ok = number is not None and any(number == w or number.split(".")[0] == w for w in wanted)
        (keep if ok else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
    for item in items:
        number, points = _exercise_of(item)
        if number is not None:
            _emit(config, event="collected", nodeid=item.nodeid, exercise=number, points=points,
                  check=item.callspec.params["check"].name if hasattr(item, "callspec") and "check" in item.callspec.params else item.name)


def _arm_cpu_limit(seconds: float) -> None:
    """Let this process use ``seconds`` more CPU time from now (SIGXCPU then stops it)."""
    import math
    import resource

    used = resource.getrusage(resource.RUSAGE_SELF)
    soft = math.ceil(used.ru_utime + used.ru_stime + seconds)
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    limit = item.config.getoption("--grade-cpu-limit")
    if limit:
        _arm_cpu_limit(limit)
    _emit(item.config, event="start", nodeid=item.nodeid)


def _student_message(excinfo) -> tuple[str, str]:
    """(status, message) for a failed graded test, written for the student."""
    exc = excinfo.value
    name = type(exc).__name__
    if isinstance(exc, NotImplementedError):
        return "not started", f"NotImplementedError: {exc}"
    if name == "Failed" and "Timeout" in str(exc):
        return "timeout", str(exc).splitlines()[0]
    if isinstance(exc, AssertionError):
        return "wrong", str(exc)
    if isinstance(exc, OSError) and exc.errno == errno.EFBIG:
        return "error", (f"{name}: {exc} (graded code may write only so much, its printed output included: "
                         "--output-limit)")
    if isinstance(exc, MemoryError):
        return "error", (f"MemoryError: {exc} (graded code runs under a memory limit, --memory-limit; an answer that "
                         "needs this much memory is not the one asked for)")
    # an exception raised by the student's code: show it with the frames in their file
    frames = [f for f in traceback.extract_tb(excinfo.tb) if "exercise.py" in f.filename]
    where = "".join(traceback.format_list(frames[-3:])) if frames else ""
    return "error", f"{name}: {exc}\n{where}".rstrip()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    number, points = _exercise_of(item)
    if number is None:
        return
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        if report.passed:
            status, message = "passed", ""
        elif report.skipped:
            status, message = "skipped", str(report.longrepr)
        elif call.excinfo is not None:
            status, message = _student_message(call.excinfo)
        else:  # pragma: no cover - defensive
            status, message = "error", str(report.longrepr)
        _emit(item.config, event="result", nodeid=item.nodeid, exercise=number, points=points,
              status=status, message=message, duration=round(call.duration, 3))


@pytest.fixture
def course_impl(request):
    """``course_impl("ch01_dense")`` -> the chosen implementation's exercise module."""
    folder = _impl.resolve_impl(request.config.getoption("--impl"))

    def load(chapter_slug: str):
        return _impl.load_exercise(folder, chapter_slug)

    return load


def graded_params(chapter) -> list:
    """One pytest param per check of ``chapter``, marked with its exercise and points."""
    return [pytest.param(c, marks=pytest.mark.exercise(c.exercise, points=c.points), id=c.test_id)
            for c in chapter.checks]


def run_graded(chapter, check, course_impl) -> None:
    """Import the reader's (or the reference) module for ``chapter`` and run one check on it."""
    module = course_impl(chapter.slug)
    fn = getattr(module, check.function, None)
    if fn is None:
        pytest.fail(f"exercise.py has no function named {check.function!r} (Exercise {check.exercise})")
    check.run(fn)
