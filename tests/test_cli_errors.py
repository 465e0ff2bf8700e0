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
