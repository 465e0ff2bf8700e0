"""The book renders the outputs stored in each chapter notebook (``execute_notebooks: "off"`` in
``_config.yml``), and nbval re-executes every notebook in the test command. So every committed
notebook must carry the outputs of a complete top-to-bottom run: every code cell executed, in order,
and no error output."""
import json
from pathlib import Path

import pytest

BOOK = Path(__file__).resolve().parents[1] / "book"
NOTEBOOKS = sorted(BOOK.glob("*.ipynb"))


def test_there_are_chapters():
    assert len(NOTEBOOKS) >= 10


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_stores_a_complete_run(path):
    cells = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code" and "".join(c["source"]).strip()]
    counts = [c.get("execution_count") for c in cells]
    assert None not in counts, f"{path.name}: cells {[i for i, n in enumerate(counts) if n is None]} were not executed; " \
        f"run: .venv/bin/jupyter execute --inplace book/{path.name}"
    assert counts == sorted(counts) and len(set(counts)) == len(counts), f"{path.name}: cells not run top to bottom once"
    errors = [i for i, c in enumerate(cells) for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, f"{path.name}: error outputs in code cells {errors}"
