"""Every attention method of the course as a layer, on the same axes: time and memory against n, fitted exponents.

The layers are :func:`sparse_core.approx.methods.make_attention` ``(method, d_model, heads, n)`` for
every method of :data:`~sparse_core.approx.methods.METHODS` with its :data:`~sparse_core.approx.methods.DEFAULTS`
(``causal=True``, except ``linformer``, which is not causal and runs ``causal=False``; the flag is
recorded per method), plus ``flex``: the same ``MultiHeadAttention`` projections around
``torch.compile(flex_attention)`` with a causal sliding-window ``BlockMask`` of ``local``'s window
and block size. Each maps ``x [1, n, d_model] -> [1, n, d_model]``, float32, on the CPU, in
training mode (``routing`` and ``performer`` update their centroids / features as in training).

Per length ``n`` (``--n``):

* **time**: each layer's forward (under ``torch.no_grad()``) and forward + backward (``y.sum()``
  back to ``x`` and every parameter, gradients cleared before each call). A warm-up call first
  (Numba and inductor compile there); a sample is the wall time of enough calls to last about
  20 ms, divided by their number; ``--rounds`` samples, every method of the length interleaved
  round by round (a slow period of the machine hits all of them); reported: the median in ms.
  FlexAttention runs forward only: PyTorch has no CPU backward for it.
* **memory** (``peak_mib``): the peak resident-set growth of one forward + backward (forward only
  for ``flex``), measured in a fresh Python process per (method, n), since a process's peak RSS
  cannot be lowered by the process itself. That process builds the layer and ``x``, makes one
  warm-up call (compiles, lazy initialisations), frees what it can (``gc``, glibc ``malloc_trim``;
  glibc's mmap threshold is fixed at 128 KiB so large buffers go back to the system when freed),
  resets the kernel's peak-RSS mark (``/proc/self/clear_refs`` <- 5), reads its RSS (``VmRSS``),
  makes the measured call, and reports the peak mark after it minus that RSS. The peak mark is
  ``VmHWM``: what ``getrusage(RUSAGE_SELF).ru_maxrss`` reports, less the marks that threads which
  exited earlier leave in ``ru_maxrss`` (which the reset does not clear; ``ru_maxrss`` minus the RSS
  is kept in the row too, ``ru_maxrss_growth_mib``). It counts every page the call touched:
  torch's CPU allocator, numpy buffers (what :mod:`tracemalloc` would see), Numba's, and the
  gradients of ``x`` and the parameters -- but not the parameters themselves nor ``x``, which exist
  before. Where the mark cannot be reset (not Linux, or not allowed) there is no warm-up, the peak
  is ``ru_maxrss`` and one-time costs are included; the row says so (``peak_reset: false``).

A (method, n) is skipped, with the reason recorded in its row, when its shorter length took more
than ``--max-seconds`` per call, was skipped or failed, or when its predicted peak memory exceeds
``--max-gib`` (prediction: the last measured peak scaled by ``(n / n_last) ^ e``, ``e`` the larger
of the method's predicted memory exponent and the slope of its last two measured peaks, at most
3; a method's first length is always tried -- in the memory subprocess first, so running out of
memory ends only that process). Fits: the least-squares slope of ``log(value)`` against ``log(n)``
(:func:`sparse_core.bench.timing.fit_power_law`) over the measured points with ``n >= 2048``, or
over all of them when fewer than 3 are that long, for forward, forward + backward and memory,
reported with their points next to the predicted complexity (:data:`~sparse_core.approx.methods.COMPLEXITY`).
Writes ``methods.json``, ``methods.png`` and ``README.md``. It only measures; nothing is asserted.
"""
from __future__ import annotations

import json
import math
import os
import shlex
import subprocess
import sys
import time
import warnings
from pathlib import Path

from .report import fmt_or_dash as _f, new_report, write_report

HELP = "time and peak memory of every attention method as a layer against n, with fitted exponents"
DEFAULT_NS = (512, 1024, 2048, 4096, 8192, 16384)
QUICK_NS = (256, 512)
DEFAULT_OUT = "results/methods"
QUICK_OUT = "results/tmp/methods_quick"
DEFAULT_ROUNDS = 3
DEFAULT_D_MODEL = 256
DEFAULT_HEADS = 4
DEFAULT_MAX_GIB = 8.0
DEFAULT_MAX_SECONDS = 20.0
FLEX = "flex"
#: fits use the points with n >= FIT_MIN_N when there are at least FIT_MIN_POINTS of them
FIT_MIN_N = 2048
FIT_MIN_POINTS = 3
FIT_RULE = (f"least-squares slope of log(value) vs log(n) over the measured points with n >= {FIT_MIN_N}, "
            f"or all measured points if fewer than {FIT_MIN_POINTS} such")
MIN_SAMPLE_S = 0.02
#: rough (forward, forward + backward) seconds per call at n = 1024 (d_model 256, 4 heads, one busy
#: 2-core x86 CPU, 1 torch thread): only for the duration printed before a run
REF_SECONDS_1024 = {
    "dense": (0.03, 0.10), "local": (0.14, 0.30), "strided": (0.10, 0.54), "fixed": (0.10, 0.47),
    "bigbird": (0.05, 0.31), "longformer": (0.10, 0.28), "global_local": (0.10, 0.19), "topk": (0.54, 0.86),
    "routing": (0.71, 1.67), "nsa": (1.5, 3.6), "linformer": (0.12, 0.40), "performer": (0.71, 2.5),
    "synthesizer": (0.24, 0.57), FLEX: (0.01, 0.0),
}
PROBE_OVERHEAD_S = 4.0    # starting a memory subprocess (imports) -- for the estimate only
FLEX_COMPILE_S = 30.0     # inductor compile per new length -- for the estimate only


def all_methods() -> tuple[str, ...]:
    """The methods of the registry, then ``flex``."""
    from ..approx.methods import METHODS

    return tuple(METHODS) + (FLEX,)


def causal_of(method: str) -> bool:
    """Every method runs causal except ``linformer`` (it mixes all positions into its projected keys)."""
    return method != "linformer"


def predicted_exponent(expr: str) -> float:
    """The leading power of ``n`` in a :data:`~sparse_core.approx.methods.COMPLEXITY` entry
    (``"n^2 ..."`` -> 2, ``"n sqrt(n)"`` -> 1.5, ``"n (n / b + ...)"`` -> 2, else 1)."""
    e = expr.replace(" ", "")
    if e.startswith("n^2") or e.startswith("n(n"):
        return 2.0
    if e.startswith("nsqrt(n)"):
        return 1.5
    return 1.0


def complexity_table(methods) -> dict:
    """The predicted costs of ``methods`` (``flex`` has ``local``'s)."""
    from ..approx.methods import COMPLEXITY

    out = {}
    for m in methods:
        entry = dict(COMPLEXITY["local" if m == FLEX else m])
        if m == FLEX:
            entry["note"] = "as local: the same causal sliding window, by compiled FlexAttention"
        out[m] = entry
    return out


def fit_exponent(points, min_n: int = FIT_MIN_N, min_points: int = FIT_MIN_POINTS):
    """``(slope, points used)`` of ``log(value)`` against ``log(n)``; ``points`` are ``(n, value)``,
    ``None`` and non-positive values left out; slope ``None`` with fewer than 2 points."""
    from .timing import fit_power_law

    pts = sorted((int(n), float(v)) for n, v in points if v is not None and v > 0)
    big = [p for p in pts if p[0] >= min_n]
    use = big if len(big) >= min_points else pts
    if len({n for n, _ in use}) < 2:
        return None, use
    slope, _ = fit_power_law([n for n, _ in use], [v for _, v in use])
    return slope, use


def predict_peak_mib(history, n: int, exponent: float):
    """The peak of ``n`` from the measured peaks of shorter lengths (module docstring); None without one."""
    pts = [(r["n"], r["peak_mib"]) for r in history if r.get("peak_mib") is not None and r["peak_mib"] > 0]
    if not pts:
        return None
    e = exponent
    if len(pts) >= 2 and pts[-1][0] != pts[-2][0]:
        (n0, m0), (n1, m1) = pts[-2], pts[-1]
        e = max(e, math.log(m1 / m0) / math.log(n1 / n0))
    e = min(max(e, 1.0), 3.0)
    return pts[-1][1] * (n / pts[-1][0]) ** e


def skip_reason(history, n: int, max_gib: float, max_seconds: float, memory_exponent: float):
    """``(reason or None, predicted peak MiB or None)`` for running a method at ``n`` after ``history``
    (its rows at shorter lengths, in order)."""
    predicted = predict_peak_mib(history, n, memory_exponent)
    if history:
        last = history[-1]
        if last["skipped"]:
            return f"not run: the shorter length n={last['n']} was skipped or failed", predicted
        t = last["fwdbwd_ms"] if last["fwdbwd_ms"] is not None else last["fwd_ms"]
        if t is not None and t / 1e3 > max_seconds:
            return (f"not run: n={last['n']} took {t / 1e3:.3g} s per call (more than --max-seconds "
                    f"{max_seconds:g})"), predicted
    if predicted is not None and predicted > max_gib * 1024:
        return (f"not run: predicted peak {predicted / 1024:.3g} GiB (more than --max-gib {max_gib:g}), "
                f"from the measured peaks of shorter lengths"), predicted
    return None, predicted


def estimate_seconds(ns, methods, rounds, max_seconds=DEFAULT_MAX_SECONDS, memory=True) -> float:
    """A rough duration of a run: :data:`REF_SECONDS_1024` scaled by the predicted time exponents,
    lengths past ``max_seconds`` left out, memory skips ignored."""
    from ..approx.methods import COMPLEXITY

    total = 0.0
    for m in methods:
        f0, fb0 = REF_SECONDS_1024.get(m, (0.2, 0.6))
        e = predicted_exponent(COMPLEXITY["local" if m == FLEX else m]["time"])
        prev = 0.0
        for n in sorted(ns):
            if prev > max_seconds:
                break
            s = (n / 1024) ** e
            f, fb = f0 * s, fb0 * s
            one = fb if fb else f
            calls = (1 + rounds) * (f + fb) + 2 * rounds * MIN_SAMPLE_S
            if memory:
                calls += PROBE_OVERHEAD_S + 2 * one
            if m == FLEX:
                calls += FLEX_COMPILE_S * (2 if memory else 1)
            total += calls
            prev = one
    return total


# ----------------------------------------------------------------------------------------------
# the layers and the measurements (CPU)


def build_layer(method: str, d_model: int, heads: int, n: int):
    """The layer of ``method`` for ``n`` tokens, seeded (``flex``: compiled FlexAttention, local's window)."""
    import torch

    torch.manual_seed(0)
    if method == FLEX:
        return _flex_layer(d_model, heads, n)
    from ..approx.methods import make_attention

    return make_attention(method, d_model, heads, n, causal=causal_of(method))


_COMPILED = {}


def _flex_layer(d_model, heads, n):
    import torch
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    from .. import patterns as P
    from ..attention.cores import AttentionCore
    from ..attention.layer import MultiHeadAttention
    from ..approx.methods import DEFAULTS

    o = DEFAULTS["local"]
    pattern = P.intersection(P.sliding_window(o["window"], causal=True), P.causal())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        block_mask = create_block_mask(pattern.mask_mod, None, None, n, n, device="cpu", BLOCK_SIZE=o["block_size"])
    if "flex" not in _COMPILED:
        _COMPILED["flex"] = torch.compile(flex_attention)
    compiled = _COMPILED["flex"]

    class FlexCore(AttentionCore):
        """``torch.compile(flex_attention)`` with a fixed block mask (forward only on the CPU)."""

        def forward(self, q, k, v, x=None):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return compiled(q, k, v, block_mask=block_mask)

    return MultiHeadAttention(d_model, heads, FlexCore())


def _calls(method, layer, x):
    """``(forward, forward + backward or None)`` of one layer on ``x``."""
    import torch

    def fwd():
        with torch.no_grad():
            layer(x)

    def fwdbwd():
        x.grad = None
        layer.zero_grad(set_to_none=True)
        layer(x).sum().backward()

    return fwd, (None if method == FLEX else fwdbwd)


def _error(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[:300]}"


def measure_times(n, methods, rounds, d_model, heads, min_time=MIN_SAMPLE_S, threads=None):
    """Samples (seconds per call) of every method at ``n``, interleaved round by round:
    ``{method: {"fwd": [...], "fwdbwd": [...] or None, "error": None or str}}``. ``threads``: torch's
    thread count, set again after each warm-up (Numba's OpenMP start-up changes it)."""
    import torch

    threads = threads or torch.get_num_threads()

    x = torch.randn(1, n, d_model, generator=torch.Generator().manual_seed(0), requires_grad=True)
    out, fns, reps = {}, {}, {}
    for m in methods:
        try:
            layer = build_layer(m, d_model, heads, n)
            f, fb = _calls(m, layer, x)
            for fn in (f, fb):  # warm-up (compiles), then reps per sample from a second timed call
                if fn is None:
                    continue
                t0 = time.perf_counter()
                fn()
                t = time.perf_counter() - t0
                if t < 1.0:
                    t0 = time.perf_counter()
                    fn()
                    t = time.perf_counter() - t0
                reps[m, fn is fb] = max(1, min(50, math.ceil(min_time / max(t, 1e-6))))
                torch.set_num_threads(threads)
        except Exception as e:  # noqa: BLE001 -- recorded in the row, never silent
            out[m] = {"fwd": None, "fwdbwd": None, "error": _error(e)}
            continue
        fns[m] = (f, fb)
        out[m] = {"fwd": [], "fwdbwd": None if fb is None else [], "error": None}
    for _ in range(rounds):
        for m, (f, fb) in list(fns.items()):
            try:
                for key, fn in (("fwd", f), ("fwdbwd", fb)):
                    if fn is None:
                        continue
                    r = reps[m, fn is fb]
                    t0 = time.perf_counter()
                    for _ in range(r):
                        fn()
                    out[m][key].append((time.perf_counter() - t0) / r)
            except Exception as e:  # noqa: BLE001
                out[m] = {"fwd": None, "fwdbwd": None, "error": _error(e)}
                del fns[m]
    return out


def probe_memory(method, n, d_model, heads, timeout_s, threads=None):
    """Peak RSS growth of one forward + backward of ``method`` at ``n`` in a fresh process (module
    docstring): ``{"peak_bytes": int or None, "error": None or str, "peak_reset": bool, "of": str}``."""
    import torch

    import sparse_core

    spec = {"method": method, "n": n, "d_model": d_model, "heads": heads, "threads": threads or torch.get_num_threads()}
    env = dict(os.environ)
    root = str(Path(sparse_core.__file__).resolve().parents[1])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    cmd = [sys.executable, "-m", "sparse_core.bench.methods", "--probe", json.dumps(spec)]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env)
    except subprocess.TimeoutExpired:
        return {"peak_bytes": None, "error": f"it took more than {timeout_s:.0f} s",
                "peak_reset": None, "of": None}
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if lines:
        try:
            res = json.loads(lines[-1])
            if p.returncode == 0 or res.get("error"):
                return res
        except json.JSONDecodeError:
            pass
    err = [ln for ln in p.stderr.splitlines() if ln.strip()]
    why = (f"killed by signal {-p.returncode} (out of memory?)" if p.returncode < 0
           else f"exit status {p.returncode}: {err[-1].strip() if err else 'no message'}")
    return {"peak_bytes": None, "error": why, "peak_reset": None, "of": None}


def _status_kib(field: str):
    """``VmRSS`` / ``VmHWM`` of this process in KiB from ``/proc/self/status``; None where there is none."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _maxrss_kib():
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r // 1024 if sys.platform == "darwin" else r  # bytes on macOS, KiB on Linux


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _probe(spec: dict) -> dict:
    """The memory subprocess (see :func:`probe_memory`)."""
    import ctypes
    import ctypes.util
    import gc

    libc = None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD (fixed: large buffers are returned when freed)
        libc.mallopt(-1, 128 * 1024)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        libc = None
    import torch

    torch.set_num_threads(spec["threads"])
    method, n = spec["method"], spec["n"]
    layer = build_layer(method, spec["d_model"], spec["heads"], n)
    x = torch.randn(1, n, spec["d_model"], generator=torch.Generator().manual_seed(0), requires_grad=True)
    f, fb = _calls(method, layer, x)
    call = fb or f
    reset = _reset_peak()
    if reset:  # warm-up, then clear and lower the peak mark to the present RSS
        call()
        torch.set_num_threads(spec["threads"])  # Numba's OpenMP start-up changes it
        x.grad = None
        layer.zero_grad(set_to_none=True)
        gc.collect()
        if libc is not None and hasattr(libc, "malloc_trim"):
            libc.malloc_trim(0)
        _reset_peak()
    before = _status_kib("VmRSS")
    if before is None:  # no /proc: the peak so far stands for the RSS before
        before = _maxrss_kib()
    call()
    maxrss = _maxrss_kib()
    hwm = _status_kib("VmHWM") if reset else None
    peak = hwm if hwm is not None else maxrss
    return {"peak_bytes": max(0, peak - before) * 1024, "ru_maxrss_growth_bytes": max(0, maxrss - before) * 1024,
            "rss_before_mib": before / 1024, "error": None, "peak_reset": reset,
            "peak_source": "VmHWM" if hwm is not None else "ru_maxrss",
            "of": "forward+backward" if fb else "forward"}


# ----------------------------------------------------------------------------------------------
# the run


def _median(xs):
    import numpy as np

    return float(np.median(xs)) if xs else None


def _command(ns, methods, rounds, d_model, heads, max_gib, max_seconds, out, quick):
    cmd = "python -m sparse_core bench methods" + (" --quick" if quick else "")
    cmd += f" --n {' '.join(map(str, ns))} --rounds {rounds} --d-model {d_model} --heads {heads}"
    if tuple(methods) != all_methods():
        cmd += f" --methods {' '.join(methods)}"
    import torch

    return cmd + f" --max-gib {max_gib:g} --max-seconds {max_seconds:g} --threads {torch.get_num_threads()}" \
        f" --out {shlex.quote(str(out))}"


def run_methods_bench(ns=DEFAULT_NS, methods=None, rounds=DEFAULT_ROUNDS, d_model=DEFAULT_D_MODEL, heads=DEFAULT_HEADS,
                      max_gib=DEFAULT_MAX_GIB, max_seconds=DEFAULT_MAX_SECONDS, out=DEFAULT_OUT, log=print, *,
                      quick=False, measure=None, memory=None):
    """Measure every method at every length and write ``methods.json``, ``methods.png`` and ``README.md``.

    ``measure(n, methods, rounds, d_model, heads) -> {method: {"fwd": [s], "fwdbwd": [s] or None,
    "error": str or None}}`` and ``memory(method, n, d_model, heads, timeout_s) -> {"peak_bytes",
    "error", "peak_reset", "of"}`` default to :func:`measure_times` and :func:`probe_memory`; tests
    pass stand-ins to check the bookkeeping. ``memory=False`` measures no memory.
    """
    import functools

    import numba
    import torch

    from ..approx.methods import DEFAULTS

    t_start = time.time()
    threads = torch.get_num_threads()  # kept for every method (Numba's OpenMP start-up would change it)
    methods = tuple(all_methods() if methods is None else methods)
    ns = tuple(sorted(set(ns)))
    measure = measure or functools.partial(measure_times, threads=threads)
    probe = None if memory is False else (memory or functools.partial(probe_memory, threads=threads))
    complexity = complexity_table(methods)
    mem_exp = {m: predicted_exponent(complexity[m]["memory"]) for m in methods}
    if log:
        est = estimate_seconds(ns, methods, rounds, max_seconds, memory=probe is not None)
        log(f"bench methods: {len(methods)} methods x {len(ns)} lengths (n = {' '.join(map(str, ns))}), "
            f"{rounds} round{'s' if rounds > 1 else ''}; expected duration ~{est / 60:.0f} min (a rough guess "
            f"from per-call times of a busy 2-core CPU, extrapolated with the predicted exponents; "
            f"lengths over --max-seconds left out, memory skips not)")
    rows = {m: [] for m in methods}
    timeout_s = 120 + 10 * max_seconds
    done, total = 0, len(methods) * len(ns)
    for n in ns:
        active, pending = [], {}
        for m in methods:
            reason, predicted = skip_reason(rows[m], n, max_gib, max_seconds, mem_exp[m])
            row = {"method": m, "n": n, "causal": causal_of(m), "fwd_ms": None, "fwdbwd_ms": None,
                   "peak_mib": None, "skipped": reason, "predicted_peak_mib": predicted,
                   "memory_of": None, "peak_reset": None, "peak_source": None, "ru_maxrss_growth_mib": None,
                   "fwd_ms_samples": None, "fwdbwd_ms_samples": None,
                   "note": "forward only: PyTorch has no CPU backward for FlexAttention" if m == FLEX else None}
            pending[m] = row
            if reason is None and probe is not None:
                t0 = time.time()
                mem = probe(m, n, d_model, heads, timeout_s)
                for key, field in (("memory_of", "of"), ("peak_reset", "peak_reset"), ("peak_source", "peak_source")):
                    row[key] = mem.get(field)
                if mem.get("error"):
                    row["skipped"] = f"failed in the memory subprocess: {mem['error']}"
                else:
                    row["peak_mib"] = mem["peak_bytes"] / 2**20
                    if mem.get("ru_maxrss_growth_bytes") is not None:
                        row["ru_maxrss_growth_mib"] = mem["ru_maxrss_growth_bytes"] / 2**20
                if log:
                    got = f"{row['peak_mib']:.1f} MiB peak" if row["peak_mib"] is not None else row["skipped"]
                    log(f"  n={n:6d} {m:<13} memory: {got} ({time.time() - t0:.1f} s)")
            if row["skipped"] is None:
                active.append(m)
        samples = measure(n, tuple(active), rounds, d_model, heads) if active else {}
        for m in methods:
            row = pending[m]
            if m in active:
                s = samples.get(m) or {"error": "no samples returned"}
                if s.get("error"):
                    row["skipped"] = f"failed: {s['error']}"
                else:
                    row["fwd_ms_samples"] = [1e3 * t for t in s["fwd"]]
                    row["fwd_ms"] = _median(row["fwd_ms_samples"])
                    if s.get("fwdbwd") is not None:
                        row["fwdbwd_ms_samples"] = [1e3 * t for t in s["fwdbwd"]]
                        row["fwdbwd_ms"] = _median(row["fwdbwd_ms_samples"])
            rows[m].append(row)
            done += 1
            if log:
                if row["skipped"]:
                    what = f"skipped ({row['skipped']})"
                else:
                    what = (f"fwd {row['fwd_ms']:.2f} ms, fwd+bwd "
                            + ("-" if row["fwdbwd_ms"] is None else f"{row['fwdbwd_ms']:.2f} ms")
                            + ("" if row["peak_mib"] is None else f", peak {row['peak_mib']:.1f} MiB"))
                log(f"[{done}/{total}] n={n:6d} {m:<13} {what} ({time.time() - t_start:.0f} s elapsed)")
    fits = {}
    for m in methods:
        r = rows[m]
        entry = {"predicted_time_exponent": predicted_exponent(complexity[m]["time"]),
                 "predicted_memory_exponent": mem_exp[m], "points": {}}
        for key, field in (("fwd", "fwd_ms"), ("fwdbwd", "fwdbwd_ms"), ("memory", "peak_mib")):
            slope, used = fit_exponent([(x["n"], x[field]) for x in r])
            entry[f"{key}_exponent"] = slope
            entry["points"][key] = [[nn, v] for nn, v in used]
        fits[m] = entry
    all_rows = [x for m in methods for x in rows[m]]
    settings = {"n": list(ns), "methods": list(methods), "rounds": rounds, "d_model": d_model, "heads": heads,
                "batch": 1, "dtype": "float32", "device": "cpu", "max_gib": max_gib, "max_seconds": max_seconds,
                "quick": quick, "torch_threads": threads, "numba_threads": numba.get_num_threads(),
                "min_sample_s": MIN_SAMPLE_S,
                "fit_rule": FIT_RULE, "memory": "peak RSS growth of one call in a fresh process"
                if probe is not None else "not measured",
                "options": {m: DEFAULTS.get("local" if m == FLEX else m, {}) for m in methods}}
    cmd = _command(ns, methods, rounds, d_model, heads, max_gib, max_seconds, out, quick)
    report = new_report(cmd, settings=settings, rows=all_rows, fits=fits, complexity=complexity,
                        wall_s=time.time() - t_start)
    write_report(report, out, "methods", _plot, _readme)
    return report


# ----------------------------------------------------------------------------------------------
# plot and README


def _plot(report, path):
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    methods = report["settings"]["methods"]
    fig, axes = plt.subplots(1, 3, figsize=(17, 5.2))
    cmap = plt.get_cmap("tab20")
    markers = "os^vD<>phX*P8d"
    panels = (("fwd_ms", "median forward ms"), ("fwdbwd_ms", "median forward + backward ms"),
              ("peak_mib", "peak memory growth, MiB (one call)"))
    for ax, (field, label) in zip(axes, panels):
        firsts = []
        for i, m in enumerate(methods):
            pts = [(r["n"], r[field]) for r in report["rows"] if r["method"] == m and r[field] and r[field] > 0]
            if pts:
                ax.plot(*zip(*pts), marker=markers[i % len(markers)], ms=4, lw=1.2, color=cmap(i % 20), label=m)
                firsts.append(pts[0])
        if firsts:  # reference slopes through the geometric mean of the first points
            n0 = min(p[0] for p in firsts)
            y0 = math.exp(sum(math.log(p[1]) for p in firsts) / len(firsts))
            n1 = max(r["n"] for r in report["rows"])
            xs = [n0, n1]
            ax.plot(xs, [y0 * (x / n0) for x in xs], "k--", lw=0.8, label="slope 1 (n)")
            ax.plot(xs, [y0 * (x / n0) ** 2 for x in xs], "k:", lw=0.8, label="slope 2 (n^2)")
            ax.set(xscale="log", yscale="log")
        ax.set(xlabel="sequence length n", ylabel=label, title=label)
    if any(ax.get_legend_handles_labels()[0] for ax in axes):
        axes[0].legend(fontsize=7, ncol=2)
    s, mach = report["settings"], report.get("machine", {})
    fig.suptitle(f"attention layers d_model={s['d_model']}, {s['heads']} heads, batch 1, float32, CPU "
                 f"({mach.get('platform')}, {mach.get('cpu_count')} CPUs, {s['torch_threads']} torch threads), "
                 f"{report['date']}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _readme(report) -> str:
    s, mach = report["settings"], report.get("machine", {})
    methods = s["methods"]
    rows = report["rows"]
    by = {(r["method"], r["n"]): r for r in rows}
    common = [n for n in s["n"] if all(by.get((m, n), {}).get("fwd_ms") is not None for m in methods)]
    n_common = max(common) if common else None
    lines = ["# Every attention method as a layer: time and memory against n", "", "Made by (from the repository root):",
             "", "```", report["command"], "```", "",
             f"on {mach.get('platform')} ({mach.get('cpu_count')} CPUs, {mach.get('cpu_model')}), torch "
             f"{mach.get('torch')} with {s['torch_threads']} threads, {report['date']}; {report['wall_s']:.0f} s. "
             f"Layers `x [1, n, {s['d_model']}] -> [1, n, {s['d_model']}]`, {s['heads']} heads, float32, each method's "
             "defaults (`sparse_core.approx.methods.DEFAULTS`); causal except linformer. See the docstring of "
             "`sparse_core/bench/methods.py` for what is measured.", "",
             f"Times: median of {s['rounds']} interleaved rounds after a warm-up; forward under `no_grad`, forward + "
             "backward of `y.sum()` to x and the parameters. Memory: the peak resident-set growth of one forward + "
             "backward in a fresh process, after a warm-up call and a reset of the peak mark "
             "(the peak mark `VmHWM`, i.e. `ru_maxrss` without the marks of exited threads, minus the RSS just "
             "before the call): everything the call allocates "
             "(torch, numpy, gradients), not the parameters or x. Fitted exponents: " + s["fit_rule"] + ". "
             "FlexAttention (`flex`) runs forward only (no CPU backward in PyTorch); its memory is of one forward.", "",
             "| method | causal | predicted time | measured fwd exponent | measured fwd+bwd exponent | predicted memory | "
             f"measured memory exponent | fwd ms at n={_f(n_common, 'd')} | fwd+bwd ms at n={_f(n_common, 'd')} |",
             "|---|:-:|---|---:|---:|---|---:|---:|---:|"]
    for m in methods:
        fit, cx = report["fits"][m], report["complexity"][m]
        r = by.get((m, n_common), {}) if n_common else {}
        causal = next((x["causal"] for x in rows if x["method"] == m), causal_of(m))
        lines.append(f"| {m} | {'yes' if causal else 'no'} | {cx['time']} | {_f(fit['fwd_exponent'], '.2f')} | "
                     f"{_f(fit['fwdbwd_exponent'], '.2f')} | {cx['memory']} | {_f(fit['memory_exponent'], '.2f')} | "
                     f"{_f(r.get('fwd_ms'), '.2f')} | {_f(r.get('fwdbwd_ms'), '.2f')} |")
    lines += ["", "## Every point", "", "| method | n | fwd ms | fwd+bwd ms | peak MiB | skipped |", "|---|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['n']} | {_f(r['fwd_ms'], '.2f')} | {_f(r['fwdbwd_ms'], '.2f')} | "
                     f"{_f(r['peak_mib'], '.1f')} | {r['skipped'] or ''} |")
    skipped = [r for r in rows if r["skipped"]]
    lines += ["", f"{len(skipped)} of {len(rows)} points skipped"
              + (" (reasons in the table and in `methods.json`)." if skipped else ".")]
    if any(r.get("peak_reset") is False for r in rows):
        lines.append("Where `peak_reset` is false in the JSON, the peak mark could not be reset: that memory includes "
                     "one-time costs (compiles).")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------
# command line


def _positive_float(text: str) -> float:
    import argparse

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def add_arguments(parser, positive_int) -> None:
    parser.add_argument("--n", type=positive_int, nargs="+", default=None,
                        help=f"sequence lengths (default: {' '.join(map(str, DEFAULT_NS))}; "
                             f"with --quick: {' '.join(map(str, QUICK_NS))})")
    parser.add_argument("--rounds", type=positive_int, default=None,
                        help=f"interleaved timing rounds (default: {DEFAULT_ROUNDS}; with --quick: 1)")
    parser.add_argument("--d-model", type=positive_int, default=DEFAULT_D_MODEL, help="model width of the layers")
    parser.add_argument("--heads", type=positive_int, default=DEFAULT_HEADS, help="attention heads; must divide --d-model")
    parser.add_argument("--methods", nargs="+", default=None, metavar="METHOD",
                        help="only these methods (default: every method of sparse_core.approx.methods, and flex)")
    parser.add_argument("--max-gib", type=_positive_float, default=DEFAULT_MAX_GIB,
                        help="skip a (method, n) whose predicted peak memory exceeds this many GiB")
    parser.add_argument("--max-seconds", type=_positive_float, default=DEFAULT_MAX_SECONDS,
                        help="skip the longer lengths of a method once one call takes more than this many seconds")
    parser.add_argument("--quick", action="store_true",
                        help=f"a short check: n {' '.join(map(str, QUICK_NS))}, 1 round, into {QUICK_OUT}")
    parser.add_argument("--out", default=None,
                        help=f"folder for the JSON, the plot and the README (default: {DEFAULT_OUT}; "
                             f"with --quick: {QUICK_OUT})")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="torch and Numba threads (default: all cores; 1 gives steadier times on a busy machine)")
    parser.add_argument("--quiet", action="store_true", help="print only the final line")


def _settings_error(args):
    """None, or a one-line message naming the bad argument."""
    known = all_methods()
    for m in args.methods or ():
        if m not in known:
            return f"--methods: unknown method {m!r} (one of: {', '.join(known)})"
    if args.d_model % args.heads:
        return f"--heads: must divide --d-model {args.d_model}, got {args.heads}"
    if args.d_model // args.heads < 2:
        return f"--heads: at most --d-model / 2 = {args.d_model // 2} heads, got {args.heads}"
    if args.quick and args.out is not None:
        results = Path("results").resolve()
        out = Path(args.out).resolve()
        if (out == results or results in out.parents) and not (out == results / "tmp" or results / "tmp" in out.parents):
            return f"--out: --quick writes under results/tmp/ (or outside results/), not into committed results: {args.out}"
    return None


def main(args) -> int:
    message = _settings_error(args)
    if message:
        print(f"error: {message}", file=sys.stderr)
        return 2
    ns = args.n or list(QUICK_NS if args.quick else DEFAULT_NS)
    rounds = args.rounds or (1 if args.quick else DEFAULT_ROUNDS)
    out = args.out or (QUICK_OUT if args.quick else DEFAULT_OUT)
    methods = list(dict.fromkeys(args.methods)) if args.methods else None
    if args.threads:
        import numba
        import torch

        torch.set_num_threads(args.threads)
        numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    report = run_methods_bench(ns, methods, rounds, args.d_model, args.heads, args.max_gib, args.max_seconds, out,
                               log=None if args.quiet else print, quick=args.quick)
    skipped = sum(1 for r in report["rows"] if r["skipped"])
    print(f"wrote {Path(out) / 'methods.json'}, methods.png and README.md ({report['wall_s']:.0f} s; "
          f"{skipped} of {len(report['rows'])} points skipped)")
    return 0


if __name__ == "__main__":  # the memory subprocess: python -m sparse_core.bench.methods --probe '<json>'
    if len(sys.argv) == 3 and sys.argv[1] == "--probe":
        try:
            result = _probe(json.loads(sys.argv[2]))
        except Exception as e:  # noqa: BLE001 -- reported to the parent, which records it
            result = {"peak_bytes": None, "error": _error(e), "peak_reset": None, "of": None}
        print(json.dumps(result), flush=True)
        sys.exit(0 if result.get("error") is None else 1)
    print("usage: python -m sparse_core bench methods --help (this module's own entry is the memory subprocess)",
          file=sys.stderr)
    sys.exit(2)
