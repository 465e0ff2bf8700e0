"""``python -m sparse_core grade``: run the graded tests and print points per chapter and exercise.

The tests run in a child pytest process that streams one JSON line per test (see
:mod:`sparse_core.course.plugin`), in a scratch copy holding only the submission and the graded
test module, under memory, CPU-time and output limits (:class:`Limits`). Each test has a time limit (pytest-timeout, SIGALRM);
a test that is still running ``grace`` seconds after its limit -- stuck in compiled code, say --
gets the child killed. If the child dies (killed, segfault, ``os._exit``), the test it was
running scores zero and a new child carries on with the tests not yet run. Grading therefore
always finishes, and always prints a table.
"""
from __future__ import annotations

import json
import os
import shutil
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


@dataclass(frozen=True)
class Limits:
    """What one graded child process may use (``None`` = no limit).

    * ``memory_mib``: its address space (``RLIMIT_AS``); an allocation past it raises
      ``MemoryError`` in the submission, which scores zero for that check;
    * ``cpu_s``: CPU seconds per check (``RLIMIT_CPU``, re-armed before every check): code that
      spins in compiled code, where the per-test alarm cannot reach it, is stopped there;
    * ``output_mib``: bytes the child may write to any file, its captured output included
      (``RLIMIT_FSIZE``).
    """

    memory_mib: int | None = None
    cpu_s: float | None = None
    output_mib: int | None = 64

    @classmethod
    def defaults(cls, timeout: float) -> "Limits":
        """6 GiB of address space (at most three quarters of this machine's memory; the graded
        tests of the reference solutions peak at about 2.1 GiB), ``timeout`` CPU seconds per check,
        64 MiB of output."""
        memory = 6 * 1024
        try:
            total_kib = int(next(ln for ln in open("/proc/meminfo") if ln.startswith("MemTotal")).split()[1])
            memory = min(memory, int(0.75 * total_kib / 1024))
        except (OSError, StopIteration, ValueError):
            pass
        return cls(memory_mib=memory, cpu_s=float(timeout), output_mib=64)


def _apply_limits(limits: Limits):
    """A ``preexec_fn`` that applies ``limits`` (all but the per-check CPU limit) in the child."""
    def apply():
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a limit's signal must not write a core file
        if limits.memory_mib is not None:
            size = int(limits.memory_mib) * 2 ** 20
            resource.setrlimit(resource.RLIMIT_AS, (size, size))
        if limits.output_mib is not None:
            size = int(limits.output_mib) * 2 ** 20
            resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
    return apply


def _scratch_copy(root: Path, folder: Path, tmp: Path) -> tuple[Path, Path, Path]:
    """A working folder holding only the graded test module, its pytest settings and a copy of the
    submission: graded code runs there, away from ``solutions/``, the mutants and the instructor's
    files (see the threat model in book/grading.md). Returns (folder, test module, submission)."""
    work = tmp / "work"
    submission = work / "submission"
    submission.mkdir(parents=True)
    for chapter in sorted(p for p in folder.iterdir() if p.is_dir() and (p / "exercise.py").is_file()):
        shutil.copytree(chapter, submission / chapter.name, symlinks=False,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    test = work / "test_graded.py"
    shutil.copyfile(root / "tests" / "graded" / "test_graded.py", test)
    (work / "pytest.ini").write_text("[pytest]\naddopts = -p no:cacheprovider -p sparse_core.course.plugin\n"
                                     "filterwarnings =\n    error::RuntimeWarning:sparse_core.*\n")
    return work, test, submission


def _death(returncode: int, limits: Limits) -> tuple[str, str] | None:
    """(status, message) when the child was stopped by one of the limits."""
    if returncode == -signal.SIGXCPU:
        return "timeout", f"used more than {limits.cpu_s:g} s of CPU time (--cpu-limit); stopped"
    if returncode == -signal.SIGXFSZ:
        return "crashed", f"wrote more than {limits.output_mib} MiB of output (--output-limit); stopped"
    return None


def run_grading(
    impl: str | None = None,
    root: str | Path | None = None,
    only: str | None = None,
    timeout: float = 60.0,
    grace: float = 15.0,
    progress: TextIO | None = None,
    limits: Limits | None = None,
) -> GradeReport:
    """Run the graded tests and collect one :class:`TestResult` per test.

    The tests run in a scratch copy holding only the submission and the graded test module,
    under ``limits`` (:meth:`Limits.defaults` when None). With ``progress`` (a text stream), a
    line per check is written there as it runs (:class:`Progress`)."""
    live = Progress(progress) if progress is not None else None
    limits = Limits.defaults(timeout) if limits is None else limits
    root = _impl.repo_root(Path(root) if root else None)
    folder = _impl.resolve_impl(impl, root)
    report = GradeReport(impl=str(folder))
    results: dict[str, TestResult] = {}
    running: tuple[str, float] | None = None

    with tempfile.TemporaryDirectory(prefix="sparse-course-grade-") as tmp:
        events_path = Path(tmp) / "events.jsonl"
        skip_path = Path(tmp) / "skip.txt"
        log_path = Path(tmp) / "pytest.log"
        work, test_module, submission = _scratch_copy(root, folder, Path(tmp))
        max_rounds = 200
        for _round in range(max_rounds):
            done = [nid for nid, r in results.items() if r.status != "not run"]
            skip_path.write_text("\n".join(done) + "\n")
            cmd = [
                sys.executable, "-m", "pytest", str(test_module), "-c", str(work / "pytest.ini"),
                "--rootdir", str(work),
                "--impl", str(submission), "--grade-report", str(events_path),
                "--grade-skip-file", str(skip_path),
                "--timeout", str(timeout), "--timeout-method", "signal",
                "-q", "--no-header", "-o", "console_output_style=classic",
            ]
            if limits.cpu_s is not None:
                cmd += ["--grade-cpu-limit", str(limits.cpu_s)]
            if only:
                cmd += ["--grade-only", only]
            env = dict(os.environ, MPLBACKEND="Agg", PYTHONFAULTHANDLER="1")
            env.pop(_impl.ENV_VAR, None)
            with open(log_path, "w") as log:
                proc = subprocess.Popen(cmd, cwd=work, stdout=log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, env=env, start_new_session=True,
                                        preexec_fn=_apply_limits(limits))
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
                elif stopped := _death(proc.returncode, limits):
                    r.status, r.message = stopped
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


def _limit(value, default):
    """A limit from the command line: None keeps the default, 0 means no limit."""
    if value is None:
        return default
    return None if value == 0 else value


def main_grade(args, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    print("Running the graded tests, one line per check (exercise, check, result, seconds):", file=out, flush=True)
    try:
        defaults = Limits.defaults(args.timeout)
        limits = Limits(memory_mib=_limit(getattr(args, "memory_limit", None), defaults.memory_mib),
                        cpu_s=_limit(getattr(args, "cpu_limit", None), defaults.cpu_s),
                        output_mib=_limit(getattr(args, "output_limit", None), defaults.output_mib))
        report = run_grading(impl=args.impl, root=args.root, only=args.only, timeout=args.timeout,
                             progress=out, limits=limits)
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
