"""Generate the reader's stubs in exercises/ from the reference answers in solutions/.

Every function whose docstring starts with "Exercise N.M" keeps its signature and docstring;
its body becomes ``raise NotImplementedError("Exercise N.M: <name>")``. Everything else in
the file (module docstring, imports, constants) is copied unchanged, under a banner that says
where the stub comes from. The chapters, and their exercise folders, are those of the course
manifest (``sparse_core/course/manifest.py``).

    python scripts/make_stubs.py          # write exercises/
    python scripts/make_stubs.py --check  # exit 1 if exercises/ is out of date
"""
from __future__ import annotations

import argparse
import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's sparse_core, also when it is not installed

from sparse_core.course.manifest import graded_chapters  # noqa: E402

BANNER = (
    "# Generated from solutions/{path} by scripts/make_stubs.py.\n"
    "# This copy is yours: fill in the functions and edit it freely\n"
    "# (running scripts/make_stubs.py again overwrites it).\n"
)
EXERCISE_RE = re.compile(r"^Exercise (\d+\.\d+)\b")


def stub_source(source: str, path: str = "") -> str:
    """The stub of one solution file; ``path`` (``ch01_dense/exercise.py``) names it in the banner."""
    tree = ast.parse(source)
    lines = source.splitlines(keepends=True)
    cuts = []  # (first body line after docstring, last line of function, indent, message)
    for node in tree.body:
        if not isinstance(node, ast.FunctionDef):
            continue
        doc = ast.get_docstring(node)
        match = EXERCISE_RE.match(doc or "")
        if not match:
            continue
        doc_node = node.body[0]
        indent = " " * doc_node.col_offset
        message = f"Exercise {match.group(1)}: {node.name}"
        cuts.append((doc_node.end_lineno, node.end_lineno, indent, message))
    for doc_end, fn_end, indent, message in reversed(cuts):
        lines[doc_end:fn_end] = [f'{indent}raise NotImplementedError("{message}")\n']
    return BANNER.format(path=path) + "".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check; exit 1 when stale")
    args = parser.parse_args(argv)
    stale = []
    solutions = [s for c in graded_chapters() for s in sorted((ROOT / "solutions" / c.exercises).glob("*.py"))]
    for solution in solutions:
        relative = solution.relative_to(ROOT / "solutions")
        target = ROOT / "exercises" / relative
        text = stub_source(solution.read_text(), relative.as_posix()) if solution.name != "__init__.py" \
            else solution.read_text()
        if not target.exists() or target.read_text() != text:
            stale.append(target.relative_to(ROOT))
            if not args.check:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(text)
    if args.check and stale:
        print("out of date (run python scripts/make_stubs.py):", *stale, sep="\n  ")
        return 1
    for path in stale:
        print("wrote", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
