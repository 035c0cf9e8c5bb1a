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
