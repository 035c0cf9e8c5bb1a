"""Diverged configurations: the table shows the epoch, the figures draw what finished without numpy/matplotlib
warnings, an all-diverged figure says so, and the run exits 0 with one note "N of M configurations diverged"."""

from __future__ import annotations

import importlib
import json
import math
import warnings
from pathlib import Path
from typing import Any

import pytest

from decaylab.lab.experiments import get_experiment
from decaylab.lab.experiments.base import status_text, unfinished_note
from decaylab.results import ConfigResult
from experiment_helpers import options, train

# a few epochs of every experiment on small data, as the CLI would take the options
SMALL = {
    "d2l-linear": dict(epochs="3", lambd="0,3", seed="0,1"),
    "dropout-mlp": dict(epochs="2", hidden="16,16", n_test="50", n_train="40", seed="0"),
    "l2-vs-decay": dict(epochs="2", hidden="16,16", n_test="50", n_train="40", seed="0"),
    "noise-tikhonov": dict(epochs="3", n_test="20", n_train="20", seed="0"),
    "scaling": dict(epochs="3", m="16,32", lambd_half="log:1e-3:1e-1:3", lambd_mean="log:1e-2:1:3", seed="0",
                    n_val="50"),
    "sparsity": dict(epochs="3", lambd="log:0.01:3:3", n_train="30", n_test="20", dim="10", n_nonzero="3"),
    "constraint": dict(epochs="3", lambd="log:1e-2:1:3"),
    "ridge-path": dict(lambd="log:1e-3:1:5"),
}


def _diverged(r: ConfigResult, epoch: int) -> ConfigResult:
    """``r`` as the engine reports a configuration that diverged at ``epoch``: NaN from there on, no final numbers."""
    c = ConfigResult.from_json(r.to_json())
    c.status, c.diverged_epoch = "diverged", epoch
    c.metrics = {k: math.nan for k in c.metrics}
    c.curves = {k: [v if k == "epoch" or i < epoch - 1 else math.nan for i, v in enumerate(vs)]
                for k, vs in c.curves.items()}
    c.weights = c.averaged_weights = c.optimizer_state = None
    return c


@pytest.mark.parametrize("name", list(SMALL))
def test_every_experiment_shows_and_draws_diverged_configurations(name: str, tmp_path: Path, one_thread: Any,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    exp = get_experiment(name)
    opts = options(exp, **SMALL[name])
    results = train(exp, opts)
    some = [_diverged(r, 2) if i % 2 == 0 else r for i, r in enumerate(results)]
    every = [_diverged(r, 2 + i % 2) for i, r in enumerate(results)]
    said: list[tuple[str, str]] = []
    import decaylab.lab.plots as plots

    real = plots.nothing_finished
    monkeypatch.setattr(plots, "nothing_finished", lambda path, title, note: said.append((path.name, note)) or real(path, title, note))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nanmean of an empty slice, an empty legend, a log axis without data ...
        for label, rs in (("some", some), ("every", every)):
            said.clear()
            table = exp.table(rs, opts)
            shown = repr(table.rows) + repr(table.notes)
            assert "diverged at epoch 2" in shown, shown
            exp.summarize(rs, opts)
            paths = plots.figures(exp, rs, opts, tmp_path / label)
            assert paths and all(p.stat().st_size > 0 for p in paths)
    # every figure of the all-diverged run is the panel that says so, with how many and when
    note = f"{len(every)} of {len(every)} configurations diverged (at epoch{'s 2–3' if len(every) > 1 else ' 2'})"
    figure_names = importlib.import_module(f"decaylab.lab.plots.{exp.name.replace('-', '_')}").figure_names
    assert said == [(n, note) for n in figure_names(opts)]


def test_the_all_diverged_panel_says_so(tmp_path: Path) -> None:
    import matplotlib

    from decaylab.lab.plots import nothing_finished

    with matplotlib.rc_context({"svg.fonttype": "none"}):  # text kept as text in the SVG
        path = nothing_finished(tmp_path / "curves.svg", "d2l-linear: curves.png", "2 of 2 configurations diverged")
    svg = path.read_text()
    assert "Nothing to draw: 2 of 2 configurations diverged." in svg and "d2l-linear: curves.png" in svg


def test_status_and_notes() -> None:
    done = ConfigResult(params={"lambd": 0.0}, status="done")
    div = ConfigResult(params={"lambd": 1.0}, status="diverged", diverged_epoch=7)
    failed = ConfigResult(params={"lambd": 2.0}, status="failed", error="boom")
    assert [status_text(r) for r in (done, div, failed)] == ["done", "diverged at epoch 7", "failed"]
    assert unfinished_note([done, done]) == ""
    assert unfinished_note([done, div, failed]) == "1 of 3 configurations diverged (at epoch 7); 1 failed"


def test_an_all_diverged_run_exits_0_with_one_note_and_no_warnings(cli: Any, tmp_path: Path) -> None:
    """``d2l-linear --lr 10`` diverges at once; the run is a result: exit 0, the epoch in the table, one note."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # also in the forked figure worker, which inherits it
        warnings.simplefilter("error", UserWarning)
        code, out, err = cli("run", "d2l-linear", "--lr", "10", "--epochs", "5", "--seed", "0,1",
                             "--store", str(tmp_path / "s.db"), "--out", str(tmp_path / "o"))
    assert code == 0, err
    assert err.splitlines() == ["decaylab: note: 4 of 4 configurations diverged (at epoch 3)"]
    assert out.count("diverged at epoch 3") == 4
    assert all((tmp_path / "o" / f).stat().st_size > 0 for f in ("curves.png", "norms.png"))
    doc = json.loads((tmp_path / "o" / "results.json").read_text())
    assert [c["diverged_epoch"] for c in doc["configs"]] == [3, 3, 3, 3]


def test_a_run_where_nothing_diverged_prints_no_note(cli: Any, tmp_path: Path) -> None:
    code, _, err = cli("run", "d2l-linear", "--epochs", "2", "--store", str(tmp_path / "s.db"), "--quiet")
    assert code == 0 and err == ""
