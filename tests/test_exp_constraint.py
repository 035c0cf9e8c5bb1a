"""``constraint``: projected GD on ‖w‖ ≤ θ(λ) reaches the ridge solution of λ; θ(λ) decreases."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from decaylab.closed_form import hessian_eigs, ridge
from decaylab.data.sparse import sparse_linear_data
from decaylab.engine import Hyper, run_chunk
from decaylab.lab.experiments import get_experiment
from decaylab.results import ConfigResult

EXP = get_experiment("constraint")


pytestmark = pytest.mark.usefixtures("one_thread")  # small matrices: see decaylab.threads


def opts_with(**over: str) -> dict[str, Any]:
    texts = {o.name: o.default for o in EXP.options} | over
    return {o.name: o.parse(texts[o.name], o.flag, EXP.name) for o in EXP.options}


@pytest.mark.claim
def test_claim_projected_gd_equals_ridge_and_theta_decreases() -> None:
    opts = opts_with(lambd="0.003,0.05,0.5,5,50", epochs="600", seed="0,1")
    configs = EXP.configs(opts)
    results = [ConfigResult.of(c, o) for c, o in zip(configs, EXP.run_chunk(opts, configs, "batched"), strict=True)]
    for r in results:
        m = r.metrics
        assert m["dist_to_ridge"] < 1e-9, r.params  # same w
        assert m["intercept_diff"] < 1e-9, r.params
        assert m["multiplier"] == pytest.approx(r.params["lambd"], rel=1e-6)  # and the multiplier is λ
        assert m["w_norm"] == pytest.approx(m["theta"], rel=1e-12)  # the constraint is active
        assert m["theta"] < m["theta_ols"]
    summary = EXP.summarize(results, opts)
    assert all(summary["claims"].values())
    for seed in ("0", "1"):
        assert summary["by_seed"][seed]["theta_decreasing"]


@pytest.mark.claim
def test_without_the_projection_the_claim_fails() -> None:
    """The check can fail: the same descent with a radius far above θ(λ) ends at OLS, not at ridge."""
    opts = opts_with(epochs="600")
    task = EXP.task(opts)
    data = task.data(0)
    w_ridge, _ = ridge(data.X_train, data.y_train, 0.5)
    lr = 1.0 / hessian_eigs(data.X_train)[1]
    for radius in (1e6, None):
        (out,) = run_chunk(task, [Hyper(seed=0, lr=lr, radius=radius)], "batched")
        w = torch.tensor(out.weights[-1][:-1], dtype=torch.float64)
        assert float(torch.linalg.vector_norm(w - w_ridge)) > 1e-2


def test_ridge_reference_is_sklearn_ridge_with_alpha_n_lambda() -> None:
    from sklearn.linear_model import Ridge

    data = sparse_linear_data(1, 60, 0, 8, 8, correlation=0.5)
    X, y = data.X_train.numpy(), data.y_train.numpy()
    for lam in (0.01, 1.0):
        w, b = ridge(X, y, lam)
        sk = Ridge(alpha=len(y) * lam).fit(X, y)
        np.testing.assert_allclose(w, sk.coef_, rtol=0, atol=1e-10)
        assert b == pytest.approx(sk.intercept_, abs=1e-10)


def test_sequential_engine_equals_batched() -> None:
    """--engine sequential (nn.Linear + torch.optim.SGD + the projection, one λ at a time) == --engine batched."""
    opts = opts_with(lambd="0.01,0.5,20", epochs="120", n_train="40", dim="5", correlation="0.3", seed="3")
    configs = EXP.configs(opts)
    batched = EXP.run_chunk(opts, configs, "batched")
    sequential = EXP.run_chunk(opts, configs, "sequential")
    for a, b in zip(sequential, batched, strict=True):
        np.testing.assert_allclose(a.curves["coef_pgd"], b.curves["coef_pgd"], rtol=0, atol=1e-12)
        np.testing.assert_allclose(a.curves["dist_to_ridge"], b.curves["dist_to_ridge"], rtol=0, atol=1e-12)
        assert a.metrics["multiplier"] > 0


def test_maxnorm_library_path_reaches_the_engines_iterates() -> None:
    """A user's loop — SGD(lr=1/L) + decaylab.attach(MaxNorm(θ)) on nn.Linear(d, 1) — gives the engine's
    iterates: for one output unit, MaxNorm's per-unit ball is the engine's joint ball ``Hyper(radius=θ)``."""
    from torch import nn

    from decaylab.rng import generator
    from decaylab.steps import MaxNorm, attach

    opts = opts_with(lambd="0.05,2", epochs="120", n_train="40", dim="5", correlation="0.3", seed="3")
    configs = EXP.configs(opts)
    engine = EXP.run_chunk(opts, configs, "batched")
    data = EXP.task(opts).data(3)
    X, y = data.X_train, data.y_train.reshape(-1, 1)
    w0 = torch.normal(0.0, 1.0, (5,), generator=generator(3, "init"), dtype=torch.float64)  # the init stream
    for out in engine:
        theta, w_ridge = out.metrics["theta"], torch.tensor(out.curves["coef_ridge"], dtype=torch.float64)
        model = nn.Linear(5, 1, dtype=torch.float64)
        with torch.no_grad():
            model.weight.copy_(w0.reshape(1, -1))
            model.bias.zero_()
        opt = torch.optim.SGD(model.parameters(), lr=1.0 / hessian_eigs(X)[1])
        dist = []
        with attach(opt, MaxNorm(theta, dim=0), model=model):  # one output unit: its whole weight vector
            for _ in range(opts["epochs"]):
                opt.zero_grad(set_to_none=True)
                ((model(X) - y) ** 2 / 2).mean().backward()
                opt.step()
                dist.append(float(torch.linalg.vector_norm(model.weight.detach().reshape(-1) - w_ridge)))
        np.testing.assert_allclose(model.weight.detach().reshape(-1).numpy(), out.curves["coef_pgd"], rtol=0, atol=1e-12)
        np.testing.assert_allclose(dist, out.curves["dist_to_ridge"], rtol=0, atol=1e-12)


def test_cli_json(cli_json: Any, tmp_path: Path) -> None:
    doc = cli_json("run", "constraint", "--lambd", "log:0.01:10:5", "--epochs", "400", "--out", str(tmp_path / "r"))
    assert doc["experiment"] == "constraint" and len(doc["configs"]) == 5
    assert doc["summary"]["claims"] == {
        "pgd_reaches_ridge": True, "multiplier_equals_lambda": True, "theta_decreasing_in_lambda": True
    }
    c = doc["configs"][0]
    assert len(c["curves"]["dist_to_ridge"]) == 400 and len(c["curves"]["coef_pgd"]) == 8
    assert (tmp_path / "r" / "constraint.png").stat().st_size > 0


@pytest.mark.parametrize(
    "args,message",
    [
        (["--n-train", "8"], "The '--n-train' parameter of constraint must be an int > dim=8"),
        (["--correlation", "1"], "The '--correlation' parameter of constraint must be a float in [0, 1). Got '1'."),
    ],
)
def test_bad_values_are_one_line_and_exit_2(cli: Any, args: list[str], message: str) -> None:
    code, out, err = cli("run", "constraint", "--no-figures", *args)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert message in err
