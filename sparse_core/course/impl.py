"""The one switch that decides whose code the graded tests import.

``exercises`` (the reader's stubs, the default), ``solutions`` (reference answers), or a path
to any folder laid out like ``exercises/``. Chosen by ``--impl`` (pytest or the grade
command) or the environment variable ``SPARSE_COURSE_IMPL``.

Modules are loaded from their file, under a private name, and never put on ``sys.path``, so
importing the reader's code can never pick up a solved copy by accident.
"""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

ENV_VAR = "SPARSE_COURSE_IMPL"
NAMED = ("exercises", "solutions")


def repo_root(start: Path | None = None) -> Path:
    """The course checkout: the first folder upward holding ``exercises/`` and ``tests/graded``."""
    candidates = []
    if start is not None:
        candidates.append(Path(start).resolve())
    candidates.append(Path.cwd().resolve())
    candidates.append(Path(__file__).resolve().parents[2])
    for base in candidates:
        for folder in (base, *base.parents):
            if (folder / "exercises").is_dir() and (folder / "tests" / "graded").is_dir():
                return folder
    raise FileNotFoundError(
        "could not find the course checkout (a folder with exercises/ and tests/graded/); "
        "run from inside it or pass --root"
    )


def resolve_impl(value: str | None, root: Path | None = None) -> Path:
    """Folder holding ``chNN_topic/exercise.py`` files for the chosen implementation."""
    value = value or os.environ.get(ENV_VAR) or "exercises"
    if value in NAMED:
        folder = (root or repo_root()) / value
    else:
        folder = Path(value).expanduser().resolve()
    if not folder.is_dir():
        raise FileNotFoundError(
            f"--impl / {ENV_VAR}={value!r}: expected 'exercises', 'solutions' or an existing folder "
            f"laid out like exercises/ (no folder at {folder})"
        )
    return folder


def load_exercise(folder: Path, chapter_slug: str) -> ModuleType:
    """Import ``folder/chapter_slug/exercise.py`` afresh under a private module name."""
    path = Path(folder) / chapter_slug / "exercise.py"
    if not path.is_file():
        raise FileNotFoundError(f"no exercise file at {path}")
    name = f"_course_impl_{abs(hash(str(path.parent.parent)))}_{chapter_slug}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # lets dataclasses/typing inside the file resolve their module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module
