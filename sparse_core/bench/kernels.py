"""Block-sparse attention kernels against PyTorch on the CPU: dense SDPA and compiled FlexAttention.

Sections, every implementation of a section timed in the same process and *interleaved* round by
round (so a slow period of the machine hits all of them):

* a length sweep at about 12.5% block density (causal sliding window of ``n / 8`` tokens);
* a density sweep at ``--density-n`` tokens (causal windows giving ~25% .. ~3% of the blocks);
* grouped-query heads at ``--density-n`` (``--kv-heads``: key/value heads shared by the queries);
* decoding (:mod:`sparse_core.bench.decode`): 1..16 rows against a 2k..32k cache, tokens/s;
* the whole model (:mod:`sparse_core.bench.model_speed`): training tokens/s of GPT-NeoX with a
  local window against dense, next to the Amdahl prediction.

Per configuration and round: ``torch.mm`` of two 2048x2048 float32 matrices (the in-run matmul
peak), dense SDPA, ``torch.compile(flex_attention)`` with the same block mask (forward only: its
CPU backward is not supported by PyTorch), the shared reference kernel when its file is present
(``--reference``; forward only, no token mask, block-multiple lengths), the micro-kernel tile
products alone, and ours -- forward, and forward + backward. Reported: median ms; GFLOP/s on the
kept blocks (``layout.flops(d)``, backward counted as 2.5x the forward as usual); that rate as a
fraction of the in-run matmul peak; speed-ups as the median of per-round ratios; host memory our
op allocates (tracemalloc peak, numpy buffers: padded tiles and outputs) next to the size of q,
k, v. The roofline ceilings (:mod:`sparse_core.bench.ceilings`) are measured once per run: the
matmul peak, the micro-kernel's rate on cache-resident tiles and the memory bandwidth. Writes
``kernels.json``, ``kernels.png`` and ``README.md``. It only measures; nothing is asserted.
"""
from __future__ import annotations

import shlex
import time
import warnings
from pathlib import Path

from .report import fmt_or_dash as _f, add_attention_arguments, new_report, write_report

HELP = "time block-sparse attention against dense SDPA and compiled FlexAttention"
DEFAULT_NS = (1024, 2048, 4096, 8192, 16384)
DEFAULT_OUT = "results/kernels"


def _median(xs):
    import numpy as np

    return float(np.median(xs)) if xs else None


def _config(n, window, block_size, heads, d, rounds, flex, log, reference=None, kv_heads=None):
    import numpy as np
    import torch

    from .. import patterns as P
    from .timing import peak_traced_bytes
    from ..attention.ops import block_sparse_attention

    pattern = P.sliding_window(window, causal=True)
    layout = pattern.to_layout(n, n, block_size, 1)
    g = torch.Generator().manual_seed(0)
    kv_heads = heads if kv_heads is None else kv_heads
    gqa = kv_heads != heads
    q = torch.randn(1, heads, n, d, generator=g)
    k, v = (torch.randn(1, kv_heads, n, d, generator=g) for _ in range(2))
    qg, kg, vg = (x.clone().requires_grad_() for x in (q, k, v))
    a = torch.randn(2048, 2048, generator=g)
    fl_f = layout.flops(d) * heads

    def t(fn):
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    def sdpa():
        with torch.no_grad():
            torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=False, enable_gqa=gqa)

    def sdpa_fb():
        torch.nn.functional.scaled_dot_product_attention(qg, kg, vg, enable_gqa=gqa).sum().backward()

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
                compiled(q, k, v, block_mask=bm, enable_gqa=gqa)

        fns["flex_fwd"] = flex_fwd
    if reference is not None and n % block_size == 0 and not gqa:
        import numpy as np

        qn3, kn3, vn3 = (x[0].numpy() for x in (q, k, v))
        rp, ci = layout.indptr[0].astype(np.int64), layout.indices.astype(np.int64)

        def ref_fwd():
            reference(qn3, kn3, vn3, rp, ci, block_size)

        fns["reference_fwd"] = ref_fwd
    for fn in fns.values():  # warm-up: compile numba / inductor, fault in memory
        fn()
    samples = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            samples[name].append(t(fn))
    peak = [2 * 2048**3 / s for s in samples["mm"]]
    row = {
        "n": n, "window": window, "block_size": block_size, "heads": heads, "kv_heads": kv_heads, "d": d,
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
    row["speedup_fwd_vs_reference"] = (_median([r / o for r, o in zip(samples["reference_fwd"], samples["ours_fwd"])])
                                       if "reference_fwd" in samples else None)
    row["reference_fwd_fraction_of_peak"] = (_median([fl_f / r / p for r, p in zip(samples["reference_fwd"], peak)])
                                             if "reference_fwd" in samples else None)
    row["target_speedup_fwd_vs_sdpa"] = 0.8 / layout.block_density
    # bytes the forward moves at least: q and out once, each kept block's K and V tiles once per
    # query block, and the packing of K and V into tiles (read + write)
    nnz = layout.nnz * (heads // layout.n_heads)
    row["fwd_flops_per_byte"] = fl_f / (4.0 * (2 * heads * n * d + 2 * nnz * block_size * d + 4 * kv_heads * n * d))
    qn, kn, vn = (x.numpy() for x in (q, k, v))
    row["ours_fwd_host_peak_bytes"] = peak_traced_bytes(lambda: block_sparse_attention(qn, kn, vn, layout))
    row["qkv_bytes"] = (q.numel() + k.numel() + v.numel()) * 4
    if log:
        log(f"n={n:6d} density={layout.block_density:.3f}: sdpa {row['ms']['sdpa_fwd']:.1f} ms, "
            + (f"flex {row['ms']['flex_fwd']:.1f} ms, " if flex else "")
            + f"ours {row['ms']['ours_fwd']:.1f} ms ({row['ours_fwd_fraction_of_peak']:.2f} of peak), "
            f"x{row['speedup_fwd_vs_sdpa']:.1f} vs sdpa (target x{row['target_speedup_fwd_vs_sdpa']:.1f})")
    return row


DEFAULT_DECODE_CACHE = (2048, 4096, 8192, 16384, 32768)
DEFAULT_DECODE_ROWS = (1, 4, 16)
DEFAULT_MODEL_N = (2048, 4096, 8192)
DEFAULT_MODEL_PRESETS = ("tiny", "small")
DECODE_WINDOW = MODEL_WINDOW = 256


def _ceilings(block_size, d, rounds):
    """The roofline's ceilings, measured now: matmul peak, micro-kernel in cache, memory bandwidth."""
    import numpy as np

    from . import ceilings as C

    out = {}
    for name, (fn, flops) in (("matmul", C.matmul_peak()), ("microkernel", C.microkernel_peak(block_size, d))):
        fn()
        ts = []
        for _ in range(max(3, rounds)):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        out[f"{name}_gflops"] = flops / float(np.median(ts)) / 1e9
    out["memory_gb_per_s"] = C.memory_bandwidth() / 1e9
    return out


def run_kernels(ns=DEFAULT_NS, density_n=4096, block_size=128, heads=8, d=64, rounds=3, out=DEFAULT_OUT,
                flex=True, log=print, reference=None, kv_heads=(2, 1), decode_cache=DEFAULT_DECODE_CACHE,
                decode_rows=DEFAULT_DECODE_ROWS, model_n=DEFAULT_MODEL_N, model_presets=DEFAULT_MODEL_PRESETS):
    from . import ceilings as C
    from .decode import decode_case
    from .model_speed import model_case

    t0 = time.time()
    ref = C.load_reference(reference)
    ceil = _ceilings(block_size, d, rounds)
    if log:
        log(f"ceilings: torch.mm {ceil['matmul_gflops']:.0f} GFLOP/s, micro-kernel in cache "
            f"{ceil['microkernel_gflops']:.0f} GFLOP/s, memory {ceil['memory_gb_per_s']:.1f} GB/s"
            + ("" if ref is not None else " (no reference kernel)"))
    length = [_config(n, max(block_size, n // 8 - block_size), block_size, heads, d, rounds, flex, log, ref) for n in ns]
    density = [_config(density_n, w, block_size, heads, d, rounds, flex, log, ref)
               for w in (density_n // 4, density_n // 8, density_n // 16, density_n // 32)]
    gqa = [_config(density_n, density_n // 8, block_size, heads, d, rounds, flex, log, None, kvh)
           for kvh in kv_heads if kvh != heads and heads % kvh == 0]
    decode = []
    for S in decode_cache:
        for T in decode_rows:
            for kvh in (heads,) + ((min(kv_heads),) if kv_heads and T == 1 else ()):
                if heads % kvh:
                    continue
                row = decode_case(S, T, DECODE_WINDOW, block_size, heads, kvh, d, rounds)
                decode.append(row)
                if log:
                    log(f"decode cache={S:6d} rows={T:2d} kv_heads={kvh}: dense {row['tokens_per_s']['dense']:.0f} "
                        f"tok/s, ours {row['tokens_per_s']['ours']:.0f} tok/s (x{row['speedup_vs_dense']:.1f})")
    model = []
    for name in model_presets:
        for n in model_n:
            row = model_case(name, n, MODEL_WINDOW, block_size, rounds)
            model.append(row)
            if log:
                log(f"model {name} n={n}: dense {row['tokens_per_s']['dense']:.0f} tok/s, local "
                    f"{row['tokens_per_s']['local']:.0f} tok/s, x{row['speedup_measured']:.2f} "
                    f"(Amdahl x{row['speedup_amdahl']:.2f}, attention share {row['attention_share_dense']:.2f})")
    cmd = (f"python -m sparse_core bench kernels --n {' '.join(map(str, ns))} --density-n {density_n} "
           f"--block-size {block_size} --heads {heads} --d {d} --rounds {rounds} --out {shlex.quote(str(out))}"
           + ("" if flex else " --no-flex")
           + (f" --reference {shlex.quote(str(reference))}" if reference else " --reference none")
           + f" --kv-heads {' '.join(map(str, kv_heads)) or 'none'}"
           + f" --decode-cache {' '.join(map(str, decode_cache)) or 'none'}"
           + f" --decode-rows {' '.join(map(str, decode_rows))}"
           + f" --model-n {' '.join(map(str, model_n)) or 'none'}"
           + f" --model-presets {' '.join(model_presets) or 'none'}")
    report = new_report(cmd, ceilings=ceil, reference_kernel=str(reference) if ref is not None else None,
                        length_sweep=length, density_sweep=density, gqa=gqa, decode=decode, model=model,
                        wall_s=time.time() - t0)
    write_report(report, out, "kernels", _plot, _readme)
    return report


def _plot(report, path):
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(16, 9))
    axes = axes.ravel()
    L = report["length_sweep"]
    ns = [r["n"] for r in L]
    for key, label in (("sdpa_fwd", "dense SDPA"), ("flex_fwd", "compiled FlexAttention"),
                       ("reference_fwd", "reference kernel"), ("ours_fwd", "ours")):
        pts = [(r["n"], r["ms"][key]) for r in L if key in r["ms"]]
        if pts:
            axes[0].plot(*zip(*pts), "o-", label=label)
    axes[0].set(xscale="log", yscale="log", xlabel="sequence length n", ylabel="median forward ms",
                title="forward time, ~12.5% block density")
    axes[0].legend(fontsize=8)
    D = report["density_sweep"]
    inv = [1 / r["block_density"] for r in D]
    axes[1].plot(inv, [r["speedup_fwd_vs_sdpa"] for r in D], "o-", label="ours vs SDPA (forward)")
    axes[1].plot(inv, [r["speedup_fwdbwd_vs_sdpa"] for r in D], "s-", label="ours vs SDPA (fwd+bwd)")
    axes[1].plot(inv, inv, "k:", label="ideal = 1/density")
    axes[1].plot(inv, [0.8 * x for x in inv], "k--", lw=0.8, label="target 0.8/density")
    axes[1].set(xlabel="1 / block density", ylabel="speed-up", title=f"n = {D[0]['n']}")
    axes[1].legend(fontsize=8)
    rows = L + D
    axes[2].plot(ns, [r["ours_fwd_fraction_of_peak"] for r in L], "o-", label="forward")
    axes[2].plot(ns, [r["ours_bwd_fraction_of_peak"] or 0 for r in L], "s-", label="backward (2.5x fwd FLOPs)")
    axes[2].axhline(0.75, color="k", ls="--", lw=0.8, label="target fwd 0.75")
    axes[2].axhline(0.55, color="k", ls=":", lw=0.8, label="target bwd 0.55")
    top = max([1.0] + [r["ours_fwd_fraction_of_peak"] for r in rows])
    axes[2].set(xscale="log", ylim=(0, 1.1 * top), xlabel="sequence length n", ylabel="fraction of in-run torch.mm peak",
                title="GFLOP/s on kept blocks / torch.mm peak")
    axes[2].legend(fontsize=8)
    # roofline
    c = report["ceilings"]
    ax = axes[3]
    bw = c["memory_gb_per_s"]
    xs = [0.05 * 1.1 ** i for i in range(121)]  # 0.05 .. ~5000 FLOPs per byte
    for key, style, label in (("matmul_gflops", "k--", "torch.mm peak"), ("microkernel_gflops", "k-", "micro-kernel, tiles in cache")):
        ax.plot(xs, [min(c[key], bw * x) for x in xs], style, lw=0.9,
                label=f"{label} {c[key]:.0f} GFLOP/s (slope: memory {bw:.0f} GB/s)")
    ax.plot([r["fwd_flops_per_byte"] for r in rows], [r["ours_fwd_gflops"] for r in rows], "o", label="ours forward")
    ax.plot([r["fwd_flops_per_byte"] for r in rows if r["ours_bwd_gflops"]],
            [r["ours_bwd_gflops"] for r in rows if r["ours_bwd_gflops"]], "s", label="ours backward")
    dec = [r for r in report.get("decode", []) if r.get("flops_per_byte")]
    if dec:
        ax.plot([r["flops_per_byte"] for r in dec], [r["ours_gflops"] for r in dec], "^", label="ours decoding")
    ax.set(xscale="log", yscale="log", xlabel="FLOPs per byte moved (model)", ylabel="GFLOP/s",
           title="roofline (ceilings measured in this run)")
    ax.legend(fontsize=7)
    # decoding
    ax = axes[4]
    for T in sorted({r["rows"] for r in dec}):
        pts = [(r["cache"], r["speedup_vs_dense"]) for r in dec if r["rows"] == T and r["kv_heads"] == r["heads"]]
        ax.plot(*zip(*pts), "o-", label=f"{T} row{'s' if T > 1 else ''} per step")
    if dec:
        ax.axhline(1, color="k", lw=0.6)
        ax.set(xscale="log", yscale="log", xlabel="cache length", ylabel="tokens/s, ours / dense SDPA",
               title=f"decoding, window {dec[0]['window']}")
        ax.legend(fontsize=8)
    # whole model
    ax = axes[5]
    M = report.get("model", [])
    for name in sorted({r["preset"] for r in M}):
        rs = [r for r in M if r["preset"] == name]
        line, = ax.plot([r["n"] for r in rs], [r["speedup_measured"] for r in rs], "o-", label=f"{name}: measured")
        ax.plot([r["n"] for r in rs], [r["speedup_amdahl"] for r in rs], "x--", color=line.get_color(),
                label=f"{name}: Amdahl prediction")
    if M:
        ax.set(xscale="log", xlabel="sequence length n", ylabel="training tokens/s, local / dense",
               title=f"whole GPT-NeoX model, window {M[0]['window']}")
        ax.legend(fontsize=8)
    fig.suptitle(f"{report['machine']['platform']}, {report['machine']['cpu_count']} CPUs, {report['date']}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _readme(report) -> str:
    c = report["ceilings"]
    lines = ["# Block-sparse kernel benchmark", "", "Made by (from the repository root):", "", "```",
             report["command"], "```", "", f"on {report['machine']['platform']} ({report['machine']['cpu_count']} CPUs, "
             f"{report['machine'].get('cpu_model')}), torch {report['machine']['torch']}, {report['date']}; "
             f"{report['wall_s']:.0f} s. See the docstring of `sparse_core/bench/kernels.py` for what is measured. "
             "FlexAttention's backward is not supported on CPU.", "",
             f"Ceilings measured in this run: `torch.mm` 2048 {c['matmul_gflops']:.0f} GFLOP/s (the *peak* of the "
             f"fractions below); the micro-kernel on cache-resident tiles {c['microkernel_gflops']:.0f} GFLOP/s; memory "
             f"copy {c['memory_gb_per_s']:.1f} GB/s. Reference kernel: "
             + (f"`{report['reference_kernel']}`." if report.get("reference_kernel") else "not available."), "",
             "| sweep | n | kv heads | block density | SDPA fwd ms | Flex fwd ms | ref. fwd ms | ours fwd ms | fwd GFLOP/s | "
             "fwd / peak | bwd GFLOP/s | bwd / peak | tiles only / peak | x SDPA fwd (target) | x SDPA fwd+bwd | x Flex fwd | "
             "x reference |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name in ("length_sweep", "density_sweep", "gqa"):
        for r in report.get(name, []):
            lines.append(f"| {name.split('_')[0]} | {r['n']} | {r.get('kv_heads', r['heads'])} | {r['block_density']:.3f} | "
                         f"{r['ms']['sdpa_fwd']:.1f} | {_f(r['ms'].get('flex_fwd'), '.1f')} | "
                         f"{_f(r['ms'].get('reference_fwd'), '.1f')} | {r['ms']['ours_fwd']:.1f} | "
                         f"{r['ours_fwd_gflops']:.0f} | {r['ours_fwd_fraction_of_peak']:.2f} | "
                         f"{_f(r['ours_bwd_gflops'], '.0f')} | {_f(r['ours_bwd_fraction_of_peak'], '.2f')} | "
                         f"{_f(r.get('tile_products_fraction_of_peak'), '.2f')} | {r['speedup_fwd_vs_sdpa']:.1f} "
                         f"({r['target_speedup_fwd_vs_sdpa']:.1f}) | {r['speedup_fwdbwd_vs_sdpa']:.1f} | "
                         f"{_f(r['speedup_fwd_vs_flex'], '.2f')} | {_f(r.get('speedup_fwd_vs_reference'), '.2f')} |")
    lines += ["", "*tiles only*: the same number of tile products as our forward (`Q K^T` and `P V` per kept",
              "block, by the same register-blocked micro-kernels, `kernels.cpu.tile_products`), without the mask and",
              "the softmax -- what the tile products alone reach. *gqa*: key/value heads shared by 8 / kv query heads",
              "(SDPA and Flex with `enable_gqa=True`)."]
    dec = report.get("decode", [])
    if dec:
        lines += ["", f"## Decoding (causal window {dec[0]['window']}, {dec[0]['heads']} query heads, d = {dec[0]['d']})", "",
                  "| cache | rows per step | kv heads | dense SDPA tok/s | ours tok/s | x dense | ours GB/s of K, V | max abs err vs masked SDPA |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in dec:
            lines.append(f"| {r['cache']} | {r['rows']} | {r['kv_heads']} | {r['tokens_per_s']['dense']:.0f} | "
                         f"{r['tokens_per_s']['ours']:.0f} | {r['speedup_vs_dense']:.1f} | {r['ours_gb_per_s']:.1f} | "
                         f"{r['max_abs_error_vs_masked_sdpa']:.1e} |")
    M = report.get("model", [])
    if M:
        lines += ["", f"## Whole model: training tokens/s, local window {M[0]['window']} vs dense (batch 1)", "",
                  "| preset | n | dense tok/s | local tok/s | no-attention tok/s | attention share f (dense) | SDPA alone / step | "
                  "kernel x SDPA fwd+bwd | measured x | Amdahl x | measured / predicted |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in M:
            lines.append(f"| {r['preset']} | {r['n']} | {r['tokens_per_s']['dense']:.0f} | {r['tokens_per_s']['local']:.0f} | "
                         f"{r['tokens_per_s']['none']:.0f} | {r['attention_share_dense']:.2f} | "
                         f"{r['attention_core_share_dense']:.2f} | {r['kernel_speedup_fwdbwd']:.1f} | {r['speedup_measured']:.2f} | "
                         f"{r['speedup_amdahl']:.2f} | {r['measured_over_predicted']:.2f} |")
    lines += ["", "## Targets", ""] + _targets(report)
    return "\n".join(lines) + "\n"


def _targets(report):
    """One line per target: the range measured, and whether every configuration meets it."""
    rows = report["length_sweep"] + report["density_sweep"] + report.get("gqa", [])
    big = [r for r in rows if r["n"] >= 4096]

    def rng(values):
        values = [v for v in values if v is not None]
        return f"{min(values):.2f} .. {max(values):.2f}" if values else "n/a"

    def verdict(values, goal):
        values = [v for v in values if v is not None]
        if not values:
            return "not measured"
        return "met" if min(values) >= goal else f"not met in {sum(v < goal for v in values)} of {len(values)}"

    c = report["ceilings"]
    fwd = [r["ours_fwd_fraction_of_peak"] for r in rows]
    bwd = [r["ours_bwd_fraction_of_peak"] for r in rows]
    tiles = [r.get("tile_products_fraction_of_peak") for r in rows]
    vs = [r["speedup_fwd_vs_sdpa"] / r["target_speedup_fwd_vs_sdpa"] for r in big]
    vs_fb = [r["speedup_fwdbwd_vs_sdpa"] / r["target_speedup_fwd_vs_sdpa"] for r in big]
    flex = [r["speedup_fwd_vs_flex"] for r in big]
    ref = [r.get("speedup_fwd_vs_reference") for r in rows]
    extra = [r["ours_fwd_host_peak_bytes"] / r["qkv_bytes"] for r in rows]
    nn = [r["n"] ** 2 * 4 / 2**20 for r in rows]
    micro = [r["ours_fwd_gflops"] / c["microkernel_gflops"] for r in rows]
    M = report.get("model", [])
    mp = [abs(r["measured_over_predicted"] - 1) for r in M]
    return [
        f"* forward >= 0.75 of the in-run matmul peak: {rng(fwd)} ({verdict(fwd, 0.75)}); the tile products alone "
        f"reach {rng(tiles)}; forward / micro-kernel in cache: {rng(micro)}.",
        f"* backward >= 0.55 of the matmul peak: {rng(bwd)} ({verdict(bwd, 0.55)}).",
        f"* forward speed-up over SDPA >= 0.8 / density at n >= 4096: achieved / target = {rng(vs)} "
        f"({verdict(vs, 1.0)}).",
        f"* forward+backward speed-up over SDPA forward+backward >= 0.8 / density at n >= 4096: achieved / target = "
        f"{rng(vs_fb)} ({verdict(vs_fb, 1.0)}).",
        f"* >= 1.7x compiled FlexAttention (forward) at n >= 4096: {rng(flex)} ({verdict(flex, 1.7)}).",
        f"* faster than the shared reference kernel (forward): {rng(ref)} ({verdict(ref, 1.0)}).",
        f"* memory: our forward allocates (outputs, log-sum-exp, the padded K/V tiles; tracemalloc) {rng(extra)} x the "
        f"size of q, k, v -- O(n d), against one n x n float32 score matrix of {rng(nn)} MiB per head; inside the "
        f"kernel each task adds O(block x (block + d)) of tiles.",
        f"* whole-model training speed-up within 10% of the Amdahl prediction: |measured / predicted - 1| = {rng(mp)} "
        f"({'not measured' if not mp else ('met' if max(mp) <= 0.10 else f'not met in {sum(x > 0.10 for x in mp)} of {len(mp)}')}).",
    ]


def _ints_or_none(text):
    return [] if text == ["none"] else [int(x) for x in text]


def add_arguments(parser, positive_int) -> None:
    parser.add_argument("--n", type=positive_int, nargs="+", default=list(DEFAULT_NS), help="lengths of the length sweep")
    parser.add_argument("--density-n", type=positive_int, default=4096, help="length of the density and GQA sweeps")
    add_attention_arguments(parser, positive_int, rounds=3, out=DEFAULT_OUT)
    from .ceilings import DEFAULT_REFERENCE

    parser.add_argument("--reference", default=DEFAULT_REFERENCE,
                        help="the shared reference kernel's file ('none' to skip; skipped when missing)")
    parser.add_argument("--kv-heads", nargs="+", default=["2", "1"],
                        help="key/value heads of the grouped-query cases ('none' to skip)")
    parser.add_argument("--decode-cache", nargs="+", default=[str(x) for x in DEFAULT_DECODE_CACHE],
                        help="cache lengths of the decoding sweep ('none' to skip)")
    parser.add_argument("--decode-rows", type=positive_int, nargs="+", default=list(DEFAULT_DECODE_ROWS),
                        help="query rows per decoding step")
    parser.add_argument("--model-n", nargs="+", default=[str(x) for x in DEFAULT_MODEL_N],
                        help="lengths of the whole-model sweep ('none' to skip)")
    parser.add_argument("--model-presets", nargs="+", default=list(DEFAULT_MODEL_PRESETS),
                        help="GPT-NeoX presets of the whole-model sweep ('none' to skip)")


def main(args) -> int:
    try:
        kv, dc, mn = (_ints_or_none(getattr(args, a)) for a in ("kv_heads", "decode_cache", "model_n"))
    except ValueError as e:
        raise SystemExit(f"error: --kv-heads, --decode-cache and --model-n take integers or 'none': {e}")
    presets = [] if args.model_presets == ["none"] else list(args.model_presets)
    reference = None if args.reference in ("none", "") else args.reference
    report = run_kernels(args.n, args.density_n, args.block_size, args.heads, args.d, args.rounds, args.out,
                         flex=not args.no_flex, log=None if args.quiet else print, reference=reference,
                         kv_heads=tuple(kv), decode_cache=tuple(dc), decode_rows=tuple(args.decode_rows),
                         model_n=tuple(mn), model_presets=tuple(presets))
    print(f"wrote {Path(args.out) / 'kernels.json'}, kernels.png and README.md ({report['wall_s']:.0f} s)")
    return 0
