"""Input checks shared by the library: one place that turns bad input into a clear message.

Every public function validates its arguments here, so that errors name the argument and the
expected shape or type instead of failing deep inside numpy, torch or numba.
"""
from __future__ import annotations

import math
import numbers
import sys
from typing import Any

import numpy as np

_NUMPY_FLOATS = (np.float16, np.float32, np.float64)


def is_torch(x: Any) -> bool:
    # A tensor exists only once torch is imported, so the checks never import torch themselves
    # (``import sparse_core`` and the command line stay light).
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def backend_of(**arrays: Any) -> str:
    """Return "numpy" or "torch" for a group of arrays that must all share one backend.

    ``None`` values are skipped. Raises ``TypeError`` naming the offending argument.
    """
    kinds = {}
    for name, x in arrays.items():
        if x is None:
            continue
        if isinstance(x, np.ndarray):
            kinds[name] = "numpy"
        elif is_torch(x):
            kinds[name] = "torch"
        else:
            raise TypeError(
                f"`{name}` must be a numpy.ndarray or a torch.Tensor, got {type(x).__name__}"
            )
    found = set(kinds.values())
    if len(found) > 1:
        detail = ", ".join(f"{n}: {k}" for n, k in kinds.items())
        raise TypeError(f"all inputs must be numpy arrays or all torch tensors, got a mix ({detail})")
    return found.pop() if found else "numpy"


def check_float(name: str, x: Any) -> None:
    """Require a floating-point array (float16/bfloat16/float32/float64)."""
    if is_torch(x):
        if not x.dtype.is_floating_point:
            raise TypeError(f"`{name}` must have a floating-point dtype, got {x.dtype}")
    elif isinstance(x, np.ndarray):
        if x.dtype.type not in _NUMPY_FLOATS:
            raise TypeError(
                f"`{name}` must have dtype float16, float32 or float64, got {x.dtype}"
            )


def check_ndim(name: str, x: Any, min_ndim: int, layout: str) -> None:
    if x.ndim < min_ndim:
        raise ValueError(
            f"`{name}` must have at least {min_ndim} dimensions {layout}, got shape {tuple(x.shape)}"
        )


def check_qkv_arrays(q: Any, k: Any, v: Any, array_type: type, type_name: str) -> None:
    """``q [..., n_q, d]``, ``k [..., n_k, d]``, ``v [..., n_k, d_v]``: each an ``array_type``
    (named ``type_name`` in the error), floating point, with at least two dimensions."""
    for name, x in (("q", q), ("k", k), ("v", v)):
        if not isinstance(x, array_type):
            raise TypeError(f"`{name}` must be a {type_name}, got {type(x).__name__}")
        check_float(name, x)
    check_ndim("q", q, 2, "[..., n_q, d]")
    check_ndim("k", k, 2, "[..., n_k, d]")
    check_ndim("v", v, 2, "[..., n_k, d_v]")


def check_scale(scale: Any, d: int) -> float:
    """Default ``scale`` is 1/sqrt(d); an explicit one must be a finite real number."""
    if scale is None:
        return 1.0 / math.sqrt(d)
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real):
        raise TypeError(f"`scale` must be a real number or None, got {type(scale).__name__}")
    scale = float(scale)
    if not math.isfinite(scale):
        raise ValueError(f"`scale` must be finite, got {scale}")
    return scale


def check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}")
    return int(value)


def check_nonnegative_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"`{name}` must be a non-negative integer, got {value!r}")
    return int(value)


def broadcast_batch(shapes: dict[str, tuple[int, ...]]) -> tuple[int, ...]:
    """Broadcast the leading (batch/head) dimensions of several arrays, with a clear error."""
    try:
        return tuple(np.broadcast_shapes(*shapes.values()))
    except ValueError:
        detail = ", ".join(f"{n}: {s}" for n, s in shapes.items())
        raise ValueError(
            f"the leading (batch/head) dimensions of the inputs do not broadcast together ({detail})"
        ) from None


def as_numpy_bool_mask(mask: Any) -> np.ndarray:
    if is_torch(mask):
        mask = mask.detach().cpu().numpy()
    if not isinstance(mask, np.ndarray):
        raise TypeError(f"`mask` must be a boolean numpy array or torch tensor, got {type(mask).__name__}")
    if mask.dtype != np.bool_:
        raise TypeError(f"`mask` must be boolean (True = may attend), got dtype {mask.dtype}")
    return mask


def check_mask_shape(mask_shape: tuple[int, ...], batch: tuple[int, ...], n_q: int, n_k: int) -> None:
    expected = batch + (n_q, n_k)
    if len(mask_shape) < 2:
        raise ValueError(f"`mask` must have at least 2 dimensions [..., n_q, n_k], got shape {mask_shape}")
    try:
        out = np.broadcast_shapes(mask_shape, expected)
    except ValueError:
        out = None
    if out != expected:
        raise ValueError(
            f"`mask` of shape {mask_shape} does not broadcast to [..., n_q, n_k] = {expected}"
        )


def check_int_fields(obj: Any, positive: tuple[str, ...] = (), nonnegative: tuple[str, ...] = (),
                     optional_positive: tuple[str, ...] = ()) -> None:
    """Check the integer attributes of a config object: each of ``positive`` is an ``int`` > 0, each
    of ``nonnegative`` an ``int`` >= 0, each of ``optional_positive`` None or an ``int`` > 0 (``bool``
    is not an integer here). Raises ValueError naming the first attribute out of range."""
    for names, low, none_ok in ((positive, 1, False), (nonnegative, 0, False), (optional_positive, 1, True)):
        for name in names:
            v = getattr(obj, name)
            if none_ok and v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                what = "a positive integer" if low else "a non-negative integer"
                raise ValueError(f"`{name}` must be {what}{' or None' if none_ok else ''}, got {v!r}")
