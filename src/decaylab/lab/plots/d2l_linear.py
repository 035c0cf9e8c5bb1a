"""Figures of ``d2l-linear``: D2L's loss curves per lambda, and the weight norm.

Drawn from aggregates, so that a sweep of thousands of λ costs what a sweep of a few does: the loss
figure shows at most :data:`MAX_PANELS` λ; the norm figure draws every λ's mean ‖w‖ curve as one
rasterized ``LineCollection`` coloured by λ (a colour bar, not a legend) once there are more than
:data:`MAX_LEGEND_LAMBDAS`, and its panel against λ drops the markers past :data:`MAX_MARKERS` λ.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from decaylab.lab.experiments.base import Experiment, group_by
from decaylab.lab.plots import data_artists, lambda_colors, lay_out_ahead, new_figure, plain_log_labels, save
from decaylab.lab.plots.common import band, legend_outside, seeds_note, stack
from decaylab.results import ConfigResult

MAX_PANELS = 4
MAX_LEGEND_LAMBDAS = 6  # more λ than this: one LineCollection coloured by λ, and a colour bar
MAX_MARKERS = 64  # more λ than this: the panel against λ is drawn with lines only
TITLE_Y = 1.0  # where matplotlib puts a title with nothing above the axes; given, it is not searched for at each draw
STAND_IN_DECADES = 9  # stand-in data of the figures laid out ahead spans 10^-9 .. 10^9 (the widest tick labels)
STAND_IN_NORM = 1.23456e-05  # stand-in final ‖w‖: the widest title a λ panel of the loss figure gets

# figures laid out ahead by prepare(): file name -> (what they were built for, the figure and its axes)
_prepared: dict[str, tuple[Any, tuple[Any, ...]]] = {}


def _by_lambda(results: Sequence[ConfigResult]) -> dict[float, list[ConfigResult]]:
    return dict(sorted(group_by((r for r in results if r.curves), "lambd").items()))


def _spread(values: list[float], k: int) -> list[float]:
    """At most ``k`` values, evenly spread over the sorted list, first and last kept."""
    if len(values) <= k:
        return values
    idx = np.unique(np.round(np.linspace(0, len(values) - 1, k)).astype(int))
    return [values[i] for i in idx]


def _curves_frame(groups: dict[float, list[ConfigResult]], opts: dict[str, Any]) -> tuple[Any, Any, list[float]]:
    """The loss figure without its data: the panels of the λ shown, axis labels, the title."""
    shown = _spread(list(groups), MAX_PANELS)
    ncols = min(len(shown), 4) or 1
    nrows = max(1, -(-len(shown) // ncols))
    fig, axes = new_figure(nrows, ncols, width=3.6, height=2.9, sharey=True)
    for ax in axes.flat[len(shown) :]:
        ax.set_visible(False)
    for ax in axes.flat[: len(shown)]:
        ax.set_yscale("log")
        plain_log_labels(ax)
        ax.set_xlabel("epoch")
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
    return fig, axes, shown


def _curves_data(axes: Any, groups: dict[float, list[ConfigResult]], shown: list[float]) -> None:
    """The loss figure's data: train and test loss of each λ shown (mean over seeds, range as a band)."""
    for ax, lambd in zip(axes.flat[: len(shown)], shown, strict=True):
        group = groups[lambd]
        epochs = np.asarray(group[0].curves["epoch"])
        band(ax, epochs, stack(group, "train_loss"), "tab:blue", "train", lw=1.6)
        band(ax, epochs, stack(group, "test_loss"), "tab:orange", "test", "--", lw=1.6)
        w_norm = np.nanmean([r.metrics.get("w_norm", np.nan) for r in group])
        ax.set_title(f"λ = {lambd:.3g}   (final ‖w‖₂ = {w_norm:.3g})", y=TITLE_Y)


def _curves_legend(fig: Any, axes: Any) -> None:
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=2, frameon=False)  # one legend, off the data


def plot_curves(results: Sequence[ConfigResult], opts: dict[str, Any], path: Path) -> Path:
    """Train and test loss against epoch, log scale, one panel per lambda (as D2L's figure)."""
    groups = _by_lambda(results)
    ready = _take_prepared(path.name, groups, opts)
    if ready is not None:  # laid out ahead: only the data is drawn now
        fig, axes, shown = ready
        _curves_data(axes, groups, shown)
        return save(fig, path)
    fig, axes, shown = _curves_frame(groups, opts)
    _curves_data(axes, groups, shown)
    _curves_legend(fig, axes)
    return save(fig, path)


def _norms_frame(groups: dict[float, list[ConfigResult]], opts: dict[str, Any]) -> tuple[Any, Any, Any]:
    """The norm figure without its data: axes, scales, labels, the √d line, the colour bar of many λ."""
    fig, axes = new_figure(1, 2, width=4.6, height=3.4)
    left, right = axes[0]
    sqrt_d = np.sqrt(opts["dim"])
    left.axhline(sqrt_d, color="grey", lw=0.8, ls=":", label=f"√d = {sqrt_d:.1f} (start)")
    if len(groups) > MAX_LEGEND_LAMBDAS:
        _lambda_colorbar(fig, left, list(groups))
    left.set_yscale("log")
    plain_log_labels(left)
    left.set_xlabel("epoch")
    left.set_ylabel("‖w‖₂ (bias excluded)")
    left.set_title("Weight norm during training", y=TITLE_Y)
    lambdas = np.array(list(groups))
    right.set_yscale("log")
    if len(lambdas) > 3 and lambdas.min() == 0:
        right.set_xscale("symlog", linthresh=max(lambdas[lambdas > 0].min(), 1e-6) if (lambdas > 0).any() else 1)
        right.set_xlim(0, lambdas.max() * 1.15)  # no negative half: λ ≥ 0
    elif len(lambdas) > 3 and lambdas.max() / max(lambdas.min(), 1e-300) > 50:
        right.set_xscale("log")
    plain_log_labels(right)
    right.set_xlabel("λ  (penalty λ/2·‖w‖² on a mean loss)")
    right.set_ylabel("loss (ŷ−y)²/2  and  ‖w‖₂")
    right.set_title("After training, against λ", y=TITLE_Y)
    return fig, left, right


def _norms_data(left: Any, right: Any, groups: dict[float, list[ConfigResult]], sqrt_d: float) -> None:
    """The norm figure's data: ‖w‖ against epoch per λ (one collection past MAX_LEGEND_LAMBDAS λ), and the
    final losses and ‖w‖ against λ."""
    if len(groups) > MAX_LEGEND_LAMBDAS:  # every λ, one artist: mean over seeds, coloured by λ's rank
        _norm_collection(left, groups, sqrt_d)
    else:
        colors = lambda_colors(list(groups))
        for lambd, group in groups.items():
            epochs = np.asarray(group[0].curves["epoch"])
            band(left, epochs, stack(group, "w_norm"), colors[lambd], f"λ = {lambd:.3g}", lw=1.6)
    lambdas = np.array(list(groups))
    markers = len(lambdas) <= MAX_MARKERS
    for key, label, style, color in (("train_loss", "final train loss", "o-", "tab:blue"),
                                     ("test_loss", "final test loss", "s--", "tab:orange")):
        means = _mean_metric(groups, key)
        right.plot(lambdas, means, style if markers else style[1:], ms=3.5, lw=1.4, color=color, label=label)
    norms = _mean_metric(groups, "w_norm")
    right.plot(lambdas, norms, "^:" if markers else ":", ms=3.5, lw=1.4, color="tab:green", label="final ‖w‖₂")
    if not np.isfinite(norms).any():
        right.text(0.5, 0.5, "every λ diverged:\nno final values", transform=right.transAxes, ha="center", va="center")


def _norms_legends(left: Any, right: Any, many: bool) -> None:
    if many:
        left.legend(frameon=False, loc="lower left")
    else:
        left.legend(frameon=False, title="penalty λ/2·‖w‖²", loc="lower left")
    legend_outside(right)


def plot_norms(results: Sequence[ConfigResult], opts: dict[str, Any], path: Path) -> Path:
    """Left: ||w||_2 against epoch per lambda. Right: final losses and ||w||_2 against lambda."""
    groups = _by_lambda(results)
    sqrt_d = float(np.sqrt(opts["dim"]))
    ready = _take_prepared(path.name, groups, opts)
    if ready is not None:  # laid out ahead: only the data is drawn now
        fig, left, right = ready
        _norms_data(left, right, groups, sqrt_d)
        return save(fig, path)
    fig, left, right = _norms_frame(groups, opts)
    _norms_data(left, right, groups, sqrt_d)
    _norms_legends(left, right, len(groups) > MAX_LEGEND_LAMBDAS)
    return save(fig, path)


def _group_nanmean(groups: dict[float, list[ConfigResult]], rows: np.ndarray) -> np.ndarray:
    """Per group (λ, in the order of ``groups``) the mean of ``rows`` (one row per result, in the order
    of the groups' results) over the group's results, NaN ignored (NaN where all are NaN): one
    ``np.add.at`` for the whole sweep rather than a ``nanmean`` per λ."""
    sizes = np.array([len(g) for g in groups.values()])
    index = np.repeat(np.arange(len(sizes)), sizes)
    finite = np.isfinite(rows)
    sums = np.zeros((len(sizes), *rows.shape[1:]))
    counts = np.zeros_like(sums)
    np.add.at(sums, index, np.where(finite, rows, 0.0))
    np.add.at(counts, index, finite)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def _mean_metric(groups: dict[float, list[ConfigResult]], key: str) -> np.ndarray:
    """Per λ (in the order of ``groups``), the mean over seeds of the final metric ``key`` (NaN ignored)."""
    values = np.array([r.metrics.get(key, np.nan) for g in groups.values() for r in g], dtype=float)
    return _group_nanmean(groups, values)


def lambda_norm(lambdas: Sequence[float]) -> Any:
    """The colour scale of a λ grid: logarithmic when every λ > 0 and they span more than a factor 50
    (a ``log:`` grid), linear otherwise; its colour bar gets round ticks from matplotlib's ``LogLocator`` or
    ``MaxNLocator``."""
    import matplotlib as mpl

    lo, hi = min(lambdas), max(lambdas)
    if lo > 0 and hi / lo > 50:
        return mpl.colors.LogNorm(lo, hi)
    return mpl.colors.Normalize(lo, hi if hi > lo else lo + 1)


def _norm_cmap() -> Any:
    """viridis over the range :func:`lambda_colors` uses (0 to 0.9), as a colour map."""
    import matplotlib as mpl

    return mpl.colors.ListedColormap(mpl.colormaps["viridis"](np.linspace(0, 0.9, 256)))


def _lambda_colorbar(fig: Any, ax: Any, lambdas: list[float]) -> None:
    """A colour bar in λ beside ``ax`` (:func:`lambda_norm`'s scale, round ticks), for :func:`_norm_collection`."""
    import matplotlib as mpl

    norm = lambda_norm(lambdas)
    bar = fig.colorbar(mpl.cm.ScalarMappable(norm=norm, cmap=_norm_cmap()), ax=ax, pad=0.01)
    if not isinstance(norm, mpl.colors.LogNorm):
        bar.locator = mpl.ticker.MaxNLocator(nbins=6, steps=[1, 2, 2.5, 5, 10])  # round values of λ
    bar.minorticks_off()
    plain_log_labels(bar.ax)
    bar.set_label(f"λ of λ/2·‖w‖²  (all {len(lambdas)}, mean over seeds)")


def _norm_collection(ax: Any, groups: dict[float, list[ConfigResult]], start: float) -> None:
    """Every λ's ‖w‖ curve (mean over seeds) as one rasterized ``LineCollection`` coloured by λ (the same
    viridis range as :func:`lambda_colors`, on :func:`lambda_norm`'s scale, that of the colour bar of
    :func:`_lambda_colorbar`); the y range covers the curves and ``start``."""
    from matplotlib.collections import LineCollection

    lambdas = list(groups)
    epochs = np.asarray(next(iter(groups.values()))[0].curves["epoch"], dtype=float)
    curves = np.array([r.curves["w_norm"] for g in groups.values() for r in g], dtype=float)
    means = _group_nanmean(groups, curves)  # (λ, epochs)
    segments = np.stack([np.broadcast_to(epochs, means.shape), means], axis=-1)
    lines = LineCollection(list(segments), cmap=_norm_cmap(), norm=lambda_norm(lambdas), linewidths=1.0,
                           rasterized=True)
    lines.set_array(np.asarray(lambdas, dtype=float))
    ax.add_collection(lines)
    shown = np.append(means[np.isfinite(means) & (means > 0)], start)
    ax.set_xlim(epochs.min(), epochs.max())
    if shown.size:
        ax.set_ylim(shown.min() / 1.5, shown.max() * 1.5)


def _built_for(groups: dict[float, list[ConfigResult]], opts: dict[str, Any]) -> Any:
    """What a figure's frame depends on: every λ with its number of results and epochs, and the options."""
    return [(lambd, len(g), list(g[0].curves["epoch"])) for lambd, g in groups.items()], repr(sorted(opts.items()))


def _take_prepared(name: str, groups: dict[float, list[ConfigResult]], opts: dict[str, Any]) -> tuple[Any, ...] | None:
    """The figure ``name`` laid out ahead by :func:`prepare`, if it was built for these results (and
    options); it is used once. ``None`` otherwise: the figure is built afresh."""
    built_for, parts = _prepared.pop(name, (None, ()))
    return parts if parts and built_for == _built_for(groups, opts) else None


def _stand_in(experiment: Experiment, opts: dict[str, Any]) -> list[ConfigResult]:
    """Results of every configuration of ``opts``, all finished, whose curves span 10^±STAND_IN_DECADES
    (so that the layout leaves room for the widest tick labels) and whose final ‖w‖ prints widest."""
    epochs = list(range(1, int(opts["epochs"]) + 1))
    span = np.logspace(-STAND_IN_DECADES, STAND_IN_DECADES, len(epochs)).tolist()
    curves = {"epoch": epochs, "train_loss": span, "test_loss": span[::-1], "w_norm": span}
    metrics = {"train_loss": span[-1], "test_loss": span[0], "w_norm": STAND_IN_NORM}
    return [ConfigResult(params=c, metrics=dict(metrics), curves=dict(curves)) for c in experiment.configs(opts)]


def prepare(experiment: Experiment, opts: dict[str, Any], stop: Callable[[], bool]) -> None:
    """Build both figures for the configurations of ``opts``, all finished, and lay them out ahead with
    stand-in data (:func:`decaylab.lab.plots.lay_out_ahead`): :func:`draw` then draws the real data into
    them if the results are those (no λ diverged), or builds fresh figures if not. Before each figure,
    ``stop()`` true ends the preparation (the results are there)."""
    if stop():
        return
    groups = _by_lambda(_stand_in(experiment, opts))
    built_for = _built_for(groups, opts)
    fig, axes, shown = _curves_frame(groups, opts)
    before = set(data_artists(fig))
    _curves_data(axes, groups, shown)
    stand_in = [a for a in data_artists(fig) if a not in before]
    _curves_legend(fig, axes)
    lay_out_ahead(fig, stand_in)
    _prepared["curves.png"] = built_for, (fig, axes, shown)
    if stop():
        return
    fig, left, right = _norms_frame(groups, opts)
    before = set(data_artists(fig))
    _norms_data(left, right, groups, float(np.sqrt(opts["dim"])))
    stand_in = [a for a in data_artists(fig) if a not in before]
    _norms_legends(left, right, len(groups) > MAX_LEGEND_LAMBDAS)
    lay_out_ahead(fig, stand_in)
    _prepared["norms.png"] = built_for, (fig, left, right)


def figure_names(opts: dict[str, Any]) -> list[str]:
    """The files :func:`draw` writes (when nothing finished, each is one panel saying so)."""
    return ["curves.png", "norms.png"]


def draw(experiment: Experiment, results: Sequence[ConfigResult], opts: dict[str, Any], out: Path) -> list[Path]:
    """Write the figures of ``results`` (every one finished) into ``out``; return their paths."""
    return [plot_curves(results, opts, out / "curves.png"), plot_norms(results, opts, out / "norms.png")]
