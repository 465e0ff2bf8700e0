"""The library's shape: no import cycle, no private name imported across modules, the README's
module names still importable, and ``import sparse_core`` light.

The import graph is read from the source (``scripts/architecture.py``, which also draws it), so the
test sees every import, also the ones inside functions; imports under ``if TYPE_CHECKING:`` are
left out (they never run), and a package importing its own submodules is not a cycle.
"""
from __future__ import annotations

import importlib
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ROOT = REPO / "sparse_core"
_spec = importlib.util.spec_from_file_location("architecture", REPO / "scripts" / "architecture.py")
architecture = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(architecture)
import_graph, cycles = architecture.import_graph, architecture.cycles


def test_the_checker_finds_a_cycle_and_a_private_import(tmp_path):
    pkg = tmp_path / "sparse_core"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from . import a\n")  # a package importing its submodule: no cycle
    (pkg / "a.py").write_text("from .sub.b import _helper, public\nfrom . import _private_module\n")
    (pkg / "_private_module.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "b.py").write_text("def f():\n    from ..c import g\n")
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import x\n"
                              "from . import a\n")
    graph, private = import_graph(pkg)
    assert private == ["sparse_core.a <- sparse_core.sub.b._helper"]
    assert cycles(graph) == [["sparse_core.a", "sparse_core.c", "sparse_core.sub.b"]]
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import x\n")
    assert cycles(import_graph(pkg)[0]) == []


def test_no_import_cycle_in_sparse_core():
    found = cycles(import_graph()[0])
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


def test_no_private_name_imported_from_another_module():
    private = import_graph()[1]
    assert not private, f"{len(private)} private cross-module imports:\n" + "\n".join(private)


@pytest.mark.parametrize("old, new", [
    ("sparse_core.reference", "sparse_core.attention.reference"),
    ("sparse_core.streaming", "sparse_core.attention.streaming"),
    ("sparse_core.cost", "sparse_core.attention.cost"),
    ("sparse_core.ops", "sparse_core.attention.ops"),
    ("sparse_core.modules", "sparse_core.attention.layer"),
    ("sparse_core.hf_compat", "sparse_core.models.hf_compat"),
    ("sparse_core.distill", "sparse_core.lm.distill"),
    ("sparse_core.data", "sparse_core.lm.data"),
    ("sparse_core.data.tokenizer", "sparse_core.lm.data.tokenizer"),
    ("sparse_core.data.batching", "sparse_core.lm.data.batching"),
    ("sparse_core.data.wikitext", "sparse_core.lm.data.wikitext"),
])
def test_the_readme_module_names_are_the_moved_modules(old, new):
    assert importlib.import_module(old) is importlib.import_module(new)


def test_readme_entry_points_resolve():
    from sparse_core.attention.layer import SparseSelfAttention
    from sparse_core.models import GPTNeoX, forward_flops, preset
    from sparse_core.models.hf_loading import from_pretrained
    from sparse_core.modules import SparseSelfAttention as old_layer
    from sparse_core.ops import block_sparse_attention
    from sparse_core.patterns.graph import degrees, diameter, distances, is_connected
    from sparse_core.patterns.plots import hops, plot_layout, plot_mask, plot_reach
    from sparse_core.reference import attention

    assert old_layer is SparseSelfAttention
    assert all(callable(f) for f in (GPTNeoX, forward_flops, preset, from_pretrained, block_sparse_attention,
                                     degrees, diameter, distances, is_connected, hops, plot_layout, plot_mask,
                                     plot_reach, attention))


def test_top_level_exports_block_sparse_attention_and_the_patterns():
    import sparse_core
    import sparse_core.patterns as P
    from sparse_core.attention.ops import block_sparse_attention

    assert sparse_core.block_sparse_attention is block_sparse_attention
    assert sparse_core.__all__ == ["block_sparse_attention", *P.__all__]
    for name in P.__all__:
        assert getattr(sparse_core, name) is getattr(P, name)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        sparse_core.nope  # noqa: B018


def test_importing_the_package_and_building_the_cli_is_light():
    code = ("import sys, sparse_core; from sparse_core.cli.main import build_parser; build_parser(); "
            "print(sorted(m for m in ('torch', 'numba', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=ROOT.parent)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", f"heavy modules imported by `import sparse_core`: {out.stdout.strip()}"


def test_architecture_md_room_table_is_current():
    doc, _ = architecture.render()
    assert architecture.DOC.read_text() == doc, "ARCHITECTURE.md is out of date: run python scripts/architecture.py"
