"""Where and when a chapter's numbers were measured: ``print(measured_on())`` in a notebook.

The book renders the outputs stored in each notebook, so a timing on a page is from the last
time that notebook was executed, on whatever machine executed it. The chapters print this line
next to their measurements so that the page says which machine and which day.
"""
from __future__ import annotations

import datetime as _dt
import os
import platform
from pathlib import Path

from ..bench.report import cpu_model_and_flags

__all__ = ["cpu_model", "measured_on"]


def cpu_model(cpuinfo: str | Path = "/proc/cpuinfo") -> str:
    """The CPU's model name ("AMD EPYC 7B13"), from ``/proc/cpuinfo`` where it exists."""
    model, _ = cpu_model_and_flags(cpuinfo)
    return model or platform.processor() or platform.machine() or "unknown CPU"


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def measured_on(now: _dt.datetime | None = None) -> str:
    """One line naming the date (UTC), the CPU, its usable cores and the library versions.

    Example: ``measured on 2026-12-03 (UTC), on Linux x86_64, AMD EPYC, 2 CPU cores; Python 3.11.7,
    numpy 2.4.6, torch 2.13.0``.
    """
    now = (now or _dt.datetime.now(_dt.timezone.utc)).astimezone(_dt.timezone.utc)
    versions = [f"Python {platform.python_version()}"]
    for name in ("numpy", "torch"):
        try:
            versions.append(f"{name} {__import__(name).__version__.split('+')[0]}")
        except ImportError:
            pass
    cores = _usable_cores()
    return (f"measured on {now:%Y-%m-%d} (UTC), on {platform.system()} {platform.machine()}, {cpu_model()}, "
            f"{cores} CPU core{'s' if cores != 1 else ''}; " + ", ".join(versions))
