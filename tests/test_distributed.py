"""Data-parallel training under torchrun: 2 CPU processes (gloo) follow the loss curve of 1 process
with the same global batch, a 2-process checkpoint resumes in 1 process, distillation runs on 2
processes; and the single-process command stops cleanly on Ctrl-C (exit 130) and SIGTERM (exit 143).

Every run is a real ``python -m sparse_core`` (or ``python -m torch.distributed.run ... -m
sparse_core``) subprocess on WikiText-2 with a 500-token BPE, the tiny preset and one thread per
process, so the whole file takes well under a minute on 2 cores.

Tolerance of the comparison, ``rtol = 1e-4`` on losses and gradient norms: the two processes
each average the loss over their half of the batch and the all-reduce sums the two halves'
gradients, so every reduction runs in another order than in one process. The per-step
differences are float32 round-off (about 1e-7 relative at the first step, the loss itself
agrees to 1e-6); a few optimisation steps later they have grown by the updates, and after the
resume the steps continue from weights that differ by that round-off. A wrong shard (overlapping
or missing sequences), a sum instead of a mean of the gradients, or a lost optimiser state
changes the loss at the 1e-2 level.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from sparse_core.lm.data import wikitext as W

ROOT = Path(__file__).resolve().parents[1]
DATA = W.find_wikitext2()
pytestmark = pytest.mark.skipif(DATA is None, reason="WikiText-2 not found (set SPARSE_COURSE_DATA)")
RTOL = 1e-4
STEPS = 30
COMMON = ["--vocab-size", "500", "--seq-len", "32", "--batch-size", "4", "--warmup", "2", "--eval-batches", "1",
          "--threads", "1", "--no-progress"]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    e = dict(os.environ)
    e.update(SPARSE_COURSE_DATA=str(DATA.parent), SPARSE_COURSE_CACHE=str(tmp_path_factory.mktemp("cache")),
             OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT) + os.pathsep + e.get("PYTHONPATH", ""))
    return e


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _command(args, nproc=1):
    if nproc == 1:
        return [sys.executable, "-m", "sparse_core", *args]
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_addr", "127.0.0.1",
            "--master_port", str(_free_port()), "-m", "sparse_core", *args]


def _run(args, env, nproc=1, timeout=300):
    p = subprocess.run(_command(args, nproc), cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-4000:]
    return p


def _metrics(run):
    return json.loads((Path(run) / "metrics.json").read_text())


def _stop_at_first_checkpoint(args, env, sig, nproc=1, timeout=240):
    """Start the command, send ``sig`` once its first checkpoint exists, return its exit status."""
    out = Path(args[args.index("--out") + 1])
    p = subprocess.Popen(_command(args, nproc), cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True)
    try:
        t0 = time.monotonic()
        while not (out / "checkpoint.pt").exists():
            assert p.poll() is None, p.communicate()[0][-3000:]
            assert time.monotonic() - t0 < timeout, "no checkpoint written"
            time.sleep(0.05)
        p.send_signal(sig)
        text = p.communicate(timeout=120)[0]
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    return p.returncode, text


def _curve(m):
    return np.array([row[1] for row in m["history"]["train"]]), np.array([row[3] for row in m["history"]["train"]])


@pytest.fixture(scope="module")
def one_process(env, tmp_path_factory):
    """The reference: one process, global batch 4 (also the teacher of the distillation test)."""
    run = tmp_path_factory.mktemp("one") / "run"
    _run(["train", "--out", str(run), "--steps", str(STEPS), "--eval-interval", "10", "--checkpoint-interval", "10",
          *COMMON], env)
    return run


def test_two_processes_follow_one_and_their_checkpoint_resumes_in_one(one_process, env, tmp_path):
    ref = _metrics(one_process)
    assert ref["world_size"] == 1 and ref["finished"] and len(ref["history"]["train"]) == STEPS
    run = tmp_path / "two"
    args = ["train", "--out", str(run), "--steps", str(STEPS), "--eval-interval", "10", "--checkpoint-interval", "2",
            *COMMON]
    rc, text = _stop_at_first_checkpoint(args, env, signal.SIGTERM, nproc=2)
    assert rc != 0, text  # torchrun reports the stop
    part = _metrics(run)
    state = torch.load(run / "checkpoint.pt", weights_only=False)
    assert part["world_size"] == 2 and part["interrupted"] and part["stopped_by"] == "SIGTERM", text
    assert 2 <= part["step"] == state["step"] < STEPS and len(part["history"]["train"]) == part["step"]
    order = state["batch_order"]  # the global order: nothing of the world size in it
    assert sorted(order) == ["batch_size", "n_sequences", "seed", "seq_len", "steps_per_epoch"]
    assert (order["batch_size"], order["steps_per_epoch"]) == (4, order["n_sequences"] // 4)
    assert "module." not in next(iter(state["model"]))  # the unwrapped model, not the DDP wrapper
    loss, gnorm = _curve(part)
    ref_loss, ref_gnorm = _curve(ref)
    k = part["step"]
    np.testing.assert_allclose(loss, ref_loss[:k], rtol=RTOL)
    np.testing.assert_allclose(gnorm, ref_gnorm[:k], rtol=RTOL)

    _run(args + ["--resume"], env)  # the 2-process checkpoint, continued in 1 process
    done = _metrics(run)
    assert done["world_size"] == 1 and done["finished"] and done["step"] == STEPS
    loss, gnorm = _curve(done)
    assert len(loss) == STEPS
    np.testing.assert_allclose(loss, ref_loss, rtol=RTOL)
    np.testing.assert_allclose(gnorm, ref_gnorm, rtol=RTOL)
    np.testing.assert_allclose([r[1] for r in done["history"]["val"]], [r[1] for r in ref["history"]["val"]],
                               rtol=RTOL)


def test_two_process_distillation_follows_one(one_process, env, tmp_path):
    args = ["distill", "--teacher", str(one_process), "--student", "mask", "--steps", "3", "--eval-interval", "3",
            "--batch-size", "4", "--eval-batches", "1", "--threads", "1", "--no-progress"]
    single = _run(args + ["--out", str(tmp_path / "one")], env)
    p = _run(args + ["--out", str(tmp_path / "two")], env, nproc=2)
    assert p.stdout.count("zero-shot mask") == single.stdout.count("zero-shot mask") == 2  # rank 0 alone logs
    one, two = _metrics(tmp_path / "one"), _metrics(tmp_path / "two")
    assert (one["world_size"], two["world_size"]) == (1, 2) and two["finished"]
    for col in (1, 2, 3, 5):  # loss, KL, L1 penalty, grad norm
        np.testing.assert_allclose([r[col] for r in two["history"]["train"]], [r[col] for r in one["history"]["train"]],
                                   rtol=RTOL)
    np.testing.assert_allclose(two["last_eval"]["kl"], one["last_eval"]["kl"], rtol=RTOL)
    assert two["zero_shot"] == {**one["zero_shot"], **{k: v for k, v in two["zero_shot"].items()
                                                       if k.endswith("tokens_per_s")}}  # same weights at step 0


@pytest.mark.parametrize("sig, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_saves_a_checkpoint_and_sets_the_exit_status(one_process, env, tmp_path, sig, status):
    run = tmp_path / "run"
    rc, text = _stop_at_first_checkpoint(["train", "--out", str(run), "--steps", "1000", "--eval-interval", "1000",
                                          "--checkpoint-interval", "2", *COMMON], env, sig)
    assert rc == status, text
    m = _metrics(run)
    assert m["interrupted"] and not m["finished"] and m["stopped_by"] == signal.Signals(sig).name
    assert 2 <= m["step"] < 1000 and torch.load(run / "checkpoint.pt", weights_only=False)["step"] == m["step"]
    assert "continue with --resume" in text
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint.pt", "metrics.json", "tokenizer.json"]
