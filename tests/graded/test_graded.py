"""Graded tests: one test per check of every graded chapter in the manifest
(``sparse_core/course/manifest.py``), marked with its exercise and points. Each chapter is one
parametrised test function, ``test_<slug>``, whose ids are the checks' ``ex<N.M>-<what it checks>``.

Run against your code:      pytest tests/graded                  (or: python -m sparse_core grade)
One chapter:                pytest tests/graded -k ch01_dense    (or: python -m sparse_core grade --chapter 1)
Run against the solutions:  pytest tests/graded --impl solutions
"""
import pytest

from sparse_core.course.checks import all_chapters
from sparse_core.course.plugin import graded_params, run_graded


def _chapter_test(chapter):
    @pytest.mark.parametrize("check", graded_params(chapter))
    def test(check, course_impl):
        run_graded(chapter, check, course_impl)

    test.__name__ = test.__qualname__ = f"test_{chapter.slug}"
    test.__doc__ = f"Chapter {chapter.number}: {chapter.title}"
    return test


for _chapter in all_chapters():
    globals()[f"test_{_chapter.slug}"] = _chapter_test(_chapter)
del _chapter
