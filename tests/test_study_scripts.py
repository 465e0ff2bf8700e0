"""The study scripts' --quick smoke tests never write into the committed results."""
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _script(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name,results", [("case_study", "case_study_next"), ("distill_study", "distill"), ("lra", "lra")])
def test_quick_writes_to_scratch_and_refuses_committed_results(name, results, capsys):
    script = _script(name)
    full = script.parse_args([])
    assert Path(full.out).resolve() == (ROOT / "results" / results).resolve()
    quick = script.parse_args(["--quick"])
    scratch = (ROOT / "results" / "tmp").resolve()
    for folder in (quick.out, quick.runs):
        assert scratch in Path(folder).resolve().parents, f"--quick writes to {folder}, outside {scratch}"
    assert Path(quick.out).resolve() != Path(full.out).resolve()
    with pytest.raises(SystemExit):
        script.parse_args(["--quick", "--out", str(ROOT / "results" / results)])
    assert "--out" in capsys.readouterr().err


def _finished(run, loss):
    run.dir.mkdir(parents=True)
    (run.dir / "metrics.json").write_text(json.dumps({"finished": True, "step": run.steps, "last_eval": {"loss": loss}}))


def test_case_study_sweep_choice_and_equal_wall_clock_steps(tmp_path):
    cs = _script("case_study")
    args = cs.parse_args(["--runs", str(tmp_path), "--out", str(tmp_path / "out")])
    sweep = cs.sweep_runs(args)
    assert [r.lr for r in sweep] == args.sweep_lrs and all(r.kind == "dense" for r in sweep)
    assert cs.chosen_lr(args) is None  # nothing finished yet
    for r, loss in zip(sweep, [5.2, 5.0, 5.9, 5.4]):
        _finished(r, loss)
    assert cs.chosen_lr(args) == sweep[1].lr
    main = cs.main_runs(args, 0.002)
    assert len(main) == len(args.kinds) * len(args.seeds) == 15
    assert len({r.dir.name for r in main}) == 15  # one folder per kind and seed
    cmd = main[0].train_command()
    for flag, value in (("--steps", "1000"), ("--lr", "0.002"), ("--warmup", "50"), ("--seq-len", "512"),
                        ("--batch-size", "16"), ("--num-global", "16")):
        assert cmd[cmd.index(flag) + 1] == value, flag
    # equal wall clock: steps = budget x the kind's own rate / tokens per step
    cal = {f"{args.long_preset}-{k}-4096": {"train_tokens_per_s": rate, "tokens_per_step": 8192}
           for k, rate in zip(args.kinds, [1000, 2500, 2000, 2200, 2400])}
    long = cs.long_runs(args, 0.002, cal)
    assert [r.steps for r in long] == [int(1200 * rate / 8192) for rate in [1000, 2500, 2000, 2200, 2400]]
    assert all(r.batch * r.n == 8192 for r in long)


def test_pythia70m_script_checks_its_arguments_and_needs_a_gpu_for_cuda(capsys, monkeypatch):
    import torch

    script = _script("pythia70m")
    with pytest.raises(SystemExit):
        script.parse_args(["--steps", "0"])
    assert "--steps must be a positive integer" in capsys.readouterr().err
    args = script.parse_args(["--kinds", "dense", "global_local"])
    cmd = script.train_command(args, "global_local", Path("run"), 10)
    assert cmd[cmd.index("--preset") + 1] == "pythia-70m" and cmd[cmd.index("--device") + 1] == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert script.main(["--device", "cuda"]) == 2
    assert "torch sees no CUDA device" in capsys.readouterr().err


def test_lra_plan_covers_every_method_and_only_pairs_that_fit():
    from sparse_core.approx.methods import METHODS

    lra = _script("lra")
    args = lra.parse_args(["--mqar-seq-lens", "64", "256", "--mqar-length-pairs", "8", "--mqar-pairs", "8", "32",
                           "128", "--mqar-pairs-len", "256", "--seeds", "0", "1"])
    runs = lra.plan(args)
    mqar = [r for r in runs if r["task"] == "mqar"]
    assert {r["method"] for r in mqar} == set(METHODS) - {"linformer"}  # not causal
    # the length sweep at 8 pairs, the pairs sweep at 256 tokens, once each, only where 4 P <= n
    assert sorted({(r["seq_len"], r["num_kv_pairs"]) for r in mqar}) == [(64, 8), (256, 8), (256, 32)]
    assert {r["method"] for r in runs if r["task"] == "listops"} == set(METHODS)
    assert len({lra.run_dir(args, r) for r in runs}) == len(runs)
    for r in runs:  # every method's options are accepted by its layer
        cfg = lra.config(args, r)
        cfg.model_config()  # raises if the method does not take an option
        assert cfg.batch_size * cfg.seq_len <= args.mqar_tokens_per_step or r["task"] == "listops"
