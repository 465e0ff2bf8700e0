"""Distillation: the KL loss (log space, exact zero, float64 reference, extreme logits, temperature),
freezing (gradients reach exactly the declared attention parameters), measured density, training,
resume after Ctrl-C, generation without a cache, and the `distill` command on WikiText-2."""
import copy
import json
import math
import os
import signal

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sparse_core.cli import distill as distill_cli
from sparse_core.lm import distill as D
from sparse_core.cli import main
from sparse_core.lm.data import wikitext as W
from sparse_core.models import GPTNeoX
from sparse_core.models.gpt_neox import generate, preset
from sparse_core.patterns import causal, intersection, sliding_window

VOCAB = 48


def _tokens(n, seed):
    """Runs of an arithmetic sequence mod VOCAB: predicting a token needs the previous two."""
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n:
        start, step = rng.integers(VOCAB), rng.integers(1, 5)
        out += [(start + step * i) % VOCAB for i in range(int(rng.integers(8, 24)))]
    return np.array(out[:n], dtype=np.int32)


TRAIN, VAL = _tokens(5000, 0), _tokens(1500, 1)


def _teacher(seed=0):
    torch.manual_seed(seed)
    return GPTNeoX(preset("tiny", vocab_size=VOCAB, hidden_size=64, intermediate_size=128)).eval()


def _cfg(**kw):
    base = dict(seq_len=40, batch_size=4, steps=8, lr=3e-3, warmup=2, eval_interval=4, eval_batches=2,
                checkpoint_interval=3, topk=6, nsa_block=8, nsa_select=2, nsa_window=8, window=8, block_size=16,
                hidden=8)
    return D.DistillConfig(**{**base, **kw})


def _kl64(t, s, temperature):
    lp = torch.log_softmax(t.double() / temperature, -1)
    lq = torch.log_softmax(s.double() / temperature, -1)
    return float((lp.exp() * (lp - lq)).sum(-1).mean()) * temperature ** 2


# ---------------------------------------------------------------------------- the loss

def test_kl_is_exactly_zero_for_identical_logits_and_models():
    g = torch.Generator().manual_seed(0)
    for shape in [(3, 7, 11), (5, 100), (2, 2, 3, 50)]:
        z = torch.randn(*shape, generator=g) * 5
        for temperature in (0.5, 1.0, 3.0):
            assert D.kl_divergence(z, z.clone(), temperature).item() == 0.0
    teacher = _teacher()
    x = torch.from_numpy(VAL[:2 * 30].reshape(2, 30).astype(np.int64))
    assert D.kl_divergence(teacher(x), copy.deepcopy(teacher)(x)).item() == 0.0


def test_kl_is_positive_for_different_logits_and_matches_float64():
    g = torch.Generator().manual_seed(1)
    for shape in [(4, 9, 13), (64, 300)]:
        t, s = torch.randn(*shape, generator=g) * 3, torch.randn(*shape, generator=g) * 3
        for temperature in (0.5, 1.0, 2.0, 7.0):
            kl = D.kl_divergence(t, s, temperature)
            ref = _kl64(t, s, temperature)
            assert kl.dtype == torch.float32 and kl.item() > 0
            assert kl.item() == pytest.approx(ref, rel=2e-5, abs=1e-7)
        # small perturbation: still positive, close to the reference
        s2 = t + 1e-2 * torch.randn(*shape, generator=g)
        assert 0 < D.kl_divergence(t, s2).item() == pytest.approx(_kl64(t, s2, 1.0), rel=1e-3)
    t64, s64 = t.double(), s.double()
    assert D.kl_divergence(t64, s64).dtype == torch.float64
    assert D.kl_divergence(t64, s64).item() == pytest.approx(_kl64(t64, s64, 1.0), rel=1e-12)


def test_kl_is_the_mean_over_tokens_and_asymmetric():
    t = torch.tensor([[0.0, 0.0], [5.0, 0.0]])
    s = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    p = torch.softmax(t[1], -1)
    second = float((p * (p.log() - math.log(0.5))).sum())
    assert D.kl_divergence(t, s).item() == pytest.approx(second / 2, rel=1e-6)
    assert D.kl_divergence(s, t).item() != pytest.approx(D.kl_divergence(t, s).item(), rel=1e-3)


def test_kl_is_finite_at_extreme_logits_with_and_without_temperature():
    g = torch.Generator().manual_seed(2)
    t = torch.randn(6, 40, generator=g).sign() * 1e4
    s = torch.randn(6, 40, generator=g).sign() * 1e4
    s.requires_grad_(True)
    for temperature in (0.25, 1.0, 10.0):
        kl = D.kl_divergence(t, s, temperature)
        assert torch.isfinite(kl) and kl.item() >= 0
        assert kl.item() == pytest.approx(_kl64(t, s.detach(), temperature), rel=1e-4)
        (grad,) = torch.autograd.grad(kl, s)
        assert torch.isfinite(grad).all()
    one_hot = torch.full((3, 20), -1e4)
    one_hot[:, 0] = 1e4
    assert D.kl_divergence(one_hot, one_hot).item() == 0.0
    assert math.isfinite(D.kl_divergence(one_hot, -one_hot).item())


def test_temperature_scaling_keeps_the_gradient_size():
    g = torch.Generator().manual_seed(3)
    t, s0 = torch.randn(50, 30, generator=g), torch.randn(50, 30, generator=g)
    norms = []
    for temperature in (4.0, 16.0):
        s = s0.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(D.kl_divergence(t, s, temperature), s)
        norms.append(grad.norm().item())
    # at high T the T^2-scaled KL tends to the logit-matching loss: its gradient no longer shrinks
    assert norms[1] == pytest.approx(norms[0], rel=0.1)


def test_kl_rejects_bad_input():
    z = torch.zeros(2, 5)
    with pytest.raises(ValueError, match="same shape"):
        D.kl_divergence(z, torch.zeros(2, 6))
    with pytest.raises(ValueError, match="temperature"):
        D.kl_divergence(z, z, 0.0)
    with pytest.raises(ValueError, match="finite"):
        D.kl_divergence(z, torch.full((2, 5), float("nan")))
    with pytest.raises(ValueError, match="floating"):
        D.kl_divergence(torch.zeros(2, 5, dtype=torch.long), z)


# ---------------------------------------------------------------------------- freezing

EXPECTED_NEW = {
    "mask": ["gate.w_2.bias", "gate.w_2.weight", "gate.w_k.weight", "gate.w_q.bias", "gate.w_q.weight"],
    "nsa": ["gate.bias", "gate.weight", "phi_k.weight", "phi_v.weight", "pos_k", "pos_v"],
}
PROJECTIONS = ["dense.bias", "dense.weight", "query_key_value.bias", "query_key_value.weight"]


@pytest.mark.parametrize("kind,mode", [("mask", "new"), ("nsa", "new"), ("performer", "attention"),
                                       ("topk", "attention"), ("block", "attention"), ("mask", "attention")])
def test_gradients_reach_exactly_the_attention_parameters(kind, mode):
    teacher = _teacher()
    cfg = _cfg(student=kind, train=mode)
    student = D.make_student(teacher, cfg)
    names = D.attention_parameter_names(student, mode)
    local = sorted(EXPECTED_NEW.get(kind, []) + (PROJECTIONS if mode == "attention" else []))
    assert names == sorted(f"layers.{i}.attention.{n}" for i in range(2) for n in local)
    x = torch.from_numpy(TRAIN[:3 * 40].reshape(3, 40).astype(np.int64))
    with torch.no_grad():
        zt = teacher(x)
    loss = D.kl_divergence(zt, student(x))
    pen = D.l1_penalty(student)
    if pen is not None:
        loss = loss + 0.1 * pen
    loss.backward()
    declared = set(names)
    for name, p in student.named_parameters():
        if name in declared:
            assert p.requires_grad and p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert not p.requires_grad and (p.grad is None or not p.grad.any()), name
    assert all(p.grad is None for p in teacher.parameters())
    # the frozen parts are the teacher's weights, unchanged
    sd = student.state_dict()
    for name, t in teacher.state_dict().items():
        assert torch.equal(sd[name], t), name


def test_train_new_without_new_parameters_is_refused_and_auto_resolves():
    with pytest.raises(ValueError, match="adds no parameters"):
        D.DistillConfig(student="performer", train="new")
    assert D.DistillConfig(student="mask").train_mode == "new"
    assert D.DistillConfig(student="topk").train_mode == "attention"
    with pytest.raises(ValueError, match="student"):
        D.DistillConfig(student="lsh")
    with pytest.raises(ValueError, match="no attention parameters"):
        D.freeze_all_but_attention(_teacher(), "new")


def test_cli_names_match_the_module():
    assert distill_cli.STUDENT_KINDS == D.STUDENT_KINDS
    assert distill_cli.TRAIN_MODES == D.TRAIN_MODES
    assert distill_cli.BLOCK_PATTERNS == D.BLOCK_PATTERNS


# ---------------------------------------------------------------------------- what the student computes

def test_students_that_cover_the_whole_past_equal_the_teacher():
    teacher = _teacher()
    x = torch.from_numpy(VAL[:2 * 40].reshape(2, 40).astype(np.int64))
    zt = teacher(x)
    for kind, kw in [("block", dict(window=64)), ("topk", dict(topk=40))]:
        student = D.make_student(teacher, _cfg(student=kind, **kw))
        with torch.no_grad():
            assert D.kl_divergence(zt, student(x)).item() < 1e-7
    # the learned mask starts near the teacher (gates ~ constant), not exactly at it
    kl = D.kl_divergence(zt, D.make_student(teacher, _cfg(student="mask"))(x)).item()
    assert 0 < kl < 1e-4


def test_measured_density_and_flops():
    teacher = _teacher()
    n, b, k, w = 40, 2, 6, 8
    x = torch.from_numpy(VAL[:b * n].reshape(b, n).astype(np.int64))
    causal_pairs = n * (n + 1) // 2
    student = D.make_student(teacher, _cfg(student="topk", topk=k))
    with D.record_stats(student) as st, torch.no_grad():
        student(x)
    layers_heads = 2 * 4 * b
    assert st["causal_pairs"] == layers_heads * causal_pairs
    assert st["pairs"] == layers_heads * sum(min(k, i + 1) for i in range(n))
    student = D.make_student(teacher, _cfg(student="block", window=w, block_size=16))
    with D.record_stats(student) as st, torch.no_grad():
        student(x)
    allowed = intersection(sliding_window(w, causal=True), causal()).to_dense(n, n).sum()
    assert st["pairs"] == layers_heads * allowed
    assert st["pairs"] <= st["macs"] / (2 * 16)  # whole tiles are computed
    ev = D.evaluate_student(teacher, student, VAL, n, 2, max_batches=2)
    assert ev["density"] == pytest.approx(allowed / causal_pairs)
    tiles = intersection(sliding_window(w, causal=True), causal()).to_layout(n, n, 16).computed_pairs()
    assert ev["flops_ratio"] == pytest.approx(tiles / causal_pairs)  # > 1 here: 3 x 3 tiles of 16 for n = 40
    assert ev["kl"] > 0 and ev["teacher_ppl"] > 1
    assert student.layers[0].attention.stats is None  # recording ends with the evaluation


def test_generate_without_cache_matches_the_cached_generation():
    teacher = _teacher()
    ids = torch.from_numpy(VAL[:12].astype(np.int64))[None]
    assert torch.equal(D.generate_full(teacher, ids, 6), generate(teacher, ids, 6, temperature=0))
    student = D.make_student(teacher, _cfg(student="nsa"))
    out = D.generate_full(student, ids, 4)
    assert out.shape == (1, 16) and torch.equal(out[:, :12], ids)
    with pytest.raises(ValueError, match="key-value cache"):
        generate(student, ids, 2)


# ---------------------------------------------------------------------------- training

@pytest.fixture(scope="module")
def trained_teacher(tmp_path_factory):
    """A dense teacher that has learned the stream (its attention matters)."""
    from sparse_core.lm.train import TrainConfig, train

    cfg = TrainConfig(preset="tiny", vocab_size=VOCAB, seq_len=40, batch_size=8, steps=40, lr=5e-3, warmup=4,
                      eval_interval=40, eval_batches=2, checkpoint_interval=40)
    run = tmp_path_factory.mktemp("teacher")
    train(cfg, run, train_tokens=TRAIN, val_tokens=VAL, progress=False, log=lambda s: None)
    from sparse_core.lm.train import load_run

    return load_run(run)[0]


def test_distillation_lowers_the_kl(tmp_path, trained_teacher):
    teacher = trained_teacher
    m = D.distill(_cfg(student="topk", topk=2, steps=30, lr=3e-3, eval_interval=30), tmp_path, teacher,
                  train_tokens=TRAIN, val_tokens=VAL, progress=False, log=lambda s: None)
    assert m["history"]["val"][0][0] == 0 and m["zero_shot"]["kl"] == m["history"]["val"][0][1]
    assert m["last_eval"]["kl"] < 0.8 * m["zero_shot"]["kl"]
    assert m["teacher_eval"]["teacher_ppl"] > 1 and m["finished"] and m["train_mode"] == "attention"


def test_ctrl_c_then_resume_gives_bit_identical_losses(tmp_path):
    teacher = _teacher()
    cfg = _cfg(student="mask", l1=0.05)
    kw = dict(train_tokens=TRAIN, val_tokens=VAL, progress=False, log=lambda s: None)
    full = D.distill(cfg, tmp_path / "full", teacher, **kw)
    assert full["finished"] and full["step"] == 8 and len(full["history"]["val"]) == 3  # zero-shot, 4, 8

    def ctrl_c(step, loss):
        if step == 5:
            os.kill(os.getpid(), signal.SIGINT)

    part = D.distill(cfg, tmp_path / "cut", teacher, callback=ctrl_c, **kw)
    assert part["interrupted"] and part["step"] == 5
    with pytest.raises(FileExistsError, match="resume"):
        D.distill(cfg, tmp_path / "cut", teacher, **kw)
    with pytest.raises(ValueError, match="different settings"):
        D.distill(_cfg(student="mask", l1=0.1), tmp_path / "cut", teacher, resume=True, **kw)
    with pytest.raises(ValueError, match="another teacher"):
        D.distill(cfg, tmp_path / "cut", _teacher(seed=1), resume=True, **kw)
    rest = D.distill(cfg, tmp_path / "cut", teacher, resume=True, **kw)
    assert rest["finished"] and rest["history"]["train"] == full["history"]["train"]
    assert rest["history"]["val"] == full["history"]["val"]
    untimed = lambda ev: {k: v for k, v in ev.items() if not k.endswith("tokens_per_s")}  # noqa: E731
    assert untimed(rest["zero_shot"]) == untimed(full["zero_shot"])
    again = D.distill(cfg, tmp_path / "cut", teacher, resume=True, **kw)  # finished: nothing to do, same report
    assert again["step"] == 8 and again["last_eval"] == rest["last_eval"] and again["zero_shot"] == rest["zero_shot"]
    student, loaded_cfg, state = D.load_student(tmp_path / "cut")
    assert loaded_cfg == cfg and state["step"] == 8
    x = torch.from_numpy(VAL[:40][None].astype(np.int64))
    ref, _, _ = D.load_student(tmp_path / "full")
    assert torch.equal(student(x), ref(x))


@pytest.mark.skipif(W.find_wikitext2() is None, reason="WikiText-2 not found (set SPARSE_COURSE_DATA)")
def test_distill_command_on_wikitext2(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SPARSE_COURSE_CACHE", str(tmp_path / "cache"))
    teacher = tmp_path / "teacher"
    assert main(["train", "--out", str(teacher), "--vocab-size", "2000", "--steps", "2", "--seq-len", "48",
                 "--batch-size", "2", "--warmup", "1", "--eval-interval", "2", "--eval-batches", "1",
                 "--no-progress"]) == 0
    out = tmp_path / "student"
    args = ["distill", "--teacher", str(teacher), "--out", str(out), "--student", "block", "--window", "16",
            "--block-size", "16", "--steps", "2", "--batch-size", "2", "--eval-interval", "2", "--eval-batches", "1",
            "--no-progress", "--temperature", "2"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "zero-shot block" in text and "teacher ppl" in text and "tokens/s" in text
    m = json.loads((out / D.METRICS).read_text())
    assert m["command"].startswith("python -m sparse_core") and m["finished"]
    for key in ("kl", "student_ppl", "density", "flops_ratio", "student_tokens_per_s"):
        assert m["zero_shot"][key] is not None and m["last_eval"][key] is not None
    assert m["teacher_eval"]["teacher_ppl"] > 1 and m["train_tokens_per_s"] > 0
    assert m["distill_config"]["temperature"] == 2.0 and m["distill_config"]["seq_len"] == 48
    assert 0 < m["last_eval"]["density"] < 1 and (out / "tokenizer.json").is_file()
    capsys.readouterr()
    # expected failures: one line, status 2
    assert main(args) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["distill", "--teacher", str(teacher), "--out", str(tmp_path / "p"), "--student", "performer",
                 "--train", "new"]) == 2
    assert "adds no parameters" in capsys.readouterr().err
    assert main(["distill", "--teacher", str(tmp_path / "none"), "--out", str(tmp_path / "q")]) == 2
    assert "checkpoint.pt" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="exactly one"):
        main(["distill", "--out", str(tmp_path / "r")])


@pytest.mark.skipif(W.find_wikitext2() is None, reason="WikiText-2 not found (set SPARSE_COURSE_DATA)")
def test_distill_from_a_hugging_face_checkpoint_folder(tmp_path, monkeypatch):
    """--hf-model takes a GPT-NeoX folder laid out like Pythia's as the teacher."""
    transformers = pytest.importorskip("transformers", reason="transformers writes the checkpoint")
    from sparse_core.lm.data.tokenizer import train_bpe

    monkeypatch.setenv("SPARSE_COURSE_CACHE", str(tmp_path / "cache"))
    tok = train_bpe(W.read_split("train").splitlines(keepends=True)[:500], 300)
    folder = tmp_path / "neox"
    config = transformers.GPTNeoXConfig(vocab_size=300, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                        intermediate_size=64, rotary_pct=0.25, max_position_embeddings=64)
    torch.manual_seed(0)
    transformers.GPTNeoXForCausalLM(config).save_pretrained(folder, safe_serialization=True)
    tok.save(str(folder / "tokenizer.json"))
    out = tmp_path / "student"
    assert main(["distill", "--hf-model", str(folder), "--out", str(out), "--student", "nsa", "--nsa-block", "8",
                 "--nsa-window", "8", "--seq-len", "32", "--batch-size", "2", "--steps", "2", "--eval-interval", "2",
                 "--eval-batches", "1", "--no-progress"]) == 0
    m = json.loads((out / D.METRICS).read_text())
    assert m["teacher_source"] == str(folder) and m["train_mode"] == "new" and m["finished"]
    assert m["zero_shot"]["kl"] >= 0 and m["last_eval"]["density"] > 0
