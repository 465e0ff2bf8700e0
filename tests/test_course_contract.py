"""The rules every graded call is held to: arguments left alone, the documented return type."""
import numpy as np
import pytest
import torch

from sparse_core.bench.timing import peak_traced_bytes
from sparse_core.course.contract import check_returns, guarded, parse_spec


@pytest.mark.parametrize("spec,good,bad", [
    ("float64 array", np.zeros(3), np.zeros(3, np.float32)),
    ("float64 array", np.float64(1.0), 1.0),
    ("bool array", np.zeros(2, bool), np.zeros(2, np.uint8)),
    ("integer array", np.zeros(2, np.int32), np.zeros(2, bool)),
    ("int", 3, True),
    ("int", np.int64(3), 3.0),
    ("float", 0.5, 1),
    ("0-d tensor", torch.tensor(1.0), torch.tensor([1.0])),
    ("float tensor", torch.zeros(3), torch.zeros(3, dtype=torch.long)),
    ("list of int", [1, 2], [1, 2.0]),
    ("list of str", ["a"], ("a",)),
    ("dict of int", {"a": 1}, {"a": 1.5}),
    ("(float64 array, int)", (np.zeros(1), 2), (np.zeros(1),)),
    ("float or float64 array", 1.0, np.zeros(1, np.float32)),
])
def test_specs_accept_what_they_say_and_nothing_else(spec, good, bad):
    check = parse_spec(spec)
    assert check(good, {}) is None
    assert check(bad, {}) is not None


def test_like_an_argument_compares_type_shape_and_dtype():
    x = torch.zeros(2, 3)
    check = parse_spec("like x")
    assert check(torch.ones(2, 3), {"x": x}) is None
    assert "shape" in check(torch.ones(3, 2), {"x": x})
    assert "dtype" in check(torch.ones(2, 3, dtype=torch.float64), {"x": x})
    assert "type" in check(np.ones((2, 3)), {"x": x})


def test_unreadable_specs_fail_at_once():
    with pytest.raises(ValueError, match="spec"):
        parse_spec("float16 array")
    with pytest.raises(ValueError, match="spec"):
        parse_spec("a vector")


def test_message_names_the_function_and_both_types():
    with pytest.raises(AssertionError) as info:
        check_returns(np.zeros((2, 2), np.float32), "float64 array", "softmax")
    assert str(info.value) == ("softmax returned float32 array [2, 2]; expected a numpy float64 array "
                               "(see Returns: in its docstring)")


def _subtract_max(q, k):
    q -= q.max()  # the classic in-place slip
    return q @ k.T


@pytest.mark.parametrize("make", [lambda: np.ones((3, 2)), lambda: torch.ones(3, 2)])
def test_an_argument_changed_in_place_is_named(make):
    fn = guarded(_subtract_max, "scores", None)
    with pytest.raises(AssertionError, match=r"^scores modified its argument `q` in place"):
        fn(make(), make())
    assert guarded(lambda q, k: q @ k.T, "scores", None)(make(), make()).shape == (3, 3)


def test_lists_and_views_are_watched_too():
    def pops(tokens):
        return tokens.pop()

    with pytest.raises(AssertionError, match="`tokens`"):
        guarded(pops, "listops_value", "str")(["[MAX", "1", "]"])
    a = np.arange(12.0).reshape(3, 4)

    def writes_view(x):
        x[0, 0] = -1.0
        return x.sum()

    with pytest.raises(AssertionError, match="`x`"):
        guarded(writes_view, "f", None)(a[:, ::2])  # a non-contiguous view of a


def test_watching_allocates_no_traced_memory_for_contiguous_inputs():
    q = np.random.default_rng(0).standard_normal((2000, 500))
    fn = guarded(lambda x: float(x[0, 0]), "f", "float")
    assert peak_traced_bytes(lambda: fn(q)) < 10_000  # q is 8 MB: it is hashed in place, never copied


def test_kernels_are_passed_through_untouched():
    def kernel(q, s):
        s[:] = q

    assert guarded(kernel, "block_scores_kernel", "kernel") is kernel
