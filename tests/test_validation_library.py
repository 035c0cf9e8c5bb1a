"""Bad input to the library raises InvalidParameterError in the one message style, naming the argument."""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np
import pytest
import torch

from decaylab.closed_form import ridge, ridge_gcv, ridge_path
from decaylab.data.synthetic import d2l_linear_data
from decaylab.engine import Hyper, Task, run_chunk, train
from decaylab.validation import InvalidParameterError

RNG = np.random.default_rng(0)
X = RNG.normal(size=(12, 3))
Y = X @ np.array([1.0, -2.0, 0.5]) + 0.1 * RNG.normal(size=12)

SOLVERS = {
    "ridge": lambda X, y: ridge(X, y, 0.1),
    "ridge_path": lambda X, y: ridge_path(X, y, [0.1, 1.0]),
    "ridge_gcv": lambda X, y: ridge_gcv(X, y, [0.1, 1.0]),
}


def _with(a: np.ndarray, index: tuple[int, ...], value: float) -> np.ndarray:
    a = a.copy()
    a[index] = value
    return a


BAD_DATA = [
    ("nan in X", lambda: (_with(X, (3, 1), np.nan), Y), r"'X' parameter of {f} must be an array of finite numbers"
     r" \(1 not finite, first X\[3, 1\] = nan\)\. Got 'ndarray of shape \(12, 3\)'\."),
    ("inf in y", lambda: (X, _with(Y, (5,), np.inf)), r"'y' parameter of {f} must be an array of finite numbers"
     r" \(1 not finite, first y\[5\] = inf\)"),
    ("-inf in a 2-D y", lambda: (X, _with(np.column_stack([Y, Y]), (0, 1), -np.inf)), r"first y\[0, 1\] = -inf"),
    ("nan in a tensor", lambda: (torch.tensor(_with(X, (0, 0), np.nan)), torch.tensor(Y)), r"first X\[0, 0\] = nan"),
    ("0 rows", lambda: (np.zeros((0, 3)), np.zeros(0)),
     r"'X' parameter of {f} must be a 2-D array with at least 1 sample and 1 feature\. Got \(0, 3\)\."),
    ("0 features", lambda: (np.zeros((5, 0)), np.zeros(5)), r"'X' parameter of {f} .* Got \(5, 0\)\."),
    ("y shorter than X", lambda: (X, Y[:5]), r"'y' parameter of {f} must be a 1-D or 2-D array with 12 rows like X\. Got \(5,\)"),
    ("X 1-D", lambda: (X[:, 0], Y), r"'X' parameter of {f} must be a 2-D array \(n_samples, n_features\)\. Got \(12,\)"),
    ("y 3-D", lambda: (X, Y.reshape(12, 1, 1)), r"'y' parameter of {f} must be a 1-D or 2-D array"),
    ("X text", lambda: ("abc", Y), r"'X' parameter of {f} must be a NumPy array or a torch tensor of numbers"),
]


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("case,data,pattern", BAD_DATA, ids=[c for c, _, _ in BAD_DATA])
def test_closed_forms_refuse_bad_data(solver: str, case: str, data: Any, pattern: str) -> None:
    with pytest.raises(InvalidParameterError, match=pattern.format(f=solver)):
        SOLVERS[solver](*data())


@pytest.mark.parametrize("solver", ["ridge_path", "ridge_gcv"])
@pytest.mark.parametrize("lambds", [[], None, [[0.1]]], ids=["empty", "None", "2-D"])
def test_paths_refuse_an_empty_or_missing_grid(solver: str, lambds: Any) -> None:
    fn = ridge_path if solver == "ridge_path" else ridge_gcv
    with pytest.raises(InvalidParameterError, match=f"'lambds' parameter of {solver} must be a non-empty 1-D sequence"):
        fn(X, Y, lambds)


def test_good_data_still_solves() -> None:
    """The checks refuse only what they say: one sample and one feature is a valid (degenerate) problem."""
    coef, intercept = ridge(X, Y, 0.1)
    np.testing.assert_allclose(ridge_path(X, Y, [0.1])[0][0], coef)
    coef1, b1 = ridge(np.array([[2.0]]), np.array([3.0]), 1.0)
    assert coef1.tolist() == [0.0] and b1 == 3.0  # centred: no variation left, the intercept is the mean


# -- engine.train / run_chunk --------------------------------------------------------------------
TASK = Task(data=partial(d2l_linear_data, n_train=10, n_test=5, dim=3), layers=(3, 1), batch_size=5, epochs=1)
HYPER = Hyper(seed=0, lr=0.01)

BAD_CALLS = [
    ("a Hyper, not a list", lambda f: f(TASK, HYPER),
     r"'hypers' parameter of {f} must be a non-empty list of Hyper, one per configuration \(for one configuration:"
     r" \[hyper\]\)\. Got Hyper\(seed=0"),
    ("an empty list", lambda f: f(TASK, []), r"'hypers' parameter of {f} must be a non-empty list of Hyper.*Got \[\]\."),
    ("None", lambda f: f(TASK, None), r"'hypers' parameter of {f} must be a non-empty list of Hyper.*Got 'NoneType'\."),
    ("a string", lambda f: f(TASK, "abc"), r"'hypers' parameter of {f} .* Got 'str'\."),
    ("a dict", lambda f: f(TASK, {"seed": 0}), r"'hypers' parameter of {f} .* Got 'dict'\."),
    ("a dict inside", lambda f: f(TASK, [HYPER, {"seed": 0}]), r"\(item 1 is a dict\)\. Got \{{'seed': 0\}}\."),
    ("a Task that is not one", lambda f: f("task", [HYPER]), r"'task' parameter of {f} must be a decaylab.engine.Task\. Got 'str'\."),
]


@pytest.mark.parametrize("fn", ["train", "run_chunk"])
@pytest.mark.parametrize("case,call,pattern", BAD_CALLS, ids=[c for c, _, _ in BAD_CALLS])
def test_engine_refuses_wrong_arguments(fn: str, case: str, call: Any, pattern: str) -> None:
    with pytest.raises(InvalidParameterError, match=pattern.format(f=fn)):
        call(train if fn == "train" else run_chunk)


def test_train_refuses_a_callback_that_is_not_callable_and_accepts_any_iterable() -> None:
    with pytest.raises(InvalidParameterError, match="'on_chunk_done' parameter of train must be None or a callable"):
        train(TASK, [HYPER], on_chunk_done=3)
    assert len(train(TASK, (h for h in [HYPER, Hyper(seed=1, lr=0.01)]))) == 2
