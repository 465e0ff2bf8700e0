"""What every graded call must honour, whatever the check: inputs left as they were, and the
return type and dtype the exercise's docstring states.

:class:`~sparse_core.course.checks.Check` wraps the reader's function in :func:`guarded` before a
check runs, so these two rules hold at every call of every check, not only where a check
remembered to test them. A rule broken raises ``AssertionError`` naming the argument or the
returned value and what was expected.

The returned value is described by a small *spec* string, written next to each chapter's checks
(``CheckList.returns``) in the words of the docstring's ``Returns:`` section:

=========================  ====================================================================
``float64 array``           a numpy array (or numpy scalar) of dtype float64 (``bool array``, ``int64 array`` alike)
``integer array``           a numpy array of any integer dtype (not bool)
``int`` / ``float``         a Python (or numpy) integer, not bool / a Python (or numpy) float
``0-d tensor``              a torch tensor with no dimensions; ``float tensor``: floating dtype
``list of int``             a list of integers (``list of str`` alike)
``dict of int``             a dict whose values are integers
``(A, B)``                  a tuple (or list) of exactly these parts
``A or B``                  either
``like x``                  the type (and shape, dtype) of the argument named ``x``
``kernel``                  nothing is checked (a CUDA kernel that writes its output argument)
=========================  ====================================================================
"""
from __future__ import annotations

import functools
import hashlib
import inspect
from typing import Any, Callable

import numpy as np

__all__ = ["guarded", "check_returns", "parse_spec", "describe"]

_DTYPES = {"float64": np.float64, "float32": np.float32, "bool": np.bool_, "int64": np.int64}


def _torch():
    import torch

    return torch


def _split_top(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside parentheses."""
    parts, depth, start, i = [], 0, 0, 0
    while i < len(text):
        ch = text[i]
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif depth == 0 and text.startswith(sep, i):
            parts.append(text[start:i])
            start = i + len(sep)
            i = start
            continue
        i += 1
    parts.append(text[start:])
    return [p.strip() for p in parts]


def parse_spec(spec: str) -> Callable[[Any, dict], str | None]:
    """A validator ``(value, bound_args) -> None or 'what was wrong'`` for a spec string."""
    spec = spec.strip()
    alternatives = _split_top(spec, " or ")
    if len(alternatives) > 1:
        validators = [parse_spec(a) for a in alternatives]

        def either(value, args):
            problems = [v(value, args) for v in validators]
            return None if any(p is None for p in problems) else f"expected {spec}"
        return either
    if spec.startswith("(") and spec.endswith(")"):
        parts = [parse_spec(p) for p in _split_top(spec[1:-1], ",")]

        def tuple_of(value, args):
            if not isinstance(value, (tuple, list)) or len(value) != len(parts):
                return f"expected a tuple {spec}"
            for i, (part, v) in enumerate(zip(parts, value)):
                problem = part(v, args)
                if problem:
                    return f"part {i} of the tuple: {problem}"
            return None
        return tuple_of
    if spec.startswith("list of ") or spec.startswith("dict of "):
        kind, inner = spec.split(" of ", 1)
        element = parse_spec(inner)

        def container(value, args):
            if kind == "list" and not isinstance(value, list):
                return f"expected a {spec}"
            if kind == "dict" and not isinstance(value, dict):
                return f"expected a {spec}"
            for item in (value.values() if kind == "dict" else value):
                if element(item, args):
                    return f"expected a {spec}, found an element {describe(item)}"
            return None
        return container
    if spec == "kernel":
        return lambda value, args: None
    if spec.startswith("like "):
        name = spec[5:]

        def like(value, args):
            ref = args.get(name)
            if ref is None:
                return None
            if type(value) is not type(ref):
                return f"expected the type of `{name}` ({describe(ref)})"
            if getattr(value, "shape", None) != getattr(ref, "shape", None):
                return f"expected the shape of `{name}` ({describe(ref)})"
            if getattr(value, "dtype", None) != getattr(ref, "dtype", None):
                return f"expected the dtype of `{name}` ({describe(ref)})"
            return None
        return like
    if spec == "int":
        return lambda v, a: (None if isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))
                             else "expected an int")
    if spec == "str":
        return lambda v, a: None if isinstance(v, str) else "expected a str"
    if spec == "float":
        return lambda v, a: (None if isinstance(v, (float, np.floating)) else "expected a float")
    if spec == "0-d tensor" or spec == "float tensor":
        def tensor(v, a):
            torch = _torch()
            if not isinstance(v, torch.Tensor):
                return f"expected a {spec}"
            if spec == "0-d tensor" and v.dim() != 0:
                return f"expected a {spec}"
            if spec == "float tensor" and not v.is_floating_point():
                return f"expected a {spec}"
            return None
        return tensor
    if spec.endswith(" array"):
        dtype = spec[:-6]
        if dtype not in _DTYPES and dtype != "integer":
            raise ValueError(f"spec: unknown array dtype in {spec!r}")

        def array(v, a):
            if isinstance(v, np.generic):  # a numpy scalar is the 0-d case numpy's reductions return
                v = np.asarray(v)
            if not isinstance(v, np.ndarray):
                return f"expected a numpy {spec}"
            if dtype == "integer":
                return None if v.dtype.kind in "iu" else f"expected a numpy {spec}"
            return None if v.dtype == _DTYPES[dtype] else f"expected a numpy {spec}"
        return array
    raise ValueError(f"spec: cannot read {spec!r}")


def describe(value: Any) -> str:
    """``float32 array [3, 4]``, ``torch.float64 tensor [2]``, ``int``, ... for messages."""
    if isinstance(value, np.ndarray):
        return f"{value.dtype} array {list(value.shape)}"
    try:
        torch = _torch()
        if isinstance(value, torch.Tensor):
            return f"{value.dtype} tensor {list(value.shape)}"
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    if isinstance(value, (tuple, list)):
        inner = ", ".join(describe(v) for v in value[:4]) + (", ..." if len(value) > 4 else "")
        return f"{type(value).__name__} ({inner})"
    if isinstance(value, np.generic):
        return f"numpy {value.dtype}"
    return type(value).__name__


def check_returns(value: Any, spec: str, function: str, args: dict | None = None) -> None:
    """Raise ``AssertionError`` unless ``value`` is what ``spec`` says ``function`` returns."""
    problem = parse_spec(spec)(value, args or {})
    if problem:
        raise AssertionError(f"{function} returned {describe(value)}; {problem} (see Returns: in its docstring)")


# ---------------------------------------------------------------- inputs left alone

def _digest(data: np.ndarray) -> bytes:
    """Hash of a C-contiguous array's bytes (views only: no numpy allocation)."""
    if data.dtype.hasobject:
        return repr(data.tolist()).encode()
    return hashlib.blake2b(data.reshape(-1).view(np.uint8)).digest()


def _fingerprint(value: Any):
    """Something equal before and after a call exactly when ``value``'s contents did not change,
    without allocating numpy memory (so a memory check of the call is not disturbed): arrays and
    CPU tensors by a hash of their bytes, lists, tuples and dicts element by element, numbers and
    strings by their repr, anything else by identity."""
    if isinstance(value, np.ndarray):
        data = value if value.flags.c_contiguous else np.ascontiguousarray(value)
        return ("ndarray", value.shape, str(value.dtype), _digest(data))
    torch = _torch()
    if isinstance(value, torch.Tensor):
        t = value.detach()
        if t.device.type != "cpu" or t.is_sparse:
            return ("object", id(value))
        t = t.contiguous()
        if t.dtype == torch.bfloat16:
            t = t.view(torch.int16)
        return ("tensor", tuple(t.shape), str(t.dtype), _digest(t.numpy()))
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, tuple(_fingerprint(x) for x in value))
    if isinstance(value, dict):
        return ("dict", tuple((repr(k), _fingerprint(x)) for k, x in value.items()))
    if isinstance(value, (set, frozenset)):
        return (type(value).__name__, tuple(sorted(repr(x) for x in value)))
    if value is None or isinstance(value, (bool, int, float, complex, str, bytes, np.generic)):
        return ("value", repr(value))  # repr: a NaN equals itself
    return ("object", id(value))


def _watched(value: Any) -> bool:
    """Arguments whose contents the rule covers: arrays, tensors and containers."""
    torch = _torch()
    return isinstance(value, (np.ndarray, torch.Tensor, list, tuple, dict, set))


def _bound(sig: inspect.Signature | None, args: tuple, kwargs: dict) -> dict:
    """The call's arguments by name (``argument i`` when the signature does not fit)."""
    try:
        bound = sig.bind(*args, **kwargs).arguments
    except (AttributeError, TypeError):
        out = {f"argument {i}": a for i, a in enumerate(args)}
        out.update(kwargs)
        return out
    out = {}
    for name, value in bound.items():
        kind = sig.parameters[name].kind
        if kind is inspect.Parameter.VAR_POSITIONAL:
            out.update({f"{name}[{i}]": a for i, a in enumerate(value)})
        elif kind is inspect.Parameter.VAR_KEYWORD:
            out.update(value)
        else:
            out[name] = value
    return out


def guarded(fn: Callable, function: str, returns: str | None) -> Callable:
    """``fn`` wrapped so that each call fails if it changed an argument in place, or returned
    something other than ``returns`` says."""
    if returns == "kernel":
        return fn

    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        sig = None

    @functools.wraps(fn)
    def call(*args, **kwargs):
        named = _bound(sig, args, kwargs)
        before = {name: _fingerprint(value) for name, value in named.items() if _watched(value)}
        result = fn(*args, **kwargs)
        for name, fp in before.items():
            if _fingerprint(named[name]) != fp:
                raise AssertionError(f"{function} modified its argument `{name}` in place; leave the inputs as "
                                     "they are and work on a copy")
        if returns is not None:
            check_returns(result, returns, function, named)
        return result
    return call
