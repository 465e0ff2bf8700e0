"""Distillation study: what a cheaper attention keeps of a dense teacher, per student.

1. trains a dense teacher with the course's ``train`` command (the case study's dense settings),
   or reuses one (``--teacher RUN_DIR``, e.g. the case study's ``dense-512`` run);
2. for each student (learned mask, NSA, Performer, top-k, a fixed local block-sparse pattern) runs
   ``python -m sparse_core distill``, which evaluates the zero-shot student first and then trains
   only its attention parameters on KL(teacher || student);
3. writes ``summary.json`` to ``--out`` (default ``results/distill/``): the exact command of this
   script and of every run, KL / perplexity / density / FLOPs curves over the steps, the
   quality-vs-compute table (zero-shot and distilled), and greedy continuations of fixed prompts
   by the teacher and every student, side by side.

Run folders (checkpoints) go to ``--runs`` (default ``results/tmp/distill_runs/``, not committed);
finished runs are reused when the script is run again (``--force`` redoes them).

    python scripts/distill_study.py --quick    # 1-2 minutes: a smoke test, not a result (in results/tmp/distill_quick/)
    python scripts/distill_study.py            # the study (hours on a CPU; see the README of the output)

Cost of the default study on a 2-core CPU: the teacher is the case study's dense run (``small``
preset, 512 tokens, 500 steps x 8,192 tokens: 40-60 minutes; skipped with ``--teacher``). Each
student then takes 300 steps x 2,048 tokens plus 13 evaluations of 10 x 2,048 tokens (teacher and
student forwards). Measured seconds per distillation step on a shared 2-core machine (batch
4 x 512): block 1.1, top-k 1.4, NSA 2.2, Performer 3.4 (chunk 16), learned mask 5.3 (its pair
gate, and its evaluations run twice: soft and thresholded) -- about 7, 9, 13, 20 and 38 minutes
per student, 1.5 hours for the five, so 2-2.5 hours in all with the teacher (less on a quiet
machine).
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))
from studies import choose_folders, run_command  # noqa: E402
STUDENTS = ("mask", "nsa", "performer", "topk", "block")
PROMPTS = [" The game was released in", " = = History = = \n", " In 1998 , the band"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny teacher, short sequences, few steps (1-2 minutes)")
    p.add_argument("--out", default=None,
                   help="folder for summary.json and the rest (default: results/distill/; with --quick: "
                        "results/tmp/distill_quick/, never a folder of committed results)")
    p.add_argument("--runs", default=None,
                   help="run folders with checkpoints, not committed (default: results/tmp/distill_runs/; "
                        "with --quick: results/tmp/distill_runs_quick/)")
    p.add_argument("--teacher", default=None, help="reuse this dense run folder instead of training a teacher")
    p.add_argument("--students", nargs="+", choices=STUDENTS, default=list(STUDENTS))
    p.add_argument("--preset", default=None, help="teacher size (default small; quick: tiny)")
    p.add_argument("--teacher-steps", type=int, default=None, help="default 500 (quick: 30)")
    p.add_argument("--seq-len", type=int, default=None, help="default 512 (quick: 64)")
    p.add_argument("--teacher-batch", type=int, default=None, help="default 16 (quick: 8)")
    p.add_argument("--steps", type=int, default=None, help="distillation steps (default 300; quick: 6)")
    p.add_argument("--batch-size", type=int, default=None, help="distillation batch (default 4; quick: 4)")
    p.add_argument("--eval-interval", type=int, default=None, help="default 25 (quick: 3)")
    p.add_argument("--eval-batches", type=int, default=None, help="default 10 (quick: 1)")
    p.add_argument("--gen-tokens", type=int, default=None, help="greedy tokens per prompt (default 40; quick: 8)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--force", action="store_true", help="redo runs that already finished")
    args = p.parse_args(argv)
    q = args.quick
    choose_folders(p, args, "distill", "distill_runs")
    defaults = dict(preset="tiny" if q else "small", teacher_steps=30 if q else 500, seq_len=64 if q else 512,
                    teacher_batch=8 if q else 16, steps=6 if q else 300, batch_size=4, eval_interval=3 if q else 25,
                    eval_batches=1 if q else 10, gen_tokens=8 if q else 40)
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    return args


def student_options(kind: str, n: int) -> list[str]:
    """Each student's settings at sequence length ``n`` (budgets of roughly a quarter of the pairs)."""
    if kind == "mask":
        return ["--hidden", "16", "--l1", "0.01", "--lr", "5e-3"]
    if kind == "nsa":
        return ["--nsa-block", str(max(8, n // 16)), "--nsa-select", "2", "--nsa-window", str(max(8, n // 8)),
                "--lr", "5e-3"]
    if kind == "performer":
        return ["--chunk-size", "16", "--lr", "1e-3"]  # chunk 16: 3x faster than 64 at n = 512 on a CPU
    if kind == "topk":
        return ["--topk", str(max(4, n // 8)), "--lr", "1e-3"]
    return ["--pattern", "local", "--window", str(max(8, n // 4)), "--block-size", str(min(64, max(16, n // 8))),
            "--lr", "1e-3"]




def _rel(path: Path) -> Path:
    path = path.resolve()
    return path.relative_to(ROOT) if path.is_relative_to(ROOT) else path


def _common(args) -> list[str]:
    out = ["--threads", str(args.threads)] if args.threads else []
    return out + (["--data-dir", args.data_dir] if args.data_dir else [])


def _finished(run: Path) -> bool:
    m = ROOT / run / "metrics.json"
    return m.is_file() and bool(json.loads(m.read_text()).get("finished"))


def train_teacher(args, log) -> Path:
    if args.teacher:
        return _rel(Path(args.teacher))
    run = _rel(Path(args.runs) / "teacher")
    if args.force and (ROOT / run / "checkpoint.pt").exists():
        (ROOT / run / "checkpoint.pt").unlink()
    if not _finished(run):
        cmd = [sys.executable, "-m", "sparse_core", "train", "--out", str(run), "--preset", args.preset,
               "--attention", "dense", "--seq-len", str(args.seq_len), "--batch-size", str(args.teacher_batch),
               "--steps", str(args.teacher_steps), "--warmup", str(max(1, args.teacher_steps // 20)),
               "--seed", str(args.seed), "--eval-interval", str(max(1, args.teacher_steps // 10)),
               "--eval-batches", str(args.eval_batches), "--checkpoint-interval", str(max(1, args.teacher_steps // 10)),
               "--no-progress", *_common(args)]
        if (ROOT / run / "checkpoint.pt").exists():
            cmd.append("--resume")
        run_command(cmd, log)
    return run


def distill_one(args, teacher: Path, kind: str, log) -> dict:
    run = _rel(Path(args.runs) / kind)
    if args.force and (ROOT / run / "checkpoint.pt").exists():
        (ROOT / run / "checkpoint.pt").unlink()
    if not _finished(run):
        cmd = [sys.executable, "-m", "sparse_core", "distill", "--teacher", str(teacher), "--out", str(run),
               "--student", kind, *student_options(kind, args.seq_len), "--seq-len", str(args.seq_len),
               "--batch-size", str(args.batch_size), "--steps", str(args.steps),
               "--warmup", str(max(1, args.steps // 10)), "--seed", str(args.seed),
               "--eval-interval", str(args.eval_interval), "--eval-batches", str(args.eval_batches),
               "--checkpoint-interval", str(args.eval_interval), "--no-progress", *_common(args)]
        if (ROOT / run / "checkpoint.pt").exists():
            cmd.append("--resume")
        run_command(cmd, log)
    m = json.loads((ROOT / run / "metrics.json").read_text())
    cols = m["history_columns"]["val"]
    curve = [dict(zip(cols, row)) for row in m["history"]["val"]]
    keep = ("kl", "student_ppl", "density", "flops_ratio", "student_tokens_per_s", "mean_gate")
    return {"command": m["command"], "run": str(run), "train_mode": m["train_mode"],
            "trainable_parameters": m["n_trainable"], "parameters": m["n_parameters"],
            "distill_config": m["distill_config"], "curve": curve,
            "zero_shot": {k: m["zero_shot"].get(k) for k in keep},
            "final": {k: m["last_eval"].get(k) for k in keep},
            "final_hard": ({k: m["last_eval_hard"].get(k) for k in keep} if "last_eval_hard" in m else None),
            "teacher_ppl": m["teacher_eval"]["teacher_ppl"], "val_tokens": m["teacher_eval"]["tokens"],
            "teacher_tokens_per_s": m["teacher_eval"]["teacher_tokens_per_s"],
            "train_tokens_per_s": m["train_tokens_per_s"], "peak_rss_bytes": m["peak_rss_bytes"]}


def samples(args, teacher_dir: Path, students: list[str]) -> dict:
    """Greedy continuations of PROMPTS by the teacher and every distilled student."""
    import torch

    from sparse_core.lm.distill import generate_full, load_student
    from sparse_core.lm.train import load_run

    if args.threads:
        torch.set_num_threads(args.threads)
    teacher, tok, _ = load_run(ROOT / teacher_dir)
    models = {"teacher": teacher}
    for kind in students:
        models[kind] = load_student(ROOT / Path(args.runs) / kind)[0]
    out = {"prompts": PROMPTS, "max_new_tokens": args.gen_tokens, "decoding": "greedy (temperature 0), no cache",
           "text": {}}
    for name, model in models.items():
        texts = []
        for prompt in PROMPTS:
            ids = torch.tensor([tok.encode(prompt).ids])
            new = generate_full(model, ids, args.gen_tokens)[0, ids.shape[1]:].tolist()
            texts.append(tok.decode(new))
        out["text"][name] = texts
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    Path(args.runs).mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(Path(args.runs) / "log.txt", "a") as log:
        teacher = train_teacher(args, log)
        results = {}
        for kind in args.students:
            print(f"distilling {kind} ...", flush=True)
            results[kind] = distill_one(args, teacher, kind, log)
    table = [{"student": k, "train_mode": r["train_mode"], "trainable_parameters": r["trainable_parameters"],
              "teacher_ppl": r["teacher_ppl"], "zero_shot_kl": r["zero_shot"]["kl"],
              "zero_shot_ppl": r["zero_shot"]["student_ppl"], "kl": r["final"]["kl"], "ppl": r["final"]["student_ppl"],
              "density": r["final"]["density"], "flops_ratio": r["final"]["flops_ratio"],
              "student_tokens_per_s": r["final"]["student_tokens_per_s"],
              "teacher_tokens_per_s": r["teacher_tokens_per_s"]} for k, r in results.items()]
    teacher_metrics = json.loads((ROOT / teacher / "metrics.json").read_text())
    summary = {
        "command": "python scripts/distill_study.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])),
        "quick": args.quick, "settings": {k: v for k, v in vars(args).items() if k not in ("out", "runs")},
        "teacher": {"run": str(teacher), "command": teacher_metrics.get("command"),
                    "model_config": teacher_metrics.get("model_config"),
                    "val_ppl_at_train_end": (teacher_metrics.get("last_eval") or {}).get("ppl")},
        "students": results, "table": table,
        "table_note": ("density: attended pairs / causal pairs; flops_ratio: attention multiply-adds / exact causal "
                       "attention's (projections excluded); tokens/s: forward only, measured on the machine that ran "
                       "the study (compare within one run)"),
        "samples": samples(args, teacher, list(results)),
        "wall_seconds": time.perf_counter() - t0,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"wrote {out / 'summary.json'} in {summary['wall_seconds']:.0f} s")
    for row in table:
        d = "n/a" if row["density"] is None else f"{row['density']:.3f}"
        print(f"{row['student']:>10}: KL {row['zero_shot_kl']:.4f} -> {row['kl']:.4f}, ppl {row['zero_shot_ppl']:.2f} "
              f"-> {row['ppl']:.2f} (teacher {row['teacher_ppl']:.2f}), density {d}, FLOPs x{row['flops_ratio']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
