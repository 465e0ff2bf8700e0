"""Pythia-70M itself (d 512, 6 layers, 8 heads) trained on WikiText-2, dense and block-sparse.

Each kind is trained by the course's own command line (``python -m sparse_core train --preset
pythia-70m``), one process per kind, for ``--steps`` steps or until ``--budget-s`` seconds have
passed, whichever comes first: at the budget the run gets SIGTERM, finishes its step, saves and
records where it stopped (``stopped_by``), so a budget-limited run is reported as such, never as a
finished schedule. Validation (``--eval-batches`` batches of the split) happens every
``--eval-interval`` steps and at the end, inside the training command.

On a GPU (``--device cuda``, the default) the dense model runs PyTorch's SDPA and the sparse kinds
the course's Numba CUDA kernels (float32 CUDA cores, no tensor cores); on the CPU (``--device cpu``)
the fused CPU kernels. ``--cpu-cost`` only measures the CPU cost of a step: a few steps of each kind
and their seconds per step, with the command (a whole run on 2 cores takes days, see the output).

    python scripts/pythia70m.py                              # on a CUDA machine: dense and local, about 5 minutes
    python scripts/pythia70m.py --device cpu --cpu-cost      # seconds per step here (a few minutes)

Writes ``--out`` (default ``results/pythia70m/``; ``--cpu-cost``: ``cpu_cost.json``, otherwise
``summary.json``): the device, the commands, and per kind the steps reached, training tokens/s,
the validation curve, the final validation loss and perplexity, the peak GPU memory where there is
one, and why the run stopped.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from studies import SCRATCH  # noqa: E402

KINDS = ("dense", "local", "strided", "mixed", "global_local")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    p.add_argument("--kinds", nargs="+", choices=KINDS, default=["dense", "local"])
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--batch-size", type=int, default=16, help="sequences per step (default 16: 32,768 tokens)")
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (Pythia-70M's own: 1e-3)")
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--window", type=int, default=256)
    p.add_argument("--block-size", type=int, default=128)
    p.add_argument("--eval-interval", type=int, default=50)
    p.add_argument("--eval-batches", type=int, default=8, help="validation batches (8 x 16 x 2048 tokens: the split)")
    p.add_argument("--budget-s", type=float, default=130.0, help="wall seconds per kind before SIGTERM")
    p.add_argument("--cpu-cost", action="store_true", help="only time --cost-steps steps of each kind")
    p.add_argument("--cost-steps", type=int, default=3)
    p.add_argument("--runs", default=str(SCRATCH / "pythia70m_runs"))
    p.add_argument("--out", default=str(ROOT / "results" / "pythia70m"))
    p.add_argument("--data-dir", default=None)
    args = p.parse_args(argv)
    for name in ("seq_len", "batch_size", "steps", "warmup", "window", "block_size", "eval_interval",
                 "eval_batches", "cost_steps"):
        if getattr(args, name) <= 0:
            p.error(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(args, name)}")
    if args.budget_s <= 0:
        p.error(f"--budget-s must be positive, got {args.budget_s}")
    return args


def train_command(args, kind: str, out: Path, steps: int) -> list[str]:
    cmd = [sys.executable, "-m", "sparse_core", "train", "--out", str(out), "--preset", "pythia-70m",
           "--attention", kind, "--window", str(args.window), "--stride", str(args.window),
           "--block-size", str(args.block_size), "--seq-len", str(args.seq_len), "--batch-size", str(args.batch_size),
           "--steps", str(steps), "--lr", f"{args.lr:g}", "--warmup", str(min(args.warmup, max(1, steps // 2))),
           "--eval-interval", str(args.eval_interval if not args.cpu_cost else 10 * steps),
           "--eval-batches", str(args.eval_batches), "--checkpoint-interval",
           str(args.eval_interval if not args.cpu_cost else 10 * steps), "--device", args.device, "--no-progress"]
    return cmd + (["--data-dir", args.data_dir] if args.data_dir else [])


def run_one(args, kind: str, steps: int, log) -> dict:
    out = Path(args.runs) / f"{kind}-n{args.seq_len}-{steps}steps"
    if out.exists():
        for f in out.iterdir():
            f.unlink()
    cmd = train_command(args, kind, out, steps)
    log.write("$ " + " ".join(shlex.quote(c) for c in cmd) + "\n")
    log.flush()
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        rc = proc.wait(timeout=args.budget_s)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)  # the run finishes its step, validates nothing more, saves
        rc = proc.wait()
    wall = time.perf_counter() - t0
    if rc not in (0, 143):
        raise SystemExit(f"{kind}: the training command failed ({rc}); see {log.name}")
    m = json.loads((out / "metrics.json").read_text())
    return {"attention": kind, "steps_asked": steps, "steps": m["step"], "finished": m["finished"],
            "stopped_by": m["stopped_by"], "wall_s": wall, "train_tokens_per_s": m["train_tokens_per_s"],
            "s_per_step": (args.batch_size * args.seq_len / m["train_tokens_per_s"]) if m["train_tokens_per_s"] else None,
            "parameters": m["parameters"], "val_curve": m["history"]["val"], "last_eval": m.get("last_eval"),
            "train_curve": m["history"]["train"][:: max(1, len(m["history"]["train"]) // 100)],
            "peak_rss_bytes": m["peak_rss_bytes"], "command": m["command"]}


def device_info(device: str) -> dict:
    import torch

    info = {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
            "torch": torch.__version__, "python": platform.python_version()}
    if device == "cuda":
        info.update(gpu=torch.cuda.get_device_name(), cuda=torch.version.cuda)
    return info


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            print("error: --device cuda: torch sees no CUDA device (use --device cpu --cpu-cost here)", file=sys.stderr)
            return 2
    steps = args.cost_steps if args.cpu_cost else args.steps
    Path(args.runs).mkdir(parents=True, exist_ok=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    per_step = args.batch_size * args.seq_len
    print(f"Pythia-70M on {args.device}: {', '.join(args.kinds)} at n = {args.seq_len}, {per_step:,} tokens per "
          f"step, {steps} steps or {args.budget_s:.0f} s each: at most {len(args.kinds) * args.budget_s / 60:.1f} "
          "minutes", flush=True)
    runs = []
    with open(Path(args.runs) / "log.txt", "w") as log:
        for kind in args.kinds:
            r = run_one(args, kind, steps, log)
            runs.append(r)
            ev = r["last_eval"] or {}
            print(f"{kind:>12}: {r['steps']} steps in {r['wall_s']:.0f} s, {r['train_tokens_per_s']:,.0f} tokens/s "
                  f"({r['s_per_step']:.3f} s/step)" + (f", val ppl {ev['ppl']:.1f}" if ev.get("ppl") else "")
                  + ("" if r["finished"] else f", stopped by {r['stopped_by']} at the budget"), flush=True)
    report = {"command": "python " + " ".join(shlex.quote(a) for a in
                                              ["scripts/pythia70m.py", *(sys.argv[1:] if argv is None else argv)]),
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "device": args.device, "machine": device_info(args.device),
              "settings": {k: v for k, v in vars(args).items() if k not in ("runs", "out")},
              "tokens_per_step": per_step, "runs": runs}
    if len(runs) > 1 and runs[0]["attention"] == "dense" and runs[0]["train_tokens_per_s"]:
        report["tokens_per_s_vs_dense"] = {r["attention"]: r["train_tokens_per_s"] / runs[0]["train_tokens_per_s"]
                                           for r in runs[1:] if r["train_tokens_per_s"]}
    name = "cpu_cost.json" if args.cpu_cost else "summary.json"
    tmp = out / (name + ".tmp")
    tmp.write_text(json.dumps(report, indent=1))
    os.replace(tmp, out / name)
    print(f"wrote {out / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
