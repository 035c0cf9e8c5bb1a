"""Figure of ``constraint``: the λ ↔ θ map and the penalized and constrained solution paths on top of each other."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from decaylab.lab.experiments.base import Experiment
from decaylab.lab.plots import _pyplot, lambda_colors, new_figure, save
from decaylab.lab.plots.common import distinct_styles, legend_outside
from decaylab.results import ConfigResult

PENALTY = "λ  (ridge: mean (ŷ−y)²/2 + λ/2‖w‖², D2L convention)"


def _runs(results: Sequence[ConfigResult], seed: int) -> list[ConfigResult]:
    return sorted((r for r in results if r.curves and r.params["seed"] == seed), key=lambda r: r.params["lambd"])


def plot_constraint(results: Sequence[ConfigResult], opts: dict[str, Any], path: Path) -> Path:
    """Four panels: θ(λ) with PGD's (multiplier, norm); coefficients vs λ; coefficients vs θ; convergence."""
    fig, axes = new_figure(2, 2, width=6.6, height=3.9)  # room for the legends right of the panels
    (map_ax, lam_ax), (theta_ax, conv_ax) = axes
    seeds = sorted({r.params["seed"] for r in results if r.curves})
    seed = opts["seed"][0] if opts["seed"][0] in seeds else (seeds[0] if seeds else None)

    # (a) the map λ -> θ(λ) from the ridge side; PGD's solutions placed at (their multiplier, their norm)
    cmap = _pyplot().get_cmap("tab10")
    for s_i, s in enumerate(seeds):
        runs = _runs(results, s)
        lams = np.array([r.params["lambd"] for r in runs])
        color = cmap(s_i % 10)
        tag = f" (seed {s})" if len(seeds) > 1 else ""
        map_ax.plot(lams, [r.metrics["theta"] for r in runs], "-", color=color, lw=1.8,
                    label=f"θ(λ) = ‖w_ridge(λ)‖₂{tag}")
        map_ax.plot([r.metrics["multiplier"] for r in runs], [r.metrics["w_norm"] for r in runs], "o", ms=5,
                    mfc="none", color="black" if len(seeds) == 1 else color,
                    label=f"projected GD: (multiplier μ, ‖w‖₂){tag}")
        map_ax.axhline(runs[0].metrics["theta_ols"], color=color, ls=":", lw=1.2,
                       label=f"‖w_OLS‖₂ = {runs[0].metrics['theta_ols']:.3g} (λ → 0){tag}")
    map_ax.set_xscale("log")
    map_ax.set_xlabel(PENALTY)
    map_ax.set_ylabel("θ: radius of the constraint ‖w‖₂ ≤ θ")
    map_ax.set_title("(a) The λ ↔ θ map: PGD's multiplier μ recovers λ")
    legend_outside(map_ax, fontsize=7)

    if seed is not None:
        runs = _runs(results, seed)
        lams = np.array([r.params["lambd"] for r in runs])
        thetas = np.array([r.metrics["theta"] for r in runs])
        ridge = np.array([r.curves["coef_ridge"] for r in runs])
        pgd = np.array([r.curves["coef_pgd"] for r in runs])
        d = ridge.shape[1]
        styles = distinct_styles(d)
        for j, (color, ls) in enumerate(styles):
            lam_ax.plot(lams, ridge[:, j], ls=ls, color=color, lw=1.5, label=f"w[{j}]")
            lam_ax.plot(lams, pgd[:, j], "o", color=color, ms=4, mfc="none", mew=1.0)
            theta_ax.plot(thetas, ridge[:, j], ls=ls, color=color, lw=1.5)
            theta_ax.plot(thetas, pgd[:, j], "o", color=color, ms=4, mfc="none", mew=1.0)
        for ax in (lam_ax, theta_ax):
            ax.plot([], [], "-", color="0.3", label="ridge, closed form (penalty)")
            ax.plot([], [], "o", color="0.3", mfc="none", label="projected GD (constraint)")
            ax.axhline(0, color="black", lw=0.6)
            ax.set_ylabel("coefficient w_j")
        lam_ax.set_xscale("log")
        lam_ax.set_xlabel(PENALTY)
        lam_ax.set_title("(b) Solution paths against λ")
        legend_outside(lam_ax, fontsize=7, ncol=2 if d > 8 else 1)
        theta_ax.set_xlabel("θ = ‖w_ridge(λ)‖₂  (radius of the constraint; θ(λ) per point of the λ grid)")
        theta_ax.set_title("(c) The same paths against the radius θ")
        legend_outside(theta_ax, fontsize=7)

        shown = runs if len(runs) <= 6 else [runs[i] for i in np.unique(np.linspace(0, len(runs) - 1, 6).round().astype(int))]
        lam_colors = lambda_colors([r.params["lambd"] for r in shown])
        for r in shown:
            dist = np.maximum(np.asarray(r.curves["dist_to_ridge"], dtype=float), 1e-17)
            conv_ax.plot(r.curves["epoch"], dist, color=lam_colors[r.params["lambd"]], lw=1.4,
                         label=f"λ = {r.params['lambd']:.3g} (θ = {r.metrics['theta']:.3g})")
        conv_ax.set_yscale("log")
        conv_ax.set_xlabel("epoch of projected GD (full batch, η = 1/L)")
        conv_ax.set_ylabel("‖w_t − w_ridge(λ)‖₂ (floored at 1e-17)")
        conv_ax.set_title("(d) Projected GD converges to the ridge solution (w₀ ~ N(0, 1))")
        legend_outside(conv_ax, fontsize=7)

    n = opts["n_train"]
    fig.suptitle(
        f"Penalty = constraint: min mean (ŷ−y)²/2 + λ/2‖w‖²  ≡  min mean (ŷ−y)²/2 s.t. ‖w‖₂ ≤ θ(λ)\n"
        f"(n={n}, d={opts['dim']}, feature correlation {opts['correlation']:g}, seed {seed};"
        f" sklearn Ridge alpha = {n}·λ; intercept free)",
        fontsize=10,
    )
    return save(fig, path)


def figure_names(opts: dict[str, Any]) -> list[str]:
    """The files :func:`draw` writes (when nothing finished, each is one panel saying so)."""
    return ["constraint.png"]


def draw(experiment: Experiment, results: Sequence[ConfigResult], opts: dict[str, Any], out: Path) -> list[Path]:
    """Write the figures of ``results`` (every one finished) into ``out``; return their paths."""
    return [plot_constraint(results, opts, out / "constraint.png")]
