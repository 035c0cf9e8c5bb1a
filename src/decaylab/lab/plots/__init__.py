"""Figures. matplotlib is imported here only, with the non-interactive Agg backend.

Each experiment ``NAME`` has its figures in ``decaylab.lab.plots.NAME`` (``-`` read as ``_``), which defines
either ``figure_names(opts)`` and ``draw(experiment, done, opts, out)`` — drawn from the configurations that
finished, :func:`figures` saying how many did not — or ``figures(experiment, results, opts, out)``, which
draws what there is itself. The experiments never import their figures: the figures read the experiments.

A module may also define ``prepare(experiment, opts)``, called by :func:`prepare` in the figure worker while
the parent still imports torch and trains: it builds its figures from the options alone, lays them out
with stand-in data (:func:`lay_out_ahead`) and keeps them, so that once the results come only the data is
drawn into them. What is drawn must be the figure a fresh one would be: :func:`save` checks it (see there).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, cast

if TYPE_CHECKING:
    from decaylab.lab.experiments.base import Experiment
    from decaylab.results import ConfigResult

__all__ = [
    "data_artists",
    "figures",
    "figure_note",
    "lambda_colors",
    "lay_out_ahead",
    "new_figure",
    "nothing_finished",
    "plain_log_labels",
    "prepare",
    "rendering_share",
    "save",
]

MINOR_TICK_DECADES = 4  # log axes spanning more decades than this get no minor ticks
PNG_COMPRESS_LEVEL = 1  # zlib level of the PNG files: Pillow's default 6 takes twice the time for files ~5 % smaller
_LAID_OUT = "_decaylab_laid_out"  # attribute of a figure laid out ahead: every Axes' tight box, see lay_out_ahead

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

    A figure laid out ahead (:func:`lay_out_ahead`) is drawn once in its fixed layout and written from
    that drawing if every Axes, with everything around it (tick labels, axis labels, title, legend), stays
    inside the box it had when the layout was made; otherwise (or with a note to add, or for SVG) it is
    laid out again with constrained layout, as a fresh figure is.
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
        fmt = path.suffix.lstrip(".").lower() or "png"
        try:
            if fmt == "png" and not _note["text"] and _drawn_in_fixed_layout(fig):
                from matplotlib.image import imsave

                with atomic_write(path) as f:  # the drawing just made, as savefig would write it
                    imsave(cast("BinaryIO", f), fig.canvas.buffer_rgba(), format="png", dpi=fig.dpi,
                           pil_kwargs={"compress_level": PNG_COMPRESS_LEVEL})
            else:
                if getattr(fig, _LAID_OUT, None) is not None:
                    fig.set_layout_engine("constrained")
                kwargs = {"pil_kwargs": {"compress_level": PNG_COMPRESS_LEVEL}} if fmt == "png" else {}
                with atomic_write(path) as f:
                    fig.savefig(f, format=fmt, **kwargs)  # layout, rasterizing: the cost
        finally:
            plt.close(fig)
        return path
    plt.close(fig)
    return path


def data_artists(fig: Any) -> list[Any]:
    """The lines, collections, patches and texts of every Axes of ``fig`` (what :func:`lay_out_ahead` can
    take out again)."""
    return [a for ax in fig.axes for group in (ax.lines, ax.collections, ax.patches, ax.texts) for a in group]


def lay_out_ahead(fig: Any, stand_in: list[Any]) -> None:
    """Fix ``fig``'s layout now, with the artists ``stand_in`` (stand-in data) in it, then take them out.

    The figure is drawn once with its layout engine (constrained layout: its positions, and the caches
    of text extents, glyphs and ticks of this figure's renderer), every Axes' tight box (the Axes with its
    tick labels, axis labels, title and legend) is recorded, the layout engine is removed (the positions
    stay) and ``stand_in`` is removed, each Axes' data limits recomputed from what is left. The real data
    drawn into the figure later is written by :func:`save` in these positions only if it fits the same
    boxes; so stand-in data should make the widest labels the real data may have.
    """
    minor = [(axis, axis.get_minor_locator()) for ax in fig.axes for axis in (ax.xaxis, ax.yaxis)]
    _thin_log_minor_ticks(fig)  # for the stand-in's range (unlabelled ticks: no say in the layout)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = [ax.get_tightbbox(renderer) if ax.get_visible() else None for ax in fig.axes]
    fig.set_layout_engine("none")
    for axis, locator in minor:  # the real data's range decides them again in save()
        axis.set_minor_locator(locator)
    for artist in stand_in:
        artist.remove()
    for ax in fig.axes:
        ax.relim()
    setattr(fig, _LAID_OUT, boxes)


def _drawn_in_fixed_layout(fig: Any) -> bool:
    """Draw a figure laid out ahead in its fixed layout; whether everything fits the boxes of the layout
    (:func:`lay_out_ahead`). ``False`` at once, drawing nothing, for any other figure."""
    boxes = getattr(fig, _LAID_OUT, None)
    if boxes is None or len(boxes) != len(fig.axes):
        return False
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for ax, box in zip(fig.axes, boxes, strict=True):
        if box is None:
            if ax.get_visible():
                return False
            continue
        now = ax.get_tightbbox(renderer)
        if now is None or now.x0 < box.x0 - 0.5 or now.y0 < box.y0 - 0.5 or now.x1 > box.x1 + 0.5 or now.y1 > box.y1 + 0.5:
            return False
    return True


def prepare(experiment: Experiment, opts: dict[str, Any], stop: Callable[[], bool] | None = None) -> bool:
    """Build ahead whatever ``experiment``'s figures module can from ``opts`` alone (its ``prepare``, if it
    has one); whether it did. Figures that do not match the results when they come are not used.

    ``stop()`` is asked before each figure: once it is true (the results have come: a short run), the
    figures not prepared yet are left to be drawn afresh rather than prepared first.
    """
    import importlib

    module = importlib.import_module(f"{__name__}.{experiment.name.replace('-', '_')}")
    if not hasattr(module, "prepare"):
        return False
    module.prepare(experiment, opts, stop or (lambda: False))
    return True


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


_SUPERSCRIPTS = str.maketrans("-−0123456789", "⁻⁻⁰¹²³⁴⁵⁶⁷⁸⁹")
_SCI_LABEL = re.compile(r"^\$\\mathdefault\{(?P<sign>[-−]?)(?:(?P<coeff>[\d.]+)\\times\s?)?(?P<base>10)\^\{(?P<exp>[-−]?\d+)\}\}\$$")


def _plain(label: str) -> str:
    """A log axis' mathtext label (``$\\mathdefault{10^{-3}}$``, ``$\\mathdefault{2\\times10^{-1}}$``) as plain
    text with superscript digits (``10⁻³``, ``2×10⁻¹``); any other label as it is."""
    match = _SCI_LABEL.match(label)
    if match is None:
        return label
    sign = "−" if match["sign"] else ""
    coeff = f"{match['coeff']}×" if match["coeff"] else ""
    return f"{sign}{coeff}{match['base']}{match['exp'].translate(_SUPERSCRIPTS)}"


def plain_log_labels(ax: Any) -> None:
    """Label ``ax``'s log (and symlog) axes ``10⁻³`` in plain text instead of mathtext ``10^{-3}``.

    The same labels at the same places (matplotlib's own ``LogFormatterSciNotation`` decides them), drawn
    with the font's superscript digits: no mathtext parse (~10 ms a label) and no mathtext font cache,
    which a forked process would share with its parent. Call it after the axis' scale is set.
    """
    from matplotlib.ticker import LogFormatterSciNotation

    class PlainLogFormatter(LogFormatterSciNotation):
        def __call__(self, x: float, pos: int | None = None) -> str:
            return _plain(super().__call__(x, pos))

    for axis in (ax.xaxis, ax.yaxis):
        for get, set_ in ((axis.get_major_formatter, axis.set_major_formatter),
                          (axis.get_minor_formatter, axis.set_minor_formatter)):
            old: Any = get()  # its settings are private attributes, copied to the new formatter
            if type(old) is LogFormatterSciNotation:
                settings: Any = old
                set_(PlainLogFormatter(base=settings._base, labelOnlyBase=settings.labelOnlyBase,
                                       minor_thresholds=settings.minor_thresholds, linthresh=settings._linthresh))


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
