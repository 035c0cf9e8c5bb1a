"""The optimizer state after training (``Task.keep_optimizer_state`` → ``Outcome.optimizer_state``).

The sequential engine reads it from ``torch.optim``'s own ``state``; the batched engine must give the
same buffers, configuration by configuration and whatever the chunk, within 1e-5 relative in float32
and 1e-12 in float64 (relative to the vector's largest entry, as in ``tests/test_engine_average.py``).
After one full-batch step the buffers have a closed form, checked against the gradient written out.
"""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch

import engine_data
from decaylab.engine import Hyper, Task, run_chunk, train_batched, train_sequential
from decaylab.engine.semantics import initial_parameters, load_data
from decaylab.results import ConfigResult
from decaylab.validation import InvalidParameterError
from test_engine_average import assert_vectors_close

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny kernels: see decaylab.threads

regression = partial(engine_data.regression, n_train=30, n_test=20, dim=4)
blobs = engine_data.blobs


def _case(name: str) -> tuple[Task, list[Hyper], set[str]]:
    """A task, its configurations and the buffers torch.optim keeps for it."""
    if name == "sgd":
        task = Task(data=regression, layers=(4, 6, 1), batch_size=7, epochs=3, init="torch")
        return task, [Hyper(seed=s, lr=0.05, l2=wd) for s in (0, 1) for wd in (0.0, 0.1)], set()
    if name == "sgd_momentum_dropout":
        task = Task(data=blobs, layers=(5, 12, 3), loss="cross_entropy", momentum=0.9, batch_size=8, epochs=4,
                    init="torch", dropout=True)
        hypers = [Hyper(seed=0, lr=0.05, l2=1e-2, dropout=(0.2,)), Hyper(seed=1, lr=0.1, decoupled=0.1, dropout=(0.5,)),
                  Hyper(seed=0, lr=0.02, dropout=(0.0,))]
        return task, hypers, {"momentum_buffer"}
    if name == "adam_l2":
        task = Task(data=blobs, layers=(5, 8, 3), loss="cross_entropy", optimizer="adam", batch_size=9, epochs=5,
                    init="torch")
        return task, [Hyper(seed=s, lr=lr, l2=wd) for s, lr, wd in [(0, 1e-2, 1e-2), (1, 3e-3, 0.0), (0, 3e-2, 0.1)]], {
            "exp_avg", "exp_avg_sq"}
    if name == "adamw":
        task = Task(data=regression, layers=(4, 8, 1), activation="tanh", optimizer="adam", epochs=6, init="torch",
                    decay_bias=True, noise=True)
        hypers = [Hyper(seed=s, lr=1e-2, decoupled=wd, noise=0.3) for s, wd in [(0, 0.1), (1, 0.0), (0, 1.0)]]
        return task, hypers, {"exp_avg", "exp_avg_sq"}
    raise KeyError(name)


CASES = ["sgd", "sgd_momentum_dropout", "adam_l2", "adamw"]


@pytest.mark.parametrize("chunk", [1, 3, None], ids=["chunk1", "chunk3", "chunkK"])
@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_batched_state_equals_torch_optim_state(dtype: str, name: str, chunk: int | None) -> None:
    task, hypers, buffers = _case(name)
    task = Task(**{**task.__dict__, "dtype": dtype, "keep_optimizer_state": True, "keep_weights": "final"})
    want = train_sequential(task, hypers)
    got = train_batched(task, hypers, chunk=chunk or len(hypers))
    n_train = load_data(task, 0).X_train.shape[0]
    steps = task.epochs * (math.ceil(n_train / task.batch_size) if task.batch_size else 1)
    for k, (a, b) in enumerate(zip(got, want, strict=True)):
        assert b.optimizer_state is not None and a.optimizer_state is not None, k
        assert set(b.optimizer_state) == buffers | {"step"} == set(a.optimizer_state), k  # torch.optim's names
        assert a.optimizer_state["step"] == b.optimizer_state["step"] == [float(steps)], k
        n_params = len(b.weights[0])
        for name_ in buffers:
            assert len(b.optimizer_state[name_]) == n_params, (k, name_)  # parameters_to_vector's layout
            assert_vectors_close(a.optimizer_state[name_], b.optimizer_state[name_], 1e-5 if dtype == "float32" else 1e-12,
                                 (k, name_))


@pytest.mark.parametrize("engine", ["batched", "sequential"])
def test_one_adam_step_keeps_the_moments_of_the_gradient(engine: str) -> None:
    """Full batch, one epoch: m = (1−β₁)·g and v = (1−β₂)·g², with g = ∇(mean (ŷ−y)²/2) + λ·w written out."""
    beta1, beta2, lam = 0.8, 0.99, 0.3
    task = Task(data=regression, layers=(4, 1), optimizer="adam", betas=(beta1, beta2), epochs=1, dtype="float64",
                init_std=0.5, keep_optimizer_state=True)
    (out,) = run_chunk(task, [Hyper(seed=2, lr=1e-2, l2=lam)], engine)
    data = load_data(task, 2)
    ((W, b),) = initial_parameters(task, 2)  # W (4, 1), b (1,)
    residual = data.X_train @ W + b - data.y_train  # (30, 1)
    g_w = (data.X_train.T @ residual / 30).reshape(-1) + lam * W.reshape(-1)  # the bias is not decayed
    g_b = residual.mean().reshape(1)
    g = torch.cat([g_w, g_b])  # parameters_to_vector: the (1, 4) weight, then the bias
    assert out.optimizer_state["step"] == [1.0]
    assert out.optimizer_state["exp_avg"] == pytest.approx(((1 - beta1) * g).tolist(), rel=1e-12)
    assert out.optimizer_state["exp_avg_sq"] == pytest.approx(((1 - beta2) * g * g).tolist(), rel=1e-12)


@pytest.mark.parametrize("engine", ["batched", "sequential"])
def test_the_momentum_buffer_after_one_step_is_the_decayed_gradient(engine: str) -> None:
    lam = 0.2
    task = Task(data=regression, layers=(4, 1), momentum=0.9, epochs=1, dtype="float64", init_std=0.5,
                keep_optimizer_state=True)
    (out,) = run_chunk(task, [Hyper(seed=1, lr=0.1, l2=lam)], engine)
    data = load_data(task, 1)
    ((W, b),) = initial_parameters(task, 1)
    residual = data.X_train @ W + b - data.y_train
    g = torch.cat([(data.X_train.T @ residual / 30).reshape(-1) + lam * W.reshape(-1), residual.mean().reshape(1)])
    assert out.optimizer_state == {"momentum_buffer": pytest.approx(g.tolist(), rel=1e-12), "step": [1.0]}


def test_state_is_kept_only_when_asked_and_not_for_a_diverged_configuration() -> None:
    task = Task(data=regression, layers=(4, 1), optimizer="adam", batch_size=10, epochs=3, init_std=0.1)
    hypers = [Hyper(seed=0, lr=1e-2), Hyper(seed=0, lr=1e30)]
    for engine in ("batched", "sequential"):
        assert all(o.optimizer_state is None for o in run_chunk(task, hypers, engine))
    kept = Task(**{**task.__dict__, "loss": "half_mse", "optimizer": "sgd", "keep_optimizer_state": True})
    for engine in ("batched", "sequential"):
        fine, diverged = run_chunk(kept, hypers, engine)
        assert fine.optimizer_state == {"step": [9.0]}  # plain SGD keeps no buffer: only the steps taken
        assert diverged.status == "diverged" and diverged.optimizer_state is None


def test_state_survives_the_json_round_trip_and_is_validated() -> None:
    task = Task(data=regression, layers=(4, 1), optimizer="adam", epochs=2, keep_optimizer_state=True)
    (out,) = train_batched(task, [Hyper(seed=0, lr=1e-2)])
    result = ConfigResult.of({"seed": 0}, out)
    assert ConfigResult.from_json(result.to_json()).optimizer_state == out.optimizer_state
    with pytest.raises(InvalidParameterError, match="keep_optimizer_state"):
        Task(data=regression, layers=(4, 1), keep_optimizer_state="yes")  # type: ignore[arg-type]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_layer_tensors_cuts_the_parameters_to_vector_layout(dtype: str) -> None:
    from torch.nn.utils import parameters_to_vector

    from decaylab.engine.semantics import layer_tensors
    from decaylab.engine.sequential import build_model

    task = Task(data=blobs, layers=(5, 7, 4, 3), loss="cross_entropy", init="torch", dtype=dtype)
    model = build_model(task, Hyper(seed=3, lr=0.1))
    linears = [m for m in model if isinstance(m, torch.nn.Linear)]
    cut = layer_tensors(task, parameters_to_vector(model.parameters()).tolist())
    assert len(cut) == len(linears)
    for (W, b), linear in zip(cut, linears, strict=True):
        assert W.dtype == b.dtype == linear.weight.dtype  # the task's dtype: a float64 v̂ of 1e-46 stays nonzero
        assert torch.equal(W, linear.weight.detach()) and torch.equal(b, linear.bias.detach())
    with pytest.raises(InvalidParameterError, match="vector"):
        layer_tensors(task, [0.0] * 10)
