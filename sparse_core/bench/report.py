"""What every benchmark report shares: the command that made it, the date, the machine it ran on,
and the three files it writes (``<name>.json``, ``<name>.png``, ``README.md``)."""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
from pathlib import Path
from typing import Callable

__all__ = ["cpu_model_and_flags", "machine_info", "new_report", "write_report", "add_attention_arguments", "fmt_or_dash"]


def cpu_model_and_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> tuple[str | None, list[str]]:
    """The CPU's model name and the vector extensions it reports (Linux ``/proc/cpuinfo``)."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return platform.processor() or None, []
    model, flags = None, set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model is None:
            model = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = set(value.split())
    vector = sorted(f for f in flags if f.startswith(("avx", "fma", "sse4", "asimd", "sve", "neon", "amx")))
    return model, vector


def machine_info() -> dict:
    """Platform, CPU model and vector extensions, core count, and the versions that matter."""
    import numpy
    import torch

    from .. import __version__

    model, vector = cpu_model_and_flags()
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "cpu_model": model,
        "vector_extensions": vector,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "numpy": numpy.__version__,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "sparse_core": __version__,
    }


def new_report(command: str, *, machine: bool = True, local_time: bool = False, **fields) -> dict:
    """``{"command", "date", "machine", **fields}``: the header every benchmark JSON starts with.

    ``date`` is ISO 8601 to the second, in UTC (``local_time=True``: the machine's zone)."""
    now = _dt.datetime.now(_dt.timezone.utc)
    report = {"command": command, "date": (now.astimezone() if local_time else now).isoformat(timespec="seconds")}
    if machine:
        report["machine"] = machine_info()
    report.update(fields)
    return report


def write_report(report: dict, out: str | os.PathLike, name: str, plot: Callable[[dict, Path], None],
                 readme: Callable[[dict], str]) -> Path:
    """Write ``out/<name>.json``, ``out/<name>.png`` (by ``plot(report, path)``) and ``out/README.md``
    (``readme(report)``); returns the JSON's path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    plot(report, out / f"{name}.png")
    (out / "README.md").write_text(readme(report))
    return path


def add_attention_arguments(parser, positive_int, *, rounds: int, out: str) -> None:
    """Options every attention-kernel benchmark takes: shape, timing rounds, output, Flex, quiet."""
    parser.add_argument("--block-size", type=positive_int, default=128, help="kernel block size")
    parser.add_argument("--heads", type=positive_int, default=8, help="attention heads")
    parser.add_argument("--d", type=positive_int, default=64, help="head dimension")
    parser.add_argument("--rounds", type=positive_int, default=rounds, help="interleaved timing rounds")
    parser.add_argument("--out", default=out, help="folder for the JSON, the plot and the README")
    parser.add_argument("--no-flex", action="store_true", help="skip compiled FlexAttention")
    parser.add_argument("--quiet", action="store_true", help="print only the final line")


def fmt_or_dash(x, fmt: str) -> str:
    """``format(x, fmt)``, or ``-`` for a value that was not measured (None), as the README tables show it."""
    return "-" if x is None else format(x, fmt)
