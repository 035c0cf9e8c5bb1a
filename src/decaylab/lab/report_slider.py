"""The λ slider of an HTML report: which parameter is λ, and the curves the page embeds for it.

A run has a slider when one of its configurations' parameters is λ-like (:data:`LAMBDA_PARAMS`: a
weight-decay coefficient under one of the names the experiments and ``decaylab sweep`` use), numeric, and
takes at least two values. For each value ``v`` of that parameter the page holds, per *setting* (the values
of the other parameters that vary, seeds left out), the mean over seeds of each curve, epoch by epoch,
over the configurations that finished (status ``done``); and, for every value, the final ``‖w‖`` (mean over
seeds and settings). The curves of at most :data:`MAX_CURVE_VALUES` values of λ are embedded (evenly
spread over the grid, both ends kept), each curve with at most :data:`MAX_POINTS` points (every k-th epoch
and the last), at most :data:`MAX_SETTINGS` settings per value; the page says what it left out.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from decaylab.results import ConfigResult

__all__ = ["LAMBDA_PARAMS", "MAX_CURVE_VALUES", "MAX_POINTS", "MAX_SETTINGS", "lambda_param", "slider_data"]

# λ-like parameter names, in order of preference: D2L's lambd, sweep's decoupled and L1 grids, the wd of
# l2-vs-decay and dropout-mlp, torch.optim's weight_decay, and plain lambda / l2 / alpha (scikit-learn)
LAMBDA_PARAMS = ("lambd", "wd", "weight_decay", "decoupled", "l1", "lambda", "l2", "alpha")
LABELS = {"lambd": "λ", "wd": "λ (weight_decay)", "weight_decay": "λ (weight_decay)", "decoupled": "λ decoupled",
          "l1": "λ₁", "lambda": "λ", "l2": "λ (L2)", "alpha": "α"}
NORM_KEYS = ("w_norm", "weight_norm", "param_norm", "norm")
MAX_CURVE_VALUES = 200  # values of λ whose curves the page embeds
MAX_POINTS = 500  # points per embedded curve
MAX_SETTINGS = 4  # settings (other swept values) drawn per value of λ

CurveReader = Callable[[int], dict[str, list[Any]]]  # configuration index -> its curves


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def lambda_param(results: Sequence[ConfigResult]) -> str | None:
    """The first of :data:`LAMBDA_PARAMS` that every configuration has as a finite number, with at
    least two distinct values across ``results``; ``None`` when there is none (no slider)."""
    for name in LAMBDA_PARAMS:
        values = [r.params.get(name) for r in results]
        if values and all(_number(v) for v in values) and len(set(values)) >= 2:
            return name
    return None


def _spread(n: int, k: int) -> list[int]:
    """``min(n, k)`` indices of ``range(n)``, evenly spread, first and last included."""
    if n <= k:
        return list(range(n))
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)})


def _thin(values: list[Any], keep: list[int]) -> list[Any]:
    return [values[i] for i in keep]


def _finite_or_none(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _mean_curves(curves: list[dict[str, list[Any]]], names: list[str]) -> dict[str, list[float | None]]:
    """Epoch by epoch, the mean of each curve over ``curves`` (all of one length); NaN/inf as ``None``."""
    import numpy as np

    out: dict[str, list[float | None]] = {}
    for name in names:
        rows = [c[name] for c in curves if name in c]
        if rows and len({len(r) for r in rows}) == 1:
            mean = np.asarray(rows, dtype=float).mean(axis=0)
            out[name] = [_finite_or_none(x) for x in mean]
    return out


def _setting_label(params: dict[str, Any], others: list[str]) -> str:
    return ", ".join(f"{LABELS.get(k, k)}={params[k]:g}" if _number(params[k]) else f"{k}={params[k]}" for k in others)


def _mean_final(results: list[ConfigResult], key: str) -> float | None:
    values = [r.metrics.get(key, math.nan) for r in results if r.status == "done"]
    values = [float(v) for v in values if _number(v)]
    return sum(values) / len(values) if values else None


def slider_data(results: Sequence[ConfigResult], read_curves: CurveReader) -> dict[str, Any] | None:
    """The JSON the page's slider draws from, or ``None`` when the run has no λ-like grid.

    ``read_curves(i)`` returns configuration ``i``'s curves (from the store, so that a run of thousands
    of configurations reads only the ones embedded). Keys: ``param``, ``label``, ``values`` (every λ),
    ``entries`` (one per embedded λ: ``value``, ``final_norm``, ``text``, ``settings`` with ``label``,
    ``epoch`` and ``curves``), ``curve_names``, ``norm_key``, ``norm_curve`` (whether ‖w‖ has a curve per epoch), ``overview`` (final ‖w‖ against every λ),
    ``note`` (what was left out).
    """
    param = lambda_param(results)
    if param is None:
        return None
    skip = {param, "seed"}
    others = [k for k in results[0].params if k not in skip and len({repr(r.params.get(k)) for r in results}) > 1]
    by_value: dict[float, list[int]] = {}
    for i, r in enumerate(results):
        by_value.setdefault(float(r.params[param]), []).append(i)
    values = sorted(by_value)
    metric_names = [k for r in results for k in r.metrics]
    norm_key = next((k for k in NORM_KEYS if k in metric_names), None)
    shown = _spread(len(values), MAX_CURVE_VALUES)
    entries: list[dict[str, Any]] = []
    curve_names: list[str] = []
    notes: list[str] = []
    settings_cut = 0
    thinned = False
    for vi in shown:
        value = values[vi]
        members = by_value[value]
        groups: dict[str, list[int]] = {}
        for i in members:
            groups.setdefault(_setting_label(results[i].params, others), []).append(i)
        settings_cut += max(len(groups) - MAX_SETTINGS, 0)
        settings: list[dict[str, Any]] = []
        for label, idxs in list(groups.items())[:MAX_SETTINGS]:
            done = [i for i in idxs if results[i].status == "done"]
            curves = [read_curves(i) for i in done]
            if not curves:
                continue
            first = curves[0]
            length = len(first["epoch"]) if "epoch" in first else max((len(v) for v in first.values()), default=0)
            epoch = list(first["epoch"]) if "epoch" in first else list(range(1, length + 1))
            names = [k for k, v in first.items() if k != "epoch" and len(v) == length]  # one value per epoch
            for name in names:
                if name != norm_key and name not in curve_names:
                    curve_names.append(name)
            mean = _mean_curves(curves, names)
            keep = _spread(len(epoch), MAX_POINTS)
            thinned = thinned or len(keep) < len(epoch)
            settings.append({"label": label, "n_seeds": len(done), "epoch": _thin(epoch, keep),
                             "curves": {k: _thin(v, keep) for k, v in mean.items()}})
        finished = sum(results[i].status == "done" for i in members)
        text = f"mean over {finished} of {len(members)} configuration{'s' if len(members) != 1 else ''} that finished"
        entries.append({"value": value, "final_norm": _mean_final([results[i] for i in members], norm_key) if norm_key else None,
                        "text": text, "settings": settings})
    if len(shown) < len(values):
        notes.append(f"curves of {len(shown)} of the {len(values)} values of {LABELS.get(param, param)} are embedded"
                     " (evenly spread, both ends kept)" + (f"; the final ‖w‖₂ of all {len(values)} is drawn" if norm_key else ""))
    if thinned:
        notes.append(f"curves are thinned to at most {MAX_POINTS} points (every k-th epoch and the last)")
    if settings_cut:
        notes.append(f"at most {MAX_SETTINGS} settings of {', '.join(others)} are drawn per value ({settings_cut} left out)")
    loss_like = [n for n in curve_names if "loss" in n] or curve_names
    positive = all(x is None or x > 0 for e in entries for s in e["settings"] for n in loss_like for x in s["curves"].get(n, []))
    finals = [_mean_final([results[i] for i in by_value[v]], norm_key) if norm_key else None for v in values]
    return {
        "param": param,
        "label": LABELS.get(param, param),
        "values": values,
        "entries": entries,
        "curve_names": loss_like,
        "curves_label": "loss" if any("loss" in n for n in loss_like) else "value",
        "curves_log": positive,
        "norm_key": norm_key,
        "norm_label": "‖w‖₂" if norm_key else "norm",
        "norm_curve": bool(norm_key) and any(norm_key in s["curves"] for e in entries for s in e["settings"]),
        "x_log": values[0] > 0 and values[-1] / values[0] > 100,
        "overview": {"values": values, "norm": finals},
        "note": "; ".join(notes),
    }
