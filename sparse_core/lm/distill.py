r"""Distilling a cheaper attention from a dense teacher with a KL loss.

A trained dense GPT-NeoX model is the **teacher**; it stays frozen. The **student** is a copy of
it in which every layer's attention is replaced by a cheaper one that *reuses the teacher's
projections and rotary embeddings* (the fused ``query_key_value`` and the output ``dense``,
copied) and changes only how the queries look at the keys. Only the student's *attention
parameters* (defined below) are trained, to minimise

.. math::

    \mathcal L = T^2 \cdot \frac1N \sum_{t=1}^{N} \mathrm{KL}\big(P^{T}_\text{teacher}(\cdot \mid x_{<t})
    \,\big\|\, P^{T}_\text{student}(\cdot \mid x_{<t})\big)
    \;(+\; \lambda \cdot \overline{g} \text{ for the learned mask}),

over the next-token distributions at every position of WikiText-2 training sequences, where
:math:`P^T = \operatorname{softmax}(z / T)` is the distribution at temperature :math:`T`. The KL is
computed in log space (:func:`kl_divergence`).

Students (``DistillConfig.student``); all are causal and run on the rotated q, k of the teacher.
Each is a GPT-NeoX attention layer with its own attention core (:data:`sparse_core.lm.students.STUDENT_CORES`):

===========  ==============================================  =====================================
student      attention                                       parameters it adds (per layer)
===========  ==============================================  =====================================
mask         learned pair gate, soft: ``softmax(s + log g)``  ``gate`` (``PairGate``: ``w_q``,
             (:func:`sparse_core.approx.gated_attention`),    ``w_k``, ``w_2``)
             L1 penalty :math:`\lambda\,\overline g`
nsa          Native Sparse Attention: compressed + selected   ``pos_k``, ``pos_v``, ``phi_k``,
             blocks + sliding window, gated                   ``phi_v``, ``gate``
             (:func:`sparse_core.approx.nsa_attention`)
performer    FAVOR+ random features, causal prefix sums       none (the projection matrix is a
             (:func:`sparse_core.approx.favor_attention`)     fixed random buffer)
topk         each query keeps its ``topk`` largest scores     none
             (:func:`sparse_core.approx.topk_attention`)
block        a fixed block-sparse pattern of the model        none
             (``local``/``strided``/``fixed``/``mixed``),
             :func:`sparse_core.attention.ops.block_sparse_attention`
===========  ==============================================  =====================================

**Attention parameters** -- exactly what is trained (:func:`attention_parameter_names`):

* ``train="new"``: the parameters the student *adds* to each layer's attention (the ``gate``
  network of the learned mask; NSA's position embeddings, compression maps and branch gate). The
  teacher's ``query_key_value`` and ``dense`` are frozen copies.
* ``train="attention"``: every parameter of every layer's attention module,
  ``layers.{i}.attention.*``: the copied ``query_key_value`` and ``dense`` (weights and biases)
  plus any added parameters.
* ``train="auto"`` (default): ``"new"`` for students that add parameters (mask, nsa) and
  ``"attention"`` for those that add none (performer, topk, block) -- else there would be nothing
  to train and only the zero-shot number would exist.

Everything else -- embeddings, LayerNorms, MLPs, the output layer -- is frozen
(``requires_grad=False``) and never receives a gradient.

Measured (:func:`evaluate_student`, on the validation split): KL at :math:`T = 1`, student and
teacher perplexity, and what the student's attention actually computed, recorded from its masks
and layouts during the evaluation: ``density`` = attended (query, key) pairs / causal pairs
(:math:`n(n+1)/2` per head and sequence) and ``flops_ratio`` = attention multiply-adds / those of
exact causal attention, :math:`(d + d_v)\,n(n+1)/2` (score and value products; projections, which
are unchanged, are not counted). Per student:

* mask: the soft gate still computes every causal pair plus the gate MLP (``hidden`` multiply-adds
  per pair); ``density`` counts the pairs with :math:`g > 1/2`, the ones the thresholded
  (``hard``) version keeps, which is also evaluated;
* nsa: compressed blocks seen + selected tokens + window tokens (branches counted separately, as
  they are computed); the block-scoring products are the compressed branch's;
* performer: no pairs (``density`` is None); multiply-adds of the chunked causal FAVOR+:
  features :math:`2nmd`, prefix state and read-out :math:`2nm d_v`, intra-chunk terms
  :math:`n C (m + d_v)` with :math:`C` the chunk size;
* topk: every causal score is still computed (:math:`d` per pair) but only ``topk`` values per
  query are summed (:math:`d_v` per kept pair);
* block: the kernel computes whole tiles: ``layout.computed_pairs()``; ``density`` is the
  pattern's allowed pairs.

Zero-shot first: the student is evaluated before any training (step 0 of the history), so the
gain of distillation is measured. Checkpoints, resume, Ctrl-C and tokens/s follow
:mod:`sparse_core.lm.train`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import _validation as V
from .data.batching import eval_batches
from ..models.gpt_neox import GPTNeoX, GPTNeoXConfig
from . import distributed
from .engine import (CHECKPOINT, METRICS, EngineConfig, Objective, Run, fit, load_checkpoint_file, read_checkpoint,
                     resolve_device, set_threads)
from .students import (StudentAttention, attention_parameter_names, freeze_all_but_attention, hard_gates, l1_penalty,
                       record_stats)

__all__ = ["STUDENT_KINDS", "TRAIN_MODES", "BLOCK_PATTERNS", "DistillConfig", "kl_divergence", "StudentAttention",
           "make_student", "attention_parameter_names", "freeze_all_but_attention", "l1_penalty", "record_stats",
           "evaluate_student", "distill", "load_student", "generate_full", "CHECKPOINT", "METRICS"]

STUDENT_KINDS = ("mask", "nsa", "performer", "topk", "block")
TRAIN_MODES = ("auto", "new", "attention")
BLOCK_PATTERNS = ("local", "strided", "fixed", "mixed")
_ADDS_PARAMETERS = {"mask": True, "nsa": True, "performer": False, "topk": False, "block": False}
_KEPT = ("zero_shot", "zero_shot_hard", "teacher_eval", "last_eval", "last_eval_hard")  # evaluations saved with a checkpoint


# ---------------------------------------------------------------------------- the loss

def kl_divergence(teacher_logits: torch.Tensor, student_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    r"""Mean over tokens of :math:`T^2\,\mathrm{KL}(P_\text{teacher}^T \,\|\, P_\text{student}^T)`.

    ``teacher_logits``, ``student_logits``: ``[..., vocab]`` (same shape; every leading position is
    one token). Both sides go through ``log_softmax(z / T)`` in (at least) float32, and

    .. math:: \mathrm{KL}_t = \sum_v p_{tv} (\log p_{tv} - \log q_{tv}),\quad p = e^{\log p},

    so no probability is ever divided or logged: it is exact 0 for identical logits, finite at any
    finite logit size (a token with :math:`p = 0` contributes :math:`0 \cdot \text{finite} = 0`), and
    each token's value is clamped at 0 (rounding can make a true 0 a tiny negative). The factor
    :math:`T^2` (Hinton et al. 2015) keeps the gradient's size independent of :math:`T`: the
    gradient of the tempered KL with respect to the logits scales as :math:`1/T^2`. Returns a
    0-d tensor (differentiable with respect to ``student_logits``).

    Defined in Chapter 10.
    """
    for name, t in (("teacher_logits", teacher_logits), ("student_logits", student_logits)):
        if not isinstance(t, torch.Tensor) or not t.is_floating_point() or t.ndim < 1:
            raise ValueError(f"`{name}` must be a floating-point tensor [..., vocab], got "
                             f"{tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__}")
    if teacher_logits.shape != student_logits.shape:
        raise ValueError(f"`teacher_logits` {tuple(teacher_logits.shape)} and `student_logits` "
                         f"{tuple(student_logits.shape)} must have the same shape [..., vocab]")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not (
            math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"`temperature` must be a finite number > 0, got {temperature!r}")
    if teacher_logits.numel() == 0:
        raise ValueError("`teacher_logits` must hold at least one token")
    if not (torch.isfinite(teacher_logits).all() and torch.isfinite(student_logits.detach()).all()):
        raise ValueError("logits must be finite (got NaN or inf)")
    dtype = torch.promote_types(teacher_logits.dtype, torch.float32)
    log_p = F.log_softmax(teacher_logits.detach().to(dtype) / temperature, dim=-1)
    log_q = F.log_softmax(student_logits.to(dtype) / temperature, dim=-1)
    per_token = (log_p.exp() * (log_p - log_q)).sum(-1).clamp_min(0.0)
    return per_token.mean() * (temperature ** 2)


# ---------------------------------------------------------------------------- configuration

@dataclass
class DistillConfig(EngineConfig, steps=200, warmup=20, weight_decay=0.0, eval_interval=50, eval_batches=10,
                    checkpoint_interval=50):
    """Settings of a distillation run (student, what is trained) and :class:`EngineConfig`'s
    (schedule, evaluation; with the shorter defaults given in the class line).

    Defined in Chapter 10.
    """

    student: str = "mask"
    train: str = "auto"
    temperature: float = 1.0
    # learned mask
    hidden: int = 16
    l1: float = 0.01
    # nsa
    nsa_block: int = 16
    nsa_select: int = 4
    nsa_window: int = 32
    # performer
    n_features: int | None = None
    chunk_size: int = 64
    # top-k
    topk: int = 32
    # fixed block-sparse pattern
    pattern: str = "local"
    window: int = 32
    stride: int = 32
    block_size: int = 32

    POSITIVE_INTS = ("hidden", "nsa_block", "nsa_select", "chunk_size", "topk", "window", "stride", "block_size")
    NONNEGATIVE_INTS = ("nsa_window",)

    def check(self) -> None:
        for name, choices in (("student", STUDENT_KINDS), ("train", TRAIN_MODES), ("pattern", BLOCK_PATTERNS)):
            if getattr(self, name) not in choices:
                raise ValueError(f"`{name}` must be one of {', '.join(choices)}, got {getattr(self, name)!r}")
        super().check()
        V.check_int_fields(self, optional_positive=("n_features",))
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ValueError(f"`temperature` must be a finite number > 0, got {self.temperature!r}")
        if not self.l1 >= 0:
            raise ValueError(f"`l1` must be >= 0, got {self.l1!r}")
        if self.train == "new" and not _ADDS_PARAMETERS[self.student]:
            raise ValueError(f"the {self.student!r} student adds no parameters, so train='new' would train nothing; "
                             "use train='attention' (its q/k/v/output projections) or 'auto'")

    @property
    def train_mode(self) -> str:
        """``new`` or ``attention`` (``auto`` resolved for this student)."""
        if self.train != "auto":
            return self.train
        return "new" if _ADDS_PARAMETERS[self.student] else "attention"


# ---------------------------------------------------------------------------- the student attention
# StudentAttention, its per-kind cores, freezing, the L1 penalty and the stats live in
# sparse_core.lm.students (imported above); defined in Chapter 10.


def make_student(teacher: GPTNeoX, cfg: DistillConfig) -> GPTNeoX:
    """A copy of ``teacher`` with every layer's attention replaced by ``cfg.student``'s
    (teacher weights copied; the new parameters initialised as documented, seeded by ``cfg.seed``),
    frozen except for the attention parameters of ``cfg.train_mode``. Defined in Chapter 10."""
    if not isinstance(teacher, GPTNeoX):
        raise TypeError(f"`teacher` must be a GPTNeoX model, got {type(teacher).__name__}")
    if not isinstance(cfg, DistillConfig):
        raise TypeError(f"`cfg` must be a DistillConfig, got {type(cfg).__name__}")
    config = dataclasses.replace(teacher.config, attention="dense")
    torch.manual_seed(cfg.seed)
    student = GPTNeoX(config)
    for i, layer in enumerate(student.layers):
        layer.attention = StudentAttention(config, i, cfg)
    missing, unexpected = student.load_state_dict(teacher.state_dict(), strict=False)
    teacher_names = set(teacher.state_dict())
    if unexpected or any(name in teacher_names for name in missing):
        raise RuntimeError(f"teacher weights do not fit the student: missing {missing}, unexpected {unexpected}")
    student.to(next(teacher.parameters()).dtype)
    freeze_all_but_attention(student, cfg.train_mode)
    return student


# ---------------------------------------------------------------------------- evaluation

@torch.no_grad()
def evaluate_student(teacher: GPTNeoX, student: GPTNeoX, tokens, seq_len: int, batch_size: int,
                     max_batches: int | None = None, hard: bool = False, teacher_eval: bool = True) -> dict:
    """KL (T = 1), student and teacher loss/perplexity on the first ``max_batches`` batches of
    ``tokens``, the attention ``density`` and ``flops_ratio`` the student used, and forward
    tokens/s of each model. ``hard=True`` evaluates a learned mask thresholded at 1/2.

    Defined in Chapter 10.
    """
    was_s, was_t = student.training, teacher.training
    student.eval()
    teacher.eval()
    device = next(student.parameters()).device
    kl_sum = s_loss = t_loss = 0.0
    count, s_sec, t_sec = 0, 0.0, 0.0
    try:
        with record_stats(student) as st, hard_gates(student, hard):
            for x, y in eval_batches(tokens, seq_len, batch_size, max_batches):
                x, y = x.to(device), y.to(device)
                t0 = time.perf_counter()
                zt = teacher(x)
                t1 = time.perf_counter()
                zs = student(x)
                t2 = time.perf_counter()
                t_sec, s_sec = t_sec + (t1 - t0), s_sec + (t2 - t1)
                ntok = y.numel()
                kl_sum += float(kl_divergence(zt, zs)) * ntok
                s_loss += F.cross_entropy(zs.reshape(-1, zs.shape[-1]).float(), y.reshape(-1), reduction="sum").item()
                if teacher_eval:
                    t_loss += F.cross_entropy(zt.reshape(-1, zt.shape[-1]).float(), y.reshape(-1),
                                              reduction="sum").item()
                count += ntok
    finally:
        student.train(was_s)
        teacher.train(was_t)
    if count == 0:
        raise ValueError(f"no evaluation sequences of length {seq_len}: the split has too few tokens")
    out = {"kl": kl_sum / count, "student_loss": s_loss / count,
           "student_ppl": math.exp(min(s_loss / count, 700.0)), "tokens": count,
           "student_tokens_per_s": count / s_sec if s_sec > 0 else None,
           "teacher_tokens_per_s": count / t_sec if t_sec > 0 else None,
           "density": st["pairs"] / st["causal_pairs"] if st["causal_pairs"] and "pairs" in st else None,
           "flops_ratio": st["macs"] / st["dense_macs"] if st["dense_macs"] else None,
           "hard": hard}
    if "gate_sum" in st:
        out["mean_gate"] = st["gate_sum"] / st["causal_pairs"]
    if teacher_eval:
        out.update(teacher_loss=t_loss / count, teacher_ppl=math.exp(min(t_loss / count, 700.0)))
    return out


# ---------------------------------------------------------------------------- training

def _fingerprint(model: nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _optimizer(student: GPTNeoX, cfg: DistillConfig) -> torch.optim.AdamW:
    params = [p for p in student.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim == 2]
    rest = [p for p in params if p.ndim != 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": rest, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95), eps=1e-8)


class DistillationObjective(Objective):
    """The engine's plug-in for ``distill``: the frozen teacher's forward and the tempered KL (plus the
    learned mask's L1 penalty) as the loss; :func:`evaluate_student` as the evaluation, with the
    zero-shot student evaluated before the first step."""

    config_key, model_key, kept = "distill_config", "student", _KEPT
    tokens_note = ("teacher forward + student forward/backward, this session's steps after its first; evaluation "
                   "and saving excluded")

    def __init__(self, cfg: DistillConfig, teacher: GPTNeoX, student: GPTNeoX, val_tokens, fingerprint: str,
                 teacher_source: str | None, log: Callable[[str], None]):
        self.cfg, self.teacher, self.student, self.val_tokens = cfg, teacher, student, val_tokens
        self.fingerprint, self.teacher_source, self.log = fingerprint, teacher_source, log
        self.trainable = attention_parameter_names(student, cfg.train_mode)

    def loss(self, model, x, y):
        with torch.no_grad():
            zt = self.teacher(x)
        zs = model(x)
        kl = kl_divergence(zt, zs, self.cfg.temperature)
        pen = l1_penalty(self.student)
        return (kl + self.cfg.l1 * pen if pen is not None else kl), [kl, pen]

    def train_row(self, step, loss, parts, lr, grad_norm):
        return [step, loss, parts[0], parts[1], lr, grad_norm]

    def postfix(self, loss, parts):
        return {"kl": f"{parts[0]:.4f}"}

    def _evaluate(self, **kw) -> dict:
        cfg = self.cfg
        return evaluate_student(self.teacher, self.student, self.val_tokens, cfg.seq_len, cfg.batch_size,
                                cfg.eval_batches, **kw)

    def validate(self, run: Run):
        metrics, step = run.metrics, run.step
        ev = self._evaluate(teacher_eval="teacher_eval" not in metrics)
        if "teacher_eval" not in metrics:
            metrics["teacher_eval"] = {k: ev[k] for k in ("teacher_loss", "teacher_ppl", "teacher_tokens_per_s",
                                                          "tokens")}
        row = [step, ev["kl"], ev["student_loss"], ev["student_ppl"], ev["density"], ev["flops_ratio"]]
        if self.cfg.student == "mask":
            hv = self._evaluate(hard=True, teacher_eval=False)
            row += [hv["kl"], hv["student_ppl"], hv["density"], ev.get("mean_gate")]
            metrics["last_eval_hard"] = hv
            if step == 0:
                metrics["zero_shot_hard"] = hv
        run.history["val"].append(row)
        metrics["last_eval"] = ev
        if step == 0:
            metrics["zero_shot"] = ev
        train_kl = run.history["train"][-1][2] if run.history["train"] else float("nan")
        line = f"step {step}: train KL {train_kl:.4f}, val KL {ev['kl']:.4f}, student ppl {ev['student_ppl']:.2f}"
        return ev, {"val_kl": f"{ev['kl']:.4f}", "ppl": f"{ev['student_ppl']:.1f}"}, line

    def before_training(self, run: Run) -> None:
        if run.step == 0 and not run.history["val"]:
            ev = self.validate(run)[0]
            self.log(f"zero-shot {self.cfg.student}: KL {ev['kl']:.4f}, student ppl {ev['student_ppl']:.2f}, "
                     f"teacher ppl {ev['teacher_ppl']:.2f}")

    def checkpoint_entries(self) -> dict:
        return {"teacher_fingerprint": self.fingerprint, "teacher_source": self.teacher_source}

    def metrics_entries(self, run: Run) -> dict:
        cfg, student = self.cfg, self.student
        return {
            "teacher_source": self.teacher_source, "teacher_fingerprint": self.fingerprint,
            "distill_config": dataclasses.asdict(cfg), "train_mode": cfg.train_mode,
            "trainable_parameters": self.trainable,
            "n_trainable": sum(p.numel() for p in student.parameters() if p.requires_grad),
            "n_parameters": sum(p.numel() for p in student.parameters()),
            "history_columns": {"train": ["step", "loss", "kl", "l1", "lr", "grad_norm"],
                                "val": ["step", "kl", "student_loss", "student_ppl", "density", "flops_ratio"]
                                + (["hard_kl", "hard_ppl", "hard_density", "mean_gate"] if cfg.student == "mask"
                                   else [])},
        }


def distill(cfg: DistillConfig, out_dir: str | os.PathLike, teacher: GPTNeoX, *, train_tokens, val_tokens,
            tokenizer=None, resume: bool = False, teacher_source: str | None = None, progress: bool = True,
            callback: Callable[[int, float], None] | None = None, command: str | None = None,
            log: Callable[[str], None] = print) -> dict:
    """Distil ``cfg.student`` from the frozen ``teacher`` into ``out_dir``; returns the metrics
    also written to ``metrics.json``. The zero-shot student is evaluated first (history step 0).

    ``checkpoint.pt`` holds the student's whole state dict (teacher copies included), the optimiser,
    step, RNG states, batch order, history and the teacher's fingerprint; a resumed run must use the
    same teacher and settings, and continues with bit-identical losses. The loop is the engine's
    (:func:`sparse_core.lm.engine.fit`, with :class:`DistillationObjective`); under ``torchrun`` it
    runs data-parallel like ``train``.

    Defined in Chapter 10.
    """
    if not isinstance(cfg, DistillConfig):
        raise TypeError(f"`cfg` must be a DistillConfig, got {type(cfg).__name__}")
    set_threads(cfg.threads)
    for name, toks in (("train_tokens", train_tokens), ("val_tokens", val_tokens)):
        if int(np.max(toks)) >= teacher.config.vocab_size:
            raise ValueError(f"`{name}` reach id {int(np.max(toks))}, beyond the teacher's vocabulary "
                             f"of {teacher.config.vocab_size}")
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    fingerprint = _fingerprint(teacher)
    state = read_checkpoint(out_dir, cfg, resume=resume, config_key="distill_config")
    if state is not None and state["teacher_fingerprint"] != fingerprint:
        raise ValueError(f"cannot resume {Path(out_dir) / CHECKPOINT}: it was distilled from another teacher")
    dist = distributed.setup(cfg.device)
    device = resolve_device(cfg.device, dist)
    teacher.to(device)
    student = make_student(teacher, cfg).to(device)
    opt = _optimizer(student, cfg)
    objective = DistillationObjective(cfg, teacher, student, val_tokens, fingerprint, teacher_source, log)
    return fit(cfg, out_dir, objective, student, opt, train_tokens, state=state, tokenizer=tokenizer, dist=dist,
               device=device, progress=progress, callback=callback, command=command, log=log)


def load_student(run_dir: str | os.PathLike):
    """``(student, DistillConfig, checkpoint dict)`` of a distillation run folder.

    Defined in Chapter 10.
    """
    path = Path(run_dir) / CHECKPOINT
    if not path.is_file():
        raise FileNotFoundError(f"no {CHECKPOINT} in {run_dir} (a folder written by `python -m sparse_core distill`)")
    state = load_checkpoint_file(path)
    cfg = DistillConfig(**state["distill_config"])
    teacher = GPTNeoX(GPTNeoXConfig.from_dict(state["model_config"]))
    student = make_student(teacher, cfg)
    student.load_state_dict(state["student"])
    return student.eval(), cfg, state


@torch.no_grad()
def generate_full(model: GPTNeoX, input_ids: torch.Tensor, max_new_tokens: int, temperature: float = 0.0,
                  top_k: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Sample like :func:`sparse_core.models.generate` but recomputing the whole prefix at every
    step (no key-value cache), so any student attention can generate. ``[batch, n + new]``.

    Defined in Chapter 10.
    """
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"`max_new_tokens` must be a non-negative integer, got {max_new_tokens!r}")
    if not (isinstance(temperature, (int, float)) and temperature >= 0 and math.isfinite(temperature)):
        raise ValueError(f"`temperature` must be a finite number >= 0, got {temperature!r}")
    if not isinstance(input_ids, torch.Tensor) or input_ids.ndim != 2 or input_ids.shape[1] == 0:
        raise ValueError("`input_ids` must be a non-empty integer tensor [batch, n]")
    was = model.training
    model.eval()
    ids = input_ids
    try:
        for _ in range(max_new_tokens):
            logits = model(ids)[:, -1].float()
            if temperature == 0:
                nxt = logits.argmax(dim=-1, keepdim=True)
            else:
                logits = logits / temperature
                if top_k is not None and top_k < logits.shape[-1]:
                    kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                nxt = torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator)
            ids = torch.cat([ids, nxt.to(ids.dtype)], dim=1)
    finally:
        model.train(was)
    return ids
