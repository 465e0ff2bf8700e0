"""Run a reader's Numba CUDA kernel in the simulator, counting global reads and finding races.

Numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``) runs a kernel on the CPU: the thread blocks
one after another, the threads of a block as Python threads that mostly run one at a time (a
thread keeps the interpreter until it waits at ``cuda.syncthreads()`` or its time slice ends).
It checks indexing and arithmetic, but a race -- two threads touching the same element with no
barrier between them -- usually runs "correctly" there, in an order a GPU does not promise.

This module makes the simulator strict for the puzzle exercises. The reader writes a factory
``make(cuda, *constants)`` that returns a ``@cuda.jit`` kernel; here ``cuda`` is a
:class:`PuzzleCuda`, a stand-in for ``numba.cuda`` whose pieces record what every thread does:

* global arrays are passed as :class:`GlobalArray`: each element read is counted, an index
  outside the array is an error (a GPU would read whatever lies there), and an output element
  written by two different threads is an error (on a GPU the writes race);
* ``cuda.shared.array`` gives a :class:`SharedArray` that knows, per element, which thread
  last wrote and read it and in which *phase* (the number of barriers the block has passed):
  two threads touching an element in the same phase, at least one of them writing, is a race
  (a missing ``cuda.syncthreads()``), whatever order the simulator happened to pick; reading
  an element no thread has written is an error (shared memory starts as garbage);
* local and shared arrays start as NaN, not zeros;
* every thread of a block must pass the same number of barriers.

The simulator must be switched on before numba is imported, so the kernel runs in a child
process (:func:`run_cases`): ``python -m sparse_core.kernels.cudasim IN.npz OUT.npz`` with
``NUMBA_ENABLE_CUDASIM=1``. The reader's factory is loaded there from its file by name.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import traceback
from pathlib import Path

import numpy as np

__all__ = ["PuzzleError", "GlobalArray", "SharedArray", "PuzzleCuda", "run_cases", "SimulatorFailure"]

_LOCK = threading.RLock()


class PuzzleError(Exception):
    """A rule of the strict simulator was broken (a race, an out-of-bounds index, ...)."""


def _me():
    """(block index, thread index, thread number in its block) of the calling simulator thread."""
    t = threading.current_thread()
    if not hasattr(t, "threadIdx"):
        raise PuzzleError("cuda.threadIdx / blockIdx / syncthreads used outside a running kernel")
    return tuple(t.blockIdx), tuple(t.threadIdx), t.thread_id


def _phase() -> int:
    return getattr(threading.current_thread(), "_puzzle_phase", 0)


def _who(block, thread) -> str:
    return f"thread (x={thread[0]}, y={thread[1]}) of block {block[0] if block[1:] == (0, 0) else block}"


def _who_number(tid: int, block_linear: int | None = None) -> str:
    """The thread with number ``tid`` in its block (and block number ``block_linear``), named by its indices."""
    from numba.cuda.simulator.kernel import _get_kernel_context

    ctx = _get_kernel_context()
    bx, by, _ = tuple(ctx.blockDim)
    thread = (tid % bx, (tid // bx) % by)
    if block_linear is None:
        return f"thread (x={thread[0]}, y={thread[1]})"
    gx, gy, _ = tuple(ctx.gridDim)
    block = (block_linear % gx, (block_linear // gx) % gy, block_linear // (gx * gy))
    return _who(block, thread)


def _index(name: str, shape: tuple, idx) -> tuple:
    """``idx`` as a tuple of ints inside ``shape``, or a clear error."""
    if not isinstance(idx, tuple):
        idx = (idx,)
    if len(idx) != len(shape) or not all(isinstance(i, (int, np.integer)) and not isinstance(i, bool)
                                         for i in idx):
        raise PuzzleError(f"{name}[{', '.join(map(repr, idx))}]: index {name} with {len(shape)} integers, one "
                          f"element at a time (shape {shape}); slices and floats are not allowed here")
    idx = tuple(int(i) for i in idx)
    for i, n in zip(idx, shape):
        if not 0 <= i < n:
            raise PuzzleError(f"{name}[{', '.join(map(str, idx))}] is outside {name}'s shape {shape}: on a GPU "
                              "this reads or writes someone else's memory (check the bounds of the last, shorter "
                              "block, and < against <=)")
    return idx


class GlobalArray:
    """A global-memory argument: counts element reads; for outputs, one writer per element."""

    def __init__(self, name: str, data: np.ndarray, output: bool = False):
        self.name, self.data, self.output = name, data, output
        self.shape, self.ndim, self.size, self.dtype = data.shape, data.ndim, data.size, data.dtype
        self.reads = np.zeros(data.shape, np.int64)
        self.writer = np.full(data.shape, -1, np.int64)
        self._threads_per_block = None

    def __len__(self):
        return self.shape[0]

    def __getitem__(self, idx):
        idx = _index(self.name, self.shape, idx)
        with _LOCK:
            self.reads[idx] += 1
            return self.data[idx]

    def __setitem__(self, idx, value):
        idx = _index(self.name, self.shape, idx)
        if not self.output:
            raise PuzzleError(f"the kernel writes to the input {self.name}{list(idx)}; only the output may be written")
        block, thread, tid = _me()
        t = threading.current_thread()
        me = t._puzzle_block_linear * t._puzzle_block_threads + tid
        with _LOCK:
            w = self.writer[idx]
            if w not in (-1, me):
                raise PuzzleError(
                    f"{self.name}[{', '.join(map(str, idx))}] is written by two different threads, "
                    f"{_who_number(int(w) % t._puzzle_block_threads, int(w) // t._puzzle_block_threads)} and "
                    f"{_who(block, thread)}: on a GPU they run at the same time and either write may land last "
                    "(and an update like += loses one of them). Give every output element exactly one writer.")
            self.writer[idx] = me
            self.data[idx] = value


class SharedArray:
    """A shared-memory array that finds accesses of one element by two threads in one phase."""

    def __init__(self, name: str, shape, dtype):
        self.name = name
        self.data = np.full(shape, np.nan if np.dtype(dtype).kind == "f" else -123456789, dtype)
        self.shape, self.ndim, self.size, self.dtype = self.data.shape, self.data.ndim, self.data.size, self.data.dtype
        self.w_thread = np.full(self.shape, -1, np.int64)
        self.w_phase = np.full(self.shape, -1, np.int64)
        self.r_thread = np.full(self.shape, -1, np.int64)  # -2: read by several threads in r_phase
        self.r_phase = np.full(self.shape, -1, np.int64)

    def __len__(self):
        return self.shape[0]

    def _where(self, idx):
        return f"element [{', '.join(map(str, idx))}] of the shared array created {self.name}"

    def __getitem__(self, idx):
        idx = _index(self.name, self.shape, idx)
        block, thread, tid = _me()
        ph = _phase()
        with _LOCK:
            w = self.w_thread[idx]
            if w == -1:
                raise PuzzleError(f"{_who(block, thread)} reads {self._where(idx)}, which no thread has written: "
                                  "shared memory starts as garbage. Fill the whole tile (zeros past the end of "
                                  "the data) and call cuda.syncthreads() before reading it.")
            if self.w_phase[idx] == ph and w != tid:
                raise PuzzleError(f"{_who(block, thread)} reads {self._where(idx)}, written by {_who_number(int(w))} "
                                  "of the same block with no cuda.syncthreads() in between: on a GPU the read may come "
                                  "before the write. Call cuda.syncthreads() after filling a shared tile.")
            if self.r_phase[idx] != ph:
                self.r_phase[idx], self.r_thread[idx] = ph, tid
            elif self.r_thread[idx] != tid:
                self.r_thread[idx] = -2
            return self.data[idx]

    def __setitem__(self, idx, value):
        idx = _index(self.name, self.shape, idx)
        block, thread, tid = _me()
        ph = _phase()
        with _LOCK:
            if self.r_phase[idx] == ph and self.r_thread[idx] not in (tid,):
                raise PuzzleError(
                    f"{_who(block, thread)} overwrites {self._where(idx)} while other threads read it in the same "
                    "phase (no cuda.syncthreads() between their read and this write): on a GPU they may read the "
                    "new value. Call cuda.syncthreads() after the last read of a tile, before loading the next.")
            if self.w_phase[idx] == ph and self.w_thread[idx] not in (-1, tid):
                raise PuzzleError(f"{_who(block, thread)} and {_who_number(int(self.w_thread[idx]))} both write "
                                  f"{self._where(idx)} in the same phase: on a GPU the result is either one.")
            self.w_thread[idx], self.w_phase[idx] = tid, ph
            self.data[idx] = value


class _Shared:
    def __init__(self):
        self.arrays = {}

    def array(self, shape, dtype, alignment=None):
        if isinstance(shape, (int, np.integer)):
            shape = (int(shape),)
        frame = sys._getframe(1)
        block, _, _ = _me()
        key = (block, frame.f_code.co_filename, frame.f_lineno)
        with _LOCK:
            if key not in self.arrays:  # one array per call site per block, shared by its threads
                dt = _np_dtype(dtype)
                self.arrays[key] = SharedArray(f"on line {frame.f_lineno}", tuple(int(s) for s in shape), dt)
            return self.arrays[key]


class _Local:
    def array(self, shape, dtype, alignment=None):
        dt = _np_dtype(dtype)
        return np.full(shape, np.nan if dt.kind == "f" else -123456789, dt)


def _np_dtype(dtype):
    try:
        from numba.np import numpy_support

        from numba.core import types

        if isinstance(dtype, types.Type):
            return numpy_support.as_dtype(dtype)
    except Exception:  # noqa: BLE001 - plain numpy dtypes need none of this
        pass
    return np.dtype(dtype)


class _Dim:
    def __init__(self, get):
        self._get = get

    def __getattr__(self, axis):
        if axis not in ("x", "y", "z"):
            raise AttributeError(axis)
        return getattr(self._get(), axis)


class PuzzleCuda:
    """The ``cuda`` handed to a puzzle's factory: ``jit``, ``threadIdx``, ``blockIdx``,
    ``blockDim``, ``gridDim``, ``grid``, ``syncthreads``, ``shared.array``, ``local.array``."""

    def __init__(self):
        self.shared = _Shared()
        self.local = _Local()
        self.threadIdx = _Dim(lambda: threading.current_thread().threadIdx)
        self.blockIdx = _Dim(lambda: threading.current_thread().blockIdx)
        self.blockDim = _Dim(lambda: self._context().blockDim)
        self.gridDim = _Dim(lambda: self._context().gridDim)
        self.phases: dict = {}  # block -> set of barrier counts its threads finished with

    @staticmethod
    def _context():
        from numba.cuda.simulator.kernel import _get_kernel_context

        return _get_kernel_context()

    def __getattr__(self, name):
        raise AttributeError(f"this puzzle's `cuda` offers jit, threadIdx, blockIdx, blockDim, gridDim, grid, "
                             f"syncthreads, shared.array and local.array; not cuda.{name}")

    def grid(self, ndim):
        t, ctx = threading.current_thread(), self._context()
        pos = [b * n + i for b, n, i in zip(t.blockIdx, ctx.blockDim, t.threadIdx)]
        return pos[0] if ndim == 1 else tuple(pos[:ndim])

    def syncthreads(self):
        t = threading.current_thread()
        t._puzzle_phase = getattr(t, "_puzzle_phase", 0) + 1
        t.syncthreads()

    def jit(self, fn=None, **options):
        from numba import cuda as numba_cuda

        if fn is None or not callable(fn):  # @cuda.jit(...) or @cuda.jit("signature")
            return lambda f: self.jit(f, **options)
        if options.get("device"):
            return numba_cuda.jit(fn, device=True)
        puzzle = self

        def kernel(*args):
            t = threading.current_thread()
            ctx = puzzle._context()
            g = tuple(ctx.gridDim)
            b = tuple(t.blockIdx)
            t._puzzle_block_linear = b[0] + g[0] * (b[1] + g[1] * b[2])
            t._puzzle_block_threads = int(np.prod(tuple(ctx.blockDim)))
            t._puzzle_phase = 0
            fn(*args)
            with _LOCK:
                puzzle.phases.setdefault(b, set()).add(t._puzzle_phase)

        kernel.__name__ = getattr(fn, "__name__", "kernel")
        return numba_cuda.jit(kernel)


# ------------------------------------------------------------------ child process

def _load_factory(path: str, name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location("_puzzle_module", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["_puzzle_module"] = module
    spec.loader.exec_module(module)
    return getattr(module, name)


def _child(src: str, dst: str) -> None:
    from numba import config

    if not config.ENABLE_CUDASIM:
        raise SystemExit("NUMBA_ENABLE_CUDASIM=1 must be set before numba is imported")
    data = np.load(src)
    meta = json.loads(str(data["meta"]))
    factory = _load_factory(meta["path"], meta["name"])
    result: dict = {}
    report: dict = {}
    for c, case in enumerate(meta["cases"]):
        cuda = PuzzleCuda()
        arrays = {}
        for name in case["inputs"]:
            arrays[name] = GlobalArray(name, np.array(data[f"{c}/{name}"]))
        for name in case["outputs"]:
            arrays[name] = GlobalArray(name, np.array(data[f"{c}/{name}"]), output=True)
        try:
            kernel = factory(cuda, *case["constants"])
            if kernel is None:
                raise PuzzleError("the factory returned None: return the @cuda.jit kernel")
            launch = kernel[tuple(case["grid"]), tuple(case["block"])]
            launch(*[arrays[name] if name in arrays else value for name, value in case["args"]])
            uneven = {b: sorted(p) for b, p in cuda.phases.items() if len(p) > 1}
            if uneven:
                b, p = next(iter(uneven.items()))
                raise PuzzleError(f"the threads of block {b[0]} called cuda.syncthreads() different numbers of times "
                                  f"({' and '.join(map(str, p))}): a barrier that not every thread of the block "
                                  "reaches hangs or misbehaves on a GPU")
            report[c] = {"error": None}
        except BaseException as exc:  # noqa: BLE001 - everything the reader's code raises is reported
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == meta["path"]]
            where = "".join(traceback.format_list(frames[-2:])).rstrip()
            report[c] = {"error": f"{type(exc).__name__}: {exc}", "type": type(exc).__name__, "where": where}
        for name, arr in arrays.items():
            result[f"{c}/{name}"] = arr.data
            result[f"{c}/{name}/reads"] = arr.reads
    result["report"] = np.array(json.dumps(report))
    np.savez(dst, **result)


class SimulatorFailure(AssertionError):
    """The child process did not finish normally (timeout, crash)."""


def run_cases(factory, cases: list[dict], timeout: float = 60.0, what: str = "kernel") -> list[dict]:
    """Run ``factory`` in the strict simulator on each case, in one child process.

    A case is a dict: ``constants`` (the factory's arguments after ``cuda``), ``grid``,
    ``block``, ``args`` (a list of ``(name, value)``: arrays by name, scalars as they are),
    ``inputs``/``outputs`` (dicts of name -> numpy array). Returns per case ``{"error": str or
    None, "where": ..., "arrays": {name: data}, "reads": {name: counts}}``.
    Raises ``NotImplementedError`` when the factory does, :class:`SimulatorFailure` (an
    ``AssertionError``) on a timeout, a crash, or a factory that cannot be loaded from a file.
    """
    import inspect

    fn = getattr(factory, "__wrapped__", factory)
    try:
        path = inspect.getsourcefile(fn)
    except TypeError:
        path = None
    name = getattr(fn, "__name__", None)
    if not path or not Path(path).is_file() or name is None:
        raise SimulatorFailure(f"{what}: the function must be defined in a .py file (the simulator runs it in a "
                               "separate process and imports it from there)")
    meta = {"path": str(Path(path).resolve()), "name": name, "cases": []}
    arrays = {}
    for c, case in enumerate(cases):
        meta["cases"].append({"constants": list(case["constants"]), "grid": list(case["grid"]),
                              "block": list(case["block"]), "inputs": list(case["inputs"]),
                              "outputs": list(case["outputs"]),
                              "args": [[n, v] for n, v in case["args"]]})
        for n, x in {**case["inputs"], **case["outputs"]}.items():
            arrays[f"{c}/{n}"] = np.asarray(x)
    root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", PYTHONPATH=os.pathsep.join(
        [root] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    with tempfile.TemporaryDirectory(prefix="sparse-course-cudasim-") as tmp:
        src, dst = Path(tmp) / "in.npz", Path(tmp) / "out.npz"
        np.savez(src, meta=np.array(json.dumps(meta)), **arrays)
        try:
            proc = subprocess.run([sys.executable, "-m", "sparse_core.kernels.cudasim", str(src), str(dst)],
                                  env=env, capture_output=True, text=True, timeout=timeout,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise SimulatorFailure(f"{what}: the simulator did not finish within {timeout:.0f} s (a loop that never "
                                   "ends? a barrier some threads never reach?)") from None
        if proc.returncode != 0 or not dst.exists():
            tail = "\n".join("    " + line for line in (proc.stdout + proc.stderr).strip().splitlines()[-15:])
            tail = tail or "    (it printed nothing: it was killed, or exited from inside the kernel)"
            raise SimulatorFailure(f"{what}: the simulator process failed (exit code {proc.returncode}):\n{tail}")
        out = np.load(dst)
        report = json.loads(str(out["report"]))
        results = []
        for c, case in enumerate(cases):
            r = dict(report[str(c)])
            names = list(case["inputs"]) + list(case["outputs"])
            r["arrays"] = {n: out[f"{c}/{n}"] for n in names}
            r["reads"] = {n: out[f"{c}/{n}/reads"] for n in names}
            results.append(r)
    for r in results:
        if r.get("type") == "NotImplementedError":
            raise NotImplementedError(r["error"].split(": ", 1)[-1])
    return results


if __name__ == "__main__":
    _child(*sys.argv[1:3])
