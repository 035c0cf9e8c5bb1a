"""The engine's float64 mode, norm-ball projection, kept weights, evaluation interval and empty test sets.

Batched must equal the sequential reference configuration by configuration; in float64 the tolerance
is 1e-12 relative, with the same absolute floor as ``tests/test_engine.py`` (1e-12 times the largest
value of that curve, for losses fitted far below where they started).
"""

from __future__ import annotations

import functools
import math
from functools import partial

import pytest
import torch
from torch.nn.utils import parameters_to_vector, vector_to_parameters

import engine_data
from decaylab.engine import Hyper, Task, run_chunk, train_batched, train_sequential
from decaylab.engine.sequential import build_model, data_loss
from decaylab.results import ConfigResult, Outcome
from decaylab.steps import L1Prox, MaxNorm, attach
from decaylab.validation import InvalidParameterError

RTOL64, FLOOR = 1e-12, 1e-3


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny kernels: see decaylab.threads


# ---------------------------------------------------------------- data (module level: picklable)
regression = engine_data.regression
blobs = engine_data.blobs
NO_TEST = partial(regression, n_test=0)
TWO_OUTPUTS = partial(regression, out=2)


# ---------------------------------------------------------------- comparison
def assert_close(got: list[Outcome], want: list[Outcome]) -> None:
    assert len(got) == len(want)
    for k, (a, b) in enumerate(zip(got, want, strict=True)):
        assert (a.status, a.diverged_epoch) == (b.status, b.diverged_epoch), k
        assert a.curves.keys() == b.curves.keys() and a.curves.get("epoch") == b.curves.get("epoch")
        series = {name: (a.curves[name], b.curves[name]) for name in b.curves}
        if b.weights is None:
            assert a.weights is None, k
        else:
            assert a.weights is not None and len(a.weights) == len(b.weights), k
            series.update({f"weights[{e}]": (x, y) for e, (x, y) in enumerate(zip(a.weights, b.weights, strict=True))})
        for name, (xs, ys) in series.items():
            assert len(xs) == len(ys), (k, name)
            floor = FLOOR * max((abs(v) for v in ys if not math.isnan(v)), default=0.0)
            for i, (x, y) in enumerate(zip(xs, ys, strict=True)):
                if math.isnan(y):
                    assert math.isnan(x), (k, name, i)
                elif x != y:  # (equal infinities pass)
                    assert abs(x - y) <= RTOL64 * max(abs(y), floor), (k, name, i, x, y)


def joint_norm(task: Task, theta: list[float]) -> float:
    """‖w‖₂ of the weight matrices together (biases excluded) of a kept parameter vector."""
    model = build_model(task, Hyper(seed=0, lr=1.0))
    vector_to_parameters(torch.tensor(theta, dtype=torch.float64), model.parameters())
    return math.sqrt(sum(float((m.weight.detach() ** 2).sum()) for m in model if isinstance(m, torch.nn.Linear)))


# ---------------------------------------------------------------- batched == sequential in float64
def _case(name: str) -> tuple[Task, list[Hyper]]:
    if name == "linear_prox_projection":  # ISTA and projected GD, as the sparsity / constraint experiments
        task = Task(data=regression, layers=(6, 1), epochs=40, init_std=0.5, dtype="float64", keep_weights="epochs")
        return task, [
            Hyper(seed=0, lr=0.05, l1=0.05),
            Hyper(seed=0, lr=0.05, l2=0.1, l1=0.02, radius=0.8),
            Hyper(seed=1, lr=0.08, radius=0.5),
            Hyper(seed=0, lr=0.05, radius=100.0),
            Hyper(seed=1, lr=0.02, l2=0.3),
        ]
    if name == "mlp_adamw_radius_decay_bias":
        task = Task(data=TWO_OUTPUTS, layers=(6, 10, 8, 2), activation="tanh", optimizer="adam", batch_size=8,
                    epochs=5, init="torch", dropout=True, noise=True, decay_bias=True, dtype="float64",
                    keep_weights="final")
        return task, [
            Hyper(seed=0, lr=3e-3, decoupled=0.1, radius=2.0, dropout=(0.2, 0.1), noise=0.2),
            Hyper(seed=1, lr=1e-2, l2=1e-2, l1=1e-3, dropout=(0.5, 0.0), noise=0.0),
            Hyper(seed=0, lr=1e-2, radius=1.0, dropout=(0.0, 0.3), noise=0.5),
            Hyper(seed=2, lr=3e-3, decoupled=1.0, l2=1e-3, radius=5.0, dropout=(0.1, 0.1), noise=0.1),
        ]
    if name == "mlp_momentum_cross_entropy_eval_every":
        task = Task(data=blobs, layers=(5, 12, 3), loss="cross_entropy", momentum=0.9, batch_size=6, epochs=7,
                    eval_every=3, init="torch", dtype="float64")
        return task, [
            Hyper(seed=0, lr=0.05, radius=1.5),
            Hyper(seed=1, lr=0.1, l2=1e-3, radius=3.0),
            Hyper(seed=0, lr=0.02, l1=1e-3),
            Hyper(seed=0, lr=0.05, decoupled=0.1, radius=0.5),
        ]
    raise KeyError(name)


CASES = ["linear_prox_projection", "mlp_adamw_radius_decay_bias", "mlp_momentum_cross_entropy_eval_every"]
@functools.cache
def _sequential(name: str) -> tuple[Task, list[Hyper], list[Outcome]]:
    """The case and its sequential reference outcomes, computed once per module."""
    task, hypers = _case(name)
    return task, hypers, train_sequential(task, hypers)


@pytest.mark.parametrize("chunk", [1, 3, None], ids=["chunk1", "chunk3", "chunkK"])
@pytest.mark.parametrize("name", CASES)
def test_float64_batched_equals_sequential(name: str, chunk: int | None) -> None:
    task, hypers, want = _sequential(name)
    assert all(o.status == "done" for o in want)
    assert_close(train_batched(task, hypers, chunk=chunk or len(hypers)), want)


def test_float64_is_float64_throughout() -> None:
    """The kept weights are not float32 numbers, and differ from a float32 run by more than float64 rounding."""
    task, hypers, want = _sequential("linear_prox_projection")
    as32 = train_batched(Task(**{**task.__dict__, "dtype": "float32"}), hypers)
    w64, w32 = want[1].weights[-1], as32[1].weights[-1]
    assert any(float(torch.tensor(v, dtype=torch.float32)) != v for v in w64)
    assert all(float(torch.tensor(v, dtype=torch.float32)) == v for v in w32)
    assert max(abs(a - b) for a, b in zip(w64, w32, strict=True)) > 1e-9


# ---------------------------------------------------------------- projection
def test_projection_is_enforced_and_active() -> None:
    task, hypers, want = _sequential("linear_prox_projection")
    for h, out in zip(hypers, want, strict=True):
        if h.radius is None:
            continue
        norms = [joint_norm(task, theta) for theta in out.weights]
        assert max(norms) <= h.radius * (1 + 1e-14)
        if h.radius < 1:  # below the unconstrained solution's norm: the iterates end on the sphere
            assert norms[-1] == pytest.approx(h.radius, rel=1e-14)


def test_joint_ball_includes_biases_only_with_decay_bias() -> None:
    task, hypers, want = _sequential("mlp_adamw_radius_decay_bias")  # decay_bias: weights and biases together
    for h, out in zip(hypers, want, strict=True):
        if h.radius is not None:
            assert float(torch.tensor(out.weights[-1]).norm()) <= h.radius * (1 + 1e-14)
    free = Task(**{**task.__dict__, "decay_bias": False})
    (out,) = train_batched(free, [hypers[2]])
    assert joint_norm(free, out.weights[-1]) <= hypers[2].radius * (1 + 1e-14)
    assert float(torch.tensor(out.weights[-1]).norm()) > hypers[2].radius  # biases are outside the ball


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_large_radius_changes_nothing(dtype: str) -> None:
    task = Task(data=regression, layers=(6, 8, 1), batch_size=10, epochs=6, dtype=dtype, keep_weights="final")
    free = [Hyper(seed=0, lr=0.05, l2=0.01), Hyper(seed=1, lr=0.05)]
    loose = [Hyper(seed=h.seed, lr=h.lr, l2=h.l2, radius=1e6) for h in free]
    for engine in ("batched", "sequential"):
        for a, b in zip(run_chunk(task, loose, engine), run_chunk(task, free, engine), strict=True):
            assert a.curves == b.curves and a.weights == b.weights  # bit for bit


def test_projection_equals_maxnorm_on_one_output_unit() -> None:
    """For a linear model with one output, the joint ball is decaylab.MaxNorm's ball of that unit:
    the engine equals nn.Linear + torch.optim.SGD + attach(L1Prox, MaxNorm) written out by hand."""
    epochs, seed = 30, 3
    task = Task(data=regression, layers=(6, 1), epochs=epochs, init_std=1.0, dtype="float64", keep_weights="epochs")
    hyper = Hyper(seed=seed, lr=0.05, l1=0.02, radius=0.7)
    data = regression(seed)
    model = build_model(task, hyper)
    opt = torch.optim.SGD(model.parameters(), lr=hyper.lr)
    handle = attach(opt, L1Prox(hyper.l1), MaxNorm(hyper.radius, dim=0), model=model)
    path = []
    for _ in range(epochs):
        opt.zero_grad(set_to_none=True)
        data_loss(task, model(data.X_train), data.y_train).backward()
        opt.step()
        path.append(parameters_to_vector(model.parameters()).detach().tolist())
    handle.detach()
    for engine in ("batched", "sequential"):
        (out,) = run_chunk(task, [hyper], engine)
        assert_close([Outcome(weights=out.weights)], [Outcome(weights=path)])


# ---------------------------------------------------------------- kept weights
def test_kept_weights_are_the_sequential_models_parameters() -> None:
    """weights[-1] is parameters_to_vector of the model; loaded into build_model's model it gives the final losses."""
    task, hypers = _case("mlp_adamw_radius_decay_bias")
    for h, out in zip(hypers, train_batched(task, hypers), strict=True):
        assert len(out.weights) == 1
        model = build_model(task, h)
        assert len(out.weights[0]) == sum(p.numel() for p in model.parameters())
        vector_to_parameters(torch.tensor(out.weights[-1], dtype=torch.float64), model.parameters())
        model.eval()
        data = TWO_OUTPUTS(h.seed)
        with torch.no_grad():
            loss = float(data_loss(task, model(data.X_train), data.y_train))
        assert loss == pytest.approx(out.metrics["train_loss"], rel=1e-12)


def test_epochs_keeps_one_vector_per_epoch_whatever_eval_every() -> None:
    task, hypers, want = _sequential("linear_prox_projection")
    assert all(len(o.weights) == task.epochs for o in want)
    sparse = Task(**{**task.__dict__, "eval_every": 7})
    got = train_batched(sparse, hypers)
    for a, b in zip(got, train_batched(task, hypers), strict=True):
        assert a.weights == b.weights  # evaluating less often changes no parameter
    assert_close(got, train_sequential(sparse, hypers))


def test_keeping_weights_changes_no_number() -> None:
    task, hypers = _case("mlp_adamw_radius_decay_bias")
    for engine in ("batched", "sequential"):
        plain = run_chunk(Task(**{**task.__dict__, "keep_weights": "none"}), hypers, engine)
        kept = run_chunk(task, hypers, engine)
        for a, b in zip(plain, kept, strict=True):
            assert a.weights is None and a.curves == b.curves


def test_weights_round_trip_through_json_and_old_results_load() -> None:
    _, _, want = _sequential("mlp_adamw_radius_decay_bias")
    result = ConfigResult.of({"seed": 0}, want[0])
    doc = result.to_json()
    assert doc["weights"] == want[0].weights
    assert ConfigResult.from_json(doc) == result
    old = {k: v for k, v in doc.items() if k != "weights"}  # stored before weights existed
    assert ConfigResult.from_json(old).weights is None
    assert "weights" not in ConfigResult.of({"seed": 0}, Outcome()).to_json()


def test_a_diverged_configuration_keeps_no_weights() -> None:
    task = Task(data=regression, layers=(6, 1), epochs=6, eval_every=4, dtype="float64", keep_weights="epochs")
    hypers = [Hyper(seed=0, lr=0.05, radius=1.0), Hyper(seed=0, lr=1e100)]
    got, want = train_batched(task, hypers), train_sequential(task, hypers)
    assert got[1].status == want[1].status == "diverged"
    assert got[1].diverged_epoch == want[1].diverged_epoch == 4  # found at the first evaluation
    assert got[1].weights is None and want[1].weights is None
    assert got[1].curves["epoch"] == [4, 6] and math.isnan(got[1].curves["train_loss"][1])
    assert_close(got, want)


# ---------------------------------------------------------------- evaluation interval, empty test set
@pytest.mark.parametrize("engine", ["batched", "sequential"])
def test_eval_every_measures_the_same_numbers_at_fewer_epochs(engine: str) -> None:
    task, hypers = _case("mlp_momentum_cross_entropy_eval_every")
    every = run_chunk(Task(**{**task.__dict__, "eval_every": 1}), hypers, engine)
    some = run_chunk(task, hypers, engine)
    assert task.eval_epochs == (3, 6, 7)
    for a, b in zip(some, every, strict=True):
        assert a.curves["epoch"] == [3, 6, 7]
        for name in a.curves:
            assert a.curves[name] == [b.curves[name][e - 1] for e in (3, 6, 7)], name  # bit for bit
        assert a.metrics == b.metrics


def test_eval_epochs() -> None:
    base = {"data": regression, "layers": (6, 1)}
    assert Task(**base, epochs=4).eval_epochs == (1, 2, 3, 4)
    assert Task(**base, epochs=10, eval_every=5).eval_epochs == (5, 10)
    assert Task(**base, epochs=3, eval_every=10).eval_epochs == (3,)


def test_an_empty_test_set_is_not_divergence() -> None:
    task = Task(data=NO_TEST, layers=(6, 1), epochs=5, dtype="float64")
    hypers = [Hyper(seed=0, lr=0.05, radius=0.5), Hyper(seed=1, lr=0.05)]
    got, want = train_batched(task, hypers), train_sequential(task, hypers)
    for out in got + want:
        assert out.status == "done" and all(math.isnan(v) for v in out.curves["test_loss"])
        assert all(math.isfinite(v) for v in out.curves["train_loss"])
    assert_close(got, want)


# ---------------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dtype": "float16"}, "The 'dtype' parameter of Task must be one of {'float32', 'float64'}. Got 'float16'."),
        ({"keep_weights": True}, "The 'keep_weights' parameter of Task must be one of {'none', 'final', 'epochs'}"),
        ({"eval_every": 0}, "The 'eval_every' parameter of Task must be an int in [1, inf). Got 0."),
    ],
)
def test_task_validation(kwargs: dict, message: str) -> None:
    with pytest.raises(InvalidParameterError) as err:
        Task(data=regression, layers=(6, 1), **kwargs)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


@pytest.mark.parametrize("radius", [0.0, -1.0, math.inf, math.nan, "big", True])
def test_radius_validation(radius: object) -> None:
    with pytest.raises(InvalidParameterError) as err:
        Hyper(seed=0, lr=0.1, radius=radius)
    assert str(err.value) == (
        f"The 'radius' parameter of Hyper must be None (no constraint) or a float in (0, inf). Got {radius!r}."
    )


def test_radius_none_is_the_default_and_a_number_is_a_float() -> None:
    assert Hyper(seed=0, lr=0.1).radius is None
    assert Hyper(seed=0, lr=0.1, radius=2).radius == 2.0 and isinstance(Hyper(seed=0, lr=0.1, radius=2).radius, float)
