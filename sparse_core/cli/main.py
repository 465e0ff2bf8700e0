"""Command line of the course: ``python -m sparse_core <command>``.

Commands:
  grade   grade your exercises (points per chapter and exercise)
  cost    FLOPs and memory of dense attention for given sizes
  info    versions, threads and paths of this installation
  bench   measurements behind the book: ``bench layouts`` (see sparse_core.bench)
  train     train the GPT-NeoX case-study model on WikiText-2 (see sparse_core.lm.train)
  eval      loss and perplexity of a trained run or a Pythia checkpoint
  generate  sample text with the key-value cache
  distill   distil a cheaper attention from a dense teacher (see sparse_core.lm.distill)
"""
from __future__ import annotations

import argparse
import sys

from .common import non_negative_float, non_negative_int, positive_float, positive_int, use_help_formatter


def _cmd_grade(args) -> int:
    from ..course.runner import main_grade

    from ..course.checks import all_chapters

    chapters = all_chapters()
    numbers = {str(c.number) for c in chapters} | {c.slug for c in chapters}
    exercises = [e for c in chapters for e in c.exercises()]
    for c in args.chapter or []:
        if str(c) not in numbers:
            print(f"error: --chapter {c}: no such graded chapter; the graded chapters are "
                  f"{', '.join(str(ch.number) for ch in chapters)}", file=sys.stderr)
            return 2
    for e in args.exercise or []:
        if e not in exercises:
            print(f"error: --exercise {e}: no such exercise; the exercises are {', '.join(exercises)}", file=sys.stderr)
            return 2
    only = [str(c) for c in args.chapter or []] + list(args.exercise or [])
    args.only = ",".join(only) if only else None
    return main_grade(args)


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return str(n)  # pragma: no cover


def _cmd_cost(args) -> int:
    from ..attention.cost import attention_cost

    print(f"{'n':>8} {'pairs':>16} {'matmul GFLOP':>14} {'score matrix':>14}   "
          f"(d={args.d}, heads={args.heads}, batch={args.batch}, {args.bytes} B/elem, causal={args.causal})")
    for n in args.n:
        c = attention_cost(n, n, args.d, args.d, n_heads=args.heads, batch=args.batch,
                           bytes_per_element=args.bytes, causal=args.causal)
        print(f"{n:>8} {c.pairs:>16,} {c.matmul_flops / 1e9:>14.3f} {_fmt_bytes(c.score_bytes):>14}")
    return 0


def _cmd_info(args) -> int:
    import platform

    import numba
    import numpy
    import torch

    from .. import __version__
    from ..course.impl import repo_root

    try:
        root = str(repo_root())
    except FileNotFoundError:
        root = "(not inside a course checkout)"
    rows = [
        ("sparse_core", __version__),
        ("python", platform.python_version()),
        ("numpy", numpy.__version__),
        ("numba", f"{numba.__version__} (threads: {numba.config.NUMBA_NUM_THREADS})"),
        ("torch", f"{torch.__version__} (threads: {torch.get_num_threads()}, cuda: {torch.cuda.is_available()})"),
        ("course checkout", root),
    ]
    for k, v in rows:
        print(f"{k:<16} {v}")
    return 0


def _cmd_bench(args) -> int:
    return args.bench_main(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sparse_core",
        description="The sparse-attention course's command line.",
    )
    sub = parser.add_subparsers(dest="command", metavar="<command>")

    g = sub.add_parser("grade", help="grade your exercises: points per chapter and exercise",
                       description="Run the graded tests against your exercises and print a points table.")
    g.add_argument("--impl", default=None,
                   help="whose code: exercises (default), solutions, or a folder laid out like exercises/")
    g.add_argument("--chapter", type=positive_int, action="append", help="only this chapter (repeatable)")
    g.add_argument("--exercise", action="append", help="only this exercise, e.g. 1.5 (repeatable)")
    g.add_argument("--timeout", type=positive_float, default=60.0, help="seconds per graded test")
    g.add_argument("--memory-limit", type=non_negative_int, default=None, metavar="MIB",
                   help="address space of the graded process in MiB (default 6144, at most 3/4 of this "
                        "machine's memory; 0 = no limit)")
    g.add_argument("--cpu-limit", type=non_negative_float, default=None, metavar="S",
                   help="CPU seconds per graded test (default: --timeout; 0 = no limit)")
    g.add_argument("--output-limit", type=non_negative_int, default=None, metavar="MIB",
                   help="MiB the graded process may write, its output included (default 64; 0 = no limit)")
    g.add_argument("--verbose", "-v", action="store_true", help="show every failing check, not only the first")
    g.add_argument("--json", metavar="FILE", help="also write per-test results as JSON")
    g.add_argument("--root", default=None, help="the course checkout (default: found from the current folder)")
    g.add_argument("--fail-under", type=float, default=None, metavar="PCT",
                   help="exit with status 1 when the score is below PCT percent")
    g.set_defaults(func=_cmd_grade)

    c = sub.add_parser("cost", help="FLOPs and memory of dense attention",
                       description="Analytic cost of dense attention (see sparse_core.attention.cost).")
    c.add_argument("--n", type=positive_int, nargs="+", default=[1024, 4096, 16384, 65536], help="sequence lengths")
    c.add_argument("--d", type=positive_int, default=64, help="head dimension")
    c.add_argument("--heads", type=positive_int, default=8, help="attention heads")
    c.add_argument("--batch", type=positive_int, default=1, help="sequences in the batch")
    c.add_argument("--bytes", type=positive_int, default=4, help="bytes per element (4 = float32)")
    c.add_argument("--causal", action="store_true", help="count only the causal half of the scores")
    c.set_defaults(func=_cmd_cost)

    i = sub.add_parser("info", help="versions, threads and paths")
    i.set_defaults(func=_cmd_info)

    from ..bench import TARGETS, add_target_parsers

    b = sub.add_parser("bench", help="benchmarks: " + ", ".join(TARGETS),
                       description="Measure parts of the library; each target writes JSON, a plot and a README.")
    add_target_parsers(b, positive_int)
    b.set_defaults(func=_cmd_bench)

    from .lm import add_parsers

    add_parsers(sub, positive_int, positive_float)

    from .distill import add_parser as add_distill_parser

    add_distill_parser(sub, positive_int, positive_float)
    return use_help_formatter(parser)


def main(argv: list[str] | None = None) -> int:
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 0
        return int(args.func(args) or 0)
    except KeyboardInterrupt:  # Ctrl-C before a run's own handler is installed (start-up, loading)
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
