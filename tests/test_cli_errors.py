"""Command-line mistakes end with one line naming the argument or file and exit status 2, never a
traceback or a silent fresh start."""
import pytest

from sparse_core.cli import main


def test_resume_without_a_run_is_an_error_not_a_fresh_start(tmp_path, capsys):
    out = tmp_path / "empty"
    assert main(["train", "--out", str(out), "--resume", "--steps", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nothing to resume in" in err[0] and "checkpoint.pt" in err[0]
    assert not (out / "metrics.json").exists()  # nothing was trained


@pytest.mark.parametrize("cmd", [["train", "--out", "RUN"], ["eval", "--checkpoint", "RUN"]])
def test_a_data_dir_that_does_not_exist_is_refused(cmd, tmp_path, capsys):
    argv = [str(tmp_path / "run") if a == "RUN" else a for a in cmd]
    with pytest.raises(SystemExit) as e:
        main(argv + ["--data-dir", str(tmp_path / "typo")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--data-dir" in err and "is not an existing folder" in err


@pytest.mark.parametrize("args,match", [
    (["--exercise", "99.9"], "--exercise 99.9: no such exercise; the exercises are 1.1, 1.2"),
    (["--chapter", "99"], "--chapter 99: no such graded chapter; the graded chapters are 1, 2"),
])
def test_grading_an_exercise_or_chapter_that_does_not_exist(args, match, capsys):
    assert main(["grade", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and match in err[0]


def test_a_truncated_checkpoint_is_named_in_one_line(tmp_path, capsys):
    import torch

    run = tmp_path / "run"
    run.mkdir()
    torch.save({"model": {}, "x": torch.zeros(1000)}, run / "checkpoint.pt")
    data = (run / "checkpoint.pt").read_bytes()
    (run / "checkpoint.pt").write_bytes(data[: len(data) // 2])
    assert main(["eval", "--checkpoint", str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(run / "checkpoint.pt") in err[0] and "truncated or corrupt" in err[0]


def test_ctrl_c_during_start_up_exits_130_without_a_traceback(monkeypatch, capsys):
    import importlib

    M = importlib.import_module("sparse_core.cli.main")

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(M, "build_parser", interrupted)
    assert M.main(["info"]) == 130
    assert capsys.readouterr().err.strip() == "interrupted"


def test_atomic_writes_leave_no_temporary_file_and_clear_those_of_dead_writers(tmp_path):
    import os

    from sparse_core.lm.engine import atomic_json

    target = tmp_path / "metrics.json"
    dead = tmp_path / ".metrics.json.999999999.tmp"  # a writer killed mid-save (no such process)
    dead.write_text("half")
    alive = tmp_path / f".metrics.json.{os.getppid()}.tmp"  # one of a live process: left alone
    alive.write_text("busy")
    atomic_json({"a": 1}, target)
    assert target.read_text().strip().startswith("{") and not dead.exists() and alive.exists()

    class Boom(Exception):
        pass

    def failing(tmp):
        tmp.write_text("partial")
        raise Boom

    from sparse_core.lm import engine

    with pytest.raises(Boom):
        engine._atomic_write(target, failing)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([target.name, alive.name])
    assert target.read_text().strip().startswith("{")  # the old file is intact
