"""The grade command: points table, wrong answers, errors, timeouts and crashes never stop it."""
import io
import json
import re
import shutil
import sys
import time
from pathlib import Path

import pytest

from sparse_core.cli import main
from sparse_core.course.checks import load_chapter
from sparse_core.course.runner import Limits, format_report, run_grading

ROOT = Path(__file__).resolve().parents[1]


def _student(tmp_path: Path) -> Path:
    """A copy of the solutions with one exercise wrong, one crashing, one raising, two hanging."""
    folder = tmp_path / "student"
    shutil.copytree(ROOT / "solutions", folder)
    path = folder / "ch01_dense" / "exercise.py"
    src = path.read_text()
    replacements = [
        # 1.2: wrong causal direction
        ("return np.arange(n_k)[None, :] <= np.arange(n_q)[:, None]",
         "return np.arange(n_k)[None, :] >= np.arange(n_q)[:, None]"),
        # 1.4: a loop that ignores the timeout signal (needs the hard kill)
        ("    b, n, d_model = x.shape\n",
         "    import signal\n    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})\n"
         "    while True:\n        pass\n    b, n, d_model = x.shape\n"),
        # 1.5: takes the whole process down
        ("    scale = 1.0 / np.sqrt(q.shape[-1])\n    n_k", "    import os\n    os._exit(3)\n    n_k"),
        # 1.6: an ordinary infinite loop (stopped by the per-test timeout)
        ("    if causal:\n        full = min(n_q, n_k)", "    while True:\n        pass\n    if causal:\n        full = min(n_q, n_k)"),
        # 1.3: raises an unexpected error
        ("    d = q.shape[-1]\n", "    d = q.shape[-1] + undefined_name\n"),
    ]
    for old, new in replacements:
        assert old in src, old
        src = src.replace(old, new, 1)
    path.write_text(src)
    return folder


def test_grading_survives_wrong_answers_errors_timeouts_and_crashes(tmp_path):
    live = io.StringIO()
    report = run_grading(impl=str(_student(tmp_path)), root=ROOT, only="1", timeout=2, grace=2,  # chapter 1 only
                         progress=live)
    by_ex = {}
    for r in report.results:
        by_ex.setdefault(r.exercise, []).append(r)
    assert sorted(by_ex) == ["1.1", "1.2", "1.3", "1.4", "1.5", "1.6"]
    statuses = {ex: {r.status for r in rs} for ex, rs in by_ex.items()}
    assert statuses["1.1"] == {"passed"}
    assert statuses["1.2"] == {"wrong"}
    assert statuses["1.3"] == {"error"}
    assert statuses["1.4"] == {"timeout"}
    assert "crashed" in statuses["1.5"] and statuses["1.5"] <= {"crashed"}
    assert statuses["1.6"] == {"timeout"}
    total = sum(c.points for c in load_chapter("ch01_dense").checks)
    earned = sum(c.points for c in load_chapter("ch01_dense").checks if c.exercise == "1.1")
    assert report.earned == sum(r.points for r in by_ex["1.1"]) == earned and report.total == total
    assert "NameError" in by_ex["1.3"][0].message and "exercise.py" in by_ex["1.3"][0].message
    text = format_report(report)
    assert "Chapter 1: Dense attention and its cost" in text
    assert f"Total: {earned} / {total} points" in text
    for word in ("wrong answer", "timed out", "crashed", "raised an error", "yours", "expected"):
        assert word in text
    # while it ran: one line per check, naming the exercise and the check, its status and seconds
    lines = live.getvalue().splitlines()
    assert len(lines) == len(report.results), live.getvalue()
    for r in report.results:
        word = {"passed": "ok", "wrong": "wrong answer", "error": "raised an error", "timeout": "timed out",
                "crashed": "crashed"}[r.status]
        assert any(ln.split()[0] == r.exercise and (r.check or r.nodeid)[:40] in ln
                   and re.search(re.escape(word) + r" \(\d+\.\d s\)$", ln) for ln in lines), (r, lines)
    hung = [ln for ln in lines if "timed out" in ln]
    assert hung and all(float(re.search(r"\((\d+\.\d) s\)", ln).group(1)) >= 2 for ln in hung)


def test_grade_cli_on_solutions_full_marks_and_json(tmp_path, capsys):
    out = tmp_path / "grade.json"
    code = main(["grade", "--impl", "solutions", "--chapter", "1", "--json", str(out), "--fail-under", "100"])
    text = capsys.readouterr().out
    assert code == 0, text
    data = json.loads(out.read_text())
    assert data["earned"] == data["total"] > 0
    total = sum(c.points for c in load_chapter("ch01_dense").checks)
    assert f"Total: {total} / {total} points" in text


def test_grade_cli_on_stubs_reports_not_started(capsys):
    code = main(["grade", "--impl", "exercises", "--exercise", "1.2", "--fail-under", "50"])
    text = capsys.readouterr().out
    assert code == 1
    assert "not started" in text and "Total: 0 / 2 points" in text


def test_grade_cli_bad_impl_is_a_clear_error(capsys):
    assert main(["grade", "--impl", "/no/such/folder"]) == 2
    assert "expected 'exercises', 'solutions' or an existing folder" in capsys.readouterr().err


def test_cli_help_and_bad_arguments(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    assert "grade" in capsys.readouterr().out
    with pytest.raises(SystemExit) as info:
        main(["cost", "--n", "0"])
    assert info.value.code == 2
    assert "expected a positive whole number" in capsys.readouterr().err


def test_cli_cost_and_info(capsys):
    assert main(["cost", "--n", "1024", "--d", "64", "--heads", "8"]) == 0
    out = capsys.readouterr().out
    assert "8,388,608" in out  # 8 heads * 1024^2 pairs
    assert main(["info"]) == 0
    assert "numba" in capsys.readouterr().out


def test_module_entry_point_runs():
    import subprocess

    proc = subprocess.run([sys.executable, "-m", "sparse_core", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0 and "grade" in proc.stdout


# ---------------------------------------------------------------- isolation: limits and a scratch copy

def _one_chapter_submission(tmp_path, replacements):
    folder = tmp_path / "submission"
    shutil.copytree(ROOT / "solutions" / "ch01_dense", folder / "ch01_dense")
    path = folder / "ch01_dense" / "exercise.py"
    src = path.read_text()
    for old, new in replacements:
        assert old in src, old
        src = src.replace(old, new, 1)
    path.write_text(src)
    return folder


SOFTMAX_BODY = "    s = np.asarray(scores, dtype=np.float64)\n"


def test_memory_limit_stops_a_submission_that_allocates_without_end(tmp_path):
    grow = ("    hoard = []\n    while True:\n        hoard.append(np.ones(2**24))  # 128 MiB at a time, forever\n")
    folder = _one_chapter_submission(tmp_path, [(SOFTMAX_BODY, grow + SOFTMAX_BODY)])
    limits = Limits(memory_mib=3072, cpu_s=60.0, output_mib=64)
    report = run_grading(impl=str(folder), root=ROOT, only="1.1,1.2", timeout=30, limits=limits)
    by_ex = {}
    for r in report.results:
        by_ex.setdefault(r.exercise, []).append(r)
    assert {r.status for r in by_ex["1.1"]} == {"error"}
    assert all("MemoryError" in r.message and "--memory-limit" in r.message for r in by_ex["1.1"])
    assert {r.status for r in by_ex["1.2"]} == {"passed"}  # the process survived for the next exercise


def test_cpu_limit_stops_a_spin_in_compiled_code_that_the_alarm_cannot_reach(tmp_path):
    # builtin sum over itertools.repeat loops in C and never returns to the interpreter, so the
    # per-test alarm (pytest-timeout's SIGALRM) cannot fire; only RLIMIT_CPU stops it
    spin = "    import itertools\n    sum(itertools.repeat(1, 10**12))\n"
    folder = _one_chapter_submission(tmp_path, [(SOFTMAX_BODY, spin + SOFTMAX_BODY)])
    limits = Limits(memory_mib=None, cpu_s=3.0, output_mib=64)
    started = time.monotonic()
    report = run_grading(impl=str(folder), root=ROOT, only="1.1", timeout=2, grace=120, limits=limits)
    took = time.monotonic() - started
    assert report.results and all(r.status == "timeout" for r in report.results)
    assert all("s of CPU time (--cpu-limit)" in r.message for r in report.results)
    assert took < 120, f"{took:.0f} s: the CPU limit, not the {120} s grace, must stop each check"


def test_output_limit_stops_a_submission_that_floods_its_output(tmp_path):
    flood = "    import sys\n    while True:\n        sys.stdout.write('x' * 2**20)\n"
    folder = _one_chapter_submission(tmp_path, [(SOFTMAX_BODY, flood + SOFTMAX_BODY)])
    limits = Limits(memory_mib=None, cpu_s=60.0, output_mib=8)
    report = run_grading(impl=str(folder), root=ROOT, only="1.1,1.2", timeout=30, limits=limits)
    statuses = {r.exercise: r.status for r in report.results if r.status != "passed"}
    assert set(statuses) == {"1.1"} and set(statuses.values()) == {"error"}  # EFBIG: Python ignores SIGXFSZ
    assert all("File too large" in r.message and "--output-limit" in r.message
               for r in report.results if r.exercise == "1.1")
    assert all(r.status == "passed" for r in report.results if r.exercise == "1.2")


def test_graded_code_runs_in_a_scratch_copy_without_the_solutions(tmp_path):
    # the submission reports what it can see from where it runs
    peek = ("    import os\n    from pathlib import Path\n"
            "    here = Path(__file__).resolve()\n"
            "    seen = {'cwd_solutions': (Path.cwd() / 'solutions').exists(),\n"
            "            'cwd_mutants': (Path.cwd() / 'tests' / 'mutants').exists(),\n"
            "            'beside_solutions': (here.parents[2] / 'solutions').exists(),\n"
            "            'under_submission': here.parents[1] != Path(" + repr(str(tmp_path / "submission")) + "),\n"
            "            'env': os.environ.get('SPARSE_COURSE_IMPL')}\n"
            "    raise RuntimeError(repr(seen))\n")
    folder = _one_chapter_submission(tmp_path, [(SOFTMAX_BODY, peek + SOFTMAX_BODY)])
    report = run_grading(impl=str(folder), root=ROOT, only="1.1", timeout=30)
    seen = eval(re.search(r"RuntimeError: (\{.*\})", report.results[0].message).group(1))  # noqa: S307
    assert seen == {"cwd_solutions": False, "cwd_mutants": False, "beside_solutions": False,
                    "under_submission": True, "env": None}
    assert (folder / "ch01_dense" / "exercise.py").read_text().count("raise RuntimeError") == 1  # untouched
