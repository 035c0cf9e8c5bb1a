"""Figures of ``d2l-linear``: D2L's loss curves per lambda, and the weight norm."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from decaylab.experiments.base import group_by
from decaylab.plots import lambda_colors, new_figure, save
from decaylab.plots.common import band, seeds_note, stack
from decaylab.results import ConfigResult

MAX_PANELS = 4
MAX_LEGEND_LAMBDAS = 6  # more λ than this: a colour bar rather than a legend


def _by_lambda(results: Sequence[ConfigResult]) -> dict[float, list[ConfigResult]]:
    return dict(sorted(group_by((r for r in results if r.curves), "lambd").items()))


def _spread(values: list[float], k: int) -> list[float]:
    """At most ``k`` values, evenly spread over the sorted list, first and last kept."""
    if len(values) <= k:
        return values
    idx = np.unique(np.round(np.linspace(0, len(values) - 1, k)).astype(int))
    return [values[i] for i in idx]


def plot_curves(results: Sequence[ConfigResult], opts: dict[str, Any], path: Path) -> Path:
    """Train and test loss against epoch, log scale, one panel per lambda (as D2L's figure)."""
    groups = _by_lambda(results)
    shown = _spread(list(groups), MAX_PANELS)
    ncols = min(len(shown), 4) or 1
    nrows = max(1, -(-len(shown) // ncols))
    fig, axes = new_figure(nrows, ncols, width=3.6, height=2.9, sharey=True)
    for ax in axes.flat[len(shown) :]:
        ax.set_visible(False)
    for ax, lambd in zip(axes.flat, shown):
        group = groups[lambd]
        epochs = np.asarray(group[0].curves["epoch"])
        band(ax, epochs, stack(group, "train_loss"), "tab:blue", "train", lw=1.6)
        band(ax, epochs, stack(group, "test_loss"), "tab:orange", "test", "--", lw=1.6)
        w_norm = np.nanmean([r.metrics.get("w_norm", np.nan) for r in group])
        ax.set_yscale("log")
        ax.set_title(f"λ = {lambd:.3g}   (final ‖w‖₂ = {w_norm:.3g})")
        ax.set_xlabel("epoch")
        ax.legend(loc="upper right", frameon=False)
    for ax in axes[:, 0]:
        ax.set_ylabel("loss (ŷ−y)²/2, mean over examples")
    n_seeds = len(next(iter(groups.values()), []))
    subtitle = seeds_note(opts, n_seeds, with_band=True)
    hidden = f"; {len(groups) - len(shown)} of {len(groups)} λ not shown" if len(shown) < len(groups) else ""
    fig.suptitle(
        f"Weight decay on D2L's linear regression (n_train={opts['n_train']}, d={opts['dim']}): "
        f"penalty λ/2·‖w‖², {subtitle}{hidden}",
        fontsize=10,
    )
    return save(fig, path)


def plot_norms(results: Sequence[ConfigResult], opts: dict[str, Any], path: Path) -> Path:
    """Left: ||w||_2 against epoch per lambda. Right: final losses and ||w||_2 against lambda."""
    groups = _by_lambda(results)
    colors = lambda_colors(list(groups))
    fig, axes = new_figure(1, 2, width=4.6, height=3.4)
    left, right = axes[0]
    shown = _spread(list(groups), 12)
    for lambd in shown:
        group = groups[lambd]
        epochs = np.asarray(group[0].curves["epoch"])
        band(left, epochs, stack(group, "w_norm"), colors[lambd], f"λ = {lambd:.3g}", lw=1.6)
    left.axhline(np.sqrt(opts["dim"]), color="grey", lw=0.8, ls=":", label=f"√d = {np.sqrt(opts['dim']):.1f} (start)")
    left.set_yscale("log")
    left.set_xlabel("epoch")
    left.set_ylabel("‖w‖₂ (bias excluded)")
    left.set_title("Weight norm during training")
    if len(shown) > MAX_LEGEND_LAMBDAS:  # a colour bar instead of a legend that would cover the lines
        _lambda_colorbar(fig, left, list(groups), f"λ of λ/2·‖w‖²  ({len(shown)} of {len(groups)} drawn)")
        left.legend(handles=left.get_lines()[-1:], frameon=False, loc="lower left")
    else:
        left.legend(frameon=False, title="penalty λ/2·‖w‖²", loc="lower left")

    lambdas = np.array(list(groups))
    for key, label, style in (("train_loss", "final train loss", "o-"), ("test_loss", "final test loss", "s--")):
        means = [np.nanmean([r.metrics.get(key, np.nan) for r in groups[v]]) for v in lambdas]
        right.plot(lambdas, means, style, ms=3.5, lw=1.4, label=label)
    norms = [np.nanmean([r.metrics.get("w_norm", np.nan) for r in groups[v]]) for v in lambdas]
    right.plot(lambdas, norms, "^:", ms=3.5, lw=1.4, color="tab:green", label="final ‖w‖₂")
    right.set_yscale("log")
    if len(lambdas) > 3 and lambdas.min() == 0:
        right.set_xscale("symlog", linthresh=max(lambdas[lambdas > 0].min(), 1e-6) if (lambdas > 0).any() else 1)
        right.set_xlim(0, lambdas.max() * 1.15)  # no negative half: λ ≥ 0
    elif len(lambdas) > 3 and lambdas.max() / max(lambdas.min(), 1e-300) > 50:
        right.set_xscale("log")
    right.set_xlabel("λ  (penalty λ/2·‖w‖² on a mean loss)")
    right.set_ylabel("loss (ŷ−y)²/2  and  ‖w‖₂")
    right.set_title("After training, against λ")
    right.legend(frameon=False)
    return save(fig, path)


def _lambda_colorbar(fig: Any, ax: Any, lambdas: list[float], label: str) -> None:
    """A colour bar beside ``ax`` mapping :func:`lambda_colors`' colours back to λ."""
    import matplotlib as mpl

    colors = lambda_colors(lambdas)
    ordered = sorted(colors)
    cmap = mpl.colors.ListedColormap([colors[v] for v in ordered])
    norm = mpl.colors.BoundaryNorm(np.arange(len(ordered) + 1) - 0.5, len(ordered))
    bar = fig.colorbar(mpl.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, pad=0.01)
    ticks = sorted({0, len(ordered) - 1, *np.linspace(0, len(ordered) - 1, 5).round().astype(int).tolist()})
    bar.set_ticks(ticks, labels=[f"{ordered[i]:.3g}" for i in ticks])
    bar.set_label(label)
