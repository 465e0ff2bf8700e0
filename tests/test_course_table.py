"""The book's Table: padded HTML with right-aligned number columns, and aligned text."""
import pytest

from sparse_core.course.table import Table, looks_numeric

L = ' style="padding:0.25em 0.75em;text-align:left"'
R = ' style="padding:0.25em 0.75em;text-align:right"'
OPEN = '<table class="sc-table" style="border-collapse:collapse">'


def test_text_is_right_aligned_under_dashes_with_the_caption_first():
    t = Table(["n", "pairs"], [[4, 16], [1024, 1048576]], caption="dense")
    assert repr(t) == "dense\n   n    pairs\n----  -------\n   4       16\n1024  1048576"
    assert repr(Table(["a", "bb"], [["xyz", 1]])) == "  a  bb\n---  --\nxyz   1"


def test_html_escapes_every_cell_and_the_caption_and_pads_every_cell():
    t = Table(["x < y", "p & q"], ((i, f"<{i}>") for i in range(2)), caption="a \"b\"")
    assert t._repr_html_() == (
        f"{OPEN}<caption>a &quot;b&quot;</caption><thead><tr><th{R}>x &lt; y</th><th{L}>p &amp; q</th></tr></thead>"
        f"<tbody><tr><td{R}>0</td><td{L}>&lt;0&gt;</td></tr><tr><td{R}>1</td><td{L}>&lt;1&gt;</td></tr></tbody></table>")


def test_number_columns_are_right_aligned_text_columns_left():
    t = Table(["pattern", "n", "speed-up", "time"],
              [["local", "1,024", "3.1x", "12.5 ms"], ["dense", "128", "—", "1.2e-03 s"],
               ["s=0.5, m=4", "94", "0.8×", "-0.25"]])
    assert t.numeric_columns() == [False, True, True, True]
    html = t._repr_html_()
    assert f"<th{L}>pattern</th><th{R}>n</th>" in html
    assert f"<td{L}>s=0.5, m=4</td><td{R}>94</td>" in html
    # a column with one word in it is text; a column of placeholders only is text too
    assert Table(["a", "b"], [["1", "-"], ["two", "—"]]).numeric_columns() == [False, False]


@pytest.mark.parametrize("cell", ["0", "1,048,576", "-0.25", "−3", "3.1x", "2.0×", "12 ms", "1.2e-03",
                                  "45%", "~2", "nan", ".5"])
def test_looks_numeric_accepts_numbers_as_chapters_print_them(cell):
    assert looks_numeric(cell)


@pytest.mark.parametrize("cell", ["local", "s=0.5, m=4", "128 | 94", "n=4", "1 2", "x", "", "(64, 64)"])
def test_looks_numeric_rejects_text(cell):
    assert not looks_numeric(cell)


def test_no_caption_and_no_rows():
    for caption in ("", None):
        t = Table(["a", "b"], [], caption=caption)
        assert t._repr_html_() == f"{OPEN}<thead><tr><th{L}>a</th><th{L}>b</th></tr></thead><tbody></tbody></table>"
        assert repr(t) == "a  b\n-  -"


def test_a_row_with_the_wrong_number_of_cells_is_a_clear_error():
    with pytest.raises(ValueError, match=r"^rows: expected 2 cells per row \(one per column\), row 1 has 3$"):
        Table(["a", "b"], [[1, 2], [1, 2, 3]])
