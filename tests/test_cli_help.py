"""Every option of every command of ``python -m sparse_core`` says what it does and what its default is."""
import argparse

import pytest

from sparse_core.cli.main import build_parser


def _commands(parser, path=()):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _commands(child, path + (name,))


COMMANDS = list(_commands(build_parser()))


def test_every_command_is_reached():
    names = {" ".join(path) for path, _ in COMMANDS}
    for expected in ("grade", "cost", "train", "eval", "generate", "distill", "bench kernels", "bench layouts"):
        assert expected in names, f"{expected!r} missing from {sorted(names)}"


@pytest.mark.parametrize("path,parser", COMMANDS, ids=[" ".join(p) or "(top)" for p, _ in COMMANDS])
def test_every_option_has_a_description_and_shows_its_default(path, parser):
    formatter = parser._get_formatter()
    for action in parser._actions:
        if not action.option_strings or isinstance(action, argparse._HelpAction):
            continue
        flag = action.option_strings[-1]
        assert action.help and action.help.strip(), f"{' '.join(path)} {flag}: no description"
        entry = formatter._expand_help(action)       # the text `--help` prints for this option
        default = action.default
        if default is None or default is False or default == argparse.SUPPRESS:
            continue
        if isinstance(default, (list, tuple)):
            shown = " ".join(str(v) for v in default)
        elif isinstance(default, str) and default != default.strip():
            shown = repr(default)
        else:
            shown = str(default)
        assert "default" in entry.lower(), f"{' '.join(path)} {flag}: {entry!r} does not show its default {shown!r}"
        if "(default: " in entry:
            assert shown in entry, f"{' '.join(path)} {flag}: shows {entry!r}, default is {shown!r}"
