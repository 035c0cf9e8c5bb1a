"""Figure of ``ridge-path``: coefficient paths, LOO/GCV error and effective degrees of freedom against λ."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from decaylab.lab.experiments.base import Experiment
from decaylab.lab.plots import new_figure, save
from decaylab.lab.plots.common import distinct_styles, legend_outside
from decaylab.results import ConfigResult

LAMBDA = "λ  (mean (ŷ−y)²/2 + λ/2‖w‖², D2L)"


def _lambda_axis(ax: Any, n: float) -> None:
    """λ on a log scale below, and a top axis with scikit-learn's alpha = n·λ."""
    ax.set_xscale("log")
    ax.set_xlabel(LAMBDA)
    top = ax.secondary_xaxis("top", functions=(lambda lam: lam * n, lambda alpha: alpha / n))
    top.set_xlabel(f"sklearn alpha = n·λ  (n = {int(n)})", fontsize=8)
    top.tick_params(labelsize=7)


def _choices(ax: Any, m: dict[str, float], with_labels: bool) -> None:
    ax.axvline(m["lambda_loo"], color="tab:red", lw=1.4, ls="-.",
               label=f"λ by LOO = {m['lambda_loo']:.3g}" if with_labels else None)
    ax.axvline(m["lambda_gcv"], color="tab:blue", lw=1.2, ls=":",
               label=f"λ by GCV = {m['lambda_gcv']:.3g}" if with_labels else None)
    ax.axvline(m["sklearn_lambda"], color="black", lw=1.0, ls=(0, (1, 2)),
               label=f"RidgeCV: alpha_/n = {m['sklearn_lambda']:.3g}" if with_labels else None)


def _window(loo: np.ndarray) -> tuple[int, int]:
    """Grid indices around the LOO minimum where the error stays within 3x its rise at the smallest λ."""
    i = int(np.nanargmin(loo))
    rise = max(loo[0] - loo[i], 0.0) or 0.005 * abs(loo[i]) or 1e-12
    inside = loo <= loo[i] + 3 * rise
    lo = i
    while lo > 0 and inside[lo - 1]:
        lo -= 1
    hi = i
    while hi < len(loo) - 1 and inside[hi + 1]:
        hi += 1
    return lo, max(hi, min(lo + 2, len(loo) - 1))


def plot_ridge_path(result: ConfigResult, opts: dict[str, Any], path: Path) -> Path:
    c, m = result.curves, result.metrics
    lams = np.asarray(c["lambd"], dtype=float)
    n = m["n_samples"]
    names = [k[len("coef[") : -1] for k in c if k.startswith("coef[")]
    fig, axes = new_figure(2, 2, width=5.4, height=4.0)
    (coef_ax, cv_ax), (zoom_ax, df_ax) = axes

    # (a) coefficient paths, the chosen λ, RidgeCV's coefficients at its own choice
    shown = names if len(names) <= 20 else names[:20]
    for name, (color, ls) in zip(shown, distinct_styles(len(shown)), strict=True):
        coef_ax.plot(lams, c[f"coef[{name}]"], color=color, ls=ls, lw=1.4, label=name)
    sk_coef = np.asarray(c["coef_sklearn"], dtype=float)
    coef_ax.plot(np.full(len(shown), m["sklearn_lambda"]), sk_coef[: len(shown)], "o", ms=5, mfc="none",
                 color="black", label="RidgeCV coef_ (at its alpha_)")
    _choices(coef_ax, m, with_labels=False)
    coef_ax.axhline(0, color="black", lw=0.6)
    unit = "z-scored features" if opts["standardize"] == "yes" else "raw features"
    coef_ax.set_ylabel(f"coefficient w_j ({unit})")
    more = f" (first 20 of {len(names)})" if len(names) > 20 else ""
    coef_ax.set_title(f"(a) Coefficient paths{more}, {len(lams)} λ from one SVD")
    legend_outside(coef_ax, fontsize=7, ncol=1 if len(shown) <= 12 else 2)
    _lambda_axis(coef_ax, n)

    # (b) LOO and GCV against λ, RidgeCV's stored LOO errors as markers
    cv_ax.plot(lams, c["loo_mse"], color="tab:red", lw=1.8, label="exact LOO (decaylab, hat matrix)")
    cv_ax.plot(lams, c["gcv"], color="tab:blue", lw=1.4, ls="--", label="GCV (decaylab)")
    every = max(1, len(lams) // 30)
    cv_ax.plot(lams[::every], np.asarray(c["sklearn_loo_mse"])[::every], "o", ms=3.5, mfc="none", color="black",
               label="RidgeCV per-sample LOO errors, mean")
    _choices(cv_ax, m, with_labels=True)
    cv_ax.set_yscale("log")
    cv_ax.set_ylabel("mean squared error (ŷ−y)² (no ½)")
    cv_ax.set_title("(b) Cross-validation error over the whole grid")
    legend_outside(cv_ax, fontsize=7)
    _lambda_axis(cv_ax, n)

    # (c) the same near the minimum, linear scale: where the choice is made
    loo, gcv = np.asarray(c["loo_mse"], dtype=float), np.asarray(c["gcv"], dtype=float)
    lo, hi = _window(loo)
    sel = slice(lo, hi + 1)
    zoom_ax.plot(lams[sel], loo[sel], color="tab:red", lw=1.8, label="exact LOO (decaylab)")
    zoom_ax.plot(lams[sel], gcv[sel], color="tab:blue", lw=1.4, ls="--", label="GCV (decaylab)")
    zoom_ax.plot(lams[sel], np.asarray(c["sklearn_loo_mse"])[sel], "o", ms=3, mfc="none", color="black",
                 label="RidgeCV LOO (every grid point)")
    _choices(zoom_ax, m, with_labels=False)
    zoom_ax.plot([m["lambda_loo"]], [m["loo_min"]], "*", ms=12, color="tab:red", mec="black", mew=0.6,
                 label=f"LOO min = {m['loo_min']:.6g} at df = {m['df_loo']:.3g}")
    zoom_ax.plot([m["lambda_gcv"]], [m["gcv_min"]], "*", ms=12, color="tab:blue", mec="black", mew=0.6,
                 label=f"GCV min = {m['gcv_min']:.6g} at df = {m['df_gcv']:.3g}")
    ys = np.concatenate([loo[sel], gcv[sel]])
    pad = 0.08 * (ys.max() - ys.min() or abs(ys.max()) * 1e-3 or 1.0)
    zoom_ax.set_ylim(ys.min() - pad, ys.max() + pad)
    zoom_ax.set_ylabel("mean squared error (ŷ−y)² (no ½)")
    zoom_ax.set_title("(c) Zoom on the minimum (linear error scale)")
    legend_outside(zoom_ax, fontsize=7)
    _lambda_axis(zoom_ax, n)

    # (c) effective degrees of freedom
    df_ax.plot(lams, c["df"], color="tab:green", lw=1.8, label="df(λ) = Σ s_j²/(s_j² + nλ)")
    df_ax.axhline(m["n_features"], color="0.4", ls=":", lw=1, label=f"d = {int(m['n_features'])} (λ → 0)")
    _choices(df_ax, m, with_labels=False)
    df_ax.plot([m["lambda_loo"]], [m["df_loo"]], "o", color="tab:red", ms=6,
               label=f"df at LOO choice = {m['df_loo']:.3g}")
    df_ax.set_ylabel("effective degrees of freedom (intercept not counted)")
    df_ax.set_title("(d) Effective degrees of freedom")
    legend_outside(df_ax, fontsize=7)
    _lambda_axis(df_ax, n)

    seed = f", seed {result.params['seed']}" if opts["data"] == "synthetic" else ""
    fig.suptitle(
        f"Ridge path on {opts['data']}{seed} (n = {int(n)}, d = {int(m['n_features'])}, {unit}):"
        f" RidgeCV picks the same λ: {'yes' if m['same_choice'] == 1 else 'NO'},"
        f" max |Δw| = {m['coef_max_abs_diff']:.1e}",
        fontsize=10,
    )
    return save(fig, path)


def figure_names(opts: dict[str, Any]) -> list[str]:
    """The files :func:`draw` writes (when nothing finished, each is one panel saying so)."""
    return ["ridge_path.png"]


def draw(experiment: Experiment, results: Sequence[ConfigResult], opts: dict[str, Any], out: Path) -> list[Path]:
    """Write the figures of ``results`` (every one finished) into ``out``; return their paths."""
    done = [r for r in results if r.status == "done" and r.curves]
    return [plot_ridge_path(done[0], opts, out / "ridge_path.png")] if done else []
