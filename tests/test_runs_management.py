"""decaylab runs list (main options) | delete | export | compare."""

from __future__ import annotations

import io
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from decaylab.lab.store import RunBusyError, Store
from store_helpers import one_line_error, sql

# one worker trains the three runs once (see _three_runs), not each of the two
pytestmark = pytest.mark.xdist_group("runs-management")

RUN = ("run", "d2l-linear", "--store", "s.db", "--quiet")


_TEMPLATE: dict[str, Any] = {}  # this worker's first three runs (store + run directories), copied for later tests


def _three_runs(cli_json: Any) -> list[str]:
    """Three finished runs in ``s.db`` (and their ``runs/`` directories) in the current directory.

    They are trained once per test process and copied for every later test: each test still gets its own
    store to delete from or export, and the runs' numbers are the same either way (seeded)."""
    if not _TEMPLATE:
        ids = [
            cli_json(*RUN, "--lambd", "0,1", "--epochs", "6")["run_id"],
            cli_json(*RUN, "--epochs", "4", "--seed", "0,1")["run_id"],
            cli_json(*RUN, "--lambd", "0,1", "--epochs", "6", "--lr", "0.01")["run_id"],
        ]
        keep = Path(tempfile.mkdtemp(prefix="decaylab-three-runs-"))
        shutil.copy2("s.db", keep / "s.db")
        shutil.copytree("runs", keep / "runs")
        _TEMPLATE.update(ids=ids, dir=keep)
        return ids
    shutil.copy2(_TEMPLATE["dir"] / "s.db", "s.db")
    shutil.copytree(_TEMPLATE["dir"] / "runs", "runs", dirs_exist_ok=True)
    return list(_TEMPLATE["ids"])


def _rows(run_id: str) -> list[tuple[Any, ...]]:
    return sql(Path("s.db"), "SELECT * FROM configs WHERE run_id = ? ORDER BY idx", (run_id,)) + sql(
        Path("s.db"), "SELECT * FROM runs WHERE run_id = ?", (run_id,)
    )


def test_runs_list_shows_each_runs_main_options(cli: Any, cli_json: Any) -> None:
    ids = _three_runs(cli_json)
    listed = {r["run_id"]: r["main_options"] for r in cli_json("runs", "list", "--store", "s.db")}
    assert listed == {ids[0]: "lambd=0,1 epochs=6", ids[1]: "epochs=4 seed=0,1", ids[2]: "lambd=0,1 epochs=6 lr=0.01"}
    code, out, _ = cli("runs", "list", "--store", "s.db")
    assert code == 0 and "options" in out and "lambd=0,1 epochs=6 lr=0.01" in out
    # given, but equal to the default once parsed: not a main option
    cli_json(*RUN, "--lambd", "0,3.0", "--epochs", "3")
    assert cli_json("runs", "list", "--store", "s.db")[0]["main_options"] == "epochs=3"


def test_delete_removes_the_run_and_leaves_the_others(cli: Any, cli_json: Any) -> None:
    ids = _three_runs(cli_json)
    kept = {i: _rows(i) for i in (ids[0], ids[2])}
    code, out, err = cli("runs", "delete", ids[1], "--yes", "--store", "s.db")
    assert code == 0, err
    assert f"deleted run {ids[1]} (d2l-linear, 4 configs)" in out and "left as they are" in out
    assert sql(Path("s.db"), "SELECT COUNT(*) FROM configs WHERE run_id = ?", (ids[1],)) == [(0,)]
    assert sql(Path("s.db"), "SELECT COUNT(*) FROM runs WHERE run_id = ?", (ids[1],)) == [(0,)]
    assert {i: _rows(i) for i in kept} == kept
    assert [r["run_id"] for r in cli_json("runs", "list", "--store", "s.db")] == [ids[2], ids[0]]
    assert (Path("runs") / ids[1] / "results.json").is_file()  # the output directory stays
    code, _, err = cli("runs", "show", ids[1], "--store", "s.db")
    one_line_error(code, err, "'RUN_ID'", repr(ids[1]))


def test_delete_refuses_unknown_ids_and_deletes_nothing(cli: Any, cli_json: Any) -> None:
    ids = _three_runs(cli_json)
    before = sql(Path("s.db"), "SELECT run_id, idx, status FROM configs ORDER BY run_id, idx")
    code, _, err = cli("runs", "delete", ids[0], "20200101-000000-abcdef", "--yes", "--store", "s.db")
    one_line_error(code, err, "'RUN_ID'", "20200101-000000-abcdef", "the id of a run in the store")
    assert sql(Path("s.db"), "SELECT run_id, idx, status FROM configs ORDER BY run_id, idx") == before
    code, _, err = cli("runs", "delete", "--yes", "--store", "s.db")
    one_line_error(code, err, "RUN_ID")
    code, _, err = cli("runs", "delete", ids[0], "--yes", "--store", "none.db")
    one_line_error(code, err, "none.db")
    assert not Path("none.db").exists()


def test_delete_asks_on_a_terminal_and_refuses_without_one(cli: Any, cli_json: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    ids = _three_runs(cli_json)
    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n"))  # not a terminal: nobody to ask
    code, _, err = cli("runs", "delete", ids[0], "--store", "s.db")
    one_line_error(code, err, "'--yes'", "not a terminal", "nothing was deleted")
    assert len(cli_json("runs", "list", "--store", "s.db")) == 3

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    asked: list[str] = []
    answers = iter(["n", "yes"])
    monkeypatch.setattr(sys, "stdin", Terminal())
    monkeypatch.setattr("builtins.input", lambda prompt: asked.append(prompt) or next(answers))
    code, out, err = cli("runs", "delete", ids[0], ids[1], "--store", "s.db")
    assert code == 0, err
    assert asked == [f"Delete run {ids[0]} (d2l-linear, 2 configs)? [y/N] ", f"Delete run {ids[1]} (d2l-linear, 4 configs)? [y/N] "]
    assert f"kept run {ids[0]}" in out and f"deleted run {ids[1]}" in out
    assert sorted(r["run_id"] for r in cli_json("runs", "list", "--store", "s.db")) == sorted([ids[0], ids[2]])


def test_delete_refuses_a_run_a_live_process_trains(cli: Any, cli_json: Any) -> None:
    ids = _three_runs(cli_json)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        sql(Path("s.db"), "UPDATE runs SET status = 'running', owner_pid = ?, owner_host = ?, owner_token = 'other',"
            " heartbeat = ? WHERE run_id = ?", (sleeper.pid, socket.gethostname(), time.time(), ids[1]))
        before = sql(Path("s.db"), "SELECT run_id, idx FROM configs ORDER BY run_id, idx")
        code, _, err = cli("runs", "delete", ids[0], ids[1], "--yes", "--store", "s.db")
        one_line_error(code, err, "'RUN_ID'", repr(ids[1]), "no live process is training", "nothing was deleted")
        with pytest.raises(RunBusyError, match="is training it"):  # the store's own check, inside its transaction
            Store("s.db").delete_runs([ids[0], ids[1]])
        assert sql(Path("s.db"), "SELECT run_id, idx FROM configs ORDER BY run_id, idx") == before
    finally:
        sleeper.kill()
        sleeper.wait()
    # its owner gone, the run is interrupted and can be deleted
    assert Store("s.db").delete_runs([ids[1]]) == {ids[1]: 4}


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_export_reads_back_equal_to_the_store(cli: Any, cli_json: Any, fmt: str) -> None:
    ids = _three_runs(cli_json)
    code, out, err = cli("runs", "export", ids[1], f"--{fmt}", f"out.{fmt}", "--store", "s.db")
    assert code == 0 and f"wrote out.{fmt}" in out and "4 rows" in out, err
    frame = pd.read_csv("out.csv") if fmt == "csv" else pd.read_parquet("out.parquet")
    record = Store("s.db").get_run(ids[1])
    assert record is not None
    assert list(frame.columns) == ["idx", "lambd", "seed", "impl", "status", "diverged_epoch", "error", "train_loss", "test_loss", "w_norm"]
    assert len(frame) == len(record.configs) == 4
    for (_, row), config in zip(frame.iterrows(), record.configs, strict=True):
        for key, value in config.params.items():
            assert row[key] == value
        assert row["status"] == config.status and pd.isna(row["diverged_epoch"]) and pd.isna(row["error"])
        for key, value in config.metrics.items():
            assert row[key] == pytest.approx(value, rel=1e-15 if fmt == "parquet" else 1e-12), key

    code, out, err = cli("runs", "export", ids[1], f"--{fmt}", f"curves.{fmt}", "--curves", "--store", "s.db")
    assert code == 0, err
    long = pd.read_csv("curves.csv") if fmt == "csv" else pd.read_parquet("curves.parquet")
    assert list(long.columns) == ["idx", "lambd", "seed", "impl", "point", "epoch", "train_loss", "test_loss", "w_norm"]
    assert len(long) == 4 * 4
    for idx, config in enumerate(record.configs):
        part = long[long["idx"] == idx]
        assert part["point"].tolist() == [0, 1, 2, 3]
        for key, values in config.curves.items():
            assert part[key].tolist() == pytest.approx(values, rel=1e-12)


def test_export_bad_input_is_one_line(cli: Any, cli_json: Any) -> None:
    ids = _three_runs(cli_json)
    for argv, fragments in [
        ((ids[0], "--csv", "no/such/dir/x.csv"), ("'--csv'", "existing, writable directory")),
        ((ids[0], "--parquet", "."), ("'--parquet'",)),
        ((ids[0],), ("one of the arguments --csv --parquet is required",)),
        ((ids[0], "--csv", "a.csv", "--parquet", "a.parquet"), ("not allowed with",)),
        (("20200101-000000-abcdef", "--csv", "a.csv"), ("'RUN_ID'", "the id of a run in the store")),
    ]:
        code, _, err = cli("runs", "export", *argv, "--store", "s.db")
        one_line_error(code, err, *fragments)
    assert not Path("a.csv").exists() and not Path("a.parquet").exists()


def test_compare_puts_options_and_metrics_side_by_side(cli: Any, cli_json: Any) -> None:
    ids = _three_runs(cli_json)
    doc = cli_json("runs", "compare", ids[0], ids[2], "--store", "s.db")
    assert doc["a"]["run_id"] == ids[0] and doc["b"]["run_id"] == ids[2]
    options = {o["name"]: o for o in doc["options"]}
    assert options["lr"] == {"name": "lr", "a": "0.003", "b": "0.01", "differs": True}
    assert not options["lambd"]["differs"] and not options["epochs"]["differs"]
    assert [o["name"] for o in doc["options"]][:3] == ["lambd", "epochs", "lr"]
    a, b = Store("s.db").get_run(ids[0]), Store("s.db").get_run(ids[2])
    assert a is not None and b is not None
    assert [c["params"] for c in doc["configs"]] == [c.params for c in a.configs]
    for entry, ca, cb in zip(doc["configs"], a.configs, b.configs, strict=True):
        assert entry["a"]["metrics"] == ca.metrics and entry["b"]["metrics"] == cb.metrics
        assert entry["differs"] == [m for m in ca.metrics if ca.metrics[m] != cb.metrics[m]]
        assert entry["differs"]  # another learning rate: other numbers
    summary = {s["key"]: s for s in doc["summary"]}
    assert summary["by_lambda[1].lambd"] == {"key": "by_lambda[1].lambd", "a": 1.0, "b": 1.0, "differs": False}
    assert summary["by_lambda[1].test_loss"]["differs"]

    # the same options twice: nothing differs but the ids
    again = cli_json(*RUN, "--lambd", "0,1", "--epochs", "6")["run_id"]
    same = cli_json("runs", "compare", ids[0], again, "--store", "s.db")
    assert not any(o["differs"] for o in same["options"]) and not any(s["differs"] for s in same["summary"])
    assert all(c["differs"] == [] for c in same["configs"])

    # configurations only one run has; the text output marks differences
    other = cli_json("runs", "compare", ids[0], ids[1], "--store", "s.db")
    only = [c for c in other["configs"] if c["differs"] == ["*"]]
    assert {json.dumps(c["params"], sort_keys=True) for c in only} == {
        json.dumps({"impl": "batched", "lambd": 1.0, "seed": 0}, sort_keys=True),
        json.dumps({"impl": "batched", "lambd": 0.0, "seed": 1}, sort_keys=True),
        json.dumps({"impl": "batched", "lambd": 3.0, "seed": 0}, sort_keys=True),
        json.dumps({"impl": "batched", "lambd": 3.0, "seed": 1}, sort_keys=True),
    }
    code, out, err = cli("runs", "compare", ids[0], ids[2], "--store", "s.db")
    assert code == 0, err
    lr_line = next(line for line in out.splitlines() if " lr " in f" {line} ")
    assert "0.003" in lr_line and "0.01" in lr_line and "≠" in lr_line
    epochs_line = next(line for line in out.splitlines() if "epochs" in line and "6" in line)
    assert "≠" not in epochs_line
    code, _, err = cli("runs", "compare", ids[0], "20200101-000000-abcdef", "--store", "s.db")
    one_line_error(code, err, "'RUN_ID'", "20200101-000000-abcdef")


def test_frames_of_lists_missing_metrics_and_clashing_names(tmp_path: Path) -> None:
    from decaylab.lab.frames import configs_frame, curves_frame, write_frame
    from decaylab.results import ConfigResult

    results = [
        ConfigResult(params={"hidden": [256, 256], "status": 1}, status="done", metrics={"loss": 0.5, "idx": 2.0},
                     curves={"epoch": [1.0, 2.0], "loss": [0.9, 0.5], "point": [7.0, 8.0]}),
        ConfigResult(params={"hidden": [64], "status": 2}, status="diverged", metrics={"loss": float("nan")},
                     curves={"epoch": [1.0], "loss": [float("nan")]}, diverged_epoch=1),
        ConfigResult(params={"hidden": [8], "status": 3}, status="failed", error="RuntimeError: x"),
    ]
    frame = configs_frame(results)
    assert list(frame.columns) == ["idx", "hidden", "param_status", "status", "diverged_epoch", "error", "loss", "metric_idx"]
    assert frame["param_status"].tolist() == [1, 2, 3] and frame["status"].tolist() == ["done", "diverged", "failed"]
    assert frame["hidden"].tolist() == ["[256,256]", "[64]", "[8]"]
    assert frame["loss"].tolist()[0] == 0.5 and pd.isna(frame["loss"][1]) and pd.isna(frame["loss"][2])
    assert frame["metric_idx"].tolist()[0] == 2.0 and frame["diverged_epoch"].tolist()[1] == 1
    for fmt in ("csv", "parquet"):
        write_frame(frame, tmp_path / f"f.{fmt}", fmt)
        back = pd.read_csv(tmp_path / "f.csv") if fmt == "csv" else pd.read_parquet(tmp_path / "f.parquet")
        assert back["hidden"].tolist() == ["[256,256]", "[64]", "[8]"] and back["loss"].tolist()[0] == 0.5
    long = curves_frame(results)
    assert list(long.columns) == ["idx", "hidden", "status", "point", "epoch", "loss", "curve_point"]
    assert long["idx"].tolist() == [0, 0, 1] and long["curve_point"].tolist()[:2] == [7.0, 8.0]
    assert pd.isna(long["curve_point"][2]) and pd.isna(long["loss"][2])
