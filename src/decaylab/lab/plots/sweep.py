"""Figures of ``decaylab sweep``: the selected metric and ‖θ‖ against λ, and the curves of a few λ.

``sweep.png``: two panels against the swept decay (the first of coupled λ, decoupled λ, λ₁ that takes
several values, else the learning rate) — the final selected metric and the final ‖θ‖₂ of the decayed
tensors — one line per seed (and per value of the other swept numbers), the best setting (mean over
seeds) marked with a star. A log x-axis when every value is positive and they span more than a decade;
λ = 0 then sits at the left edge, marked "0". ``curves.png``: the selected metric per epoch for up to
four values of that λ, spread over the grid, one line per seed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from decaylab.lab.experiments.base import Experiment
from decaylab.lab.plots import lambda_colors, new_figure, save
from decaylab.results import ConfigResult

__all__ = ["plot_curves", "plot_sweep", "x_axis"]

LABELS = {"lambd": "coupled λ (weight_decay)", "decoupled": "decoupled λ (AdamW)", "l1": "λ₁ (L1 prox)", "lr": "learning rate"}
MAX_CURVES = 4


def x_axis(results: Sequence[ConfigResult]) -> str:
    """The swept number the figures put on the x-axis."""
    for key in ("lambd", "decoupled", "l1", "lr"):
        if len({r.params[key] for r in results}) > 1:
            return key
    return "lambd"


def _lines(results: Sequence[ConfigResult], x: str) -> dict[str, list[ConfigResult]]:
    """One line per seed and per value of the other swept numbers, its points sorted by ``x``."""
    others = [k for k in ("lambd", "decoupled", "l1", "lr") if k != x and len({r.params[k] for r in results}) > 1]
    lines: dict[str, list[ConfigResult]] = {}
    for r in results:
        label = ", ".join([f"seed {r.params['seed']}"] + [f"{k}={r.params[k]:g}" for k in others])
        lines.setdefault(label, []).append(r)
    return {k: sorted(v, key=lambda r: r.params[x]) for k, v in lines.items()}


def _positions(values: list[float]) -> tuple[list[float], bool]:
    """x positions: log scale when all values > 0 or only 0 and values spanning > 1 decade; 0 drawn at the left."""
    positive = sorted(v for v in values if v > 0)
    log = len(positive) >= 2 and positive[-1] / positive[0] > 10
    if not log:
        return values, False
    zero_at = positive[0] / (positive[-1] / positive[0]) ** (1 / max(len(positive), 2))
    return [v if v > 0 else zero_at for v in values], True


def plot_sweep(results: Sequence[ConfigResult], select: str, best: dict[str, Any] | None, path: Path) -> Path:
    """The final ``select`` metric and ‖θ‖₂ against the swept λ, one line per seed, the setting ``best``
    (:func:`decaylab.lab.sweep.best_config`: ``params`` and the mean ``value``) starred."""

    metric = select.partition(":")[0]
    x = x_axis(results)
    done = [r for r in results if r.curves]
    fig, axes = new_figure(1, 2, width=4.4, height=3.3)
    best = best if done else None
    all_x = sorted({r.params[x] for r in done})
    xs_all, log = _positions(all_x)
    where = dict(zip(all_x, xs_all, strict=True))
    for i, (label, line) in enumerate(_lines(done, x).items()):
        pos = [where[r.params[x]] for r in line]
        for ax, key in zip(axes[0], (metric, "w_norm"), strict=True):
            ax.plot(pos, [r.metrics.get(key, math.nan) for r in line], "o-", ms=3, lw=1.2, label=label, color=f"C{i % 10}")
    for ax, key, title in zip(axes[0], (metric, "w_norm"), (metric, "‖θ‖₂ of the decayed tensors"), strict=True):
        if best is not None:
            bx = where.get(best["params"][x])
            if key == metric:
                ax.plot([bx], [best["value"]], "*", ms=14, color="crimson", zorder=5, label=f"best ({x}={best['params'][x]:g})")
            else:
                ax.axvline(bx, color="crimson", lw=0.8, ls=":")
        if log:
            ax.set_xscale("log")
            if 0 in all_x:
                ax.annotate("0", (where[0.0], 0), xycoords=("data", "axes fraction"), xytext=(0, -12),
                            textcoords="offset points", ha="center", fontsize=8)
        ax.set_xlabel(LABELS[x])
        ax.set_title(f"final {title}")
    axes[0, 0].legend(frameon=False, fontsize=7)
    fig.suptitle(f"decaylab sweep: final {metric} and weight norm against {LABELS[x]}", fontsize=10)
    return save(fig, path)


def _spread(values: list[float], k: int) -> list[float]:
    if len(values) <= k:
        return values
    idx = np.unique(np.round(np.linspace(0, len(values) - 1, k)).astype(int))
    return [values[i] for i in idx]


def plot_curves(results: Sequence[ConfigResult], select: str, path: Path) -> Path:
    """The ``select`` metric per epoch for up to four values of the swept λ, one line per seed."""
    metric = select.partition(":")[0]
    x = x_axis(results)
    done = [r for r in results if r.curves]
    shown = _spread(sorted({r.params[x] for r in done}), MAX_CURVES)
    colors = lambda_colors(shown)
    fig, axes = new_figure(1, 2, width=4.4, height=3.3)
    for v in shown:
        for j, r in enumerate(r for r in done if r.params[x] == v):
            for ax, key in zip(axes[0], (metric, "w_norm"), strict=True):
                ax.plot(r.curves["epoch"], r.curves[key], "-" if j == 0 else "--", color=colors[v], lw=1.3,
                        label=f"{x}={v:g}" if j == 0 else None)
    for ax, key in zip(axes[0], (metric, "w_norm"), strict=True):
        ax.set_xlabel("epoch")
        ax.set_title(key)
    axes[0, 0].legend(frameon=False, fontsize=7)
    fig.suptitle(f"decaylab sweep: curves of {len(shown)} values of {LABELS[x]} (dashed: other seeds)", fontsize=10)
    return save(fig, path)


def figures(experiment: Experiment, results: Sequence[ConfigResult], opts: dict[str, Any], out: Path) -> list[Path]:
    """Write the figures of ``results`` (finished or not: this module draws what is there) into ``out``."""
    best = experiment.summarize(results, opts).get("best")
    return [plot_sweep(results, opts["select"], best, out / "sweep.png"), plot_curves(results, opts["select"], out / "curves.png")]
