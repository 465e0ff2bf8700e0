"""The library's shape: no import cycle, no private name imported across modules, the README's
module names still importable, and ``import sparse_core`` light.

The import graph is read from the source (``ast``), so the test sees every import, also the ones
inside functions; imports under ``if TYPE_CHECKING:`` are left out (they never run), and a package
importing its own submodules is not a cycle.
"""
from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "sparse_core"


def module_files(root: Path = ROOT) -> dict[str, Path]:
    mods = {}
    for f in root.rglob("*.py"):
        parts = list(f.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = f
    return mods


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    out: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            out |= {id(x) for x in ast.walk(node)}
    return out


def _target(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph(root: Path = ROOT) -> tuple[dict[str, set[str]], list[str]]:
    """(module -> modules of sparse_core it imports, ["importer <- module.private_name", ...])."""
    mods = module_files(root)
    graph: dict[str, set[str]] = {m: set() for m in mods}
    private: list[str] = []
    for m, f in mods.items():
        tree = ast.parse(f.read_text(), str(f))
        skip = _type_checking_nodes(tree)
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            if isinstance(node, ast.ImportFrom):
                tgt = _target(m, f.name == "__init__.py", node)
                if not tgt.startswith("sparse_core"):
                    continue
                for alias in node.names:
                    sub = f"{tgt}.{alias.name}"
                    t = sub if sub in mods else tgt
                    if t in mods and t != m:
                        graph[m].add(t)
                    if (alias.name.startswith("_") and not alias.name.startswith("__") and t != m
                            and sub not in mods):
                        private.append(f"{m} <- {t}.{alias.name}")
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name in mods and alias.name != m:
                        graph[m].add(alias.name)
    return graph, private


def _related(a: str, b: str) -> bool:
    return a.startswith(b + ".") or b.startswith(a + ".")


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), package edges left out."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if _related(v, w):
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


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
