"""Block-sparse attention on a CUDA GPU: our Numba CUDA kernels against SDPA and FlexAttention.

Needs a CUDA GPU (it exits with a message without one). Configurations: causal sliding windows of
``n / f`` tokens (``f`` in ``--fractions``, giving about ``1/f`` of the blocks), one layout
shared by the heads, float32 inputs ``[batch, heads, n, d]``:

* a length sweep over ``--n`` at ``f = 8`` (~12.5% of the blocks);
* a density sweep at each length in ``--density-n`` over every ``f`` (~25% .. ~3%).

Per configuration and round, interleaved (a slow period of the GPU hits every implementation):
ours forward and forward + backward (:func:`sparse_core.attention.ops.block_sparse_attention` on CUDA
tensors), dense ``scaled_dot_product_attention`` in float32 and in bfloat16, forward and forward
+ backward, and ``torch.compile(flex_attention)`` with the same block mask (``BLOCK_SIZE`` = our
block size), forward and forward + backward, in float32. A sample is the wall time of ``reps``
calls followed by ``torch.cuda.synchronize()`` divided by ``reps`` (host overhead included:
Numba's launch and array-interface costs are part of the op).

Reported: median ms; GFLOP/s on the kept blocks (``layout.flops(d) * batch * heads``; backward
counted as 2.5x the forward); that rate as a fraction of (a) the GPU's float32 CUDA-core peak,
``SMs x clock x FP32 lanes per SM x 2`` from the device's properties (lanes per SM from the
compute capability, :data:`FP32_LANES_PER_SM`) and (b) a float32 matmul measured in the same run
with TF32 off (``torch.backends.cuda.matmul.allow_tf32 = False``); speed-ups as medians of
per-round ratios. Writes ``cuda.json``, ``cuda.png`` and ``README.md`` with the device name and
the command. It only measures; nothing is asserted.
"""
from __future__ import annotations

import shlex
import sys
import time
import warnings
from pathlib import Path

from .report import add_attention_arguments, new_report, write_report

HELP = "time the CUDA kernels against SDPA (fp32, bf16) and compiled FlexAttention on a GPU"
DEFAULT_NS = (2048, 4096, 8192, 16384, 32768)
DEFAULT_DENSITY_NS = (8192, 32768)
DEFAULT_FRACTIONS = (4, 8, 16, 32)
DEFAULT_OUT = "results/cuda"
IMPLS = ("ours_fwd", "ours_fwdbwd", "sdpa32_fwd", "sdpa32_fwdbwd", "sdpa16_fwd", "sdpa16_fwdbwd",
         "flex_fwd", "flex_fwdbwd")

#: FP32 CUDA-core lanes per SM by compute capability (CUDA C++ Programming Guide, "Arithmetic
#: Instructions" throughput table: 32-bit floating-point add/multiply/multiply-add per clock per SM).
FP32_LANES_PER_SM = {(6, 0): 64, (6, 1): 128, (7, 0): 64, (7, 5): 64, (8, 0): 64, (8, 6): 128, (8, 7): 128,
                     (8, 9): 128, (9, 0): 128, (10, 0): 128, (10, 3): 128, (12, 0): 128}


def gpu_unavailable_reason() -> str | None:
    """None when a CUDA GPU can run the benchmark, else why not."""
    import torch

    from ..kernels.cuda import available

    if not torch.cuda.is_available():
        return "torch.cuda.is_available() is False (no CUDA GPU, or a CPU-only torch build)"
    ok, reason = available()
    return None if ok else reason


def fp32_peak(sm_count: int, clock_khz: int, capability: tuple[int, int]) -> dict:
    """float32 CUDA-core peak FLOP/s = SMs x clock x lanes per SM x 2 (an FMA is 2 FLOPs)."""
    lanes = FP32_LANES_PER_SM.get(tuple(capability))
    flops = None if lanes is None else sm_count * clock_khz * 1e3 * lanes * 2
    return {"sm_count": sm_count, "clock_mhz": clock_khz / 1e3, "fp32_lanes_per_sm": lanes,
            "fp32_peak_tflops": None if flops is None else flops / 1e12,
            "formula": "SMs x clock x FP32 lanes per SM x 2"}


def device_info() -> dict:
    """Name, capability and the float32 CUDA-core peak of the current GPU."""
    import numba
    import torch
    from numba import cuda

    dev = cuda.get_current_device()
    cap = tuple(dev.compute_capability)
    info = {"name": torch.cuda.get_device_name(), "capability": list(cap), "torch": torch.__version__,
            "cuda": torch.version.cuda, "numba": numba.__version__}
    info.update(fp32_peak(dev.MULTIPROCESSOR_COUNT, dev.CLOCK_RATE, cap))
    return info


def _median(xs):
    import numpy as np

    xs = [x for x in xs if x is not None]
    return float(np.median(xs)) if xs else None


def _configs(ns, density_ns, fractions):
    """(sweep, n, window) without repeats; a length-sweep point that is also a density point is kept once."""
    seen, out = set(), []
    for sweep, pairs in (("length", [(n, 8) for n in ns]), ("density", [(n, f) for n in density_ns for f in fractions])):
        for n, f in pairs:
            if (n, n // f) not in seen:
                seen.add((n, n // f))
                out.append((sweep, n, n // f))
    return out


def _measure(n, window, block_size, batch, heads, d, rounds, flex, min_time=0.02):
    """Samples (seconds per call) of every implementation, interleaved round by round (GPU only)."""
    import torch
    import torch.nn.functional as F

    from .. import patterns as P
    from ..attention.ops import block_sparse_attention

    pattern = P.sliding_window(window, causal=True)
    layout = pattern.to_layout(n, n, block_size, 1)
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(batch, heads, n, d, device="cuda", generator=g) for _ in range(3))
    qg, kg, vg = (x.clone().requires_grad_() for x in (q, k, v))
    q16, k16, v16 = (x.to(torch.bfloat16) for x in (q, k, v))
    q16g, k16g, v16g = (x.clone().requires_grad_() for x in (q16, k16, v16))
    do = torch.randn(batch, heads, n, d, device="cuda", generator=g)
    do16 = do.to(torch.bfloat16)

    def fwd(fn, *a):
        def run():
            with torch.no_grad():
                fn(*a)
        return run

    def fwdbwd(fn, grad, *a):
        def run():
            for x in a:
                x.grad = None
            fn(*a).backward(grad)
        return run

    fns = {
        "ours_fwd": fwd(lambda a, b, c: block_sparse_attention(a, b, c, layout), q, k, v),
        "ours_fwdbwd": fwdbwd(lambda a, b, c: block_sparse_attention(a, b, c, layout), do, qg, kg, vg),
        "sdpa32_fwd": fwd(F.scaled_dot_product_attention, q, k, v),
        "sdpa32_fwdbwd": fwdbwd(F.scaled_dot_product_attention, do, qg, kg, vg),
        "sdpa16_fwd": fwd(F.scaled_dot_product_attention, q16, k16, v16),
        "sdpa16_fwdbwd": fwdbwd(F.scaled_dot_product_attention, do16, q16g, k16g, v16g),
    }
    if flex:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            bm = create_block_mask(pattern.mask_mod, None, None, n, n, device="cuda", BLOCK_SIZE=block_size)
        compiled = _compiled_flex(flex_attention)
        fns["flex_fwd"] = fwd(lambda a, b, c: compiled(a, b, c, block_mask=bm), q, k, v)
        fns["flex_fwdbwd"] = fwdbwd(lambda a, b, c: compiled(a, b, c, block_mask=bm), do, qg, kg, vg)
    reps = {}
    for name, fn in fns.items():  # warm-up (Numba and inductor compile here), then calls per sample
        fn()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        reps[name] = max(1, min(100, int(min_time / max(time.perf_counter() - t0, 1e-6))))
    samples = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(reps[name]):
                fn()
            torch.cuda.synchronize()
            samples[name].append((time.perf_counter() - t0) / reps[name])
    return layout, samples


_FLEX = {}


def _compiled_flex(flex_attention):
    import torch

    if "fn" not in _FLEX:
        _FLEX["fn"] = torch.compile(flex_attention)
    return _FLEX["fn"]


def _matmul_fp32(rounds, size=8192):
    """float32 matmul FLOP/s with TF32 off (one sample per round)."""
    import torch

    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        a = torch.randn(size, size, device="cuda")
        a @ a
        out = []
        for _ in range(rounds):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            a @ a
            torch.cuda.synchronize()
            out.append(2 * size**3 / (time.perf_counter() - t0))
        return out
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old


def summarize(sweep, n, window, layout, samples, batch, heads, d, peak_flops, matmul_flops):
    """One result row from the samples of one configuration (pure; no GPU needed)."""
    S = samples
    fl_f = layout.flops(d) * batch * heads
    ratio = lambda a, b: _median([x / y for x, y in zip(S[a], S[b])]) if a in S and b in S else None  # noqa: E731
    f_rate = [fl_f / s for s in S["ours_fwd"]]
    b_rate = [2.5 * fl_f / (fb - f) for fb, f in zip(S["ours_fwdbwd"], S["ours_fwd"]) if fb > f]
    row = {
        "sweep": sweep, "n": n, "window": window, "block_size": layout.block_size, "batch": batch, "heads": heads,
        "d": d, "block_density": layout.block_density, "kept_gflop_fwd": fl_f / 1e9,
        "ms": {name: 1e3 * _median(s) for name, s in S.items()},
        "ours_fwd_tflops": _median(f_rate) / 1e12,
        "ours_bwd_tflops": _median(b_rate) / 1e12 if b_rate else None,
        "ours_fwd_fraction_of_fp32_peak": _median(f_rate) / peak_flops if peak_flops else None,
        "ours_bwd_fraction_of_fp32_peak": _median(b_rate) / peak_flops if peak_flops and b_rate else None,
        "ours_fwd_fraction_of_fp32_matmul": _median([r / m for r, m in zip(f_rate, matmul_flops)]),
    }
    for other in ("sdpa32", "sdpa16", "flex"):
        row[f"speedup_fwd_vs_{other}"] = ratio(f"{other}_fwd", "ours_fwd")
        row[f"speedup_fwdbwd_vs_{other}"] = ratio(f"{other}_fwdbwd", "ours_fwdbwd")
    # the targets: forward >= 30% of the fp32 CUDA-core peak on kept FLOPs; faster than fp32 dense
    # SDPA at block density <= 12.5% and n >= 8192
    row["meets_fwd_peak_target"] = (row["ours_fwd_fraction_of_fp32_peak"] >= 0.30
                                    if row["ours_fwd_fraction_of_fp32_peak"] is not None else None)
    row["sdpa_target_applies"] = bool(layout.block_density <= 0.13 and n >= 8192)
    row["faster_than_sdpa32_fwd"] = row["speedup_fwd_vs_sdpa32"] > 1 if row["speedup_fwd_vs_sdpa32"] else None
    return row


def run_cuda_bench(ns=DEFAULT_NS, density_ns=DEFAULT_DENSITY_NS, fractions=DEFAULT_FRACTIONS, block_size=128,
                   batch=1, heads=8, d=64, rounds=5, out=DEFAULT_OUT, flex=True, log=print, *,
                   measure=None, device=None, matmul=None):
    """Run every configuration and write ``cuda.json``, ``cuda.png`` and ``README.md``.

    ``measure(n, window, block_size, batch, heads, d, rounds, flex) -> (layout, samples)``,
    ``device`` (a :func:`device_info` dict) and ``matmul(rounds) -> [FLOP/s]`` default to the GPU
    measurements; tests pass stand-ins to check the bookkeeping without a GPU.
    """
    t0 = time.time()
    measure = measure or _measure
    device = device or device_info()
    matmul = matmul or _matmul_fp32
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    peak = device["fp32_peak_tflops"] * 1e12 if device.get("fp32_peak_tflops") else None
    rows, matmul_all = [], []
    for sweep, n, window in _configs(ns, density_ns, fractions):
        mm = matmul(rounds)
        matmul_all += mm
        layout, samples = measure(n, window, block_size, batch, heads, d, rounds, flex)
        row = summarize(sweep, n, window, layout, samples, batch, heads, d, peak, mm)
        row["fp32_matmul_tflops"] = _median(mm) / 1e12
        rows.append(row)
        if log:
            fl = row["ms"].get("flex_fwd")
            log(f"n={n:6d} density={row['block_density']:.3f}: ours {row['ms']['ours_fwd']:.2f} ms "
                f"({row['ours_fwd_tflops']:.1f} TFLOP/s, {row['ours_fwd_fraction_of_fp32_peak'] or 0:.2f} of fp32 peak), "
                f"sdpa fp32 {row['ms']['sdpa32_fwd']:.2f} ms, bf16 {row['ms']['sdpa16_fwd']:.2f} ms"
                + (f", flex {fl:.2f} ms" if fl is not None else ""))
    cmd = (f"python -m sparse_core bench cuda --n {' '.join(map(str, ns))} --density-n {' '.join(map(str, density_ns))} "
           f"--fractions {' '.join(map(str, fractions))} --block-size {block_size} --batch {batch} --heads {heads} "
           f"--d {d} --rounds {rounds} --out {shlex.quote(str(out))}" + ("" if flex else " --no-flex"))
    report = new_report(cmd, machine=False, device=device,
                        fp32_matmul_tflops_no_tf32=_median(matmul_all) / 1e12 if matmul_all else None,
                        rows=rows, wall_s=time.time() - t0)
    write_report(report, out, "cuda", _plot, _readme)
    return report


def _plot(report, path):
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    L = [r for r in report["rows"] if r["sweep"] == "length"]
    labels = (("ours_fwd", "ours"), ("sdpa32_fwd", "SDPA fp32 (dense)"), ("sdpa16_fwd", "SDPA bf16 (dense)"),
              ("flex_fwd", "compiled Flex fp32"))
    if L:
        ns = [r["n"] for r in L]
        for key, label in labels:
            if key in L[0]["ms"]:
                axes[0].plot(ns, [r["ms"][key] for r in L], "o-", label=label)
        axes[0].set(xscale="log", yscale="log", xlabel="sequence length n", ylabel="median forward ms",
                    title="forward, ~12.5% of the blocks")
        axes[0].legend(fontsize=8)
        axes[2].plot(ns, [r["ours_fwd_fraction_of_fp32_peak"] or 0 for r in L], "o-", label="forward")
        axes[2].plot(ns, [r["ours_bwd_fraction_of_fp32_peak"] or 0 for r in L], "s-", label="backward (2.5x fwd FLOPs)")
    axes[2].axhline(0.3, color="k", ls="--", lw=0.8, label="target fwd 0.30")
    axes[2].set(xscale="log", ylim=(0, 1), xlabel="sequence length n", ylabel="fraction of fp32 CUDA-core peak",
                title="TFLOP/s on kept blocks / fp32 peak")
    axes[2].legend(fontsize=8)
    dens_ns = {r["n"] for r in report["rows"] if r["sweep"] == "density"}
    D = [r for r in report["rows"] if r["n"] in dens_ns]
    for n in sorted({r["n"] for r in D}):
        pts = sorted((r for r in D if r["n"] == n), key=lambda r: r["block_density"])
        inv = [1 / r["block_density"] for r in pts]
        axes[1].plot(inv, [r["speedup_fwd_vs_sdpa32"] for r in pts], "o-", label=f"fwd vs SDPA fp32, n={n}")
        axes[1].plot(inv, [r["speedup_fwdbwd_vs_sdpa32"] for r in pts], "s--", label=f"fwd+bwd vs SDPA fp32, n={n}")
    axes[1].axhline(1, color="k", lw=0.8)
    axes[1].set(xscale="log", yscale="log", xlabel="1 / block density", ylabel="speed-up", title="ours vs dense SDPA fp32")
    axes[1].legend(fontsize=7)
    dev = report["device"]
    fig.suptitle(f"{dev['name']}, {report['date']}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _readme(report) -> str:
    dev = report["device"]

    def f(x, fmt):
        return "-" if x is None else format(x, fmt)

    lines = ["# Block-sparse CUDA kernel benchmark", "", "Made by (from the repository root):", "", "```",
             report["command"], "```", "",
             f"on {dev['name']} (compute capability {'.'.join(map(str, dev['capability']))}, {dev['sm_count']} SMs, "
             f"{dev['clock_mhz']:.0f} MHz), torch {dev['torch']}, CUDA {dev['cuda']}, numba {dev['numba']}, "
             f"{report['date']}; {report['wall_s']:.0f} s. float32 CUDA-core peak {f(dev['fp32_peak_tflops'], '.1f')} "
             f"TFLOP/s ({dev['formula']}); float32 matmul measured in the run (TF32 off) "
             f"{f(report['fp32_matmul_tflops_no_tf32'], '.1f')} TFLOP/s. See the docstring of "
             "`sparse_core/bench/cuda.py` for what is measured.", "",
             "| sweep | n | block density | ours fwd ms | ours fwd+bwd ms | SDPA fp32 fwd ms | SDPA bf16 fwd ms | "
             "Flex fwd ms | fwd / fp32 peak | bwd / fp32 peak | x SDPA fp32 fwd | x SDPA fp32 fwd+bwd | "
             "x SDPA bf16 fwd | x Flex fwd | x Flex fwd+bwd |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in report["rows"]:
        ms = r["ms"]
        lines.append(f"| {r['sweep']} | {r['n']} | {r['block_density']:.3f} | {ms['ours_fwd']:.2f} | "
                     f"{ms['ours_fwdbwd']:.2f} | {ms['sdpa32_fwd']:.2f} | {ms['sdpa16_fwd']:.2f} | "
                     f"{f(ms.get('flex_fwd'), '.2f')} | {f(r['ours_fwd_fraction_of_fp32_peak'], '.2f')} | "
                     f"{f(r['ours_bwd_fraction_of_fp32_peak'], '.2f')} | {f(r['speedup_fwd_vs_sdpa32'], '.2f')} | "
                     f"{f(r['speedup_fwdbwd_vs_sdpa32'], '.2f')} | {f(r['speedup_fwd_vs_sdpa16'], '.2f')} | "
                     f"{f(r['speedup_fwd_vs_flex'], '.2f')} | {f(r['speedup_fwdbwd_vs_flex'], '.2f')} |")
    lines += ["", "Targets: forward >= 0.30 of the fp32 CUDA-core peak on kept FLOPs; faster than dense fp32 SDPA "
              "at block density <= 12.5% and n >= 8192."]
    return "\n".join(lines) + "\n"


def add_arguments(parser, positive_int) -> None:
    parser.add_argument("--n", type=positive_int, nargs="+", default=list(DEFAULT_NS),
                        help="lengths of the length sweep (~12.5%% of the blocks)")
    parser.add_argument("--density-n", type=positive_int, nargs="+", default=list(DEFAULT_DENSITY_NS),
                        help="lengths of the density sweep")
    parser.add_argument("--fractions", type=positive_int, nargs="+", default=list(DEFAULT_FRACTIONS),
                        help="window = n / f for each f (about 1/f of the blocks)")
    parser.add_argument("--batch", type=positive_int, default=1, help="sequences in the batch")
    add_attention_arguments(parser, positive_int, rounds=5, out=DEFAULT_OUT)


def main(args) -> int:
    reason = gpu_unavailable_reason()
    if reason is not None:
        print(f"error: `bench cuda` needs a CUDA GPU: {reason}", file=sys.stderr)
        return 2
    report = run_cuda_bench(args.n, args.density_n, args.fractions, args.block_size, args.batch, args.heads, args.d,
                            args.rounds, args.out, flex=not args.no_flex, log=None if args.quiet else print)
    print(f"wrote {Path(args.out) / 'cuda.json'}, cuda.png and README.md ({report['wall_s']:.0f} s)")
    return 0
