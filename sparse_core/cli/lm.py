"""The language-model commands of ``python -m sparse_core``: ``train``, ``eval``, ``generate``.

Building the parser imports nothing heavy (torch loads only when a command runs), so the
names below repeat ``ATTENTION_KINDS`` and ``PRESETS`` of :mod:`sparse_core.models.gpt_neox`
(a test keeps them equal).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .common import (DISTRIBUTED_HELP, ENGINE_FIELDS, add_engine_arguments, clear_errors, command_line,
                     existing_dir, fmt_mib, is_main_process, passive_openmp)

ATTENTION_KINDS = ("dense", "local", "strided", "fixed", "mixed", "global_local")
PRESET_NAMES = ("pythia-70m", "pythia-160m", "tiny", "small", "long")
MODEL_FIELDS = ("preset", "attention", "window", "stride", "block_size", "num_global", "vocab_size", "num_kv_heads")
ATTENTION_HELP = ("attention: dense (SDPA), local (sliding window), strided (Sparse Transformer strided), "
                  "fixed (Sparse Transformer fixed), mixed (half the heads local, half strided), "
                  "global_local (the local window plus the first --num-global positions, seen by all)")


def add_attention_arguments(p, positive_int, defaults: bool) -> None:
    d = (lambda v: v) if defaults else (lambda v: None)
    own = "" if defaults else " (default: the model's own)"
    p.add_argument("--attention", choices=ATTENTION_KINDS, default=d("dense"), help=ATTENTION_HELP + own)
    p.add_argument("--window", type=positive_int, default=d(128), help="local window (previous positions kept)" + own)
    p.add_argument("--stride", type=positive_int, default=d(64), help="stride of the strided/fixed patterns" + own)
    p.add_argument("--block-size", type=positive_int, default=d(64),
                   help="block size of the block-sparse kernel" + own)
    p.add_argument("--num-global", type=positive_int, default=d(16),
                   help="global positions 0 .. N-1 of --attention global_local" + own)


def add_train_arguments(p, positive_int, positive_float) -> None:
    p.add_argument("--out", required=True, help="run folder: checkpoint.pt, metrics.json, tokenizer.json")
    p.add_argument("--preset", choices=PRESET_NAMES, default="tiny", help="model size (default tiny)")
    p.add_argument("--num-kv-heads", type=positive_int, default=None,
                   help="key/value heads, a divisor of the preset's heads: fewer is grouped-query attention, "
                        "1 multi-query (default: the preset's heads)")
    add_attention_arguments(p, positive_int, defaults=True)
    p.add_argument("--vocab-size", type=positive_int, default=10000, help="BPE vocabulary (default 10000)")
    add_engine_arguments(p)


def cmd_train(args) -> int:
    passive_openmp()
    from ..lm.engine import exit_status
    from ..lm.train import TrainConfig, train

    fields = {f: getattr(args, f) for f in MODEL_FIELDS + ENGINE_FIELDS}
    cfg = TrainConfig(**fields)
    m = train(cfg, args.out, resume=args.resume, progress=not args.no_progress, command=command_line())
    if not is_main_process():
        return exit_status(m)
    ev = m.get("last_eval")
    if ev:
        print(f"step {m['step']}/{cfg.steps}: val loss {ev['loss']:.4f}, perplexity {ev['ppl']:.2f}")
    tps = m.get("train_tokens_per_s")
    print(f"parameters {m['parameters']:,}; train {tps:,.0f} tokens/s" if tps else f"parameters {m['parameters']:,}",
          f"; peak RSS {fmt_mib(m['peak_rss_bytes'])}; metrics in {Path(args.out) / 'metrics.json'}", sep="")
    return exit_status(m)


def _overrides(args) -> dict:
    return {k: getattr(args, k) for k in ("attention", "window", "stride", "block_size", "num_global") if getattr(args, k) is not None}


def _load_model(args):
    """(model, tokenizer, default seq_len) from --checkpoint or --hf-model."""
    from ..lm.engine import set_threads

    set_threads(args.threads)
    if bool(args.checkpoint) == bool(args.hf_model):
        raise SystemExit("error: give exactly one of --checkpoint RUN_DIR or --hf-model NAME_OR_DIR")
    if args.checkpoint:
        from ..lm.train import load_run

        model, tok, state = load_run(args.checkpoint, **_overrides(args))
        if tok is None:
            raise SystemExit(f"error: {args.checkpoint} has no tokenizer.json")
        return model, tok, state["train_config"]["seq_len"]
    from tokenizers import Tokenizer

    from ..models.hf_loading import from_pretrained, resolve_checkpoint

    folder = resolve_checkpoint(args.hf_model)
    if not (folder / "tokenizer.json").is_file():
        raise SystemExit(f"error: {folder} has no tokenizer.json")
    return from_pretrained(folder, **_overrides(args)).eval(), Tokenizer.from_file(str(folder / "tokenizer.json")), 512


def add_model_source_arguments(p, positive_int) -> None:
    p.add_argument("--checkpoint", help="a run folder written by `train`")
    p.add_argument("--hf-model", help="a Hugging Face GPT-NeoX checkpoint: local folder or Hub name (needs network)")
    add_attention_arguments(p, positive_int, defaults=False)
    p.add_argument("--threads", type=positive_int, default=None, help="torch/numba threads (default: all)")
    p.add_argument("--json", metavar="FILE", help="also write the numbers as JSON")


def _warm_up(model, ids, decode: bool = False) -> None:
    """One untimed forward (and two decode steps): the first call of a process loads the Numba
    kernels from their cache and imports parts of torch lazily, which is not the model's speed."""
    import torch

    from ..models.gpt_neox import generate

    x = torch.as_tensor(ids, dtype=torch.int64).reshape(1, -1)
    generate(model, x, 3 if decode else 0, temperature=0)


def cmd_eval(args) -> int:
    passive_openmp()
    from ..lm.data.tokenizer import encode_split
    from ..lm.train import evaluate, peak_rss_bytes

    model, tok, seq_len = _load_model(args)
    seq_len = args.seq_len or seq_len
    tokens = encode_split(tok, args.split, args.data_dir)
    _warm_up(model, tokens[:seq_len])
    ev = evaluate(model, tokens, seq_len, args.batch_size, args.max_batches, per_position=args.per_position)
    ev.update(split=args.split, seq_len=seq_len, attention=model.config.attention, pattern=repr(model.pattern) if model.pattern is not None else "dense (SDPA, causal)",
              peak_rss_bytes=peak_rss_bytes(), command=command_line())
    print(f"{args.split}: loss {ev['loss']:.4f}, perplexity {ev['ppl']:.2f} over {ev['tokens']:,} tokens "
          f"(seq_len {seq_len}); forward {ev['tokens_per_s']:,.0f} tokens/s; peak RSS {fmt_mib(ev['peak_rss_bytes'])}")
    if args.json:
        Path(args.json).write_text(json.dumps(ev, indent=1))
    return 0


def cmd_generate(args) -> int:
    passive_openmp()
    import torch

    from ..models.gpt_neox import generate
    from ..lm.train import peak_rss_bytes

    model, tok, _ = _load_model(args)
    ids = tok.encode(args.prompt).ids
    if not ids:
        raise SystemExit("error: --prompt encodes to no tokens")
    _warm_up(model, ids, decode=True)
    timings: dict = {}
    out = generate(model, torch.tensor([ids]), args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                   generator=torch.Generator().manual_seed(args.seed), timings=timings)
    text = tok.decode(out[0].tolist())
    print(text)
    new = out.shape[1] - len(ids)
    stats = {"prompt_tokens": len(ids), "new_tokens": new, **timings,
             "timing_note": "after one untimed warm-up call; decode = steps after the prompt's forward",
             "decode_tokens_per_s": (new - 1) / timings["decode_s"] if new > 1 and timings["decode_s"] > 0 else None,
             "peak_rss_bytes": peak_rss_bytes(), "attention": model.config.attention, "text": text,
             "command": command_line()}
    rate = f"{stats['decode_tokens_per_s']:,.1f} tokens/s decoding" if stats["decode_tokens_per_s"] else "no decode steps"
    print(f"[{len(ids)} prompt tokens in {timings['prefill_s'] * 1e3:.1f} ms; {new} new tokens, {rate}; "
          f"peak RSS {fmt_mib(stats['peak_rss_bytes'])}]", file=sys.stderr)
    if args.json:
        Path(args.json).write_text(json.dumps(stats, indent=1))
    return 0


def add_parsers(sub, positive_int, positive_float) -> None:
    t = sub.add_parser("train", help="train the GPT-NeoX case-study model on WikiText-2",
                       description="Train (or --resume) a GPT-NeoX model with dense or block-sparse attention on "
                                   "WikiText-2: AdamW, warmup + cosine, clipping, periodic validation, atomic "
                                   "checkpoints; Ctrl-C or SIGTERM saves. Runs data-parallel under torchrun.",
                       epilog=DISTRIBUTED_HELP.format(cmd="train"), formatter_class=argparse.RawDescriptionHelpFormatter)
    add_train_arguments(t, positive_int, positive_float)
    t.set_defaults(func=clear_errors(cmd_train))

    e = sub.add_parser("eval", help="validation/test loss and perplexity of a trained or Pythia model",
                       description="Loss and perplexity on a WikiText-2 split, forward tokens/s and peak memory.")
    add_model_source_arguments(e, positive_int)
    e.add_argument("--split", choices=["valid", "test"], default="valid", help="WikiText-2 split to score")
    e.add_argument("--seq-len", type=positive_int, default=None, help="default: the run's (512 for --hf-model)")
    e.add_argument("--batch-size", type=positive_int, default=8, help="sequences per forward pass")
    e.add_argument("--max-batches", type=positive_int, default=None, help="default: the whole split")
    e.add_argument("--data-dir", type=existing_dir, default=None, help="folder holding wikitext-2/")
    e.add_argument("--per-position", action="store_true",
                   help="also the mean loss at each position of the sequence (in the --json file)")
    e.set_defaults(func=clear_errors(cmd_eval))

    g = sub.add_parser("generate", help="sample text from a trained or Pythia model",
                       description="Sample with temperature / top-k using the key-value cache; reports tokens/s.")
    add_model_source_arguments(g, positive_int)
    g.add_argument("--prompt", default=" = Valkyria Chronicles III = \n", help="text to continue")
    g.add_argument("--max-new-tokens", type=positive_int, default=100, help="tokens to generate")
    g.add_argument("--temperature", type=float, default=0.8, help="softmax temperature of sampling; 0 = greedy")
    g.add_argument("--top-k", type=positive_int, default=40, help="sample among the k most likely tokens")
    g.add_argument("--seed", type=int, default=0, help="seed of the sampler")
    g.set_defaults(func=clear_errors(cmd_generate))
