r"""The training engine shared by :func:`~sparse_core.lm.train.train` and
:func:`~sparse_core.lm.distill.distill`.

One loop (:func:`fit`) does the optimisation steps, the schedule (:func:`lr_at`), gradient
clipping, periodic evaluation, the tqdm progress bar, checkpoints, resume, stop handling and the
metrics JSON; *what* is minimised and evaluated is an :class:`Objective` plug-in (the language-model
loss of ``train``; the teacher forward, KL loss and student evaluation of ``distill``).

* Config (:class:`EngineConfig`): the fields every run shares and their checks; ``TrainConfig``
  and ``DistillConfig`` extend it.
* Checkpoints (``checkpoint.pt`` in the run folder) are written atomically (a temporary file, then
  ``os.replace``, :func:`atomic_torch_save`) every ``checkpoint_interval`` steps, at the end and when
  stopped. They hold the (unwrapped) model, the optimiser, the global step, the RNG states
  (:func:`rng_state`: torch, numpy, python), the description of the global batch order and the
  history, so a resumed run continues with bit-identical losses **when it resumes with the same
  threads, processes and device**. Nothing in them depends on those, so a run saved under N ranks
  (or threads) resumes under M, and then follows the same optimisation with the same batches, but
  not bit for bit: the number of threads (and ranks) sets how BLAS, SDPA and the kernels split
  their sums, and float32 additions in another order round differently (about 1e-6 relative
  per step, growing slowly; ``tests/test_engine.py`` measures it).
* Stop (:class:`StopFlag`): Ctrl-C (SIGINT) or SIGTERM finishes the current step, saves and
  returns with ``metrics["interrupted"]`` True and ``metrics["stopped_by"]`` the signal's name; the
  command line then exits ``128 + signal`` (130 after Ctrl-C, 143 after SIGTERM). A second Ctrl-C
  aborts at once.
* Distributed (:mod:`sparse_core.lm.distributed`): under ``torchrun`` the model is wrapped in
  DistributedDataParallel, each rank trains on its shard of the global batch (``batch_size`` is
  the *global* batch, divided among the ranks), the loss logged is the mean over the ranks, and
  rank 0 alone evaluates, logs, writes the checkpoint and ``metrics.json`` (which records
  ``world_size``) while the others wait at a barrier.
* Measured, not claimed: training tokens/s is the global tokens over the wall time of the
  optimisation steps (evaluation and checkpoint writing excluded; the first step after each start
  or resume, which loads the Numba kernels, is excluded too).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import pickle
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

from .. import _validation as V
from .data.batching import TokenBatches
from .distributed import Distributed

__all__ = ["EngineConfig", "Objective", "StopFlag", "fit", "lr_at", "read_checkpoint", "rng_state", "set_rng_state",
           "atomic_torch_save", "atomic_json", "atomic_save_tokenizer", "load_checkpoint_file", "peak_rss_bytes",
           "set_threads", "resolve_device", "CHECKPOINT", "METRICS", "TOKENIZER", "RESUMABLE_CHANGES", "Run",
           "exit_status"]

CHECKPOINT, METRICS, TOKENIZER = "checkpoint.pt", "metrics.json", "tokenizer.json"
#: fields that may change when resuming: they change neither the model, the data nor the schedule;
#: ``threads`` and ``device`` change the order of float additions, so the losses then agree to
#: rounding, not bit for bit (module docstring)
RESUMABLE_CHANGES = frozenset({"eval_interval", "eval_batches", "checkpoint_interval", "threads", "data_dir",
                               "device"})
DEVICES = ("cpu", "cuda")


@dataclass
class EngineConfig:
    """The settings every run shares: data shape, schedule, optimiser, evaluation, checkpoints.

    ``batch_size`` is the global batch (sequences per optimisation step over all processes).
    """

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
    device: str = "cpu"

    #: the positive / non-negative integer fields a subclass adds (checked with the shared ones)
    POSITIVE_INTS = ()
    NONNEGATIVE_INTS = ()

    def __init_subclass__(cls, **defaults):
        """``class C(EngineConfig, steps=200, ...)`` gives shared fields other defaults in ``C``."""
        super().__init_subclass__()
        own = EngineConfig.__annotations__
        for name, value in defaults.items():
            if name not in own:
                raise TypeError(f"{name!r} is not a field of EngineConfig (one of {', '.join(own)})")
            cls.__annotations__ = {**cls.__dict__.get("__annotations__", {}), name: own[name]}
            setattr(cls, name, value)

    def __post_init__(self):
        self.check()

    def check(self) -> None:
        """Raise ValueError naming the first field out of its range."""
        V.check_int_fields(self, positive=("seq_len", "batch_size", "steps", "eval_interval", "eval_batches",
                                           "checkpoint_interval") + tuple(self.POSITIVE_INTS),
                           nonnegative=("warmup",) + tuple(self.NONNEGATIVE_INTS))
        if not (self.lr > 0 and 0 <= self.min_lr_ratio <= 1 and self.weight_decay >= 0 and self.grad_clip > 0):
            raise ValueError("need lr > 0, 0 <= min_lr_ratio <= 1, weight_decay >= 0, grad_clip > 0")
        if self.device not in DEVICES:
            raise ValueError(f"`device` must be one of {', '.join(DEVICES)}, got {self.device!r}")


def lr_at(step: int, cfg: EngineConfig) -> float:
    """Learning rate of optimisation step ``step`` (0-based): warmup, then cosine to the minimum."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    lo = cfg.lr * cfg.min_lr_ratio
    progress = (step - cfg.warmup) / max(1, cfg.steps - 1 - cfg.warmup)
    return lo + 0.5 * (cfg.lr - lo) * (1 + math.cos(math.pi * min(1.0, progress)))


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far (Linux reports KiB, macOS bytes)."""
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(r if sys.platform == "darwin" else r * 1024)


def set_threads(threads: int | None) -> None:
    """Use ``threads`` torch and Numba threads (all of them when None)."""
    if threads:
        torch.set_num_threads(threads)
        import numba

        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))


def resolve_device(device: str, dist: Distributed) -> torch.device:
    """``cpu``, or ``cuda:LOCAL_RANK`` for ``cuda`` (raises when CUDA is not available)."""
    if device == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' was asked for, but torch sees no CUDA device")
        return torch.device("cuda", dist.local_rank if dist.enabled else torch.cuda.current_device())
    return torch.device("cpu")


# ---------------------------------------------------------------------------- state on disk

def rng_state() -> dict:
    """The torch, numpy and python RNG states (restored by :func:`set_rng_state`)."""
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write through a temporary file beside ``path``, flushed to disk (``fsync``) before it is
    renamed over ``path``; the temporary file is removed if writing fails or is interrupted, and
    temporary files that killed writers left behind (``.<name>.<pid>.tmp`` of a process that no
    longer runs) are removed first."""
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        pid = stale.name[len(path.name) + 2:-4]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            stale.unlink(missing_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    try:  # the rename itself reaches the disk with the folder's entry
        fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def atomic_save_tokenizer(tokenizer, path: Path) -> None:
    """A ``tokenizers.Tokenizer`` written atomically (as the checkpoint is)."""
    _atomic_write(Path(path), lambda tmp: tmp.write_text(tokenizer.to_str()))


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file, then rename it over ``path`` (never a half-written file)."""
    _atomic_write(Path(path), lambda tmp: torch.save(obj, tmp))


def atomic_json(obj: Any, path: Path) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    _atomic_write(Path(path), lambda tmp: tmp.write_text(json.dumps(obj, indent=1)))


def read_checkpoint(out_dir: str | os.PathLike, cfg: EngineConfig, *, resume: bool, config_key: str) -> dict | None:
    """The checkpoint of the run in ``out_dir`` when resuming (None for a new run).

    Raises FileExistsError when one exists and ``resume`` is False, FileNotFoundError when none
    exists and ``resume`` is True (nothing to resume is an error, not a fresh start), ValueError when it was saved
    with settings (other than :data:`RESUMABLE_CHANGES`) that differ from ``cfg``.
    """
    path = Path(out_dir) / CHECKPOINT
    if not path.exists():
        if resume:
            raise FileNotFoundError(f"nothing to resume in {out_dir}: it holds no {CHECKPOINT} (drop --resume to "
                                    "start a new run there)")
        return None
    if not resume:
        raise FileExistsError(f"{path} exists: pass resume=True (--resume) to continue it, or choose "
                              "another output folder")
    state = load_checkpoint_file(path)
    if config_key not in state:
        raise ValueError(f"{path} is not a checkpoint of this kind of run: it has no {config_key!r} entry")
    saved = type(cfg)(**state[config_key])
    diff = {k: (getattr(saved, k), getattr(cfg, k)) for k in dataclasses.asdict(cfg)
            if k not in RESUMABLE_CHANGES and getattr(saved, k) != getattr(cfg, k)}
    if diff:
        raise ValueError(f"cannot resume {path} with different settings (saved, given): {diff}")
    return state


def load_checkpoint_file(path: str | os.PathLike) -> dict:
    """``torch.load`` of a checkpoint on the CPU; a truncated or corrupt file is a ValueError that
    names it (not torch's "PytorchStreamReader failed reading zip archive")."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError) as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise ValueError(f"{path} is not a readable checkpoint (truncated or corrupt: {str(e).splitlines()[0]}); "
                         "restore it or start the run again") from None
    if not isinstance(state, dict):
        raise ValueError(f"{path} is not a checkpoint: it holds a {type(state).__name__}, not a dict")
    return state


class StopFlag:
    """SIGINT (Ctrl-C) and SIGTERM set a flag checked between steps; a second Ctrl-C interrupts at
    once. ``signal_name`` is the first signal received (None before any)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.requested = False
        self.signal_name: str | None = None
        self._old: dict = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._old = {s: signal.signal(s, self._handler) for s in self.SIGNALS}
        return self

    def _handler(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        if not self.requested:
            self.signal_name = signal.Signals(signum).name
        self.requested = True

    def __exit__(self, *exc):
        for s, old in self._old.items():
            signal.signal(s, old)
        self._old = {}
        return False


def exit_status(metrics: dict) -> int:
    """The command line's exit status of a run: 0, or ``128 + signal`` when a signal stopped it."""
    name = metrics.get("stopped_by")
    return 128 + int(signal.Signals[name]) if name else 0


# ---------------------------------------------------------------------------- the plug-in

class Objective:
    """What :func:`fit` minimises and evaluates. Subclasses set the names and fill in the methods.

    ``model`` is the module being trained (unwrapped); ``run`` is the :class:`Run` in progress.
    """

    config_key = "train_config"   # the config's entry in the checkpoint and the metrics
    model_key = "model"           # the model's state dict in the checkpoint
    kept: tuple[str, ...] = ()    # metrics entries saved in (and restored from) the checkpoint
    tokens_note = "optimisation steps since this start or resume, after the first; eval and saving excluded"

    def loss(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, list]:
        """The loss of one (shard of a) batch and its logged parts (0-d tensors or None)."""
        raise NotImplementedError

    def train_row(self, step: int, loss: float, parts: list, lr: float, grad_norm: float) -> list:
        """The ``history["train"]`` row of a step."""
        raise NotImplementedError

    def postfix(self, loss: float, parts: list) -> dict:
        """Progress-bar values of a step (before lr and tokens/s)."""
        raise NotImplementedError

    def validate(self, run: "Run") -> tuple[dict, dict, str]:
        """Evaluate at ``run.step`` (rank 0 only), append the ``history["val"]`` row and update
        ``run.metrics``; returns (evaluation, progress-bar values, log line)."""
        raise NotImplementedError

    def before_training(self, run: "Run") -> None:
        """Runs on rank 0 before the first step of every start (the zero-shot evaluation of distill)."""

    def checkpoint_entries(self) -> dict:
        """Entries of the checkpoint beyond the engine's."""
        return {}

    def metrics_entries(self, run: "Run") -> dict:
        """Entries of ``metrics.json`` beyond the engine's (in front of them)."""
        return {}


@dataclass
class Run:
    """The state of a run in progress, as the plug-in sees it."""

    cfg: EngineConfig
    model: torch.nn.Module
    step: int
    history: dict
    metrics: dict
    last_loss: float | None = None


# ---------------------------------------------------------------------------- the loop

def fit(cfg: EngineConfig, out_dir: str | os.PathLike, objective: Objective, model: torch.nn.Module,
        optimizer: torch.optim.Optimizer, train_tokens, *, state: dict | None = None, tokenizer=None,
        dist: Distributed | None = None, device: torch.device | None = None, progress: bool = True,
        callback: Callable[[int, float], None] | None = None, command: str | None = None,
        log: Callable[[str], None] = print) -> dict:
    """Optimise ``model`` with ``optimizer`` on ``train_tokens`` (a token array, or a batch source:
    see the first lines) for ``cfg.steps`` steps, or from the
    checkpoint ``state`` (:func:`read_checkpoint`) on; returns the metrics written to ``metrics.json``
    (on ranks other than 0 only what that rank knows). ``callback(step, loss)`` runs after every step.
    """
    from tqdm.auto import tqdm

    dist = dist or Distributed()
    device = device or torch.device("cpu")
    main = dist.is_main
    out = Path(out_dir)
    ckpt_path = out / CHECKPOINT
    # a token stream is cut into sequences here; a task that makes its own examples passes a batch
    # source instead (``batch(step) -> (x, y)`` for this rank, ``describe() -> dict``), as
    # :mod:`sparse_core.lra` does
    batches = (train_tokens if hasattr(train_tokens, "batch") and hasattr(train_tokens, "describe") else
               TokenBatches(train_tokens, cfg.seq_len, cfg.batch_size, cfg.seed, dist.rank, dist.world_size))
    params = [p for p in model.parameters() if p.requires_grad]
    run = Run(cfg, model, 0, {"train": [], "val": []}, {})
    train_seconds, tokens_seen = 0.0, 0
    if state is not None:
        order = state.get("batch_order")
        if order is not None and order != batches.describe():
            raise ValueError(f"cannot resume {ckpt_path}: the training data changed (saved batch order {order}, "
                             f"now {batches.describe()})")
        model.load_state_dict(state[objective.model_key])
        optimizer.load_state_dict(state["optimizer"])
        set_rng_state(state["rng"])
        run.step, run.history = state["step"], state["history"]
        run.metrics.update({k: state[k] for k in objective.kept if k in state})
        if main:
            log(f"resuming {ckpt_path} at step {run.step}")
    if main:
        out.mkdir(parents=True, exist_ok=True)
        if tokenizer is not None:
            atomic_save_tokenizer(tokenizer, out / TOKENIZER)
    wrapped = dist.wrap(model, device)

    def save(interrupted=False, stopped_by=None):
        metrics = run.metrics
        metrics.update({
            "command": command, "model_config": model.config.to_dict(), **objective.metrics_entries(run),
            "step": run.step, "finished": run.step >= cfg.steps, "interrupted": interrupted, "stopped_by": stopped_by,
            "history": run.history, "train_tokens_per_s": tokens_seen / train_seconds if train_seconds else None,
            "train_tokens_per_s_note": objective.tokens_note, "peak_rss_bytes": peak_rss_bytes(),
            "peak_memory_note": "resource.getrusage ru_maxrss of the process (rank 0's)",
            "torch_threads": torch.get_num_threads(), "world_size": dist.world_size,
            "batch_size_note": "batch_size is the global batch, split evenly among the world_size processes",
        })
        if main:
            atomic_torch_save({"format": 1, "model_config": model.config.to_dict(),
                               objective.config_key: dataclasses.asdict(cfg), objective.model_key: model.state_dict(),
                               "optimizer": optimizer.state_dict(), "step": run.step, "rng": rng_state(),
                               "batch_order": batches.describe(), "history": run.history,
                               **objective.checkpoint_entries(), **{k: metrics[k] for k in objective.kept
                                                                    if k in metrics}}, ckpt_path)
            atomic_json(metrics, out / METRICS)
        dist.barrier()

    if main:
        objective.before_training(run)
    dist.barrier()
    model.train()
    first, interrupted = True, False
    bar = tqdm(total=cfg.steps, initial=run.step, disable=not (progress and main), unit="step", dynamic_ncols=True)
    with StopFlag() as stop:
        while run.step < cfg.steps:
            x, y = batches.batch(run.step)
            x, y = x.to(device), y.to(device)
            lr = lr_at(run.step, cfg)
            for g in optimizer.param_groups:
                g["lr"] = lr
            t0 = time.perf_counter()
            loss, parts = objective.loss(wrapped, x, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            gnorm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            optimizer.step()
            loss_v, parts_v = _step_values(dist, loss, parts)
            dt = time.perf_counter() - t0
            run.step += 1
            run.last_loss = loss_v
            if not math.isfinite(loss_v):
                raise FloatingPointError(f"loss is {loss_v} at step {run.step}; lower the learning rate")
            run.history["train"].append(objective.train_row(run.step, loss_v, parts_v, lr, float(gnorm)))
            n_tokens = x.numel() * dist.world_size
            if not first:
                train_seconds += dt
                tokens_seen += n_tokens
            first = False
            post = {**objective.postfix(loss_v, parts_v), "lr": f"{lr:.2e}",
                    "tok/s": f"{(tokens_seen / train_seconds) if train_seconds else n_tokens / dt:,.0f}"}
            if run.step % cfg.eval_interval == 0 or run.step == cfg.steps:
                if main:
                    _, shown, line = objective.validate(run)
                    post.update(shown)
                    if not progress:
                        log(line)
                dist.barrier()
            bar.set_postfix(post, refresh=False)
            bar.update(1)
            if callback is not None:
                callback(run.step, loss_v)
            if dist.any(stop.requested, device if dist.backend == "nccl" else "cpu"):
                interrupted = True
                break
            if run.step % cfg.checkpoint_interval == 0 or run.step == cfg.steps:
                save()
        bar.close()
        if interrupted:
            save(interrupted=True, stopped_by=stop.signal_name)
            if main:
                log(f"interrupted: saved step {run.step} to {ckpt_path}; continue with --resume")
    if "step" not in run.metrics:  # nothing left to do (a finished run resumed): report it as saved
        save()
    return run.metrics


def _step_values(dist: Distributed, loss: torch.Tensor, parts: list) -> tuple[float, list]:
    """The loss and its parts as Python numbers, averaged over the ranks (one all-reduce)."""
    if not dist.enabled:
        return loss.item(), [None if p is None else p.item() for p in parts]
    present = [i for i, p in enumerate(parts) if p is not None]
    vals = dist.mean(torch.stack([loss.detach().float()] + [parts[i].detach().float() for i in present])).tolist()
    out: list = [None] * len(parts)
    for j, i in enumerate(present):
        out[i] = vals[j + 1]
    return vals[0], out
