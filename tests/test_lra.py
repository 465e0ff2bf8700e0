"""The long-range tasks of Chapter 11 (sparse_core.lra): MQAR and ListOps generators against their
definitions, the task model, and training/resume on the course's engine."""
import json

import numpy as np
import pytest
import torch

from sparse_core.lra import (IGNORE, ListOpsBatches, MQARBatches, TaskConfig, TaskModel, TaskModelConfig,
                             generate_listops, listops_examples, listops_value, mqar_examples, train_task)
from sparse_core.lra.listops import OPERATORS, VOCAB
from sparse_core.lra.mqar import FILLER


@pytest.mark.parametrize("n,P,V", [(16, 2, 10), (64, 16, 40), (101, 7, 256)])
def test_mqar_examples_follow_the_definition(n, P, V):
    x, y = mqar_examples(np.random.default_rng(n), 50, n, P, V)
    assert x.shape == y.shape == (50, n) and x.dtype == y.dtype == np.int64
    half = (V - 1) // 2
    for xi, yi in zip(x, y):
        keys, values = xi[0:2 * P:2], xi[1:2 * P:2]
        assert len(set(keys)) == P and keys.min() >= 1 and keys.max() <= half      # distinct keys, lower half
        assert values.min() > half and values.max() < V                            # values, upper half
        lab = np.flatnonzero(yi != IGNORE)
        assert len(lab) == P and lab.min() >= 2 * P                                  # one query per key, after the context
        assert sorted(xi[lab]) == sorted(keys)                                       # every key queried once
        lookup = dict(zip(keys, values))
        assert all(yi[t] == lookup[xi[t]] and xi[t + 1] == lookup[xi[t]] for t in lab)  # label = value, value follows
        rest = np.ones(n, bool)
        rest[:2 * P] = False
        rest[lab] = rest[lab + 1] = False
        assert (xi[rest] == FILLER).all()


def test_mqar_batches_are_a_function_of_seed_step_and_rank():
    a, b = MQARBatches(64, 4, 32, 8, seed=3), MQARBatches(64, 4, 32, 8, seed=3)
    assert all(torch.equal(u, v) for u, v in zip(a.batch(5), b.batch(5)))
    assert not torch.equal(a.batch(5)[0], a.batch(6)[0])
    r0, r1 = MQARBatches(64, 4, 32, 8, seed=3, rank=0, world_size=2), MQARBatches(64, 4, 32, 8, seed=3, rank=1, world_size=2)
    assert r0.batch(0)[0].shape == (4, 64) and not torch.equal(r0.batch(0)[0], r1.batch(0)[0])
    held = next(a.held_out(1))[0]
    assert not any(torch.equal(held, a.batch(s)[0]) for s in range(3))


@pytest.mark.parametrize("kw,match", [
    (dict(seq_len=15, num_kv_pairs=4, vocab_size=64), "`seq_len`=15 is too short for `num_kv_pairs`=4"),
    (dict(seq_len=64, num_kv_pairs=8, vocab_size=12), "`vocab_size`=12 has 5 keys"),
    (dict(seq_len=64, num_kv_pairs=0, vocab_size=64), "`num_kv_pairs` must be a positive integer"),
])
def test_mqar_bad_settings_name_the_argument(kw, match):
    with pytest.raises(ValueError, match=match):
        mqar_examples(np.random.default_rng(0), 1, **kw)


@pytest.mark.parametrize("expr,value", [
    ("[MAX 2 9 [MIN 4 7 ] 0 ]", 9),
    ("[MIN 2 9 [MAX 4 7 ] 0 ]", 0),
    ("[MED 1 2 3 4 ]", 2),              # int(numpy.median) of an even count: 2.5 -> 2
    ("[MED 9 1 5 ]", 5),
    ("[SM 9 9 9 ]", 7),
    ("[SM [MAX 3 8 ] [MED 7 7 1 ] ]", 5),
])
def test_listops_value_by_hand(expr, value):
    assert listops_value(expr.split()) == value


def _value_recursive(tokens):
    """An independent evaluator: recursive descent over the token list."""
    def parse(i):
        t = tokens[i]
        if t.isdigit():
            return int(t), i + 1
        args, i = [], i + 1
        while tokens[i] != "]":
            v, i = parse(i)
            args.append(v)
        f = {"[MAX": max, "[MIN": min, "[MED": lambda a: int(np.median(a)), "[SM": lambda a: sum(a) % 10}[t]
        return f(args), i + 1
    v, end = parse(0)
    assert end == len(tokens)
    return v


def test_generated_expressions_are_well_formed_within_bounds_and_their_labels_are_right():
    rng = np.random.default_rng(0)
    for _ in range(200):
        toks = generate_listops(rng, max_depth=6, max_args=5, min_length=10, max_length=120)
        assert 10 <= len(toks) <= 120 and toks[0] in OPERATORS
        depth, deepest = 0, 0
        for t in toks:
            depth += t in OPERATORS
            depth -= t == "]"
            deepest = max(deepest, depth)
            assert depth >= 0
        assert depth == 0 and deepest <= 6
        assert listops_value(toks) == _value_recursive(toks)
    x, y = listops_examples(np.random.default_rng(1), 40, 200)
    assert x.shape == (40, 200) and y.shape == (40,) and set(y) <= set(range(10))
    assert all(listops_value(row) == label for row, label in zip(x, y))  # ids with pads evaluate too
    assert ((x > 0).sum(1) >= 50).all()


@pytest.mark.parametrize("tokens,match", [
    ("[MAX 1 2".split(), "unclosed"), ("1 2".split(), "several top-level"), ("[MAX ]".split(), "closes no operator"),
    (["[FOO"], "unknown ListOps token"),
])
def test_listops_malformed_expressions_are_refused(tokens, match):
    with pytest.raises(ValueError, match=match):
        listops_value(tokens)


def test_listops_batches_draw_from_a_fixed_pool():
    b = ListOpsBatches(64, 8, pool=30, max_depth=4, max_args=4, seed=1)
    x, y = b.batch(0)
    assert x.shape == (8, 64) and y.shape == (8,)
    assert torch.equal(b.batch(7)[0], ListOpsBatches(64, 8, pool=30, max_depth=4, max_args=4, seed=1).batch(7)[0])
    pool = {tuple(r) for r in b._pool[0].tolist()}
    assert all(tuple(r) in pool for s in range(5) for r in b.batch(s)[0].tolist())


@pytest.mark.parametrize("causal,n_classes", [(True, None), (False, 10)])
def test_task_model_heads_and_causality(causal, n_classes):
    torch.manual_seed(0)
    m = TaskModel(TaskModelConfig(vocab_size=20, max_len=48, d_model=32, n_heads=2, method="local",
                                  options={"window": 8, "block_size": 16}, causal=causal, n_classes=n_classes))
    ids = torch.randint(1, 20, (3, 40))
    out = m(ids)
    assert out.shape == ((3, 40, 20) if n_classes is None else (3, 10))
    if causal:
        ids2 = ids.clone()
        ids2[:, 30:] = 1
        torch.testing.assert_close(m(ids2)[:, :30], out[:, :30])
    with pytest.raises(ValueError, match="longer than `max_len`=48"):
        m(torch.ones(1, 49, dtype=torch.long))
    with pytest.raises(ValueError, match="does not take 'topk'"):
        TaskModelConfig(vocab_size=20, max_len=48, method="local", options={"topk": 3})


def test_pooling_ignores_pads():
    torch.manual_seed(0)
    m = TaskModel(TaskModelConfig(vocab_size=len(VOCAB), max_len=32, d_model=32, method="dense", causal=True,
                                  n_classes=10)).eval()
    ids = torch.randint(1, len(VOCAB), (1, 10))
    padded = torch.cat([ids, torch.zeros(1, 22, dtype=torch.long)], 1)
    torch.testing.assert_close(m(padded), m(ids))  # causal: pads after the expression change nothing


def test_training_learns_resumes_bit_identically_and_reports_accuracy(tmp_path):
    kw = dict(task="mqar", seq_len=32, num_kv_pairs=2, vocab_size=16, batch_size=16, steps=12, warmup=2, lr=3e-3,
              d_model=32, eval_interval=4, eval_batches=2, checkpoint_interval=4, threads=1)
    full = train_task(TaskConfig(**kw), tmp_path / "a", progress=False, log=lambda s: None)
    assert full["finished"] and len(full["history"]["val"]) == 3
    assert 0.0 <= full["last_eval"]["accuracy"] <= 1.0 and full["last_eval"]["count"] == 2 * 16 * 2
    part = TaskConfig(**kw)

    class Stop(Exception):
        pass

    def stop_at_8(step, loss):
        if step == 8:
            raise Stop

    with pytest.raises(Stop):  # killed after step 8: the checkpoint of step 4 stays
        train_task(part, tmp_path / "b", progress=False, callback=stop_at_8, log=lambda s: None)
    resumed = train_task(part, tmp_path / "b", resume=True, progress=False, log=lambda s: None)
    assert [r[1] for r in resumed["history"]["train"]] == [r[1] for r in full["history"]["train"]]
    m = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert m["task_config"]["task"] == "mqar" and m["model_config"]["method"] == "dense"


def test_listops_classifier_trains_a_few_steps(tmp_path):
    cfg = TaskConfig(task="listops", method="global_local", options={"window": 16, "num_global": 2, "block_size": 16},
                     seq_len=64, batch_size=8, steps=3, warmup=1, pool=40, max_depth=4, max_args=4, d_model=32,
                     eval_interval=3, eval_batches=1, checkpoint_interval=3, threads=1)
    m = train_task(cfg, tmp_path, progress=False, log=lambda s: None)
    assert m["finished"] and m["last_eval"]["count"] == 8
