"""Figures of ``dropout-mlp``: train/test accuracy and loss per variant, and the generalization gap."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from decaylab.lab.experiments.base import Experiment, group_by
from decaylab.lab.experiments.dropout_mlp import variant_label
from decaylab.lab.plots import new_figure, save
from decaylab.lab.plots.common import LINESTYLES, band, legend_outside, seeds_note, stack
from decaylab.results import ConfigResult

COLORS = {"none": "tab:grey", "dropout": "tab:blue", "decay": "tab:orange", "both": "tab:green"}


def _groups(results: Sequence[ConfigResult]) -> dict[str, list[ConfigResult]]:
    return group_by((r for r in results if r.curves), variant_label)


def data_note(opts: dict[str, Any]) -> str:
    """The data of the MLP figures (here and ``l2-vs-decay``'s): digits, or the IDX files of ``--data-dir``."""
    return f"IDX data in {opts['data_dir']}" if opts["data_dir"] else "digits 8×8"


def _setting(opts: dict[str, Any], n_seeds: int, with_band: bool = True) -> str:
    data = data_note(opts)
    p = ", ".join(f"{v:g}" for v in opts["dropout"])
    seeds = seeds_note(opts, n_seeds, with_band)
    return (f"{data}, n_train={opts['n_train']}, MLP {'-'.join(map(str, opts['hidden']))} ReLU, SGD η={opts['lr']:g}, "
            f"batch {opts['batch_size']}\ndropout p=({p}) after the hidden layers; decay: mean CE + λ/2·Σ‖W‖² (biases not decayed); {seeds}")


def _styles(groups: dict[str, list[ConfigResult]]) -> dict[str, tuple[Any, Any]]:
    """(colour, line style) per variant label: the variant's colour, and a dash pattern per λ of ``--wd``
    (``decay λ=0.001`` solid, ``decay λ=0.002`` dashed, ...), so that no two labels look alike."""
    wds = sorted({g[0].params["wd"] for g in groups.values() if g[0].params["variant"] in ("decay", "both")})
    styles = {}
    for label, group in groups.items():
        p = group[0].params
        k = wds.index(p["wd"]) if p["variant"] in ("decay", "both") else 0
        styles[label] = (COLORS.get(p["variant"], "k"), LINESTYLES[k % len(LINESTYLES)])
    return styles


def plot_curves(results: Sequence[ConfigResult], opts: dict[str, Any], path: Path) -> Path:
    """One column per variant: accuracy (top) and cross-entropy (bottom), train solid, test dashed."""
    from matplotlib.lines import Line2D

    from decaylab.lab.experiments.dropout_mlp import end_window

    groups = _groups(results)
    w = end_window(opts["epochs"])
    n = max(len(groups), 1)
    fig, axes = new_figure(2, n, width=3.1, height=2.7, sharex=True, sharey="row")
    for col, (label, group) in enumerate(groups.items()):
        color = COLORS.get(group[0].params["variant"], "k")
        epochs = np.asarray(group[0].curves["epoch"], dtype=float)
        top, bottom = axes[0, col], axes[1, col]
        train_acc, test_acc = stack(group, "train_acc"), stack(group, "test_acc")
        band(top, epochs, train_acc, color, "train", lw=1.5)
        band(top, epochs, test_acc, color, "test", "--", lw=1.5)
        gap = np.nanmean(train_acc[:, -w:] - test_acc[:, -w:])
        top.set_title(f"{label}\ngap over the last {w} epochs = {gap:.3f}")
        band(bottom, epochs, stack(group, "train_loss"), color, "train", lw=1.5)
        band(bottom, epochs, stack(group, "test_loss"), color, "test", "--", lw=1.5)
        bottom.set_yscale("log")
        bottom.set_xlabel("epoch")
    fig.legend([Line2D([], [], color="k", lw=1.5), Line2D([], [], color="k", ls="--", lw=1.5)], ["train", "test"],
               loc="outside lower center", ncol=2, frameon=False)  # one legend for every panel, off the data
    axes[0, 0].set_ylabel("accuracy (eval mode)")
    axes[1, 0].set_ylabel("cross-entropy (mean, no penalty)")
    n_seeds = max((len(g) for g in groups.values()), default=1)
    fig.suptitle(f"Dropout and weight decay on an MLP — train (solid) vs test (dashed)\n{_setting(opts, n_seeds)}", fontsize=9.5)
    return save(fig, path)


def _ce_gap(r: ConfigResult, w: int) -> float:
    from decaylab.lab.experiments.dropout_mlp import end_mean

    return end_mean(r, "test_loss", w) - end_mean(r, "train_loss", w)


def _acc_gap(r: ConfigResult, w: int) -> float:
    from decaylab.lab.experiments.dropout_mlp import end_mean

    return end_mean(r, "train_acc", w) - end_mean(r, "test_acc", w)


_GAPS = (
    ("CE gap = test − train cross-entropy (claimed)", _ce_gap, ("test_loss", "train_loss")),
    ("accuracy gap = train − test accuracy (shown)", _acc_gap, ("train_acc", "test_acc")),
)


def plot_gap(results: Sequence[ConfigResult], opts: dict[str, Any], path: Path) -> Path:
    """Per gap (cross-entropy, the claim; accuracy, shown): left, the value at the end of training per variant
    (bar = mean over seeds, dots = seeds, a seed's dots joined across variants); right, the gap per epoch."""
    from decaylab.lab.experiments.dropout_mlp import end_window

    groups = _groups(results)
    w = end_window(opts["epochs"])
    labels = list(groups)
    styles = _styles(groups)
    fig, axes = new_figure(2, 2, width=5.0, height=3.2)
    for (name, end_gap, (plus, minus)), (left, right) in zip(_GAPS, axes, strict=True):
        per_seed: dict[Any, list[tuple[int, float]]] = {}
        for i, label in enumerate(labels):
            group = groups[label]
            color = COLORS.get(group[0].params["variant"], "k")
            gaps = np.array([end_gap(r, w) for r in group])
            mean = float(np.mean(gaps))
            left.bar(i, mean, color=color, alpha=0.75)
            left.text(i, mean / 2, f"{mean:.3f}", ha="center", va="center", fontsize=9 if len(labels) <= 4 else 6.5,
                      color="white", weight="bold")
            for r, g in zip(group, gaps, strict=True):
                per_seed.setdefault(r.params["seed"], []).append((i, float(g)))
            epochs = np.asarray(group[0].curves["epoch"], dtype=float)
            right.plot(epochs, np.mean(stack(group, plus) - stack(group, minus), axis=0), color=color, ls=styles[label][1],
                       lw=1.4, label=label)
        for k, points in enumerate(per_seed.values()):
            xs, ys = zip(*points, strict=True)
            left.plot(xs, ys, "k.-", ms=4, lw=0.5, alpha=0.5, label="one seed (joined across variants)" if k == 0 else None)
        if groups:
            right.axvspan(epochs[-w] - 0.5, epochs[-1] + 0.5, color="grey", alpha=0.12, lw=0, label=f"last {w} epochs (averaged)")
        base = groups.get("none")
        if base:
            left.axhline(float(np.mean([end_gap(r, w) for r in base])), color="tab:grey", ls=":", lw=1,
                         label="gap without regularization")
        left.set_xticks(range(len(labels)), labels, rotation=15 if len(labels) <= 4 else 30,
                        ha="center" if len(labels) <= 4 else "right")
        left.set_ylabel(f"{name.split(' (')[0].split(' =')[0]} (last {w} epochs)")
        left.set_title(name, fontsize=9)
        highest = max((y for points in per_seed.values() for _, y in points), default=0.0)
        left.set_ylim(0, 1.1 * highest if highest > 0 else None)
        legend_outside(left, fontsize=7)
        right.set_xlabel("epoch")
        right.set_ylabel(name.split(" = ")[1].split(" (")[0])
        right.set_title("during training", fontsize=9)
        legend_outside(right, fontsize=7)
    n_seeds = max((len(g) for g in groups.values()), default=1)
    fig.suptitle(f"Generalization gap: does dropout / weight decay make it smaller?\n{_setting(opts, n_seeds, with_band=False)}", fontsize=9.5)
    return save(fig, path)


def figure_names(opts: dict[str, Any]) -> list[str]:
    """The files :func:`draw` writes (when nothing finished, each is one panel saying so)."""
    return ["curves.png", "gap.png"]


def draw(experiment: Experiment, results: Sequence[ConfigResult], opts: dict[str, Any], out: Path) -> list[Path]:
    """Write the figures of ``results`` (every one finished) into ``out``; return their paths."""
    return [plot_curves(results, opts, out / "curves.png"), plot_gap(results, opts, out / "gap.png")]
