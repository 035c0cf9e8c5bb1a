"""What the experiments' figures share: curves stacked over seeds, their mean with the range as a band,
and the note that says which seeds a figure shows."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from decaylab.results import ConfigResult

__all__ = ["band", "distinct_styles", "legend_outside", "seeds_note", "stack"]


def stack(group: Sequence[ConfigResult], key: str) -> np.ndarray:
    """Curve ``key`` of every result of ``group``: one row per result (seed), one column per epoch."""
    return np.array([r.curves[key] for r in group], dtype=float)


def band(
    ax: Any, x: Any, runs: np.ndarray, color: Any, label: str, style: str = "-", *, seed_axis: int = 0,
    alpha: float = 0.18, **line: Any,
) -> None:
    """The mean over seeds as a line, and the range over seeds as a band when there are several.

    ``runs`` holds one row per seed (``seed_axis=1``: one column per seed); ``line`` goes to ``ax.plot``
    (``lw``, ``ms``, ...), ``alpha`` is the band's.
    """
    ax.plot(x, np.nanmean(runs, axis=seed_axis), style, color=color, label=label, **line)
    if runs.shape[seed_axis] > 1:
        ax.fill_between(x, np.nanmin(runs, axis=seed_axis), np.nanmax(runs, axis=seed_axis), color=color, alpha=alpha, lw=0)


def seeds_note(opts: dict[str, Any], n_seeds: int, with_band: bool = False) -> str:
    """``mean over N seeds`` (``, band = range`` with ``with_band``), or ``seed S`` when the figure shows one seed."""
    if n_seeds > 1:
        return f"mean over {n_seeds} seeds" + (", band = range" if with_band else "")
    return f"seed {opts['seed'][0]}"


LINESTYLES = ("-", (0, (5, 2)), (0, (1, 1.5)), (0, (5, 2, 1, 2)))


def distinct_styles(n: int) -> list[tuple[Any, Any]]:
    """``n`` (colour, line style) pairs, no two alike: tab10 up to 10, tab20 up to 20, then tab20 again
    with the next dash pattern (solid, dashed, dotted, dash-dot: 80 before a pair repeats)."""
    import matplotlib as mpl

    cmap = mpl.colormaps["tab10" if n <= 10 else "tab20"]
    return [(cmap(i % cmap.N), LINESTYLES[(i // cmap.N) % len(LINESTYLES)]) for i in range(n)]


def legend_outside(ax: Any, **kwargs: Any) -> Any:
    """``ax``'s legend to the right of its box, top-aligned, so that it never covers the data (constrained
    layout makes room for it); ``kwargs`` go to ``ax.legend``."""
    kwargs.setdefault("frameon", False)
    return ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, **kwargs)
