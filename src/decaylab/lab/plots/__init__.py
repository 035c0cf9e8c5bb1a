"""Figures. matplotlib is imported here only, with the non-interactive Agg backend.

Each experiment ``NAME`` has its figures in ``decaylab.lab.plots.NAME`` (``-`` read as ``_``), which defines
either ``figure_names(opts)`` and ``draw(experiment, done, opts, out)`` — drawn from the configurations that
finished, :func:`figures` saying how many did not — or ``figures(experiment, results, opts, out)``, which
draws what there is itself. The experiments never import their figures: the figures read the experiments.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from decaylab.lab.experiments.base import Experiment
    from decaylab.results import ConfigResult

__all__ = ["figures", "figure_note", "lambda_colors", "new_figure", "nothing_finished", "rendering_share", "save"]

MINOR_TICK_DECADES = 4  # log axes spanning more decades than this get no minor ticks

_share = {"index": 0, "count": 1, "seen": 0}  # which of the figures :func:`save` renders, see rendering_share
_note = {"text": ""}  # a line :func:`save` adds under each figure's title, see figure_note


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update(
        {
            "figure.dpi": 110,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.grid": True,
            "grid.alpha": 0.25,
            "axes.titlesize": 10,
            "axes.labelsize": 9,
            "legend.fontsize": 8,
            "xtick.labelsize": 8,
            "ytick.labelsize": 8,
        }
    )
    return plt


def new_figure(nrows: int = 1, ncols: int = 1, *, width: float = 4.0, height: float = 3.2, **kwargs: Any) -> Any:
    """A figure with a grid of axes, each panel ``width`` x ``height`` inches."""
    plt = _pyplot()
    kwargs.setdefault("layout", "constrained")  # ~20x cheaper than tight_layout, same result here
    return plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False, **kwargs)


def save(fig: Any, path: Path) -> Path:
    """Write ``fig`` (PNG or SVG by the suffix) and close it; return ``path``.

    The file is written atomically (:func:`decaylab.lab.atomic.atomic_write`): ``path`` is the whole new
    figure or left as it was, never a truncated or empty image. Under :func:`rendering_share` only this
    process's share of the figures is written. Raises ``OSError`` (e.g. ``ENOSPC``) if it cannot be.
    """
    from decaylab.lab.atomic import atomic_write

    plt = _pyplot()
    mine = _share["seen"] % _share["count"] == _share["index"]
    _share["seen"] += 1
    if mine:
        if _note["text"]:
            _add_note(fig, _note["text"])
        path.parent.mkdir(parents=True, exist_ok=True)
        _thin_log_minor_ticks(fig)
        try:
            with atomic_write(path) as f:
                fig.savefig(f, format=path.suffix.lstrip(".").lower() or None)  # layout, rasterizing: the cost
        finally:
            plt.close(fig)
        return path
    plt.close(fig)
    return path


@contextmanager
def rendering_share(index: int, count: int) -> Iterator[None]:
    """Within the block, :func:`save` writes only figures ``index``, ``index + count``, … of those it is given.

    ``count`` processes that run the same plotting code, each with its own ``index``, write every figure
    exactly once between them: the figure worker uses this to render a run's figures on two cores.
    """
    _share.update(index=index, count=count, seen=0)
    try:
        yield
    finally:
        _share.update(index=0, count=1, seen=0)


@contextmanager
def figure_note(text: str) -> Iterator[None]:
    """Within the block, :func:`save` adds ``text`` (e.g. "2 of 8 configurations diverged ...") under each title."""
    _note["text"] = text
    try:
        yield
    finally:
        _note["text"] = ""


def _add_note(fig: Any, text: str) -> None:
    title = fig.get_suptitle()
    fig.suptitle(f"{title}\n{text}" if title else text, fontsize=10 if title else 9)


def nothing_finished(path: Path, title: str, note: str) -> Path:
    """A one-panel figure that says nothing finished (``note``: how many diverged, when) instead of empty axes."""
    fig, axes = new_figure(1, 1, width=6.0, height=2.4)
    ax = axes[0, 0]
    ax.set_axis_off()
    ax.text(0.5, 0.5, f"Nothing to draw: {note}.", ha="center", va="center", fontsize=11, wrap=True,
            transform=ax.transAxes)
    fig.suptitle(title, fontsize=10)
    with figure_note(""):
        return save(fig, path)


def lambda_colors(values: list[float]) -> dict[float, Any]:
    """One colour per value of lambda, light to dark in increasing order (viridis)."""
    plt = _pyplot()
    cmap = plt.get_cmap("viridis")
    ordered = sorted(set(values))
    n = max(len(ordered) - 1, 1)
    return {v: cmap(0.9 * i / n) for i, v in enumerate(ordered)}


def _thin_log_minor_ticks(fig: Any) -> None:
    """Drop the minor ticks of log axes that span more than ``MINOR_TICK_DECADES`` decades.

    There they are a grey blur of eight ticks per decade that nobody reads, and laying them out is
    most of the time matplotlib spends on a figure (measured: 2 of 3.6 s for D2L's curves figure).
    """
    from matplotlib.ticker import NullLocator

    for ax in fig.axes:
        for axis, limits in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
            lo, hi = sorted(limits)
            if axis.get_scale() == "log" and lo > 0 and math.log10(hi / lo) > MINOR_TICK_DECADES:
                axis.set_minor_locator(NullLocator())


def figures(experiment: Experiment, results: Sequence[ConfigResult], opts: dict[str, Any], out: Path) -> list[Path]:
    """Write ``experiment``'s figures of ``results`` into ``out``; return their paths.

    Only configurations that finished are drawn (a diverged one has no final numbers, and its curves stop);
    the figures say how many did not and at which epochs. When none finished, each of the module's
    ``figure_names`` is one panel that says so instead of an empty plot.
    """
    import importlib

    from decaylab.lab.experiments.base import unfinished_note

    module = importlib.import_module(f"{__name__}.{experiment.name.replace('-', '_')}")
    if hasattr(module, "figures"):
        return list(module.figures(experiment, results, opts, out))
    done = [r for r in results if r.status == "done"]
    note = unfinished_note(results)
    if not done:
        return [nothing_finished(out / name, f"{experiment.name}: {name}", note) for name in module.figure_names(opts)]
    with figure_note(f"{note}: not drawn" if note else ""):
        return list(module.draw(experiment, done, opts, out))
