"""The command line, ``python -m sparse_core <command>``: :mod:`~sparse_core.cli.main` builds
the parser; :mod:`~sparse_core.cli.lm` holds ``train``/``eval``/``generate`` and
:mod:`~sparse_core.cli.distill` holds ``distill``."""
from .main import main

__all__ = ["main"]
