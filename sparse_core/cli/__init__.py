"""The command line, ``python -m sparse_core <command>``: :mod:`~sparse_core.cli.main` builds
the parser; :mod:`~sparse_core.cli.lm` holds ``train``/``eval``/``generate``,
:mod:`~sparse_core.cli.distill` holds ``distill`` and :mod:`~sparse_core.cli.common` the helpers
they share (argument types, the engine's options, the torchrun help, clear errors)."""
from .main import main

__all__ = ["main"]
