"""What a readable figure must satisfy, checked on a drawn matplotlib ``Figure`` (not a test module).

:func:`problems` lays the figure out once (``fig.draw_without_rendering()``: the extents, no pixels) and returns one line per
defect, empty when there is none:

* **legend over the data** — no data point lies inside any legend's box (the legend's window extent).
  The points are, in display coordinates: the vertices of every line drawn in data coordinates, sampled
  every :data:`STEP_PX` pixels along each segment (so that a long straight segment through a legend is
  seen); scatter points; the segments of line collections (error bars, colour-mapped curves), sampled the
  same way; the outline of bars and step histograms. Reference lines and spans drawn in axes coordinates
  (``axhline``, ``axvspan``) and the bands of ``fill_between`` are not data and may lie under a legend.
  Only points inside their own axes' box count (what is clipped is not drawn). Every legend, of an
  ``Axes`` or of the figure, is checked against the data of every ``Axes``.
* **series that look alike** — no two labelled series of one ``Axes`` (the entries of its legend) share
  line style, marker and marker fill with colours closer than :data:`MIN_DELTA_E` (CIE76 ΔE in CIELAB,
  the usual "just noticeable" scale: 2.3 is a just-noticeable difference; two viridis shades 0.1 apart
  are about 10).
* **an empty panel** — every visible ``Axes`` (colour bars aside) shows data — a line with two finite
  points, or a marker with one, a scatter point, a bar — or carries a text that says why it has none.
* **colour-bar ticks at odd values** — every tick label of a colour bar is a round number: at most two
  significant digits (``0.25``, ``2``, ``1e-3``, ``10^{-2}``).
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

__all__ = ["MIN_DELTA_E", "STEP_PX", "problems", "figure_text", "lab"]

STEP_PX = 2.0  # sampling step along segments, in display pixels
MIN_DELTA_E = 12.0  # colours of two series with the same line style and marker must differ by more (CIE76)


# -- colour -----------------------------------------------------------------------------------
def lab(rgb: Any) -> np.ndarray:
    """sRGB (0..1) to CIELAB under D65 (the standard formulas of IEC 61966-2-1 and CIE 15)."""
    c = np.asarray(rgb, dtype=float)[..., :3]
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    m = np.array([[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750], [0.0193339, 0.1191920, 0.9503041]])
    xyz = linear @ m.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], axis=-1)


def delta_e(a: Any, b: Any) -> float:
    """CIE76 colour difference of two sRGB colours."""
    return float(np.linalg.norm(lab(a) - lab(b)))


# -- what is data -----------------------------------------------------------------------------
def _in_data_coords(artist: Any, ax: Any) -> bool:
    """Drawn in the axes' data coordinates (not a reference line or span in axes coordinates)."""
    t = artist.get_transform()
    return t == ax.transData or (t.contains_branch(ax.transData) and not t.contains_branch(ax.transAxes))


def _sample(xy: np.ndarray) -> np.ndarray:
    """Points every :data:`STEP_PX` pixels along the polyline ``xy`` (display coordinates); NaN breaks it."""
    if len(xy) == 0:
        return np.zeros((0, 2))
    pieces = []
    a, b = xy[:-1], xy[1:]
    ok = np.all(np.isfinite(a), axis=1) & np.all(np.isfinite(b), axis=1)
    a, b = a[ok], b[ok]
    if len(a):
        n = np.maximum(np.ceil(np.linalg.norm(b - a, axis=1) / STEP_PX).astype(int), 1)
        seg = np.repeat(np.arange(len(a)), n + 1)  # segment i gets n_i + 1 points, t = 0, 1/n_i, ..., 1
        start = np.concatenate([[0], np.cumsum(n + 1)[:-1]])
        t = (np.arange(len(seg)) - start[seg]) / n[seg]
        pieces.append(a[seg] + (b[seg] - a[seg]) * t[:, None])
    return np.concatenate([*pieces, xy[np.all(np.isfinite(xy), axis=1)]])


def _line_points(line: Any) -> np.ndarray:
    xy = line.get_transform().transform(np.asarray(line.get_xydata(), dtype=float))
    if line.get_linestyle() in ("None", "", " ", "none"):
        return xy[np.all(np.isfinite(xy), axis=1)]
    return _sample(xy)


def data_points(ax: Any) -> np.ndarray:
    """Display coordinates of ``ax``'s data, inside its box (see the module docstring)."""
    from matplotlib.collections import LineCollection, PathCollection
    from matplotlib.patches import Rectangle, StepPatch

    parts = []
    for line in ax.lines:
        if line.get_visible() and _in_data_coords(line, ax):
            parts.append(_line_points(line))
    for coll in ax.collections:
        if not coll.get_visible():
            continue
        if isinstance(coll, PathCollection) and coll.get_offset_transform().contains_branch(ax.transData):
            offsets = np.asarray(coll.get_offsets(), dtype=float)
            if offsets.size:
                parts.append(coll.get_offset_transform().transform(offsets))
        elif isinstance(coll, LineCollection) and _in_data_coords(coll, ax):
            for seg in coll.get_segments():
                if len(seg):
                    parts.append(_sample(coll.get_transform().transform(np.asarray(seg, dtype=float))))
    for patch in ax.patches:
        if patch.get_visible() and isinstance(patch, (Rectangle, StepPatch)) and _in_data_coords(patch, ax):
            poly = patch.get_transform().transform(patch.get_path().vertices)
            parts.append(_sample(np.vstack([poly, poly[:1]])))
    if not parts:
        return np.zeros((0, 2))
    pts = np.concatenate(parts)
    box = ax.bbox
    inside = (pts[:, 0] >= box.x0 - 0.5) & (pts[:, 0] <= box.x1 + 0.5) & (pts[:, 1] >= box.y0 - 0.5) & (pts[:, 1] <= box.y1 + 0.5)
    return pts[inside]


def has_data(ax: Any) -> bool:
    """A line with two finite points (or a marker with one), a scatter point, a bar, an image, a collection."""
    for line in ax.lines:
        if not line.get_visible():
            continue
        xy = np.asarray(line.get_xydata(), dtype=float)
        n = int(np.all(np.isfinite(xy), axis=1).sum()) if xy.size else 0
        drawn_line = line.get_linestyle() not in ("None", "", " ", "none") and n >= 2
        if _in_data_coords(line, ax) and (drawn_line or (line.get_marker() not in (None, "None", "", " ", "none") and n >= 1)):
            return True
    for coll in ax.collections:
        if coll.get_visible() and (len(coll.get_paths()) or len(coll.get_offsets())):
            from matplotlib.collections import PathCollection

            if isinstance(coll, PathCollection):
                offsets = np.asarray(coll.get_offsets(), dtype=float)
                if offsets.size and np.isfinite(offsets).all(axis=1).any():
                    return True
            elif _in_data_coords(coll, ax):
                return True
    if any(p.get_visible() and _in_data_coords(p, ax) for p in ax.patches):
        return True
    return bool(ax.images)


def _is_colorbar(ax: Any) -> bool:
    return getattr(ax, "_colorbar", None) is not None


# -- the checks -----------------------------------------------------------------------------------
def _where(ax: Any) -> str:
    title = ax.get_title() or ax.get_title("left") or ax.get_ylabel()
    return repr(title.split("\n")[0][:60])


def _legend_problems(fig: Any, renderer: Any) -> list[str]:
    legends = [(ax, ax.get_legend()) for ax in fig.axes] + [(None, leg) for leg in fig.legends]
    points = {id(ax): data_points(ax) for ax in fig.axes if not _is_colorbar(ax) and ax.get_visible()}
    out = []
    for owner, legend in legends:
        if legend is None or not legend.get_visible():
            continue
        box = legend.get_window_extent(renderer)
        for ax in fig.axes:
            pts = points.get(id(ax))
            if pts is None or not len(pts):
                continue
            inside = (pts[:, 0] > box.x0) & (pts[:, 0] < box.x1) & (pts[:, 1] > box.y0) & (pts[:, 1] < box.y1)
            if inside.any():
                who = "the figure's legend" if owner is None else f"the legend of {_where(owner)}"
                out.append(f"{who} covers {int(inside.sum())} data points of {_where(ax)}")
    return out


def _style(artist: Any) -> tuple[Any, ...] | None:
    from matplotlib.colors import to_rgba
    from matplotlib.lines import Line2D

    if isinstance(artist, Line2D):
        ls = artist.get_linestyle()
        dashes = tuple(np.round(artist._unscaled_dash_pattern[1] or (), 2)) if ls not in ("None", "-") else ()
        fill = artist.get_markerfacecolor()
        filled = not (isinstance(fill, str) and fill.lower() == "none")
        marker = artist.get_marker()
        return (ls, dashes, str(marker) if marker not in (None, "", " ") else "None", filled), to_rgba(artist.get_color())
    return None


def _style_problems(fig: Any) -> list[str]:
    out = []
    for ax in fig.axes:
        if _is_colorbar(ax) or not ax.get_visible():
            continue
        series = [(line.get_label(), _style(line)) for line in ax.lines
                  if line.get_visible() and not line.get_label().startswith("_")]
        for i, (label_a, (kind_a, color_a)) in enumerate(series):
            for label_b, (kind_b, color_b) in series[i + 1 :]:
                if kind_a == kind_b and delta_e(color_a, color_b) < MIN_DELTA_E:
                    out.append(f"{_where(ax)}: {label_a!r} and {label_b!r} look alike "
                               f"(same style, colour ΔE = {delta_e(color_a, color_b):.1f})")
    return out


def _empty_problems(fig: Any) -> list[str]:
    out = []
    for ax in fig.axes:
        if _is_colorbar(ax) or not ax.get_visible():
            continue
        if not has_data(ax) and not any(t.get_visible() and t.get_text().strip() for t in ax.texts):
            out.append(f"{_where(ax)} shows no data and no text saying why")
    return out


_SUPERSCRIPT = re.compile(r"^\$?\\?(?:mathdefault\{)?10\^\{?[−-]?\d+\}?\}?\$?$")


def round_number(text: str) -> bool:
    """A tick label that is a round number: at most two significant digits, or a power of ten."""
    text = text.strip().replace("−", "-").replace("\\mathdefault{", "").replace("$", "").rstrip("}")
    if not text:
        return True
    if re.fullmatch(r"(?:\d(?:\.\d)?\\times)?10\^\{?-?\d+\}?", text):
        return True
    if re.fullmatch(r"(?:\d(?:\.\d)?×)?10⁻?[⁰¹²³⁴⁵⁶⁷⁸⁹]+", text):  # plain-text labels (decaylab.lab.plots.plain_log_labels)
        return True
    try:
        value = float(text)
    except ValueError:
        return False
    return value == 0 or math.isclose(float(f"{value:.2g}"), value, rel_tol=1e-9)


def _colorbar_problems(fig: Any) -> list[str]:
    out = []
    for ax in fig.axes:
        bar = getattr(ax, "_colorbar", None)
        if bar is None:
            continue
        axis = ax.yaxis if bar.orientation == "vertical" else ax.xaxis
        labels = [t.get_text() for t in axis.get_ticklabels() if t.get_visible() and t.get_text()]
        odd = [t for t in labels if not round_number(t)]
        if odd or len(labels) < 2:
            out.append(f"colour bar {bar.ax.get_ylabel() or bar.ax.get_xlabel()!r}: tick labels {labels} "
                       f"({'not round: ' + repr(odd) if odd else 'fewer than two'})")
    return out


def problems(fig: Any) -> list[str]:
    """Every defect of ``fig`` (see the module docstring), one line each; lays the figure out once."""
    fig.draw_without_rendering()  # layout and extents, no pixels
    renderer = fig.canvas.get_renderer()
    return _legend_problems(fig, renderer) + _style_problems(fig) + _empty_problems(fig) + _colorbar_problems(fig)


def figure_text(fig: Any) -> str:
    """Every text of ``fig``: titles, labels, annotations, legend entries, the suptitle (one string)."""
    from matplotlib.text import Text

    return "\n".join(t.get_text() for t in fig.findobj(Text) if t.get_text())
