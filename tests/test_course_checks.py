"""The building blocks of the chapters' checks: CheckList and the dict-of-counts comparison."""
import pytest

from sparse_core.course.checks import CheckList
from sparse_core.course.compare import assert_counts_equal


def test_checklist_keeps_declaration_order_and_runs_every_case():
    checks = CheckList()
    seen = []

    @checks.add("9.1", "f", "first", 2)
    def _first(fn):
        seen.append(("first", fn(0)))

    checks.cases("9.1", "f", lambda fn, a, b: seen.append(("case", fn(a) + b)),
                 [("second", 1, [(1, 10), (2, 20)]), ("third", 3, [(5, 0)])])
    assert [(c.exercise, c.function, c.name, c.points) for c in checks] == [
        ("9.1", "f", "first", 2), ("9.1", "f", "second", 1), ("9.1", "f", "third", 3)]
    assert _first.__name__ == "_first"  # the decorator hands the function back
    for check in checks:
        check.run(lambda x: 100 * x)
    assert seen == [("first", 0), ("case", 110), ("case", 220), ("case", 500)]
    assert [c.test_id for c in checks] == ["ex9.1-first", "ex9.1-second", "ex9.1-third"]


def test_counts_compare_key_by_key():
    assert_counts_equal({"a": 1, "b": 2, "extra": 0}, {"a": 1, "b": 2}, what="f", context="f(1)")
    with pytest.raises(AssertionError, match=r"^f: expected a dict, got list for f\(1\)$"):
        assert_counts_equal([1], {"a": 1}, what="f", context="f(1)")
    with pytest.raises(AssertionError, match=r"^f: missing key 'b' for f\(1\)$"):
        assert_counts_equal({"a": 1}, {"a": 1, "b": 2}, what="f", context="f(1)")
    with pytest.raises(AssertionError) as info:
        assert_counts_equal({"a": 1, "b": 3}, {"a": 1, "b": 2}, what="f", context="f(1)")
    assert str(info.value) == "f['b'] for f(1)\n    yours:    3\n    expected: 2"
