"""The course's chapters, in book order: the one list that the grader, the graded tests, the stub
generator and the table-of-contents test read.

Each chapter has one slug, used everywhere: the notebook ``book/<slug>.ipynb``, the exercise
folders ``exercises/<slug>/`` and ``solutions/<slug>/``, the checks module
``sparse_core.course.checks.<slug>`` and the wrong answers ``tests/mutants/<slug>.py``.
A chapter without exercises of its own (4b, whose kernel puzzles 4.5 and 4.6 are graded with
Chapter 4) has ``None`` for the last three.

A new chapter: add its row here, then its notebook, ``solutions/<slug>/exercise.py``, its checks
module and its mutants; ``python scripts/make_stubs.py`` writes the stub, and
``tests/test_course_manifest.py`` says what is still missing.
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ChapterEntry", "CHAPTERS", "graded_chapters", "find_chapter"]

CHECKS_PACKAGE = "sparse_core.course.checks"


@dataclass(frozen=True)
class ChapterEntry:
    number: str  # "1" .. "10", "4b"
    slug: str
    title: str  # as the grader prints it
    notebook: str  # path from the repository root
    exercises: str | None  # folder name under exercises/ and solutions/
    checks: str | None  # module holding the chapter's CHECKS
    mutants: str | None  # wrong answers the checks must reject, path from the repository root

    @property
    def graded(self) -> bool:
        return self.checks is not None


def _chapter(number: str, slug: str, title: str, graded: bool = True) -> ChapterEntry:
    return ChapterEntry(
        number=number, slug=slug, title=title, notebook=f"book/{slug}.ipynb",
        exercises=slug if graded else None,
        checks=f"{CHECKS_PACKAGE}.{slug}" if graded else None,
        mutants=f"tests/mutants/{slug}.py" if graded else None,
    )


CHAPTERS: tuple[ChapterEntry, ...] = (
    _chapter("1", "ch01_dense", "Dense attention and its cost"),
    _chapter("2", "ch02_local", "Local attention: sliding window, dilated and block-local"),
    _chapter("3", "ch03_strided_axial", "Strided, fixed and axial attention"),
    _chapter("4", "ch04_block_sparse", "Block-sparse layouts and kernels"),
    _chapter("4b", "ch04b_gpu_kernel", "Block-sparse attention on the GPU", graded=False),
    _chapter("5", "ch05_bigbird_longformer", "BigBird and Longformer"),
    _chapter("6", "ch06_content", "Content-based sparsity: top-k, routing, learned masks and NSA"),
    _chapter("7", "ch07_linformer", "Linformer: is attention low-rank?"),
    _chapter("8", "ch08_performer", "Performer: softmax attention with random features"),
    _chapter("9", "ch09_case_study", "The case study: a Pythia-style model with block-sparse attention"),
    _chapter("10", "ch10_distill", "Distilling sparse attention from a dense teacher"),
    _chapter("11", "ch11_analysis", "Benchmarking and analysis: cost, long-range quality, training dynamics"),
)


def graded_chapters() -> tuple[ChapterEntry, ...]:
    """The chapters with exercises, checks and mutants, in book order."""
    return tuple(c for c in CHAPTERS if c.graded)


def find_chapter(key: str) -> ChapterEntry:
    """The chapter with this slug (``"ch01_dense"``) or number (``"1"``, ``"4b"``)."""
    for c in CHAPTERS:
        if key in (c.slug, c.number):
            return c
    known = ", ".join(c.slug for c in CHAPTERS)
    raise KeyError(f"chapter: expected a chapter slug or number, got {key!r}; known: {known}")
