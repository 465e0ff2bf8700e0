"""Training a :class:`~sparse_core.lra.model.TaskModel` on MQAR or ListOps with the course's engine
(:func:`sparse_core.lm.engine.fit`): the same schedule, clipping, checkpoints, resume with
bit-identical losses, Ctrl-C/SIGTERM handling and ``metrics.json`` as ``train``; the examples come
from the task's batch source instead of a token stream. Validation is accuracy on a held-out set
(``eval_batches`` batches from a separate stream): MQAR counts every queried key, ListOps every
expression.

Defined in Chapter 11.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from ..lm import distributed
from ..lm.engine import EngineConfig, Objective, Run, fit, read_checkpoint, resolve_device, set_threads
from .listops import VOCAB as LISTOPS_VOCAB, ListOpsBatches
from .model import TaskModel, TaskModelConfig
from .mqar import IGNORE, MQARBatches

__all__ = ["TaskConfig", "TASKS", "train_task", "evaluate_task", "make_batches"]

TASKS = ("mqar", "listops")


@dataclass
class TaskConfig(EngineConfig, seq_len=256, batch_size=32, steps=2000, lr=3e-3, warmup=100, weight_decay=0.0,
                 eval_interval=250, eval_batches=8, checkpoint_interval=250):
    task: str = "mqar"
    method: str = "dense"
    options: dict[str, Any] = field(default_factory=dict)
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 2
    #: MQAR: pairs per sequence and vocabulary (keys from the lower half, values the upper)
    num_kv_pairs: int = 16
    vocab_size: int = 256
    #: the previous token's embedding added to each position's input (:class:`TaskModelConfig`)
    token_shift: bool = True
    #: ListOps: the generator's depth and arguments, and the size of the training pool
    max_depth: int = 10
    max_args: int = 10
    pool: int = 20000

    POSITIVE_INTS = ("d_model", "n_layers", "n_heads", "num_kv_pairs", "vocab_size", "max_depth", "max_args", "pool")

    def check(self) -> None:
        super().check()
        if self.task not in TASKS:
            raise ValueError(f"`task` must be one of {', '.join(TASKS)}, got {self.task!r}")

    def model_config(self) -> TaskModelConfig:
        mqar = self.task == "mqar"
        return TaskModelConfig(vocab_size=self.vocab_size if mqar else len(LISTOPS_VOCAB), max_len=self.seq_len,
                               d_model=self.d_model, n_layers=self.n_layers, n_heads=self.n_heads,
                               method=self.method, options=dict(self.options), causal=mqar,
                               n_classes=None if mqar else 10, token_shift=self.token_shift)


def make_batches(cfg: TaskConfig, rank: int = 0, world_size: int = 1):
    if cfg.task == "mqar":
        return MQARBatches(cfg.seq_len, cfg.num_kv_pairs, cfg.vocab_size, cfg.batch_size, cfg.seed, rank, world_size)
    return ListOpsBatches(cfg.seq_len, cfg.batch_size, cfg.pool, cfg.max_depth, cfg.max_args, seed=cfg.seed,
                          rank=rank, world_size=world_size)


def _loss(model, x, y, task: str):
    logits = model(x)
    if task == "mqar":
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), ignore_index=IGNORE), logits
    return F.cross_entropy(logits, y), logits


@torch.no_grad()
def evaluate_task(model: TaskModel, batches, task: str, n_batches: int) -> dict:
    """Held-out loss and accuracy (MQAR: over queried keys; ListOps: over expressions)."""
    was = model.training
    model.eval()
    device = next(model.parameters()).device
    total, correct, count = 0.0, 0, 0
    try:
        for x, y in batches.held_out(n_batches):
            x, y = x.to(device), y.to(device)
            loss, logits = _loss(model, x, y, task)
            if task == "mqar":
                labelled = y != IGNORE
                correct += int((logits.argmax(-1)[labelled] == y[labelled]).sum())
                n = int(labelled.sum())
            else:
                correct += int((logits.argmax(-1) == y).sum())
                n = y.numel()
            total += float(loss) * n
            count += n
    finally:
        model.train(was)
    return {"loss": total / count, "accuracy": correct / count, "count": count}


class TaskObjective(Objective):
    config_key, model_key = "task_config", "model"
    tokens_note = "input tokens (pads and filler included) of the optimisation steps after the first"

    def __init__(self, cfg: TaskConfig, batches, n_params: int):
        self.cfg, self.batches, self.n_params = cfg, batches, n_params

    def loss(self, model, x, y):
        return _loss(model, x, y, self.cfg.task)[0], []

    def train_row(self, step, loss, parts, lr, grad_norm):
        return [step, loss, lr, grad_norm]

    def postfix(self, loss, parts):
        return {"loss": f"{loss:.3f}"}

    def validate(self, run: Run):
        ev = evaluate_task(run.model, self.batches, self.cfg.task, self.cfg.eval_batches)
        run.history["val"].append([run.step, ev["loss"], ev["accuracy"]])
        run.metrics["last_eval"] = ev
        line = f"step {run.step}: train loss {run.last_loss:.4f}, held-out loss {ev['loss']:.4f}, accuracy {ev['accuracy']:.3f}"
        return ev, {"acc": f"{ev['accuracy']:.3f}"}, line

    def metrics_entries(self, run: Run):
        return {"task_config": dataclasses.asdict(self.cfg), "parameters": self.n_params}


def train_task(cfg: TaskConfig, out_dir: str | os.PathLike, *, resume: bool = False, progress: bool = True,
               callback=None, command: str | None = None, log=print) -> dict:
    """Train (or resume) one task run in ``out_dir``; returns the metrics written to ``metrics.json``.
    ``callback(step, loss)`` runs after every step."""
    set_threads(cfg.threads)
    state = read_checkpoint(out_dir, cfg, resume=resume, config_key=TaskObjective.config_key)
    dist = distributed.setup(cfg.device)
    device = resolve_device(cfg.device, dist)
    torch.manual_seed(cfg.seed)
    model = TaskModel(cfg.model_config()).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    batches = make_batches(cfg, dist.rank, dist.world_size)
    objective = TaskObjective(cfg, make_batches(cfg), model.num_parameters())
    return fit(cfg, out_dir, objective, model, opt, batches, state=state, dist=dist, device=device,
               progress=progress, callback=callback, command=command, log=log)
