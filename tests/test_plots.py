"""The figure machinery: shared rendering between processes, the figure worker, log-axis ticks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from decaylab.lab.plots import new_figure, rendering_share, save
from decaylab.lab.plots.worker import FigureWorker
from decaylab.results import ConfigResult


def _three_figures(out: Path) -> list[Path]:
    paths = []
    for i in range(3):
        fig, axes = new_figure(1, 1)
        axes[0, 0].plot([0, 1], [i, i + 1])
        paths.append(save(fig, out / f"f{i}.png"))
    return paths


def test_shares_write_every_figure_exactly_once(tmp_path: Path) -> None:
    written = []
    for index in (0, 1):
        out = tmp_path / f"share{index}"
        with rendering_share(index, 2):
            paths = _three_figures(out)
        assert [p.name for p in paths] == ["f0.png", "f1.png", "f2.png"]  # every path is returned
        written.append(sorted(p.name for p in out.glob("*.png")))
    assert written == [["f0.png", "f2.png"], ["f1.png"]]
    _three_figures(tmp_path / "all")  # outside the block: everything again
    assert len(list((tmp_path / "all").glob("*.png"))) == 3


def test_log_axes_over_many_decades_lose_their_minor_ticks(tmp_path: Path) -> None:
    fig, axes = new_figure(1, 2)
    wide, narrow = axes[0]
    wide.plot([1, 2], [1e-8, 1e2])
    narrow.plot([1, 2], [1, 50])
    for ax in (wide, narrow):
        ax.set_yscale("log")
    save(fig, tmp_path / "ticks.png")
    assert len(wide.yaxis.get_minorticklocs()) == 0
    assert len(narrow.yaxis.get_minorticklocs()) > 0


def _d2l_results() -> tuple[list[ConfigResult], dict[str, Any]]:
    curves = {"epoch": [1, 2], "train_loss": [1.0, 0.5], "test_loss": [2.0, 1.5], "w_norm": [3.0, 2.0]}
    metrics = {k: v[-1] for k, v in curves.items() if k != "epoch"}
    results = [ConfigResult(params={"lambd": lam, "seed": 0}, metrics=metrics, curves=curves) for lam in (0.0, 3.0)]
    return results, {"n_train": 20, "dim": 200, "seed": [0]}


def test_worker_draws_every_figure_of_a_run(tmp_path: Path) -> None:
    results, opts = _d2l_results()
    worker = FigureWorker()
    worker.submit("d2l-linear", results, opts, tmp_path)
    paths = worker.collect()
    assert sorted(p.name for p in paths) == ["curves.png", "norms.png"]
    assert all(p.stat().st_size > 0 for p in paths)


def test_worker_reports_a_failed_figure(tmp_path: Path) -> None:
    results, _ = _d2l_results()
    worker = FigureWorker()
    worker.submit("d2l-linear", results, {}, tmp_path)  # options missing: plotting raises KeyError
    with pytest.raises(RuntimeError, match="drawing the figures failed: KeyError"):
        worker.collect()


def test_close_terminates_a_worker_that_does_not_end(monkeypatch: pytest.MonkeyPatch) -> None:
    """The decaylab command leaves with os._exit, which skips multiprocessing's clean-up: close() must not
    leave a worker behind (one still warming up, say, holding the terminal's pipes)."""
    import time

    from decaylab.lab.plots import worker as worker_module

    monkeypatch.setattr(worker_module, "_warm_up", lambda *_: time.sleep(60))  # forked with the worker
    monkeypatch.setattr(worker_module, "CLOSE_TIMEOUT_S", 0.2)
    worker = FigureWorker()
    proc = worker._proc
    if proc is None:
        pytest.skip("no fork here: figures are drawn in-process")
    start = time.monotonic()
    worker.close()
    assert not proc.is_alive() and time.monotonic() - start < 5


# -- figures laid out ahead (the figure worker prepares them while the parent trains) ------------------------
def _trained_d2l(**given: str) -> tuple[Any, list[ConfigResult], dict[str, Any]]:
    from decaylab.lab.experiments import get_experiment
    from experiment_helpers import options, train

    exp = get_experiment("d2l-linear")
    opts = options(exp, **given)
    return exp, train(exp, opts), opts


def _pixels(path: Path) -> Any:
    import numpy as np
    from PIL import Image

    return np.asarray(Image.open(path))


def _artists(fig: Any) -> list[tuple[Any, ...]]:
    """What each Axes shows, whatever its position: lines (colour, style, marker, label, data), collections
    (colours, paths), title, axis labels, legend entries, limits and scales."""
    import numpy as np
    from matplotlib.colors import to_hex

    out: list[tuple[Any, ...]] = []
    for ax in fig.axes:
        out.append(("axes", ax.get_title(), ax.get_xlabel(), ax.get_ylabel(), ax.get_xscale(), ax.get_yscale(),
                    np.round(ax.get_xlim(), 9).tolist(), np.round(ax.get_ylim(), 9).tolist()))
        for line in ax.lines:
            out.append(("line", to_hex(line.get_color()), line.get_linestyle(), line.get_marker(), line.get_label(),
                        np.asarray(line.get_xydata(), dtype=float).round(9).tolist()))
        for coll in ax.collections:
            out.append(("collection", type(coll).__name__, np.asarray(coll.get_facecolor()).round(6).tolist(),
                        np.asarray(coll.get_edgecolor()).round(6).tolist(), len(coll.get_paths())))
        legend = ax.get_legend()
        if legend is not None:
            out.append(("legend", [t.get_text() for t in legend.get_texts()],
                        [to_hex(h.get_color()) for h in legend.legend_handles if hasattr(h, "get_color")]))
    return out


@pytest.fixture
def drawn_figures(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, bool]]:
    """Every figure ``save`` writes, as what it shows (:func:`_artists`), with whether it was written in
    the layout made ahead."""
    import decaylab.lab.plots as plots

    seen: list[tuple[Any, bool]] = []
    check = plots._drawn_in_fixed_layout

    def recorded(fig: Any) -> bool:
        fixed = check(fig)
        if not fixed:
            fig.canvas.draw()  # colour-mapped artists get their colours at a draw (the fixed layout was drawn)
        seen.append((_artists(fig), fixed))
        return fixed

    monkeypatch.setattr(plots, "_drawn_in_fixed_layout", recorded)
    return seen


@pytest.mark.parametrize("given", [dict(lambd="0:10:64"), dict(seed="0,1"), dict(lambd="3"), dict(lambd="log:1e-4:1:12")],
                         ids=["64 λ", "defaults, two seeds", "one λ", "log grid"])
def test_figures_laid_out_ahead_show_what_fresh_ones_show(
    tmp_path: Path, given: dict[str, str], drawn_figures: list[tuple[Any, bool]]
) -> None:
    from decaylab.lab.plots import d2l_linear, figures, prepare

    exp, results, opts = _trained_d2l(**given)
    figures(exp, results, opts, tmp_path / "fresh")
    fresh = [fig for fig, _ in drawn_figures]
    drawn_figures.clear()
    prepare(exp, opts)
    figures(exp, results, opts, tmp_path / "ahead")
    # the fast path was taken for the loss figure; for the norm figure too with 64 λ (a narrower range of
    # ‖w‖ gets labelled minor ticks, wider than the stand-in's: that one is laid out again)
    fixed = [fixed for _, fixed in drawn_figures]
    assert fixed == [True, True] if given.get("lambd") == "0:10:64" else fixed[0]
    assert d2l_linear._prepared == {}  # each prepared figure is used once
    for fresh_shows, (ahead_shows, _) in zip(fresh, drawn_figures, strict=True):
        assert ahead_shows == fresh_shows
    # the loss figure is the fresh one to the pixel; the norm figure has its size (the stand-in's wider tick
    # labels may leave a few pixels more margin)
    assert (_pixels(tmp_path / "ahead" / "curves.png") == _pixels(tmp_path / "fresh" / "curves.png")).all()
    assert _pixels(tmp_path / "ahead" / "norms.png").shape == _pixels(tmp_path / "fresh" / "norms.png").shape


def test_a_figure_whose_labels_outgrow_the_layout_made_ahead_is_laid_out_again(
    tmp_path: Path, drawn_figures: list[tuple[Any, bool]]
) -> None:
    from decaylab.lab.plots import figures, prepare

    exp, results, opts = _trained_d2l(epochs="3", lambd="0,3")
    for r in results:  # losses down to 1e-30: y tick labels 10⁻³⁰, wider than the stand-in's 10⁻⁹
        r.curves["train_loss"] = [1.0, 1e-15, 1e-30]
    figures(exp, results, opts, tmp_path / "fresh")
    drawn_figures.clear()
    prepare(exp, opts)
    figures(exp, results, opts, tmp_path / "ahead")
    assert drawn_figures[0][1] is False  # the loss figure did not fit: laid out again
    assert (_pixels(tmp_path / "ahead" / "curves.png") == _pixels(tmp_path / "fresh" / "curves.png")).all()


def test_prepared_figures_for_other_results_are_not_used(tmp_path: Path, drawn_figures: list[tuple[Any, bool]]) -> None:
    from decaylab.lab.plots import d2l_linear, figures, prepare

    exp, results, opts = _trained_d2l(epochs="3", lambd="0,1,3")
    prepare(exp, opts)
    figures(exp, results[:2], opts, tmp_path)  # one λ fewer (as when one diverged): fresh figures
    assert [fixed for _, fixed in drawn_figures] == [False, False]
    assert d2l_linear._prepared == {}


def test_log_axes_are_labelled_in_plain_text() -> None:
    from decaylab.lab.plots import _plain, plain_log_labels

    assert _plain(r"$\mathdefault{10^{-3}}$") == "10⁻³"
    assert _plain(r"$\mathdefault{10^{12}}$") == "10¹²"
    assert _plain(r"$\mathdefault{2\times10^{-1}}$") == "2×10⁻¹"
    assert _plain(r"$\mathdefault{-10^{2}}$") == "−10²"
    assert _plain("0.5") == "0.5"
    fig, axes = new_figure(1, 1)
    ax = axes[0, 0]
    ax.plot([1, 2], [1e-3, 1e2])
    ax.set_yscale("log")
    plain_log_labels(ax)
    fig.canvas.draw()
    labels = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
    assert "10⁻³" in labels and "10²" in labels and not any("$" in t for t in labels)


def test_worker_lays_out_ahead_and_draws_what_is_drawn_in_process(tmp_path: Path) -> None:
    from decaylab.lab.plots import figures

    exp, results, opts = _trained_d2l(epochs="3", lambd="0:10:16")
    worker = FigureWorker("d2l-linear", opts)
    worker.submit("d2l-linear", results, opts, tmp_path / "worker")
    assert sorted(p.name for p in worker.collect()) == ["curves.png", "norms.png"]
    figures(exp, results, opts, tmp_path / "here")
    assert (_pixels(tmp_path / "worker" / "curves.png") == _pixels(tmp_path / "here" / "curves.png")).all()


def test_preparation_stops_when_the_results_have_come() -> None:
    from decaylab.lab.experiments import get_experiment
    from decaylab.lab.plots import d2l_linear, prepare
    from experiment_helpers import options

    exp = get_experiment("d2l-linear")
    opts = options(exp, epochs="3")
    asked: list[int] = []

    def after_first() -> bool:  # the results come while the first figure is being prepared
        asked.append(1)
        return len(asked) > 1

    try:
        assert prepare(exp, opts, lambda: True) and d2l_linear._prepared == {}
        prepare(exp, opts, after_first)
        assert list(d2l_linear._prepared) == ["curves.png"] and len(asked) == 2
    finally:
        d2l_linear._prepared.clear()
