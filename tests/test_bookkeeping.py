"""Bookkeeping at scale: the JSON document is today's (compared with the old code path), large runs
leave curves out unless --curves, long tables are cut, the norm figure draws a few artists for many λ."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from decaylab.lab.experiments import get_experiment
from decaylab.lab.outputs import (
    CURVES_INLINE_MAX,
    MAX_TABLE_ROWS,
    TABLE_EDGE_ROWS,
    document_text,
    run_document,
)
from decaylab.lab.store import Store
from decaylab.results import ConfigResult, json_safe
from test_store_arrays import same


# -- the old code path, as it was before the document was vectorized ----------------------------
def _finite_or_none(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def old_config_json(r: ConfigResult) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "params": r.params,
        "status": r.status,
        "metrics": {k: _finite_or_none(v) for k, v in r.metrics.items()},
        "curves": {k: [_finite_or_none(v) for v in vs] for k, vs in r.curves.items()},
    }
    if r.diverged_epoch is not None:
        doc["diverged_epoch"] = r.diverged_epoch
    if r.error is not None:
        doc["error"] = r.error
    for name in ("weights", "averaged_weights", "optimizer_state"):
        if getattr(r, name) is not None:
            doc[name] = json_safe(getattr(r, name))
    return doc


def old_document_text(record: Any, summary: dict[str, Any]) -> str:
    doc = json_safe(
        {
            "run_id": record.run_id, "experiment": record.experiment, "status": record.status,
            "version": record.version, "command": record.command, "options": record.options,
            "environment": record.environment, "summary": summary,
            "configs": [old_config_json(c) for c in record.configs],
        }
    )  # fmt: skip
    return json.dumps(json_safe(doc), indent=1, allow_nan=False) + "\n"


FAST = ("--epochs", "3", "--quiet")


def test_document_is_the_old_code_paths(cli: Any, tmp_path: Path) -> None:
    """A small run with a diverged λ (NaN curves): --json, results.json and the old code path agree."""
    code, out, err = cli("run", "d2l-linear", "--no-figures", *FAST, "--lambd", "0,3,1e9", "--seed", "0,1", "--json", "--out", "o")
    assert code == 0, err
    printed = json.loads(out)
    assert same(json.loads((tmp_path / "o" / "results.json").read_text()), printed)
    record = Store("decaylab.db").get_run(printed["run_id"])
    assert sorted(c.status for c in record.configs) == ["diverged"] * 2 + ["done"] * 4
    exp = get_experiment("d2l-linear")
    summary = exp.summarize(record.configs, record.options)
    assert same(printed, json.loads(old_document_text(record, summary)))
    assert same(json.loads(document_text(run_document(record, summary))), json.loads(old_document_text(record, summary)))
    diverged = [c for c in printed["configs"] if c["status"] == "diverged"]
    assert all(None in c["curves"]["train_loss"] for c in diverged)  # NaN written as null
    assert "curves_left_out" not in printed


def test_document_with_kept_weights_and_optimizer_state_is_the_old_code_paths() -> None:
    nan = float("nan")
    r = ConfigResult(
        params={"lambd": 0.5}, metrics={"loss": nan, "n": 3}, curves={"epoch": [1, 2], "loss": [0.5, float("inf")]},
        weights=[[1.0, nan], [2.0, 3.0]], averaged_weights=[nan, 1.0], optimizer_state={"m": [nan, 0.5], "step": [2.0]},
        diverged_epoch=2, status="diverged",
    )  # fmt: skip
    assert same(r.to_json(), old_config_json(r))
    text = document_text({"configs": [r.to_json()], "summary": {"x": nan}})
    assert same(json.loads(text), json_safe({"configs": [old_config_json(r)], "summary": {"x": None}}))


LARGE = ("--lambd", f"0:1:{CURVES_INLINE_MAX + 44}", "--epochs", "2")


@pytest.fixture
def large_run(cli: Any, tmp_path: Path) -> tuple[dict[str, Any], str]:
    code, out, err = cli("run", "d2l-linear", "--no-figures", *LARGE, "--json", "--out", "big")
    assert code == 0, err
    return json.loads(out), err


def test_large_run_leaves_curves_out_and_says_how_to_get_them(large_run: Any, cli: Any, tmp_path: Path) -> None:
    doc, err = large_run
    n = CURVES_INLINE_MAX + 44
    assert len(doc["configs"]) == n and all("curves" not in c for c in doc["configs"])
    how = f"decaylab runs show {doc['run_id']} --json --curves"
    assert how in doc["curves_left_out"] and how in err and err.count("\n") == 1
    assert same(json.loads((tmp_path / "big" / "results.json").read_text()), doc)

    code, out, err = cli("runs", "show", doc["run_id"], "--json")
    assert code == 0 and same(json.loads(out), doc) and how in err
    code, out, _ = cli("runs", "show", doc["run_id"], "--json", "--curves")
    full = json.loads(out)
    assert code == 0 and "curves_left_out" not in full
    record = Store("decaylab.db").get_run(doc["run_id"])
    assert same([c["curves"] for c in full["configs"]], [json_safe(c.curves) for c in record.configs])
    assert same([{k: v for k, v in c.items() if k != "curves"} for c in full["configs"]], doc["configs"])


def test_curves_flag_keeps_them(cli: Any, tmp_path: Path) -> None:
    code, out, err = cli("run", "d2l-linear", "--no-figures", *LARGE, "--json", "--curves", "--out", "big")
    assert code == 0 and err == ""
    doc = json.loads(out)
    assert "curves_left_out" not in doc and all(len(c["curves"]["train_loss"]) == 2 for c in doc["configs"])


def test_long_table_shows_first_and_last_rows(large_run: Any, cli: Any) -> None:
    doc, _ = large_run
    n = len(doc["configs"])
    code, out, _ = cli("runs", "show", doc["run_id"])
    assert code == 0
    rows = [line for line in out.splitlines() if line.startswith("│")]
    assert n > MAX_TABLE_ROWS and len(rows) == 2 * TABLE_EDGE_ROWS + 1  # first, "…", last
    assert rows[0].split("│")[1].strip() == "0" and rows[-1].split("│")[1].strip() == "1"  # λ = 0 … 1
    assert f"{n - 2 * TABLE_EDGE_ROWS} of {n} rows left out" in out
    assert f"decaylab runs show {doc['run_id']} --json" in out


def test_short_table_is_whole(cli: Any) -> None:
    code, out, _ = cli("run", "d2l-linear", "--no-figures", "--epochs", "2", "--lambd", "0:1:5")
    assert code == 0 and sum(line.startswith("│") for line in out.splitlines()) == 5 and "left out" not in out


def test_norm_figure_of_many_lambdas_draws_a_few_artists(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import decaylab.lab.plots.d2l_linear as figures

    drawn: list[Any] = []
    monkeypatch.setattr(figures, "save", lambda fig, path: drawn.append(fig) or path)
    opts = {"dim": 4, "n_train": 2, "seed": [0]}

    def results(n: int) -> list[ConfigResult]:
        return [
            ConfigResult(params={"lambd": k / n, "seed": 0}, metrics={"w_norm": 1.0, "train_loss": 0.1, "test_loss": 0.2},
                         curves={"epoch": [1, 2, 3], "w_norm": [2.0, 1.0 + k / n, 0.5]})
            for k in range(n)
        ]  # fmt: skip

    for n in (3, 2000):
        figures.plot_norms(results(n), opts, tmp_path / "n.png")
    few, many = (fig.axes[0] for fig in drawn)
    assert len(few.lines) == 4 and not few.collections  # three λ and the √d line, with a legend
    assert len(many.lines) == 1 and len(many.collections) == 1  # √d, and every λ in one LineCollection
    (lines,) = many.collections
    assert len(lines.get_segments()) == 2000 and lines.get_rasterized()


def test_group_means_of_the_norm_figure_are_nanmean_per_lambda() -> None:
    import itertools
    import warnings

    import numpy as np

    from decaylab.lab.plots.d2l_linear import _group_nanmean

    rng = np.random.default_rng(0)
    sizes = [3, 1, 2, 4]
    groups = {float(k): [ConfigResult() for _ in range(n)] for k, n in enumerate(sizes)}
    rows = rng.normal(size=(sum(sizes), 5))
    rows[1, 2] = rows[3, :] = rows[4, 0] = rows[5, 0] = np.nan  # group 1 all NaN; group 2 NaN in column 0
    got = _group_nanmean(groups, rows)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        edges = np.cumsum([0, *sizes])
        want = np.stack([np.nanmean(rows[a:b], axis=0) for a, b in itertools.pairwise(edges)])
    np.testing.assert_allclose(got, want, rtol=1e-12, equal_nan=True)
    assert np.isnan(got[1]).all() and np.isnan(got[2, 0])
