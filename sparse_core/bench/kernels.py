"""Block-sparse attention kernels against PyTorch on the CPU: dense SDPA and compiled FlexAttention.

Two sweeps, every implementation timed in the same process and *interleaved* round by round
(so a slow period of the machine hits all of them):

* a length sweep at about 12.5% block density (causal sliding window of ``n / 8`` tokens);
* a density sweep at ``--density-n`` tokens (causal windows giving ~25% .. ~3% of the blocks).

Per configuration and round: ``torch.mm`` of two 2048x2048 float32 matrices (the in-run matmul
peak), dense SDPA, ``torch.compile(flex_attention)`` with the same block mask (forward only: its
CPU backward is not supported by PyTorch), and ours -- forward, and forward + backward.
Reported: median ms; GFLOP/s on the kept blocks (``layout.flops(d)``, backward counted as 2.5x
the forward as usual); that rate as a fraction of the in-run matmul peak; speed-ups as the
median of per-round ratios; host memory our op allocates (tracemalloc peak, numpy buffers:
padded tiles and outputs) next to the size of q, k, v. Writes ``kernels.json``, ``kernels.png``
and ``README.md``. It only measures; nothing is asserted.
"""
from __future__ import annotations

import shlex
import time
import warnings
from pathlib import Path

from .report import add_attention_arguments, new_report, write_report

HELP = "time block-sparse attention against dense SDPA and compiled FlexAttention"
DEFAULT_NS = (1024, 2048, 4096, 8192, 16384)
DEFAULT_OUT = "results/kernels"


def _median(xs):
    import numpy as np

    return float(np.median(xs)) if xs else None


def _config(n, window, block_size, heads, d, rounds, flex, log):
    import numpy as np
    import torch

    from .. import patterns as P
    from .timing import peak_traced_bytes
    from ..attention.ops import block_sparse_attention

    pattern = P.sliding_window(window, causal=True)
    layout = pattern.to_layout(n, n, block_size, 1)
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, heads, n, d, generator=g) for _ in range(3))
    qg, kg, vg = (x.clone().requires_grad_() for x in (q, k, v))
    a = torch.randn(2048, 2048, generator=g)
    fl_f = layout.flops(d) * heads

    def t(fn):
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    def sdpa():
        with torch.no_grad():
            torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=False)

    def sdpa_fb():
        torch.nn.functional.scaled_dot_product_attention(qg, kg, vg).sum().backward()

    def ours():
        with torch.no_grad():
            block_sparse_attention(q, k, v, layout)

    def ours_fb():
        block_sparse_attention(qg, kg, vg, layout).sum().backward()

    # The same number of tile products as our forward (the same micro-kernels), with no mask and no
    # softmax: what the tile products alone reach.
    from ..kernels import cpu as cpu_kernels
    from ..kernels.microkernels import call

    n_qb, n_kb = layout.n_qb, layout.n_kb
    per_row = max(1, round(layout.nnz / (layout.n_heads * n_qb)))
    Bp, dvp = -(-block_size // cpu_kernels.CC) * cpu_kernels.CC, -(-d // cpu_kernels.CC) * cpu_kernels.CC
    qt = np.ascontiguousarray(np.random.default_rng(0).standard_normal((heads, n_qb * Bp, d), np.float32))
    kTt = np.ascontiguousarray(np.random.default_rng(1).standard_normal((heads, n_kb, d, Bp), np.float32))
    vtt = np.ascontiguousarray(np.random.default_rng(2).standard_normal((heads, n_kb, Bp, dvp), np.float32))
    fl_tiles = 4.0 * Bp * Bp * d * heads * n_qb * per_row

    def tiles_only():
        call(cpu_kernels.tile_products, qt, kTt, vtt, per_row)

    fns = {"mm": lambda: a @ a, "tiles": tiles_only, "sdpa_fwd": sdpa, "ours_fwd": ours, "sdpa_fwdbwd": sdpa_fb, "ours_fwdbwd": ours_fb}
    if flex:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            bm = create_block_mask(pattern.mask_mod, None, heads, n, n, device="cpu", BLOCK_SIZE=128)
            compiled = torch.compile(flex_attention)

        def flex_fwd():
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                compiled(q, k, v, block_mask=bm)

        fns["flex_fwd"] = flex_fwd
    for fn in fns.values():  # warm-up: compile numba / inductor, fault in memory
        fn()
    samples = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            samples[name].append(t(fn))
    peak = [2 * 2048**3 / s for s in samples["mm"]]
    row = {
        "n": n, "window": window, "block_size": block_size, "heads": heads, "d": d,
        "block_density": layout.block_density, "kept_gflop_fwd": fl_f / 1e9,
        "ms": {name: 1e3 * _median(s) for name, s in samples.items()},
        "matmul_peak_gflops": _median(peak) / 1e9,
    }
    row["tile_products_fraction_of_peak"] = _median([fl_tiles / s / p for s, p in zip(samples["tiles"], peak)])
    f_rate = [fl_f / s for s in samples["ours_fwd"]]
    b_rate = [2.5 * fl_f / (fb - f) for fb, f in zip(samples["ours_fwdbwd"], samples["ours_fwd"]) if fb > f]
    row["ours_fwd_gflops"] = _median(f_rate) / 1e9
    row["ours_bwd_gflops"] = _median(b_rate) / 1e9 if b_rate else None
    row["ours_fwd_fraction_of_peak"] = _median([r / p for r, p in zip(f_rate, peak)])
    row["ours_bwd_fraction_of_peak"] = _median([r / p for r, p in zip(b_rate, peak)]) if b_rate else None
    row["speedup_fwd_vs_sdpa"] = _median([s / o for s, o in zip(samples["sdpa_fwd"], samples["ours_fwd"])])
    row["speedup_fwdbwd_vs_sdpa"] = _median([s / o for s, o in zip(samples["sdpa_fwdbwd"], samples["ours_fwdbwd"])])
    row["speedup_fwd_vs_flex"] = (_median([s / o for s, o in zip(samples["flex_fwd"], samples["ours_fwd"])])
                                  if flex else None)
    row["target_speedup_fwd_vs_sdpa"] = 0.8 / layout.block_density
    qn, kn, vn = (x.numpy() for x in (q, k, v))
    row["ours_fwd_host_peak_bytes"] = peak_traced_bytes(lambda: block_sparse_attention(qn, kn, vn, layout))
    row["qkv_bytes"] = 3 * q.numel() * 4
    if log:
        log(f"n={n:6d} density={layout.block_density:.3f}: sdpa {row['ms']['sdpa_fwd']:.1f} ms, "
            + (f"flex {row['ms']['flex_fwd']:.1f} ms, " if flex else "")
            + f"ours {row['ms']['ours_fwd']:.1f} ms ({row['ours_fwd_fraction_of_peak']:.2f} of peak), "
            f"x{row['speedup_fwd_vs_sdpa']:.1f} vs sdpa (target x{row['target_speedup_fwd_vs_sdpa']:.1f})")
    return row


def run_kernels(ns=DEFAULT_NS, density_n=4096, block_size=128, heads=8, d=64, rounds=3, out=DEFAULT_OUT,
                flex=True, log=print):
    t0 = time.time()
    length = [_config(n, max(block_size, n // 8 - block_size), block_size, heads, d, rounds, flex, log) for n in ns]
    density = [_config(density_n, w, block_size, heads, d, rounds, flex, log)
                for w in (density_n // 4, density_n // 8, density_n // 16, density_n // 32)]
    cmd = (f"python -m sparse_core bench kernels --n {' '.join(map(str, ns))} --density-n {density_n} "
           f"--block-size {block_size} --heads {heads} --d {d} --rounds {rounds} --out {shlex.quote(str(out))}"
           + ("" if flex else " --no-flex"))
    report = new_report(cmd, length_sweep=length, density_sweep=density, wall_s=time.time() - t0)
    write_report(report, out, "kernels", _plot, _readme)
    return report


def _plot(report, path):
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    L = report["length_sweep"]
    ns = [r["n"] for r in L]
    for key, label in (("sdpa_fwd", "dense SDPA"), ("flex_fwd", "compiled FlexAttention"), ("ours_fwd", "ours")):
        if key in L[0]["ms"]:
            axes[0].plot(ns, [r["ms"][key] for r in L], "o-", label=label)
    axes[0].set(xscale="log", yscale="log", xlabel="sequence length n", ylabel="median forward ms",
                title="forward time, ~12.5% block density")
    axes[0].legend()
    D = report["density_sweep"]
    inv = [1 / r["block_density"] for r in D]
    axes[1].plot(inv, [r["speedup_fwd_vs_sdpa"] for r in D], "o-", label="ours vs SDPA (forward)")
    axes[1].plot(inv, [r["speedup_fwdbwd_vs_sdpa"] for r in D], "s-", label="ours vs SDPA (fwd+bwd)")
    axes[1].plot(inv, inv, "k:", label="ideal = 1/density")
    axes[1].plot(inv, [0.8 * x for x in inv], "k--", lw=0.8, label="target 0.8/density")
    axes[1].set(xlabel="1 / block density", ylabel="speed-up", title=f"n = {D[0]['n']}")
    axes[1].legend(fontsize=8)
    axes[2].plot(ns, [r["ours_fwd_fraction_of_peak"] for r in L], "o-", label="forward")
    axes[2].plot(ns, [r["ours_bwd_fraction_of_peak"] or 0 for r in L], "s-", label="backward (2.5x fwd FLOPs)")
    axes[2].axhline(0.7, color="k", ls="--", lw=0.8, label="target fwd 0.70")
    axes[2].axhline(0.5, color="k", ls=":", lw=0.8, label="target bwd 0.50")
    axes[2].set(xscale="log", ylim=(0, 1), xlabel="sequence length n", ylabel="fraction of in-run matmul peak",
                title="GFLOP/s on kept blocks / torch.mm peak")
    axes[2].legend(fontsize=8)
    fig.suptitle(f"{report['machine']['platform']}, {report['machine']['cpu_count']} CPUs, {report['date']}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _readme(report) -> str:
    lines = ["# Block-sparse kernel benchmark", "", "Made by (from the repository root):", "", "```",
             report["command"], "```", "", f"on {report['machine']['platform']} ({report['machine']['cpu_count']} CPUs), "
             f"torch {report['machine']['torch']}, {report['date']}; {report['wall_s']:.0f} s. See the docstring of "
             "`sparse_core/bench/kernels.py` for what is measured. FlexAttention's backward is not supported on CPU.", "",
             "| sweep | n | block density | SDPA fwd ms | Flex fwd ms | ours fwd ms | fwd / peak | bwd / peak | "
             "tiles only / peak | x SDPA fwd (target) | x SDPA fwd+bwd | x Flex fwd |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]

    def f(x, fmt):
        return "-" if x is None else format(x, fmt)

    for name in ("length_sweep", "density_sweep"):
        for r in report[name]:
            lines.append(f"| {name.split('_')[0]} | {r['n']} | {r['block_density']:.3f} | {r['ms']['sdpa_fwd']:.1f} | "
                         f"{f(r['ms'].get('flex_fwd'), '.1f')} | {r['ms']['ours_fwd']:.1f} | "
                         f"{r['ours_fwd_fraction_of_peak']:.2f} | {f(r['ours_bwd_fraction_of_peak'], '.2f')} | "
                         f"{f(r.get('tile_products_fraction_of_peak'), '.2f')} | {r['speedup_fwd_vs_sdpa']:.1f} ({r['target_speedup_fwd_vs_sdpa']:.1f}) | "
                         f"{r['speedup_fwdbwd_vs_sdpa']:.1f} | {f(r['speedup_fwd_vs_flex'], '.2f')} |")
    lines += ["", "*tiles only*: the same number of tile products as our forward (`Q K^T` and `P V` per kept",
              "block, by the same register-blocked micro-kernels, `kernels.cpu.tile_products`), without the mask and",
              "the softmax -- what the tile products alone reach.",
              "", "## Targets", ""] + _targets(report)
    return "\n".join(lines) + "\n"


def _targets(report):
    """One line per target: the range measured, and whether every configuration meets it."""
    rows = report["length_sweep"] + report["density_sweep"]
    big = [r for r in rows if r["n"] >= 4096]

    def rng(values):
        values = [v for v in values if v is not None]
        return f"{min(values):.2f} .. {max(values):.2f}" if values else "n/a"

    def verdict(values, goal):
        values = [v for v in values if v is not None]
        if not values:
            return "not measured"
        return "met" if min(values) >= goal else f"not met in {sum(v < goal for v in values)} of {len(values)}"

    fwd = [r["ours_fwd_fraction_of_peak"] for r in rows]
    bwd = [r["ours_bwd_fraction_of_peak"] for r in rows]
    tiles = [r.get("tile_products_fraction_of_peak") for r in rows]
    vs = [r["speedup_fwd_vs_sdpa"] / r["target_speedup_fwd_vs_sdpa"] for r in big]
    flex = [r["speedup_fwd_vs_flex"] for r in rows]
    extra = [(r["ours_fwd_host_peak_bytes"] - r["qkv_bytes"]) / 2**20 for r in rows]
    nn = [r["n"] ** 2 * 4 / 2**20 for r in rows]
    return [
        f"* forward >= 0.70 of the matmul peak: {rng(fwd)} ({verdict(fwd, 0.70)}); the tile products alone "
        f"reach {rng(tiles)}.",
        f"* backward >= 0.50 of the matmul peak: {rng(bwd)} ({verdict(bwd, 0.50)}).",
        f"* forward speed-up over SDPA >= 0.8 / density at n >= 4096: achieved / target = {rng(vs)} "
        f"({verdict(vs, 1.0)}).",
        f"* >= 1.7x compiled FlexAttention (forward): {rng(flex)} ({verdict(flex, 1.7)}).",
        f"* memory beyond q, k, v allocated by our forward: {rng(extra)} MiB, against one n x n float32 score "
        f"matrix of {rng(nn)} MiB per head.",
    ]


def add_arguments(parser, positive_int) -> None:
    parser.add_argument("--n", type=positive_int, nargs="+", default=list(DEFAULT_NS), help="lengths of the length sweep")
    parser.add_argument("--density-n", type=positive_int, default=4096, help="length of the density sweep")
    add_attention_arguments(parser, positive_int, rounds=3, out=DEFAULT_OUT)


def main(args) -> int:
    report = run_kernels(args.n, args.density_n, args.block_size, args.heads, args.d, args.rounds, args.out,
                         flex=not args.no_flex, log=None if args.quiet else print)
    print(f"wrote {Path(args.out) / 'kernels.json'}, kernels.png and README.md ({report['wall_s']:.0f} s)")
    return 0
