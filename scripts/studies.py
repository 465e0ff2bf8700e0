"""What the study scripts (case_study.py, distill_study.py) share: where a study writes, and how it
runs one course command with its output in the study's log."""
from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRATCH = ROOT / "results" / "tmp"


def choose_folders(parser, args, results: str, runs: str) -> None:
    """Fill ``args.out`` / ``args.runs`` when not given: ``results/<results>/`` and
    ``results/tmp/<runs>/``; a ``--quick`` run writes to ``results/tmp/<results>_quick/`` and
    ``results/tmp/<runs>_quick/`` and may not write anywhere but under ``results/tmp/``."""
    q = args.quick
    if args.out is None:
        args.out = str(SCRATCH / f"{results}_quick" if q else ROOT / "results" / results)
    if args.runs is None:
        args.runs = str(SCRATCH / (f"{runs}_quick" if q else runs))
    if q and SCRATCH.resolve() not in Path(args.out).resolve().parents:
        parser.error(f"--out {args.out}: a --quick run is a smoke test and writes only under {SCRATCH}")


def run_command(cmd: list[str], log) -> float:
    """Run one course command from the checkout (its output goes to ``log``); returns its wall time."""
    log.write("$ " + " ".join(shlex.quote(c) for c in cmd) + "\n")
    log.flush()
    t0 = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    r = subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
    if r.returncode:
        raise RuntimeError(f"command failed ({r.returncode}): {' '.join(cmd)}; see {log.name}")
    return time.perf_counter() - t0


if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
