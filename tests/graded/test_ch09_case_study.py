"""Graded tests for Chapter 9: one test per check, marked with its exercise and points.

Run against your code:      pytest tests/graded/test_ch09_case_study.py            (or: python -m sparse_core grade --chapter 9)
Run against the solutions:  pytest tests/graded/test_ch09_case_study.py --impl solutions
"""
import pytest

from sparse_core.grading.checks import load_chapter

CHAPTER = load_chapter("ch09_case_study")


@pytest.mark.parametrize(
    "check",
    [pytest.param(c, marks=pytest.mark.exercise(c.exercise, points=c.points), id=c.test_id) for c in CHAPTER.checks],
)
def test_graded(check, course_impl):
    module = course_impl(CHAPTER.slug)
    fn = getattr(module, check.function, None)
    if fn is None:
        pytest.fail(f"exercise.py has no function named {check.function!r} (Exercise {check.exercise})")
    check.run(fn)
