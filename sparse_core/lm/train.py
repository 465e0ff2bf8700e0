r"""Training and evaluation of the GPT-NeoX case-study model on WikiText-2.

* Optimiser: AdamW (betas 0.9/0.95; weight decay on the weight matrices of the blocks and the
  output layer, not on biases, LayerNorms or the input embedding), gradient clipping by global norm.
* Schedule (:func:`lr_at`): linear warmup from ``lr / warmup`` to ``lr`` over ``warmup`` steps,
  then a cosine from ``lr`` down to ``min_lr_ratio * lr`` at the last step:
  :math:`\eta_t = \eta_{\min} + \tfrac12(\eta - \eta_{\min})(1 + \cos(\pi\,\tfrac{t - w}{T - w}))`.
* Seeded: the initial weights from ``seed``, the batch order from ``(seed, epoch)``
  (:class:`~sparse_core.lm.data.batching.TokenBatches`), so step ``k``'s batch is known from ``k``.
* Checkpoints (``checkpoint.pt`` in the run folder) are written atomically (a temporary file, then
  ``os.replace``), every ``checkpoint_interval`` steps, at the end and on Ctrl-C; they hold the
  weights, the optimiser state, the step, the RNG states and the history, so a resumed run
  continues with bit-identical losses. Ctrl-C finishes the current step, saves and returns (a
  second Ctrl-C aborts at once).
* Measured, not claimed: training tokens/s is tokens over wall time of the optimisation steps
  (evaluation and checkpoint writing excluded; the first step after each start or resume, which loads the
  Numba kernels, is excluded too); evaluation tokens/s is forward-only. Peak memory is the peak
  resident set size of the process (``resource.getrusage(RUSAGE_SELF).ru_maxrss``), which includes
  Python, torch and the data; it never decreases, so one process per configuration compares them.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import resource
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from .data.batching import TokenBatches, eval_batches
from ..models.gpt_neox import GPTNeoX, GPTNeoXConfig, preset

__all__ = ["TrainConfig", "lr_at", "make_optimizer", "evaluate", "train", "load_run", "peak_rss_bytes",
           "CHECKPOINT", "METRICS"]

CHECKPOINT, METRICS, TOKENIZER = "checkpoint.pt", "metrics.json", "tokenizer.json"
# fields that may change when resuming (they do not change the optimisation)
_RESUMABLE_CHANGES = {"eval_interval", "eval_batches", "checkpoint_interval", "threads", "data_dir"}


@dataclass
class TrainConfig:
    preset: str = "tiny"
    attention: str = "dense"
    window: int = 128
    stride: int = 64
    block_size: int = 64
    vocab_size: int = 10000
    seq_len: int = 256
    batch_size: int = 8
    steps: int = 1000
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    warmup: int = 100
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    seed: int = 0
    eval_interval: int = 100
    eval_batches: int = 20
    checkpoint_interval: int = 100
    threads: int | None = None
    data_dir: str | None = None

    def __post_init__(self):
        for name in ("seq_len", "batch_size", "steps", "eval_interval", "eval_batches", "checkpoint_interval",
                     "vocab_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ValueError(f"`{name}` must be a positive integer, got {v!r}")
        if isinstance(self.warmup, bool) or not isinstance(self.warmup, int) or self.warmup < 0:
            raise ValueError(f"`warmup` must be a non-negative integer, got {self.warmup!r}")
        if not (self.lr > 0 and 0 <= self.min_lr_ratio <= 1 and self.weight_decay >= 0 and self.grad_clip > 0):
            raise ValueError("need lr > 0, 0 <= min_lr_ratio <= 1, weight_decay >= 0, grad_clip > 0")

    def model_config(self, vocab_size: int | None = None) -> GPTNeoXConfig:
        return preset(self.preset, vocab_size=vocab_size or self.vocab_size, attention=self.attention,
                      window=self.window, stride=self.stride, block_size=self.block_size)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate of optimisation step ``step`` (0-based): warmup, then cosine to the minimum."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    lo = cfg.lr * cfg.min_lr_ratio
    progress = (step - cfg.warmup) / max(1, cfg.steps - 1 - cfg.warmup)
    return lo + 0.5 * (cfg.lr - lo) * (1 + math.cos(math.pi * min(1.0, progress)))


def make_optimizer(model: GPTNeoX, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW; weight decay on the 2-D weight matrices of the blocks and the output layer only."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if p.ndim == 2 and not name.startswith("embed_in") else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95), eps=1e-8)


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far (Linux reports KiB, macOS bytes)."""
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(r if sys.platform == "darwin" else r * 1024)


@torch.no_grad()
def evaluate(model: GPTNeoX, tokens, seq_len: int, batch_size: int, max_batches: int | None = None) -> dict:
    """Mean next-token loss (nats) over every predicted token of the first ``max_batches`` batches,
    its perplexity, and forward-only tokens/s."""
    was = model.training
    model.eval()
    total, count, seconds = 0.0, 0, 0.0
    try:
        for x, y in eval_batches(tokens, seq_len, batch_size, max_batches):
            t0 = time.perf_counter()
            logits = model(x)
            seconds += time.perf_counter() - t0
            total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1),
                                     reduction="sum").item()
            count += y.numel()
    finally:
        model.train(was)
    if count == 0:
        raise ValueError(f"no evaluation sequences of length {seq_len}: the split has too few tokens")
    loss = total / count
    return {"loss": loss, "ppl": math.exp(min(loss, 700.0)), "tokens": count,
            "tokens_per_s": count / seconds if seconds > 0 else float("nan")}


def _rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def _atomic_torch_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _atomic_json(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


class _StopFlag:
    """Ctrl-C (SIGINT) sets a flag checked between steps; a second Ctrl-C interrupts at once."""

    def __init__(self):
        self.requested = False
        self._old = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handler)
        return self

    def _handler(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
        return False


def _load_tokens(cfg: TrainConfig):
    from .data.tokenizer import encode_split, load_or_train_tokenizer

    tok = load_or_train_tokenizer(cfg.vocab_size, cfg.data_dir)
    return encode_split(tok, "train", cfg.data_dir), encode_split(tok, "valid", cfg.data_dir), tok


def train(cfg: TrainConfig, out_dir: str | os.PathLike, *, resume: bool = False, train_tokens=None,
          val_tokens=None, tokenizer=None, progress: bool = True, callback: Callable[[int, float], None] | None = None,
          command: str | None = None, log: Callable[[str], None] = print) -> dict:
    """Train (or resume) a run in ``out_dir``; returns the metrics also written to ``metrics.json``.

    Without ``train_tokens``/``val_tokens`` the WikiText-2 splits are loaded and encoded with the
    cached BPE of ``cfg.vocab_size`` tokens. ``callback(step, loss)`` runs after every step.
    """
    from tqdm.auto import tqdm

    out = Path(out_dir)
    ckpt_path = out / CHECKPOINT
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
        import numba

        numba.set_num_threads(min(cfg.threads, numba.config.NUMBA_NUM_THREADS))
    state = None
    if ckpt_path.exists():
        if not resume:
            raise FileExistsError(f"{ckpt_path} exists: pass resume=True (--resume) to continue it, or choose "
                                  "another output folder")
        state = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        saved = TrainConfig(**state["train_config"])
        diff = {k: (getattr(saved, k), getattr(cfg, k)) for k in dataclasses.asdict(cfg)
                if k not in _RESUMABLE_CHANGES and getattr(saved, k) != getattr(cfg, k)}
        if diff:
            raise ValueError(f"cannot resume {ckpt_path} with different settings (saved, given): {diff}")
    if train_tokens is None or val_tokens is None:
        train_tokens, val_tokens, tokenizer = _load_tokens(cfg)
    vocab = tokenizer.get_vocab_size() if tokenizer is not None else cfg.vocab_size
    if int(np.max(train_tokens)) >= vocab or int(np.max(val_tokens)) >= vocab:
        raise ValueError(f"token ids reach {max(int(np.max(train_tokens)), int(np.max(val_tokens)))}, beyond the "
                         f"vocabulary of {vocab}")
    batches = TokenBatches(train_tokens, cfg.seq_len, cfg.batch_size, cfg.seed)

    torch.manual_seed(cfg.seed)
    model = GPTNeoX(cfg.model_config(vocab))
    opt = make_optimizer(model, cfg)
    history = {"train": [], "val": []}
    step, train_seconds, train_tokens_seen = 0, 0.0, 0
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        _set_rng_state(state["rng"])
        step, history = state["step"], state["history"]
        log(f"resuming {ckpt_path} at step {step}")
    out.mkdir(parents=True, exist_ok=True)
    if tokenizer is not None:
        tokenizer.save(str(out / TOKENIZER))

    n_params = model.num_parameters()
    metrics: dict[str, Any] = {}

    def save(interrupted=False):
        _atomic_torch_save({"format": 1, "model_config": model.config.to_dict(),
                            "train_config": dataclasses.asdict(cfg), "model": model.state_dict(),
                            "optimizer": opt.state_dict(), "step": step, "rng": _rng_state(),
                            "history": history}, ckpt_path)
        metrics.update({
            "command": command, "model_config": model.config.to_dict(), "train_config": dataclasses.asdict(cfg),
            "parameters": n_params, "step": step, "finished": step >= cfg.steps, "interrupted": interrupted,
            "history": history, "train_tokens_per_s": train_tokens_seen / train_seconds if train_seconds else None,
            "train_tokens_per_s_note": "optimisation steps since this start or resume, after the first; eval and saving excluded",
            "peak_rss_bytes": peak_rss_bytes(), "peak_memory_note": "resource.getrusage ru_maxrss of the process",
            "torch_threads": torch.get_num_threads(),
        })
        _atomic_json(metrics, out / METRICS)

    def validate():
        ev = evaluate(model, val_tokens, cfg.seq_len, cfg.batch_size, cfg.eval_batches)
        history["val"].append([step, ev["loss"], ev["ppl"]])
        metrics["last_eval"] = ev
        return ev

    model.train()
    first = True
    interrupted = False
    bar = tqdm(total=cfg.steps, initial=step, disable=not progress, unit="step", dynamic_ncols=True)
    with _StopFlag() as stop:
        while step < cfg.steps:
            x, y = batches.batch(step)
            lr = lr_at(step, cfg)
            for g in opt.param_groups:
                g["lr"] = lr
            t0 = time.perf_counter()
            logits = model(x)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            dt = time.perf_counter() - t0
            step += 1
            loss_v = loss.item()
            if not math.isfinite(loss_v):
                raise FloatingPointError(f"loss is {loss_v} at step {step}; lower the learning rate")
            history["train"].append([step, loss_v, lr, float(gnorm)])
            if not first:
                train_seconds += dt
                train_tokens_seen += x.numel()
            first = False
            post = {"loss": f"{loss_v:.3f}", "lr": f"{lr:.2e}",
                    "tok/s": f"{(train_tokens_seen / train_seconds) if train_seconds else x.numel() / dt:,.0f}"}
            if step % cfg.eval_interval == 0 or step == cfg.steps:
                ev = validate()
                post.update(val=f"{ev['loss']:.3f}", ppl=f"{ev['ppl']:.1f}")
                if not progress:
                    log(f"step {step}: train loss {loss_v:.4f}, val loss {ev['loss']:.4f}, ppl {ev['ppl']:.2f}")
            bar.set_postfix(post, refresh=False)
            bar.update(1)
            if callback is not None:
                callback(step, loss_v)
            if stop.requested:
                interrupted = True
                break
            if step % cfg.checkpoint_interval == 0 or step == cfg.steps:
                save()
        bar.close()
        if interrupted:
            save(interrupted=True)
            log(f"interrupted: saved step {step} to {ckpt_path}; continue with --resume")
    if "step" not in metrics:  # nothing left to do (a finished run resumed): report it as saved
        save()
    return metrics


def load_run(run_dir: str | os.PathLike, **config_overrides: Any):
    """``(model, tokenizer or None, checkpoint dict)`` of a training run folder."""
    run = Path(run_dir)
    path = run / CHECKPOINT
    if not path.is_file():
        raise FileNotFoundError(f"no {CHECKPOINT} in {run} (a folder written by `python -m sparse_core train`)")
    state = torch.load(path, map_location="cpu", weights_only=False)
    config = GPTNeoXConfig.from_dict({**state["model_config"], **config_overrides})
    model = GPTNeoX(config)
    model.load_state_dict(state["model"])
    tok = None
    if (run / TOKENIZER).is_file():
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(run / TOKENIZER))
    return model.eval(), tok, state
