"""The chapter manifest agrees with the book, the exercise folders, the checks and the mutants.

``sparse_core/course/manifest.py`` is the one list of chapters; these tests fail when a chapter is
added, renamed or removed in one place and not in the others.
"""
import importlib
import importlib.util
import json
import re
from pathlib import Path

import pytest

from sparse_core.course import manifest
from sparse_core.course.checks import CHAPTER_MODULES, all_chapters
from sparse_core.course.manifest import CHAPTERS, find_chapter, graded_chapters

ROOT = Path(__file__).resolve().parents[1]
GRADED = graded_chapters()


def _toc_files() -> list[str]:
    """Every ``file:`` (and the ``root:``) of _toc.yml, in order."""
    text = (ROOT / "_toc.yml").read_text()
    return re.findall(r"^\s*(?:-\s*)?(?:file|root):\s*(\S+)\s*$", text, flags=re.M)


def _load_file(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_numbers_and_slugs_are_unique_and_in_book_order():
    numbers = [c.number for c in CHAPTERS]
    slugs = [c.slug for c in CHAPTERS]
    assert len(set(numbers)) == len(numbers) and len(set(slugs)) == len(slugs)
    for c in CHAPTERS:
        match = re.fullmatch(r"(\d+)(b?)", c.number)
        assert match, c.number
        assert c.slug.startswith(f"ch{int(match.group(1)):02d}{match.group(2)}_"), (c.number, c.slug)
    order = [(int(re.match(r"\d+", n).group()), n) for n in numbers]
    assert order == sorted(order)


def test_every_manifest_notebook_is_in_the_toc_and_every_chapter_of_the_toc_in_the_manifest():
    chapters_in_toc = [f for f in _toc_files() if Path(f).name.startswith("ch")]
    assert chapters_in_toc == [str(Path(c.notebook).with_suffix("")) for c in CHAPTERS]
    on_disk = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "book").glob("ch*.ipynb"))
    assert on_disk == sorted(c.notebook for c in CHAPTERS)


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda c: c.slug)
def test_notebook_title_carries_the_chapter_number(chapter):
    cells = json.loads((ROOT / chapter.notebook).read_text())["cells"]
    headings = [line for c in cells if c["cell_type"] == "markdown"
                for line in "".join(c["source"]).splitlines() if line.startswith("# ")]
    assert headings, f"{chapter.notebook} has no title"
    assert headings[0].startswith(f"# {chapter.number}. "), (chapter.notebook, headings[0])


def test_exercise_folders_are_those_of_the_graded_chapters():
    for where in ("exercises", "solutions"):
        folders = sorted(p.name for p in (ROOT / where).iterdir() if p.is_dir() and p.name.startswith("ch"))
        assert folders == sorted(c.exercises for c in GRADED), where
    for c in GRADED:
        assert c.exercises == c.slug
        for where in ("exercises", "solutions"):
            assert (ROOT / where / c.exercises / "exercise.py").is_file(), (where, c.exercises)
    for c in CHAPTERS:
        if not c.graded:  # 4b: its exercises are graded with the chapter before it
            assert c.exercises is None and c.mutants is None


@pytest.mark.parametrize("chapter", GRADED, ids=lambda c: c.slug)
def test_checks_and_mutants_modules_import(chapter):
    checks = importlib.import_module(chapter.checks).CHECKS
    assert len(checks) > 0
    assert all(c.exercise.startswith(f"{chapter.number}.") for c in checks)
    mutants = _load_file(ROOT / chapter.mutants, f"_manifest_mutants_{chapter.slug}").MUTANTS
    assert set(mutants) == {c.exercise for c in checks}


def test_the_grader_and_the_graded_tests_derive_from_the_manifest():
    assert list(CHAPTER_MODULES) == [c.slug for c in GRADED]
    assert list(CHAPTER_MODULES.values()) == [c.checks for c in GRADED]
    chapters = all_chapters()
    assert [(ch.number, ch.slug, ch.title) for ch in chapters] == [(int(c.number), c.slug, c.title) for c in GRADED]
    graded_tests = _load_file(ROOT / "tests" / "graded" / "test_graded.py", "_manifest_graded_tests")
    defined = sorted(name for name in vars(graded_tests) if name.startswith("test_"))
    assert defined == sorted(f"test_{c.slug}" for c in GRADED)
    assert sorted(p.name for p in (ROOT / "tests" / "graded").glob("test_*.py")) == ["test_graded.py"]


def test_stub_generator_covers_the_graded_chapters():
    spec = importlib.util.spec_from_file_location("_manifest_make_stubs", ROOT / "scripts" / "make_stubs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.graded_chapters is manifest.graded_chapters


def test_find_chapter_by_slug_or_number():
    assert find_chapter("4b").slug == "ch04b_gpu_kernel"
    assert find_chapter("ch10_distill").number == "10"
    assert find_chapter("ch10_distill").notebook == "book/ch10_distill.ipynb"
    with pytest.raises(KeyError, match="expected a chapter slug or number, got 'ch10_distillation'"):
        find_chapter("ch10_distillation")


def _defined_in_claims():
    """(module path, function, chapter number, exercise or None) for each 'Defined in Chapter N' docstring."""
    import ast

    claims = []
    for path in sorted((ROOT / "sparse_core").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                match = re.search(r"Defined in Chapter (\w+)(?: \(Exercise (\d+\.\d+)\))?\.", ast.get_docstring(node) or "")
                if match:
                    claims.append((path.relative_to(ROOT).as_posix(), node.name, match.group(1), match.group(2)))
    return claims


def test_defined_in_chapter_names_a_chapter_that_uses_the_function():
    claims = _defined_in_claims()
    exercises = {ch.slug: ch.exercises() for ch in all_chapters()}
    for path, name, number, exercise in claims:
        chapter = find_chapter(number)
        text = (ROOT / chapter.notebook).read_text()
        assert re.search(rf"\b{name}\b", text), f"{path}:{name} says Chapter {number}, whose notebook never names it"
        if exercise is not None:
            assert exercise.startswith(f"{number}.") and exercise in exercises[chapter.slug], (path, name, exercise)
