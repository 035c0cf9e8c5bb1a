r"""``scaling``: the 1/m question — does λ/(2m)·‖W‖² make the best λ independent of the data-set size m?

Seed 004 (Ng's course writes the penalty as λ/(2m)·‖W‖²; "option 4: make λ comparable across data-set
sizes"). A small ReLU MLP with a sigmoid output is trained by full-batch gradient descent on
scikit-learn's ``make_moons`` (noise 0.3) at several training-set sizes m, and validated on one fixed
validation set per seed (:mod:`decaylab.data.moons`). Two conventions for the penalty on the mean
binary cross-entropy :math:`\bar L = \frac1m\sum_i \ell_i`:

.. math::

    J_\text{half}(W) = \bar L + \frac{\lambda}{2}\lVert W\rVert^2
    \qquad\text{and}\qquad
    J_\text{mean}(W) = \bar L + \frac{\lambda}{2m}\lVert W\rVert^2 ,

with ``‖W‖²`` the squared weights of every layer (biases not penalized). Both are the engine's coupled
``l2`` on the mean loss (``g ← g + l2·w``, objective ``L̄ + l2/2·‖W‖²``) with **l2 = λ** for λ/2 and
**l2 = λ/m** for λ/(2m) (:mod:`decaylab.engine.task`). Multiplying ``J_mean`` by m gives Ng's
``Σᵢ ℓᵢ + λ/2·‖W‖²``: λ/(2m) on the mean is λ/2 on the *sum*, the MAP objective with a fixed Gaussian
prior, whose strength does not change with m.

For each m and convention the experiment picks the λ of its grid with the lowest validation loss,
averaged over seeds, and fits the slope of log(best λ) against log m. The claim of the notes: under
λ/(2m) the best λ stays roughly fixed (slope ≈ 0), under λ/2 it moves as 1/m (slope ≈ −1).

A best λ is only an estimate where the validation curve has a clear minimum. Where the model hardly
over-fits (large m) the curve is flat over decades of small λ and its argmin is seed noise; where the
minimum sits at the end of a grid the best λ may lie beyond it. The fit therefore uses only the sizes
whose best λ is determined under both conventions — not at a grid edge, and the λ within one
standard error (over seeds) of the best spanning less than a factor of 8 — and the summary names the
sizes it left out. Each slope carries a standard error: the larger of the fit's (scatter of the best
λ around the line) and that of the per-seed slopes (each seed's own best λ, the same sizes).

Because ``λ_half = λ_mean / m`` names the same objective, the two slopes differ by exactly −1 up to
the grid's resolution: the experiment really measures one exponent, how the best ``l2`` on the mean
loss falls with m, and the claim is that this exponent is −1. The summary's verdict compares each
slope ± 2 SE with the claimed band (0 ± 0.3, −1 ± 0.3) and says in words which holds: borne out
(inside), not borne out (entirely outside), consistent but not pinned down, or inconclusive.

Efficiency, stated because it changes nothing in the numbers: configurations of one m share a
:class:`~decaylab.engine.Task` and are trained together by the engine; a configuration of the λ/(2m)
grid whose ``l2`` equals (in float32, the engine's precision) that of a λ/2 configuration with the same
seed is the same training run, so it is trained once and reported under both conventions. The
default grids and sizes are powers of 2, so most of them coincide.
Weights decayed towards zero can become subnormal floats, which slow CPU arithmetic by an order of
magnitude; the chunk flushes them to zero while it trains (this changes values below 1e-38 only), and
trains on one thread (these matrices are too small to gain from two, and a second thread stalls the
first when another process holds a core).
Per-epoch curves are kept at ≤ 51 evenly spaced epochs (first and last included).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from decaylab.lab.experiments.base import (
    MAX_WIDTH,
    Experiment,
    Option,
    Table,
    check_data_budget,
    check_model_budget,
    diverged_rows,
    epochs_int,
    float_grid,
    group_by,
    int_grid,
    mean_or_nan,
    nonneg_float,
    positions_by,
    positive_float,
    positive_int,
    seed_grid,
)
from decaylab.results import ConfigResult, Outcome
from decaylab.validation import parameter_error

__all__ = ["CONVENTIONS", "Scaling", "fit_slope", "l2_coefficient"]

Progress = Callable[[int], None]


CONVENTIONS = {
    "half": "λ/2·‖W‖²",  # engine l2 = λ
    "mean": "λ/(2m)·‖W‖²",  # engine l2 = λ/m
}


SLOPE_TOLERANCE = 0.3  # |slope − expected| allowed for the claim to count as borne out


EXPECTED_SLOPE = {"half": -1.0, "mean": 0.0}


MAX_CURVE_POINTS = 51


FLAT_RATIO = 8.0  # λ within one SE of the best spanning this factor or more: the best λ is poorly determined


def l2_coefficient(convention: str, lambd: float, m: int) -> float:
    """The engine's coupled ``l2`` (objective mean loss + l2/2·‖W‖²) for λ in ``convention`` at size m."""
    return lambd if convention == "half" else lambd / m


def fit_slope(ms: Sequence[float], lambdas: Sequence[float]) -> float:
    """Least-squares slope of log λ against log m (NaN with fewer than two finite, positive points)."""
    return fit_slope_se(ms, lambdas)[0]


def fit_slope_se(ms: Sequence[float], lambdas: Sequence[float]) -> tuple[float, float]:
    """The least-squares slope of log λ against log m and its standard error from the residuals,
    ``sqrt(SSR/(n−2) / Σ(x − x̄)²)`` (NaN with fewer than three points)."""
    pts = [(math.log(m), math.log(v)) for m, v in zip(ms, lambdas, strict=True) if v and v > 0 and math.isfinite(v)]
    if len({x for x, _ in pts}) < 2:
        return math.nan, math.nan
    n = len(pts)
    xbar = sum(x for x, _ in pts) / n
    ybar = sum(y for _, y in pts) / n
    sxx = sum((x - xbar) ** 2 for x, _ in pts)
    slope = sum((x - xbar) * (y - ybar) for x, y in pts) / sxx
    if n < 3:
        return slope, math.nan
    ssr = sum((y - ybar - slope * (x - xbar)) ** 2 for x, y in pts)
    return slope, math.sqrt(ssr / (n - 2) / sxx)


def _float32_key(value: float) -> float:
    import numpy as np

    return float(np.float32(value))


def _thin(outcome: Outcome) -> Outcome:
    """Keep at most MAX_CURVE_POINTS evenly spaced epochs of every curve (first and last included)."""
    n = len(outcome.curves.get("epoch", []))
    if n <= MAX_CURVE_POINTS:
        return outcome
    idx = sorted({round(i * (n - 1) / (MAX_CURVE_POINTS - 1)) for i in range(MAX_CURVE_POINTS)})
    curves = {k: [v[i] for i in idx] for k, v in outcome.curves.items()}
    return Outcome(outcome.status, dict(outcome.metrics), curves, outcome.diverged_epoch, outcome.error)


class Scaling(Experiment):
    name = "scaling"
    order = 30
    summary = "The 1/m question: best λ across training-set sizes m under λ/2·‖W‖² and λ/(2m)·‖W‖² (MLP, make_moons)."
    description = (
        "Claim (seed 004): with the penalty λ/(2m)·‖W‖² the best λ stays roughly fixed as the training set grows,"
        " with λ/2·‖W‖² it falls roughly as 1/m. A ReLU MLP with a sigmoid output (mean binary cross-entropy) is"
        " trained by full-batch gradient descent on make_moons (noise 0.3) for each m; for each m and convention"
        " the λ with the lowest validation loss (mean over seeds) is picked, and log(best λ) is fitted against"
        " log m over the sizes whose best λ is determined (validation curve not flat, not at a grid edge). Both"
        " conventions are the engine's coupled l2 on the mean loss: l2 = λ (λ/2) and l2 = λ/m (λ/(2m)), so the two"
        " slopes differ by −1 up to grid resolution; the summary's verdict compares slope ± 2 SE with 0 ± 0.3 and"
        " −1 ± 0.3 (borne out / not borne out / consistent but not pinned down / inconclusive). Figures: curves.png (validation loss against λ, one line per m, the"
        " two conventions side by side), best_lambda.png (validation loss against the engine's l2, both grids"
        " overlaid; best λ against m on log-log axes with the fitted slopes)."
    )
    engines = ("sequential", "batched")
    options = (
        Option("m", int_grid(low=2), "16,32,64,128,256,512", "training-set sizes m (list or range)", "SIZES"),
        Option(
            "lambd_half", float_grid(low=0.0), "log:1.52587890625e-05:0.25:15",
            "λ grid of λ/2·‖W‖² on the mean loss (engine l2 = λ); default 2^-16 … 2^-2", "GRID",
        ),
        Option(
            "lambd_mean", float_grid(low=0.0), "log:0.015625:16:11",
            "λ grid of λ/(2m)·‖W‖² on the mean loss (engine l2 = λ/m); default 2^-6 … 2^4", "GRID",
        ),
        Option("seed", seed_grid, "0,1,2", "seed(s) to average over: data, initial weights", "SEEDS"),
        Option("epochs", epochs_int, "1000", "full-batch gradient-descent steps (one per epoch)", "N"),
        Option("lr", positive_float, "0.5", "learning rate η of gradient descent", "ETA"),
        Option("hidden", int_grid(low=1, high=MAX_WIDTH, merge=False), "16,16", "hidden-layer widths of the ReLU MLP", "WIDTHS"),
        Option("n_val", positive_int, "1000", "validation-set size (the same set for every m of a seed)", "N"),
        Option("noise", nonneg_float, "0.3", "make_moons noise (std of the Gaussian added to each coordinate)", "STD"),
    )

    swept = ("lambd_half", "lambd_mean", "m", "seed")

    def n_configs(self, opts: dict[str, Any]) -> int:
        return (len(opts["lambd_half"]) + len(opts["lambd_mean"])) * len(opts["m"]) * len(opts["seed"])

    def curve_points(self, opts: dict[str, Any]) -> int:
        return min(opts["epochs"], MAX_CURVE_POINTS)

    def check(self, opts: dict[str, Any]) -> None:
        check_data_budget({"m": max(opts["m"]), "n_val": opts["n_val"], "features": 2}, self.name, ("m", "n_val"), "features")
        check_model_budget((2, *opts["hidden"], 1), self.name)
        top = max(
            [l2_coefficient("half", v, 1) for v in opts["lambd_half"]]
            + [l2_coefficient("mean", v, min(opts["m"])) for v in opts["lambd_mean"]]
        )
        if opts["lr"] * top >= 2:
            raise parameter_error(
                "--lr", self.name,
                f"a float with lr·l2 < 2 for the largest l2 of the grids ({top:g}), or gradient descent on the"
                " penalty alone diverges",
                opts["lr"],
            )

    def configs(self, opts: dict[str, Any]) -> list[dict[str, Any]]:
        out = []
        for convention, key in (("half", "lambd_half"), ("mean", "lambd_mean")):
            for m in opts["m"]:
                for lambd in opts[key]:
                    for seed in opts["seed"]:
                        out.append(
                            {
                                "convention": convention,
                                "m": m,
                                "lambd": lambd,
                                "seed": seed,
                                "l2": l2_coefficient(convention, lambd, m),
                            }
                        )
        return out

    def _task(self, opts: dict[str, Any], m: int) -> Any:
        from decaylab.data.moons import moons_data
        from decaylab.engine import Task

        return Task(
            data=partial(moons_data, m=m, n_val=opts["n_val"], noise=opts["noise"]),
            layers=(2, *opts["hidden"], 1),
            activation="relu",
            loss="bce",
            optimizer="sgd",
            batch_size=None,  # full batch: one gradient-descent step per epoch
            epochs=opts["epochs"],
            init="torch",
            # the curves keep ≤ MAX_CURVE_POINTS epochs anyway: measuring the others only cost time
            # (evaluating train + validation sets every step was most of the run)
            eval_every=max(1, opts["epochs"] // (MAX_CURVE_POINTS - 1)),
        )

    def run_chunk(
        self,
        opts: dict[str, Any],
        configs: Sequence[dict[str, Any]],
        engine: str,
        progress: Progress | None = None,
    ) -> list[Outcome]:
        from decaylab.engine import Hyper, train
        from decaylab.threads import limited_threads

        outcomes: list[Outcome | None] = [None] * len(configs)
        # weights decayed towards 0 for 1000 steps become denormal floats: flush them (thread limit: Experiment.threads)
        with limited_threads(flush_denormal=True):
            for m, members in positions_by(configs, "m").items():
                unique: dict[tuple[int, float], list[int]] = {}  # (seed, float32 l2) -> config positions
                for i in members:
                    c = configs[i]
                    l2 = l2_coefficient(c["convention"], c["lambd"], m)
                    unique.setdefault((c["seed"], _float32_key(l2)), []).append(i)
                hypers = [Hyper(seed=seed, lr=opts["lr"], l2=configs[pos[0]]["l2"]) for (seed, _), pos in unique.items()]
                # batched: one stack per m (small models: one stack is fastest, and a probe on a busy
                # machine can mislead the planner); sequential: one configuration at a time
                chunk = len(hypers) if engine == "batched" else 1
                trained = train(self._task(opts, m), hypers, engine=engine, chunk=chunk)
                for positions, out in zip(unique.values(), trained, strict=True):
                    thinned = _thin(out)
                    for i in positions:
                        outcomes[i] = thinned
                if progress:
                    progress(len(members) * opts["epochs"])
        return outcomes  # type: ignore[return-value]

    def chunk_size(self, opts: dict[str, Any], n_configs: int, engine: str) -> int:
        return n_configs  # run_chunk groups the configurations by m itself (one Task, one stack per m)

    # ------------------------------------------------------------------ outputs
    def table(self, results: Sequence[ConfigResult], opts: dict[str, Any]) -> Table:
        summary = self.summarize(results, opts)
        rows: list[list[Any]] = []
        for convention in CONVENTIONS:
            for row in summary["conventions"][convention]["by_m"]:
                rows.append(
                    [
                        CONVENTIONS[convention],
                        row["m"],
                        row["best_lambd"],
                        row["best_l2"],
                        row["best_val_loss"],
                        row["val_loss_at_smallest_lambd"],
                        f"{row['near_best_low']:.3g} … {row['near_best_high']:.3g}",
                        "yes" if row["in_fit"] else ("no: grid edge" if row["at_edge"] else "no: flat"),
                    ]
                )
        for convention in CONVENTIONS:
            c = summary["conventions"][convention]
            rows.append(
                [
                    CONVENTIONS[convention],
                    "slope",
                    c["slope"],
                    f"(claim {c['expected_slope']:g})",
                    "",
                    "",
                    f"per seed {c['slope_per_seed_mean']:.2f} ± {c['slope_per_seed_se']:.2f}",
                    "",
                ]
            )
        return Table(
            [
                "penalty", "m", "best λ", "engine l2", "val loss at best", "val loss at least λ",
                "λ within 1 SE of best", "in fit",
            ],
            rows,
            title=(
                f"scaling: mean BCE + penalty, full-batch GD ({opts['epochs']} steps, lr {opts['lr']:g}), MLP"
                f" 2-{'-'.join(map(str, opts['hidden']))}-1; validation loss averaged over {len(opts['seed'])} seed(s);"
                " slope = fit of log λ on log m"
            ),
            notes=diverged_rows(results),
        )

    def summarize(self, results: Sequence[ConfigResult], opts: dict[str, Any]) -> dict[str, Any]:
        rows_by_convention: dict[str, list[dict[str, Any]]] = {}
        for convention in CONVENTIONS:
            rows = []
            by_m = group_by((r for r in results if r.params["convention"] == convention), "m")
            for m, group in sorted(by_m.items()):
                row = _best_lambda(group, convention, m)
                if row is not None:
                    row["flat"] = row["near_best_high"] >= FLAT_RATIO * row["near_best_low"]
                    rows.append(row)
            rows_by_convention[convention] = rows
        # a size enters the fits only if its best λ is determined under every convention (not at a grid
        # edge, validation curve not flat): the same sizes for both, so the slopes stay comparable
        undetermined = {
            row["m"] for rows in rows_by_convention.values() for row in rows if row["at_edge"] or row["flat"]
        }
        conventions: dict[str, Any] = {}
        for convention, rows in rows_by_convention.items():
            fitted = [row for row in rows if row["m"] not in undetermined]
            for row in rows:
                row["in_fit"] = row["m"] not in undetermined
            ms = [row["m"] for row in fitted]
            seeds = sorted({s for row in fitted for s in row["best_lambd_by_seed"]})
            per_seed = [fit_slope(ms, [row["best_lambd_by_seed"].get(s, math.nan) for row in fitted]) for s in seeds]
            per_seed = [v for v in per_seed if math.isfinite(v)]
            slope, slope_se = fit_slope_se(ms, [row["best_lambd"] for row in fitted])
            expected = EXPECTED_SLOPE[convention]
            conventions[convention] = {
                "penalty": CONVENTIONS[convention] + " on the mean BCE",
                "engine_l2": "λ" if convention == "half" else "λ/m",
                "by_m": rows,
                "fitted_m": ms,
                "slope": slope,
                "slope_se": slope_se,
                "slope_per_seed": per_seed,
                "slope_per_seed_mean": mean_or_nan(per_seed),
                "slope_per_seed_se": _se(per_seed),
                "expected_slope": expected,
                "within_tolerance": _near(slope, expected),
            }
            conventions[convention]["slope_uncertainty"] = _uncertainty(conventions[convention])
        half, mean = conventions.get("half", {}), conventions.get("mean", {})
        edges = [
            f"{CONVENTIONS[c]} at m={row['m']}" for c, v in conventions.items() for row in v["by_m"] if row["at_edge"]
        ]
        flat = sorted({row["m"] for v in conventions.values() for row in v["by_m"] if row["flat"]})
        verdict, holds = _verdict(half, mean, edges, flat)
        return {
            "conventions": conventions,
            "slope_half": half.get("slope", math.nan),
            "slope_mean": mean.get("slope", math.nan),
            "slope_difference": half.get("slope", math.nan) - mean.get("slope", math.nan),
            "fitted_m": half.get("fitted_m", []),
            "tolerance": SLOPE_TOLERANCE,
            "claim_holds": holds,
            "best_at_grid_edge": edges,
            "flat_at_m": flat,
            "verdict": verdict,
        }


def _near(slope: float, expected: float) -> bool:
    return bool(math.isfinite(slope) and abs(slope - expected) <= SLOPE_TOLERANCE)


def _best_lambda(group: Sequence[ConfigResult], convention: str, m: int) -> dict[str, Any] | None:
    """Seed-averaged validation loss along the λ grid of one (convention, m), and the λ it selects.

    ``best_lambd``: the λ with the lowest mean validation loss; ``best_lambd_by_seed``: each seed's own
    best λ (for the per-seed slopes, a measure of the noise). ``near_best_low``/``near_best_high``: the
    λ range whose mean validation loss is within one standard error (over seeds) of the lowest — wide
    where the curve is flat and the best λ is poorly determined (ESL §7.10's one-standard-error rule
    would pick ``near_best_high``). Diverged configurations count as missing.
    """
    import warnings

    import numpy as np

    lambdas = sorted({r.params["lambd"] for r in group})
    seeds = sorted({r.params["seed"] for r in group})
    grid = np.full((len(lambdas), len(seeds)), np.nan)
    for r in group:
        value = r.metrics.get("test_loss", math.nan) if r.status == "done" else math.nan
        grid[lambdas.index(r.params["lambd"]), seeds.index(r.params["seed"])] = value
    n_ok = np.sum(np.isfinite(grid), axis=1)
    if not n_ok.any():
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(grid, axis=1)
        se = np.nanstd(grid, axis=1, ddof=1) / np.sqrt(n_ok) if len(seeds) > 1 else np.zeros(len(lambdas))
    se = np.nan_to_num(se)
    best = int(np.nanargmin(mean))
    by_seed = {}
    for j, seed in enumerate(seeds):
        if np.isfinite(grid[:, j]).any():
            by_seed[seed] = float(lambdas[int(np.nanargmin(grid[:, j]))])
    near = [lam for lam, v in zip(lambdas, mean, strict=True) if np.isfinite(v) and v <= mean[best] + se[best]]
    return {
        "m": m,
        "lambdas": lambdas,
        "val_loss": [float(v) for v in mean],
        "val_loss_se": [float(v) for v in se],
        "best_lambd": float(lambdas[best]),
        "best_l2": l2_coefficient(convention, lambdas[best], m),
        "best_lambd_by_seed": by_seed,
        "best_val_loss": float(mean[best]),
        "val_loss_at_smallest_lambd": float(mean[0]),
        "near_best_low": float(min(near)),
        "near_best_high": float(max(near)),
        "at_edge": best in (0, len(lambdas) - 1),
        "n_seeds": int(n_ok[best]),
    }


def _se(values: Sequence[float]) -> float:
    """Standard error of the mean (NaN with fewer than two values)."""
    if len(values) < 2:
        return math.nan
    mu = mean_or_nan(values)
    return math.sqrt(sum((v - mu) ** 2 for v in values) / (len(values) - 1) / len(values))


def _uncertainty(c: dict[str, Any]) -> float:
    """The larger of the slope's two standard errors: from the fit's residuals (scatter of the best λ
    around the line) and from the per-seed slopes (seed-to-seed noise); NaN when neither exists."""
    values = [v for v in (c.get("slope_se", math.nan), c.get("slope_per_seed_se", math.nan)) if math.isfinite(v)]
    return max(values) if values else math.nan


def _verdict(
    half: dict[str, Any], mean: dict[str, Any], edges: Sequence[str] = (), flat: Sequence[int] = ()
) -> tuple[str, bool]:
    """A plain-language verdict from the fitted slopes, and whether the claim holds.

    Each slope s comes with an uncertainty interval s ± 2·SE (SE: the larger of the fit's and the
    per-seed slopes' standard errors, see :func:`_uncertainty`), compared with the claimed band,
    0 ± SLOPE_TOLERANCE for λ/(2m) and −1 ± SLOPE_TOLERANCE for λ/2:

    * borne out: both intervals lie inside their bands;
    * not borne out: an interval lies entirely outside its band (the miss is larger than the noise);
    * consistent but not pinned down: the slopes lie inside the bands, their intervals do not;
    * inconclusive: the slopes lie outside the bands, but their intervals reach them.

    The slopes are fitted over the sizes whose best λ is determined; the verdict names the others:
    ``edges`` (best λ at the edge of a grid) and ``flat`` (sizes whose validation curve is so flat that
    the λ within one standard error of the best span a factor of FLAT_RATIO or more — there the model
    hardly over-fits, and its best λ is noise).
    """
    s_half, s_mean = half.get("slope", math.nan), mean.get("slope", math.nan)
    caveat = ""
    if flat:
        caveat += (
            f"; left out of the fit: m = {', '.join(map(str, flat))}, whose validation curve is flat near its"
            f" minimum (λ within 1 SE of the best span ×{FLAT_RATIO:g} or more: little over-fitting, best λ"
            " poorly determined)"
        )
    if edges:
        caveat += f"; left out of the fit: best λ at the edge of its grid for {', '.join(edges)} (widen the grid)"
    if not (math.isfinite(s_half) and math.isfinite(s_mean)):
        return f"undetermined: fewer than two training-set sizes with a determined best λ{caveat}", False

    def pm(c: dict[str, Any]) -> str:
        se = _uncertainty(c)
        return f"{c['slope']:.2f} ± {se:.2f}" if math.isfinite(se) else f"{c['slope']:.2f}"

    sizes = ", ".join(map(str, half.get("fitted_m", [])))
    numbers = (
        f"over m = {sizes}, best λ ∝ m^({pm(mean)}) under λ/(2m)·‖W‖² and ∝ m^({pm(half)}) under λ/2·‖W‖²"
        f" (± standard error; claimed exponents 0 and −1, tolerance ±{SLOPE_TOLERANCE})"
    )
    checks = [(half, -1.0), (mean, 0.0)]

    def interval(c: dict[str, Any]) -> tuple[float, float]:
        se = _uncertainty(c)
        se = se if math.isfinite(se) else 0.0
        return c["slope"] - 2 * se, c["slope"] + 2 * se

    tol = SLOPE_TOLERANCE
    inside = all(claim - tol <= interval(c)[0] and interval(c)[1] <= claim + tol for c, claim in checks)
    outside = any(interval(c)[0] > claim + tol or interval(c)[1] < claim - tol for c, claim in checks)
    near = _near(s_half, -1.0) and _near(s_mean, 0.0)
    if inside:
        return f"borne out: {numbers}{caveat}", True
    if not outside:
        if near:
            return (
                f"consistent with the claim but not pinned down: {numbers}; the slopes lie within the tolerance,"
                f" but ±2 standard errors reach beyond it{caveat}",
                False,
            )
        return (
            f"inconclusive: {numbers}; the slopes miss the claim, but by less than two standard errors"
            f" (more seeds or sizes would tell){caveat}",
            False,
        )
    if -1 + SLOPE_TOLERANCE < s_half < -SLOPE_TOLERANCE:
        how = (
            "the best penalty on the mean loss falls with m, but more slowly than 1/m: λ/(2m) over-corrects"
            " (its best λ grows with m) and λ/2 under-corrects"
        )
    elif s_half <= -1 - SLOPE_TOLERANCE:
        how = "the best penalty on the mean loss falls faster than 1/m, so even λ/(2m) under-corrects"
    elif s_half >= -SLOPE_TOLERANCE:
        how = "the best penalty on the mean loss hardly changes with m: it is λ/2 whose best λ stays fixed"
    else:
        how = "the two conventions' slopes are not both near the claimed values"
    return f"not borne out: {numbers}; {how}{caveat}", False
