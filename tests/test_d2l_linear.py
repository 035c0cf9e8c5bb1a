"""The claims of D2L's weight-decay experiment, and the agreement of its two implementations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from decaylab.data.synthetic import d2l_linear_data
from decaylab.lab.experiments.d2l_linear import (
    _initial_weights,
    concise_optimizer,
    scratch_step,
    train_concise,
    train_scratch,
)

DEFAULTS = dict(epochs=100, lr=0.003, batch_size=5)


def run(impl, lambd: float, seed: int, **kw):  # type: ignore[no-untyped-def]
    data = d2l_linear_data(seed)
    return impl(data, lambd, seed, **{**DEFAULTS, **kw})


def test_data_follow_the_seed() -> None:
    data = d2l_linear_data(0)
    assert data.X_train.shape == (20, 200) and data.X_test.shape == (100, 200)
    residual = data.y_test - (data.X_test @ data.true_w + data.true_b)
    assert residual.std().item() == pytest.approx(0.01, rel=0.3)  # eps ~ N(0, 0.01^2)
    assert torch.equal(d2l_linear_data(0).X_train, data.X_train)
    assert not torch.equal(d2l_linear_data(1).X_train, data.X_train)


@pytest.mark.claim
def test_without_decay_the_model_overfits() -> None:
    seed = 0
    out = run(train_scratch, 0.0, seed)
    assert out.metrics["train_loss"] < 1e-3
    assert out.metrics["test_loss"] > 1
    # SGD moves w only inside the row space of the 20 training rows: the component of the initial w in
    # the 180-dimensional null space is untouched, so ||w|| cannot fall below its norm (~ sqrt(180)).
    X = d2l_linear_data(seed).X_train.double()
    w0 = _initial_weights(seed, 200).double()
    null = torch.eye(200, dtype=torch.float64) - torch.linalg.pinv(X) @ X
    null_norm = torch.linalg.vector_norm(null @ w0).item()
    assert out.metrics["w_norm"] >= null_norm * (1 - 1e-4)
    assert out.metrics["w_norm"] == pytest.approx(torch.linalg.vector_norm(w0).item(), rel=0.1)
    assert null_norm == pytest.approx(np.sqrt(180), rel=0.15)


@pytest.mark.claim
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_decay_regularizes(seed: int) -> None:
    plain = run(train_scratch, 0.0, seed)
    decayed = run(train_scratch, 3.0, seed)
    assert decayed.metrics["w_norm"] < 1
    assert decayed.metrics["test_loss"] * 10 < plain.metrics["test_loss"]


@pytest.mark.parametrize("lambd", [0.0, 3.0])
def test_scratch_and_concise_follow_the_same_trajectory(lambd: float) -> None:
    a = run(train_scratch, lambd, 4, epochs=30)
    b = run(train_concise, lambd, 4, epochs=30)
    for key in ("train_loss", "test_loss", "w_norm"):
        np.testing.assert_allclose(a.curves[key], b.curves[key], rtol=1e-4, atol=1e-7)


@pytest.mark.claim
def test_the_batched_engine_follows_the_scratch_trajectories() -> None:
    from decaylab.engine import Hyper, run_chunk
    from decaylab.lab.experiments.d2l_linear import engine_task

    opts = {"n_train": 20, "n_test": 100, "dim": 200, "batch_size": 5, "epochs": 30}
    grid = [(0.0, 0), (3.0, 0), (1.0, 5)]
    outcomes = run_chunk(engine_task(opts), [Hyper(seed=s, lr=0.003, l2=lam) for lam, s in grid], "batched")
    for (lambd, seed), batched in zip(grid, outcomes, strict=True):
        scratch = run(train_scratch, lambd, seed, epochs=30)
        for key in ("train_loss", "test_loss", "w_norm"):
            np.testing.assert_allclose(batched.curves[key], scratch.curves[key], rtol=1e-4, atol=1e-7)


def test_scratch_step_decays_the_weight_and_never_the_bias() -> None:
    torch.manual_seed(0)
    X, y = torch.randn(5, 7, dtype=torch.float64), torch.randn(5, 1, dtype=torch.float64)
    w0, b0 = torch.randn(7, 1, dtype=torch.float64), torch.tensor([0.3], dtype=torch.float64)
    lr, lambd = 0.1, 2.5
    steps = {}
    for lam in (0.0, lambd):
        w, b = w0.clone().requires_grad_(True), b0.clone().requires_grad_(True)
        scratch_step(w, b, X, y, lam, lr)
        steps[lam] = (w.detach(), b.detach())
    # w <- (1 - eta*lambda) w - eta*grad: the decayed step differs by exactly eta*lambda*w0
    torch.testing.assert_close(steps[0.0][0] - steps[lambd][0], lr * lambd * w0)
    # b <- b - eta*grad: no lambda term at all
    torch.testing.assert_close(steps[0.0][1], steps[lambd][1], rtol=0, atol=0)
    # and the step itself is the closed form of the notes
    residual = X @ w0 + b0 - y
    torch.testing.assert_close(steps[lambd][0], (1 - lr * lambd) * w0 - lr / 5 * X.T @ residual)


def test_concise_optimizer_decays_only_the_weight() -> None:
    net = nn.Linear(3, 1).double()
    lambd, lr = 4.0, 0.05
    before = [p.detach().clone() for p in net.parameters()]
    opt = concise_optimizer(net, lambd, lr)
    for p in net.parameters():
        p.grad = torch.zeros_like(p)  # a zero data gradient isolates the decay term
    opt.step()
    torch.testing.assert_close(net.weight.detach(), (1 - lr * lambd) * before[0])
    torch.testing.assert_close(net.bias.detach(), before[1], rtol=0, atol=0)
