"""Benchmarks behind ``python -m sparse_core bench <target>``.

Each target is a module here with

* ``HELP`` -- one line for ``bench --help``;
* ``add_arguments(parser, positive_int)`` -- its command-line options;
* ``main(args) -> int`` -- run it from parsed arguments (writes JSON, a plot and a README).

Targets: ``layouts`` (:mod:`sparse_core.bench.layouts`), ``kernels``, ``cuda``, and ``methods``
(:mod:`sparse_core.bench.methods`: every attention method as a layer, time and memory against n,
fitted exponents). A new target is a new module plus one entry in :data:`TARGETS`. Target
modules import their heavy dependencies (torch, matplotlib, the patterns) inside functions, so
building the command line stays cheap;
a target that fails to import is listed with the error instead of breaking the other commands.
Nothing here asserts a speed; it only measures (timings with
:func:`sparse_core.bench.timing.time_callable`).
"""
from __future__ import annotations

import importlib

#: target name -> module
TARGETS = {
    "layouts": "sparse_core.bench.layouts",
    "kernels": "sparse_core.bench.kernels",
    "cuda": "sparse_core.bench.cuda",
    "methods": "sparse_core.bench.methods",
}


def add_target_parsers(parser, positive_int) -> None:
    """Add one sub-command per target to the ``bench`` parser."""
    sub = parser.add_subparsers(dest="target", metavar="<target>", required=True)
    for name, module_name in TARGETS.items():
        try:
            module = importlib.import_module(module_name)
        except Exception as e:  # keep grade/cost/info usable when one target is broken
            message = f"bench target {name!r} cannot be imported: {type(e).__name__}: {e}"
            p = sub.add_parser(name, help=f"(unavailable: {type(e).__name__})")
            p.set_defaults(bench_main=lambda args, message=message: print(f"error: {message}") or 1)
            continue
        p = sub.add_parser(name, help=module.HELP, description=(module.__doc__ or "").split("\n\n")[0])
        module.add_arguments(p, positive_int)
        p.set_defaults(bench_main=module.main)
