"""Graded checks, one module per chapter.

A :class:`Check` calls a student's function on seeded inputs and raises ``AssertionError``
with a readable *yours vs expected* message when the answer is wrong. Each chapter's module
declares its checks on a :class:`CheckList` named ``CHECKS`` (``@CHECKS.add(...)`` on each
check function) and what each exercise returns (``CHECKS.returns(...)``, in the words of its
docstring); every call of the reader's function in every check must leave its arguments as they
were and return what was declared (:mod:`sparse_core.course.contract`). :func:`load_chapter` joins them with the chapter's number and title from
:mod:`sparse_core.course.manifest`. ``tests/graded/`` turns each check into one test marked
with its exercise and points; the checks can also be called directly on any function
(``check.run(fn)``).
"""
from __future__ import annotations

import dataclasses
import importlib
import re
from dataclasses import dataclass, field
from typing import Callable, Iterator

from ..contract import guarded, parse_spec
from ..manifest import find_chapter, graded_chapters

__all__ = ["Check", "CheckList", "Chapter", "CHAPTER_MODULES", "load_chapter", "all_chapters"]


@dataclass(frozen=True)
class Check:
    exercise: str  # "1.3"
    function: str  # name of the function under test in exercise.py
    name: str  # what this check verifies, in words
    points: int
    body: Callable[[Callable], None]
    returns: str | None = None  # what the docstring says the function returns (sparse_core.course.contract)

    def run(self, fn: Callable) -> None:
        """Run the check on ``fn``; every call also fails if ``fn`` changes an argument in place or
        returns something other than :attr:`returns` (:func:`~sparse_core.course.contract.guarded`)."""
        self.body(guarded(fn, self.function, self.returns))

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


class CheckList:
    """The checks of one chapter, in the order they are declared."""

    def __init__(self) -> None:
        self._checks: list[Check] = []
        self._returns: dict[str, str] = {}

    def returns(self, exercise: str, spec: str) -> None:
        """Declare what Exercise ``exercise`` returns, in the words of its docstring (a spec of
        :mod:`sparse_core.course.contract`): every call in every check of it is held to that."""
        parse_spec(spec)  # fail at import on a spec that cannot be read
        self._returns[exercise] = spec

    def add(self, exercise: str, function: str, name: str, points: int) -> Callable:
        """Decorator: register the decorated ``run(fn)`` as a check of ``function`` (Exercise ``exercise``)."""
        def register(run: Callable[[Callable], None]) -> Callable[[Callable], None]:
            self._checks.append(Check(exercise, function, name, points, run))
            return run
        return register

    def cases(self, exercise: str, function: str, case: Callable, checks: list[tuple[str, int, list[tuple]]]) -> None:
        """Register checks of ``function`` that are lists of cases: for each ``(name, points, cases)``,
        a check that runs ``case(fn, *c)`` for every ``c`` in ``cases``, in order."""
        for name, points, params in checks:
            def run(fn: Callable, params: list[tuple] = params) -> None:
                for c in params:
                    case(fn, *c)
            run.__name__ = run.__qualname__ = f"{case.__name__}_cases"
            self._checks.append(Check(exercise, function, name, points, run))

    def __iter__(self) -> Iterator[Check]:
        return iter(dataclasses.replace(c, returns=self._returns.get(c.exercise)) for c in self._checks)

    def __len__(self) -> int:
        return len(self._checks)


# chapter slug -> module holding its CHECKS, from the manifest (graded chapters, book order)
CHAPTER_MODULES = {c.slug: c.checks for c in graded_chapters()}


def load_chapter(slug: str) -> Chapter:
    """The graded chapter ``slug`` (``"ch01_dense"``): manifest number and title, module checks."""
    if slug not in CHAPTER_MODULES:
        raise KeyError(f"slug: expected a graded chapter, got {slug!r}; known: {', '.join(CHAPTER_MODULES)}")
    entry = find_chapter(slug)
    checks = importlib.import_module(CHAPTER_MODULES[slug]).CHECKS
    return Chapter(number=int(entry.number), slug=entry.slug, title=entry.title, checks=tuple(checks))


def all_chapters() -> list[Chapter]:
    """Every graded chapter, in book order."""
    return [load_chapter(s) for s in CHAPTER_MODULES]
