"""The run store's files: creation under concurrency, schema versions, and every bad file as one line."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from decaylab.lab import store as store_module
from decaylab.lab.store import Store
from store_helpers import decaylab, one_line_error, sql, unprivileged, write_v1_store

FAST = ("--epochs", "4", "--quiet")


def _stored_run(cli_json: Any, path: str = "s.db", *extra: str) -> dict[str, Any]:
    return cli_json("run", "d2l-linear", "--no-figures", *FAST, "--store", path, *extra)


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


# -- creating a store ------------------------------------------------------------------------
CREATE = """
import sys, time
from decaylab.lab.store import Store
start, path, run_id = float(sys.argv[1]), sys.argv[2], sys.argv[3]
while time.time() < start:
    pass
store = Store(path)
store.create_run(run_id, "d2l-linear", "cmd", {}, {}, "0", "0", [{"lambd": 0.0}])
store.close()
"""


def test_processes_creating_one_store_at_once_all_succeed_with_one_schema(tmp_path: Path) -> None:
    """Four processes open a store that does not exist yet at the same instant (three times over)."""
    for trial in range(3):
        path = tmp_path / f"new{trial}.db"
        start = time.time() + 1.5  # every child has imported decaylab.lab.store by then and spins until it
        children = [
            subprocess.Popen([sys.executable, "-c", CREATE, str(start), str(path), f"run{i}"], stderr=subprocess.PIPE, text=True)
            for i in range(4)
        ]
        errors = [child.communicate(timeout=120)[1] for child in children]
        assert [child.returncode for child in children] == [0] * 4, errors
        tables = sql(path, "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        assert tables == [("configs",), ("meta",), ("runs",)]
        assert sql(path, "SELECT key, value FROM meta ORDER BY key") == [("application", "decaylab"), ("schema_version", "3")]
        assert sorted(r.run_id for r in Store(path).list_runs()) == ["run0", "run1", "run2", "run3"]


# -- reading commands never create a store ---------------------------------------------------
@pytest.mark.parametrize(
    "argv",
    [("runs", "list"), ("runs", "show", "20260101-000000-abcdef"), ("resume", "20260101-000000-abcdef"),
     ("run", "d2l-linear", "--resume", "20260101-000000-abcdef")],
    ids=["runs list", "runs show", "resume", "run --resume"],
)  # fmt: skip
@pytest.mark.parametrize("where", ["--store", "default"])
def test_reading_commands_on_a_missing_store_create_nothing(cli: Any, tmp_path: Path, argv: tuple[str, ...], where: str) -> None:
    store_args = ("--store", "typo.db") if where == "--store" else ()
    code, out, err = cli(*argv, *store_args)
    name = "typo.db" if where == "--store" else "decaylab.db"
    one_line_error(code, err, "'--store'", repr(name), "There is no such file")
    assert out == ""
    assert list(tmp_path.iterdir()) == []  # no store, no journal, no run directory


def test_store_names_that_look_like_uri_syntax(cli_json: Any, tmp_path: Path) -> None:
    """The store is opened through an SQLite URI; '?', '#' and '%' in its name are part of the name."""
    name = "runs?mode=ro#1%20.db"
    doc = _stored_run(cli_json, name)
    assert [r["run_id"] for r in cli_json("runs", "list", "--store", name)] == [doc["run_id"]]
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == [name]


# -- schema versions and columns -------------------------------------------------------------
def test_version_1_store_is_read_as_is_and_migrated_by_a_write(cli: Any, cli_json: Any, tmp_path: Path) -> None:
    doc = _stored_run(cli_json, "current.db")
    write_v1_store(tmp_path / "old.db", source=tmp_path / "current.db")
    before = _files(tmp_path)

    listed = cli_json("runs", "list", "--store", "old.db")
    assert [(r["run_id"], r["status"], r["counts"]) for r in listed] == [(doc["run_id"], "finished", {"done": 2})]
    shown = cli_json("runs", "show", doc["run_id"], "--store", "old.db")
    assert shown["configs"] == doc["configs"] and shown["environment"] is None
    code, out, _ = cli("runs", "show", doc["run_id"], "--store", "old.db")
    assert code == 0 and "environment: not recorded" in out
    assert _files(tmp_path) == before  # reading never migrates (nor writes anything)

    new = _stored_run(cli_json, "old.db")  # the first write migrates it to version 3 (2 added the columns)
    assert sql(tmp_path / "old.db", "SELECT value FROM meta WHERE key = 'schema_version'") == [("3",)]
    columns = [r[1] for r in sql(tmp_path / "old.db", "PRAGMA table_info(runs)")]
    assert columns[-5:] == ["owner_pid", "owner_host", "owner_token", "heartbeat", "environment"]
    runs = {r["run_id"]: r for r in cli_json("runs", "list", "--store", "old.db")}
    assert set(runs) == {doc["run_id"], new["run_id"]}
    assert cli_json("runs", "show", doc["run_id"], "--store", "old.db")["configs"] == doc["configs"]


def test_version_1_run_cut_off_is_interrupted_and_resumable(cli_json: Any, tmp_path: Path) -> None:
    """A version-1 run left ``running`` has no owner: it is shown interrupted and resumes to the full result."""
    full = _stored_run(cli_json, "current.db", "--lambd", "0,1,3")
    sql(tmp_path / "current.db", "UPDATE runs SET status = 'running', finished = NULL")
    sql(tmp_path / "current.db", "UPDATE configs SET status = 'pending', metrics = NULL, curves = NULL WHERE idx = 1")
    write_v1_store(tmp_path / "old.db", source=tmp_path / "current.db")
    assert cli_json("runs", "list", "--store", "old.db")[0]["status"] == "interrupted"
    resumed = cli_json("resume", full["run_id"], "--no-figures", "--store", "old.db", "--quiet")
    assert resumed["status"] == "finished" and resumed["configs"] == full["configs"]


def test_store_with_columns_of_a_later_schema_still_reads_and_writes(cli: Any, cli_json: Any, tmp_path: Path) -> None:
    doc = _stored_run(cli_json)
    path = tmp_path / "s.db"
    sql(path, "ALTER TABLE runs ADD COLUMN tags TEXT DEFAULT '[]'")
    sql(path, "ALTER TABLE configs ADD COLUMN wall_time REAL")
    sql(path, "UPDATE meta SET value = '4' WHERE key = 'schema_version'")
    assert cli_json("runs", "show", doc["run_id"], "--store", "s.db")["configs"] == doc["configs"]
    new = _stored_run(cli_json)
    assert [r["run_id"] for r in cli_json("runs", "list", "--store", "s.db")] == [new["run_id"], doc["run_id"]]
    assert sql(path, "SELECT tags FROM runs WHERE run_id = ?", (new["run_id"],)) == [("[]",)]
    assert sql(path, "SELECT value FROM meta WHERE key = 'schema_version'") == [("4",)]  # never downgraded


# -- bad store files: one line, exit 2, nothing lost -----------------------------------------
def test_dropped_table(cli: Any, cli_json: Any, tmp_path: Path) -> None:
    doc = _stored_run(cli_json)
    sql(tmp_path / "s.db", "DROP TABLE configs")
    for argv in (("runs", "list"), ("runs", "show", doc["run_id"]), ("run", "d2l-linear", *FAST)):
        code, _, err = cli(*argv, "--store", "s.db")
        one_line_error(code, err, "'s.db'", "damaged", "'configs' is missing")
    assert sql(tmp_path / "s.db", "SELECT run_id FROM runs") == [(doc["run_id"],)]


@pytest.mark.parametrize("column", ["params", "metrics", "options", "environment"])
def test_bad_json_in_a_row(cli: Any, cli_json: Any, tmp_path: Path, column: str) -> None:
    doc = _stored_run(cli_json)
    table = "runs" if column in ("options", "environment") else "configs"
    sql(tmp_path / "s.db", f"UPDATE {table} SET {column} = '{{\"cut off' ")
    code, _, err = cli("runs", "show", doc["run_id"], "--store", "s.db")
    one_line_error(code, err, "'s.db'", "damaged", f"column '{column}' of run '{doc['run_id']}' is not JSON")
    if column in ("options", "environment"):  # runs list reads no configuration (counts by GROUP BY)
        code, _, err = cli("runs", "list", "--store", "s.db")
        one_line_error(code, err, "'s.db'", f"'{column}'")


@pytest.mark.parametrize("argv", [("runs", "list"), ("run", "d2l-linear", *FAST)], ids=["runs list", "run"])
def test_dev_null_and_a_directory_are_refused(cli: Any, tmp_path: Path, argv: tuple[str, ...]) -> None:
    code, _, err = cli(*argv, "--store", "/dev/null")
    one_line_error(code, err, "'/dev/null'", "not a regular file")
    (tmp_path / "dir.db").mkdir()
    code, _, err = cli(*argv, "--store", "dir.db")
    one_line_error(code, err, "'dir.db'", "is a directory")


@pytest.mark.parametrize("kind", ["text", "sqlite-of-another-app", "empty-sqlite"])
def test_reading_a_foreign_file_refuses_it_and_leaves_it_untouched(cli: Any, tmp_path: Path, kind: str) -> None:
    path = tmp_path / "foreign.db"
    if kind == "text":
        path.write_text("SQLite notes, chapter 3\n")
    else:
        conn = sqlite3.connect(path)
        if kind != "empty-sqlite":
            conn.execute("CREATE TABLE notes (body TEXT)")
        conn.execute("PRAGMA user_version = 7")
        conn.commit()
        conn.close()
    before = _files(tmp_path)
    code, _, err = cli("runs", "list", "--store", str(path))
    one_line_error(code, err, "'--store'", "foreign.db")
    assert _files(tmp_path) == before


def test_store_locked_by_another_process(cli: Any, cli_json: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    doc = _stored_run(cli_json)
    monkeypatch.setattr(store_module, "BUSY_TIMEOUT", 0.2)
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sqlite3, sys\n"
         "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
         "c.execute('BEGIN EXCLUSIVE')\n"
         "print('locked', flush=True)\n"
         "sys.stdin.readline()\n",
         str(tmp_path / "s.db")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        for argv in (("runs", "list"), ("runs", "show", doc["run_id"]), ("run", "d2l-linear", *FAST)):
            code, _, err = cli(*argv, "--store", "s.db")
            one_line_error(code, err, "'s.db'", "Another process kept it locked for longer than 0.2 s")
    finally:
        holder.communicate("\n", timeout=30)
    assert [r["run_id"] for r in cli_json("runs", "list", "--store", "s.db")] == [doc["run_id"]]


def test_full_disk_during_a_run(cli: Any, cli_json: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLite says 'database or disk is full' (SQLITE_FULL) when a write needs a page it cannot have;
    ``max_page_count`` makes that happen exactly as a full disk does, after the run is recorded."""
    doc = _stored_run(cli_json)
    original = Store.create_run

    def then_the_disk_fills(self: Store, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        pages = self._conn.execute("PRAGMA page_count").fetchone()[0]
        self._conn.execute(f"PRAGMA max_page_count = {pages}")

    with monkeypatch.context() as patch:
        patch.setattr(Store, "create_run", then_the_disk_fills)
        # 64 configurations in one chunk (not the planner's choice, which measures throughput and so depends on
        # the machine's load): their packed curves (~100 KB) cannot fit in the free space of the pages there are
        code, out, err = cli("run", "d2l-linear", "--no-figures", "--lambd", "0:3:64", "--epochs", "100", "--chunk", "64", "--quiet",
                             "--store", "s.db")
    one_line_error(code, err, "'s.db'", "The disk is full", "database or disk is full", "everything stored before is intact")
    runs = {r["run_id"]: r for r in cli_json("runs", "list", "--store", "s.db")}
    assert runs[doc["run_id"]]["status"] == "finished"
    (cut,) = [r for r in runs.values() if r["run_id"] != doc["run_id"]]
    assert f"run {cut['run_id']}: " in err and f"decaylab resume {cut['run_id']}" in err  # which run, and how to go on
    assert cut["status"] == "failed" and cut["counts"] == {"pending": 64}  # no half-written chunk
    assert cli_json("runs", "show", doc["run_id"], "--store", "s.db")["configs"] == doc["configs"]


def test_read_only_store_file_is_read_but_not_written(cli_json: Any, tmp_path: Path) -> None:
    doc = _stored_run(cli_json)
    (tmp_path / "s.db").chmod(0o444)
    prefix = unprivileged()
    before = _files(tmp_path)
    listed = decaylab("runs", "list", "--store", "s.db", "--json", prefix=prefix)
    assert listed.returncode == 0, listed.stderr
    assert [r["run_id"] for r in json.loads(listed.stdout)] == [doc["run_id"]]
    shown = decaylab("runs", "show", doc["run_id"], "--store", "s.db", "--json", prefix=prefix)
    assert shown.returncode == 0 and json.loads(shown.stdout)["configs"] == doc["configs"]
    written = decaylab("run", "d2l-linear", "--no-figures", *FAST, "--store", "s.db", prefix=prefix)
    one_line_error(written.returncode, written.stderr, "'s.db'", "Its file is read-only")
    assert _files(tmp_path) == before


def test_store_in_a_read_only_directory(cli_json: Any, tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    doc = _stored_run(cli_json, str(folder / "s.db"))
    folder.chmod(0o555)
    prefix = unprivileged()
    try:
        listed = decaylab("runs", "list", "--store", "ro/s.db", "--json", prefix=prefix)
        assert listed.returncode == 0, listed.stderr
        assert [r["run_id"] for r in json.loads(listed.stdout)] == [doc["run_id"]]
        written = decaylab("run", "d2l-linear", "--no-figures", *FAST, "--store", "ro/s.db", prefix=prefix)
        one_line_error(written.returncode, written.stderr, "'ro/s.db'", "Its directory is read-only")
        created = decaylab("run", "d2l-linear", "--no-figures", *FAST, "--store", "ro/new.db", prefix=prefix)
        one_line_error(created.returncode, created.stderr, "'ro/new.db'", "Its directory 'ro' is read-only")
        assert sorted(p.name for p in folder.iterdir()) == ["s.db"]
    finally:
        folder.chmod(0o755)


# -- what a run records: its environment; runs show from the store alone ----------------------
def test_environment_in_the_store_runs_show_and_results_json(cli: Any, cli_json: Any, tmp_path: Path) -> None:
    import numpy
    import torch

    from decaylab import __version__

    doc = cli_json("run", "d2l-linear", "--no-figures", *FAST, "--out", "out")
    env = doc["environment"]
    assert env["decaylab"] == __version__ and env["torch"] == torch.__version__ and env["numpy"] == numpy.__version__
    assert env["python"] == ".".join(map(str, sys.version_info[:3]))
    assert env["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert env["torch_threads"] >= 1 and env["cpu"] and env["os"] and env["torch_blas"] and env["numpy_blas"]
    assert json.loads((tmp_path / "out" / "results.json").read_text())["environment"] == env
    assert Store("decaylab.db").get_run(doc["run_id"]).environment == env
    assert cli_json("runs", "show", doc["run_id"])["environment"] == env
    code, out, _ = cli("runs", "show", doc["run_id"])
    assert code == 0 and f"torch {torch.__version__}" in out and f"kernels {env['cpu_capability']}" in out
    assert env["cpu"] in out


def test_environment_records_a_forced_cpu_capability(tmp_path: Path) -> None:
    """``ATEN_CPU_CAPABILITY=default`` makes torch use its portable kernels; the run says so."""
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "default"}
    done = decaylab("run", "d2l-linear", "--no-figures", "--epochs", "2", "--json", "--store", "s.db", env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    recorded = json.loads(done.stdout)["environment"]
    assert recorded["aten_cpu_capability"] == "default" and recorded["cpu_capability"] == "DEFAULT"
    shown = decaylab("runs", "show", json.loads(done.stdout)["run_id"], "--store", "s.db", cwd=tmp_path)
    assert "kernels DEFAULT, ATEN_CPU_CAPABILITY=default" in shown.stdout


def test_runs_list_and_show_do_not_import_torch(cli_json: Any, tmp_path: Path) -> None:
    doc = _stored_run(cli_json)
    code = (
        "import sys\n"
        "from decaylab.lab.cli import main\n"
        f"assert main(['runs', 'list', '--store', 's.db']) == 0\n"
        f"assert main(['runs', 'show', {doc['run_id']!r}, '--store', 's.db']) == 0\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]


def test_runs_show_needs_no_input_file(cli: Any, cli_json: Any, tmp_path: Path) -> None:
    """``ridge-path --data FILE.csv``: once the CSV has moved, the run is still shown from the store."""
    from sklearn.datasets import load_diabetes

    X, y = load_diabetes(return_X_y=True)
    rows = [",".join(f"{v:.10g}" for v in [*x, t]) for x, t in zip(X[:60], y[:60], strict=True)]
    (tmp_path / "data.csv").write_text("\n".join(rows) + "\n")
    doc = cli_json("run", "ridge-path", "--no-figures", "--data", "data.csv", "--lambd", "log:1e-3:10:20", "--quiet")
    (tmp_path / "data.csv").rename(tmp_path / "moved.csv")
    shown = cli_json("runs", "show", doc["run_id"])
    assert shown["configs"] == doc["configs"] and shown["summary"] == doc["summary"]
    code, out, err = cli("runs", "show", doc["run_id"])
    assert code == 0 and "ridge-path" in out, err
