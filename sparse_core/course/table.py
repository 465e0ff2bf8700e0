"""The book's tables: ``display(Table(columns, rows, caption=...))`` in a chapter notebook."""
from __future__ import annotations

import html
import re
from typing import Iterable

__all__ = ["Table", "looks_numeric"]

# A number as the chapters print one: optional sign or comparison, digits (thousands separators
# allowed), decimals, exponent, then an optional unit or a speed-up's "x".
_NUMBER = re.compile(
    r"^[~≈<>+\-−]?\s*(\d[\d,_]*(\.\d*)?|\.\d+)([eE][+\-−]?\d+)?\s*"
    r"(%|x|×|s|ms|µs|us|ns|B|kB|KiB|MB|MiB|GB|GiB)?$|^([+\-]?inf|nan)$")
_PLACEHOLDERS = {"", "-", "—", "–", "n/a"}
# Inline, so that the padding holds in JupyterLab too; the book adds the same rule in
# _static/course.css for every table on the site.
_PAD = "padding:0.25em 0.75em"


def looks_numeric(cell: str) -> bool:
    """True when ``cell`` is a number as a table prints one ("1,024", "3.1x", "-0.25", "12 ms")."""
    return bool(_NUMBER.match(cell.strip()))


class Table:
    """A small table: HTML in the book, aligned text in a terminal.

    Every cell is shown as ``str(cell)``; format numbers before passing them. Each row has one
    cell per column. In HTML every cell is padded, and a column whose cells are all numbers
    (:func:`looks_numeric`; empty cells and dashes do not count) is right-aligned, header
    included. In the text form the columns are right-aligned, two spaces apart, under a line of
    dashes, with the caption (if any) on the first line.

    Example:
        >>> Table(["n", "pairs"], [[4, 16], [1024, 1048576]], caption="dense")
        dense
           n    pairs
        ----  -------
           4       16
        1024  1048576
    """

    def __init__(self, columns: Iterable, rows: Iterable[Iterable], caption: str = ""):
        self.columns = [str(h) for h in columns]
        self.rows = [[str(c) for c in r] for r in rows]
        self.caption = "" if caption is None else str(caption)
        for i, row in enumerate(self.rows):
            if len(row) != len(self.columns):
                raise ValueError(f"rows: expected {len(self.columns)} cells per row (one per column), "
                                 f"row {i} has {len(row)}")

    def numeric_columns(self) -> list[bool]:
        """For each column: are all its (non-empty) cells numbers? A column without any is not."""
        out = []
        for j in range(len(self.columns)):
            cells = [r[j].strip() for r in self.rows if r[j].strip() not in _PLACEHOLDERS]
            out.append(bool(cells) and all(looks_numeric(c) for c in cells))
        return out

    def _repr_html_(self) -> str:
        esc = html.escape
        styles = [f' style="{_PAD};text-align:{"right" if num else "left"}"' for num in self.numeric_columns()]
        head = "".join(f"<th{s}>{esc(h)}</th>" for h, s in zip(self.columns, styles))
        body = "".join("<tr>" + "".join(f"<td{s}>{esc(c)}</td>" for c, s in zip(r, styles)) + "</tr>"
                       for r in self.rows)
        cap = f"<caption>{esc(self.caption)}</caption>" if self.caption else ""
        return (f'<table class="sc-table" style="border-collapse:collapse">{cap}'
                f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")

    def __repr__(self) -> str:
        widths = [max(len(c) for c in col) for col in zip(self.columns, *self.rows)]
        line = lambda r: "  ".join(c.rjust(w) for c, w in zip(r, widths))  # noqa: E731
        out = [self.caption] if self.caption else []
        out += [line(self.columns), line(["-" * w for w in widths])]
        return "\n".join(out + [line(r) for r in self.rows])
