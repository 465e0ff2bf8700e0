"""One meaning per symbol: book/notation.md lists each math symbol once, and the chapters follow it.

The notation table's first column names each entry by its library argument(s) and its math
symbol(s) (the ``$...$`` parts). A symbol listed in two rows means the book uses it for two
things; these tests fail then. They also check the one retired double use that is easy to
state precisely: ``\\ell`` is the stride of the strided/fixed patterns and appears nowhere else
(only in Chapter 3, and in Chapter 9's cells about the strided pattern).
"""
import json
import re
import sys
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
NOTATION = BOOK / "notation.md"

MATH = re.compile(r"\$([^$]+)\$")
ELL = re.compile(r"\\ell(?![A-Za-z])")


def _table_rows() -> list[tuple[int, str]]:
    """(line number, first cell) of every body row of the notation table."""
    rows = []
    lines = NOTATION.read_text(encoding="utf-8").splitlines()
    in_table = False
    for number, line in enumerate(lines, start=1):
        if not line.startswith("|"):
            in_table = False
            continue
        if not in_table:  # the header row
            in_table = True
            continue
        if re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", line):  # the separator row
            continue
        cells = _split_row(line)
        rows.append((number, cells[0]))
    return rows


def _split_row(line: str) -> list[str]:
    """The cells of a markdown table row; a ``|`` inside ``$...$`` or backticks is no separator."""
    cells, current, in_math, in_code = [], [], False, False
    body = line.strip()[1:-1] if line.strip().endswith("|") else line.strip()[1:]
    for ch in body:
        if ch == "$" and not in_code:
            in_math = not in_math
        elif ch == "`" and not in_math:
            in_code = not in_code
        if ch == "|" and not in_math and not in_code:
            cells.append("".join(current).strip())
            current = []
        else:
            current.append(ch)
    cells.append("".join(current).strip())
    return cells


def _normalise(symbol: str) -> str:
    return re.sub(r"\s+", "", symbol)


def test_table_is_found():
    rows = _table_rows()
    assert len(rows) > 30, "the notation table of book/notation.md was not parsed"
    assert all(cell for _, cell in rows), "a row of the notation table has an empty first cell"


def test_no_symbol_in_two_rows():
    where: dict[str, list[int]] = defaultdict(list)
    for number, cell in _table_rows():
        for symbol in {_normalise(s) for s in MATH.findall(cell)}:
            where[symbol].append(number)
    doubled = {s: lines for s, lines in where.items() if len(lines) > 1}
    listed = ", ".join(f"${s}$ {lines}" for s, lines in sorted(doubled.items()))
    assert not doubled, f"symbols in more than one row of book/notation.md (lines): {listed}"


def test_duplicate_check_catches_a_repeat(tmp_path, monkeypatch):
    """The check itself: a table with $b$ in two rows is reported."""
    fake = tmp_path / "notation.md"
    fake.write_text(
        "| symbol | meaning |\n|---|---|\n"
        "| `batch`, $b$ | batch size |\n| `block`, $b$ | block length |\n"
        + "".join(f"| $x_{{{i}}}$ | filler |\n" for i in range(40)),
        encoding="utf-8",
    )
    monkeypatch.setattr(sys.modules[__name__], "NOTATION", fake)
    with pytest.raises(AssertionError, match=r"\$b\$"):
        test_no_symbol_in_two_rows()


def _markdown_cells(path: Path) -> list[tuple[int, str]]:
    notebook = json.loads(path.read_text(encoding="utf-8"))
    return [
        (index, "".join(cell["source"]))
        for index, cell in enumerate(notebook["cells"])
        if cell["cell_type"] == "markdown"
    ]


CHAPTERS = sorted(BOOK.glob("ch*.ipynb"))


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_ell_is_only_the_stride(path):
    """``\\ell`` only where the strided/fixed patterns are the subject: all of Chapter 3, and the
    cells of other chapters that speak of the stride or the strided pattern."""
    offending = []
    for index, source in _markdown_cells(path):
        if not ELL.search(source):
            continue
        if path.stem.startswith("ch03_"):
            continue
        if re.search(r"\bstride[sd]?\b", source, flags=re.I):
            continue
        offending.append(index)
    assert not offending, f"{path.name}: markdown cells {offending} use \\ell, not as the stride"


@pytest.mark.parametrize("path", sorted(BOOK.glob("*.md")), ids=lambda p: p.name)
def test_ell_in_book_pages(path):
    text = path.read_text(encoding="utf-8")
    for line in text.splitlines():
        if ELL.search(line):
            assert "stride" in line, f"{path.name}: \\ell outside the stride: {line!r}"


def test_balanced_braces_in_markdown_math():
    """Every ``$...$`` and ``$$...$$`` of the chapters' markdown has balanced ``{}``."""
    bad = []
    for path in CHAPTERS:
        for index, source in _markdown_cells(path):
            for segment in re.findall(r"\$\$.*?\$\$|\$[^$]*\$", source, flags=re.S):
                stripped = segment.replace(r"\{", "").replace(r"\}", "")
                depth = 0
                for ch in stripped:
                    depth += {"{": 1, "}": -1}.get(ch, 0)
                    if depth < 0:
                        break
                if depth != 0:
                    bad.append(f"{path.name}[{index}]: {segment[:60]!r}")
    assert not bad, "unbalanced braces: " + "; ".join(bad)
