"""Draw the library's rooms and the imports between them; keep ARCHITECTURE.md's room table current.

The import graph is read from the source with ``ast`` (every import, also those inside functions;
imports under ``if TYPE_CHECKING:`` left out). A *room* is a top-level package of ``sparse_core``
(``attention``, ``kernels``, ``patterns``, ...); the top-level modules (``_validation`` and the
alias modules kept for the README's names) are drawn as the room ``(top)``.

    python scripts/architecture.py           # write docs/architecture.svg and the table in ARCHITECTURE.md
    python scripts/architecture.py --check   # exit 1 when either is out of date

``tests/test_structure.py`` uses :func:`import_graph` and :func:`cycles` from here.
"""
from __future__ import annotations

import argparse
import ast
import sys
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "sparse_core"
PICTURE = REPO / "docs" / "architecture.svg"
DOC = REPO / "ARCHITECTURE.md"
BEGIN, END = "<!-- rooms: begin (scripts/architecture.py) -->", "<!-- rooms: end -->"

#: what each room is for, in the order the picture stacks them (lowest first)
ROOMS = {
    "(top)": "`_validation` (input checks shared by every room) and the alias modules of the README's names",
    "patterns": "masks as rules (`mask_mod`), `Pattern`, `BlockLayout`, graph reach, pictures",
    "kernels": "Numba CPU and CUDA kernels, their kernel-ready tables, the strict CUDA simulator",
    "attention": "the float64 oracle, streaming attention, cost model, `block_sparse_attention` + autograd, "
                 "the attention layer and its cores",
    "approx": "content-based and approximate attention (top-k, routing, learned mask, NSA, Synthesizer, "
              "Linformer, Performer), and every method of the course by name (`methods`)",
    "models": "GPT-NeoX (Pythia), Hugging Face loading and compatibility adapters",
    "lm": "WikiText-2 data and tokenizer, the training engine, distillation, n-gram baselines",
    "lra": "long-range tasks (MQAR, ListOps) and a small Transformer for any method, on the training engine",
    "bench": "benchmarks behind `python -m sparse_core bench` and their timing helpers (the kernel benchmark also times whole models)",
    "course": "the chapter manifest, graded checks, the grader, the book's shared helpers",
    "cli": "`python -m sparse_core ...`: one parser, one module per command group",
}


def module_files(root: Path = PACKAGE) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` under ``root`` (a package folder)."""
    mods = {}
    for f in sorted(root.rglob("*.py")):
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


def import_graph(root: Path = PACKAGE) -> tuple[dict[str, set[str]], list[str]]:
    """(module -> the package's modules it imports, ["importer <- module._private_name", ...])."""
    mods = module_files(root)
    top = root.name
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
                if tgt != top and not tgt.startswith(top + "."):
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
    """Groups of modules that import each other (strongly connected components of more than one
    module, Tarjan's algorithm); a package importing its own submodules (or back) is no cycle."""
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
        for w in sorted(graph[v]):
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


def room_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "(top)"
    sub = parts[1]
    return sub if sub in ROOMS else "(top)"


def room_edges(graph: dict[str, set[str]]) -> Counter:
    """(from room, to room) -> number of module-to-module imports. Imports made by the top-level
    modules (the package root, ``__main__`` and the alias modules, which point up at the rooms they
    stand for) are left out: the picture shows what each room needs."""
    edges: Counter = Counter()
    for m, targets in graph.items():
        if room_of(m) == "(top)":
            continue
        for t in targets:
            a, b = room_of(m), room_of(t)
            if a != b and t != "sparse_core":
                edges[a, b] += 1
    return edges


def room_table(edges: Counter) -> str:
    lines = ["| room | what it owns | imports from |", "|---|---|---|"]
    for room, what in ROOMS.items():
        deps = sorted({b for (a, b) in edges if a == room}, key=list(ROOMS).index)
        name = "`sparse_core`" if room == "(top)" else f"`{room}/`"
        shown = ['sparse_core' if d == '(top)' else d for d in deps]
        lines.append(f"| {name} | {what} | {', '.join(f'`{d}`' for d in shown) or '-'} |")
    return "\n".join(lines)


def draw(edges: Counter, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["svg.hashsalt"] = "sparse-course"  # the same picture gives the same file
    from matplotlib.figure import Figure
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    # rooms on a grid: the pipeline from masks up to the command line, bottom to top
    place = {"(top)": (0.5, 0.02), "patterns": (0.2, 0.18), "kernels": (0.8, 0.18), "attention": (0.5, 0.36),
             "approx": (0.16, 0.54), "models": (0.5, 0.54), "bench": (0.84, 0.54), "lm": (0.5, 0.72),
             "lra": (0.84, 0.72),
             "course": (0.16, 0.90), "cli": (0.5, 0.90)}
    fig = Figure(figsize=(8.5, 7.5))
    ax = fig.add_axes([0, 0, 1, 1])
    ax.set_xlim(-0.05, 1.05)
    ax.set_ylim(-0.06, 1.0)
    ax.axis("off")
    w, h = 0.2, 0.07
    for room, (x, y) in place.items():
        ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.01",
                                    fc="#dbe9f6" if room != "(top)" else "#eeeeee", ec="#1f4e79"))
        label = "sparse_core\n(_validation, aliases)" if room == "(top)" else f"{room}/"
        ax.text(x, y, label, ha="center", va="center", fontsize=10 if room != "(top)" else 8)
    biggest = max(edges.values()) if edges else 1
    for (a, b), count in sorted(edges.items()):
        (xa, ya), (xb, yb) = place[a], place[b]
        ax.add_patch(FancyArrowPatch((xa, ya), (xb, yb), arrowstyle="-|>", mutation_scale=12,
                                     lw=0.6 + 2.4 * count / biggest, color="#555555", alpha=0.7,
                                     shrinkA=22, shrinkB=22, connectionstyle="arc3,rad=0.08"))
    ax.text(0.5, 0.975, "sparse_core: rooms and the imports between them (arrow: importer -> imported; "
            "width: number of imports)", ha="center", va="center", fontsize=8.5)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="svg", metadata={"Date": None})


def render() -> tuple[str, bytes]:
    """(ARCHITECTURE.md with a current table, the picture's bytes)."""
    graph, _ = import_graph()
    edges = room_edges(graph)
    doc = DOC.read_text()
    if BEGIN not in doc or END not in doc:
        raise SystemExit(f"{DOC.name} must contain the markers {BEGIN!r} and {END!r}")
    head, rest = doc.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    new_doc = f"{head}{BEGIN}\n{room_table(edges)}\n{END}{tail}"
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp) / "architecture.svg"
        draw(edges, tmp_path)
        picture = tmp_path.read_bytes()
    return new_doc, picture


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check; exit 1 when out of date")
    args = parser.parse_args(argv)
    doc, picture = render()
    stale = [p.relative_to(REPO).as_posix() for p, new in ((DOC, doc.encode()), (PICTURE, picture))
             if not p.exists() or p.read_bytes() != new]
    if args.check:
        if stale:
            print(f"out of date: {', '.join(stale)} (run: python scripts/architecture.py)")
            return 1
        print("ARCHITECTURE.md and docs/architecture.svg are current")
        return 0
    DOC.write_text(doc)
    PICTURE.parent.mkdir(parents=True, exist_ok=True)
    PICTURE.write_bytes(picture)
    print(f"wrote {', '.join(stale) or 'nothing (already current)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
