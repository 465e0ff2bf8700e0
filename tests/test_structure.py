"""The package's import graph: no cycle between modules of sparse_core, no private name imported
from another module (imports under ``if TYPE_CHECKING:`` aside; a package importing its own
submodules is no cycle)."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "sparse_core"
#: rooms whose private names are checked (the layout/kernel contract); widen to "" for the whole package
PRIVATE_CHECKED = ("sparse_core.patterns", "sparse_core.kernels", "sparse_core.attention")


def _modules() -> dict:
    mods = {}
    for f in ROOT.rglob("*.py"):
        parts = list(f.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = f
    return mods


def _target(module: str, is_pkg: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_pkg else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph() -> tuple[dict, list]:
    """``(edges, private)``: module -> modules it imports (inside sparse_core), and the
    ``"importer <- module.name"`` private imports."""
    mods = _modules()
    graph, private = {m: set() for m in mods}, []
    for m, f in mods.items():
        tree = ast.parse(f.read_text())
        skip = set()
        for n in ast.walk(tree):
            if isinstance(n, ast.If) and "TYPE_CHECKING" in ast.unparse(n.test):
                skip |= {id(x) for x in ast.walk(n)}
        for n in ast.walk(tree):
            if id(n) in skip:
                continue
            if isinstance(n, ast.ImportFrom):
                tgt = _target(m, f.name == "__init__.py", n)
                if not tgt.startswith("sparse_core"):
                    continue
                for a in n.names:
                    sub = f"{tgt}.{a.name}"
                    t = sub if sub in mods else tgt
                    if t in mods and t != m:
                        graph[m].add(t)
                    if a.name.startswith("_") and not a.name.startswith("__") and t != m and sub not in mods:
                        private.append(f"{m} <- {t}.{a.name}")
            elif isinstance(n, ast.Import):
                graph[m] |= {a.name for a in n.names if a.name in mods and a.name != m}
    return graph, private


def cycles(graph: dict) -> list:
    """Strongly connected components of more than one module (edges between a package and its
    own submodules ignored)."""
    def related(a, b):
        return b.startswith(a + ".") or a.startswith(b + ".")

    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if related(v, w):
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_the_checker_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"p": {"p.x"}, "p.x": {"p"}}) == []  # a package and its submodule


def test_no_import_cycle_in_sparse_core():
    graph, _ = import_graph()
    assert len(graph) > 50
    assert cycles(graph) == []


@pytest.mark.parametrize("room", PRIVATE_CHECKED)
def test_no_private_name_imported_from_another_module(room):
    _, private = import_graph()
    assert [p for p in private if p.startswith(room)] == []
