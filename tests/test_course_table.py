"""The book's Table: the same HTML and text the chapters' pasted copies rendered."""
import pytest

from sparse_core.course.table import Table


def test_text_is_right_aligned_under_dashes_with_the_caption_first():
    t = Table(["n", "pairs"], [[4, 16], [1024, 1048576]], caption="dense")
    assert repr(t) == "dense\n   n    pairs\n----  -------\n   4       16\n1024  1048576"
    assert repr(Table(["a", "bb"], [["xyz", 1]])) == "  a  bb\n---  --\nxyz   1"


def test_html_escapes_every_cell_and_the_caption():
    t = Table(["x < y", "p & q"], ((i, f"<{i}>") for i in range(2)), caption="a \"b\"")
    assert t._repr_html_() == (
        "<table><caption>a &quot;b&quot;</caption><thead><tr><th>x &lt; y</th><th>p &amp; q</th></tr></thead>"
        "<tbody><tr><td>0</td><td>&lt;0&gt;</td></tr><tr><td>1</td><td>&lt;1&gt;</td></tr></tbody></table>")


def test_no_caption_and_no_rows():
    for caption in ("", None):
        t = Table(["a", "b"], [], caption=caption)
        assert t._repr_html_() == "<table><thead><tr><th>a</th><th>b</th></tr></thead><tbody></tbody></table>"
        assert repr(t) == "a  b\n-  -"


def test_a_row_with_the_wrong_number_of_cells_is_a_clear_error():
    with pytest.raises(ValueError, match=r"^rows: expected 2 cells per row \(one per column\), row 1 has 3$"):
        Table(["a", "b"], [[1, 2], [1, 2, 3]])
