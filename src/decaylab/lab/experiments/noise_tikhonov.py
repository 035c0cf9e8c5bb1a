r"""``noise-tikhonov``: training with input noise is ridge regression (Bishop 1995; seed 000).

A linear model ``ŷ = w·x + b`` is trained by minibatch SGD on the D2L loss, the mean over the batch of
``(ŷ − y)²/2``, where every step sees its inputs with *fresh* Gaussian noise, ``x̃ = x + σε``,
``ε ~ N(0, I)``. Averaged over the noise, one example's loss is

.. math::

    \mathbb E_\varepsilon\big[(w\cdot(x+\sigma\varepsilon) + b - y)^2/2\big]
      = (w\cdot x + b - y)^2/2 + \sigma\,(w\cdot x + b - y)\,\mathbb E[w\cdot\varepsilon]
        + \tfrac{\sigma^2}{2}\,\mathbb E[(w\cdot\varepsilon)^2]
      = (w\cdot x + b - y)^2/2 + \tfrac{\sigma^2}{2}\lVert w\rVert^2 ,

so the expected training objective is :math:`\frac1n\sum_i (w\cdot x_i + b - y_i)^2/2 + \frac{\lambda}{2}\lVert w\rVert^2`
with **λ = σ²** in D2L's convention (λ/2·‖w‖² on the mean half squared error; the bias ``b`` is not
penalized because no noise is added to its constant input). That is scikit-learn's
``Ridge(alpha = n·σ²)`` and :func:`decaylab.ridge(X, y, σ²) <decaylab.closed_form.ridge>`.

Why SGD lands *on* the ridge solution and not only near it: an SGD step with noisy inputs is
``w ← w − η·x̃(x̃·w + b − y)``, linear in ``(w, b)`` with random coefficients drawn independently of the
current iterate, and ``E[x̃x̃ᵀ] = xxᵀ + σ²I``, ``E[x̃] = x``. So the *mean* iterate follows gradient descent
on the expected objective and its fixed point is exactly the ridge solution; the iterates fluctuate
around it with a spread proportional to η. **Polyak iterate averaging** removes the spread: the
reported ``w`` is the average of the iterates after every step of the last ``--average`` fraction of
the epochs (default: the last half), at a constant learning rate. The last iterate is reported too,
to show what the averaging buys.

Data (stream ``data``): ``n_train`` (default 200 > d = 5, so ordinary least squares is unique) and
``n_test`` rows, ``x_j ~ N(0, s_j²)`` with scales ``s_j = 2^{1−2j/(d−1)}`` (2 down to 1/2), so noise of
the same σ on every input shrinks the low-variance features most; ``y = w*·x + 0.5 + N(0, 0.5²)``
with ``w*_j = (−1)^j (1 + j/(d−1))``.

Training goes through :func:`decaylab.engine.run_chunk` (``--engine batched``, the default, stacks
every σ and seed; ``sequential`` trains each alone with ``nn.Linear`` and ``torch.optim.SGD``, the
engine's reference): a linear model (``layers=(d, 1)``, ``init='normal'`` with ``init_std=0.01``),
plain SGD, float32, and input noise ``Hyper(noise=σ)`` (``Task.noise``: a fresh ``x + σ·randn`` at
every step, from the seed's ``noise`` stream). The engine returns the last iterate
(``Task.keep_weights='final'``) and the Polyak average (``Task.average_from``: the mean of the
parameters after every step from that epoch on). The tests check both against a plain loop written
with ``torch.optim.SGD`` and ``torch.optim.swa_utils.AveragedModel``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from decaylab.lab.experiments.base import (
    Experiment,
    Option,
    Table,
    check_batch_size,
    check_data_budget,
    epochs_int,
    float_grid,
    mean_over_seeds,
    positive_float,
    positive_int,
    seed_grid,
    status_text,
)
from decaylab.results import ConfigResult, Outcome
from decaylab.validation import check_float, parameter_error

__all__ = ["NoiseTikhonov", "TikhonovData", "first_averaged_epoch", "reference_solutions", "tikhonov_data"]

Progress = Callable[[int], None]


INIT_STD = 0.01  # w ~ N(0, 0.01²), b = 0 (the engine's init='normal')


TRUE_BIAS = 0.5


LABEL_NOISE = 0.5


PATH_POINTS = 61  # closed-form ridge coefficients drawn along σ in the figure
# distances to ridge at these multiples of σ² (besides 1), to show that λ = σ² is the right one


OTHER_FACTORS = {"ridge_quarter": 0.25, "ridge_4x": 4.0}


@dataclass(frozen=True)


class TikhonovData:
    """A linear-regression problem; ``X_test``/``y_test`` are held-out rows of the same distribution."""

    X_train: Any  # (n_train, dim) float32 tensor
    y_train: Any  # (n_train, 1)
    X_test: Any
    y_test: Any
    true_w: Any  # (dim,)
    true_b: float


def feature_scales(dim: int) -> list[float]:
    """Standard deviation of each feature: ``2^(1 − 2j/(d−1))``, from 2 down to 1/2."""
    if dim == 1:
        return [1.0]
    return [2.0 ** (1 - 2 * j / (dim - 1)) for j in range(dim)]


def true_weights(dim: int) -> list[float]:
    """``w*_j = (−1)^j (1 + j/(d−1))``: alternating signs, growing magnitudes."""
    return [(-1) ** j * (1 + j / max(dim - 1, 1)) for j in range(dim)]


def tikhonov_data(seed: int, n_train: int = 200, n_test: int = 200, dim: int = 5) -> TikhonovData:
    """The experiment's data for ``seed``, from its ``data`` stream (training rows first, then test rows)."""
    import torch

    from decaylab.rng import generator

    g = generator(seed, "data")
    scales = torch.tensor(feature_scales(dim), dtype=torch.float32)
    w = torch.tensor(true_weights(dim), dtype=torch.float32)

    def draw(n: int) -> tuple[Any, Any]:
        X = torch.randn((n, dim), generator=g, dtype=torch.float32) * scales
        y = X @ w + TRUE_BIAS + LABEL_NOISE * torch.randn(n, generator=g, dtype=torch.float32)
        return X, y.reshape(-1, 1)

    X_train, y_train = draw(n_train)
    X_test, y_test = draw(n_test)
    return TikhonovData(X_train, y_train, X_test, y_test, w, TRUE_BIAS)


def reference_solutions(X: Any, y: Any, sigma: float) -> dict[str, Any]:
    """Closed forms (NumPy float64 coefficient vectors): ``ridge`` at λ = σ², ``ols`` (λ = 0), and
    ridge at λ = σ²/4 and 4σ², all in D2L's convention (1/(2n))‖y − Xw − b‖² + λ/2·‖w‖²."""
    from decaylab.closed_form import ridge

    lam = sigma**2
    refs = {"ridge": ridge(X, y.reshape(-1), lam)[0], "ols": ridge(X, y.reshape(-1), 0.0)[0]}
    for key, factor in OTHER_FACTORS.items():
        refs[key] = ridge(X, y.reshape(-1), factor * lam)[0]
    return {k: v.numpy() if hasattr(v, "numpy") else v for k, v in refs.items()}


def first_averaged_epoch(epochs: int, average: float) -> int:
    """The 1-based epoch from whose first step on the iterates are averaged: the last ``ceil(average·epochs)``
    epochs (at least one), ``average·epochs`` rounded to 9 decimals first so that 0.1·30 counts as 3."""
    return epochs - max(1, math.ceil(round(average * epochs, 9))) + 1


def _distance(a: Any, b: Any) -> float:
    import numpy as np

    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)))


def sigma_path(sigmas: Sequence[float]) -> list[float]:
    """The σ values at which the figure draws the closed-form ridge coefficients (0 to max σ)."""
    top = max(sigmas) if sigmas else 1.0
    top = top if top > 0 else 1.0
    return [top * i / (PATH_POINTS - 1) for i in range(PATH_POINTS)]


class NoiseTikhonov(Experiment):
    name = "noise-tikhonov"
    order = 40
    summary = "Input noise is Tikhonov: SGD on inputs + N(0, σ²) noise reaches ridge with λ = σ² (λ/2·‖w‖², mean loss)."
    description = (
        "Claim (Bishop 1995): linear regression trained by SGD on inputs with fresh Gaussian noise of variance σ²"
        " converges to the ridge solution with λ = σ² in D2L's convention (mean (ŷ−y)²/2 + λ/2·‖w‖², bias not"
        " penalized; = sklearn Ridge(alpha=n·σ²)), not to ordinary least squares, and not to ridge at σ²/4 or 4σ²."
        " The reported w is the Polyak average of the SGD iterates over the last --average fraction of epochs."
        " Figures: coefficients.png (closed-form ridge coefficients along σ as lines, trained w as markers),"
        " distances.png (‖w − ridge(σ²)‖ against ‖w − OLS‖ and the other λ, over σ)."
        " Trained by decaylab.engine with Task(noise=True, average_from=...): batched (default) stacks every σ and"
        " seed; sequential trains each alone with nn.Linear + torch.optim.SGD, the engine's reference."
    )
    engines = ("sequential", "batched")
    options = (
        Option("sigma", float_grid(low=0.0), "0:1.5:7", "input-noise standard deviations σ (grid)", "GRID"),
        Option("seed", seed_grid, "0,1,2", "seed(s): data, initial weights, batch order, noise", "SEEDS"),
        Option("epochs", epochs_int, "150", "training epochs", "N"),
        Option("lr", positive_float, "0.02", "constant SGD learning rate η", "ETA"),
        Option("batch_size", positive_int, "10", "minibatch size (<= n-train)", "B"),
        Option(
            "average", positive_float, "0.5", "fraction of the epochs (at the end) whose iterates are averaged, in (0, 1]",
            "F",
        ),
        Option("n_train", positive_int, "200", "training examples (> dim, so OLS is unique)", "N"),
        Option("n_test", positive_int, "200", "held-out examples", "N"),
        Option("dim", positive_int, "5", "number of features", "D"),
    )

    swept = ("sigma", "seed")

    def check(self, opts: dict[str, Any]) -> None:
        check_data_budget(opts, self.name, ("n_train", "n_test"), "dim")
        if opts["n_train"] <= opts["dim"]:
            raise parameter_error(
                "--n-train", self.name, f"an int > dim={opts['dim']} (so that least squares is unique)", opts["n_train"]
            )
        check_batch_size(opts, self.name)
        check_float(opts["average"], "--average", self.name, low=0.0, low_open=True, high=1.0)

    def configs(self, opts: dict[str, Any]) -> list[dict[str, Any]]:
        return [{"sigma": sigma, "seed": seed} for sigma in opts["sigma"] for seed in opts["seed"]]

    def task(self, opts: dict[str, Any]) -> Any:
        """The engine's :class:`~decaylab.engine.Task`: minibatch SGD of a linear model on noisy inputs, float32,
        keeping the last iterate and averaging those of the last ``--average`` fraction of the epochs."""
        from decaylab.engine import Task

        return Task(
            data=partial(tikhonov_data, n_train=opts["n_train"], n_test=opts["n_test"], dim=opts["dim"]),
            layers=(opts["dim"], 1), loss="half_mse", optimizer="sgd", batch_size=opts["batch_size"],
            epochs=opts["epochs"], init="normal", init_std=INIT_STD, noise=True,
            keep_weights="final", average_from=first_averaged_epoch(opts["epochs"], opts["average"]),
        )

    def run_chunk(
        self,
        opts: dict[str, Any],
        configs: Sequence[dict[str, Any]],
        engine: str,
        progress: Progress | None = None,
    ) -> list[Outcome]:
        from decaylab.closed_form import ridge_path
        from decaylab.engine import Hyper, run_chunk

        task = self.task(opts)
        trained = run_chunk(task, [Hyper(seed=c["seed"], lr=opts["lr"], noise=c["sigma"]) for c in configs], engine)
        if progress is not None:
            progress(len(configs) * opts["epochs"])
        path = sigma_path(opts["sigma"])
        data_by_seed: dict[int, TikhonovData] = {}
        path_by_seed: dict[int, list[float]] = {}
        outcomes = []
        for config, out in zip(configs, trained, strict=True):
            if out.averaged_weights is None or out.weights is None:  # diverged: the engine's outcome says when
                outcomes.append(out)
                continue
            seed, sigma, dim = config["seed"], config["sigma"], opts["dim"]
            if seed not in data_by_seed:
                data = data_by_seed[seed] = task.data(seed)
                X, y = data.X_train.double().numpy(), data.y_train.double().numpy().reshape(-1)
                path_by_seed[seed] = [float(v) for v in ridge_path(X, y, [s**2 for s in path])[0].reshape(-1)]
            data = data_by_seed[seed]
            w_avg, w_last = out.averaged_weights[:dim], out.weights[-1][:dim]  # θ = (w_1..w_d, b)
            refs = reference_solutions(data.X_train, data.y_train, sigma)
            metrics = {
                "dist_ridge": _distance(w_avg, refs["ridge"]),
                "dist_ols": _distance(w_avg, refs["ols"]),
                **{f"dist_{k}": _distance(w_avg, refs[k]) for k in OTHER_FACTORS},
                "dist_ridge_last": _distance(w_last, refs["ridge"]),
                "ridge_ols_gap": _distance(refs["ridge"], refs["ols"]),
                "ridge_norm": _distance(refs["ridge"], 0.0),
                "w_norm": _distance(w_avg, 0.0),
                "train_loss": out.metrics["train_loss"],
                "test_loss": out.metrics["test_loss"],
            }
            curves = {
                "epoch": [float(e) for e in out.curves["epoch"]],
                "train_loss": out.curves["train_loss"],
                "test_loss": out.curves["test_loss"],
                "w_norm": out.curves["w_norm"],  # of the current iterate, after each epoch
                "coef_avg": [float(v) for v in w_avg],
                "coef_last": [float(v) for v in w_last],
                "coef_ridge": [float(v) for v in refs["ridge"]],
                "coef_ols": [float(v) for v in refs["ols"]],
                "path_sigma": path,
                "path_coef": path_by_seed[seed],  # (PATH_POINTS, dim), row-major
            }
            finite = all(math.isfinite(v) for v in metrics.values())
            outcomes.append(Outcome(status="done" if finite else "diverged", metrics=metrics, curves=curves))
        return outcomes

    def table(self, results: Sequence[ConfigResult], opts: dict[str, Any]) -> Table:
        rows = []
        for r in results:
            m = r.metrics
            rows.append(
                [
                    r.params["sigma"],
                    r.params["sigma"] ** 2,
                    r.params["seed"],
                    m.get("dist_ridge"),
                    m.get("dist_ols"),
                    m.get("dist_ridge_quarter"),
                    m.get("dist_ridge_4x"),
                    m.get("dist_ridge_last"),
                    status_text(r),
                ]
            )
        return Table(
            [
                "σ", "λ=σ²", "seed", "‖w−ridge(σ²)‖", "‖w−OLS‖", "‖w−ridge(σ²/4)‖", "‖w−ridge(4σ²)‖",
                "last iterate: ‖w−ridge(σ²)‖", "status",
            ],
            rows,
            title=(
                f"noise-tikhonov: SGD on x+N(0,σ²) noise, loss mean (ŷ−y)²/2; w = Polyak average over the last "
                f"{100 * opts['average']:g}% of {opts['epochs']} epochs; ridge λ in D2L's λ/2·‖w‖² (= sklearn alpha n·λ)"
            ),
        )

    def summarize(self, results: Sequence[ConfigResult], opts: dict[str, Any]) -> dict[str, Any]:
        import numpy as np

        keys = ("dist_ridge", "dist_ols", "dist_ridge_quarter", "dist_ridge_4x", "dist_ridge_last", "ridge_ols_gap")
        # np.mean, as this summary has always averaged: its pairwise sum can differ from mean_or_nan's
        # left-to-right sum in the last bit from 8 seeds on
        by_sigma = mean_over_seeds(results, "sigma", keys, average=np.mean)
        rows = [{"sigma": sigma, "lambd": sigma**2, **means} for sigma, means in by_sigma]
        positive = [row for row in rows if row["sigma"] > 0 and row["n_seeds"]]
        # how much closer the trained w is to ridge(σ²) than to the nearest alternative, worst σ > 0
        ratios = [
            min(row["dist_ols"], row["dist_ridge_quarter"], row["dist_ridge_4x"]) / max(row["dist_ridge"], 1e-300)
            for row in positive
        ]
        worst = min(ratios) if ratios else float("nan")
        holds = bool(ratios) and worst > 3.0
        verdict = (
            f"holds: for every σ > 0 the trained w is at least {worst:.1f}x closer to ridge(λ=σ²) than to OLS,"
            " ridge(σ²/4) or ridge(4σ²)"
            if holds
            else (
                f"does not hold clearly: for some σ > 0 the trained w is only {worst:.2f}x closer to ridge(λ=σ²) than"
                " to the nearest alternative"
                if ratios
                else "no σ > 0 in the grid"
            )
        )
        return {
            "convention": "λ = σ² in mean (ŷ−y)²/2 + λ/2·‖w‖² (D2L); sklearn Ridge alpha = n_train·σ²",
            "averaging": f"Polyak average of the iterates over the last {opts['average']:g} of the epochs, constant lr",
            "by_sigma": rows,
            "worst_closeness_ratio": worst,
            "claim_holds": holds,
            "verdict": verdict,
        }
