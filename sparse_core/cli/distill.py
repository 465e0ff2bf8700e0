"""The ``distill`` command of ``python -m sparse_core`` (see :mod:`sparse_core.lm.distill`).

Building the parser imports nothing heavy; the names repeat ``STUDENT_KINDS``, ``TRAIN_MODES``
and ``BLOCK_PATTERNS`` of :mod:`sparse_core.lm.distill` (a test keeps them equal).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from .common import (DISTRIBUTED_HELP, ENGINE_FIELDS, add_engine_arguments, clear_errors, command_line, fmt_mib,
                     is_main_process, passive_openmp)

STUDENT_KINDS = ("mask", "nsa", "performer", "topk", "block")
TRAIN_MODES = ("auto", "new", "attention")
BLOCK_PATTERNS = ("local", "strided", "fixed", "mixed")
_FIELDS = ("student", "train", "temperature", "hidden", "l1", "nsa_block", "nsa_select", "nsa_window", "n_features",
           "chunk_size", "topk", "pattern", "window", "stride", "block_size") + ENGINE_FIELDS


def _teacher(args):
    """(teacher model, tokenizer, default seq_len, source string)."""
    if bool(args.teacher) == bool(args.hf_model):
        raise SystemExit("error: give exactly one of --teacher RUN_DIR or --hf-model NAME_OR_DIR")
    if args.teacher:
        from ..lm.train import load_run

        model, tok, state = load_run(args.teacher)
        if tok is None:
            raise FileNotFoundError(f"{args.teacher} has no tokenizer.json")
        if model.config.attention != "dense" or model.custom_pattern:
            raise ValueError(f"the teacher must be a dense model; {args.teacher} has attention="
                             f"{model.config.attention!r}")
        return model, tok, state["train_config"]["seq_len"], str(Path(args.teacher).resolve())
    from tokenizers import Tokenizer

    from ..models.hf_loading import from_pretrained, resolve_checkpoint

    folder = resolve_checkpoint(args.hf_model)
    if not (folder / "tokenizer.json").is_file():
        raise FileNotFoundError(f"{folder} has no tokenizer.json")
    return from_pretrained(folder).eval(), Tokenizer.from_file(str(folder / "tokenizer.json")), 512, str(args.hf_model)


def cmd_distill(args) -> int:
    passive_openmp()
    from ..lm.data.tokenizer import encode_split
    from ..lm.distill import DistillConfig, distill
    from ..lm.engine import exit_status, set_threads

    set_threads(args.threads)

    teacher, tok, seq_len, source = _teacher(args)
    fields = {f: getattr(args, f) for f in _FIELDS}
    fields["seq_len"] = args.seq_len or seq_len
    cfg = DistillConfig(**fields)
    train_tokens = encode_split(tok, "train", args.data_dir)
    val_tokens = encode_split(tok, "valid", args.data_dir)
    m = distill(cfg, args.out, teacher, train_tokens=train_tokens, val_tokens=val_tokens, tokenizer=tok,
                resume=args.resume, teacher_source=source, progress=not args.no_progress, command=command_line())
    if not is_main_process():
        return exit_status(m)
    z, ev, te = m.get("zero_shot"), m.get("last_eval"), m.get("teacher_eval")

    def fmt(e):
        dens = "n/a" if e["density"] is None else f"{e['density']:.3f}"
        return (f"KL {e['kl']:.4f}, student ppl {e['student_ppl']:.2f}, density {dens}, "
                f"attention FLOPs x{e['flops_ratio']:.3f} of dense, student {e['student_tokens_per_s']:,.0f} tokens/s")

    print(f"teacher ppl {te['teacher_ppl']:.2f} ({te['teacher_tokens_per_s']:,.0f} tokens/s) on {te['tokens']:,} "
          f"validation tokens")
    print(f"zero-shot {cfg.student}: {fmt(z)}")
    print(f"step {m['step']}/{cfg.steps} {cfg.student}: {fmt(ev)}")
    if "last_eval_hard" in m:
        print(f"  thresholded mask (g > 1/2): {fmt(m['last_eval_hard'])}")
    tps = m.get("train_tokens_per_s")
    print(f"trained {m['n_trainable']:,} of {m['n_parameters']:,} parameters ({m['train_mode']})"
          + (f"; train {tps:,.0f} tokens/s" if tps else "")
          + f"; peak RSS {fmt_mib(m['peak_rss_bytes'])}; metrics in {Path(args.out) / 'metrics.json'}")
    return exit_status(m)


def add_parser(sub, positive_int, positive_float) -> None:
    p = sub.add_parser("distill", help="distil a cheaper attention from a dense teacher (KL loss)",
                       description="Freeze a dense teacher, copy it with a cheaper attention (learned mask, NSA, "
                                   "Performer, top-k or a fixed block-sparse pattern), train only the attention "
                                   "parameters to minimise KL(teacher || student) on WikiText-2; reports the "
                                   "zero-shot student first, then KL, perplexities, attention density/FLOPs and "
                                   "tokens/s. Checkpoints like `train`; Ctrl-C or SIGTERM saves. Runs data-parallel "
                                   "under torchrun.",
                       epilog=DISTRIBUTED_HELP.format(cmd="distill"), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", help="a dense run folder written by `train`")
    p.add_argument("--hf-model", help="a Hugging Face GPT-NeoX checkpoint as the teacher (local folder or Hub name)")
    p.add_argument("--out", required=True, help="run folder: checkpoint.pt, metrics.json, tokenizer.json")
    p.add_argument("--student", choices=STUDENT_KINDS, default="mask",
                   help="mask (learned gate, L1), nsa, performer, topk, block (fixed pattern)")
    p.add_argument("--train", choices=TRAIN_MODES, default="auto",
                   help="what is trained: new (the student's added parameters), attention (all of each layer's "
                        "attention: q/k/v/output projections too), auto (new if the student adds any)")
    p.add_argument("--temperature", type=positive_float, default=1.0, help="KL temperature T (loss scaled by T^2)")
    p.add_argument("--hidden", type=positive_int, default=16, help="mask: gate MLP width")
    p.add_argument("--l1", type=float, default=0.01, help="mask: weight of the L1 penalty on the gates")
    p.add_argument("--nsa-block", type=positive_int, default=16, help="nsa: compression/selection block")
    p.add_argument("--nsa-select", type=positive_int, default=4, help="nsa: blocks selected per query")
    p.add_argument("--nsa-window", type=int, default=32, help="nsa: sliding window")
    p.add_argument("--n-features", type=positive_int, default=None, help="performer: random features")
    p.add_argument("--chunk-size", type=positive_int, default=64, help="performer: causal chunk")
    p.add_argument("--topk", type=positive_int, default=32, help="topk: keys kept per query")
    p.add_argument("--pattern", choices=BLOCK_PATTERNS, default="local", help="block: the fixed pattern")
    p.add_argument("--window", type=positive_int, default=32, help="block: local window")
    p.add_argument("--stride", type=positive_int, default=32, help="block: stride (strided, fixed, mixed)")
    p.add_argument("--block-size", type=positive_int, default=32, help="block: kernel block size")
    add_engine_arguments(p, seq_len=None, seq_len_help="default: the teacher's (512 for --hf-model)", steps=200,
                         warmup=20, weight_decay=0.0, eval_interval=50, eval_batches=10, checkpoint_interval=50)
    p.set_defaults(func=clear_errors(cmd_distill))
