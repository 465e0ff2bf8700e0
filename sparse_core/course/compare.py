"""Readable "yours vs expected" comparisons for graded checks.

Every function raises ``AssertionError`` with a message written for a student: what was
called, which entries differ, both values side by side, and masks drawn as small grids
(``#`` = may attend, ``.`` = masked, ``!`` = yours differs from expected here).
"""
from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "describe",
    "call_repr",
    "as_array",
    "assert_close",
    "assert_counts_equal",
    "assert_mask_equal",
    "draw_mask",
    "draw_mask_diff",
]

MAX_GRID = 24  # the largest grid drawn in full; larger masks are cropped around a difference


def describe(x: Any) -> str:
    """Short description of an argument: ``float64[2, 17, 33]``, ``5``, ``None``."""
    if isinstance(x, np.ndarray):
        return f"{x.dtype}[{', '.join(map(str, x.shape))}]"
    try:
        import torch

        if isinstance(x, torch.Tensor):
            return f"tensor {str(x.dtype).replace('torch.', '')}[{', '.join(map(str, x.shape))}]"
    except ImportError:  # pragma: no cover
        pass
    if callable(x):
        return getattr(x, "__name__", "<function>")
    text = repr(x)
    return text if len(text) <= 40 else text[:37] + "..."


def call_repr(fn_name: str, *args: Any, **kwargs: Any) -> str:
    parts = [describe(a) for a in args] + [f"{k}={describe(v)}" for k, v in kwargs.items()]
    return f"{fn_name}({', '.join(parts)})"


def as_array(value: Any, what: str) -> np.ndarray:
    """Convert a returned value to a numpy array, or fail with a clear message."""
    if value is None:
        raise AssertionError(f"{what}: your function returned None (did you forget `return`?)")
    try:
        import torch

        if isinstance(value, torch.Tensor):
            value = value.detach().cpu().numpy()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(value, tuple):
        raise AssertionError(f"{what}: expected one array, got a tuple of {len(value)} items")
    try:
        return np.asarray(value)
    except Exception as exc:  # noqa: BLE001 - any conversion failure is the student's return value
        raise AssertionError(f"{what}: could not turn your {type(value).__name__} into an array ({exc})") from None


def _fmt(v: Any) -> str:
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (float, np.floating)):
        return f"{float(v): .6g}"
    return str(v)


def _excerpt(yours: np.ndarray, expected: np.ndarray, index: tuple[int, ...], width: int = 6) -> str:
    """The row (last axis) around ``index`` in both arrays, aligned."""
    if yours.ndim == 0:
        return f"    yours:    {_fmt(yours[()])}\n    expected: {_fmt(expected[()])}"
    row = index[:-1]
    j = index[-1]
    lo = max(0, j - width // 2)
    hi = min(yours.shape[-1], lo + width)
    lo = max(0, hi - width)
    ys = "  ".join(f"{_fmt(v):>11}" for v in yours[row][lo:hi])
    es = "  ".join(f"{_fmt(v):>11}" for v in expected[row][lo:hi])
    where = f"[{', '.join(map(str, row))}{', ' if row else ''}{lo}:{hi}]"
    return f"    at {where}\n    yours:    {ys}\n    expected: {es}"


def assert_close(
    yours: Any,
    expected: np.ndarray,
    *,
    what: str,
    atol: float,
    rtol: float = 0.0,
    context: str = "",
) -> None:
    """Require ``|yours - expected| <= atol + rtol * |expected|`` everywhere, same shape, same NaNs."""
    expected = np.asarray(expected)
    y = as_array(yours, what)
    head = f"{what}{(' for ' + context) if context else ''}"
    if y.shape != expected.shape:
        raise AssertionError(f"{head}: wrong shape\n    yours:    {y.shape}\n    expected: {expected.shape}")
    if y.dtype.kind not in "fiub":
        raise AssertionError(f"{head}: expected a numeric array, got dtype {y.dtype}")
    y = y.astype(np.float64)
    e = expected.astype(np.float64)
    nan_y, nan_e = np.isnan(y), np.isnan(e)
    bad_nan = nan_y != nan_e
    if bad_nan.any():
        idx = tuple(int(i) for i in np.argwhere(bad_nan)[0])
        kind = "NaN where a number was expected" if nan_y[idx] else "a number where NaN was expected"
        raise AssertionError(
            f"{head}: {int(bad_nan.sum())} entries have {kind} (first at index {idx})\n"
            + _excerpt(y, e, idx)
            + ("\n    hint: a row with no allowed key must give 0, not 0/0" if nan_y[idx] else "")
        )
    with np.errstate(invalid="ignore"):
        diff = np.abs(y - e)
        same_inf = np.isinf(y) & np.isinf(e) & (np.sign(y) == np.sign(e))
        diff = np.where(same_inf | (nan_y & nan_e), 0.0, diff)
        limit = atol + rtol * np.abs(np.where(np.isinf(e), 0.0, e))
        bad = ~(diff <= limit)
    if bad.any():
        idx = tuple(int(i) for i in np.unravel_index(np.argmax(np.where(bad, diff, -1.0)), bad.shape))
        raise AssertionError(
            f"{head}: {int(bad.sum())} of {bad.size} entries differ by more than "
            f"atol={atol:g}{f' + rtol={rtol:g}*|expected|' if rtol else ''}; "
            f"largest difference {diff[idx]:.3g} at index {idx}\n" + _excerpt(y, e, idx)
        )


def draw_mask(mask: np.ndarray, rows: slice | None = None, cols: slice | None = None) -> list[str]:
    m = np.asarray(mask, dtype=bool)
    m = m[rows or slice(None), cols or slice(None)]
    return ["".join("#" if v else "." for v in row) for row in m]


def draw_mask_diff(yours: np.ndarray, expected: np.ndarray) -> str:
    """Three grids side by side: yours, expected and where they differ (``!``)."""
    y = np.asarray(yours, dtype=bool)
    e = np.asarray(expected, dtype=bool)
    n_q, n_k = e.shape
    diff = y != e
    r0 = c0 = 0
    if diff.any():
        i, j = np.argwhere(diff)[0]
        r0 = max(0, min(int(i) - MAX_GRID // 2, n_q - MAX_GRID))
        c0 = max(0, min(int(j) - MAX_GRID // 2, n_k - MAX_GRID))
    rows, cols = slice(r0, r0 + MAX_GRID), slice(c0, c0 + MAX_GRID)
    gy, ge = draw_mask(y, rows, cols), draw_mask(e, rows, cols)
    gd = ["".join("!" if v else " " for v in row) for row in diff[rows, cols]]
    w = max(len(gy[0]) if gy else 0, len("expected"))
    crop = "" if (n_q <= MAX_GRID and n_k <= MAX_GRID) else (
        f"    (showing rows {r0}..{min(r0 + MAX_GRID, n_q) - 1}, columns {c0}..{min(c0 + MAX_GRID, n_k) - 1} of {n_q} x {n_k})\n"
    )
    lines = [f"    {'yours':<{w}}   {'expected':<{w}}   diff"]
    lines += [f"    {a:<{w}}   {b:<{w}}   {c}".rstrip() for a, b, c in zip(gy, ge, gd)]
    return crop + "\n".join(lines)


def assert_mask_equal(yours: Any, expected: np.ndarray, *, what: str, context: str = "") -> None:
    """Require a boolean array exactly equal to ``expected``; draw both when they differ."""
    expected = np.asarray(expected, dtype=bool)
    y = as_array(yours, what)
    head = f"{what}{(' for ' + context) if context else ''}"
    if y.shape != expected.shape:
        raise AssertionError(f"{head}: wrong shape\n    yours:    {y.shape}\n    expected: {expected.shape}")
    if y.dtype != np.bool_:
        raise AssertionError(f"{head}: expected a boolean array (True = may attend), got dtype {y.dtype}")
    if not np.array_equal(y, expected):
        n_bad = int((y != expected).sum())
        if y.ndim == 2:
            picture = draw_mask_diff(y, expected)
        else:
            lead = tuple(int(i) for i in np.argwhere(y != expected)[0][:-2])
            picture = f"    (slice {lead})\n" + draw_mask_diff(y[lead], expected[lead])
        raise AssertionError(f"{head}: {n_bad} entries differ\n{picture}")


def assert_counts_equal(yours: Any, expected: dict, *, what: str, context: str) -> None:
    """Require a dict holding every key of ``expected`` with exactly its value (extra keys are fine)."""
    if not isinstance(yours, dict):
        raise AssertionError(f"{what}: expected a dict, got {type(yours).__name__} for {context}")
    for key, value in expected.items():
        if key not in yours:
            raise AssertionError(f"{what}: missing key {key!r} for {context}")
        if yours[key] != value:
            raise AssertionError(f"{what}[{key!r}] for {context}\n    yours:    {yours[key]}\n    expected: {value}")
