"""Training loop: schedule values, learning on structured tokens, exact resume after Ctrl-C (dense and
block-sparse), evaluation numbers, and the train/eval/generate commands on WikiText-2."""
import json
import math
import os
import signal

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sparse_core.cli import lm as lm_cli
from sparse_core.cli import main
from sparse_core.lm.data import wikitext as W
from sparse_core.models import GPTNeoX, PRESETS
from sparse_core.models.gpt_neox import ATTENTION_KINDS
from sparse_core.lm.train import CHECKPOINT, METRICS, TrainConfig, evaluate, load_run, lr_at, train

VOCAB = 64


def _tokens(n, seed):
    """A learnable stream: runs of an arithmetic sequence mod VOCAB with random starts and steps."""
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n:
        start, step = rng.integers(VOCAB), rng.integers(1, 5)
        out += [(start + step * i) % VOCAB for i in range(int(rng.integers(8, 24)))]
    return np.array(out[:n], dtype=np.int32)


TRAIN, VAL = _tokens(6000, 0), _tokens(1200, 1)


def _cfg(**kw):
    base = dict(preset="tiny", vocab_size=VOCAB, seq_len=32, batch_size=4, steps=10, lr=3e-3, warmup=2,
                eval_interval=5, eval_batches=2, checkpoint_interval=3, window=8, stride=8, block_size=16)
    return TrainConfig(**{**base, **kw})


def test_schedule_warmup_then_cosine_to_the_minimum():
    cfg = TrainConfig(lr=1e-3, warmup=10, steps=110, min_lr_ratio=0.1)
    assert lr_at(0, cfg) == pytest.approx(1e-4)
    assert lr_at(4, cfg) == pytest.approx(5e-4)
    assert lr_at(9, cfg) == pytest.approx(1e-3) and lr_at(10, cfg) == pytest.approx(1e-3)
    # halfway through the cosine: the mean of peak and minimum
    mid = 10 + (110 - 1 - 10) / 2
    assert lr_at(int(mid), cfg) == pytest.approx(1e-4 + 0.5 * 9e-4 * (1 + math.cos(math.pi * (int(mid) - 10) / 99)))
    assert lr_at(109, cfg) == pytest.approx(1e-4)
    after = [lr_at(s, cfg) for s in range(10, 110)]
    assert all(a >= b for a, b in zip(after, after[1:]))
    assert lr_at(0, TrainConfig(lr=2e-3, warmup=0, steps=5)) == pytest.approx(2e-3)
    with pytest.raises(ValueError, match="warmup"):
        TrainConfig(warmup=-1)


def test_cli_names_match_the_model():
    assert lm_cli.ATTENTION_KINDS == ATTENTION_KINDS
    assert lm_cli.PRESET_NAMES == tuple(PRESETS)


@pytest.mark.parametrize("kind", ["dense", "local"])
def test_ctrl_c_then_resume_gives_bit_identical_losses(tmp_path, kind):
    cfg = _cfg(attention=kind)
    full = train(cfg, tmp_path / "full", train_tokens=TRAIN, val_tokens=VAL, progress=False, log=lambda s: None)
    assert full["finished"] and full["step"] == 10 and len(full["history"]["val"]) == 2

    def ctrl_c(step, loss):
        if step == 4:
            os.kill(os.getpid(), signal.SIGINT)  # the handler lets step 4 finish, then saves

    part = train(cfg, tmp_path / "cut", train_tokens=TRAIN, val_tokens=VAL, progress=False, callback=ctrl_c,
                 log=lambda s: None)
    assert part["interrupted"] and part["step"] == 4 and not part["finished"]
    assert torch.load(tmp_path / "cut" / CHECKPOINT, weights_only=False)["step"] == 4
    with pytest.raises(FileExistsError, match="resume"):
        train(cfg, tmp_path / "cut", train_tokens=TRAIN, val_tokens=VAL, progress=False)
    with pytest.raises(ValueError, match="lr"):
        train(_cfg(attention=kind, lr=1e-3), tmp_path / "cut", resume=True, train_tokens=TRAIN, val_tokens=VAL,
              progress=False)
    rest = train(cfg, tmp_path / "cut", resume=True, train_tokens=TRAIN, val_tokens=VAL, progress=False,
                 log=lambda s: None)
    assert rest["finished"]
    assert rest["history"] == full["history"]  # every loss, lr, grad norm and val loss, bit for bit
    a = torch.load(tmp_path / "full" / CHECKPOINT, weights_only=False)["model"]
    b = torch.load(tmp_path / "cut" / CHECKPOINT, weights_only=False)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert sorted(p.name for p in (tmp_path / "cut").iterdir()) == [CHECKPOINT, METRICS]  # no temporary files
    saved = json.loads((tmp_path / "cut" / METRICS).read_text())
    assert saved["step"] == 10 and saved["peak_rss_bytes"] > 0 and saved["train_tokens_per_s"] > 0


def test_training_learns_the_structured_stream(tmp_path):
    m = train(_cfg(steps=20, eval_interval=20, lr=5e-3, attention="strided"), tmp_path, train_tokens=TRAIN, val_tokens=VAL,
              progress=False, log=lambda s: None)
    losses = [row[1] for row in m["history"]["train"]]
    assert losses[0] > math.log(VOCAB) - 0.3  # starts near uniform
    assert np.mean(losses[-5:]) < losses[0] - 1.0
    assert m["history"]["val"][-1][1] < math.log(VOCAB) - 1.0


def test_evaluate_is_the_mean_token_loss():
    torch.manual_seed(0)
    model = GPTNeoX(_cfg().model_config())
    ev = evaluate(model, VAL, 32, 4, max_batches=3)
    with torch.no_grad():
        starts = np.arange(12) * 32
        x = torch.from_numpy(np.stack([VAL[s:s + 32] for s in starts]).astype(np.int64))
        y = torch.from_numpy(np.stack([VAL[s + 1:s + 33] for s in starts]).astype(np.int64))
        expected = F.cross_entropy(model(x).reshape(-1, VOCAB), y.reshape(-1)).item()
    assert ev["tokens"] == 12 * 32
    assert ev["loss"] == pytest.approx(expected, rel=1e-6)
    assert ev["ppl"] == pytest.approx(math.exp(expected), rel=1e-6)
    assert "per_position_loss" not in ev
    # per position: the mean over the 12 sequences of the loss at each position
    pos = evaluate(model, VAL, 32, 4, max_batches=3, per_position=True)["per_position_loss"]
    with torch.no_grad():
        by_pos = F.cross_entropy(model(x).transpose(1, 2), y, reduction="none").mean(0)
    assert len(pos) == 32
    np.testing.assert_allclose(pos, by_pos.numpy(), rtol=1e-5)
    assert np.mean(pos) == pytest.approx(ev["loss"], rel=1e-6)


@pytest.mark.skipif(W.find_wikitext2() is None, reason="WikiText-2 not found (set SPARSE_COURSE_DATA)")
def test_commands_on_wikitext2(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SPARSE_COURSE_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), "--vocab-size", "2000", "--steps", "2", "--seq-len", "64",
                 "--batch-size", "2", "--warmup", "1", "--eval-interval", "2", "--eval-batches", "1",
                 "--attention", "mixed", "--window", "16", "--stride", "16", "--block-size", "16",
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "val loss" in out and "tokens/s" in out and "peak RSS" in out
    metrics = json.loads((run / METRICS).read_text())
    assert metrics["command"].startswith("python -m sparse_core") and metrics["model_config"]["vocab_size"] == 2000
    model, tok, _ = load_run(run)
    assert tok.get_vocab_size() == 2000 and model.config.attention == "mixed"
    assert main(["eval", "--checkpoint", str(run), "--max-batches", "1", "--batch-size", "2",
                 "--json", str(tmp_path / "eval.json")]) == 0
    ev = json.loads((tmp_path / "eval.json").read_text())
    assert ev["tokens"] == 2 * 64 and ev["ppl"] == pytest.approx(math.exp(ev["loss"]))
    assert main(["generate", "--checkpoint", str(run), "--max-new-tokens", "5", "--prompt", " The game",
                 "--json", str(tmp_path / "gen.json")]) == 0
    gen = json.loads((tmp_path / "gen.json").read_text())
    assert gen["new_tokens"] == 5 and gen["text"].startswith(" The game") and gen["decode_tokens_per_s"] > 0
    with pytest.raises(SystemExit, match="exactly one"):
        main(["generate", "--max-new-tokens", "1"])
    capsys.readouterr()
    # expected failures: one clear line and status 2
    assert main(["train", "--out", str(run), "--steps", "2", "--vocab-size", "2000"]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["train", "--out", str(run), "--steps", "3", "--vocab-size", "2000", "--resume"]) == 2
    assert "different settings" in capsys.readouterr().err
    assert main(["eval", "--checkpoint", str(tmp_path / "nothing")]) == 2
    assert "checkpoint.pt" in capsys.readouterr().err


@pytest.mark.skipif(W.find_wikitext2() is None, reason="WikiText-2 not found (set SPARSE_COURSE_DATA)")
def test_eval_and_generate_a_hugging_face_checkpoint_folder(tmp_path, monkeypatch, capsys):
    """--hf-model reads a GPT-NeoX folder (weights, config, tokenizer.json), as Pythia's are laid out;
    the attention can be swapped for a sparse pattern at evaluation time."""
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
    results = {}
    for kind in ("dense", "local"):
        out = tmp_path / f"{kind}.json"
        assert main(["eval", "--hf-model", str(folder), "--seq-len", "32", "--max-batches", "2", "--batch-size", "2",
                     "--attention", kind, "--window", "4", "--block-size", "16", "--json", str(out)]) == 0
        results[kind] = json.loads(out.read_text())
    assert results["dense"]["tokens"] == results["local"]["tokens"] == 4 * 32
    assert results["local"]["pattern"].startswith("(sliding_window(window=4")
    assert results["dense"]["loss"] != results["local"]["loss"]  # the pattern really changed the model
    assert main(["generate", "--hf-model", str(folder), "--max-new-tokens", "3", "--temperature", "0"]) == 0
    assert "new tokens" in capsys.readouterr().err
