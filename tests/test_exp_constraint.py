"""``constraint``: projected GD on ‖w‖ ≤ θ(λ) reaches the ridge solution of λ; θ(λ) decreases."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from decaylab.closed_form import ridge
from decaylab.data.sparse import sparse_linear_data
from decaylab.experiments import get_experiment
from decaylab.experiments.constraint import multiplier, projected_gd_batched, projected_gd_sequential
from decaylab.results import ConfigResult

EXP = get_experiment("constraint")


pytestmark = pytest.mark.usefixtures("one_thread")  # small matrices: see decaylab.threads


def opts_with(**over: str) -> dict[str, Any]:
    texts = {o.name: o.default for o in EXP.options} | over
    return {o.name: o.parse(texts[o.name], o.flag, EXP.name) for o in EXP.options}


def test_claim_projected_gd_equals_ridge_and_theta_decreases() -> None:
    opts = opts_with(lambd="0.003,0.05,0.5,5,50", epochs="600", seed="0,1")
    configs = EXP.configs(opts)
    results = [ConfigResult.of(c, o) for c, o in zip(configs, EXP.run_chunk(opts, configs, "batched"))]
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


def test_without_the_projection_the_claim_fails() -> None:
    """The check can fail: the same descent with a radius far above θ(λ) ends at OLS, not at ridge."""
    data = sparse_linear_data(0, 60, 0, 8, 8, correlation=0.5)
    w_ridge, _ = ridge(data.X_train, data.y_train, 0.5)
    w0 = torch.zeros(8, dtype=torch.float64)
    W, _, _ = projected_gd_batched(data.X_train, data.y_train, w0, [1e6], w_ridge.reshape(1, -1), 600)
    assert float(torch.linalg.vector_norm(W[0] - w_ridge)) > 1e-2


def test_ridge_reference_is_sklearn_ridge_with_alpha_n_lambda() -> None:
    from sklearn.linear_model import Ridge

    data = sparse_linear_data(1, 60, 0, 8, 8, correlation=0.5)
    X, y = data.X_train.numpy(), data.y_train.numpy()
    for lam in (0.01, 1.0):
        w, b = ridge(X, y, lam)
        sk = Ridge(alpha=len(y) * lam).fit(X, y)
        np.testing.assert_allclose(w, sk.coef_, rtol=0, atol=1e-10)
        assert b == pytest.approx(sk.intercept_, abs=1e-10)


def test_maxnorm_library_path_equals_batched_loop() -> None:
    """SGD + decaylab.attach(MaxNorm(θ)) one radius at a time == the stacked projected loop."""
    data = sparse_linear_data(3, 40, 0, 5, 5, correlation=0.3)
    w0 = torch.randn(5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    thetas = [0.5, 2.0]
    ref = torch.zeros(2, 5, dtype=torch.float64)
    W, b, dist = projected_gd_batched(data.X_train, data.y_train, w0, thetas, ref, 120)
    for k, theta in enumerate(thetas):
        w, bias, d = projected_gd_sequential(data.X_train, data.y_train, w0, theta, ref[k], 120)
        torch.testing.assert_close(w, W[k], rtol=0, atol=1e-12)
        assert bias == pytest.approx(float(b[k]), abs=1e-12)
        torch.testing.assert_close(d, dist[:, k], rtol=0, atol=1e-12)
        assert multiplier(data.X_train, data.y_train, w, bias) > 0


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
    code, out, err = cli("run", "constraint", *args)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert message in err
