"""Small, honest measurement helpers: medians of repeated runs, peak memory, log-log fits.

Used by the book and the benchmark scripts. Nothing here asserts a speed; it only measures.
"""
from __future__ import annotations

import gc
import time
import tracemalloc
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .. import _validation as V

__all__ = ["Timing", "time_callable", "traced_call", "peak_traced_bytes", "fit_power_law"]


@dataclass(frozen=True)
class Timing:
    """Wall-clock seconds of ``repeats`` runs (after warm-up)."""

    samples: tuple[float, ...]

    @property
    def median(self) -> float:
        return float(np.median(self.samples))

    @property
    def iqr(self) -> tuple[float, float]:
        return float(np.percentile(self.samples, 25)), float(np.percentile(self.samples, 75))


def time_callable(fn: Callable[[], object], repeats: int = 5, warmup: int = 1,
                  min_time: float = 0.0) -> Timing:
    """Time ``fn()``; report each of ``repeats`` samples. A sample loops until ``min_time`` s.

    Defined in Chapter 1.
    """
    repeats = V.check_positive_int("repeats", repeats)
    warmup = V.check_nonnegative_int("warmup", warmup)
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        n = 0
        t0 = time.perf_counter()
        while True:
            fn()
            n += 1
            elapsed = time.perf_counter() - t0
            if elapsed >= min_time:
                break
        samples.append(elapsed / n)
    return Timing(tuple(samples))


def traced_call(fn: Callable[[], object]) -> tuple[object, int]:
    """``(fn(), peak bytes allocated during the call)`` as seen by ``tracemalloc``: the
    measurement behind :func:`peak_traced_bytes`.

    numpy reports its array buffers to tracemalloc, so this measures the temporaries a numpy
    implementation creates (not torch's allocator, not memory held before the call). The
    result is returned, so a memory measurement can also be checked for the right answer.
    """
    gc.collect()
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    tracemalloc.reset_peak()
    base, _ = tracemalloc.get_traced_memory()
    try:
        result = fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        if not was_tracing:
            tracemalloc.stop()
    return result, int(peak - base)


def peak_traced_bytes(fn: Callable[[], object]) -> int:
    """Peak bytes allocated *during* ``fn()`` as seen by ``tracemalloc`` (see :func:`traced_call`).

    Defined in Chapter 1.
    """
    return traced_call(fn)[1]


def fit_power_law(x, y) -> tuple[float, float]:
    """Least-squares fit of ``log y = slope * log x + c``; returns ``(slope, exp(c))``.

    Defined in Chapter 1.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1 or x.size < 2:
        raise ValueError(f"`x` and `y` must be 1-D of equal length >= 2, got {x.shape} and {y.shape}")
    if np.any(x <= 0) or np.any(y <= 0):
        raise ValueError("`x` and `y` must be positive for a log-log fit")
    slope, c = np.polyfit(np.log(x), np.log(y), 1)
    return float(slope), float(np.exp(c))
