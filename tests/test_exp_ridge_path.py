"""``ridge-path``: one SVD gives the path, exact LOO, GCV and df; the LOO choice is scikit-learn RidgeCV's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from decaylab.lab.experiments import get_experiment
from decaylab.lab.experiments.ridge_path import load_data, ridgecv_reference
from decaylab.results import ConfigResult
from experiment_helpers import options, train

EXP = get_experiment("ridge-path")


@pytest.fixture(scope="module")
def diabetes() -> tuple[dict[str, Any], ConfigResult]:
    opts = options(EXP)  # the default: 300 λ on the bundled diabetes data
    return opts, train(EXP, opts, "sequential")[0]


@pytest.mark.claim
def test_claim_ridgecv_chooses_the_same_lambda_and_coefficients(diabetes: Any) -> None:
    opts, r = diabetes
    m = r.metrics
    assert m["same_choice"] == 1
    assert m["sklearn_lambda"] == pytest.approx(m["lambda_loo"], rel=1e-12)  # alpha_ / n = λ
    assert m["coef_max_abs_diff"] <= 1e-6 and m["intercept_diff"] <= 1e-6
    assert m["loo_curve_max_rel_diff"] <= 1e-8  # the whole LOO curve, not only its minimum
    assert m["choice_at_grid_edge"] == 0
    assert len(r.curves["lambd"]) == 300 and len(r.curves["coef[bmi]"]) == 300
    assert all(EXP.summarize([r], opts)["claims"].values())


@pytest.mark.claim
def test_wrong_conversion_would_be_caught(diabetes: Any) -> None:
    """The check can fail: RidgeCV given alpha = λ (forgetting n) picks a different λ."""
    opts, r = diabetes
    X, y, _ = load_data("diabetes", 0, 0, 0, True)
    wrong = ridgecv_reference(X, y, np.asarray(opts["lambd"]))
    assert not np.isclose(wrong.alpha_, r.metrics["lambda_loo"], rtol=1e-6)


def test_df_decreases_from_d_to_0_and_is_the_trace_of_the_hat_matrix(diabetes: Any) -> None:
    _, r = diabetes
    df = np.asarray(r.curves["df"])
    assert np.all(np.diff(df) < 0) and df[0] == pytest.approx(10, abs=1e-2) and df[-1] < 0.05
    X, _, _ = load_data("diabetes", 0, 0, 0, True)
    Xc = X - X.mean(axis=0)
    for i in (0, 150, 299):
        alpha = r.curves["alpha"][i]
        hat = Xc @ np.linalg.solve(Xc.T @ Xc + alpha * np.eye(10), Xc.T)
        assert np.trace(hat) == pytest.approx(df[i], rel=1e-10)


def test_loo_is_exact_leave_one_out_by_refitting() -> None:
    """Brute force on a small synthetic set: refit Ridge(alpha = n·λ) without each sample (α fixed)."""
    from sklearn.linear_model import Ridge

    opts = options(EXP, data="synthetic", n_train="30", dim="5", lambd="0.01,0.3")
    r = train(EXP, opts, "sequential")[0]
    X, y, _ = load_data("synthetic", 0, 30, 5, True)
    for i, lam in enumerate(opts["lambd"]):
        errors = []
        for k in range(len(y)):
            keep = np.arange(len(y)) != k
            model = Ridge(alpha=len(y) * lam).fit(X[keep], y[keep])
            errors.append((model.predict(X[k : k + 1])[0] - y[k]) ** 2)
        assert r.curves["loo_mse"][i] == pytest.approx(np.mean(errors), rel=1e-9)


def test_table_is_a_summary_not_the_path(diabetes: Any) -> None:
    opts, r = diabetes
    table = EXP.table([r], opts)
    assert len(table.rows) <= 10
    assert table.rows[0][0].startswith("chosen by LOO") and table.rows[2][0].startswith("RidgeCV")


def test_cli_json_and_csv_data(cli_json: Any, tmp_path: Path) -> None:
    X, y, names = load_data("diabetes", 0, 0, 0, False)
    csv = tmp_path / "diabetes.csv"
    np.savetxt(csv, np.column_stack([X, y]), delimiter=",", header=",".join(names + ["target"]), comments="")
    doc = cli_json("run", "ridge-path", "--data", str(csv), "--lambd", "log:1e-4:10:80", "--out", str(tmp_path / "r"))
    s = doc["summary"]
    assert s["n_lambdas"] == 80 and s["n_samples"] == 442 and s["n_features"] == 10
    assert s["claims"] == {"same_choice_as_ridgecv": True, "coefficients_match_ridgecv": True,
                           "loo_curve_matches_ridgecv": True}
    assert "coef[bmi]" in doc["configs"][0]["curves"]  # names from the CSV header
    assert (tmp_path / "r" / "ridge_path.png").stat().st_size > 0


@pytest.mark.parametrize(
    "args,message",
    [
        (["--data", "no-such-file.csv"], "The '--data' parameter of ridge-path must be one of {'diabetes', 'synthetic'}"),
        (["--seed", "0,1"], "The '--seed' parameter of ridge-path must be a single seed with --data diabetes"),
        (["--lambd", "0:1:5"], "The '--lambd' parameter of ridge-path must be a float in (0, 1e+18]"),
    ],
)
def test_bad_values_are_one_line_and_exit_2(cli: Any, args: list[str], message: str) -> None:
    code, out, err = cli("run", "ridge-path", "--no-figures", *args)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert message in err
