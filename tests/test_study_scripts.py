"""The study scripts' --quick smoke tests never write into the committed results."""
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _script(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name,results", [("case_study", "case_study"), ("distill_study", "distill")])
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
