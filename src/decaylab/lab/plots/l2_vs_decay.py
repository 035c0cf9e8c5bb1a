"""Figures of ``l2-vs-decay``: weight-norm trajectories of every variant, and Adam+L2's effective decay."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from decaylab.lab.experiments.base import Experiment, group_by
from decaylab.lab.experiments.l2_vs_decay import learning_rate
from decaylab.lab.plots import new_figure, save
from decaylab.lab.plots.common import seeds_note, stack
from decaylab.lab.plots.dropout_mlp import data_note
from decaylab.results import ConfigResult

FAMILIES = (
    ("sgd", "SGD: (a) L2 vs (b) decoupled\nthe same update: the curves overlap", ("sgd-l2", "sgd-decoupled")),
    ("momentum", "SGD + momentum: (c) both ways\ndecay/step: L2 lr·λ/(1−μ), decoupled lr·λ", ("momentum-l2", "momentum-decoupled")),
    ("adam", "Adam: (d) Adam+L2 vs (e) AdamW\ndecay/step: L2 lr·λ/(√v̂+ε), AdamW lr·λ", ("adam-l2", "adamw")),
)
STYLE = {
    "sgd-l2": ("tab:blue", "-", "(a) SGD + L2"),
    "sgd-decoupled": ("tab:orange", (0, (4, 3)), "(b) SGD + decoupled"),
    "momentum-l2": ("tab:blue", "-", "(c) momentum + L2"),
    "momentum-decoupled": ("tab:orange", (0, (4, 3)), "(c) momentum + decoupled"),
    "adam-l2": ("tab:blue", "-", "(d) Adam + L2"),
    "adamw": ("tab:orange", (0, (4, 3)), "(e) AdamW"),
}
CONVENTION = "λ = PyTorch weight_decay: L2 adds λw to the gradient (mean CE + λ/2·Σ‖W‖²), decoupled does w ← w − lr·λ·w"


def _by(results: Sequence[ConfigResult], wd: float) -> dict[str, list[ConfigResult]]:
    return group_by((r for r in results if r.curves and r.params["wd"] == wd), "variant")


def _mean(group: list[ConfigResult], key: str) -> np.ndarray:
    return np.nanmean(stack(group, key), axis=0)


def _setting(opts: dict[str, Any], wd: float, n_seeds: int) -> str:
    data = data_note(opts)
    seeds = seeds_note(opts, n_seeds)
    init = "nn.Linear default init" if opts["init"] == "torch" else "init N(0, 0.01²)"
    return (f"{data}, n_train={opts['n_train']}, MLP {'-'.join(map(str, opts['hidden']))} ReLU, {init}, batch {opts['batch_size']}, {seeds}"
            f"\nλ = {wd:g}; lr: SGD {opts['lr']:g}, momentum μ={opts['momentum']:g} with lr {learning_rate(opts, 'momentum'):g},"
            f" Adam {opts['lr_adam']:g}\n{CONVENTION}")


def plot_norms(results: Sequence[ConfigResult], opts: dict[str, Any], path: Path, wd: float, verdict: str = "") -> Path:
    """Per optimizer family: ‖W‖₂ per epoch (top) and test accuracy (bottom), coupled solid, decoupled dashed;
    ``verdict`` (the relative differences of the summary, :func:`~decaylab.lab.experiments.l2_vs_decay.family_verdict`)
    under the title."""
    groups = _by(results, wd)
    fig, axes = new_figure(2, 3, width=4.0, height=3.0, sharex=True)
    for col, (_family, title, variants) in enumerate(FAMILIES):
        top, bottom = axes[0, col], axes[1, col]
        for v in variants:
            if v not in groups:
                continue
            color, ls, label = STYLE[v]
            epochs = np.asarray(groups[v][0].curves["epoch"], dtype=float)
            top.plot(epochs, _mean(groups[v], "w_norm"), color=color, ls=ls, lw=1.7, label=label)
            bottom.plot(epochs, _mean(groups[v], "test_acc"), color=color, ls=ls, lw=1.5, label=label)
        a, b = (groups.get(v) for v in variants)
        if a and b:
            diff = max(np.nanmax(np.abs(np.array(x.curves["w_norm"]) - np.array(y.curves["w_norm"]))) for x, y in zip(a, b, strict=True))
            top.set_title(f"{title}\nmax |Δ‖W‖| = {diff:.2g}")
        else:
            top.set_title(title)
        top.set_ylabel("‖W‖₂ (all weight matrices)")
        bottom.set_ylabel("test accuracy")
        bottom.set_xlabel("epoch")
        top.legend(frameon=False)
        bottom.legend(frameon=False, loc="lower right")  # checked by tests/test_figures.py under several options
    n_seeds = max((len(g) for g in groups.values()), default=1)
    said = f"\nlargest relative difference of the curves, L2 vs decoupled: {verdict}" if verdict else ""
    fig.suptitle(f"L2 vs decoupled weight decay: weight-norm trajectories{said}\n{_setting(opts, wd, n_seeds)}", fontsize=9)
    return save(fig, path)


def plot_effective_decay(results: Sequence[ConfigResult], opts: dict[str, Any], path: Path, wd: float) -> Path:
    """Left: histogram over weights of lr·λ/(√v̂+ε) under Adam+L2 (log x), stacked by layer, with AdamW's lr·λ.
    Right: its median per decile of v̂, against the median √v̂ of the decile.

    The dotted reference is an AdamW whose uniform decay equals Adam+L2's median: at equal overall
    strength, Adam+L2 decays the large-v̂ weights less than AdamW would and the small-v̂ weights more.
    """
    from decaylab.lab.experiments.l2_vs_decay import HIST_EDGES

    adam_l2 = [r for r in _by(results, wd).get("adam-l2", []) if "eff_decay_counts" in r.curves]
    edges = np.asarray(HIST_EDGES)
    n_layers = len(opts["hidden"]) + 1
    layer_counts = [
        np.mean([r.curves.get(f"eff_decay_counts_layer{k}", [0.0] * (len(edges) - 1)) for r in adam_l2], axis=0)
        for k in range(1, n_layers + 1)
    ]
    total = np.mean([r.curves["eff_decay_counts"] for r in adam_l2], axis=0)
    nz = np.nonzero(total)[0]
    lo, hi = (nz[0], nz[-1] + 1) if len(nz) else (0, len(total))
    adamw = opts["lr_adam"] * wd
    med = float(np.mean([r.metrics["eff_decay_median"] for r in adam_l2]))
    fig, axes = new_figure(1, 2, width=5.0, height=3.7)
    left, right = axes[0]
    base = np.zeros(hi - lo)
    colors = ("tab:blue", "tab:purple", "tab:cyan", "tab:olive", "tab:brown")
    for k, counts in enumerate(layer_counts):
        part = counts[lo:hi] / total.sum()
        left.stairs(base + part, edges[lo : hi + 1], baseline=base, fill=True, alpha=0.7, color=colors[k % len(colors)],
                    label=f"(d) Adam + L2, layer {k + 1} weights")
        base = base + part
    left.axvline(adamw, color="tab:orange", lw=2, ls="--", label=f"(e) AdamW: lr·λ = {adamw:.2g}, every weight")
    left.axvline(med, color="k", lw=1, ls=":", label=f"AdamW matched to the median: {med:.2g}")
    left.axvspan(1, edges[hi], color="grey", alpha=0.12, lw=0, label="> 1: only λw in the gradient; w oscillates at 0")
    left.set_xscale("log")
    left.set_ylim(0, base.max() * 1.1 if base.size else 1)
    left.set_xlabel("effective decay per step, lr·λ/(√v̂+ε)")
    left.set_ylabel("fraction of weights")
    left.set_title("Per-weight decay at the end of training (Adam + L2)")
    left.legend(frameon=False, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2)

    sq = np.nanmean([r.curves["decile_sqrt_vhat"] for r in adam_l2], axis=0)
    eff = np.nanmean([r.curves["decile_eff_decay"] for r in adam_l2], axis=0)
    right.plot(sq, eff, "o-", color="tab:blue", label="(d) Adam + L2: median per decile of v̂")
    right.axhline(med, color="k", lw=1, ls=":", label="AdamW matched to Adam + L2's median")
    right.axhline(adamw, color="tab:orange", lw=2, ls="--", label="(e) AdamW with the same λ: lr·λ")
    right.annotate("decile 1 of v̂", (sq[0], eff[0]), textcoords="offset points", xytext=(6, 4), fontsize=7)
    right.annotate("decile 10 of v̂", (sq[-1], eff[-1]), textcoords="offset points", xytext=(0, -14), fontsize=7, ha="right")
    right.set_xscale("log")
    right.set_yscale("log")
    right.set_xlabel("√v̂ (Adam's bias-corrected gradient RMS), decile median")
    right.set_ylabel("effective decay per step")
    ratio = float(np.mean([r.metrics["top_bottom_ratio"] for r in adam_l2]))
    right.set_title(f"Large-gradient weights are barely decayed\n(decile 10 / decile 1 = {ratio:.2g})")
    right.legend(frameon=False, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=1)
    fig.suptitle(
        "Why Adam + L2 ≠ AdamW: Adam divides the L2 term λw by √v̂ + ε, like the gradient\n"
        f"{_setting(opts, wd, len(adam_l2))}",
        fontsize=9,
    )
    return save(fig, path)


def figure_names(opts: dict[str, Any]) -> list[str]:
    """The files :func:`draw` writes (when nothing finished, each is one panel saying so)."""
    return [f"norms{'' if len(opts['wd']) == 1 else f'_wd={wd:g}'}.png" for wd in opts["wd"]]


def draw(experiment: Experiment, results: Sequence[ConfigResult], opts: dict[str, Any], out: Path) -> list[Path]:
    """``norms.png`` and ``effective_decay.png`` per λ (with several λ: ``norms_wd=0.01.png``, ...)."""
    from decaylab.lab.experiments.l2_vs_decay import family_verdict

    verdicts = {row["wd"]: family_verdict(row) for row in experiment.summarize(results, opts)["by_wd"]}
    paths = []
    for wd in opts["wd"]:
        suffix = "" if len(opts["wd"]) == 1 else f"_wd={wd:g}"
        paths.append(plot_norms(results, opts, out / f"norms{suffix}.png", wd, verdicts.get(wd, "")))
        if any(r.params["variant"] == "adam-l2" and r.params["wd"] == wd and "eff_decay_counts" in r.curves for r in results):
            paths.append(plot_effective_decay(results, opts, out / f"effective_decay{suffix}.png", wd))
    return paths
