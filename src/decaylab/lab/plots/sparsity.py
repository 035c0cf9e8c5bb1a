"""Figures of ``sparsity``: coefficient paths (as scikit-learn's lasso-path figure) and support recovery."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from decaylab.lab.experiments.base import Experiment
from decaylab.lab.plots import new_figure, save
from decaylab.results import ConfigResult

OBJECTIVE = {
    "l1": "mean (ŷ−y)²/2 + λ‖w‖₁",
    "enet": "mean (ŷ−y)²/2 + λ(ρ‖w‖₁ + (1−ρ)/2‖w‖²)",
    "l2": "mean (ŷ−y)²/2 + λ/2‖w‖²",
}
TITLE = {"l1": "L1 (lasso), proximal GD", "enet": "Elastic net, proximal GD", "l2": "L2 (ridge), GD"}
REFERENCE = {
    "l1": "sklearn lasso_path(alpha=λ)",
    "enet": "sklearn enet_path(alpha=λ, l1_ratio=ρ)",
    "l2": "sklearn Ridge(alpha=n·λ)",
}
COLORS = {"l1": "tab:blue", "enet": "tab:purple", "l2": "tab:orange"}


def _methods(results: Sequence[ConfigResult], opts: dict[str, Any]) -> list[str]:
    present = {r.params["method"] for r in results if r.curves}
    return [m for m in opts["methods"] if m in present]


def _path(results: Sequence[ConfigResult], method: str, seed: int) -> tuple[np.ndarray, list[ConfigResult]]:
    runs = sorted(
        (r for r in results if r.curves and r.params["method"] == method and r.params["seed"] == seed),
        key=lambda r: r.params["lambd"],
    )
    return np.array([r.params["lambd"] for r in runs], dtype=float), runs


def _mean_curve(results: Sequence[ConfigResult], method: str, key: str) -> tuple[np.ndarray, np.ndarray]:
    groups: dict[float, list[float]] = {}
    for r in results:
        if r.status == "done" and r.params["method"] == method:
            groups.setdefault(r.params["lambd"], []).append(r.metrics.get(key, math.nan))
    lams = np.array(sorted(groups), dtype=float)
    vals = []
    for lam in lams:
        arr = np.array(groups[lam], dtype=float)
        vals.append(np.nanmean(arr) if np.isfinite(arr).any() else np.nan)
    return lams, np.array(vals)


def _shade_exact(ax: Any, lams: np.ndarray, exact: np.ndarray, label: str | None) -> None:
    """Shade each run of consecutive grid points where the selected set is exactly the true support."""
    if len(lams) < 2:
        return
    edges = np.sqrt(lams[1:] * lams[:-1])  # geometric midpoints (log axis)
    lo_edges = np.concatenate([[lams[0]], edges])
    hi_edges = np.concatenate([edges, [lams[-1]]])
    first = True
    for i in np.flatnonzero(exact):
        ax.axvspan(lo_edges[i], hi_edges[i], color="tab:green", alpha=0.13, lw=0,
                   label=label if first else None)
        first = False


def plot_paths(results: Sequence[ConfigResult], opts: dict[str, Any], path: Path) -> Path:
    """Coefficient against λ for each method, true non-zeros in colour, scikit-learn's solution as dots."""
    methods = _methods(results, opts)
    seed = opts["seed"][0]
    fig, axes = new_figure(1, max(len(methods), 1), width=4.6, height=4.2, sharey=True)
    handles: dict[str, Any] = {}
    for ax, method in zip(axes[0], methods, strict=True):
        lams, runs = _path(results, method, seed)
        if not runs:
            continue
        coef = np.array([r.curves["coef"] for r in runs])
        ref = np.array([r.curves["coef_sklearn"] for r in runs])
        truth = np.array(runs[0].curves["true_coef"])
        support = np.flatnonzero(truth != 0)
        zeros = np.flatnonzero(truth == 0)
        exact = np.array([r.metrics.get("support_exact", 0) == 1 for r in runs])
        _shade_exact(ax, lams, exact, None)
        for j in zeros:
            (line,) = ax.plot(lams, coef[:, j], color="0.55", lw=0.7, alpha=0.6)
            handles.setdefault(f"truly zero ({len(zeros)} features)", line)
        styles = _support_styles(len(support))
        for c, j in enumerate(support):
            (line,) = ax.plot(lams, coef[:, j], color=styles[c][0], ls=styles[c][1], lw=1.8)
            handles.setdefault(f"w*[{j}] = {truth[j]:+.2f}", line)
        # scikit-learn's solution on the true non-zeros (on the others the dots would hide the lines)
        ax.plot(np.repeat(lams, len(support)), ref[:, support].reshape(-1), "o", ms=2.2, color="black", lw=0)
        ax.set_xscale("log")
        ax.axhline(0, color="black", lw=0.6)
        zeros_at = [int(r.metrics.get("exact_zeros", 0)) for r in runs]
        diff = max(r.metrics.get("sklearn_max_abs_diff", math.nan) for r in runs)
        same = all(r.metrics.get("sklearn_same_zeros", 0) == 1 for r in runs)
        span = "none at any λ" if max(zeros_at) == 0 else f"{min(zeros_at)} → {max(zeros_at)} of {coef.shape[1]}"
        ax.set_title(
            f"{TITLE[method]}; exact zeros: {span}\nvs {REFERENCE[method]}:\n"
            f"max |Δw| = {diff:.1e}, same zero sets: {'yes' if same else 'NO'}",
            fontsize=9,
        )
        ax.set_xlabel(f"λ  ({OBJECTIVE[method]})")
    shade = axes[0, 0].axvspan(0, 0, color="tab:green", alpha=0.13, lw=0)
    (dot,) = axes[0, 0].plot([], [], "o", ms=3.5, color="black")
    handles = {
        "green band: selects exactly the true support": shade,
        "black dots: scikit-learn's solution (true non-zeros)": dot,
        **handles,
    }
    axes[0, 0].set_ylabel("coefficient w_j (final, float64)")
    fig.legend(list(handles.values()), list(handles), loc="outside lower center",
               ncol=min(len(handles), 5), frameon=False, fontsize=7)
    rho = f"; ρ={opts['l1_ratio']:g}" if "enet" in methods else ""
    fig.suptitle(
        f"Coefficient paths on a sparse truth (n={opts['n_train']}, d={opts['dim']}, {opts['n_nonzero']} non-zero,"
        f" noise σ={opts['noise']:g}, seed {seed}{rho}; intercept not penalized)",
        fontsize=10,
    )
    return save(fig, path)


def _support_styles(k: int) -> list[tuple[Any, Any]]:
    from decaylab.lab.plots.common import distinct_styles

    return distinct_styles(k)


def plot_support(results: Sequence[ConfigResult], opts: dict[str, Any], path: Path) -> Path:
    """Exact zeros, support precision/recall and test loss against λ, one line per method."""
    methods = _methods(results, opts)
    d, k = opts["dim"], opts["n_nonzero"]
    fig, axes = new_figure(1, 3, width=4.2, height=3.5)
    zeros_ax, pr_ax, loss_ax = axes[0]
    for m in methods:
        color = COLORS[m]
        lams, zeros = _mean_curve(results, m, "exact_zeros")
        zeros_ax.plot(lams, zeros, "o-", ms=3, color=color, label=LABEL[m])
        lams, prec = _mean_curve(results, m, "precision")
        pr_ax.plot(lams, prec, "o-", ms=3, color=color, label=f"{LABEL[m]}: precision")
        lams, rec = _mean_curve(results, m, "recall")
        pr_ax.plot(lams, rec, "s--", ms=3, color=color, alpha=0.8, label=f"{LABEL[m]}: recall")
        lams, test = _mean_curve(results, m, "test_loss")
        loss_ax.plot(lams, test, "o-", ms=3, color=color, label=LABEL[m])
        if np.isfinite(test).any():
            i = int(np.nanargmin(test))
            loss_ax.plot(lams[i], test[i], "*", ms=11, color=color, mec="black", mew=0.6)
    zeros_ax.axhline(d - k, color="tab:green", ls=":", lw=1.2, label=f"truly zero: {d - k}")
    zeros_ax.set_ylabel(f"exact zeros w_j == 0 (of d = {d})")
    zeros_ax.set_title("Exact zeros")
    pr_ax.axhline(k / d, color="0.4", ls=":", lw=1, label=f"k/d = {k / d:.2f} (select all)")
    pr_ax.set_ylabel("precision / recall of the support")
    pr_ax.set_ylim(-0.03, 1.05)
    pr_ax.set_title("Support recovery (true non-zeros)")
    noise_floor = opts["noise"] ** 2 / 2
    loss_ax.axhline(noise_floor, color="0.4", ls=":", lw=1, label=f"noise floor σ²/2 = {noise_floor:.3g}")
    loss_ax.set_yscale("log")
    loss_ax.set_ylabel("test loss, mean (ŷ−y)²/2")
    loss_ax.set_title("Held-out loss (★ = best λ)")
    for ax in axes[0]:
        ax.set_xscale("log")
        ax.set_xlabel("λ of each method's objective (see paths.png)")
    for ax in (zeros_ax, loss_ax):
        ax.legend(frameon=False, fontsize=7)
    pr_ax.legend(frameon=False, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2)  # off the curves
    n_seeds = len({r.params["seed"] for r in results})
    fig.suptitle(
        "L1 and elastic net reach exact zeros and select the true support; L2 keeps every coefficient"
        f" (mean over {n_seeds} seed{'s' if n_seeds > 1 else ''}; precision undefined when nothing is selected)",
        fontsize=10,
    )
    return save(fig, path)


LABEL = {"l1": "L1", "enet": "elastic net", "l2": "L2"}


def figure_names(opts: dict[str, Any]) -> list[str]:
    """The files :func:`draw` writes (when nothing finished, each is one panel saying so)."""
    return ["paths.png", "support.png"]


def draw(experiment: Experiment, results: Sequence[ConfigResult], opts: dict[str, Any], out: Path) -> list[Path]:
    """Write the figures of ``results`` (every one finished) into ``out``; return their paths."""
    return [plot_paths(results, opts, out / "paths.png"), plot_support(results, opts, out / "support.png")]
