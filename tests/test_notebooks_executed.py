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
        f"run: .venv/bin/python scripts/execute_notebooks.py book/{path.name}"
    assert counts == sorted(counts) and len(set(counts)) == len(counts), f"{path.name}: cells not run top to bottom once"
    errors = [i for i, c in enumerate(cells) for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, f"{path.name}: error outputs in code cells {errors}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_widget_view_has_its_saved_state(path):
    """The book draws a widget from the state saved in the notebook's metadata; a view whose model is
    not in that state (state left from an earlier run, or not saved) shows nothing on the page."""
    nb = json.loads(path.read_text())
    views = [o["data"]["application/vnd.jupyter.widget-view+json"]["model_id"]
             for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])
             if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    if not views:
        return
    state = nb["metadata"].get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {}).get("state", {})
    missing = [v for v in views if v not in state]
    assert not missing, (f"{path.name}: {len(missing)} of {len(views)} widget views have no saved state (the page "
                         f"shows nothing); re-execute with: .venv/bin/python scripts/execute_notebooks.py book/{path.name}")
