"""``python -m sparse_core grade``: run the graded tests and print points per chapter and exercise.

The tests run in a child pytest process that streams one JSON line per test (see
:mod:`sparse_core.course.plugin`). Each test has a time limit (pytest-timeout, SIGALRM);
a test that is still running ``grace`` seconds after its limit -- stuck in compiled code, say --
gets the child killed. If the child dies (killed, segfault, ``os._exit``), the test it was
running scores zero and a new child carries on with the tests not yet run. Grading therefore
always finishes, and always prints a table.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from . import impl as _impl
from .checks import all_chapters

STATUS_WORDS = {
    "passed": "ok",
    "wrong": "wrong answer",
    "error": "raised an error",
    "not started": "not started",
    "timeout": "timed out",
    "crashed": "crashed",
    "skipped": "skipped",
}


@dataclass
class TestResult:
    nodeid: str
    exercise: str
    points: int
    check: str = ""
    status: str = "not run"
    message: str = ""
    duration: float = 0.0

    @property
    def earned(self) -> int:
        return self.points if self.status == "passed" else 0


@dataclass
class GradeReport:
    impl: str
    results: list[TestResult] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def earned(self) -> int:
        return sum(r.earned for r in self.results)

    @property
    def total(self) -> int:
        return sum(r.points for r in self.results)

    def to_json(self) -> dict:
        return {
            "impl": self.impl,
            "earned": self.earned,
            "total": self.total,
            "problems": self.problems,
            "results": [r.__dict__ | {"earned": r.earned} for r in self.results],
        }


def _read_events(path: Path, offset: int) -> tuple[list[dict], int]:
    if not path.exists():
        return [], offset
    with open(path) as fh:
        fh.seek(offset)
        data = fh.read()
    complete, _, _rest = data.rpartition("\n")
    if not complete:
        return [], offset
    events = [json.loads(line) for line in complete.splitlines() if line.strip()]
    return events, offset + len(complete) + 1


class Progress:
    """Prints one line per check while grading runs: exercise, check, then its status and seconds.

    The line is started when the check starts, so a check that hangs shows which one it is at
    once; it is finished when the result comes (``ok (0.3 s)``, ``timed out (75.0 s)``).
    """

    def __init__(self, out: TextIO):
        self.out = out
        self.open = False

    def start(self, r: TestResult) -> None:
        self._close_open_line()
        self.out.write(f"  {r.exercise:<7}{(r.check or r.nodeid)[:48]:<50}")
        self.out.flush()
        self.open = True

    def finish(self, r: TestResult, seconds: float) -> None:
        if not self.open:  # a result without a start line (a crash before the start event)
            self.out.write(f"  {r.exercise:<7}{(r.check or r.nodeid)[:48]:<50}")
        self.out.write(f"{STATUS_WORDS.get(r.status, r.status)} ({seconds:.1f} s)\n")
        self.out.flush()
        self.open = False

    def _close_open_line(self) -> None:
        if self.open:
            self.out.write("\n")
            self.open = False


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()
    proc.wait()


def run_grading(
    impl: str | None = None,
    root: str | Path | None = None,
    only: str | None = None,
    timeout: float = 60.0,
    grace: float = 15.0,
    progress: TextIO | None = None,
) -> GradeReport:
    """Run the graded tests and collect one :class:`TestResult` per test.

    With ``progress`` (a text stream), a line per check is written there as it runs
    (:class:`Progress`)."""
    live = Progress(progress) if progress is not None else None
    root = _impl.repo_root(Path(root) if root else None)
    folder = _impl.resolve_impl(impl, root)
    report = GradeReport(impl=str(folder))
    results: dict[str, TestResult] = {}
    running: tuple[str, float] | None = None

    with tempfile.TemporaryDirectory(prefix="sparse-course-grade-") as tmp:
        events_path = Path(tmp) / "events.jsonl"
        skip_path = Path(tmp) / "skip.txt"
        log_path = Path(tmp) / "pytest.log"
        max_rounds = 200
        for _round in range(max_rounds):
            done = [nid for nid, r in results.items() if r.status != "not run"]
            skip_path.write_text("\n".join(done) + "\n")
            cmd = [
                sys.executable, "-m", "pytest", str(root / "tests" / "graded"),
                "--impl", str(folder), "--grade-report", str(events_path),
                "--grade-skip-file", str(skip_path),
                "--timeout", str(timeout), "--timeout-method", "signal",
                "-q", "--no-header", "-p", "no:cacheprovider", "-o", "console_output_style=classic",
            ]
            if only:
                cmd += ["--grade-only", only]
            env = dict(os.environ, MPLBACKEND="Agg", PYTHONFAULTHANDLER="1")
            with open(log_path, "w") as log:
                proc = subprocess.Popen(cmd, cwd=root, stdout=log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, env=env, start_new_session=True)
                offset = events_path.stat().st_size if events_path.exists() else 0
                running = None
                killed_for_time = False
                while True:
                    exited = proc.poll() is not None
                    events, offset = _read_events(events_path, offset)
                    for ev in events:
                        nid = ev["nodeid"]
                        if ev["event"] == "collected":
                            results.setdefault(nid, TestResult(nid, ev["exercise"], ev["points"], ev.get("check", "")))
                        elif ev["event"] == "start":
                            running = (nid, time.monotonic())
                            if live and nid in results:
                                live.start(results[nid])
                        elif ev["event"] == "result":
                            r = results.setdefault(nid, TestResult(nid, ev["exercise"], ev["points"]))
                            r.status, r.message, r.duration = ev["status"], ev["message"], ev.get("duration", 0.0)
                            if live:
                                live.finish(r, time.monotonic() - running[1] if running and running[0] == nid
                                            else r.duration)
                            if running and running[0] == nid:
                                running = None
                    if exited:
                        break
                    if running and time.monotonic() - running[1] > timeout + grace:
                        _kill(proc)
                        killed_for_time = True
                        continue
                    time.sleep(0.05)
            # the child is gone: whatever it was running scored zero
            if running is not None:
                nid = running[0]
                r = results.setdefault(nid, TestResult(nid, "?", 0))
                if killed_for_time:
                    r.status = "timeout"
                    r.message = f"still running after {timeout + grace:.0f} s; stopped"
                else:
                    tail = log_path.read_text(errors="replace").strip().splitlines()[-12:]
                    r.status = "crashed"
                    r.message = (f"the test process died (exit code {proc.returncode}) while running this test\n"
                                 + "\n".join("    " + t for t in tail))
                if live:
                    live.finish(r, time.monotonic() - running[1])
                continue  # start a new child for the remaining tests
            remaining = [nid for nid, r in results.items() if r.status == "not run"]
            if proc.returncode not in (0, 1) and not results:
                tail = log_path.read_text(errors="replace").strip().splitlines()[-20:]
                report.problems.append(f"pytest could not run the graded tests (exit code {proc.returncode}):\n"
                                       + "\n".join("    " + t for t in tail))
            if not remaining:
                break
        else:  # pragma: no cover - defensive: a child that keeps dying without making progress
            report.problems.append("grading stopped after too many restarts")
    report.results = list(results.values())
    return report


def _chapter_of(exercise: str) -> int:
    try:
        return int(exercise.split(".")[0])
    except ValueError:
        return 0


def format_report(report: GradeReport, verbose: bool = False) -> str:
    chapters = {c.number: c for c in all_chapters()}
    lines = [f"Grading {report.impl}", ""]
    by_chapter: dict[int, dict[str, list[TestResult]]] = {}
    for r in report.results:
        by_chapter.setdefault(_chapter_of(r.exercise), {}).setdefault(r.exercise, []).append(r)
    details = []
    for number in sorted(by_chapter):
        exercises = by_chapter[number]
        chapter = chapters.get(number)
        names = chapter.exercises() if chapter else {}
        earned = sum(r.earned for rs in exercises.values() for r in rs)
        total = sum(r.points for rs in exercises.values() for r in rs)
        title = chapter.title if chapter else "?"
        lines.append(f"Chapter {number}: {title}".ljust(60) + f"{earned:>4} / {total:<4} points")
        lines.append(f"  {'exercise':<10}{'function':<28}{'checks':>8}{'points':>10}   status")
        for ex in sorted(exercises, key=lambda e: tuple(int(p) for p in e.split(".") if p.isdigit())):
            rs = exercises[ex]
            passed = sum(r.status == "passed" for r in rs)
            e_pts = sum(r.earned for r in rs)
            t_pts = sum(r.points for r in rs)
            statuses = [r.status for r in rs if r.status != "passed"]
            if not statuses:
                status = "ok"
            elif all(s == "not started" for s in statuses) and passed == 0:
                status = "not started"
            else:
                order = list(STATUS_WORDS)
                worst = sorted(set(statuses), key=lambda s: order.index(s) if s in order else len(order))
                status = ", ".join(STATUS_WORDS.get(s, s) for s in worst)
            lines.append(f"  {ex:<10}{names.get(ex, '?'):<28}{f'{passed}/{len(rs)}':>8}{f'{e_pts}/{t_pts}':>10}   {status}")
            failing = [r for r in rs if r.status not in ("passed", "not started")]
            for r in failing if verbose else failing[:1]:
                details.append(f"--- Exercise {ex}, check '{r.check or r.nodeid}': {STATUS_WORDS.get(r.status, r.status)}")
                details.extend("    " + m for m in r.message.splitlines())
        lines.append("")
    lines.append(f"Total: {report.earned} / {report.total} points")
    for p in report.problems:
        lines.append("problem: " + p)
    if details:
        lines += ["", "First failing check of each exercise" + (" (all, --verbose)" if verbose else "") + ":", *details]
    return "\n".join(lines)


def main_grade(args, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    print("Running the graded tests, one line per check (exercise, check, result, seconds):", file=out, flush=True)
    try:
        report = run_grading(impl=args.impl, root=args.root, only=args.only, timeout=args.timeout,
                             progress=out)
    except FileNotFoundError as exc:
        print(f"grade: {exc}", file=sys.stderr)
        return 2
    print(file=out)
    print(format_report(report, verbose=args.verbose), file=out)
    if args.json:
        Path(args.json).write_text(json.dumps(report.to_json(), indent=2))
    if report.problems:
        return 2
    if args.fail_under is not None and report.total and 100 * report.earned / report.total < args.fail_under:
        return 1
    return 0
