"""noise-tikhonov: SGD with fresh input noise σ reaches ridge(λ = σ²), D2L's convention (Bishop 1995)."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from decaylab.experiments.noise_tikhonov import NoiseTikhonov, reference_solutions, run_training, tikhonov_data

from experiment_helpers import train

SMALL = {"epochs": 60, "lr": 0.02, "batch_size": 10, "average": 0.5, "n_train": 200, "n_test": 50, "dim": 5}


def _opts(**kw: Any) -> dict[str, Any]:
    return {"sigma": [0.5, 1.0], "seed": [0], **SMALL, **kw}


def test_trained_weights_reach_ridge_at_sigma_squared_not_ols_nor_other_lambdas() -> None:
    exp = NoiseTikhonov()
    opts = _opts(sigma=[0.5, 1.0])
    results = train(exp, opts, "sequential")
    for r in results:
        m = r.metrics
        others = min(m["dist_ols"], m["dist_ridge_quarter"], m["dist_ridge_4x"])
        assert m["dist_ridge"] < 0.1 * others, (r.params, m)
        # the alternatives are far apart in the first place: the test can tell them apart
        assert m["ridge_ols_gap"] > 0.5
    summary = exp.summarize(results, opts)
    assert summary["claim_holds"] and summary["worst_closeness_ratio"] > 10


def test_without_noise_sgd_reaches_ols() -> None:
    data = tikhonov_data(1, 200, 50, 5)
    run = run_training(data, 0.0, 1, 150, 0.02, 10, 0.5)  # the feature of scale 1/2 converges slowest
    ols = reference_solutions(data.X_train, data.y_train, 0.0)["ols"]
    np.testing.assert_allclose(run["w_avg"], ols, atol=5e-3)


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


def test_loop_follows_the_engine_with_input_noise() -> None:
    """The focused loop (which also averages the iterates) takes the engine's steps: same streams, same math."""
    from decaylab.engine import Hyper, Task, train

    seed, sigma, epochs = 3, 0.8, 6
    task = Task(
        data=partial(tikhonov_data, n_train=200, n_test=50, dim=5),
        layers=(5, 1),
        batch_size=10,
        epochs=epochs,
        init="normal",
        init_std=0.01,
        noise=True,
    )
    (engine_out,) = train(task, [Hyper(seed=seed, lr=0.02, noise=sigma)], engine="sequential")
    mine = run_training(tikhonov_data(seed, 200, 50, 5), sigma, seed, epochs, 0.02, 10, 0.5)
    for key in ("train_loss", "test_loss", "w_norm"):
        np.testing.assert_allclose(mine[key], engine_out.curves[key], rtol=2e-5)


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
        (["--sigma", "-0.5"], "'--sigma' parameter of noise-tikhonov must be a float in [0, inf)"),
        (["--n-train", "5"], "'--n-train' parameter of noise-tikhonov must be an int > dim=5"),
    ],
)
def test_bad_values_are_one_line_and_exit_2(cli: Any, argv: list[str], message: str) -> None:
    code, out, err = cli("run", "noise-tikhonov", *argv)
    assert code == 2 and out == ""
    assert message in err and len(err.strip().splitlines()) == 1
