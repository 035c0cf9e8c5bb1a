"""Figures of ``noise-tikhonov``: the ridge path along σ with the trained solutions, and the distances."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from decaylab.lab.experiments.base import Experiment, group_by
from decaylab.lab.plots import new_figure, save
from decaylab.lab.plots.common import band, distinct_styles, legend_outside, seeds_note
from decaylab.results import ConfigResult

CONVENTION = "ridge λ = σ² in mean (ŷ−y)²/2 + λ/2·‖w‖² (D2L; sklearn alpha = n·σ²)"


def _usable(results: Sequence[ConfigResult]) -> list[ConfigResult]:
    return [r for r in results if r.curves.get("coef_avg") and r.status == "done"]


def plot_coefficients(results: Sequence[ConfigResult], opts: dict[str, Any], path: Path) -> Path:
    """Closed-form ridge coefficients along σ (lines) and the SGD solutions (markers), first seed."""
    usable = _usable(results)
    fig, axes = new_figure(1, 1, width=9.0, height=4.6)
    ax = axes[0, 0]
    seed = opts["seed"][0]
    mine = sorted((r for r in usable if r.params["seed"] == seed), key=lambda r: r.params["sigma"])
    if mine:
        dim = len(mine[0].curves["coef_avg"])
        sig_path = np.asarray(mine[0].curves["path_sigma"], dtype=float)
        coef_path = np.asarray(mine[0].curves["path_coef"], dtype=float).reshape(len(sig_path), dim)
        styles = distinct_styles(dim)
        sigmas = np.array([r.params["sigma"] for r in mine])
        trained = np.array([r.curves["coef_avg"] for r in mine])
        last = np.array([r.curves["coef_last"] for r in mine])
        for j in range(dim):
            color, ls = styles[j]
            ax.plot(sig_path, coef_path[:, j], ls=ls, color=color, lw=1.5, label=f"ridge(λ=σ²), w{j + 1}")
            ax.plot(sigmas, trained[:, j], "o", color=color, ms=6, mfc="none", mew=1.6)
            ax.plot(sigmas, last[:, j], "x", color=color, ms=4, alpha=0.6)
        ols = np.asarray(mine[0].curves["coef_ols"], dtype=float)
        ax.plot(np.zeros(dim), ols, "k_", ms=14, mew=1.5)
        # legend entries for the marker kinds
        ax.plot([], [], "o", color="grey", mfc="none", mew=1.6, label="SGD with input noise σ (Polyak average)")
        ax.plot([], [], "x", color="grey", alpha=0.6, label="SGD, last iterate")
        ax.plot([], [], "k_", ms=14, mew=1.5, label="OLS (λ = 0)")
    ax.axhline(0, color="grey", lw=0.6)
    ax.set_xlabel("input-noise standard deviation σ   (ridge λ = σ²)")
    ax.set_ylabel("coefficient w_j")
    ax.set_title("Closed-form ridge path (lines) vs. weights trained on noisy inputs (markers)")
    ax.legend(frameon=False, fontsize=7.5, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.suptitle(
        f"Input noise is Tikhonov regularization (Bishop 1995): seed {seed}, n = {opts['n_train']}, d = {opts['dim']}\n"
        f"{CONVENTION}",
        fontsize=9,
    )
    return save(fig, path)


def plot_distances(results: Sequence[ConfigResult], opts: dict[str, Any], path: Path) -> Path:
    """Distance of the trained w to ridge(σ²), OLS and ridge(σ²/4), ridge(4σ²), against σ (mean over seeds)."""
    groups = group_by(_usable(results), "sigma")
    sigmas = np.array(sorted(groups))
    fig, axes = new_figure(1, 1, width=8.0, height=4.6)
    ax = axes[0, 0]
    series = (
        ("dist_ridge", "‖w − ridge(λ=σ²)‖  (the claim: small)", "o-", "tab:green"),
        ("dist_ols", "‖w − OLS‖", "s--", "tab:red"),
        ("dist_ridge_quarter", "‖w − ridge(λ=σ²/4)‖", "v:", "tab:orange"),
        ("dist_ridge_4x", "‖w − ridge(λ=4σ²)‖", "^:", "tab:purple"),
        ("dist_ridge_last", "last iterate: ‖w_last − ridge(λ=σ²)‖", "x-", "tab:grey"),
    )
    for key, label, style, color in series:
        runs = np.array([[r.metrics.get(key, np.nan) for r in groups[s]] for s in sigmas], dtype=float)
        if runs.size == 0:
            continue
        band(ax, sigmas, runs, color, label, style, seed_axis=1, alpha=0.15, ms=5, lw=1.4)
    ax.set_yscale("log")
    ax.set_xlabel("input-noise standard deviation σ   (ridge λ = σ²)")
    ax.set_ylabel("Euclidean distance of the trained w (bias excluded)")
    ax.set_title("Which solution did SGD on noisy inputs reach?")
    legend_outside(ax, fontsize=7.5)
    n_seeds = len(next(iter(groups.values()), []))
    spread = seeds_note(opts, n_seeds, with_band=True)
    fig.suptitle(
        f"SGD on inputs + fresh N(0, σ²) noise: lr {opts['lr']:g}, batch {opts['batch_size']}, {opts['epochs']} epochs;"
        f" w = Polyak average over the last {100 * opts['average']:g}% of the epochs\n{spread}\n{CONVENTION}",
        fontsize=9,
    )
    return save(fig, path)


def figure_names(opts: dict[str, Any]) -> list[str]:
    """The files :func:`draw` writes (when nothing finished, each is one panel saying so)."""
    return ["coefficients.png", "distances.png"]


def draw(experiment: Experiment, results: Sequence[ConfigResult], opts: dict[str, Any], out: Path) -> list[Path]:
    """Write the figures of ``results`` (every one finished) into ``out``; return their paths."""
    return [
        plot_coefficients(results, opts, out / "coefficients.png"),
        plot_distances(results, opts, out / "distances.png"),
    ]
