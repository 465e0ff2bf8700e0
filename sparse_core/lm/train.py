r"""Training and evaluation of the GPT-NeoX case-study model on WikiText-2.

* Optimiser: AdamW (betas 0.9/0.95; weight decay on the weight matrices of the blocks and the
  output layer, not on biases, LayerNorms or the input embedding), gradient clipping by global norm.
* Schedule (:func:`lr_at`): linear warmup from ``lr / warmup`` to ``lr`` over ``warmup`` steps,
  then a cosine from ``lr`` down to ``min_lr_ratio * lr`` at the last step:
  :math:`\eta_t = \eta_{\min} + \tfrac12(\eta - \eta_{\min})(1 + \cos(\pi\,\tfrac{t - w}{T - w}))`.
* Seeded: the initial weights from ``seed``, the batch order from ``(seed, epoch)``
  (:class:`~sparse_core.lm.data.batching.TokenBatches`), so step ``k``'s batch is known from ``k``.
* The loop is the engine's (:func:`sparse_core.lm.engine.fit`), with the language-model loss as its
  plug-in (:class:`LanguageModelObjective`). Checkpoints (``checkpoint.pt`` in the run folder)
  are written atomically every ``checkpoint_interval`` steps, at the end and when stopped; they hold
  the weights, the optimiser state, the step, the RNG states, the batch order and the history, so
  a resumed run continues with bit-identical losses. Ctrl-C or SIGTERM finishes the current step,
  saves and returns (a second Ctrl-C aborts at once).
* Under ``torchrun`` it trains data-parallel (:mod:`sparse_core.lm.distributed`); ``batch_size`` is
  the global batch, split among the processes.
* Measured, not claimed: training tokens/s is tokens over wall time of the optimisation steps
  (evaluation and checkpoint writing excluded; the first step after each start or resume, which loads the
  Numba kernels, is excluded too); evaluation tokens/s is forward-only. Peak memory is the peak
  resident set size of the process (``resource.getrusage(RUSAGE_SELF).ru_maxrss``), which includes
  Python, torch and the data; it never decreases, so one process per configuration compares them.
"""
from __future__ import annotations

import dataclasses
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from . import distributed
from .data.batching import eval_batches
from .engine import (CHECKPOINT, METRICS, TOKENIZER, EngineConfig, Objective, Run, fit, load_checkpoint_file, lr_at,
                     peak_rss_bytes, read_checkpoint, resolve_device, set_threads)
from ..models.gpt_neox import GPTNeoX, GPTNeoXConfig, preset

__all__ = ["TrainConfig", "lr_at", "make_optimizer", "evaluate", "train", "load_run", "peak_rss_bytes",
           "LanguageModelObjective", "CHECKPOINT", "METRICS"]


@dataclass
class TrainConfig(EngineConfig):
    """Settings of a training run: the model (``preset``, attention) and :class:`EngineConfig`'s.

    Defined in Chapter 9.
    """

    preset: str = "tiny"
    attention: str = "dense"
    window: int = 128
    stride: int = 64
    block_size: int = 64
    #: global positions of ``attention="global_local"``
    num_global: int = 16
    vocab_size: int = 10000
    #: key/value heads (None: the preset's ``num_heads``); fewer is grouped-query attention
    num_kv_heads: int | None = None

    POSITIVE_INTS = ("vocab_size", "num_global")

    def check(self) -> None:
        super().check()
        if self.num_kv_heads is not None:  # the model's checks, before any data is loaded
            preset(self.preset, num_kv_heads=self.num_kv_heads)

    def model_config(self, vocab_size: int | None = None) -> GPTNeoXConfig:
        return preset(self.preset, vocab_size=vocab_size or self.vocab_size, attention=self.attention,
                      window=self.window, stride=self.stride, block_size=self.block_size,
                      num_global=self.num_global, num_kv_heads=self.num_kv_heads)


def make_optimizer(model: GPTNeoX, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW; weight decay on the 2-D weight matrices of the blocks and the output layer only."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if p.ndim == 2 and not name.startswith("embed_in") else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95), eps=1e-8)


@torch.no_grad()
def evaluate(model: GPTNeoX, tokens, seq_len: int, batch_size: int, max_batches: int | None = None,
             per_position: bool = False) -> dict:
    """Mean next-token loss (nats) over every predicted token of the first ``max_batches`` batches,
    its perplexity, and forward-only tokens/s; with ``per_position``, also ``per_position_loss``:
    the mean loss of the token predicted at each position ``0 .. seq_len - 1`` of a sequence (the
    prediction at position ``t`` sees ``t + 1`` tokens of context).

    Defined in Chapter 9.
    """
    was = model.training
    model.eval()
    device = next(model.parameters()).device
    total, count, seconds = 0.0, 0, 0.0
    by_position, rows = torch.zeros(seq_len, dtype=torch.float64), 0
    try:
        for x, y in eval_batches(tokens, seq_len, batch_size, max_batches):
            x, y = x.to(device), y.to(device)
            t0 = time.perf_counter()
            logits = model(x)
            seconds += time.perf_counter() - t0
            losses = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1),
                                     reduction="none").reshape(y.shape)  # (B, T)
            total += losses.sum().item()
            count += y.numel()
            if per_position:
                by_position += losses.double().sum(0).cpu()
                rows += y.shape[0]
    finally:
        model.train(was)
    if count == 0:
        raise ValueError(f"no evaluation sequences of length {seq_len}: the split has too few tokens")
    loss = total / count
    out = {"loss": loss, "ppl": math.exp(min(loss, 700.0)), "tokens": count,
           "tokens_per_s": count / seconds if seconds > 0 else float("nan")}
    if per_position:
        out["per_position_loss"] = (by_position / rows).tolist()
    return out


class LanguageModelObjective(Objective):
    """The engine's plug-in for ``train``: next-token cross-entropy; validation loss and perplexity."""

    config_key, model_key = "train_config", "model"

    def __init__(self, cfg: TrainConfig, val_tokens, n_params: int):
        self.cfg, self.val_tokens, self.n_params = cfg, val_tokens, n_params

    def loss(self, model, x, y):
        logits = model(x)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1)), []

    def train_row(self, step, loss, parts, lr, grad_norm):
        return [step, loss, lr, grad_norm]

    def postfix(self, loss, parts):
        return {"loss": f"{loss:.3f}"}

    def validate(self, run: Run):
        cfg = self.cfg
        ev = evaluate(run.model, self.val_tokens, cfg.seq_len, cfg.batch_size, cfg.eval_batches)
        run.history["val"].append([run.step, ev["loss"], ev["ppl"]])
        run.metrics["last_eval"] = ev
        line = f"step {run.step}: train loss {run.last_loss:.4f}, val loss {ev['loss']:.4f}, ppl {ev['ppl']:.2f}"
        return ev, {"val": f"{ev['loss']:.3f}", "ppl": f"{ev['ppl']:.1f}"}, line

    def metrics_entries(self, run: Run):
        return {"train_config": dataclasses.asdict(self.cfg), "parameters": self.n_params}


def _load_tokens(cfg: TrainConfig, dist: distributed.Distributed):
    """The encoded WikiText-2 splits; rank 0 first (it may train and cache the tokenizer), then the others."""
    from .data.tokenizer import encode_split, load_or_train_tokenizer

    def load():
        tok = load_or_train_tokenizer(cfg.vocab_size, cfg.data_dir)
        return encode_split(tok, "train", cfg.data_dir), encode_split(tok, "valid", cfg.data_dir), tok

    if dist.is_main:
        got = load()
    dist.barrier()
    return got if dist.is_main else load()


def train(cfg: TrainConfig, out_dir: str | os.PathLike, *, resume: bool = False, train_tokens=None,
          val_tokens=None, tokenizer=None, progress: bool = True, callback: Callable[[int, float], None] | None = None,
          command: str | None = None, log: Callable[[str], None] = print) -> dict:
    """Train (or resume) a run in ``out_dir``; returns the metrics also written to ``metrics.json``.

    Without ``train_tokens``/``val_tokens`` the WikiText-2 splits are loaded and encoded with the
    cached BPE of ``cfg.vocab_size`` tokens. ``callback(step, loss)`` runs after every step.
    Launched by ``torchrun``, it trains data-parallel (``cfg.batch_size`` is the global batch).

    Defined in Chapter 9.
    """
    set_threads(cfg.threads)
    state = read_checkpoint(out_dir, cfg, resume=resume, config_key="train_config")
    dist = distributed.setup(cfg.device)
    device = resolve_device(cfg.device, dist)
    if train_tokens is None or val_tokens is None:
        train_tokens, val_tokens, tokenizer = _load_tokens(cfg, dist)
    vocab = tokenizer.get_vocab_size() if tokenizer is not None else cfg.vocab_size
    if int(np.max(train_tokens)) >= vocab or int(np.max(val_tokens)) >= vocab:
        raise ValueError(f"token ids reach {max(int(np.max(train_tokens)), int(np.max(val_tokens)))}, beyond the "
                         f"vocabulary of {vocab}")
    torch.manual_seed(cfg.seed)
    model = GPTNeoX(cfg.model_config(vocab)).to(device)
    opt = make_optimizer(model, cfg)
    objective = LanguageModelObjective(cfg, val_tokens, model.num_parameters())
    return fit(cfg, out_dir, objective, model, opt, train_tokens, state=state, tokenizer=tokenizer, dist=dist,
               device=device, progress=progress, callback=callback, command=command, log=log)


def load_run(run_dir: str | os.PathLike, **config_overrides: Any):
    """``(model, tokenizer or None, checkpoint dict)`` of a training run folder.

    Defined in Chapter 9.
    """
    run = Path(run_dir)
    path = run / CHECKPOINT
    if not path.is_file():
        raise FileNotFoundError(f"no {CHECKPOINT} in {run} (a folder written by `python -m sparse_core train`)")
    state = load_checkpoint_file(path)
    config = GPTNeoXConfig.from_dict({**state["model_config"], **config_overrides})
    model = GPTNeoX(config)
    model.load_state_dict(state["model"])
    tok = None
    if (run / TOKENIZER).is_file():
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(run / TOKENIZER))
    return model.eval(), tok, state
