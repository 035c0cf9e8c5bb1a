"""noise-tikhonov: SGD with fresh input noise σ reaches ridge(λ = σ²), D2L's convention (Bishop 1995)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from decaylab.lab.experiments.noise_tikhonov import (
    INIT_STD,
    NoiseTikhonov,
    first_averaged_epoch,
    reference_solutions,
    tikhonov_data,
)
from decaylab.rng import generator
from experiment_helpers import train

SMALL = {"epochs": 60, "lr": 0.02, "batch_size": 10, "average": 0.5, "n_train": 200, "n_test": 50, "dim": 5}


def _opts(**kw: Any) -> dict[str, Any]:
    return {"sigma": [0.5, 1.0], "seed": [0], **SMALL, **kw}


@pytest.mark.claim
def test_trained_weights_reach_ridge_at_sigma_squared_not_ols_nor_other_lambdas() -> None:
    exp = NoiseTikhonov()
    opts = _opts(sigma=[0.5, 1.0])
    results = train(exp, opts)
    for r in results:
        m = r.metrics
        others = min(m["dist_ols"], m["dist_ridge_quarter"], m["dist_ridge_4x"])
        assert m["dist_ridge"] < 0.1 * others, (r.params, m)
        # the alternatives are far apart in the first place: the test can tell them apart
        assert m["ridge_ols_gap"] > 0.5
    summary = exp.summarize(results, opts)
    assert summary["claim_holds"] and summary["worst_closeness_ratio"] > 10


@pytest.mark.claim
def test_without_noise_sgd_reaches_ols() -> None:
    opts = _opts(sigma=[0.0], seed=[1], epochs=150)  # the feature of scale 1/2 converges slowest
    (result,) = train(NoiseTikhonov(), opts)
    np.testing.assert_allclose(result.curves["coef_avg"], result.curves["coef_ols"], atol=5e-3)


@pytest.mark.parametrize("sigma", [0.0, 0.5, 1.5])
def test_closed_form_ridge_is_sklearn_ridge_with_alpha_n_sigma_squared(sigma: float) -> None:
    from sklearn.linear_model import Ridge

    data = tikhonov_data(2, 200, 50, 5)
    X, y = data.X_train.double().numpy(), data.y_train.double().numpy().reshape(-1)
    refs = reference_solutions(data.X_train, data.y_train, sigma)
    if sigma == 0:
        from sklearn.linear_model import LinearRegression

        expected = LinearRegression().fit(X, y).coef_
    else:
        expected = Ridge(alpha=len(y) * sigma**2, solver="svd").fit(X, y).coef_
    np.testing.assert_allclose(refs["ridge"], expected, rtol=1e-8, atol=1e-10)


def plain_sgd(seed: int, sigma: float, opts: dict[str, Any]) -> dict[str, Any]:
    """The experiment written out with nn.Linear, torch.optim.SGD and AveragedModel, noise added by hand.

    Same streams as the engine (``decaylab.rng``): init w ~ N(0, 0.01²), b = 0; a randperm per epoch;
    ``x + σ·randn`` per minibatch. Averaged in float64 from the first step of the averaged epochs.
    """
    from torch.optim.swa_utils import AveragedModel

    data = tikhonov_data(seed, opts["n_train"], opts["n_test"], opts["dim"])
    init, order, noise = generator(seed, "init"), generator(seed, "order"), generator(seed, "noise")
    model = torch.nn.Linear(opts["dim"], 1)
    with torch.no_grad():
        model.weight.copy_(torch.normal(0.0, INIT_STD, (opts["dim"], 1), generator=init).T)
        model.bias.zero_()
    opt = torch.optim.SGD(model.parameters(), lr=opts["lr"])
    averaged = AveragedModel(model).double()
    first = first_averaged_epoch(opts["epochs"], opts["average"])
    curves: dict[str, list[float]] = {"train_loss": [], "test_loss": []}
    for epoch in range(1, opts["epochs"] + 1):
        perm = torch.randperm(opts["n_train"], generator=order)
        for idx in perm.split(opts["batch_size"]):
            x = data.X_train[idx]
            x = x + sigma * torch.randn(x.shape, generator=noise)
            opt.zero_grad()
            ((model(x) - data.y_train[idx]) ** 2 / 2).mean().backward()
            opt.step()
            if epoch >= first:
                averaged.update_parameters(model)
        with torch.no_grad():
            for split in ("train", "test"):
                X, y = getattr(data, f"X_{split}"), getattr(data, f"y_{split}")
                curves[f"{split}_loss"].append(float(((model(X) - y) ** 2 / 2).mean()))
    return {
        "coef_avg": averaged.module.weight.detach().reshape(-1).tolist(),
        "coef_last": model.weight.detach().reshape(-1).double().tolist(),
        "n_averaged": int(averaged.n_averaged),
        **curves,
    }


@pytest.mark.parametrize("engine", ["batched", "sequential"])
def test_experiment_equals_a_plain_sgd_loop_with_averaged_model(engine: str) -> None:
    opts = _opts(sigma=[0.0, 0.8], seed=[3], epochs=8, average=0.25)
    exp = NoiseTikhonov()
    for result in train(exp, opts, engine):
        mine = plain_sgd(result.params["seed"], result.params["sigma"], opts)
        assert mine["n_averaged"] == 2 * 20  # the last 2 of 8 epochs, 200 / 10 steps each
        for key in ("coef_avg", "coef_last", "train_loss", "test_loss"):
            np.testing.assert_allclose(result.curves[key], mine[key], rtol=1e-5, atol=1e-6, err_msg=key)
        data = tikhonov_data(3, 200, 50, 5)
        refs = reference_solutions(data.X_train, data.y_train, result.params["sigma"])
        dist = float(np.linalg.norm(np.asarray(mine["coef_avg"]) - refs["ridge"]))
        assert result.metrics["dist_ridge"] == pytest.approx(dist, rel=1e-4)


@pytest.mark.parametrize(
    ("epochs", "average", "first"), [(150, 0.5, 76), (30, 0.1, 28), (10, 1.0, 1), (10, 0.01, 10), (7, 0.5, 4)]
)
def test_first_averaged_epoch(epochs: int, average: float, first: int) -> None:
    """The last ceil(average·epochs) epochs, at least one; 0.1·30 = 3.0000000000000004 counts as 3."""
    assert first_averaged_epoch(epochs, average) == first


def test_cli_json_document(cli_json: Any, tmp_path: Path) -> None:
    doc = cli_json(
        "run", "noise-tikhonov", "--sigma", "0,0.75", "--seed", "0,1", "--epochs", "40", "--out", "nt", "--quiet"
    )
    assert doc["experiment"] == "noise-tikhonov" and len(doc["configs"]) == 4
    for config in doc["configs"]:
        assert {"sigma", "seed"} <= set(config["params"])
        assert len(config["curves"]["coef_avg"]) == 5 and len(config["curves"]["train_loss"]) == 40
    summary = doc["summary"]
    assert [row["sigma"] for row in summary["by_sigma"]] == [0.0, 0.75]
    row = summary["by_sigma"][1]
    assert row["lambd"] == 0.5625 and row["dist_ridge"] < row["dist_ols"] / 10
    assert summary["claim_holds"] and summary["verdict"].startswith("holds")
    for name in ("coefficients.png", "distances.png", "results.json"):
        assert (tmp_path / "nt" / name).stat().st_size > 0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--average", "1.5"], "The '--average' parameter of noise-tikhonov must be a float in (0, 1]. Got 1.5."),
        (["--sigma", "-0.5"], "'--sigma' parameter of noise-tikhonov must be a float in [0, 1e+18]"),
        (["--n-train", "5"], "'--n-train' parameter of noise-tikhonov must be an int > dim=5"),
    ],
)
def test_bad_values_are_one_line_and_exit_2(cli: Any, argv: list[str], message: str) -> None:
    code, out, err = cli("run", "noise-tikhonov", "--no-figures", *argv)
    assert code == 2 and out == ""
    assert message in err and len(err.strip().splitlines()) == 1
