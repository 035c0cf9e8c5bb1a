"""Figures of ``equilibrium``: norms against Kosson et al.'s prediction, the claims' numbers, and λ = 0."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from decaylab.lab.experiments.base import Experiment, group_by
from decaylab.lab.plots import lambda_colors, new_figure, save
from decaylab.lab.plots.common import band, legend_outside, seeds_note
from decaylab.results import ConfigResult

TITLES = {"adamw": "AdamW", "sgdm": "SGD + momentum (coupled λ)"}
LAYER_STYLE = ("-", (0, (4, 2)), ":", "-.")


def _setting(opts: dict[str, Any], n_seeds: int) -> str:
    from decaylab.lab.experiments.equilibrium import steps_per_epoch

    return (f"teacher data (32 inputs, 10 classes, labels drawn from the teacher), n_train={opts['n_train']},"
            f" MLP {'-'.join(map(str, opts['hidden']))} ReLU\nLayerNorm after each hidden layer, batch {opts['batch_size']},"
            f" {opts['epochs'] * steps_per_epoch(opts)} steps, α = β₁ = {opts['momentum']:g}, {seeds_note(opts, n_seeds)}")


def _prepend(opts: dict[str, Any], r: ConfigResult, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Steps and ‖W‖ of one layer, with the initial norm at step 0."""
    steps = np.concatenate([[0.0], np.asarray(r.curves["step"], dtype=float)])
    norms = np.concatenate([[r.metrics[f"norm0_{name}"]], np.asarray(r.curves[f"norm_{name}"], dtype=float)])
    return steps, norms


def plot_norms(results: Sequence[ConfigResult], opts: dict[str, Any], summary: dict[str, Any], path: Path) -> Path:
    """Top: ‖W_l‖ per step, with ‖W‖* dashed. Bottom: ‖W_l‖/‖W‖* against t/τ — the runs collapse on one timescale."""
    done = [r for r in results if r.status == "done" and r.params["wd"] > 0]
    optimizers = [o for o in opts["optimizers"] if any(r.params["optimizer"] == o for r in done)] or ["adamw"]
    pred = {(r["optimizer"], r["lr"], r["wd"], r["layer"]): r for r in summary["rows"]}
    fig, axes = new_figure(2, len(optimizers), width=5.2, height=3.6)
    n_seeds = 1
    for col, opt in enumerate(optimizers):
        top, bottom = axes[0, col], axes[1, col]
        runs = [r for r in done if r.params["optimizer"] == opt]
        keys = sorted({(r.params["lr"], r.params["wd"]) for r in runs})
        colors = dict(zip(keys, _colors(len(keys)), strict=True))
        for (lr, wd), group in group_by(runs, lambda p: (p["lr"], p["wd"])).items():
            n_seeds = max(n_seeds, len(group))
            for l in range(len(opts["hidden"])):
                name, row = f"layer{l + 1}", pred[(opt, lr, wd, l + 1)]
                steps = _prepend(opts, group[0], name)[0]
                curves = np.array([_prepend(opts, r, name)[1] for r in group])
                label = f"η={lr:g}, λ={wd:g}" if l == 0 else None
                top.plot(steps, curves.mean(axis=0), ls=LAYER_STYLE[l % 4], color=colors[(lr, wd)], lw=1.4, label=label)
                if len(group) > 1:
                    top.fill_between(steps, curves.min(axis=0), curves.max(axis=0), color=colors[(lr, wd)], alpha=0.15, lw=0)
                top.axhline(row["norm_predicted"], color=colors[(lr, wd)], lw=0.8, ls="--", alpha=0.7)
                bottom.plot(steps / row["tau"], curves.mean(axis=0) / row["norm_predicted"], ls=LAYER_STYLE[l % 4],
                            color=colors[(lr, wd)], lw=1.3, label=label)
        top.set_title(f"{TITLES[opt]}\n‖W_l‖: layer 1 solid, layer 2 dashed; ‖W‖* thin dashed")
        top.set_xlabel("step")
        top.set_ylabel("‖W_l‖₂")
        legend_outside(top, fontsize=7)
        bottom.axhline(1.0, color="k", lw=1)
        from decaylab.lab.experiments.equilibrium import NORM_TOL, SETTLE_TAU

        bottom.axhspan(1 - NORM_TOL, 1 + NORM_TOL, color="grey", alpha=0.12, lw=0, label=f"1 ± {NORM_TOL}")
        bottom.axvline(SETTLE_TAU, color="grey", lw=1, ls=":")
        tau = "1/(ηλ)" if opt == "adamw" else "(1−α)/(ηλ)"
        bottom.set_xscale("symlog", linthresh=0.1)
        bottom.set_xlim(0, None)
        bottom.set_xlabel(f"t / τ,  τ = {tau}")
        bottom.set_ylabel("‖W_l‖ / ‖W‖*")
        bottom.set_title("the same runs against t/τ: one timescale")
        legend_outside(bottom, fontsize=7)
    fig.suptitle(f"Weight norms of normalized layers settle at Kosson et al.'s equilibrium\n{_setting(opts, n_seeds)}",
                 fontsize=9)
    return save(fig, path)


def _colors(n: int) -> list[Any]:
    cmap = lambda_colors(list(range(max(n, 1))))
    return [cmap[i] for i in range(n)]


def plot_claims(results: Sequence[ConfigResult], opts: dict[str, Any], summary: dict[str, Any], path: Path) -> Path:
    """(a) output change for W → cW per layer; (b) measured vs predicted ‖W‖; (c) measured vs predicted angle."""
    from decaylab.lab.experiments.equilibrium import ANGLE_TOL, NORM_TOL, SCALES

    done = [r for r in results if r.status == "done"]
    fig, axes = new_figure(1, 3, width=4.3, height=3.9)
    a, b, c = axes[0]
    names = [f"layer{l + 1}" for l in range(len(opts["hidden"]))] + ["readout"]
    for k, name in enumerate(names):
        worst = np.max([r.curves[f"scale_rel_diff_{name}"] for r in done], axis=0) if done else np.zeros(len(SCALES))
        label = "readout (not normalized)" if name == "readout" else f"{name} (LayerNorm, ε = 1e-5)"
        a.plot(SCALES, np.maximum(worst, 1e-17), "o-", label=label, color=f"C{k}")
        if name != "readout":
            exact = np.max([r.curves[f"scale_rel_diff_exact_{name}"] for r in done], axis=0)
            a.plot(SCALES, np.maximum(exact, 1e-17), "x:", color=f"C{k}", label=f"{name}, ε = 0")
    a.set_xscale("log")
    a.set_yscale("log")
    a.set_xlabel("c (W_l → c·W_l)")
    a.set_ylabel("max |Δ logits| / max |logits| (test set)")
    a.set_title("(a) scale invariance")
    a.legend(frameon=False, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.3))

    rows = [r for r in summary["rows"] if r["wd"] > 0]
    markers = {"adamw": "o", "sgdm": "s"}
    for opt in ("adamw", "sgdm"):
        sel = [r for r in rows if r["optimizer"] == opt]
        if not sel:
            continue
        b.scatter([r["norm_predicted"] for r in sel], [r["norm_measured"] for r in sel], marker=markers[opt],
                  label=TITLES[opt], alpha=0.8)
        c.scatter([r["angle_predicted"] for r in sel], [r["angle_measured"] for r in sel], marker=markers[opt],
                  label=TITLES[opt] + (": √(2ηλ(1−β₁)/(1+β₁))" if opt == "adamw" else ": √(2ηλ/(1+α))"), alpha=0.8)
        if opt == "adamw":
            c.scatter([math.sqrt(2 * r["lr"] * r["wd"]) for r in sel], [r["angle_measured"] for r in sel], marker="o",
                      facecolors="none", edgecolors="grey", label="AdamW against √(2ηλ) (β₁ ignored)")
    for ax, tol in ((b, NORM_TOL), (c, ANGLE_TOL)):
        lo, hi = ax.get_xlim()
        lo2, hi2 = ax.get_ylim()
        lo, hi = min(lo, lo2), max(hi, hi2)
        x = np.linspace(lo, hi, 10)
        ax.plot(x, x, "k-", lw=1)
        ax.fill_between(x, (1 - tol) * x, (1 + tol) * x, color="grey", alpha=0.15, lw=0, label=f"1 ± {tol}")
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.legend(frameon=False, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.3))
    b.set_xlabel("predicted ‖W‖* (SGDM: from the measured E‖g̃‖²)")
    b.set_ylabel("measured ‖W_l‖ (mean of the last tenth)")
    b.set_title("(b) equilibrium norm, every (η, λ, layer)")
    c.set_xlabel("predicted angular update per step (rad)")
    c.set_ylabel("measured, last step (rad)")
    c.set_title("(c) angular update at equilibrium")
    verdict = "\n".join(summary["verdict"][:3])
    n_seeds = max((len(g) for g in group_by(done, lambda p: (p["optimizer"], p["lr"], p["wd"])).values()), default=1)
    fig.suptitle(f"Rotational equilibrium: prediction vs measurement\n{_setting(opts, n_seeds)}", fontsize=9)
    fig.supxlabel(verdict, fontsize=7, x=0.01, ha="left")
    return save(fig, path)


def plot_no_decay(results: Sequence[ConfigResult], opts: dict[str, Any], path: Path) -> Path:
    """λ = 0 against the largest λ of the same η: ‖W_l‖ grows without decay, and η/‖W_l‖² falls."""
    done = [r for r in results if r.status == "done"]
    optimizers = [o for o in opts["optimizers"] if any(r.params["optimizer"] == o and r.params["wd"] == 0 for r in done)]
    fig, axes = new_figure(2, len(optimizers), width=5.0, height=3.2)
    n_seeds = 1
    for col, opt in enumerate(optimizers):
        top, bottom = axes[0, col], axes[1, col]
        runs = [r for r in done if r.params["optimizer"] == opt]
        lrs = sorted({r.params["lr"] for r in runs if r.params["wd"] == 0})
        colors = dict(zip(lrs, _colors(len(lrs)), strict=True))
        for lr in lrs:
            wds = sorted({r.params["wd"] for r in runs if r.params["lr"] == lr})
            for wd in (0.0, wds[-1]) if wds[-1] > 0 else (0.0,):
                group = [r for r in runs if r.params["lr"] == lr and r.params["wd"] == wd]
                n_seeds = max(n_seeds, len(group))
                style = "-" if wd == 0 else "--"
                steps = _prepend(opts, group[0], "layer1")[0]
                norms = np.array([_prepend(opts, r, "layer1")[1] for r in group])
                band(top, steps, norms, colors[lr], f"η={lr:g}, λ={wd:g}", style=style, lw=1.5)
                band(bottom, steps, lr / norms**2, colors[lr], f"η={lr:g}, λ={wd:g}", style=style, lw=1.5)
        top.set_title(f"{TITLES[opt]}\nlayer 1, λ = 0 (solid) vs the largest λ (dashed)")
        top.set_ylabel("‖W₁‖₂")
        bottom.set_ylabel("effective learning rate η/‖W₁‖²")
        bottom.set_yscale("log")
        bottom.set_xlabel("step")
        legend_outside(top, fontsize=7)
        legend_outside(bottom, fontsize=7)
    fig.suptitle("Without weight decay the norm of a normalized layer only grows, and its effective learning rate falls\n"
                 f"{_setting(opts, n_seeds)}", fontsize=9)
    return save(fig, path)


def figures(experiment: Experiment, results: Sequence[ConfigResult], opts: dict[str, Any], out: Path) -> list[Path]:
    """Write the figures of ``results`` (finished or not: this module draws what is there) into ``out``."""
    summary = experiment.summarize(results, opts)
    paths = []
    if any(r.params["wd"] > 0 and r.status == "done" for r in results):  # λ = 0 only: no equilibrium to show
        paths.append(plot_norms(results, opts, summary, out / "norms.png"))
    paths.append(plot_claims(results, opts, summary, out / "claims.png"))
    if any(r.params["wd"] == 0 and r.status == "done" for r in results):
        paths.append(plot_no_decay(results, opts, out / "no_decay.png"))
    return paths
