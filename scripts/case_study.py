"""The case study: GPT-NeoX on WikiText-2 with dense, local, strided and mixed attention.

Every configuration is trained with the same seed, steps and tokens per batch at each sequence
length, by the course's own command line (``python -m sparse_core train``, then ``eval`` and
``generate``), one process per command so each peak-memory figure (``ru_maxrss``) belongs to that
command alone. Writes to ``--out`` (default ``results/case_study/``):

* ``summary.json`` -- the exact command of this script and of every run, configuration, the
  validation loss/perplexity curve, train tokens/s, forward (eval) tokens/s, decode tokens/s,
  peak RSS of training, evaluation and generation, the final perplexity and a sample;
* ``summary.csv`` -- one row per (attention, seq_len) with the final numbers;
* ``curves.csv`` -- validation loss and perplexity per (attention, seq_len, step), with the
  training time at that step (``train_s``: step x tokens per step / the run's measured training
  tokens/s -- every step has the same shape, so the rate is constant) for equal-wall-clock plots.

The machine's load average is recorded before and after (``machine.loadavg_start/end``): a
busy machine slows every run, and the timings are only comparable within one quiet run.

Checkpoints go to ``--runs`` (default ``results/tmp/case_study_runs/``, not committed).

    python scripts/case_study.py --quick      # about a minute on 2 cores: a smoke test, not a result (in results/tmp/case_study_quick/)
    python scripts/case_study.py              # the comparison (hours on a CPU; see --help)

The CPU-sized comparison of the book (Chapter 9; the tiny preset, 6.3M training tokens in all;
about 20-25 minutes on a quiet 2-core machine, estimated from short runs of this configuration
at 5,000-7,000 training tokens/s plus about 15 s per run for evaluation, generation and start-up):

    python scripts/case_study.py --preset tiny --steps 128 --batch-tokens 4096 --eval-interval 16 \
        --eval-batches 4 --final-eval-batches 16

Cost of the default comparison: 12 runs of 500 steps x 8,192 tokens (4.1M tokens each) of the
``small`` preset (8.3M parameters). That preset trained at roughly 1,100-1,800 tokens/s on a
shared 2-core machine, i.e. about 40-60 minutes per run and 8-12 hours in all; finished runs are
skipped when the script is run again (``--force`` retrains), so it can be run in pieces
(``--kinds``, ``--seq-lens``).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))
from studies import choose_folders, run_command  # noqa: E402
KINDS = ("dense", "local", "strided", "mixed")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny model, short sequences, few steps (~1 minute)")
    p.add_argument("--out", default=None,
                   help="folder for summary.json and the rest (default: results/case_study/; with --quick: "
                        "results/tmp/case_study_quick/, never a folder of committed results)")
    p.add_argument("--runs", default=None,
                   help="run folders with checkpoints, not committed (default: results/tmp/case_study_runs/; "
                        "with --quick: results/tmp/case_study_runs_quick/)")
    p.add_argument("--kinds", nargs="+", choices=KINDS + ("fixed",), default=list(KINDS))
    p.add_argument("--seq-lens", type=int, nargs="+", default=None, help="default 512 1024 2048 (quick: 128 256)")
    p.add_argument("--preset", default=None, help="default small (quick: tiny)")
    p.add_argument("--steps", type=int, default=None, help="default 500 (quick: 4)")
    p.add_argument("--batch-tokens", type=int, default=None,
                   help="tokens per batch, equal for every length (default 8192; quick: 1024)")
    p.add_argument("--window", type=int, default=None, help="local window (default 256; quick: 32)")
    p.add_argument("--stride", type=int, default=None, help="strided pattern stride (default 128; quick: 32)")
    p.add_argument("--block-size", type=int, default=None, help="kernel block size (default 64; quick: 32)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-interval", type=int, default=None, help="default 50 (quick: 2)")
    p.add_argument("--eval-batches", type=int, default=None, help="default 10 (quick: 1)")
    p.add_argument("--final-eval-batches", type=int, default=None, help="default: whole validation split (quick: 2)")
    p.add_argument("--gen-tokens", type=int, default=None, help="tokens generated for decode speed (default 64; quick: 8)")
    p.add_argument("--threads", type=int, default=None, help="torch/numba threads (default: all cores)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--force", action="store_true", help="retrain runs that already have a finished checkpoint")
    args = p.parse_args(argv)
    q = args.quick
    choose_folders(p, args, "case_study", "case_study_runs")
    defaults = dict(seq_lens=[128, 256] if q else [512, 1024, 2048], preset="tiny" if q else "small",
                    steps=4 if q else 500, batch_tokens=1024 if q else 8192, window=32 if q else 256,
                    stride=32 if q else 128, block_size=32 if q else 64, eval_interval=2 if q else 50,
                    eval_batches=1 if q else 10, final_eval_batches=2 if q else None, gen_tokens=8 if q else 64)
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    return args




def _common(args) -> list[str]:
    out = []
    if args.threads:
        out += ["--threads", str(args.threads)]
    if args.data_dir:
        out += ["--data-dir", args.data_dir]
    return out


def run_one(args, kind: str, n: int, log) -> dict:
    py = [sys.executable, "-m", "sparse_core"]
    run = Path(args.runs).resolve() / f"{args.preset}-{kind}-{n}"
    if run.is_relative_to(ROOT):  # the commands run in the checkout: keep them portable
        run = run.relative_to(ROOT)
    metrics_path = ROOT / run / "metrics.json"
    batch = max(1, args.batch_tokens // n)
    attn = ["--attention", kind, "--window", str(args.window), "--stride", str(args.stride),
            "--block-size", str(args.block_size)]
    train_cmd = py + ["train", "--out", str(run), "--preset", args.preset, *attn, "--seq-len", str(n),
                      "--batch-size", str(batch), "--steps", str(args.steps), "--lr", str(args.lr),
                      "--warmup", str(max(1, args.steps // 20)), "--seed", str(args.seed),
                      "--eval-interval", str(args.eval_interval), "--eval-batches", str(args.eval_batches),
                      "--checkpoint-interval", str(max(args.eval_interval, 1)), "--no-progress", *_common(args)]
    done = metrics_path.is_file() and json.loads(metrics_path.read_text()).get("finished")
    wall = {"train": None}
    if args.force or not done:
        if (ROOT / run / "checkpoint.pt").exists():
            if args.force:
                (ROOT / run / "checkpoint.pt").unlink()
            else:
                train_cmd.append("--resume")
        wall["train"] = run_command(train_cmd, log)
    metrics = json.loads(metrics_path.read_text())
    eval_json, gen_json = ROOT / run / "eval.json", ROOT / run / "generate.json"
    eval_cmd = py + ["eval", "--checkpoint", str(run), "--batch-size", str(batch), "--json", str(run / "eval.json"),
                     *_common(args)]
    if args.final_eval_batches:
        eval_cmd += ["--max-batches", str(args.final_eval_batches)]
    wall["eval"] = run_command(eval_cmd, log)
    gen_cmd = py + ["generate", "--checkpoint", str(run), "--max-new-tokens", str(args.gen_tokens),
                    "--seed", str(args.seed), "--json", str(run / "generate.json"), *_common(args)]
    wall["generate"] = run_command(gen_cmd, log)
    ev, gen = json.loads(eval_json.read_text()), json.loads(gen_json.read_text())
    return {
        "attention": kind, "seq_len": n, "batch_size": batch, "steps": metrics["step"],
        "parameters": metrics["parameters"], "pattern": ev["pattern"],
        "commands": {"train": metrics["command"], "eval": ev["command"], "generate": gen["command"]},
        "val_curve": [{"step": s, "loss": loss, "ppl": ppl,
                       "train_s": s * batch * n / tps if (tps := metrics["train_tokens_per_s"]) else None}
                      for s, loss, ppl in metrics["history"]["val"]],
        "train_loss_last": metrics["history"]["train"][-1][1],
        "train_tokens_per_s": metrics["train_tokens_per_s"],
        "final_val_loss": ev["loss"], "final_val_ppl": ev["ppl"], "final_val_tokens": ev["tokens"],
        "eval_tokens_per_s": ev["tokens_per_s"], "decode_tokens_per_s": gen["decode_tokens_per_s"],
        "prefill_s": gen["prefill_s"], "peak_rss_mib": {
            "train": metrics["peak_rss_bytes"] / 2**20, "eval": ev["peak_rss_bytes"] / 2**20,
            "generate": gen["peak_rss_bytes"] / 2**20},
        "torch_threads": metrics["torch_threads"], "sample": gen["text"],
        "command_wall_s": wall,
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    out, runs = Path(args.out), Path(args.runs)
    out.mkdir(parents=True, exist_ok=True)
    runs.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    load_start = os.getloadavg() if hasattr(os, "getloadavg") else None
    # the BPE and the encoded splits are built once, here, so no run's time or memory includes them
    from sparse_core.lm.data.tokenizer import encode_split, load_or_train_tokenizer

    tok = load_or_train_tokenizer(10000, args.data_dir)
    for split in ("train", "valid"):
        encode_split(tok, split, args.data_dir)
    rows = []
    with open(runs / "log.txt", "a") as log:
        for n in args.seq_lens:
            for kind in args.kinds:
                print(f"{kind:>8} seq_len {n}: ", end="", flush=True)
                r = run_one(args, kind, n, log)
                rows.append(r)
                print(f"val ppl {r['final_val_ppl']:.1f}, train {r['train_tokens_per_s']:,.0f} tok/s, "
                      f"eval {r['eval_tokens_per_s']:,.0f} tok/s, decode {r['decode_tokens_per_s'] or 0:,.1f} tok/s, "
                      f"peak RSS train {r['peak_rss_mib']['train']:,.0f} MiB", flush=True)
    import platform

    import torch

    summary = {
        "command": "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(__file__, ROOT), *sys.argv[1:]]),
        "quick": args.quick, "settings": {k: v for k, v in vars(args).items() if k not in ("out", "runs")},
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
                    "loadavg_start": load_start,
                    "loadavg_end": os.getloadavg() if hasattr(os, "getloadavg") else None},
        "notes": {
            "train_tokens_per_s": "optimisation steps only (first step, evaluation and saving excluded)",
            "eval_tokens_per_s": "forward passes only, no_grad, at the training sequence length, after a warm-up call",
            "decode_tokens_per_s": "new tokens after the first / decode wall time, key-value cache, batch 1, after a warm-up call",
            "peak_rss_mib": "resource.getrusage ru_maxrss of each command's own process (whole process)",
            "train_s": "training seconds at a curve point: step * tokens per step / train_tokens_per_s",
            "command_wall_s": "wall time of each command's process (train: None when an earlier run was reused)",
            "loadavg": "1, 5 and 15 minute load averages of the machine at the start and the end",
        },
        "wall_s": time.perf_counter() - t0, "runs": rows,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    cols = ["attention", "seq_len", "batch_size", "steps", "parameters", "final_val_loss", "final_val_ppl",
            "train_tokens_per_s", "eval_tokens_per_s", "decode_tokens_per_s"]
    with open(out / "summary.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols + ["peak_rss_train_mib", "peak_rss_eval_mib", "peak_rss_generate_mib"])
        for r in rows:
            w.writerow([r[c] for c in cols] + [round(r["peak_rss_mib"][k], 1) for k in ("train", "eval", "generate")])
    with open(out / "curves.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["attention", "seq_len", "step", "val_loss", "val_ppl", "train_s"])
        for r in rows:
            for c in r["val_curve"]:
                w.writerow([r["attention"], r["seq_len"], c["step"], c["loss"], c["ppl"], c["train_s"]])
    print(f"wrote {out / 'summary.json'}, summary.csv, curves.csv in {summary['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
