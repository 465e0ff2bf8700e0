"""Re-execute chapter notebooks in place, top to bottom on a fresh kernel, and store their outputs
and widget state (what the book renders).

    .venv/bin/python scripts/execute_notebooks.py book/ch02_local.ipynb [more notebooks ...]
    .venv/bin/python scripts/execute_notebooks.py --all

Each cell gets at most ``--timeout`` seconds (default 600); a cell that raises stops that notebook,
which is then left unchanged on disk. The notebook runs in ``book/`` (its own folder), as under the
test command. Prints one line per cell (index, seconds, first line of its source) so a slow cell
is visible at once.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def execute(path: Path, timeout: int) -> float:
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    t0 = time.perf_counter()
    with client.setup_kernel():
        for index, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            t = time.perf_counter()
            client.execute_cell(cell, index)
            first = (cell.source.strip().splitlines() or [""])[0][:70]
            print(f"  cell {index:3d} {time.perf_counter() - t:6.1f} s  {first}", flush=True)
        client.set_widgets_metadata()      # the saved widget state the book's pages draw from
    nbformat.write(nb, path)
    return time.perf_counter() - t0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("notebooks", nargs="*", type=Path, help="notebooks to execute")
    p.add_argument("--all", action="store_true", help="every chapter in book/")
    p.add_argument("--timeout", type=int, default=600, help="seconds per cell (default: 600)")
    args = p.parse_args(argv)
    paths = sorted((ROOT / "book").glob("*.ipynb")) if args.all else args.notebooks
    if not paths:
        p.error("give notebooks to execute, or --all")
    for path in paths:
        if not path.is_file() or path.suffix != ".ipynb":
            p.error(f"notebooks: {path} is not a notebook file")
    for path in paths:
        print(f"{path}:", flush=True)
        print(f"{path}: executed in {execute(path.resolve(), args.timeout):.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
