"""Graded tests for Chapter 3: one test per check, marked with its exercise and points.

Run against your code:      pytest tests/graded/test_ch03_strided_axial.py            (or: python -m sparse_core grade --chapter 3)
Run against the solutions:  pytest tests/graded/test_ch03_strided_axial.py --impl solutions
"""
import pytest

from sparse_core.course.checks import load_chapter
from sparse_core.course.plugin import graded_params, run_graded

CHAPTER = load_chapter("ch03_strided_axial")


@pytest.mark.parametrize("check", graded_params(CHAPTER))
def test_graded(check, course_impl):
    run_graded(CHAPTER, check, course_impl)
