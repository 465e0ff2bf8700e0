"""The book's tables: ``display(Table(columns, rows, caption=...))`` in a chapter notebook."""
from __future__ import annotations

import html
from typing import Iterable

__all__ = ["Table"]


class Table:
    """A small table: HTML in the book, aligned text in a terminal.

    Every cell is shown as ``str(cell)``; format numbers before passing them. Each row has one
    cell per column. In the text form the columns are right-aligned, two spaces apart, under a
    line of dashes, with the caption (if any) on the first line.

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

    def _repr_html_(self) -> str:
        esc = html.escape
        head = "".join(f"<th>{esc(h)}</th>" for h in self.columns)
        body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in self.rows)
        cap = f"<caption>{esc(self.caption)}</caption>" if self.caption else ""
        return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    def __repr__(self) -> str:
        widths = [max(len(c) for c in col) for col in zip(self.columns, *self.rows)]
        line = lambda r: "  ".join(c.rjust(w) for c, w in zip(r, widths))  # noqa: E731
        out = [self.caption] if self.caption else []
        out += [line(self.columns), line(["-" * w for w in widths])]
        return "\n".join(out + [line(r) for r in self.rows])
