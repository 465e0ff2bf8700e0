"""The language-model commands of ``python -m sparse_core``: ``train``, ``eval``, ``generate``.

Building the parser imports nothing heavy (torch loads only when a command runs), so the
names below repeat ``ATTENTION_KINDS`` and ``PRESETS`` of :mod:`sparse_core.models.gpt_neox`
(a test keeps them equal).
"""
from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

ATTENTION_KINDS = ("dense", "local", "strided", "fixed", "mixed")
PRESET_NAMES = ("pythia-70m", "pythia-160m", "tiny", "small")
ATTENTION_HELP = ("attention: dense (SDPA), local (sliding window), strided (Sparse Transformer strided), "
                  "fixed (Sparse Transformer fixed), mixed (half the heads local, half strided)")


def _passive_openmp() -> None:
    """Let idle OpenMP threads sleep instead of spinning (unless OMP_WAIT_POLICY is set).

    The block-sparse kernels (Numba's OpenMP layer) and torch each keep an OpenMP thread pool;
    by default idle threads spin for a while, and when the two alternate -- every layer of a sparse
    model -- the spinning pool steals the cores from the working one. On a 2-core machine this
    made decoding several times slower. Must run before torch (libgomp) is loaded.
    """
    import os

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _command_line() -> str:
    return "python -m sparse_core " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def _fmt_mib(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB"


def add_attention_arguments(p, positive_int, defaults: bool) -> None:
    d = (lambda v: v) if defaults else (lambda v: None)
    p.add_argument("--attention", choices=ATTENTION_KINDS, default=d("dense"), help=ATTENTION_HELP)
    p.add_argument("--window", type=positive_int, default=d(128), help="local window (previous positions kept)")
    p.add_argument("--stride", type=positive_int, default=d(64), help="stride of the strided/fixed patterns")
    p.add_argument("--block-size", type=positive_int, default=d(64), help="block size of the block-sparse kernel")


def add_train_arguments(p, positive_int, positive_float) -> None:
    p.add_argument("--out", required=True, help="run folder: checkpoint.pt, metrics.json, tokenizer.json")
    p.add_argument("--preset", choices=PRESET_NAMES, default="tiny", help="model size (default tiny)")
    add_attention_arguments(p, positive_int, defaults=True)
    p.add_argument("--vocab-size", type=positive_int, default=10000, help="BPE vocabulary (default 10000)")
    p.add_argument("--seq-len", type=positive_int, default=256)
    p.add_argument("--batch-size", type=positive_int, default=8)
    p.add_argument("--steps", type=positive_int, default=1000)
    p.add_argument("--lr", type=positive_float, default=1e-3, help="peak learning rate")
    p.add_argument("--min-lr-ratio", type=float, default=0.1, help="final learning rate / peak (cosine)")
    p.add_argument("--warmup", type=int, default=100, help="linear warmup steps")
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--grad-clip", type=positive_float, default=1.0, help="max global gradient norm")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-interval", type=positive_int, default=100, help="validate every N steps")
    p.add_argument("--eval-batches", type=positive_int, default=20, help="validation batches per evaluation")
    p.add_argument("--checkpoint-interval", type=positive_int, default=100, help="save every N steps")
    p.add_argument("--threads", type=positive_int, default=None, help="torch/numba threads (default: all)")
    p.add_argument("--data-dir", default=None, help="folder holding wikitext-2/ (default: see sparse_core.lm.data)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--no-progress", action="store_true", help="log lines instead of a progress bar")


def cmd_train(args) -> int:
    _passive_openmp()
    from ..lm.train import TrainConfig, train

    fields = {f: getattr(args, f) for f in ("preset", "attention", "window", "stride", "block_size", "vocab_size",
                                            "seq_len", "batch_size", "steps", "lr", "min_lr_ratio", "warmup",
                                            "weight_decay", "grad_clip", "seed", "eval_interval", "eval_batches",
                                            "checkpoint_interval", "threads", "data_dir")}
    cfg = TrainConfig(**fields)
    m = train(cfg, args.out, resume=args.resume, progress=not args.no_progress, command=_command_line())
    ev = m.get("last_eval")
    if ev:
        print(f"step {m['step']}/{cfg.steps}: val loss {ev['loss']:.4f}, perplexity {ev['ppl']:.2f}")
    tps = m.get("train_tokens_per_s")
    print(f"parameters {m['parameters']:,}; train {tps:,.0f} tokens/s" if tps else f"parameters {m['parameters']:,}",
          f"; peak RSS {_fmt_mib(m['peak_rss_bytes'])}; metrics in {Path(args.out) / 'metrics.json'}", sep="")
    return 0


def _overrides(args) -> dict:
    return {k: getattr(args, k) for k in ("attention", "window", "stride", "block_size") if getattr(args, k) is not None}


def _load_model(args):
    """(model, tokenizer, default seq_len) from --checkpoint or --hf-model."""
    if args.threads:
        import numba
        import torch

        torch.set_num_threads(args.threads)
        numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
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
    _passive_openmp()
    from ..lm.data.tokenizer import encode_split
    from ..lm.train import evaluate, peak_rss_bytes

    model, tok, seq_len = _load_model(args)
    seq_len = args.seq_len or seq_len
    tokens = encode_split(tok, args.split, args.data_dir)
    _warm_up(model, tokens[:seq_len])
    ev = evaluate(model, tokens, seq_len, args.batch_size, args.max_batches)
    ev.update(split=args.split, seq_len=seq_len, attention=model.config.attention, pattern=repr(model.pattern) if model.pattern is not None else "dense (SDPA, causal)",
              peak_rss_bytes=peak_rss_bytes(), command=_command_line())
    print(f"{args.split}: loss {ev['loss']:.4f}, perplexity {ev['ppl']:.2f} over {ev['tokens']:,} tokens "
          f"(seq_len {seq_len}); forward {ev['tokens_per_s']:,.0f} tokens/s; peak RSS {_fmt_mib(ev['peak_rss_bytes'])}")
    if args.json:
        Path(args.json).write_text(json.dumps(ev, indent=1))
    return 0


def cmd_generate(args) -> int:
    _passive_openmp()
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
             "command": _command_line()}
    rate = f"{stats['decode_tokens_per_s']:,.1f} tokens/s decoding" if stats["decode_tokens_per_s"] else "no decode steps"
    print(f"[{len(ids)} prompt tokens in {timings['prefill_s'] * 1e3:.1f} ms; {new} new tokens, {rate}; "
          f"peak RSS {_fmt_mib(stats['peak_rss_bytes'])}]", file=sys.stderr)
    if args.json:
        Path(args.json).write_text(json.dumps(stats, indent=1))
    return 0


def _clear_errors(fn):
    """Expected failures (missing data or checkpoint, offline download, settings that do not
    fit) print one line and exit with status 2 instead of a traceback."""
    import functools

    @functools.wraps(fn)
    def run(args) -> int:
        try:
            return fn(args)
        except (FileNotFoundError, FileExistsError, ImportError, RuntimeError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2

    return run


def add_parsers(sub, positive_int, positive_float) -> None:
    t = sub.add_parser("train", help="train the GPT-NeoX case-study model on WikiText-2",
                       description="Train (or --resume) a GPT-NeoX model with dense or block-sparse attention on "
                                   "WikiText-2: AdamW, warmup + cosine, clipping, periodic validation, atomic "
                                   "checkpoints; Ctrl-C saves.")
    add_train_arguments(t, positive_int, positive_float)
    t.set_defaults(func=_clear_errors(cmd_train))

    e = sub.add_parser("eval", help="validation/test loss and perplexity of a trained or Pythia model",
                       description="Loss and perplexity on a WikiText-2 split, forward tokens/s and peak memory.")
    add_model_source_arguments(e, positive_int)
    e.add_argument("--split", choices=["valid", "test"], default="valid")
    e.add_argument("--seq-len", type=positive_int, default=None, help="default: the run's (512 for --hf-model)")
    e.add_argument("--batch-size", type=positive_int, default=8)
    e.add_argument("--max-batches", type=positive_int, default=None, help="default: the whole split")
    e.add_argument("--data-dir", default=None, help="folder holding wikitext-2/")
    e.set_defaults(func=_clear_errors(cmd_eval))

    g = sub.add_parser("generate", help="sample text from a trained or Pythia model",
                       description="Sample with temperature / top-k using the key-value cache; reports tokens/s.")
    add_model_source_arguments(g, positive_int)
    g.add_argument("--prompt", default=" = Valkyria Chronicles III = \n", help="text to continue")
    g.add_argument("--max-new-tokens", type=positive_int, default=100)
    g.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    g.add_argument("--top-k", type=positive_int, default=40)
    g.add_argument("--seed", type=int, default=0)
    g.set_defaults(func=_clear_errors(cmd_generate))
