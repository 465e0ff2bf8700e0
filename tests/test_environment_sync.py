"""environment.yml (conda) and pyproject.toml (pip) describe the same environment."""
import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONDA_TO_PYPI = {"pytorch-cpu": "torch", "pytorch": "torch"}  # conda-forge names that differ


def _split(spec: str) -> tuple[str, str]:
    m = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$", spec)
    name = re.sub(r"[-_.]+", "-", m.group(1)).lower()
    return name, m.group(2).replace(" ", "")


def _pyproject() -> dict[str, str]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    extras = data["project"]["optional-dependencies"]
    specs = data["project"]["dependencies"] + extras["dev"] + extras["deepspeed"] + extras["equiv"]
    return dict(_split(s) for s in specs)


def _environment() -> dict[str, str]:
    """A small reader for the subset of YAML environment.yml uses (no extra dependency)."""
    out = {}
    in_deps = False
    for raw in (ROOT / "environment.yml").read_text().splitlines():
        line = raw.split("#", 1)[0].rstrip()
        if not line:
            continue
        if not line.startswith(" "):
            in_deps = line.startswith("dependencies:")
            continue
        item = line.strip()
        if not in_deps or not item.startswith("- ") or item.endswith(":"):
            continue
        name, spec = _split(item[2:])
        if name in ("python", "pip"):
            continue
        out[CONDA_TO_PYPI.get(name, name)] = spec
    return out


def test_same_packages_and_ranges():
    pip_side, conda_side = _pyproject(), _environment()
    assert sorted(pip_side) == sorted(conda_side), (
        f"only in pyproject: {sorted(set(pip_side) - set(conda_side))}; "
        f"only in environment.yml: {sorted(set(conda_side) - set(pip_side))}")
    for name, spec in pip_side.items():
        assert conda_side[name] == spec, f"{name}: pyproject {spec!r} vs environment.yml {conda_side[name]!r}"


def test_environment_python_matches_requires_python():
    text = (ROOT / "environment.yml").read_text()
    assert re.search(r"^\s*- python=3\.11\s*$", text, re.M)
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert data["project"]["requires-python"].startswith(">=3.11")


def test_constraints_pin_every_declared_package():
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    for name in _pyproject():
        assert name in pins, f"{name} is not pinned in constraints.txt"
    assert pins["torch"] == "2.13.0", "CI installs the CPU torch build 2.13.0"


@pytest.mark.parametrize("name", ["numpy", "torch", "numba"])
def test_installed_versions_are_the_pinned_ones(name):
    import sys
    from importlib.metadata import version

    if Path(sys.prefix).resolve() != (ROOT / ".venv").resolve():
        pytest.skip("only meaningful in the .venv made by scripts/setup.sh")

    pins = dict(l.split("==") for l in (ROOT / "constraints.txt").read_text().splitlines() if "==" in l)
    assert version(name).split("+")[0] == pins[name]
