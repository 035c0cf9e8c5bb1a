r"""``constraint``: the L2 penalty and the constraint ‖w‖ ≤ θ are two forms of one problem (seed 000).

Seed 000 (D2L's weight-decay notes, "两种限制方式的等价性") states that minimizing the penalized loss and
minimizing the loss under a norm constraint are equivalent. For linear regression with an unpenalized
intercept, with ``f(w, b) = (1/n) Σ (xᵢᵀw + b − yᵢ)²/2`` (D2L's ``squared_loss``, averaged):

.. code-block:: text

    penalty     w_ridge(λ) = argmin f(w, b) + λ/2·‖w‖²              (D2L convention; sklearn Ridge alpha = n·λ)
    constraint  w_c(θ)     = argmin f(w, b)   subject to ‖w‖₂ ≤ θ

For every λ > 0 put θ(λ) = ‖w_ridge(λ)‖₂. Then ``w_c(θ(λ)) = w_ridge(λ)``: the KKT conditions of the
constrained problem, ``∇_w f + μ·w = 0, μ ≥ 0, μ(‖w‖ − θ) = 0``, hold at ``w_ridge(λ)`` with multiplier
``μ = λ``, and both problems have one minimizer (``X`` has full column rank, ``n_train > dim``). So the
map λ ↦ θ(λ) is a bijection from (0, ∞) onto (0, ‖w_OLS‖), decreasing; its inverse reads λ off a
constrained solution as its multiplier, ``μ = −⟨∇_w f(w_c), w_c⟩ / ‖w_c‖²``.

The experiment computes ``w_ridge(λ)`` in closed form (:func:`decaylab.ridge`, one SVD) and solves the
constrained problem by projected gradient descent through :func:`decaylab.engine.run_chunk`: a linear
model ``layers=(dim, 1)``, loss ``'half_mse'``, ``'sgd'`` with ``η = 1/L`` (``L`` the largest eigenvalue
of the Hessian of ``f`` in (w, b)), full batch, in float64 (``Task.dtype``), from a random start
``w₀ ~ N(0, 1)`` (``init='normal'``, ``init_std=1``: the seed's ``init`` stream; ``b₀ = 0``), and
``Hyper(radius=θ(λ))`` — by :mod:`decaylab.engine.semantics` each step is::

    w ← w − η ∇_w f,  b ← b − η ∇_b f,   then   w ← w · min(1, θ/‖w‖₂)        (projection onto the ball)

(the weight vector is the only decayed tensor, so the engine's joint ball is this one; the intercept
stays free). ``--engine batched`` (default) stacks every λ of a seed; ``--engine sequential`` trains
each alone as ``nn.Linear`` + ``torch.optim.SGD`` with the projection after ``step()``, the engine's
reference. The engine keeps ``(w, b)`` after every epoch (``Task.keep_weights='epochs'``), from which
the experiment measures the distance ``‖w_t − w_ridge(λ)‖₂`` per epoch for the convergence figure; it
has no test set, and measures losses only after the last epoch (``Task.eval_every=epochs``).

Convergence is certified: ``f`` is μ_H-strongly convex (μ_H = smallest Hessian eigenvalue), the projected
gradient map contracts by ``1 − μ_H/L``, so ``‖(w, b) − (w_c, b_c)‖ ≤ ‖G‖/μ_H`` with ``G`` the gradient
mapping (metric ``error_bound``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial
from itertools import pairwise
from typing import Any

from decaylab.lab.experiments.base import (
    Experiment,
    Option,
    Table,
    check_data_budget,
    epochs_int,
    float_grid,
    holds_text,
    nonneg_float,
    positions_by,
    positive_int,
    seed_grid,
    status_text,
)
from decaylab.results import ConfigResult, Outcome
from decaylab.validation import check_float, parameter_error

__all__ = ["Constraint", "multiplier", "project_rows"]

Progress = Callable[[int], None]


def _correlation(text: str, name: str, owner: str) -> float:
    return check_float(text, name, owner, low=0.0, high=1.0, high_open=True)


def project_rows(W: Any, theta: Any) -> Any:
    """Each row ``w_k`` of ``W`` onto ``‖w‖₂ ≤ θ_k``: ``w·θ/‖w‖`` outside the ball, unchanged inside (MaxNorm)."""
    import torch

    norms = torch.linalg.vector_norm(W, dim=1, keepdim=True)
    return W * torch.where(norms > theta, theta / norms, torch.ones_like(norms))


def _gradients(X: Any, y: Any, w: Any, b: float) -> tuple[Any, Any]:
    r = X @ w + b - y
    return X.T @ r / len(y), r.mean()


def multiplier(X: Any, y: Any, w: Any, b: float) -> float:
    """The Lagrange multiplier of ``‖w‖ ≤ θ`` at a constrained solution: ``μ = −⟨∇_w f, w⟩/‖w‖²``."""
    import torch

    X, y = X.to(torch.float64), y.to(torch.float64).reshape(-1)
    gw, _ = _gradients(X, y, w, b)
    return float(-(gw @ w) / (w @ w))


def _error_bound(X: Any, y: Any, w: Any, b: float, theta: float, eigs: tuple[float, float]) -> float:
    """``‖G‖/μ_H`` with ``G = (x − P(x − η∇f(x)))/η`` the projected-gradient mapping (see the docstring)."""
    import torch

    mu, L = eigs
    lr = 1.0 / L
    gw, gb = _gradients(X, y, w, b)
    step = w - lr * gw
    proj = project_rows(step.reshape(1, -1), torch.tensor([[theta]], dtype=torch.float64)).reshape(-1)
    G = torch.cat([(w - proj) / lr, gb.reshape(1)])
    return float(torch.linalg.vector_norm(G)) / mu if mu > 0 else math.inf


class Constraint(Experiment):
    name = "constraint"
    order = 60
    summary = "Penalty vs constraint: projected GD on ||w|| <= theta(lambda) reaches the ridge solution of lambda."
    description = (
        "Claim: for each lambda, with theta(lambda) = ||w_ridge(lambda)||, projected gradient descent on"
        " ||w||_2 <= theta(lambda) ends at w_ridge(lambda) (distance < 1e-9), its Lagrange multiplier equals"
        " lambda, and theta(lambda) decreases from ||w_OLS|| towards 0. Ridge: mean (y_hat-y)^2/2 +"
        " lambda/2*||w||^2 (D2L; sklearn Ridge alpha = n*lambda), intercept unpenalized and unconstrained."
        " Figure: constraint.png (the lambda <-> theta map, coefficient paths against lambda and against theta"
        " with ridge lines and projected-GD markers, and the distance to ridge during projected GD)."
        " Trained by decaylab.engine in float64 with Hyper(radius=theta): batched (default) stacks every lambda"
        " of a seed; sequential trains each alone with nn.Linear + torch.optim.SGD, the engine's reference."
    )
    engines = ("sequential", "batched")
    options = (
        Option("lambd", float_grid(low=0.0, low_open=True), "log:1e-3:1e2:30",
               "lambda grid (> 0) of mean (y_hat-y)^2/2 + lambda/2*||w||^2", "GRID"),
        Option("epochs", epochs_int, "500", "full-batch projected gradient steps", "N"),
        Option("n_train", positive_int, "60", "training examples (> dim, so that the minimizers are unique)", "N"),
        Option("dim", positive_int, "8", "number of features (all non-zero, |w*_j| ~ U(1, 3))", "D"),
        Option("correlation", _correlation, "0.5", "AR(1) feature correlation rho^|i-j|, in [0, 1)", "RHO"),
        Option("noise", nonneg_float, "1.0", "noise standard deviation of y", "SIGMA"),
        Option("seed", seed_grid, "0", "seed(s): data (data stream) and the start w0 (init stream)", "SEEDS"),
    )

    swept = ("lambd", "seed")

    def curve_points(self, opts: dict[str, Any]) -> int:
        return 1  # losses after the last epoch only (eval_every = epochs)

    def check(self, opts: dict[str, Any]) -> None:
        check_data_budget(opts, self.name, ("n_train",), "dim", itemsize=8)
        if opts["n_train"] <= opts["dim"]:
            raise parameter_error(
                "--n-train", self.name, f"an int > dim={opts['dim']} (unique minimizers need full column rank)",
                opts["n_train"],
            )

    def configs(self, opts: dict[str, Any]) -> list[dict[str, Any]]:
        return [{"lambd": lambd, "seed": seed} for seed in opts["seed"] for lambd in opts["lambd"]]

    def task(self, opts: dict[str, Any]) -> Any:
        """The engine's :class:`~decaylab.engine.Task`: full-batch GD of a linear model from w₀ ~ N(0, 1), float64."""
        from decaylab.data.sparse import sparse_linear_data
        from decaylab.engine import Task

        data = partial(
            sparse_linear_data, n_train=opts["n_train"], n_test=0, dim=opts["dim"], n_nonzero=opts["dim"],
            noise_std=opts["noise"], correlation=opts["correlation"],
        )
        return Task(
            data=data, layers=(opts["dim"], 1), loss="half_mse", optimizer="sgd", batch_size=None,
            epochs=opts["epochs"], eval_every=opts["epochs"], init="normal", init_std=1.0,
            dtype="float64", keep_weights="epochs",
        )

    def run_chunk(
        self,
        opts: dict[str, Any],
        configs: Sequence[dict[str, Any]],
        engine: str,
        progress: Progress | None = None,
    ) -> list[Outcome]:
        import torch

        from decaylab.closed_form import hessian_eigs, ridge, ridge_path
        from decaylab.engine import Hyper, run_chunk

        task = self.task(opts)
        d = opts["dim"]
        outcomes: list[Outcome | None] = [None] * len(configs)
        for seed, idx in positions_by(configs, "seed").items():
            data = task.data(seed)
            X, y = data.X_train, data.y_train
            lambdas = [configs[i]["lambd"] for i in idx]
            coefs, intercepts = ridge_path(X, y, lambdas)  # D2L convention, one SVD
            thetas = [float(torch.linalg.vector_norm(w)) for w in coefs]
            w_ols, _ = ridge(X, y, 0.0)
            theta_ols = float(torch.linalg.vector_norm(w_ols))
            eigs = hessian_eigs(X)
            hypers = [Hyper(seed=seed, lr=1.0 / eigs[1], radius=theta) for theta in thetas]
            trained = run_chunk(task, hypers, engine)
            if progress is not None:
                progress(len(idx) * opts["epochs"])
            for k, (i, out) in enumerate(zip(idx, trained, strict=True)):
                if out.weights is None:  # diverged: the engine's outcome says when
                    outcomes[i] = out
                    continue
                path = torch.tensor(out.weights, dtype=torch.float64)  # (epochs, d + 1): w after each epoch, then b
                dist = torch.linalg.vector_norm(path[:, :d] - coefs[k], dim=1)
                w, b = path[-1, :d], float(path[-1, d])
                outcomes[i] = self._outcome(
                    X, y, lambdas[k], thetas[k], theta_ols, coefs[k], float(intercepts[k]), w, b, dist, eigs
                )
        return outcomes  # type: ignore[return-value]

    @staticmethod
    def _outcome(
        X: Any, y: Any, lambd: float, theta: float, theta_ols: float, w_ridge: Any, b_ridge: float,
        w: Any, b: float, dist: Any, eigs: tuple[float, float],
    ) -> Outcome:
        import torch

        X, y = X.to(torch.float64), y.to(torch.float64)
        gap = float(torch.linalg.vector_norm(w - w_ridge))
        mu = multiplier(X, y, w, b)
        metrics = {
            "theta": theta,
            "theta_ols": theta_ols,
            "w_norm": float(torch.linalg.vector_norm(w)),
            "dist_to_ridge": gap,
            "rel_dist_to_ridge": gap / theta if theta > 0 else math.nan,
            "intercept_diff": abs(b - b_ridge),
            "multiplier": mu,
            "multiplier_rel_err": abs(mu - lambd) / lambd,
            "train_loss": float(((X @ w + b - y) ** 2 / 2).mean()),
            "train_loss_ridge": float(((X @ w_ridge + b_ridge - y) ** 2 / 2).mean()),
            "error_bound": _error_bound(X, y, w, b, theta, eigs),
        }
        curves = {
            "epoch": [float(e) for e in range(1, len(dist) + 1)],
            "dist_to_ridge": [float(v) for v in dist],
            "coef_ridge": [float(v) for v in w_ridge],
            "coef_pgd": [float(v) for v in w],
        }
        return Outcome(status="done", metrics=metrics, curves=curves)

    # -- outputs ---------------------------------------------------------------------------------
    def table(self, results: Sequence[ConfigResult], opts: dict[str, Any]) -> Table:
        rows = []
        several = len(opts["seed"]) > 1
        for r in sorted(results, key=lambda r: (r.params["seed"], r.params["lambd"])):
            m = r.metrics
            row = [r.params["lambd"], m.get("theta"), m.get("w_norm"), m.get("dist_to_ridge"), m.get("multiplier"),
                   m.get("train_loss"), status_text(r)]
            rows.append(([r.params["seed"]] if several else []) + row)
        columns = ["λ", "θ(λ) = ‖w_ridge‖", "‖w_PGD‖", "‖w_PGD − w_ridge‖", "multiplier μ of PGD", "train loss", "status"]
        ols = next((r.metrics.get("theta_ols") for r in results if r.metrics), math.nan)
        return Table(
            (["seed"] if several else []) + columns,
            rows,
            title=(
                "constraint: ridge mean (ŷ−y)²/2 + λ/2‖w‖² (D2L) vs projected GD on ‖w‖₂ ≤ θ(λ), "
                f"{opts['epochs']} epochs from w₀ ~ N(0, 1); ‖w_OLS‖ = {ols:.4g}"
                + ("" if not several else " (seed " + str(opts["seed"][0]) + ")")
            ),
        )

    def summarize(self, results: Sequence[ConfigResult], opts: dict[str, Any]) -> dict[str, Any]:
        done = [r for r in results if r.status == "done"]
        per_seed = {}
        for seed in sorted({r.params["seed"] for r in done}):
            mine = sorted((r for r in done if r.params["seed"] == seed), key=lambda r: r.params["lambd"])
            thetas = [r.metrics["theta"] for r in mine]
            per_seed[str(seed)] = {
                "theta_ols": mine[0].metrics["theta_ols"],
                "theta_range": [min(thetas), max(thetas)],
                "theta_decreasing": all(a > b for a, b in pairwise(thetas)),
            }
        max_dist = max((r.metrics["dist_to_ridge"] for r in done), default=math.nan)
        max_mu = max((r.metrics["multiplier_rel_err"] for r in done), default=math.nan)
        claims = {
            "pgd_reaches_ridge": bool(done) and max_dist <= 1e-9,
            "multiplier_equals_lambda": bool(done) and max_mu <= 1e-6,
            "theta_decreasing_in_lambda": bool(per_seed) and all(s["theta_decreasing"] for s in per_seed.values()),
        }
        if done:
            verdict = (f"penalty = constraint: projected GD on ‖w‖₂ ≤ θ(λ) reaches the ridge solution"
                       f" (max ‖w_PGD − w_ridge‖ = {max_dist:.1e}), its multiplier μ is λ (max rel. error {max_mu:.1e}),"
                       f" θ(λ) falls with λ: {'yes' if claims['theta_decreasing_in_lambda'] else 'no'}"
                       f" — {holds_text(all(claims.values()))}")
        else:
            verdict = "penalty = constraint: not tested (no configuration finished)"
        return {
            "verdict": verdict,
            "conventions": {
                "penalty": "mean (ŷ−y)²/2 + λ/2‖w‖² (D2L); sklearn Ridge alpha = n·λ; intercept unpenalized",
                "constraint": "mean (ŷ−y)²/2 subject to ‖w‖₂ ≤ θ(λ) = ‖w_ridge(λ)‖₂; intercept free",
            },
            "max_dist_to_ridge": max_dist,
            "max_intercept_diff": max((r.metrics["intercept_diff"] for r in done), default=math.nan),
            "max_multiplier_rel_err": max_mu,
            "max_error_bound": max((r.metrics["error_bound"] for r in done), default=math.nan),
            "by_seed": per_seed,
            "claims": claims,
        }
