r"""``sparsity``: L1 gives exact zeros and finds the support; L2 only shrinks (seed 001).

A linear model ``ŷ = Xw + b`` is fitted to data with a sparse truth (:func:`decaylab.data.sparse.sparse_linear_data`:
``dim`` features, ``n_nonzero`` of them non-zero) by full-batch proximal gradient descent on one of

.. code-block:: text

    l1    (1/n) Σ (ŷ−y)²/2 + λ·‖w‖₁                         = sklearn Lasso / lasso_path(alpha=λ)
    enet  (1/n) Σ (ŷ−y)²/2 + λ·(ρ‖w‖₁ + (1−ρ)/2·‖w‖²)       = sklearn ElasticNet / enet_path(alpha=λ, l1_ratio=ρ)
    l2    (1/n) Σ (ŷ−y)²/2 + λ/2·‖w‖²                        = sklearn Ridge(alpha=n·λ)

(the intercept ``b`` is never penalized; scikit-learn's paths, which have no intercept, are computed on
the centred data, which is what ``Lasso(fit_intercept=True)`` does). These are the conventions of
:func:`decaylab.l1_penalty`, :func:`decaylab.elastic_net_penalty` and :func:`decaylab.l2_penalty`
(``"half"``); ``decaylab.convert(λ, "l1", "sklearn_lasso") == λ``.

Training goes through :func:`decaylab.engine.run_chunk`: a linear model ``layers=(dim, 1)``, loss
``'half_mse'``, ``'sgd'``, full batch, from ``w = 0, b = 0`` (``init_std=0``), in float64
(``Task.dtype``: the claim is about exact zeros and agreement to 1e-8), one ``Hyper(lr=η, l1=…, l2=…)``
per configuration. By :mod:`decaylab.engine.semantics` each step is

.. code-block:: text

    g_w = ∇_w (1/n)Σ(ŷ−y)²/2 + l2·w,   g_b = ∇_b (1/n)Σ(ŷ−y)²/2      (coupled L2, as SGD's weight_decay)
    w ← w − η g_w,  b ← b − η g_b                                      (plain gradient step)
    w ← sign(w)·max(|w| − η·l1, 0)                                     (the proximal step of l1·‖w‖₁)

with ``(l1, l2) = (λ, 0)``, ``(λρ, λ(1−ρ))``, ``(0, λ)`` for l1, enet, l2, and ``η = 1/(L + l2)``, ``L`` the
largest eigenvalue of the Hessian of the data term in ``(w, b)``. This is ISTA (Daubechies et al. 2004;
Beck & Teboulle 2009); the soft-threshold produces exact zeros, which no (sub)gradient step does.
The engine returns each configuration's final ``(w, b)`` (``Task.keep_weights='final'``) and measures
its losses only after the last epoch (``Task.eval_every=epochs``). ``--engine batched`` (default)
stacks every configuration of a seed; ``--engine sequential`` trains each alone as ``nn.Linear`` +
``torch.optim.SGD(weight_decay=l2)`` and a soft-threshold after ``step()`` (the engine's reference);
the two agree to float64 rounding.

**Convergence is certified**, not assumed: with ``n_train > dim`` the objective is ``μ``-strongly convex
(``μ = λ_min`` of that Hessian), the proximal-gradient map is a contraction with factor ``1 − μ/(L + l2)``,
and so any ``w`` lies within ``‖G(w)‖₂/μ`` of the exact minimizer, ``G(w) = (w − prox(w − η∇))/η`` the
gradient mapping. The metric ``error_bound`` is that bound for our solution and ``sklearn_error_bound``
for scikit-learn's (computed with the same formula), so ``sklearn_max_abs_diff`` must lie below their sum.

Support recovery: the selected set is ``{j : w_j ≠ 0}`` (exact float64 zeros); precision = |selected ∩ true|
/ |selected| (undefined, shown as –, when nothing is selected), recall = |selected ∩ true| / |true|.

Seed 001 (a Chinese blog post on weight decay) says L1 "makes ‖w‖ the number of non-zeros" and that the
lasso "turns into ridge as λ → ∞"; neither is right: L1 penalizes Σ|w_j|, and as λ grows the lasso
solution becomes exactly 0, which this experiment shows.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from decaylab.lab.experiments.base import (
    Experiment,
    Option,
    Table,
    check_data_budget,
    diverged_rows,
    epochs_int,
    float_grid,
    holds_text,
    nonneg_float,
    positions_by,
    positive_int,
    seed_grid,
)
from decaylab.results import ConfigResult, Outcome
from decaylab.validation import check_choice, check_float, parameter_error

__all__ = [
    "METHODS",
    "Sparsity",
    "error_bound",
    "sklearn_solutions",
    "strengths",
]

Progress = Callable[[int], None]


METHODS = ("l1", "enet", "l2")


LABELS = {"l1": "L1 (lasso)", "enet": "elastic net", "l2": "L2 (ridge)"}


# -- options -----------------------------------------------------------------------------------


def _methods(text: str, name: str, owner: str) -> list[str]:
    """A comma list of methods, each one of METHODS, no repeats."""
    items = [t.strip() for t in str(text).split(",")]
    allowed = "a comma list of {" + ", ".join(map(repr, METHODS)) + "} without repeats"
    if not items or any(not t for t in items) or len(set(items)) != len(items):
        raise parameter_error(name, owner, allowed, text)
    for item in items:
        if item not in METHODS:
            raise parameter_error(name, owner, allowed, text)
    return items


def _open_unit(text: str, name: str, owner: str) -> float:
    return check_float(text, name, owner, low=0.0, high=1.0, low_open=True, high_open=True)


def strengths(method: str, lambd: float, l1_ratio: float) -> tuple[float, float]:
    """``(l1, l2)``: the soft-threshold strength and the coupled L2 coefficient of ``method`` at λ."""
    check_choice(method, "method", "strengths", METHODS)
    if method == "l1":
        return lambd, 0.0
    if method == "enet":
        return lambd * l1_ratio, lambd * (1.0 - l1_ratio)
    return 0.0, lambd


# -- step size and certification -------------------------------------------------------------------


def gradient_mapping(X: Any, y: Any, w: Any, b: float, l1: float, l2: float, lr: float) -> Any:
    """``G = (x − prox(x − η∇f(x)))/η`` for ``x = (w, b)``: zero exactly at the minimizer (float64 vector)."""
    import torch

    X, y = X.to(torch.float64), y.to(torch.float64).reshape(-1)
    w = torch.as_tensor(w, dtype=torch.float64).reshape(-1)
    r = X @ w + b - y
    gw = X.T @ r / len(y) + l2 * w
    gb = r.mean()
    step = w - lr * gw
    prox = torch.sign(step) * torch.clamp(step.abs() - lr * l1, min=0)
    return torch.cat([(w - prox) / lr, gb.reshape(1)])


def error_bound(
    X: Any, y: Any, w: Any, b: float, l1: float, l2: float, eigs: tuple[float, float] | None = None
) -> float:
    """A certified bound on ``‖(w, b) − (w*, b*)‖₂``: ``‖G(w, b)‖₂/μ`` (see the module docstring).

    ``eigs``: ``(μ, L)`` of the data term's Hessian if already known.
    """
    import torch

    from decaylab.closed_form import hessian_eigs

    mu, L = eigs if eigs is not None else hessian_eigs(X)
    if mu <= 0:
        return math.inf
    lr = 1.0 / (L + l2)
    return float(torch.linalg.vector_norm(gradient_mapping(X, y, w, b, l1, l2, lr))) / mu


def sklearn_solutions(method: str, X: Any, y: Any, lambdas: Sequence[float], l1_ratio: float) -> tuple[Any, Any]:
    """scikit-learn's ``(coefs (K, d), intercepts (K,))`` for ``method`` at each λ (NumPy, float64).

    l1: ``lasso_path(X_c, y_c, alphas=λ)``; enet: ``enet_path(X_c, y_c, l1_ratio=ρ, alphas=λ)`` on the centred
    data (intercept = ȳ − x̄ᵀw); l2: ``Ridge(alpha=n·λ)`` with its own intercept.
    """
    import numpy as np
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import Ridge, enet_path, lasso_path

    Xn = np.asarray(X, dtype=np.float64)
    yn = np.asarray(y, dtype=np.float64).reshape(-1)
    n = len(yn)
    lams = np.asarray(lambdas, dtype=np.float64)
    if method == "l2":
        coefs, intercepts = [], []
        for lam in lams:
            model = Ridge(alpha=n * lam, fit_intercept=True, solver="svd").fit(Xn, yn)
            coefs.append(model.coef_)
            intercepts.append(model.intercept_)
        return np.array(coefs), np.array(intercepts)
    xm, ym = Xn.mean(axis=0), yn.mean()
    Xc, yc = Xn - xm, yn - ym
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # the error bound reports what was reached
        if method == "l1":
            alphas, path, _ = lasso_path(Xc, yc, alphas=lams, tol=1e-12, max_iter=100_000)
        else:
            alphas, path, _ = enet_path(Xc, yc, l1_ratio=l1_ratio, alphas=lams, tol=1e-12, max_iter=100_000)
    # the path comes back in decreasing alpha: match each requested λ to its column
    cols = [int(np.flatnonzero(alphas == lam)[0]) for lam in lams]
    coefs = path[:, cols].T
    return coefs, ym - coefs @ xm


# -- metrics -------------------------------------------------------------------------------------


def _support_metrics(w: Any, truth: Any) -> dict[str, float]:
    import numpy as np

    selected = np.asarray(w) != 0
    true = np.asarray(truth) != 0
    hits = int((selected & true).sum())
    n_sel = int(selected.sum())
    precision = hits / n_sel if n_sel else math.nan
    recall = hits / int(true.sum()) if true.any() else math.nan
    f1 = 2 * hits / (n_sel + int(true.sum())) if (n_sel + int(true.sum())) else math.nan
    return {
        "exact_zeros": float(len(selected) - n_sel),
        "n_selected": float(n_sel),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "support_exact": float(bool((selected == true).all())),
    }


def _outcome(
    data: Any, eigs: tuple[float, float], method: str, lambd: float, l1_ratio: float, w: Any, b: float,
    ref: tuple[Any, float],
) -> Outcome:
    import numpy as np
    import torch

    l1, l2 = strengths(method, lambd, l1_ratio)
    wn = np.asarray(w, dtype=np.float64)
    ref_w, ref_b = np.asarray(ref[0], dtype=np.float64), float(ref[1])
    X, y = data.X_train.to(torch.float64), data.y_train.to(torch.float64)
    Xt, yt = data.X_test.to(torch.float64), data.y_test.to(torch.float64)
    wt = torch.as_tensor(wn)
    train = float(((X @ wt + b - y) ** 2 / 2).mean())
    test = float(((Xt @ wt + b - yt) ** 2 / 2).mean()) if len(yt) else math.nan
    penalty = l1 * float(np.abs(wn).sum()) + l2 / 2 * float((wn**2).sum())
    metrics = {
        **_support_metrics(wn, data.true_w),
        "train_loss": train,
        "test_loss": test,
        "objective": train + penalty,
        "w_l1": float(np.abs(wn).sum()),
        "w_norm": float(np.sqrt((wn**2).sum())),
        "error_bound": error_bound(X, y, wn, b, l1, l2, eigs),
        "sklearn_max_abs_diff": float(max(np.abs(wn - ref_w).max(), abs(b - ref_b))),
        "sklearn_same_zeros": float(bool(((wn == 0) == (ref_w == 0)).all())),
        "sklearn_error_bound": error_bound(X, y, ref_w, ref_b, l1, l2, eigs),
    }
    curves = {
        "coef": [float(v) for v in wn],
        "coef_sklearn": [float(v) for v in ref_w],
        "true_coef": [float(v) for v in data.true_w],
    }
    return Outcome(status="done", metrics=metrics, curves=curves)


# -- the experiment ------------------------------------------------------------------------------


class Sparsity(Experiment):
    name = "sparsity"
    order = 50
    summary = "L1 (proximal), elastic net and L2 on a sparse truth: coefficient paths, exact zeros, support recovery."
    description = (
        "Claim: proximal L1 (and elastic net) reach exact zeros and, for a range of lambda, select exactly the"
        " true non-zeros; L2 shrinks every coefficient and never reaches a zero. The L1 and elastic-net paths"
        " equal scikit-learn's lasso_path / enet_path (alpha = lambda) to 1e-8 with the same zero sets."
        " Objectives: mean (y_hat-y)^2/2 + lambda*||w||_1 (l1), + lambda*(rho*||w||_1 + (1-rho)/2*||w||^2)"
        " (enet), + lambda/2*||w||^2 (l2, = sklearn Ridge alpha=n*lambda); intercept not penalized."
        " Figures: paths.png (coefficients against lambda, true non-zeros in colour, scikit-learn as dots),"
        " support.png (exact zeros, precision/recall of the support, test loss against lambda)."
        " Trained by decaylab.engine in float64: batched (default) stacks every configuration of a seed;"
        " sequential trains each alone with nn.Linear + torch.optim.SGD, the engine's reference (~1.5 s per"
        " configuration)."
    )
    engines = ("sequential", "batched")
    options = (
        Option("lambd", float_grid(low=0.0, low_open=True), "log:1e-3:10:30",
               "lambda grid (> 0) of each method's objective (see the description)", "GRID"),
        Option("methods", _methods, "l1,enet,l2", "methods to compare: a comma list of l1, enet, l2", "LIST"),
        Option("l1_ratio", _open_unit, "0.5", "elastic net's rho in (0, 1): lambda*(rho*L1 + (1-rho)/2*L2)", "RHO"),
        Option("epochs", epochs_int, "2000", "full-batch proximal gradient steps", "N"),
        Option("n_train", positive_int, "200", "training examples", "N"),
        Option("n_test", positive_int, "1000", "test examples", "N"),
        Option("dim", positive_int, "100", "number of features", "D"),
        Option("n_nonzero", positive_int, "8", "true non-zero coefficients (|w*_j| ~ U(1, 3), random sign)", "K"),
        Option("noise", nonneg_float, "1.0", "noise standard deviation of y", "SIGMA"),
        Option("seed", seed_grid, "0", "seed(s): data drawn from each seed's data stream ('0,1,2' or '0:4')",
               "SEEDS"),
    )

    swept = ("lambd", "methods", "seed")

    def curve_points(self, opts: dict[str, Any]) -> int:
        return 1  # losses after the last epoch only (eval_every = epochs)

    def check(self, opts: dict[str, Any]) -> None:
        check_data_budget(opts, self.name, ("n_train", "n_test"), "dim", itemsize=8)
        if opts["n_nonzero"] > opts["dim"]:
            raise parameter_error("--n-nonzero", self.name, f"an int in [1, dim={opts['dim']}]", opts["n_nonzero"])

    def configs(self, opts: dict[str, Any]) -> list[dict[str, Any]]:
        return [
            {"method": method, "lambd": lambd, "seed": seed}
            for seed in opts["seed"]
            for method in opts["methods"]
            for lambd in opts["lambd"]
        ]

    def task(self, opts: dict[str, Any]) -> Any:
        """The engine's :class:`~decaylab.engine.Task`: full-batch (proximal) GD of a linear model from 0, float64."""
        from decaylab.data.sparse import sparse_linear_data
        from decaylab.engine import Task

        data = partial(
            sparse_linear_data, n_train=opts["n_train"], n_test=opts["n_test"], dim=opts["dim"],
            n_nonzero=opts["n_nonzero"], noise_std=opts["noise"],
        )
        return Task(
            data=data, layers=(opts["dim"], 1), loss="half_mse", optimizer="sgd", batch_size=None,
            epochs=opts["epochs"], eval_every=opts["epochs"], init="normal", init_std=0.0,
            dtype="float64", keep_weights="final",
        )

    def run_chunk(
        self,
        opts: dict[str, Any],
        configs: Sequence[dict[str, Any]],
        engine: str,
        progress: Progress | None = None,
    ) -> list[Outcome]:
        from decaylab.closed_form import hessian_eigs
        from decaylab.engine import Hyper, run_chunk

        rho = opts["l1_ratio"]
        task = self.task(opts)
        outcomes: list[Outcome | None] = [None] * len(configs)
        for seed, idx in positions_by(configs, "seed").items():
            data = task.data(seed)
            X, y = data.X_train, data.y_train
            eigs = hessian_eigs(X)
            hypers = []
            for i in idx:
                l1, l2 = strengths(configs[i]["method"], configs[i]["lambd"], rho)
                hypers.append(Hyper(seed=seed, lr=1.0 / (eigs[1] + l2), l1=l1, l2=l2))  # η = 1/(L + l2)
            trained = run_chunk(task, hypers, engine)
            if progress is not None:
                progress(len(idx) * opts["epochs"])
            refs = self._references(configs, idx, X, y, rho)
            for i, out in zip(idx, trained, strict=True):
                if out.weights is None:  # diverged: the engine's outcome says when
                    outcomes[i] = out
                    continue
                theta = out.weights[-1]  # (w_1, ..., w_dim, b): nn.Linear(dim, 1)'s weight, then its bias
                c = configs[i]
                outcomes[i] = _outcome(data, eigs, c["method"], c["lambd"], rho, theta[:-1], theta[-1], refs[i])
        return outcomes  # type: ignore[return-value]

    @staticmethod
    def _references(configs: Sequence[dict[str, Any]], idx: list[int], X: Any, y: Any, rho: float) -> dict[int, Any]:
        """scikit-learn's solution for each configuration, one path call per method."""
        by_method: dict[str, list[int]] = {}
        for i in idx:
            by_method.setdefault(configs[i]["method"], []).append(i)
        refs = {}
        for method, members in by_method.items():
            coefs, intercepts = sklearn_solutions(method, X, y, [configs[i]["lambd"] for i in members], rho)
            for k, i in enumerate(members):
                refs[i] = (coefs[k], float(intercepts[k]))
        return refs

    # -- outputs ---------------------------------------------------------------------------------
    @staticmethod
    def _mean_by(results: Sequence[ConfigResult], key: str) -> dict[tuple[str, float], float]:
        """Mean over seeds of metric ``key`` per (method, λ); NaN-aware (precision may be undefined)."""
        import numpy as np

        groups: dict[tuple[str, float], list[float]] = {}
        for r in results:
            if r.status == "done":
                groups.setdefault((r.params["method"], r.params["lambd"]), []).append(r.metrics.get(key, math.nan))
        out = {}
        for k, vals in groups.items():
            arr = np.array(vals, dtype=float)
            out[k] = float(np.nanmean(arr)) if np.isfinite(arr).any() else math.nan
        return out

    def table(self, results: Sequence[ConfigResult], opts: dict[str, Any]) -> Table:
        methods = [m for m in opts["methods"]]
        zeros = self._mean_by(results, "exact_zeros")
        prec = self._mean_by(results, "precision")
        rec = self._mean_by(results, "recall")
        lambdas = sorted({r.params["lambd"] for r in results})
        columns = ["λ"]
        for m in methods:
            columns += [f"{m} zeros", f"{m} prec", f"{m} recall"]
        rows = []
        for lam in lambdas:
            row: list[Any] = [lam]
            for m in methods:
                z = zeros.get((m, lam), math.nan)
                row += [z, prec.get((m, lam)), rec.get((m, lam))]
            rows.append([None if isinstance(v, float) and math.isnan(v) else v for v in row])
        n_seeds = len(opts["seed"])
        d, k = opts["dim"], opts["n_nonzero"]
        return Table(
            columns,
            rows,
            title=(
                f"sparsity: exact zeros (of {d}; truly zero: {d - k}) and support precision/recall of the {k} true"
                f" non-zeros{'' if n_seeds == 1 else f', mean over {n_seeds} seeds'}. λ of mean (ŷ−y)²/2 + λ‖w‖₁ (l1),"
                f" + λ(ρ‖w‖₁ + (1−ρ)/2‖w‖²) (enet, ρ={opts['l1_ratio']:g}), + λ/2‖w‖² (l2)"
            ),
            notes=diverged_rows(results),
        )

    def summarize(self, results: Sequence[ConfigResult], opts: dict[str, Any]) -> dict[str, Any]:
        import numpy as np

        done = [r for r in results if r.status == "done"]
        per_method: dict[str, Any] = {}
        for m in opts["methods"]:
            mine = [r for r in done if r.params["method"] == m]
            if not mine:
                continue
            lambdas = sorted({r.params["lambd"] for r in mine})
            exact = {lam: all(r.metrics["support_exact"] == 1 for r in mine if r.params["lambd"] == lam) for lam in lambdas}
            recovered = [lam for lam in lambdas if exact[lam]]
            f1 = self._mean_by(mine, "f1")
            f1_by_lam = {lam: (0.0 if math.isnan(f1[(m, lam)]) else f1[(m, lam)]) for lam in lambdas}
            best = max(lambdas, key=lambda lam: (f1_by_lam[lam], lam))
            zeros = self._mean_by(mine, "exact_zeros")
            test = self._mean_by(mine, "test_loss")
            best_test = min(lambdas, key=lambda lam: test[(m, lam)])
            per_method[m] = {
                "max_exact_zeros": max(r.metrics["exact_zeros"] for r in mine),
                "min_exact_zeros": min(r.metrics["exact_zeros"] for r in mine),
                "exact_support_lambdas": recovered,
                "exact_support_range": [min(recovered), max(recovered)] if recovered else None,
                "best_f1": {
                    "lambd": best,
                    "f1": f1_by_lam[best],
                    "precision": self._mean_by(mine, "precision")[(m, best)],
                    "recall": self._mean_by(mine, "recall")[(m, best)],
                    "exact_zeros": zeros[(m, best)],
                },
                "best_test_loss": {"lambd": best_test, "test_loss": test[(m, best_test)],
                                   "exact_zeros": zeros[(m, best_test)]},
                "sklearn_max_abs_diff": max(r.metrics["sklearn_max_abs_diff"] for r in mine),
                "sklearn_same_zeros": all(r.metrics["sklearn_same_zeros"] == 1 for r in mine),
                "max_error_bound": max(r.metrics["error_bound"] for r in mine),
            }
        claims: dict[str, Any] = {}
        if "l1" in per_method:
            claims["l1_reaches_exact_zeros"] = per_method["l1"]["max_exact_zeros"] > 0
            claims["l1_recovers_support"] = per_method["l1"]["exact_support_range"] is not None
        if "l2" in per_method:
            claims["l2_has_no_exact_zeros"] = per_method["l2"]["max_exact_zeros"] == 0
        agree = [per_method[m] for m in ("l1", "enet") if m in per_method]
        if agree:
            claims["matches_sklearn_paths"] = all(p["sklearn_max_abs_diff"] <= 1e-8 and p["sklearn_same_zeros"] for p in agree)
        return {
            "verdict": _verdict(per_method, claims, opts["dim"]),
            "conventions": {
                "l1": "mean (ŷ−y)²/2 + λ‖w‖₁; sklearn Lasso/lasso_path alpha = λ",
                "enet": f"mean (ŷ−y)²/2 + λ(ρ‖w‖₁ + (1−ρ)/2‖w‖²), ρ = {opts['l1_ratio']:g};"
                        " sklearn ElasticNet/enet_path alpha = λ, l1_ratio = ρ",
                "l2": "mean (ŷ−y)²/2 + λ/2‖w‖²; sklearn Ridge alpha = n·λ",
                "intercept": "not penalized",
            },
            "true_nonzeros": opts["n_nonzero"],
            "dim": opts["dim"],
            "claims": claims,
            "by_method": per_method,
            "n_seeds": len({r.params["seed"] for r in done}),
            "max_error_bound": float(np.max([r.metrics["error_bound"] for r in done])) if done else None,
        }


def _verdict(per_method: dict[str, Any], claims: dict[str, bool], dim: int) -> str:
    """L1 gives exact zeros and the true support, L2 none: per method the exact zeros reached and the λ range
    that selects exactly the true support, and the largest difference from scikit-learn's path."""
    parts = []
    for m, p in per_method.items():
        text = f"{m}: up to {p['max_exact_zeros']:g} of {dim} exact zeros"
        if m != "l2":
            rng = p["exact_support_range"]
            text += (f", true support at λ {rng[0]:.3g}–{rng[1]:.3g}" if rng else ", true support at no λ")
            text += f", max |Δw| vs sklearn {p['sklearn_max_abs_diff']:.1e}"
        parts.append(text)
    if not parts:
        return "L1 gives exact zeros and the true support, L2 none: not tested (nothing finished)"
    holds = all(claims.values()) if claims else None
    return "L1 gives exact zeros and the true support, L2 none: " + "; ".join(parts) + f" — {holds_text(holds)}"
