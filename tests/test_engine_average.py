"""Polyak–Ruppert iterate averaging (``Task.average_from`` → ``Outcome.averaged_weights``).

The sequential reference averages with PyTorch's own ``torch.optim.swa_utils.AveragedModel``; the
batched engine must give the same vector, configuration by configuration, within 1e-5 relative in
float32 and 1e-12 in float64 — relative to the vector's largest entry, ``‖a − b‖∞ ≤ rtol·‖b‖∞``: a
weight near 0 carries the rounding of the larger numbers it is computed from, so it is not held to
its own relative error. The curves are compared as in ``tests/test_engine.py`` (per value, floor
1e-3 of the curve's largest value).
"""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch

import engine_data
from decaylab.engine import Hyper, Task, run_chunk, train_batched, train_sequential
from decaylab.engine.chunking import PY_FLOAT_BYTES, bytes_per_config
from decaylab.results import ConfigResult, Outcome
from decaylab.validation import InvalidParameterError

FLOOR = 1e-3


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny kernels: see decaylab.threads


# ---------------------------------------------------------------- data (module level: picklable)
regression = partial(engine_data.regression, n_train=30, n_test=20, dim=4)
blobs = engine_data.blobs
TWO_OUTPUTS = partial(regression, out=2)


# ---------------------------------------------------------------- comparison
def assert_vectors_close(got: list[float], want: list[float], rtol: float, where: object) -> None:
    """``‖got − want‖∞ ≤ rtol·‖want‖∞``."""
    assert len(got) == len(want), where
    scale = max(abs(v) for v in want)
    worst = max(abs(x - y) for x, y in zip(got, want, strict=True))
    assert worst <= rtol * scale, (where, worst, scale)


def assert_curves_close(got: list[float], want: list[float], rtol: float, where: object) -> None:
    floor = FLOOR * max(abs(v) for v in want)
    for i, (x, y) in enumerate(zip(got, want, strict=True)):
        assert abs(x - y) <= rtol * max(abs(y), floor), (where, i, x, y)


def assert_averages_close(got: list[Outcome], want: list[Outcome], rtol: float) -> None:
    assert len(got) == len(want)
    for k, (a, b) in enumerate(zip(got, want, strict=True)):
        assert (a.status, a.diverged_epoch) == (b.status, b.diverged_epoch), k
        if b.averaged_weights is None:
            assert a.averaged_weights is None, k
            continue
        assert a.averaged_weights is not None, k
        assert_vectors_close(a.averaged_weights, b.averaged_weights, rtol, k)
        for name in b.curves:  # the curves too: averaging must not disturb training
            if name != "epoch":
                assert_curves_close(a.curves[name], b.curves[name], rtol, (k, name))


# ---------------------------------------------------------------- batched == AveragedModel
def _case(name: str) -> tuple[Task, list[Hyper]]:
    if name == "linear_input_noise":  # noise-tikhonov's setting: minibatch SGD on noisy inputs
        task = Task(data=regression, layers=(4, 1), batch_size=7, epochs=12, init_std=0.01, noise=True,
                    average_from=7, keep_weights="final")
        return task, [Hyper(seed=s, lr=0.05, noise=sig) for s in (0, 1) for sig in (0.0, 0.5, 1.5)]
    if name == "mlp_momentum_dropout_prox_radius":  # the average is taken after the L1 step and the projection
        task = Task(data=blobs, layers=(5, 12, 3), loss="cross_entropy", momentum=0.9, batch_size=8, epochs=6,
                    init="torch", dropout=True, eval_every=4, average_from=2)
        return task, [
            Hyper(seed=0, lr=0.05, l1=1e-3, dropout=(0.2,)),
            Hyper(seed=1, lr=0.1, l2=1e-2, radius=1.5, dropout=(0.5,)),
            Hyper(seed=0, lr=0.02, decoupled=0.1, radius=0.8, dropout=(0.0,)),
            Hyper(seed=2, lr=0.05, dropout=(0.3,)),
        ]
    if name == "mlp_adamw_full_batch":
        task = Task(data=TWO_OUTPUTS, layers=(4, 8, 2), activation="tanh", optimizer="adam", epochs=15,
                    init="torch", decay_bias=True, average_from=1)
        return task, [Hyper(seed=s, lr=lr, decoupled=wd) for s, lr, wd in [(0, 1e-2, 0.1), (1, 3e-3, 0.0), (0, 3e-2, 1.0)]]
    raise KeyError(name)


CASES = ["linear_input_noise", "mlp_momentum_dropout_prox_radius", "mlp_adamw_full_batch"]


@pytest.mark.parametrize("chunk", [1, 3, None], ids=["chunk1", "chunk3", "chunkK"])
@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_batched_average_equals_averaged_model(dtype: str, name: str, chunk: int | None) -> None:
    task, hypers = _case(name)
    task = Task(**{**task.__dict__, "dtype": dtype})
    want = train_sequential(task, hypers)
    assert all(o.status == "done" and o.averaged_weights is not None for o in want)
    got = train_batched(task, hypers, chunk=chunk or len(hypers))
    assert_averages_close(got, want, rtol=1e-5 if dtype == "float32" else 1e-12)


# ---------------------------------------------------------------- the mean it is
@pytest.mark.parametrize("engine", ["batched", "sequential"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_average_is_the_mean_of_the_iterates_from_its_epoch_on(engine: str, dtype: str) -> None:
    """Full batch: one step per epoch, so the per-epoch kept weights are the iterates; their mean by hand."""
    task = Task(data=regression, layers=(4, 3, 1), epochs=6, init="torch", dtype=dtype, keep_weights="epochs",
                average_from=3)
    hypers = [Hyper(seed=0, lr=0.1, l2=0.01), Hyper(seed=1, lr=0.05)]
    for out in run_chunk(task, hypers, engine):
        iterates = torch.tensor(out.weights, dtype=torch.float64)  # (6, n_params), float32 numbers exactly
        mean = (iterates[2:].sum(dim=0) / 4).tolist()  # epochs 3..6
        assert out.averaged_weights == pytest.approx(mean, rel=1e-14, abs=1e-15)
        assert out.averaged_weights != pytest.approx(iterates[-1].tolist(), rel=1e-6)  # not the last iterate
    last = Task(**{**task.__dict__, "average_from": task.epochs})
    for out in run_chunk(last, hypers, engine):
        assert out.averaged_weights == out.weights[-1]  # one iterate: its mean is itself, exactly


def test_the_average_counts_every_minibatch_step() -> None:
    """Three steps per epoch; average_from=E averages the last epoch's three iterates, by hand."""
    from decaylab.engine.batched import BatchedRun
    from decaylab.engine.semantics import epoch_batches, load_data

    task = Task(data=regression, layers=(4, 1), batch_size=10, epochs=3, dtype="float64", average_from=3)
    hyper = Hyper(seed=0, lr=0.05)
    run = BatchedRun(task, [hyper], {0: load_data(task, 0)})
    for _ in range(2):
        for idx in epoch_batches(30, 10, run.groups[0].order):
            run.train_step([idx])
    iterates = []
    for idx in epoch_batches(30, 10, run.groups[0].order):
        run.train_step([idx])
        iterates.append(run.parameter_vectors()[0])
    want = (torch.stack(iterates).sum(dim=0) / 3).tolist()
    for engine in ("batched", "sequential"):
        (out,) = run_chunk(task, [hyper], engine)
        assert out.averaged_weights == pytest.approx(want, rel=1e-13)


# ---------------------------------------------------------------- no side effects, divergence
@pytest.mark.parametrize("engine", ["batched", "sequential"])
def test_averaging_changes_no_other_number(engine: str) -> None:
    task, hypers = _case("linear_input_noise")
    plain = run_chunk(Task(**{**task.__dict__, "average_from": None}), hypers, engine)
    averaged = run_chunk(task, hypers, engine)
    for a, b in zip(plain, averaged, strict=True):
        assert a.averaged_weights is None and b.averaged_weights is not None
        assert a.curves == b.curves and a.metrics == b.metrics and a.weights == b.weights  # bit for bit


def test_a_diverged_configuration_gets_no_average() -> None:
    task = Task(data=regression, layers=(4, 1), batch_size=10, epochs=6, eval_every=3, average_from=2,
                keep_weights="final")
    hypers = [Hyper(seed=0, lr=0.05), Hyper(seed=0, lr=1e30), Hyper(seed=1, lr=0.02, radius=1.0)]
    got, want = train_batched(task, hypers), train_sequential(task, hypers)
    for out in (got[1], want[1]):
        assert out.status == "diverged" and out.diverged_epoch == 3
        assert out.averaged_weights is None and out.weights is None
    assert_averages_close(got, want, rtol=1e-5)
    alone = train_batched(task, [hypers[0], hypers[2]])
    assert [got[0].averaged_weights, got[2].averaged_weights] == [o.averaged_weights for o in alone]


# ---------------------------------------------------------------- validation, JSON, memory
@pytest.mark.parametrize("value", [0, -1, 6, 2.5, "last", True])
def test_average_from_validation(value: object) -> None:
    with pytest.raises(InvalidParameterError) as err:
        Task(data=regression, layers=(4, 1), epochs=5, average_from=value)
    assert str(err.value) == (
        f"The 'average_from' parameter of Task must be None (no averaging) or an int in [1, epochs=5]. Got {value!r}."
    )


def test_average_from_default_and_bounds() -> None:
    assert Task(data=regression, layers=(4, 1)).average_from is None
    assert Task(data=regression, layers=(4, 1), epochs=5, average_from=5).average_from == 5
    assert Task(data=regression, layers=(4, 1), epochs=5, average_from=1.0).average_from == 1


def test_average_round_trips_through_json_and_old_results_load() -> None:
    task, hypers = _case("linear_input_noise")
    (out,) = run_chunk(task, hypers[:1], "batched")
    result = ConfigResult.of({"seed": 0}, out)
    doc = result.to_json()
    assert doc["averaged_weights"] == out.averaged_weights and len(doc["averaged_weights"]) == 5
    assert ConfigResult.from_json(doc) == result
    old = {k: v for k, v in doc.items() if k != "averaged_weights"}  # stored before averaging existed
    assert ConfigResult.from_json(old).averaged_weights is None
    assert "averaged_weights" not in ConfigResult.of({"seed": 0}, Outcome()).to_json()


def test_the_chunk_planner_counts_the_float64_average() -> None:
    task, _ = _case("mlp_adamw_full_batch")
    plain = Task(**{**task.__dict__, "average_from": None})
    n_params = 4 * 8 + 8 + 8 * 2 + 2
    # the float64 running mean, and the Python list it is handed back as
    assert bytes_per_config(task, 30, 20) - bytes_per_config(plain, 30, 20) == (8 + PY_FLOAT_BYTES) * n_params
    assert math.isfinite(bytes_per_config(task, 30, 20))
