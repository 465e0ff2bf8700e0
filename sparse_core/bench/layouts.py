"""How long building a BlockLayout takes, and how much memory it needs, for representative patterns.

For each pattern and sequence length ``n`` this times ``pattern.to_layout(n, n, block_size)``
(median of ``repeats`` runs after one warm-up, :func:`sparse_core.bench.timing.time_callable`),
measures the peak bytes numpy allocates during one build (:func:`tracemalloc`, via
:func:`sparse_core.bench.timing.peak_traced_bytes`), and compares it with the layout's own arrays
and with what an ``n x n`` bool mask would take. It writes ``layouts.json``, ``layouts.png``
(build time and memory against ``n``, log-log) and a ``README.md`` into ``--out``.

``random_pattern`` has no closed form: every block is classified by evaluating its hash on all
``block_size**2`` pairs, so its build time grows like ``n**2`` (tens of seconds at 65536 tokens on
a laptop core). It is measured up to ``--random-max-n`` and reported as skipped, with an
``n**2`` extrapolation, above it.
"""
from __future__ import annotations

import math
import shlex
import time
from pathlib import Path
from typing import Callable, Sequence

from .report import new_report, write_report

HELP = "time and measure BlockLayout construction for representative patterns"

DEFAULT_NS = (1024, 4096, 16384, 65536)
DEFAULT_BLOCK_SIZE = 128
DEFAULT_REPEATS = 5
DEFAULT_OUT = "results/layouts"
DEFAULT_RANDOM_MAX_N = 16384
DEFAULT_DENSITY_MAX_N = 16384
DEFAULT_CASE_SECONDS = 10.0
RANDOM_DENSITY = 0.01
WINDOW = 256

__all__ = ["run_layouts", "pattern_cases", "add_arguments", "main", "DEFAULT_NS"]


# ---------------------------------------------------------------------------- the patterns

def pattern_cases(block_size: int) -> list[tuple[str, str, Callable[[int], object]]]:
    """``(name, parameters in words, factory(n) -> Pattern)`` for every benchmarked pattern.

    Parameters scale with ``n`` the way the papers use them: strided/fixed/axial use a stride
    (grid width) of ``isqrt(n)``, so their cost is ``O(n sqrt n)``; windows are fixed.
    """
    from .. import patterns as P

    def side(n: int) -> int:
        return max(1, math.isqrt(n))

    return [
        ("sliding_window_causal", f"sliding_window({WINDOW}, causal=True)",
         lambda n: P.sliding_window(WINDOW, causal=True)),
        ("longformer", f"longformer({WINDOW}, global_indices=[0])",
         lambda n: P.longformer(WINDOW, [0])),
        ("bigbird", f"bigbird(n, block_size={block_size}, num_random_blocks=3, num_global_blocks=1, window_blocks=3)",
         lambda n: P.bigbird(n, block_size, num_random_blocks=3, num_global_blocks=1, window_blocks=3, seed=0)),
        ("strided", "strided(stride=isqrt(n), causal=True)", lambda n: P.strided(side(n))),
        ("fixed", "fixed(stride=isqrt(n), c=max(1, isqrt(n) // 16), causal=True)",
         lambda n: P.fixed(side(n), max(1, side(n) // 16))),
        ("axial", "axial(height=ceil(n / isqrt(n)), width=isqrt(n))",
         lambda n: P.axial(-(-n // side(n)), side(n))),
        ("dense", "dense()", lambda n: P.dense()),
        ("random", f"random_pattern(density={RANDOM_DENSITY}, seed=0)",
         lambda n: P.random_pattern(RANDOM_DENSITY, seed=0)),
    ]


# ---------------------------------------------------------------------------- running

def command_line(ns, block_size, repeats, out, n_heads=1, random_max_n=DEFAULT_RANDOM_MAX_N,
                 density_max_n=DEFAULT_DENSITY_MAX_N, case_seconds=DEFAULT_CASE_SECONDS, patterns=None) -> str:
    """The ``python -m sparse_core bench layouts ...`` line that reproduces a run."""
    parts = ["python", "-m", "sparse_core", "bench", "layouts", "--n", *map(str, ns),
             "--block-size", str(block_size), "--repeats", str(repeats), "--out", str(out)]
    if n_heads != 1:
        parts += ["--heads", str(n_heads)]
    if random_max_n != DEFAULT_RANDOM_MAX_N:
        parts += ["--random-max-n", str(random_max_n)]
    if density_max_n != DEFAULT_DENSITY_MAX_N:
        parts += ["--density-max-n", str(density_max_n)]
    if case_seconds != DEFAULT_CASE_SECONDS:
        parts += ["--case-seconds", repr(float(case_seconds))]
    for name in patterns or ():
        parts += ["--pattern", name]
    return " ".join(shlex.quote(p) for p in parts)


def _measure(pattern, n: int, block_size: int, n_heads: int, repeats: int, case_seconds: float,
             density_max_n: int) -> dict:
    from .timing import peak_traced_bytes, time_callable

    def build():
        return pattern.to_layout(n, n, block_size, n_heads)

    t0 = time.perf_counter()
    layout = build()  # also the warm-up
    first = time.perf_counter() - t0
    used = repeats if first * repeats <= case_seconds else max(1, int(case_seconds // max(first, 1e-9)))
    timing = time_callable(build, repeats=used, warmup=0)
    peak = peak_traced_bytes(build)
    layout_bytes = int(layout.indptr.nbytes + layout.indices.nbytes + layout.full.nbytes)
    row = {
        "status": "ok",
        "build_s_median": timing.median,
        "build_s_iqr": list(timing.iqr),
        "build_s_samples": list(timing.samples),
        "repeats": used,
        "peak_bytes": peak,
        "layout_bytes": layout_bytes,
        "dense_bool_bytes": n_heads * n * n,
        "peak_over_layout": peak / layout_bytes if layout_bytes else None,
        "peak_over_dense_bool": peak / (n_heads * n * n),
        "nnz": layout.nnz,
        "n_full": layout.n_full,
        "n_partial": layout.n_partial,
        "n_blocks": layout.n_heads * layout.n_qb * layout.n_kb,
        "block_density": layout.block_density,
        "density": None,
        "density_s": None,
    }
    if n <= density_max_n:
        t0 = time.perf_counter()
        row["density"] = layout.density
        row["density_s"] = time.perf_counter() - t0
    return row


def run_layouts(ns: Sequence[int] = DEFAULT_NS, block_size: int = DEFAULT_BLOCK_SIZE, repeats: int = DEFAULT_REPEATS,
                out: str | Path | None = DEFAULT_OUT, n_heads: int = 1,
                random_max_n: int = DEFAULT_RANDOM_MAX_N, density_max_n: int = DEFAULT_DENSITY_MAX_N,
                case_seconds: float = DEFAULT_CASE_SECONDS, patterns: Sequence[str] | None = None,
                command: str | None = None, log: Callable[[str], object] | None = print) -> dict:
    """Run the benchmark; return the report and, when ``out`` is given, write it there.

    ``case_seconds`` caps the timed repeats of one (pattern, n): a build slower than
    ``case_seconds / repeats`` is timed fewer times (the JSON says how many). ``patterns``
    restricts the run to some of the names of :func:`pattern_cases`.
    """
    from .. import _validation as V
    from .timing import fit_power_law

    ns = sorted({V.check_positive_int("n", n) for n in ns})
    if not ns:
        raise ValueError("`ns` must list at least one sequence length")
    block_size = V.check_positive_int("block_size", block_size)
    repeats = V.check_positive_int("repeats", repeats)
    n_heads = V.check_positive_int("n_heads", n_heads)
    random_max_n = V.check_positive_int("random_max_n", random_max_n)
    density_max_n = V.check_nonnegative_int("density_max_n", density_max_n)
    if not case_seconds > 0:
        raise ValueError(f"`case_seconds` must be positive, got {case_seconds!r}")
    cases = pattern_cases(block_size)
    if patterns is not None:
        unknown = sorted(set(patterns) - {c[0] for c in cases})
        if unknown:
            raise ValueError(f"unknown pattern name(s) {unknown}; choose from {[c[0] for c in cases]}")
        cases = [c for c in cases if c[0] in set(patterns)]
    if command is None:
        command = command_line(ns, block_size, repeats, out if out is not None else DEFAULT_OUT, n_heads,
                               random_max_n, density_max_n, case_seconds, [c[0] for c in cases] if patterns else None)
    started = time.perf_counter()
    results = []
    for name, params, factory in cases:
        for n in ns:
            base = {"pattern": name, "parameters": params, "n": n, "block_size": block_size, "n_heads": n_heads}
            if name == "random" and n > random_max_n:
                measured = [r for r in results if r["pattern"] == name and r["status"] == "ok"]
                estimate = None
                if measured:
                    ref = measured[-1]
                    estimate = ref["build_s_median"] * (n / ref["n"]) ** 2
                base.update(status="skipped", repr=None,
                            reason=(f"random_pattern classifies every block by evaluating all pairs (O(n^2) work); "
                                    f"skipped above --random-max-n={random_max_n}"),
                            estimate_s=estimate,
                            estimate_basis=(f"n^2 scaling from n={measured[-1]['n']}" if measured else None))
                results.append(base)
                if log:
                    log(f"{name:>22} n={n:>6}  skipped (random_max_n={random_max_n})"
                        + (f", ~{estimate:.3g} s estimated" if estimate is not None else ""))
                continue
            t0 = time.perf_counter()
            try:
                pattern = factory(n)
            except ValueError as exc:  # a pattern that does not exist at this length (BigBird's random blocks)
                base.update(status="skipped", repr=None, reason=str(exc), estimate_s=None, estimate_basis=None)
                results.append(base)
                if log:
                    log(f"{name:>22} n={n:>6}  skipped ({exc})")
                continue
            construct = time.perf_counter() - t0
            base["repr"] = repr(pattern)
            base["construct_s"] = construct
            base.update(_measure(pattern, n, block_size, n_heads, repeats, case_seconds, density_max_n))
            results.append(base)
            if log:
                log(f"{name:>22} n={n:>6}  build {1e3 * base['build_s_median']:9.3f} ms  "
                    f"peak {base['peak_bytes'] / 2**20:8.2f} MiB  layout {base['layout_bytes'] / 2**20:8.3f} MiB  "
                    f"n x n bool {base['dense_bool_bytes'] / 2**20:9.1f} MiB  blocks kept {100 * base['block_density']:5.1f}%")
    fits = {}
    for name, _, _ in cases:
        rows = [r for r in results if r["pattern"] == name and r["status"] == "ok"]
        if len(rows) >= 2:
            x = [r["n"] for r in rows]
            fits[name] = {
                "build_time_slope": fit_power_law(x, [max(r["build_s_median"], 1e-9) for r in rows])[0],
                "peak_bytes_slope": fit_power_law(x, [max(r["peak_bytes"], 1) for r in rows])[0],
                "layout_bytes_slope": fit_power_law(x, [max(r["layout_bytes"], 1) for r in rows])[0],
            }
    settings = {"ns": ns, "block_size": block_size, "repeats": repeats, "n_heads": n_heads,
                "random_max_n": random_max_n, "density_max_n": density_max_n, "case_seconds": case_seconds,
                "timer": "sparse_core.bench.timing.time_callable (median; 1 warm-up build)",
                "memory": "sparse_core.bench.timing.peak_traced_bytes (tracemalloc peak during one build, "
                          "numpy buffers included, result included)"}
    report = new_report(command, local_time=True, benchmark="layouts", settings=settings, results=results, fits=fits,
                        wall_s=time.perf_counter() - started)
    if out is not None:
        write_outputs(report, Path(out))
    return report


# ---------------------------------------------------------------------------- outputs

def write_outputs(report: dict, out: Path) -> None:
    write_report(report, out, "layouts", plot_report, _readme)


def plot_report(report: dict, path: Path) -> None:
    """Build time and memory against n (log-log), one line per pattern."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 4.8))
    FigureCanvasAgg(fig)
    ax_t, ax_m = fig.subplots(1, 2)
    names = list(dict.fromkeys(r["pattern"] for r in report["results"]))
    for k, name in enumerate(names):
        rows = [r for r in report["results"] if r["pattern"] == name and r["status"] == "ok"]
        if not rows:
            continue
        color = f"C{k % 10}"
        x = [r["n"] for r in rows]
        ax_t.plot(x, [r["build_s_median"] for r in rows], marker="o", color=color, label=name)
        skipped = [r for r in report["results"] if r["pattern"] == name and r.get("estimate_s")]
        if skipped:
            ax_t.plot([x[-1]] + [r["n"] for r in skipped], [rows[-1]["build_s_median"]] + [r["estimate_s"] for r in skipped],
                      linestyle=":", marker="x", color=color, label=f"{name} (n² extrapolation, not run)")
        ax_m.plot(x, [r["peak_bytes"] for r in rows], marker="o", color=color, label=f"{name} peak")
        ax_m.plot(x, [r["layout_bytes"] for r in rows], marker=".", linestyle="--", color=color, alpha=0.6)
    ns = report["settings"]["ns"]
    heads = report["settings"]["n_heads"]
    ax_m.plot(ns, [heads * n * n for n in ns], color="k", linewidth=2, label="n x n bool mask")
    ax_m.plot([], [], color="0.4", linestyle="--", marker=".", label="layout arrays (dashed)")
    s = report["settings"]
    ax_t.set_title(f"BlockLayout build time (median of up to {s['repeats']}), block {s['block_size']}", fontsize="medium")
    ax_t.set_ylabel("seconds")
    ax_m.set_title("memory: tracemalloc peak during a build vs n x n bool", fontsize="medium")
    ax_m.set_ylabel("bytes")
    for ax in (ax_t, ax_m):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length n")
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize="x-small", ncol=1)
    m = report["machine"]
    fig.suptitle(f"{m['platform']}, {m['cpu_count']} CPUs, numpy {m['numpy']}, {report['date']}", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _fmt_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)  # pragma: no cover


def _readme(report: dict) -> str:
    m, s = report["machine"], report["settings"]
    lines = [
        "# BlockLayout construction benchmark",
        "",
        "Made by (from the repository root):",
        "",
        "```",
        report["command"],
        "```",
        "",
        f"on {m['platform']} ({m['cpu_count']} CPUs), Python {m['python']}, numpy {m['numpy']}, torch {m['torch']}, "
        f"{report['date']}; the run took {report['wall_s']:.1f} s. Files: `layouts.json` (every number, settings, "
        "machine), `layouts.png` (build time and memory vs n, log-log).",
        "",
        f"Build time = median of up to {s['repeats']} builds of `pattern.to_layout(n, n, {s['block_size']}, "
        f"{s['n_heads']})` after one warm-up (fewer repeats where one build takes more than "
        f"{s['case_seconds']:g} s / {s['repeats']}; see `repeats`). Peak = tracemalloc peak during one build "
        "(numpy temporaries and the result). These are measurements on one machine, not guarantees.",
        "",
        "| pattern | n | build (ms) | peak | layout arrays | n x n bool | blocks kept | token density |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["results"]:
        if r["status"] != "ok":
            est = f"not run (~{r['estimate_s']:.3g} s by n² extrapolation)" if r.get("estimate_s") else "not run"
            lines.append(f"| {r['pattern']} | {r['n']} | {est} | | | {_fmt_bytes(r['n_heads'] * r['n'] ** 2)} | | |")
            continue
        dens = f"{100 * r['density']:.2f}%" if r["density"] is not None else "-"
        lines.append(f"| {r['pattern']} | {r['n']} | {1e3 * r['build_s_median']:.3f} | {_fmt_bytes(r['peak_bytes'])} | "
                     f"{_fmt_bytes(r['layout_bytes'])} | {_fmt_bytes(r['dense_bool_bytes'])} | "
                     f"{100 * r['block_density']:.2f}% | {dens} |")
    if report["fits"]:
        lines += ["", "Log-log slopes over n (build time, peak bytes, layout bytes):", ""]
        for name, f in report["fits"].items():
            lines.append(f"- {name}: {f['build_time_slope']:.2f}, {f['peak_bytes_slope']:.2f}, "
                         f"{f['layout_bytes_slope']:.2f}")
    lines += ["", "Token density is computed only for n <= "
              f"{s['density_max_n']} (it evaluates the mask inside every partial block).", "",
              "Reading the numbers:", "",
              "- `to_layout` classifies every one of the (n / block_size)^2 block pairs (closed forms, in chunks "
              "of 2^18 pairs), so once n is large its time grows like n^2 even for very sparse patterns, while its "
              "memory stays bounded by the chunk size -- compare the peak with the n x n bool column.",
              "- `random` has no closed form: every pair of every block is hashed (O(n^2) work, 2^22 pairs at a "
              "time), so its temporaries are tens of MiB, more than an n x n bool mask at small n.",
              "- Unions whose partial parts meet in one block (e.g. `fixed` or `axial` when the stride is smaller "
              "than the block) are settled by evaluating those tiles, which is why they can be slower at a "
              "smaller n.", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------- command line

def add_arguments(parser, positive_int) -> None:
    parser.add_argument("--n", type=positive_int, nargs="+", default=list(DEFAULT_NS),
                        help=f"sequence lengths (default: {' '.join(map(str, DEFAULT_NS))})")
    parser.add_argument("--block-size", type=positive_int, default=DEFAULT_BLOCK_SIZE,
                        help=f"layout block size (default {DEFAULT_BLOCK_SIZE})")
    parser.add_argument("--repeats", type=positive_int, default=DEFAULT_REPEATS,
                        help=f"timed builds per pattern and n (default {DEFAULT_REPEATS})")
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    parser.add_argument("--heads", type=positive_int, default=1, help="heads per layout (default 1)")
    parser.add_argument("--random-max-n", type=positive_int, default=DEFAULT_RANDOM_MAX_N,
                        help=f"largest n for random_pattern, whose build is O(n^2) (default {DEFAULT_RANDOM_MAX_N})")
    parser.add_argument("--density-max-n", type=positive_int, default=DEFAULT_DENSITY_MAX_N,
                        help=f"largest n for which the exact token density is counted (default {DEFAULT_DENSITY_MAX_N})")
    parser.add_argument("--case-seconds", type=float, default=DEFAULT_CASE_SECONDS,
                        help=f"time budget for the timed repeats of one pattern and n (default {DEFAULT_CASE_SECONDS:g})")
    parser.add_argument("--pattern", action="append", default=None,
                        help="only this pattern (repeatable); names: sliding_window_causal, longformer, bigbird, "
                             "strided, fixed, axial, dense, random")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")


def main(args) -> int:
    try:
        report = run_layouts(args.n, args.block_size, args.repeats, args.out, n_heads=args.heads,
                             random_max_n=args.random_max_n, density_max_n=args.density_max_n,
                             case_seconds=args.case_seconds, patterns=args.pattern,
                             log=None if args.quiet else print)
    except ValueError as e:
        print(f"error: {e}")
        return 2
    print(f"wrote {Path(args.out) / 'layouts.json'}, layouts.png and README.md ({report['wall_s']:.1f} s)")
    return 0
