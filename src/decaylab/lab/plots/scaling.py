"""Figures of ``scaling``: validation loss against λ per training-set size, and the best λ against m.

Both figures are drawn from the experiment's summary (seed-averaged validation losses per m, λ and
convention), which :func:`draw` computes from the results.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from decaylab.lab.experiments.base import Experiment
from decaylab.lab.plots import new_figure, save
from decaylab.lab.plots.common import seeds_note
from decaylab.results import ConfigResult

LABELS = {
    "half": "penalty λ/2·‖W‖²  (engine l2 = λ)",
    "mean": "penalty λ/(2m)·‖W‖²  (engine l2 = λ/m)",
}
SHORT = {"half": "λ/2·‖W‖²", "mean": "λ/(2m)·‖W‖²"}
STYLE = {"half": ("o", "-", "tab:blue"), "mean": ("s", "--", "tab:red")}


def _m_colors(ms: list[int]) -> dict[float, Any]:
    """A colour per m, keyed by ``float(m)``."""
    from decaylab.lab.plots import lambda_colors

    return lambda_colors([float(m) for m in ms])


def _setup_note(opts: dict[str, Any]) -> str:
    seeds = seeds_note(opts, len(opts["seed"]))
    return (
        f"make_moons (noise {opts['noise']:g}), MLP 2-{'-'.join(map(str, opts['hidden']))}-1 (ReLU, sigmoid output),"
        f" full-batch GD {opts['epochs']} steps, lr {opts['lr']:g}; validation: {opts['n_val']} points, {seeds}"
    )


def plot_curves(summary: dict[str, Any], opts: dict[str, Any], path: Path) -> Path:
    """Validation loss against λ, one line per m, the two conventions side by side (shared y axis)."""
    conventions = summary["conventions"]
    ms = sorted({row["m"] for c in conventions.values() for row in c["by_m"]})
    colors = _m_colors(ms)
    fig, axes = new_figure(1, 2, width=5.0, height=3.9, sharey=True)
    for ax, convention in zip(axes[0], ("half", "mean"), strict=True):
        c = conventions.get(convention, {"by_m": [], "slope": float("nan")})
        for row in c["by_m"]:
            lam = np.asarray(row["lambdas"], dtype=float)
            val = np.asarray(row["val_loss"], dtype=float)
            se = np.nan_to_num(np.asarray(row["val_loss_se"], dtype=float))
            positive = lam > 0
            color = colors[float(row["m"])]
            ax.plot(lam[positive], val[positive], "-", color=color, lw=1.5, marker=".", ms=4, label=f"m = {row['m']}")
            ax.fill_between(lam[positive], (val - se)[positive], (val + se)[positive], color=color, alpha=0.15, lw=0)
            ax.plot([row["best_lambd"]], [row["best_val_loss"]], "*", color=color, ms=13, mec="black", mew=0.6)
        ax.plot([], [], "*", color="grey", ms=11, mec="black", mew=0.6, label="best λ of each m")
        ax.set_xscale("log")
        ax.set_xlabel(f"λ of {SHORT[convention]} on the mean BCE (log scale)")
        slope = c.get("slope", float("nan"))
        expected = "0" if convention == "mean" else "−1"
        shown = f"{slope:.2f}" if math.isfinite(slope) else "n/a"
        ax.set_title(f"{LABELS[convention]}\nfitted slope of log best λ vs log m: {shown} (claim ≈ {expected})")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=len(labels), frameon=False, fontsize=8)
    axes[0, 0].set_ylabel("validation loss: mean BCE (band ±1 SE over seeds)")
    top = [v for c in conventions.values() for row in c["by_m"] for v in row["val_loss"] if math.isfinite(v)]
    if top:
        low = min(top)
        axes[0, 0].set_ylim(low * 0.95, min(max(top), 1.0) * 1.02)
    fig.suptitle(
        f"Validation loss against λ for training-set sizes m, two penalty conventions\n{_setup_note(opts)}",
        fontsize=9.5,
    )
    return save(fig, path)


def plot_best_lambda(summary: dict[str, Any], opts: dict[str, Any], path: Path) -> Path:
    """Left: validation loss against the engine's l2 (both grids on one curve per m).
    Right: best λ against m, log-log, with the fitted slopes and the claimed ones."""
    conventions = summary["conventions"]
    ms = sorted({row["m"] for c in conventions.values() for row in c["by_m"]})
    colors = _m_colors(ms)
    fig, axes = new_figure(1, 2, width=5.2, height=5.0)
    left, right = axes[0]
    for convention in ("half", "mean"):
        marker, _, _ = STYLE[convention]
        for row in conventions.get(convention, {"by_m": []})["by_m"]:
            m = row["m"]
            l2 = np.asarray(row["lambdas"], dtype=float) / (m if convention == "mean" else 1)
            val = np.asarray(row["val_loss"], dtype=float)
            keep = l2 > 0
            left.plot(
                l2[keep], val[keep], marker, color=colors[float(m)], ms=5 if convention == "half" else 7,
                mfc="none" if convention == "mean" else colors[float(m)], lw=0,
                label=f"m = {m}" if convention == "half" else None,
            )
    left.plot([], [], "o", color="grey", label="λ/2 grid (l2 = λ)")
    left.plot([], [], "s", color="grey", mfc="none", ms=7, label="λ/(2m) grid (l2 = λ/m)")
    left.set_xscale("log")
    left.set_xlabel("engine l2: objective mean BCE + l2/2·‖W‖² (log scale)")
    left.set_ylabel("validation loss: mean BCE")
    left.set_title("One objective family: both grids fall on one curve per m")
    left.legend(frameon=False, fontsize=7.5, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=3)
    vals = [v for c in conventions.values() for row in c["by_m"] for v in row["val_loss"] if math.isfinite(v)]
    if vals:
        left.set_ylim(min(vals) * 0.95, min(max(vals), 0.75) * 1.02)

    for convention in ("half", "mean"):
        c = conventions.get(convention)
        if not c or not c["by_m"]:
            continue
        marker, line, color = STYLE[convention]
        rows = c["by_m"]
        mm = np.array([row["m"] for row in rows], dtype=float)
        best = np.array([row["best_lambd"] for row in rows], dtype=float)
        low = np.array([row["near_best_low"] for row in rows], dtype=float)
        high = np.array([row["near_best_high"] for row in rows], dtype=float)
        used = np.array([row.get("in_fit", True) for row in rows], dtype=bool)
        for mask, face, label in (
            (used, color, f"best λ, {SHORT[convention]} (bar: λ within 1 SE of the best)"),
            (~used, "none", f"best λ, {SHORT[convention]}, left out of the fit (flat curve or grid edge)"),
        ):
            if mask.any():
                right.errorbar(
                    mm[mask], best[mask], yerr=[(best - low)[mask], (high - best)[mask]], fmt=marker, color=color,
                    mfc=face, ms=6, capsize=3, lw=1, label=label,
                )
        slope = c["slope"]
        se = c.get("slope_uncertainty", c.get("slope_se", math.nan))  # the verdict's ± (see its docstring)
        if math.isfinite(slope) and used.sum() >= 2:
            x, y = np.log(mm[used]), np.log(best[used])
            intercept = np.mean(y - slope * x)
            grid = np.geomspace(mm[used].min(), mm[used].max(), 50)
            se_text = f" ± {se:.2f}" if math.isfinite(se) else " ± n/a"
            right.plot(grid, np.exp(intercept) * grid**slope, line, color=color, lw=1.5,
                       label=f"fit: slope {slope:.2f}{se_text} (± SE, as in the verdict)")
            expected = c["expected_slope"]
            anchor, mid = np.exp(np.mean(y)), np.exp(np.mean(x))
            right.plot(
                grid, anchor * (grid / mid) ** expected, ":", color=color, lw=1.2, alpha=0.8,
                label=f"claimed slope {expected:g} (through the mean)",
            )
    right.set_xscale("log")
    right.set_yscale("log")
    if ms:
        right.set_xticks(ms, [str(m) for m in ms])
        right.minorticks_off()
    right.set_xlabel("training-set size m (log scale)")
    right.set_ylabel("best λ in its own convention (log scale)")
    right.set_title("Best λ against m")
    right.legend(frameon=False, fontsize=7.5, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=2)
    fig.suptitle(f"The 1/m question: does λ/(2m) make the best λ independent of m?\n{_setup_note(opts)}", fontsize=9.5)
    fig.supxlabel("Verdict: " + "\n".join(textwrap.wrap(summary["verdict"], 150)), fontsize=8.5, ha="center")
    return save(fig, path)


def figure_names(opts: dict[str, Any]) -> list[str]:
    """The files :func:`draw` writes (when nothing finished, each is one panel saying so)."""
    return ["curves.png", "best_lambda.png"]


def draw(experiment: Experiment, results: Sequence[ConfigResult], opts: dict[str, Any], out: Path) -> list[Path]:
    """Write the figures of ``results`` (every one finished) into ``out``; return their paths."""
    summary = experiment.summarize(results, opts)
    return [
        plot_curves(summary, opts, out / "curves.png"),
        plot_best_lambda(summary, opts, out / "best_lambda.png"),
    ]
