"""The strict CUDA simulator that grades the GPU puzzles (sparse_core.kernels.cudasim).

Each run starts a child process with NUMBA_ENABLE_CUDASIM=1; the kernels are in
``tests/_cudasim_kernels.py``. The plain simulator would run the racy kernels here without
complaint (Section 4b shows it); the strict one must name the race.
"""
import numpy as np
import pytest

import _cudasim_kernels as ks
from sparse_core.kernels.cudasim import SimulatorFailure, run_cases

N = 8


def _case(x, grid=1, n_out=N):
    return dict(constants=[N], grid=[grid], block=[N], inputs={"x": x},
                outputs={"out": np.zeros(n_out, np.float32)}, args=[("x", None), ("out", None)])


def _x(*shape):
    return np.random.default_rng(0).standard_normal(shape).astype(np.float32)


def test_correct_kernel_runs_and_counts_every_read():
    x = _x(N)
    (r,) = run_cases(ks.copy_through_shared, [_case(x)])
    assert r["error"] is None
    np.testing.assert_array_equal(r["arrays"]["out"], x[::-1])
    np.testing.assert_array_equal(r["reads"]["x"], np.ones(N, np.int64))


@pytest.mark.parametrize("factory,x,grid,words", [
    (ks.reverse_without_barrier, _x(N), 1, ["shared array", "syncthreads"]),
    (ks.overwrite_while_read, _x(2, N), 1, ["shared array", "syncthreads"]),  # reported at the read or the write
    (ks.add_shares, _x(3, N), 3, ["written by two different threads", "one writer"]),
    (ks.past_the_end, _x(N), 1, ["outside x's shape"]),
])
def test_races_and_bad_indices_are_reported(factory, x, grid, words):
    (r,) = run_cases(factory, [_case(x, grid)])
    assert r["error"], f"{factory.__name__} ran without a report"
    for w in words:
        assert w in r["error"], r["error"]


def test_not_implemented_propagates():
    with pytest.raises(NotImplementedError, match="Exercise 0.0"):
        run_cases(ks.not_written_yet, [_case(_x(N))])


def test_endless_kernel_times_out():
    with pytest.raises(SimulatorFailure, match="did not finish within 3 s"):
        run_cases(ks.spins, [_case(_x(N))], timeout=3)


def test_function_without_a_file_is_refused():
    with pytest.raises(SimulatorFailure, match=r"\.py file"):
        run_cases(eval("lambda cuda, n: None"), [_case(_x(N))])
