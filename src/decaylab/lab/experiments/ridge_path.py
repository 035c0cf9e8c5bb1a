r"""``ridge-path``: the exact ridge path for hundreds of λ from one SVD, λ chosen by LOO / GCV.

Ridge in D2L's convention, the intercept ``b`` unpenalized:

.. code-block:: text

    w(λ), b(λ) = argmin (1/n) Σ (xᵢᵀw + b − yᵢ)²/2 + λ/2·‖w‖²   =  sklearn Ridge(alpha = n·λ)

With the centred ``X_c = U S Vᵀ`` (one thin SVD) every point of the path is

.. code-block:: text

    w(λ)  = V diag(s_j/(s_j² + nλ)) Uᵀ y_c,        b(λ) = ȳ − x̄ᵀ w(λ)
    df(λ) = Σ_j s_j²/(s_j² + nλ)                    (effective degrees of freedom; intercept not counted)
    H(λ)  = 11ᵀ/n + U diag(s_j²/(s_j² + nλ)) Uᵀ      (hat matrix, ŷ = H y)
    LOO(λ) = (1/n) Σ_i (r_i/(1 − H_ii))²             (exact leave-one-out error at fixed α = nλ)
    GCV(λ) = (1/n) ‖r‖² / (1 − tr H/n)²              (generalized cross-validation, tr H = df + 1)

with residuals ``r = y − ŷ`` (:func:`decaylab.closed_form.ridge_gcv`; Allen 1974, Golub, Heath & Wahba 1979,
ESL §3.4.1 and §7.10). λ is chosen by the smallest LOO error (and, for comparison, the smallest GCV).

The check is scikit-learn's ``RidgeCV(alphas = n·λ_grid)``: its default ``cv=None`` is the same efficient
leave-one-out (scikit-learn calls it "GCV", but its score is the exact LOO mean squared error, not the GCV
formula above). It must choose the same grid point, with coefficients equal to 1e-6, and its stored
per-sample LOO errors must average to our LOO curve.

Data (``--data``): scikit-learn's bundled diabetes set (442 × 10, offline) by default; ``synthetic`` draws
:func:`decaylab.data.sparse.sparse_linear_data` (dense truth, AR(1) correlation 0.5, noise σ = 3) from each
seed; or a CSV file of numbers whose last column is the target (a header row is allowed; read by
:func:`decaylab.data.csvfile.read_numeric_csv`, which names the row and column of any bad cell). With
``--standardize yes`` each feature is z-scored (population std) first, so λ is on the scale of the
features' unit variance; scikit-learn sees the same matrix.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from decaylab.lab.experiments.base import (
    Experiment,
    Option,
    Table,
    check_data_budget,
    choice,
    float_grid,
    holds_text,
    positive_int,
    seed_grid,
    status_text,
)
from decaylab.results import ConfigResult, Outcome
from decaylab.validation import parameter_error

__all__ = ["RidgePath", "load_data", "ridgecv_reference"]

Progress = Callable[[int], None]


BUILTIN = ("diabetes", "synthetic")


SYNTHETIC_NOISE = 3.0


SYNTHETIC_CORRELATION = 0.5


PATH_POINTS = 5  # path points shown in the table


# -- data ----------------------------------------------------------------------------------------


MIN_ROWS = 3  # leave-one-out needs at least 3 examples to leave one out of a fit with an intercept


def _read_csv(path: str) -> tuple[Any, Any, list[str]]:
    """``(X, y, feature names)`` from a numeric CSV (last column = target, optional header row).

    Raises:
        CsvError: the problem, with its row and column (see :func:`decaylab.data.csvfile.read_numeric_csv`).
    """
    from decaylab.data.csvfile import read_numeric_csv

    table = read_numeric_csv(path, min_rows=MIN_ROWS, min_columns=2)
    names = table.names[:-1]
    return table.values[:, :-1], table.values[:, -1], names


def _data_option(text: str, name: str, owner: str) -> str:
    """``diabetes``, ``synthetic``, or a regular file holding a numeric CSV with >= 2 columns and >= 3 rows.

    Raises:
        InvalidParameterError: naming what is wrong with the file (which row, which column, why).
    """
    from decaylab.data.csvfile import MAX_CSV_BYTES, CsvError

    if text in BUILTIN:
        return text
    try:
        _read_csv(text)
    except CsvError as exc:
        allowed = (
            "one of {'diabetes', 'synthetic'} or a CSV file of finite numbers (last column = the target,"
            f" >= {MIN_ROWS} rows, >= 2 columns, an optional header row, <= {MAX_CSV_BYTES // 2**20} MiB):"
            f" {exc}"
        )
        raise parameter_error(name, owner, allowed, text) from None
    return text


def load_data(source: str, seed: int, n_train: int, dim: int, standardize: bool) -> tuple[Any, Any, list[str]]:
    """``(X, y, feature names)`` as NumPy float64, z-scored per feature when ``standardize``."""
    import numpy as np

    if source == "diabetes":
        from sklearn.datasets import load_diabetes

        bunch = load_diabetes()
        X, y, names = np.asarray(bunch.data, float), np.asarray(bunch.target, float), list(bunch.feature_names)
    elif source == "synthetic":
        from decaylab.data.sparse import sparse_linear_data

        data = sparse_linear_data(seed, n_train, 0, dim, dim, noise_std=SYNTHETIC_NOISE,
                                  correlation=SYNTHETIC_CORRELATION)
        X, y, names = data.X_train.numpy(), data.y_train.numpy(), [f"x{j}" for j in range(dim)]
    else:
        X, y, names = _read_csv(source)
    if standardize:
        std = X.std(axis=0)
        if (std == 0).any():
            constant = names[int(np.flatnonzero(std == 0)[0])]
            raise ValueError(f"feature {constant!r} is constant: it cannot be standardized (use --standardize no)")
        X = (X - X.mean(axis=0)) / std
    return X, y, names


def ridgecv_reference(X: Any, y: Any, alphas: Any) -> Any:
    """scikit-learn's ``RidgeCV(alphas, cv=None)`` fitted with its per-sample LOO errors stored."""
    import inspect

    from sklearn.linear_model import RidgeCV

    store = "store_cv_results" if "store_cv_results" in inspect.signature(RidgeCV).parameters else "store_cv_values"
    model = RidgeCV(alphas=alphas, fit_intercept=True, **{store: True}).fit(X, y)
    model.loo_errors_ = getattr(model, "cv_results_", None)
    if model.loo_errors_ is None:  # scikit-learn < 1.5
        model.loo_errors_ = model.cv_values_
    return model


# -- the experiment ------------------------------------------------------------------------------


class RidgePath(Experiment):
    name = "ridge-path"
    order = 70
    summary = "Exact ridge path for hundreds of lambda from one SVD; lambda by LOO/GCV; df(lambda); = sklearn RidgeCV."
    description = (
        "Claim: one SVD gives the whole ridge path, its exact leave-one-out error, GCV and effective degrees of"
        " freedom; the LOO choice of lambda is scikit-learn RidgeCV's (alpha = n*lambda) and the coefficients"
        " agree to 1e-6. Ridge: mean (y_hat-y)^2/2 + lambda/2*||w||^2 (D2L), intercept unpenalized. Default"
        " data: scikit-learn's diabetes (offline), features z-scored. Figure: ridge_path.png (coefficient paths"
        " with the chosen lambda, LOO and GCV error against lambda with RidgeCV's LOO errors, df(lambda))."
    )
    engines = ("sequential",)
    options = (
        Option("lambd", float_grid(low=0.0, low_open=True), "log:1e-5:1e3:300",
               "lambda grid (> 0) of mean (y_hat-y)^2/2 + lambda/2*||w||^2 (sklearn alpha = n*lambda)", "GRID"),
        Option("data", _data_option, "diabetes",
               "'diabetes' (bundled), 'synthetic' (seeded), or a CSV file whose last column is the target", "DATA"),
        Option("standardize", choice("yes", "no"), "yes", "z-score each feature first"),
        Option("n_train", positive_int, "100", "examples of --data synthetic", "N"),
        Option("dim", positive_int, "20", "features of --data synthetic", "D"),
        Option("seed", seed_grid, "0", "seed(s) of --data synthetic (a fixed data set takes one seed)", "SEEDS"),
    )

    def check(self, opts: dict[str, Any]) -> None:
        if opts["data"] == "synthetic":
            check_data_budget(opts, self.name, ("n_train",), "dim", itemsize=8)
        elif opts["data"] != "diabetes" and opts["standardize"] == "yes":
            try:  # a constant column would fail only inside the run: refuse it here
                load_data(opts["data"], 0, opts["n_train"], opts["dim"], True)
            except ValueError as exc:
                raise parameter_error("--standardize", self.name, f"'no' for this file: {exc}", "yes") from None
        if opts["data"] != "synthetic" and len(opts["seed"]) > 1:
            raise parameter_error(
                "--seed", self.name, f"a single seed with --data {opts['data']} (the data are fixed)",
                ",".join(map(str, opts["seed"])),
            )

    def configs(self, opts: dict[str, Any]) -> list[dict[str, Any]]:
        return [{"data": opts["data"], "seed": seed} for seed in opts["seed"]]

    def chunk_size(self, opts: dict[str, Any], n_configs: int, engine: str) -> int:
        return max(n_configs, 1)  # each configuration is one whole path; they are cheap

    def run_chunk(
        self,
        opts: dict[str, Any],
        configs: Sequence[dict[str, Any]],
        engine: str,
        progress: Progress | None = None,
    ) -> list[Outcome]:
        outcomes = []
        for config in configs:
            outcomes.append(self._path(opts, config))
            if progress is not None:
                progress(1)
        return outcomes

    @staticmethod
    def _path(opts: dict[str, Any], config: dict[str, Any]) -> Outcome:
        import numpy as np

        from decaylab.closed_form import ridge_gcv

        X, y, names = load_data(config["data"], config["seed"], opts["n_train"], opts["dim"],
                                opts["standardize"] == "yes")
        n = X.shape[0]
        lambdas = np.asarray(opts["lambd"], dtype=np.float64)
        path = ridge_gcv(X, y, lambdas)  # one SVD: coefficients, df, LOO and GCV at every λ
        i_loo, i_gcv = int(np.nanargmin(path.loo_mse)), int(np.nanargmin(path.gcv))
        sk = ridgecv_reference(X, y, path.alphas)
        sk_loo = np.asarray(sk.loo_errors_).reshape(n, -1).mean(axis=0)
        i_sk = int(np.flatnonzero(path.alphas == sk.alpha_)[0])
        norms = np.sqrt((path.coefs**2).sum(axis=1))
        metrics = {
            "n_samples": float(n),
            "n_features": float(X.shape[1]),
            "lambda_loo": float(lambdas[i_loo]),
            "alpha_loo": float(path.alphas[i_loo]),
            "df_loo": float(path.df[i_loo]),
            "loo_min": float(path.loo_mse[i_loo]),
            "gcv_at_loo": float(path.gcv[i_loo]),
            "w_norm_loo": float(norms[i_loo]),
            "lambda_gcv": float(lambdas[i_gcv]),
            "alpha_gcv": float(path.alphas[i_gcv]),
            "df_gcv": float(path.df[i_gcv]),
            "gcv_min": float(path.gcv[i_gcv]),
            "loo_at_gcv": float(path.loo_mse[i_gcv]),
            "w_norm_gcv": float(norms[i_gcv]),
            "loo_smallest_lambda": float(path.loo_mse[0]),
            "loo_largest_lambda": float(path.loo_mse[-1]),
            "choice_at_grid_edge": float(i_loo in (0, len(lambdas) - 1)),
            "sklearn_alpha": float(sk.alpha_),
            "sklearn_lambda": float(sk.alpha_) / n,
            "sklearn_loo": float(sk_loo[i_sk]),
            "same_choice": float(i_sk == i_loo),
            "coef_max_abs_diff": float(np.abs(path.coefs[i_loo] - sk.coef_).max()),
            "intercept_diff": float(abs(path.intercepts[i_loo] - sk.intercept_)),
            "loo_curve_max_rel_diff": float(np.max(np.abs(path.loo_mse - sk_loo) / path.loo_mse)),
        }
        curves: dict[str, list[float]] = {
            "lambd": lambdas.tolist(),
            "alpha": path.alphas.tolist(),
            "df": path.df.tolist(),
            "loo_mse": path.loo_mse.tolist(),
            "gcv": path.gcv.tolist(),
            "sklearn_loo_mse": sk_loo.tolist(),
            "w_norm": norms.tolist(),
            "coef_sklearn": np.asarray(sk.coef_, float).tolist(),
        }
        for j, name in enumerate(names):
            curves[f"coef[{name}]"] = path.coefs[:, j].tolist()
        return Outcome(status="done", metrics=metrics, curves=curves)

    # -- outputs ---------------------------------------------------------------------------------
    def table(self, results: Sequence[ConfigResult], opts: dict[str, Any]) -> Table:
        import numpy as np

        rows: list[list[Any]] = []
        several = len(results) > 1
        for r in results:
            if r.status != "done":
                rows.append([f"seed {r.params['seed']}: {status_text(r)}"] + [None] * 7)
                continue
            m, c = r.metrics, r.curves
            tag = f"seed {r.params['seed']}: " if several else ""
            lams = np.asarray(c["lambd"])
            sk = int(np.argmin(np.abs(lams - m["sklearn_lambda"])))

            def point(label: str, i: int, c: dict[str, Any] = c, m: dict[str, Any] = m, tag: str = tag) -> list[Any]:
                return [tag + label, c["lambd"][i], c["alpha"][i], c["df"][i], c["loo_mse"][i],
                        c["loo_mse"][i] - m["loo_min"], c["gcv"][i], c["w_norm"][i]]

            i_loo = int(np.nanargmin(c["loo_mse"]))
            i_gcv = int(np.nanargmin(c["gcv"]))
            rows.append(point("chosen by LOO (decaylab)", i_loo))
            rows.append(point("chosen by GCV (decaylab)", i_gcv))
            rows.append(point(f"RidgeCV (sklearn): same λ {'yes' if m['same_choice'] == 1 else 'NO'},"
                              f" max|Δw| {m['coef_max_abs_diff']:.1e}", sk))
            for i in np.unique(np.linspace(0, len(lams) - 1, PATH_POINTS).round().astype(int)):
                rows.append(point(f"path point {i + 1}/{len(lams)}", int(i)))
        return Table(
            ["", "λ (D2L)", "α = n·λ (sklearn)", "df(λ)", "LOO MSE", "LOO − min", "GCV", "‖w‖₂"],
            rows,
            title=(
                f"ridge-path on {opts['data']} ({'z-scored' if opts['standardize'] == 'yes' else 'raw'} features):"
                f" {len(opts['lambd'])} λ from one SVD; ridge mean (ŷ−y)²/2 + λ/2‖w‖², intercept unpenalized;"
                " LOO/GCV are mean squared errors (ŷ−y)²"
            ),
        )

    def summarize(self, results: Sequence[ConfigResult], opts: dict[str, Any]) -> dict[str, Any]:
        done = [r for r in results if r.status == "done"]
        keys = ("lambda_loo", "alpha_loo", "df_loo", "loo_min", "lambda_gcv", "alpha_gcv", "df_gcv", "gcv_min",
                "loo_smallest_lambda", "sklearn_alpha", "sklearn_lambda", "coef_max_abs_diff", "intercept_diff",
                "loo_curve_max_rel_diff", "n_samples", "n_features")
        by_config = [
            {"seed": r.params["seed"], **{k: r.metrics[k] for k in keys},
             "same_choice": r.metrics["same_choice"] == 1, "choice_at_grid_edge": r.metrics["choice_at_grid_edge"] == 1}
            for r in done
        ]
        first = by_config[0] if by_config else {}
        claims = {
            "same_choice_as_ridgecv": bool(by_config) and all(c["same_choice"] for c in by_config),
            "coefficients_match_ridgecv": bool(by_config) and all(c["coef_max_abs_diff"] <= 1e-6 for c in by_config),
            "loo_curve_matches_ridgecv": bool(by_config) and all(c["loo_curve_max_rel_diff"] <= 1e-8 for c in by_config),
        }
        return {
            "verdict": _verdict(by_config, claims),
            "conventions": {
                "lambda": "mean (ŷ−y)²/2 + λ/2‖w‖² (D2L), intercept unpenalized",
                "alpha": "sklearn Ridge/RidgeCV: ‖y − Xw − b‖² + α‖w‖², α = n·λ",
                "df": "Σ s_j²/(s_j² + α), intercept not counted",
                "loo_gcv": "mean squared error (ŷ−y)² (no 1/2)",
            },
            "data": opts["data"],
            "standardize": opts["standardize"] == "yes",
            "n_lambdas": len(opts["lambd"]),
            **first,
            "by_config": by_config,
            "claims": claims,
        }


def _verdict(by_config: list[dict[str, Any]], claims: dict[str, bool]) -> str:
    """The path from one SVD chooses λ as scikit-learn's RidgeCV does: the choice, and the largest differences."""
    if not by_config:
        return "one SVD gives RidgeCV's choice, coefficients and LOO errors: not tested (nothing finished)"
    c = by_config[0]
    seeds = f" (seed {c['seed']}; {len(by_config)} seeds)" if len(by_config) > 1 else ""
    worst_coef = max(x["coef_max_abs_diff"] for x in by_config)
    worst_loo = max(x["loo_curve_max_rel_diff"] for x in by_config)
    return (f"exact LOO picks λ = {c['lambda_loo']:.3g} (df {c['df_loo']:.3g}), GCV λ = {c['lambda_gcv']:.3g}{seeds};"
            f" RidgeCV picks the same λ: {'yes' if claims['same_choice_as_ridgecv'] else 'NO'},"
            f" max |Δw| = {worst_coef:.1e}, LOO curves agree to {worst_loo:.1e} (relative)"
            f" — {holds_text(all(claims.values()))}")
