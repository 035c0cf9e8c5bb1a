"""Every experiment's figures, under its defaults (small) and under other option sets — many λ, one λ, all
diverged, several values of a secondary grid — pass the checks of :mod:`figure_checks`: no legend over the
data, no two series alike, no empty panel without a reason, colour bars with round ticks. The figures are
caught before they are saved (``save`` replaced) and checked as matplotlib objects."""

from __future__ import annotations

import importlib
import math
import re
from pathlib import Path
from typing import Any

import pytest

import figure_checks
from decaylab.lab.experiments import get_experiment
from decaylab.results import ConfigResult
from experiment_helpers import options, train

pytestmark = pytest.mark.usefixtures("one_thread")

PLOT_MODULES = ("constraint", "d2l_linear", "dropout_mlp", "equilibrium", "l2_vs_decay", "noise_tikhonov",
                "ridge_path", "scaling", "sparsity", "sweep")

MLP = dict(epochs="2", hidden="16,16", n_test="50", n_train="40")
EQUILIBRIUM = dict(lr_adamw="0.005", wd_adamw="0,1", lr_sgdm="0.05", wd_sgdm="0,0.01", hidden="8,8", epochs="2",
                   n_train="128", n_test="64", seed="0")
SCALING = dict(epochs="3", lambd_half="log:1e-3:1e-1:3", lambd_mean="log:1e-2:1:3", seed="0", n_val="50")

# (experiment, case, options as typed, what happens to the results: "" | "all diverged" | "some diverged")
CASES: list[tuple[str, str, dict[str, str], str]] = [
    ("d2l-linear", "defaults", dict(epochs="3", seed="0,1"), ""),
    ("d2l-linear", "one λ", dict(epochs="3", lambd="3"), ""),
    ("d2l-linear", "many λ, linear grid", dict(epochs="3", lambd="0:10:16"), ""),
    ("d2l-linear", "many λ, log grid", dict(epochs="3", lambd="log:1e-4:1:12"), ""),
    ("d2l-linear", "all diverged", dict(epochs="3", lambd="0,3"), "all diverged"),
    ("dropout-mlp", "defaults", dict(MLP, seed="0"), ""),
    ("dropout-mlp", "two λ, two seeds", dict(MLP, wd="0.001,0.002", seed="0,1"), ""),
    ("dropout-mlp", "some diverged", dict(MLP, seed="0,1"), "some diverged"),
    ("l2-vs-decay", "defaults", dict(MLP, seed="0"), ""),
    ("l2-vs-decay", "two λ, two seeds", dict(MLP, wd="0.001,0.01", seed="0,1"), ""),
    ("l2-vs-decay", "all diverged", dict(MLP, seed="0"), "all diverged"),
    ("noise-tikhonov", "defaults", dict(epochs="3", n_test="20", n_train="20", seed="0,1"), ""),
    ("noise-tikhonov", "one σ", dict(epochs="3", n_test="20", n_train="20", seed="0", sigma="0.5"), ""),
    ("noise-tikhonov", "many σ, more features", dict(epochs="3", n_test="30", n_train="30", seed="0",
                                                     sigma="0:2:12", dim="12"), ""),
    ("scaling", "defaults", dict(SCALING, m="16,32"), ""),
    ("scaling", "four m", dict(SCALING, m="16,64,256,1024"), ""),
    ("scaling", "six m", dict(SCALING, m="16,32,64,128,256,512", seed="0,1"), ""),
    ("sparsity", "defaults", dict(epochs="3", lambd="log:0.01:3:5", n_train="30", n_test="20", dim="10",
                                  n_nonzero="3"), ""),
    ("sparsity", "one method, one λ", dict(epochs="3", lambd="0.1", methods="l1", n_train="30", n_test="20",
                                           dim="10", n_nonzero="3"), ""),
    ("sparsity", "many features", dict(epochs="3", lambd="log:0.01:3:8", n_train="40", n_test="20", dim="30",
                                       n_nonzero="12", seed="0,1"), ""),
    ("constraint", "defaults", dict(epochs="3", lambd="log:1e-2:1e2:8"), ""),
    ("constraint", "one λ", dict(epochs="3", lambd="1"), ""),
    ("constraint", "three seeds, many features", dict(epochs="3", lambd="log:1e-3:1e2:12", seed="0,1,2", dim="12",
                                                      n_train="40"), ""),
    ("ridge-path", "defaults", dict(lambd="log:1e-5:1e3:40"), ""),
    ("ridge-path", "20 features", dict(lambd="log:1e-4:1e3:40", data="synthetic", dim="20"), ""),
    ("ridge-path", "few λ", dict(lambd="0.01,1", data="synthetic", dim="5"), ""),
    ("equilibrium", "defaults", EQUILIBRIUM, ""),
    ("equilibrium", "one optimizer, one λ", dict(EQUILIBRIUM, optimizers="adamw", wd_adamw="1"), ""),
    ("equilibrium", "many η", dict(EQUILIBRIUM, optimizers="sgdm", lr_sgdm="0.01,0.02,0.05,0.1"), ""),
]


def _diverged(r: ConfigResult, epoch: int) -> ConfigResult:
    """``r`` as the engine reports a configuration that diverged at ``epoch`` (as test_validation_diverged)."""
    c = ConfigResult.from_json(r.to_json())
    c.status, c.diverged_epoch = "diverged", epoch
    c.metrics = {k: math.nan for k in c.metrics}
    c.curves = {k: [v if k == "epoch" or i < epoch - 1 else math.nan for i, v in enumerate(vs)]
                for k, vs in c.curves.items()}
    c.weights = c.averaged_weights = c.optimizer_state = None
    return c


@pytest.fixture
def drawn(monkeypatch: pytest.MonkeyPatch) -> Any:
    """``drawn(experiment, results, opts)`` -> {file name: Figure}: every figure the experiment makes, caught in
    ``save`` (with what ``save`` adds: the unfinished note, the log-axis ticks), not written."""
    import decaylab.lab.plots as plots

    caught: dict[str, Any] = {}

    def catch(fig: Any, path: Path) -> Path:
        if plots._note["text"]:
            plots._add_note(fig, plots._note["text"])
        plots._thin_log_minor_ticks(fig)
        caught[path.name] = fig
        return path

    # every plot module imported first: one imported after plots.save is replaced would bind the replacement
    # as its own save, and the undo would "restore" it for every later test
    modules = [importlib.import_module(f"decaylab.lab.plots.{name}") for name in PLOT_MODULES]
    for module in (plots, *modules):
        monkeypatch.setattr(module, "save", catch)

    def draw(exp: Any, results: list[ConfigResult], opts: dict[str, Any]) -> dict[str, Any]:
        caught.clear()
        plots.figures(exp, results, opts, Path("unused"))
        return dict(caught)

    yield draw
    import matplotlib.pyplot as plt

    plt.close("all")


_TRAINED: dict[tuple[str, str], tuple[Any, list[ConfigResult], dict[str, Any]]] = {}


def trained(name: str, case: str) -> tuple[Any, list[ConfigResult], dict[str, Any]]:
    """The experiment, its results and options of a case (trained once per test session)."""
    if (name, case) not in _TRAINED:
        given, what = next((g, w) for n, c, g, w in CASES if (n, c) == (name, case))
        exp = get_experiment(name)
        opts = options(exp, **given)
        results = train(exp, opts)
        if what == "all diverged":
            results = [_diverged(r, 2) for r in results]
        elif what == "some diverged":
            results = [_diverged(r, 2) if i % 3 == 0 else r for i, r in enumerate(results)]
        _TRAINED[(name, case)] = exp, results, opts
    return _TRAINED[(name, case)]


@pytest.mark.parametrize(("name", "case"), [(n, c) for n, c, _, _ in CASES], ids=[f"{n}: {c}" for n, c, _, _ in CASES])
def test_figures_are_readable(name: str, case: str, drawn: Any) -> None:
    exp, results, opts = trained(name, case)
    figs = drawn(exp, results, opts)
    assert figs
    found = [f"{file}: {p}" for file, fig in figs.items() for p in figure_checks.problems(fig)]
    assert found == []


# -- what the checks catch (each check must be able to fail) ------------------------------------------
def _figure() -> tuple[Any, Any]:
    from decaylab.lab.plots import new_figure

    fig, axes = new_figure(1, 1)
    return fig, axes[0, 0]


def test_the_checks_see_a_legend_over_a_line() -> None:
    fig, ax = _figure()
    ax.plot([0, 1], [1, 1], label="flat")  # two vertices, the segment crosses the whole axes at the top
    ax.plot([0, 1], [0, 0.2], label="low")
    ax.legend(loc="upper center")
    assert any("covers" in p for p in figure_checks.problems(fig))
    ax.legend(loc="center right")
    assert figure_checks.problems(fig) == []


def test_the_checks_see_look_alike_series_empty_panels_and_odd_colour_bar_ticks() -> None:
    import matplotlib as mpl

    from decaylab.lab.plots import new_figure

    fig, axes = new_figure(1, 3)
    a, b, c = axes[0]
    a.plot([0, 1], [0, 1], color="#2a788e", label="λ = 1")
    a.plot([0, 1], [1, 0], color="#25848e", label="λ = 2")  # two neighbouring viridis shades
    bar = fig.colorbar(mpl.cm.ScalarMappable(mpl.colors.Normalize(0, 1)), ax=c)
    bar.set_ticks([0.0, 0.159, 0.7])
    found = figure_checks.problems(fig)
    assert any("look alike" in p for p in found)
    assert any("'λ = 1'" in p for p in found)
    assert sum("no data" in p for p in found) == 2  # b and c
    assert any("not round" in p and "0.159" in p for p in found)
    b.text(0.5, 0.5, "nothing to draw: every λ diverged", transform=b.transAxes)
    c.plot([0, 1], [0, 1], color="k")
    a.lines[1].set_linestyle("--")
    bar.set_ticks([0.0, 0.25, 0.5])
    assert figure_checks.problems(fig) == []


def test_round_numbers() -> None:
    assert all(map(figure_checks.round_number, ["0", "0.25", "2", "−1.5", "1e-03", "$\\mathdefault{10^{-4}}$", "300"]))
    assert not any(map(figure_checks.round_number, ["0.159", "1.23", "3.162", "λ"]))


# -- what particular figures must say ---------------------------------------------------------------------
def test_l2_vs_decay_figure_carries_the_relative_differences_of_the_verdict(drawn: Any) -> None:
    exp, results, opts = trained("l2-vs-decay", "defaults")
    summary = exp.summarize(results, opts)
    text = figure_checks.figure_text(drawn(exp, results, opts)["norms.png"])
    row = summary["by_wd"][0]
    for family in ("sgd", "momentum", "adam"):
        assert f"({row[family]['max_rel_diff']:.2g})" in text or f"rel. diff {row[family]['max_rel_diff']:.2g}" in text
    assert "SGD: L2 = decay (rel. diff" in text


def _scaling_results(opts: dict[str, Any]) -> list[ConfigResult]:
    """Made-up validation losses, a parabola in log λ around a best λ ∝ m^-0.6 (× m under λ/(2m)) that moves
    with the seed: slopes near −0.6 and 0.4 with a seed-to-seed scatter, and no best λ at a grid edge."""
    exp = get_experiment("scaling")
    results = []
    for c in exp.configs(opts):
        best = 0.05 * (c["m"] / 16) ** -0.6 * (1 + 0.3 * c["seed"] * (-1) ** (c["m"] // 16)) * (c["m"] if c["convention"] == "mean" else 1)
        loss = 0.3 + 0.05 * (math.log(c["lambd"]) - math.log(best)) ** 2
        results.append(ConfigResult(params=c, metrics={"test_loss": loss}, curves={"epoch": [1]}))
    return results


def test_scaling_legend_spread_is_the_verdicts(drawn: Any) -> None:
    """The fit's ± in the legend is the spread the verdict uses (the larger of the fit's and the per-seed
    slopes' standard errors), not the SE of the fit alone (0.00 through points on a line)."""
    import decaylab.lab.plots.scaling as scaling_plots

    exp = get_experiment("scaling")
    opts = options(exp, **dict(SCALING, m="16,64,256,1024", seed="0,1,2", lr="0.01", lambd_half="log:1e-4:1:41",
                               lambd_mean="log:1e-3:1e3:61"))
    results = _scaling_results(opts)
    summary = exp.summarize(results, opts)
    assert math.isfinite(summary["slope_half"]) and math.isfinite(summary["slope_mean"]), summary["verdict"]
    fig = drawn(exp, results, opts)["best_lambda.png"]
    assert figure_checks.problems(fig) == []
    text = figure_checks.figure_text(fig)
    for convention in ("half", "mean"):
        c = summary["conventions"][convention]
        shown = re.search(rf"fit: slope {c['slope']:.2f} ± ([0-9.]+)", text)
        assert shown, text
        assert f"{c['slope']:.2f} ± {shown.group(1)}" in summary["verdict"], (shown.group(0), summary["verdict"])
        assert float(shown.group(1)) > 0
    assert scaling_plots  # the module whose legend this is


def test_dropout_gap_joins_each_seed_across_variants(drawn: Any) -> None:
    exp, results, opts = trained("dropout-mlp", "two λ, two seeds")
    fig = drawn(exp, results, opts)["gap.png"]
    left = fig.axes[0]
    variants = len({(r.params["variant"], r.params["wd"]) for r in results})
    seeds = [line for line in left.lines if len(line.get_xdata()) == variants and line.get_linestyle() != "None"]
    assert len(seeds) == len(opts["seed"])  # one line per seed, drawn through every variant
