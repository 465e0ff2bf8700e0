"""The training engine's parts: config checks shared by train and distill, batch shards, the stop
flag (SIGINT and SIGTERM), exit statuses, atomic files, the single-process default of
``distributed.setup``, and resume refusing changed data. (2-process runs: tests/test_distributed.py.)"""
import dataclasses
import os
import random
import signal

import numpy as np
import pytest
import torch

from sparse_core import _validation as V
from sparse_core.cli import common
from sparse_core.lm import distributed, engine
from sparse_core.lm.data import TokenBatches
from sparse_core.lm.distill import DistillConfig
from sparse_core.lm.train import TrainConfig, train

TOKENS = (np.arange(2000) * 7 % 64).astype(np.int32)


def test_shards_of_the_ranks_make_the_global_batch():
    one = TokenBatches(TOKENS, 16, 6, seed=3)
    for world in (2, 3, 6):
        shards = [TokenBatches(TOKENS, 16, 6, seed=3, rank=r, world_size=world) for r in range(world)]
        for step in (0, 5, one.steps_per_epoch + 1):  # the second epoch too
            x, y = one.batch(step)
            parts = [s.batch(step) for s in shards]
            assert all(p[0].shape == (6 // world, 16) for p in parts)
            assert torch.equal(torch.cat([p[0] for p in parts]), x) and torch.equal(torch.cat([p[1] for p in parts]), y)
        assert shards[1].describe() == one.describe()  # the saved batch order does not depend on the rank
    with pytest.raises(ValueError, match="batch_size.*divisible"):
        TokenBatches(TOKENS, 16, 6, rank=0, world_size=4)
    with pytest.raises(ValueError, match="rank"):
        TokenBatches(TOKENS, 16, 6, rank=2, world_size=2)
    with pytest.raises(ValueError, match="world_size"):
        TokenBatches(TOKENS, 16, 6, world_size=0)


def test_config_checks_are_shared_and_name_the_field():
    for cls in (TrainConfig, DistillConfig):
        for field, bad in (("seq_len", 0), ("batch_size", True), ("eval_batches", 2.0), ("steps", -1)):
            with pytest.raises(ValueError, match=f"`{field}` must be a positive integer"):
                cls(**{field: bad})
        with pytest.raises(ValueError, match="`warmup` must be a non-negative integer"):
            cls(warmup=-1)
        with pytest.raises(ValueError, match="device"):
            cls(device="tpu")
        with pytest.raises(ValueError, match="lr > 0"):
            cls(lr=0.0)
    with pytest.raises(ValueError, match="`vocab_size` must be a positive integer"):
        TrainConfig(vocab_size=0)
    with pytest.raises(ValueError, match="`nsa_window` must be a non-negative integer"):
        DistillConfig(nsa_window=-1)
    with pytest.raises(ValueError, match="`n_features` must be a positive integer or None"):
        DistillConfig(n_features=0)
    with pytest.raises(ValueError, match="`l1` must be >= 0"):
        DistillConfig(l1=-0.1)
    # the shared fields, once, with each command's defaults
    shared = [f.name for f in dataclasses.fields(engine.EngineConfig)]
    assert [f.name for f in dataclasses.fields(TrainConfig)][:len(shared)] == shared
    assert [f.name for f in dataclasses.fields(DistillConfig)][:len(shared)] == shared
    assert (TrainConfig().steps, DistillConfig().steps, DistillConfig().weight_decay) == (1000, 200, 0.0)
    assert common.ENGINE_FIELDS == tuple(shared)
    with pytest.raises(TypeError, match="not a field"):
        type("Bad", (engine.EngineConfig,), {}, stepz=3)


def test_check_int_fields():
    obj = type("C", (), {"a": 1, "b": 0, "c": None})()
    V.check_int_fields(obj, positive=("a",), nonnegative=("b",), optional_positive=("c",))
    with pytest.raises(ValueError, match="`b` must be a positive integer, got 0"):
        V.check_int_fields(obj, positive=("a", "b"))
    with pytest.raises(ValueError, match="`c` must be a non-negative integer, got None"):
        V.check_int_fields(obj, nonnegative=("c",))


def test_stop_flag_takes_sigint_and_sigterm():
    before = signal.getsignal(signal.SIGTERM)
    with engine.StopFlag() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested and stop.signal_name == "SIGTERM"
        os.kill(os.getpid(), signal.SIGTERM)  # a second SIGTERM only asks again
        assert stop.signal_name == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) is before  # restored
    with engine.StopFlag() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.signal_name == "SIGINT"
        with pytest.raises(KeyboardInterrupt):  # a second Ctrl-C aborts at once
            os.kill(os.getpid(), signal.SIGINT)
    assert engine.exit_status({"stopped_by": "SIGINT"}) == 130
    assert engine.exit_status({"stopped_by": "SIGTERM"}) == 143
    assert engine.exit_status({"stopped_by": None, "interrupted": False}) == 0


def test_rng_state_round_trip_and_atomic_files(tmp_path):
    state = engine.rng_state()
    a = (torch.rand(3), np.random.rand(), random.random())
    engine.set_rng_state(state)
    b = (torch.rand(3), np.random.rand(), random.random())
    assert torch.equal(a[0], b[0]) and a[1:] == b[1:]
    engine.atomic_json({"x": 1}, tmp_path / "m.json")
    engine.atomic_torch_save({"y": torch.ones(2)}, tmp_path / "c.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pt", "m.json"]


def test_single_process_without_torchrun_variables():
    env = {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1"}  # no MASTER_PORT
    assert not distributed.launched_by_torchrun(env)
    d = distributed.setup("cpu", env)
    assert (d.rank, d.world_size, d.enabled, d.is_main) == (0, 1, False, True)
    assert not torch.distributed.is_initialized()
    x = torch.tensor([1.0, 2.0])
    assert d.mean(x) is x and d.any(True) and not d.any(False)
    model = torch.nn.Linear(2, 2)
    assert d.wrap(model, torch.device("cpu")) is model
    assert distributed.launched_by_torchrun({**env, "MASTER_PORT": "29500"})


def test_resume_refuses_other_training_data(tmp_path):
    cfg = TrainConfig(preset="tiny", vocab_size=64, seq_len=16, batch_size=2, steps=3, warmup=1, eval_interval=3,
                      eval_batches=1, checkpoint_interval=1)

    def stop_at_2(step, loss):
        if step == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    m = train(cfg, tmp_path, train_tokens=TOKENS, val_tokens=TOKENS[:300], progress=False, callback=stop_at_2,
              log=lambda s: None)
    assert m["interrupted"] and m["stopped_by"] == "SIGTERM" and m["step"] == 2 and m["world_size"] == 1
    with pytest.raises(ValueError, match="training data changed"):
        train(cfg, tmp_path, resume=True, train_tokens=TOKENS[:1000], val_tokens=TOKENS[:300], progress=False,
              log=lambda s: None)
    done = train(cfg, tmp_path, resume=True, train_tokens=TOKENS, val_tokens=TOKENS[:300], progress=False,
                 log=lambda s: None)
    assert done["finished"] and done["stopped_by"] is None and len(done["history"]["train"]) == 3


@pytest.mark.parametrize("command", ["train", "distill"])
def test_help_documents_torchrun_and_the_exit_statuses(command, capsys):
    from sparse_core.cli import main

    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for needle in (f"torchrun --nproc_per_node N -m sparse_core {command} --out RUN", "--nnodes M", "--node_rank NODE",
                   "--rdzv_backend c10d --rdzv_endpoint HOST:PORT", "--batch-size is the global batch", "130", "143",
                   "--device {cpu,cuda}"):
        assert needle in text, needle


def test_resuming_with_another_thread_count_agrees_to_rounding(tmp_path):
    """What RESUMABLE_CHANGES promises for ``threads``: the same optimisation (same batches and
    schedule), losses equal to float32 rounding -- not bit for bit (the module docstring says why)."""
    kw = dict(preset="tiny", vocab_size=64, seq_len=32, batch_size=4, steps=12, warmup=2, eval_interval=12,
              eval_batches=1, checkpoint_interval=6)
    data = dict(train_tokens=TOKENS, val_tokens=TOKENS[:300], progress=False, log=lambda s: None)
    old = torch.get_num_threads()
    try:
        full = train(TrainConfig(threads=2, **kw), tmp_path / "two", **data)

        def stop_at_6(step, loss):
            if step == 6:
                os.kill(os.getpid(), signal.SIGTERM)

        train(TrainConfig(threads=2, **kw), tmp_path / "cut", callback=stop_at_6, **data)
        rest = train(TrainConfig(threads=1, **kw), tmp_path / "cut", resume=True, **data)
    finally:
        torch.set_num_threads(old)
    a = np.array([r[1] for r in full["history"]["train"]])
    b = np.array([r[1] for r in rest["history"]["train"]])
    assert a.shape == b.shape == (12,)
    np.testing.assert_array_equal(a[:6], b[:6])                  # before the change: the same run
    np.testing.assert_allclose(b[6:], a[6:], rtol=1e-4, atol=0)  # after: the same optimisation, to rounding
