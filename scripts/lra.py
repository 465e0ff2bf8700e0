"""Chapter 11's quality comparison: every attention method on multi-query associative recall (MQAR)
and ListOps, CPU-sized, same model width, depth and training budget for every method.

Stages (``--stages`` picks some):

``mqar``
    every causal method of :data:`sparse_core.approx.methods.METHODS` (Linformer is not causal and
    is left out), ``--seeds`` each, on two sweeps: sequence length (``--mqar-seq-lens`` at
    ``--mqar-length-pairs`` pairs) and number of pairs (``--mqar-pairs`` at ``--mqar-pairs-len``
    tokens; pairs that fit, ``4 P <= n``); accuracy on held-out examples over every queried key.
``listops``
    every method (bidirectional, so Linformer too) on ListOps expressions of up to ``--listops-seq-len``
    tokens; accuracy over held-out expressions (ten classes).

Each run trains a :class:`sparse_core.lra.TaskModel` with :func:`sparse_core.lra.train_task` (the
course's engine) in its own folder under ``--runs`` (default
``$SPARSE_COURSE_CACHE/lra/runs``, by default ``~/.cache/sparse_course/lra/runs``): a finished run
is reused, a stopped one resumes from its checkpoint with identical losses, and the results are
rewritten after every finished run, so a study stopped at any point loses at most the steps since
the last checkpoint. Run the same command again to go on.

Writes ``--out`` (default ``results/lra/``): ``mqar.json`` and ``listops.json``, each with the
command, date, machine, settings and ``runs``: one entry per finished run with ``attention`` (the
method's name), ``seq_len``, ``num_kv_pairs`` (MQAR), ``seed``, ``accuracy``, ``train_s``,
``train_tokens_per_s``, ``parameters``, ``options`` and the validation curve.

    python scripts/lra.py --quick     # a smoke test of a minute (results/tmp/lra_quick/)
    python scripts/lra.py             # the study (several hours on 2 cores; prints its estimate first)
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))
from studies import SCRATCH  # noqa: E402

STAGES = ("mqar", "listops")
#: training tokens/s of a 2-layer d-64 model on a quiet 2-core machine (for the printed estimate only)
RATE = 40000


def parse_args(argv=None):
    from sparse_core.approx.methods import METHODS

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a smoke test: 2 methods, tiny sizes, few steps")
    p.add_argument("--out", default=None, help="results folder (default results/lra; quick: results/tmp/lra_quick)")
    p.add_argument("--runs", default=None, help="run folders (default: the course cache's lra/runs)")
    p.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    p.add_argument("--methods", nargs="+", choices=METHODS, default=None, help="default: all")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="default 0 1")
    p.add_argument("--d-model", type=int, default=None, help="default 64")
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--mqar-seq-lens", type=int, nargs="+", default=None, help="length sweep (default 256 512 1024)")
    p.add_argument("--mqar-length-pairs", type=int, default=None, help="pairs of the length sweep (default 16)")
    p.add_argument("--mqar-pairs", type=int, nargs="+", default=None, help="pairs sweep (default 8 16 32 64)")
    p.add_argument("--mqar-pairs-len", type=int, default=None, help="length of the pairs sweep (default 512)")
    p.add_argument("--mqar-vocab", type=int, default=256)
    p.add_argument("--mqar-steps", type=int, default=None, help="default 800")
    p.add_argument("--mqar-tokens-per-step", type=int, default=8192, help="batch = this / seq_len")
    p.add_argument("--listops-seq-len", type=int, default=None, help="default 512")
    p.add_argument("--listops-steps", type=int, default=None, help="default 1000")
    p.add_argument("--listops-batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--window", type=int, default=None, help="window of local/longformer/global_local/nsa (default 64)")
    p.add_argument("--block-size", type=int, default=None, help="block of the block-sparse methods (default 32)")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    q = args.quick
    defaults = dict(methods=["dense", "local"] if q else list(METHODS), seeds=[0] if q else [0, 1],
                    d_model=32 if q else 64, mqar_seq_lens=[64] if q else [256, 512, 1024],
                    mqar_length_pairs=4 if q else 16, mqar_pairs=[4] if q else [8, 16, 32, 64],
                    mqar_pairs_len=64 if q else 512, mqar_steps=4 if q else 800,
                    listops_seq_len=64 if q else 512, listops_steps=4 if q else 1000,
                    window=16 if q else 64, block_size=16 if q else 32)
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.out is None:
        args.out = str(SCRATCH / "lra_quick" if q else ROOT / "results" / "lra")
    if args.runs is None:
        from sparse_core.lm.data.tokenizer import cache_dir

        args.runs = str(SCRATCH / "lra_runs_quick" if q else cache_dir() / "lra" / "runs")
    if q and SCRATCH.resolve() not in Path(args.out).resolve().parents:
        p.error(f"--out {args.out}: a --quick run is a smoke test and writes only under {SCRATCH}")
    for name in ("d_model", "layers", "heads", "mqar_steps", "listops_steps", "mqar_tokens_per_step", "listops_batch",
                 "window", "block_size"):
        if getattr(args, name) <= 0:
            p.error(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(args, name)}")
    return args


def method_options(method: str, args, n: int) -> dict:
    """The options of a method at length ``n``, sized alike: windows of ``--window``, blocks of
    ``--block-size``, a sixteenth of the keys for top-k, Linformer and Performer."""
    from sparse_core.approx.methods import DEFAULTS

    o = {}
    take = DEFAULTS[method]
    if "window" in take:
        o["window"] = args.window
    if "block_size" in take:
        o["block_size"] = args.block_size if method != "nsa" else min(args.block_size, 32)
    if "stride" in take:
        o["stride"] = args.window
    if "num_global" in take:
        o["num_global"] = 4
    if method == "topk":
        o["topk"] = max(8, n // 16)
    if method == "linformer":
        o["k"] = max(16, n // 16)
    if method == "performer":
        o["n_features"] = 64
    if method == "routing":
        o["n_clusters"] = 8
    return o


def plan(args) -> list[dict]:
    runs = []
    causal_methods = [m for m in args.methods if m != "linformer"]
    if "mqar" in args.stages:
        settings = [(n, args.mqar_length_pairs) for n in args.mqar_seq_lens]
        settings += [(args.mqar_pairs_len, P) for P in args.mqar_pairs if (args.mqar_pairs_len, P) not in settings]
        for n, P in settings:
            if 4 * P > n:
                continue
            for seed in args.seeds:
                for m in causal_methods:
                    runs.append(dict(task="mqar", method=m, seq_len=n, num_kv_pairs=P, seed=seed,
                                     steps=args.mqar_steps, batch_size=max(1, args.mqar_tokens_per_step // n)))
    if "listops" in args.stages:
        for seed in args.seeds:
            for m in args.methods:
                runs.append(dict(task="listops", method=m, seq_len=args.listops_seq_len, num_kv_pairs=None, seed=seed,
                                 steps=args.listops_steps, batch_size=args.listops_batch))
    return runs


def config(args, r: dict):
    from sparse_core.lra import TaskConfig

    every = max(1, r["steps"] // 10)
    kw = dict(task=r["task"], method=r["method"], options=method_options(r["method"], args, r["seq_len"]),
              seq_len=r["seq_len"], batch_size=r["batch_size"], steps=r["steps"], lr=args.lr,
              warmup=max(1, r["steps"] // 20), seed=r["seed"], d_model=args.d_model, n_layers=args.layers,
              n_heads=args.heads, eval_interval=every, eval_batches=2 if args.quick else 8,
              checkpoint_interval=every, threads=args.threads)
    if r["task"] == "mqar":
        kw.update(num_kv_pairs=r["num_kv_pairs"], vocab_size=args.mqar_vocab)
    else:
        kw.update(pool=200 if args.quick else 20000, max_depth=4 if args.quick else 10)
    return TaskConfig(**kw)


def run_dir(args, r: dict) -> Path:
    tag = f"-P{r['num_kv_pairs']}" if r["task"] == "mqar" else ""
    return Path(args.runs) / f"{r['task']}-{r['method']}-n{r['seq_len']}{tag}-d{args.d_model}-s{r['seed']}-{r['steps']}steps"


def _metrics(path: Path) -> dict | None:
    f = path / "metrics.json"
    return json.loads(f.read_text()) if f.is_file() else None


def record(args, r: dict, m: dict) -> dict:
    tps = m["train_tokens_per_s"]
    tokens = r["batch_size"] * r["seq_len"]
    return {"attention": r["method"], "seq_len": r["seq_len"], "num_kv_pairs": r["num_kv_pairs"], "seed": r["seed"],
            "accuracy": m["last_eval"]["accuracy"], "held_out_loss": m["last_eval"]["loss"],
            "held_out_count": m["last_eval"]["count"], "steps": m["step"], "batch_size": r["batch_size"],
            "train_tokens_per_s": tps, "train_s": m["step"] * tokens / tps if tps else None,
            "parameters": m["parameters"], "options": m["task_config"]["options"],
            "val_curve": [{"step": s, "loss": loss, "accuracy": acc} for s, loss, acc in m["history"]["val"]],
            "peak_rss_mib": m["peak_rss_bytes"] / 2**20}


def write(args, out: Path, task: str, records: list[dict], state: dict) -> None:
    import torch

    report = {"command": state["command"], "date": state["date"], "quick": args.quick, "task": task,
              "settings": {k: v for k, v in vars(args).items() if k not in ("out", "runs")},
              "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
                          "torch": torch.__version__, "loadavg_start": state["load"],
                          "loadavg_end": os.getloadavg() if hasattr(os, "getloadavg") else None},
              "notes": {"accuracy": "held-out: MQAR over every queried key, ListOps over every expression",
                        "train_s": "steps x tokens per step / train_tokens_per_s (optimisation steps only)"},
              "runs": records}
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f"{task}.json.tmp"
    tmp.write_text(json.dumps(report, indent=1))
    os.replace(tmp, out / f"{task}.json")


def main(argv=None) -> int:
    from tqdm import tqdm

    from sparse_core.lra import train_task

    args = parse_args(argv)
    out = Path(args.out)
    state = {"command": "python " + " ".join(shlex.quote(a) for a in ["scripts/lra.py", *(sys.argv[1:] if argv is None
                                                                                         else argv)]),
             "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
             "load": os.getloadavg() if hasattr(os, "getloadavg") else None}
    runs = plan(args)
    left = [r for r in runs if not (_metrics(run_dir(args, r)) or {}).get("finished")]
    tokens = sum((r["steps"] - (_metrics(run_dir(args, r)) or {}).get("step", 0)) * r["batch_size"] * r["seq_len"]
                 for r in left)
    print(f"{len(runs)} runs, {len(left)} to train: about {tokens / RATE / 60:.0f} minutes on a quiet 2-core machine "
          "(the sparse and approximate methods run at about the dense rate at these lengths)", flush=True)
    records: dict[str, list] = {t: [] for t in STAGES}
    with tqdm(total=len(runs), desc="runs", unit="run", dynamic_ncols=True) as bar:
        for r in runs:
            d = run_dir(args, r)
            m = _metrics(d)
            if not (m and m.get("finished")):
                bar.set_postfix_str(f"{r['task']} {r['method']} n={r['seq_len']} seed={r['seed']}")
                t0 = time.time()
                m = train_task(config(args, r), d, resume=(d / "checkpoint.pt").exists(), progress=False,
                               command=state["command"], log=lambda s: None)
                if not m.get("finished"):
                    print("stopped; run the same command again to resume", file=sys.stderr)
                    return 130
                tqdm.write(f"{r['task']} {r['method']:>12} n={r['seq_len']}"
                           + (f" P={r['num_kv_pairs']}" if r["num_kv_pairs"] else "")
                           + f" seed={r['seed']}: accuracy {m['last_eval']['accuracy']:.3f} ({time.time() - t0:.0f} s)")
            records[r["task"]].append(record(args, r, m))
            write(args, out, r["task"], records[r["task"]], state)
            bar.update(1)
    print(f"wrote {', '.join(str(out / (t + '.json')) for t in STAGES if records[t])}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\nstopped; every finished run is in the results; run the same command again to resume", file=sys.stderr)
        sys.exit(130)
