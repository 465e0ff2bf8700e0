"""Graded checks, one module per chapter.

A :class:`Check` calls a student's function on seeded inputs and raises ``AssertionError``
with a readable *yours vs expected* message when the answer is wrong. The pytest files in
``tests/graded/`` turn each check into one test marked with its exercise and points; the
checks can also be called directly on any function (``check.run(fn)``).
"""
from __future__ import annotations

import importlib
import re
from dataclasses import dataclass, field
from typing import Callable

__all__ = ["Check", "Chapter", "CHAPTER_MODULES", "load_chapter", "all_chapters"]


@dataclass(frozen=True)
class Check:
    exercise: str  # "1.3"
    function: str  # name of the function under test in exercise.py
    name: str  # what this check verifies, in words
    points: int
    run: Callable[[Callable], None]

    @property
    def test_id(self) -> str:
        slug = re.sub(r"[^a-z0-9]+", "-", self.name.lower()).strip("-")
        return f"ex{self.exercise}-{slug}"


@dataclass(frozen=True)
class Chapter:
    number: int
    slug: str  # folder name under exercises/ and solutions/
    title: str
    checks: tuple[Check, ...] = field(default=())

    def exercises(self) -> dict[str, str]:
        """Exercise number -> function name, in order."""
        out: dict[str, str] = {}
        for c in self.checks:
            out.setdefault(c.exercise, c.function)
        return out


# chapter slug -> module holding its CHAPTER object
CHAPTER_MODULES = {
    "ch01_dense": "sparse_core.course.checks.ch01_dense",
    "ch03_strided_axial": "sparse_core.course.checks.ch03_strided_axial",
    "ch05_bigbird_longformer": "sparse_core.course.checks.ch05_bigbird_longformer",
    "ch02_local": "sparse_core.course.checks.ch02_local",
    "ch04_block_sparse": "sparse_core.course.checks.ch04_block_sparse",
    "ch06_content": "sparse_core.course.checks.ch06_content",
    "ch07_linformer": "sparse_core.course.checks.ch07_linformer",
    "ch08_performer": "sparse_core.course.checks.ch08_performer",
    "ch10_distill": "sparse_core.course.checks.ch10_distill",
    "ch09_case_study": "sparse_core.course.checks.ch09_case_study",
}


def load_chapter(slug: str) -> Chapter:
    if slug not in CHAPTER_MODULES:
        raise KeyError(f"unknown chapter {slug!r}; known: {', '.join(CHAPTER_MODULES)}")
    return importlib.import_module(CHAPTER_MODULES[slug]).CHAPTER


def all_chapters() -> list[Chapter]:
    return sorted((load_chapter(s) for s in CHAPTER_MODULES), key=lambda c: c.number)
