"""The case study of Chapter 9: GPT-NeoX on WikiText-2, dense against block-sparse attention.

Every model is trained, evaluated and sampled by the course's own command line (``python -m
sparse_core train``, ``eval --per-position``, ``generate``), one process per command. The study
has four stages, run in this order (``--stages`` picks some):

``baselines``
    unigram and interpolated Kneser-Ney bigram perplexities of the same tokenizer on the same
    validation tokens (:mod:`sparse_core.lm.ngram`): the floor a model must beat (seconds).
``sweep``
    the peak learning rate of the dense model, from short runs (160 steps, a sixth of the main budget) at
    ``--sweep-lrs``; the lowest final validation loss is the learning rate of every later run.
``main``
    the short-context comparison: ``dense``, ``local``, ``strided``, ``mixed`` and ``global_local``
    at ``--seq-len`` (512), each with ``--seeds`` (0 1 2), the same steps, batch and schedule.
``long``
    the long-context regime at ``--long-seq-lens`` (4096): every kind's training tokens/s is
    measured first (a few steps each, ``long-calibration.json``), then every kind is trained for
    the **same wall-clock budget** (``--long-budget-s``): its step count is the budget times its
    own rate over the tokens per step, with its schedule sized to those steps.

Each finished run is evaluated on the whole validation split, with the mean loss at every
position of the sequence (``per_position_loss``), and continues a fixed prompt (temperature 0.8,
top-k 40, seed 0).

Resumable: run folders live outside the work tree (``--runs``, default
``$SPARSE_COURSE_CACHE/case_study/runs``, by default ``~/.cache/sparse_course/case_study/runs``); a
finished run is reused, a stopped one continues from its checkpoint with bit-identical losses, and
``summary.json`` is rewritten after every finished run, so a study stopped at any point (Ctrl-C,
the end of a session) loses at most the steps since the last checkpoint. Run the same command
again to go on.

Writes to ``--out`` (default ``results/case_study_next/``, see :data:`RESULTS`):

* ``summary.json`` -- the command, machine (CPU, load averages at start and end, torch), date,
  ``baselines``, ``sweep`` (the chosen learning rate), and ``runs``: one entry per finished run
  with ``stage``, ``attention``, ``seq_len``, ``seed``, ``lr``, ``steps``, ``final_val_loss``,
  ``final_val_ppl``, ``train_tokens_per_s``, ``train_s``, ``val_curve`` (step, loss, ppl, train_s),
  ``per_position_loss`` (mean loss per position, averaged over bins of ``per_position_bin``
  positions), the sample and the exact commands;
* ``summary.csv`` (one row per run) and ``curves.csv`` (every validation point).

    python scripts/case_study.py --quick   # 1-2 minutes: a smoke test, not a result (results/tmp/case_study_quick/)
    python scripts/case_study.py           # the study (about 15 hours on 2 cores; resumable, see below)

Cost on a quiet 2-core machine (the rates of ``RATES``, measured here; the script prints its
estimate for what is left before it starts): the sweep 4 runs x 160 steps of the ``small`` preset
(8,192 tokens per step, about 8 minutes each), the main comparison 15 runs x 1000 steps (8.2 M
tokens, 3.1 passes over the training split, about 50 minutes each), the long stage 5 calibrations and 5
runs of ``--long-budget-s`` each. It takes several sessions; each finished run is in
``summary.json`` at once.
"""
from __future__ import annotations

import argparse
import csv
import datetime
import json
import math
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))
from studies import SCRATCH  # noqa: E402

KINDS = ("dense", "local", "strided", "mixed", "global_local")
#: where this study's results go: ``results/case_study_next/`` while it runs over several sessions;
#: Chapter 9 reads ``results/case_study/`` (the earlier 128-step study) until this one is complete
#: and the chapter is rewritten for it, and then this folder takes that name
RESULTS = "case_study_next"
STAGES = ("baselines", "sweep", "main", "long")
PROMPT = " = Valkyria Chronicles III = \n"
#: training tokens/s measured on a quiet 2-core AMD EPYC (for the printed estimate only)
RATES = {("tiny", 64): 9000, ("small", 512): 2600, ("tiny", 4096): 5000, ("long", 4096): 1600,
         ("long", 8192): 1000}


def cache_root() -> Path:
    """The course's cache directory (``$SPARSE_COURSE_CACHE``, default ``~/.cache/sparse_course``)."""
    from sparse_core.lm.data.tokenizer import cache_dir

    return cache_dir()


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Stages: " + ", ".join(STAGES) + " (see the module docstring).")
    p.add_argument("--quick", action="store_true", help="tiny model, short sequences, few steps (1-2 minutes)")
    p.add_argument("--out", default=None,
                   help="folder for summary.json and the rest (default: results/case_study_next/; with --quick: "
                        "results/tmp/case_study_quick/, never a folder of committed results)")
    p.add_argument("--runs", default=None,
                   help="run folders with checkpoints (default: ~/.cache/sparse_course/case_study/runs; "
                        "with --quick: results/tmp/case_study_runs_quick/)")
    p.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    p.add_argument("--kinds", nargs="+", choices=KINDS + ("fixed",), default=list(KINDS))
    p.add_argument("--preset", default=None, help="model of the sweep and the main stage (default small; quick: tiny)")
    p.add_argument("--seq-len", type=int, default=None, help="main stage sequence length (default 512; quick: 64)")
    p.add_argument("--batch-tokens", type=int, default=None, help="tokens per step (default 8192; quick: 512)")
    p.add_argument("--steps", type=int, default=None, help="main stage steps (default 1000; quick: 6)")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="main stage seeds (default 0 1 2; quick: 0 1)")
    p.add_argument("--sweep-lrs", type=float, nargs="+", default=None,
                   help="peak learning rates of the sweep (default 0.004 0.002 0.008 0.001; quick: 0.003 0.01)")
    p.add_argument("--sweep-steps", type=int, default=None, help="steps of a sweep run (default 160; quick: 4)")
    p.add_argument("--window", type=int, default=None, help="local window of the main stage (default 128; quick: 16)")
    p.add_argument("--stride", type=int, default=None, help="strided stride of the main stage (default 64; quick: 16)")
    p.add_argument("--block-size", type=int, default=None, help="kernel block of the main stage (default 64; quick: 16)")
    p.add_argument("--num-global", type=int, default=None, help="global positions of global_local (default 16; quick: 4)")
    p.add_argument("--long-preset", default=None, help="model of the long stage (default long; quick: tiny)")
    p.add_argument("--long-seq-lens", type=int, nargs="+", default=None, help="default 4096 (quick: 256)")
    p.add_argument("--long-budget-s", type=float, default=None,
                   help="training seconds of every long-stage run (default 1200; quick: 10)")
    p.add_argument("--long-window", type=int, default=None, help="local window of the long stage (default 128; quick: 32)")
    p.add_argument("--long-stride", type=int, default=None, help="stride of the long stage (default 128; quick: 32)")
    p.add_argument("--long-block-size", type=int, default=None, help="block of the long stage (default 64; quick: 32)")
    p.add_argument("--eval-points", type=int, default=16,
                   help="validations during a main or long run (default 16; a sweep run has 8)")
    p.add_argument("--eval-batches", type=int, default=None,
                   help="batches per validation during training (default 8; quick: 1)")
    p.add_argument("--final-eval-batches", type=int, default=None,
                   help="batches of the final evaluation (default: the whole validation split; quick: 2)")
    p.add_argument("--gen-tokens", type=int, default=None, help="tokens of the sample (default 64; quick: 8)")
    p.add_argument("--threads", type=int, default=None, help="torch/numba threads (default: all cores)")
    p.add_argument("--data-dir", default=None)
    args = p.parse_args(argv)
    q = args.quick
    if args.out is None:
        args.out = str(SCRATCH / "case_study_quick" if q else ROOT / "results" / RESULTS)
    if args.runs is None:
        args.runs = str(SCRATCH / "case_study_runs_quick" if q else cache_root() / "case_study" / "runs")
    if q and SCRATCH.resolve() not in Path(args.out).resolve().parents:
        p.error(f"--out {args.out}: a --quick run is a smoke test and writes only under {SCRATCH}")
    defaults = dict(preset="tiny" if q else "small", seq_len=64 if q else 512, batch_tokens=512 if q else 8192,
                    steps=6 if q else 1000, seeds=[0, 1] if q else [0, 1, 2],
                    sweep_lrs=[3e-3, 1e-2] if q else [4e-3, 2e-3, 8e-3, 1e-3], sweep_steps=4 if q else 160,
                    window=16 if q else 128, stride=16 if q else 64, block_size=16 if q else 64,
                    num_global=4 if q else 16, long_preset="tiny" if q else "long",
                    long_seq_lens=[256] if q else [4096], long_budget_s=10.0 if q else 1200.0,
                    long_window=32 if q else 128, long_stride=32 if q else 128, long_block_size=32 if q else 64,
                    eval_batches=1 if q else 8, final_eval_batches=2 if q else None, gen_tokens=8 if q else 64)
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    for name in ("seq_len", "batch_tokens", "steps", "sweep_steps", "eval_points", "gen_tokens"):
        if getattr(args, name) <= 0:
            p.error(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(args, name)}")
    if args.long_budget_s <= 0:
        p.error(f"--long-budget-s must be positive, got {args.long_budget_s}")
    return args


# ----------------------------------------------------------------------------------- one run

class Run:
    """One training run: its settings, folder, commands; trains, evaluates and samples it."""

    def __init__(self, args, stage: str, kind: str, preset: str, n: int, seed: int, lr: float, steps: int,
                 window: int, stride: int, block_size: int, tag: str = "", eval_points: int | None = None):
        self.args, self.stage, self.kind, self.preset, self.n, self.seed = args, stage, kind, preset, n, seed
        self.lr, self.steps, self.batch = lr, steps, max(1, args.batch_tokens // n)
        self.window, self.stride, self.block_size = window, stride, block_size
        self.eval_points = eval_points or args.eval_points
        name = f"{stage}-{preset}-{kind}-n{n}-lr{lr:g}-s{seed}-{steps}steps{tag}"
        self.dir = Path(args.runs).resolve() / name

    @property
    def tokens_per_step(self) -> int:
        return self.batch * self.n

    def _py(self, *cmd) -> list[str]:
        common = (["--threads", str(self.args.threads)] if self.args.threads else []) + (
            ["--data-dir", self.args.data_dir] if self.args.data_dir else [])
        return [sys.executable, "-m", "sparse_core", *cmd, *common]

    def train_command(self) -> list[str]:
        every = max(1, self.steps // self.eval_points)
        return self._py("train", "--out", str(self.dir), "--preset", self.preset, "--attention", self.kind,
                        "--window", str(self.window), "--stride", str(self.stride), "--block-size", str(self.block_size),
                        "--num-global", str(self.args.num_global), "--seq-len", str(self.n), "--batch-size",
                        str(self.batch), "--steps", str(self.steps), "--lr", f"{self.lr:g}",
                        "--warmup", str(max(1, self.steps // 20)), "--seed", str(self.seed),
                        "--eval-interval", str(every), "--eval-batches", str(self.args.eval_batches),
                        "--checkpoint-interval", str(every), "--no-progress")

    def metrics(self) -> dict | None:
        path = self.dir / "metrics.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def finished(self) -> bool:
        m = self.metrics()
        return bool(m and m.get("finished"))

    def remaining_steps(self) -> int:
        m = self.metrics()
        return 0 if self.finished() else self.steps - int((m or {}).get("step", 0))

    def train(self, log, bar) -> None:
        if self.finished():
            return
        cmd = self.train_command()
        if (self.dir / "checkpoint.pt").exists():
            cmd.append("--resume")
        run_streaming(cmd, log, bar, start=self.steps - self.remaining_steps())

    def evaluate(self, log) -> tuple[dict, dict]:
        ev_path, gen_path = self.dir / "eval.json", self.dir / "generate.json"
        ckpt = (self.dir / "checkpoint.pt").stat().st_mtime
        if not ev_path.is_file() or ev_path.stat().st_mtime < ckpt:
            cmd = self._py("eval", "--checkpoint", str(self.dir), "--batch-size", str(self.batch), "--per-position",
                           "--json", str(ev_path))
            if self.args.final_eval_batches:
                cmd += ["--max-batches", str(self.args.final_eval_batches)]
            run_logged(cmd, log)
        if not gen_path.is_file() or gen_path.stat().st_mtime < ckpt:
            run_logged(self._py("generate", "--checkpoint", str(self.dir), "--prompt", PROMPT, "--max-new-tokens",
                                str(self.args.gen_tokens), "--seed", "0", "--json", str(gen_path)), log)
        return json.loads(ev_path.read_text()), json.loads(gen_path.read_text())

    def record(self, log) -> dict:
        m = self.metrics()
        ev, gen = self.evaluate(log)
        tps = m["train_tokens_per_s"]
        per_step = self.tokens_per_step / tps if tps else None
        pos = ev["per_position_loss"]
        bin_size = max(1, len(pos) // 256)
        binned = [sum(pos[i:i + bin_size]) / len(pos[i:i + bin_size]) for i in range(0, len(pos), bin_size)]
        return {
            "stage": self.stage, "attention": self.kind, "preset": self.preset, "seq_len": self.n, "seed": self.seed,
            "lr": self.lr, "steps": m["step"], "batch_size": self.batch, "tokens_per_step": self.tokens_per_step,
            "window": self.window, "stride": self.stride, "block_size": self.block_size,
            "num_global": self.args.num_global, "parameters": m["parameters"], "pattern": ev["pattern"],
            "final_val_loss": ev["loss"], "final_val_ppl": ev["ppl"], "final_val_tokens": ev["tokens"],
            "train_loss_last": m["history"]["train"][-1][1], "train_tokens_per_s": tps,
            "train_s": m["step"] * per_step if per_step else None,
            "train_tokens": m["step"] * self.tokens_per_step,
            "val_curve": [{"step": s, "loss": loss, "ppl": ppl, "train_s": s * per_step if per_step else None}
                          for s, loss, ppl in m["history"]["val"]],
            "per_position_bin": bin_size, "per_position_loss": binned,
            "eval_tokens_per_s": ev["tokens_per_s"], "decode_tokens_per_s": gen["decode_tokens_per_s"],
            "peak_rss_mib": {"train": m["peak_rss_bytes"] / 2**20, "eval": ev["peak_rss_bytes"] / 2**20},
            "torch_threads": m["torch_threads"], "sample": gen["text"],
            "commands": {"train": m["command"], "eval": ev["command"], "generate": gen["command"]},
        }


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def run_logged(cmd: list[str], log) -> None:
    log.write("$ " + " ".join(shlex.quote(c) for c in cmd) + "\n")
    log.flush()
    r = subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=_env())
    if r.returncode:
        raise SystemExit(f"command failed ({r.returncode}): {' '.join(cmd)}; see {log.name}")


STEP_LINE = re.compile(r"^step (\d+)")


def run_streaming(cmd: list[str], log, bar, start: int) -> None:
    """Run a ``train`` command, its output to ``log``; its "step N:" lines move the progress bar.
    Ctrl-C reaches the child too (same process group): it saves its checkpoint and stops."""
    log.write("$ " + " ".join(shlex.quote(c) for c in cmd) + "\n")
    log.flush()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=_env(), text=True)
    done = start
    try:
        for line in proc.stdout:
            log.write(line)
            log.flush()
            if (m := STEP_LINE.match(line)) and int(m.group(1)) > done:
                bar.update(int(m.group(1)) - done)
                done = int(m.group(1))
    except KeyboardInterrupt:
        proc.wait()
        raise
    rc = proc.wait()
    if rc:
        raise SystemExit(f"command failed ({rc}): {' '.join(cmd)}; see {log.name}"
                         + ("; run the study again to resume" if rc in (130, 143) else ""))


# ------------------------------------------------------------------------------- the stages

def sweep_runs(args) -> list[Run]:
    return [Run(args, "sweep", "dense", args.preset, args.seq_len, 0, lr, args.sweep_steps, args.window,
                args.stride, args.block_size, eval_points=8) for lr in args.sweep_lrs]


def chosen_lr(args) -> float | None:
    """The sweep's learning rate with the lowest final validation loss (None until all finished)."""
    runs = sweep_runs(args)
    if not all(r.finished() for r in runs):
        return None
    return min(runs, key=lambda r: r.metrics()["last_eval"]["loss"]).lr


def main_runs(args, lr: float) -> list[Run]:
    return [Run(args, "main", kind, args.preset, args.seq_len, seed, lr, args.steps, args.window, args.stride,
                args.block_size) for seed in args.seeds for kind in args.kinds]


def calibration(args, lr: float, log) -> dict:
    """Training tokens/s of every kind at every long length (a few steps each), kept in
    ``long-calibration.json`` in the runs folder so a resumed study uses the same step counts."""
    path = Path(args.runs) / "long-calibration.json"
    cal = json.loads(path.read_text()) if path.is_file() else {}
    for n in args.long_seq_lens:
        for kind in args.kinds:
            key = f"{args.long_preset}-{kind}-{n}"
            if key in cal:
                continue
            steps = 4 if args.quick else 6
            run = Run(args, "calibrate", kind, args.long_preset, n, 0, lr, steps, args.long_window,
                      args.long_stride, args.long_block_size)
            cmd = run.train_command()
            cmd[cmd.index("--eval-interval") + 1] = str(10 * steps)
            cmd[cmd.index("--checkpoint-interval") + 1] = str(10 * steps)
            if (run.dir / "checkpoint.pt").exists():
                (run.dir / "checkpoint.pt").unlink()
            print(f"  calibrating {kind} at n = {n} ...", flush=True)
            run_logged(cmd, log)
            m = run.metrics()
            cal[key] = {"train_tokens_per_s": m["train_tokens_per_s"], "steps": steps,
                        "tokens_per_step": run.tokens_per_step, "command": m["command"],
                        "loadavg": os.getloadavg() if hasattr(os, "getloadavg") else None}
            path.write_text(json.dumps(cal, indent=1))
    return cal


def long_runs(args, lr: float, cal: dict) -> list[Run]:
    out = []
    for n in args.long_seq_lens:
        for kind in args.kinds:
            c = cal[f"{args.long_preset}-{kind}-{n}"]
            steps = max(2, int(args.long_budget_s * c["train_tokens_per_s"] / c["tokens_per_step"]))
            out.append(Run(args, "long", kind, args.long_preset, n, 0, lr, steps, args.long_window, args.long_stride,
                           args.long_block_size, tag=f"-{args.long_budget_s:g}s"))
    return out


def estimate_s(args, runs: list[Run]) -> float:
    s = 0.0
    for r in runs:
        rate = RATES.get((r.preset, r.n), 3000)
        s += r.remaining_steps() * r.tokens_per_step / rate + (0 if r.finished() else 20)
    return s


def baselines(args) -> dict:
    from sparse_core.lm.data.tokenizer import encode_split, load_or_train_tokenizer
    from sparse_core.lm.ngram import ngram_baselines

    tok = load_or_train_tokenizer(10000, args.data_dir)
    out = ngram_baselines(encode_split(tok, "train", args.data_dir), encode_split(tok, "valid", args.data_dir),
                          tok.get_vocab_size())
    out["train_tokens"] = int(encode_split(tok, "train", args.data_dir).size)
    return out


# ------------------------------------------------------------------------------- the summary

def write_summary(args, out: Path, state: dict, records: list[dict]) -> None:
    import torch

    summary = {
        "command": state["command"], "date": state["date"], "quick": args.quick,
        "settings": {k: v for k, v in vars(args).items() if k not in ("out", "runs")},
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
                    "torch": torch.__version__, "loadavg_start": state["load_start"],
                    "loadavg_end": os.getloadavg() if hasattr(os, "getloadavg") else None},
        "baselines": state.get("baselines"), "sweep": state.get("sweep"),
        "long_calibration": state.get("calibration"),
        "notes": {
            "train_tokens_per_s": "optimisation steps only (first step, evaluation and saving excluded)",
            "train_s": "step * tokens per step / train_tokens_per_s (every step has the same shape)",
            "per_position_loss": "mean validation loss of the token predicted at each position, in bins of "
                                 "per_position_bin positions (position t sees t + 1 tokens)",
            "final_val_loss": "the whole validation split (or --final-eval-batches), batch = the run's",
            "loadavg": "1, 5 and 15 minute load averages at the start and the end of this invocation",
        },
        "runs": records,
    }
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=1))
    os.replace(tmp, out / "summary.json")
    cols = ["stage", "attention", "seq_len", "seed", "lr", "steps", "batch_size", "parameters", "final_val_loss",
            "final_val_ppl", "train_tokens_per_s", "train_s", "eval_tokens_per_s", "decode_tokens_per_s"]
    with open(out / "summary.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for r in records:
            w.writerow([r[c] for c in cols])
    with open(out / "curves.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["stage", "attention", "seq_len", "seed", "step", "val_loss", "val_ppl", "train_s"])
        for r in records:
            for c in r["val_curve"]:
                w.writerow([r["stage"], r["attention"], r["seq_len"], r["seed"], c["step"], c["loss"], c["ppl"],
                            c["train_s"]])


def main(argv=None) -> int:
    from tqdm import tqdm

    args = parse_args(argv)
    out, runs_dir = Path(args.out), Path(args.runs)
    runs_dir.mkdir(parents=True, exist_ok=True)
    state = {"command": "python " + " ".join(shlex.quote(a) for a in
                                             ["scripts/case_study.py", *(sys.argv[1:] if argv is None else argv)]),
             "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
             "load_start": os.getloadavg() if hasattr(os, "getloadavg") else None}
    # the BPE and the encoded splits are built once, here, so no run's time includes them
    state["baselines"] = baselines(args)
    b = state["baselines"]
    print(f"baselines on {b['tokens']:,} validation tokens: unigram ppl {b['unigram']['ppl']:.1f}, "
          f"bigram (Kneser-Ney) ppl {b['bigram']['ppl']:.1f}")
    records: dict[str, dict] = {}

    def finish(run: Run, log):
        records[run.dir.name] = run.record(log)
        write_summary(args, out, state, list(records.values()))

    with open(runs_dir / "log.txt", "a") as log:
        sweep = sweep_runs(args)
        lr = chosen_lr(args)
        planned = [r for r in sweep if "sweep" in args.stages]
        if lr is not None:
            planned += [r for r in main_runs(args, lr) if "main" in args.stages]
        print(f"{sum(not r.finished() for r in planned)} runs to train before the long stage, about "
              f"{estimate_s(args, planned) / 60:.0f} minutes on a quiet 2-core machine"
              + ("" if lr is not None else " for the sweep (the main stage's estimate follows it)"), flush=True)
        for stage in ("sweep", "main", "long"):
            if stage == "sweep":
                todo = sweep
            else:
                lr = chosen_lr(args)
                if lr is None:
                    raise SystemExit("the sweep has not finished: run the study with the sweep stage first")
                state["sweep"] = {"lrs": args.sweep_lrs, "chosen_lr": lr, "runs": [r.dir.name for r in sweep]}
                if stage == "main":
                    todo = main_runs(args, lr)
                else:
                    if "long" not in args.stages:
                        break
                    state["calibration"] = calibration(args, lr, log)
                    todo = long_runs(args, lr, state["calibration"])
            if stage not in args.stages:
                for r in todo:  # earlier stages' finished runs stay in the summary
                    if r.finished():
                        finish(r, log)
                continue
            left = estimate_s(args, todo)
            print(f"stage {stage}: {len(todo)} runs, {sum(not r.finished() for r in todo)} to train, "
                  f"about {left / 60:.0f} minutes", flush=True)
            with tqdm(total=sum(r.steps for r in todo), initial=sum(r.steps - r.remaining_steps() for r in todo),
                      desc=stage, unit="step", dynamic_ncols=True, mininterval=5) as bar:
                for r in todo:
                    was_done = r.finished()
                    bar.set_postfix_str(f"{r.kind} n={r.n} seed={r.seed}")
                    r.train(log, bar)
                    finish(r, log)
                    rec = records[r.dir.name]
                    if not was_done:
                        tqdm.write(f"{stage} {r.kind:>12} n={r.n} seed={r.seed} lr={r.lr:g}: val ppl "
                                   f"{rec['final_val_ppl']:.2f}, {rec['train_tokens_per_s']:,.0f} tokens/s, "
                                   f"{rec['train_s'] / 60:.1f} min")
    write_summary(args, out, state, list(records.values()))
    print(f"wrote {out / 'summary.json'} ({len(records)} runs)")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\nstopped; every finished run is in summary.json; run the same command again to resume",
              file=sys.stderr)
        sys.exit(130)
