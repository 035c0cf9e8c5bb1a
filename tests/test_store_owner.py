"""A run's owner: a kill in the middle of a commit, dead and live owners, two resumes at once, the heartbeat."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from decaylab.lab import store as store_module
from decaylab.lab.store import RunBusyError, Store, owner_alive
from store_helpers import one_line_error, sql

SWEEP = ("run", "d2l-linear", "--lambd", "0:3:6", "--epochs", "20", "--engine", "sequential", "--chunk", "1", "--quiet",
         "--no-figures")
RESUME = ("--engine", "sequential", "--chunk", "1", "--quiet", "--no-figures")  # as the sweep trained: the same numbers


@pytest.fixture(scope="module")
def _swept(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """``decaylab SWEEP --json`` trained once for the module: its store file and its document."""
    import contextlib
    import io

    from decaylab.lab.cli import main

    base = tmp_path_factory.mktemp("swept")
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        code = main([*SWEEP, "--store", str(base / "s.db"), "--out", str(base / "out"), "--json"])
    assert code == 0
    return base / "s.db", json.loads(text.getvalue())


@pytest.fixture
def stored(_swept: tuple[Path, dict[str, Any]]) -> Any:
    """``stored("s.db")``: a copy of the module's trained SWEEP at ``./s.db`` and its document, as
    ``cli_json(*SWEEP, "--store", "s.db")`` would give (the same run, trained once, not once per test)."""
    import copy
    import shutil

    source, doc = _swept

    def copy_to(name: str) -> dict[str, Any]:
        shutil.copyfile(source, Path.cwd() / name)
        return copy.deepcopy(doc)

    return copy_to


def _dead_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _cut(path: Path, keep_done: set[int]) -> None:
    """Make the stored run look killed: ``running``, its owner's pid gone, every configuration not in
    ``keep_done`` pending again."""
    sql(path, "UPDATE runs SET status = 'running', finished = NULL")
    _own(path, _dead_pid(), socket.gethostname(), time.time())
    for idx in set(range(6)) - keep_done:
        sql(path, "UPDATE configs SET status = 'pending', metrics = NULL, curves = NULL WHERE idx = ?", (idx,))


def _own(path: Path, pid: int, host: str, heartbeat: float) -> None:
    sql(path, "UPDATE runs SET owner_pid = ?, owner_host = ?, owner_token = 'other', heartbeat = ?", (pid, host, heartbeat))


# -- a kill while a commit is open ------------------------------------------------------------
HOLD_A_COMMIT = """
import sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("PRAGMA cache_size = 1")  # spill changed pages into the database file before COMMIT
c.execute("BEGIN IMMEDIATE")
c.execute("UPDATE configs SET status = 'done', metrics = '{}', curves = '{}'")
c.execute("UPDATE runs SET status = 'finished'")
for i in range(3000):
    c.execute("INSERT INTO configs (run_id, idx, params, status) SELECT run_id, 100 + ?, ?, 'pending' FROM runs", (i, "x" * 400))
print("writing", flush=True)
sys.stdin.readline()  # killed here, before COMMIT
"""


def test_kill_during_a_commit_leaves_a_store_that_lists_and_resumes(cli: Any, cli_json: Any, tmp_path: Path, stored: Any) -> None:
    full = stored("full.db")
    cut = stored("s.db")
    _cut(tmp_path / "s.db", keep_done={0, 1})
    writer = subprocess.Popen(
        [sys.executable, "-c", HOLD_A_COMMIT, str(tmp_path / "s.db")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert writer.stdout.readline().strip() == "writing"
    writer.send_signal(signal.SIGKILL)
    writer.communicate(timeout=30)
    assert writer.returncode == -signal.SIGKILL
    assert (tmp_path / "s.db-journal").stat().st_size > 0  # a hot journal: the kill came mid-commit

    (listed,) = cli_json("runs", "list", "--store", "s.db")  # rolls the journal back
    assert not (tmp_path / "s.db-journal").exists()
    assert listed["run_id"] == cut["run_id"] and listed["status"] == "interrupted"
    assert listed["counts"] == {"done": 2, "pending": 4}  # the killed transaction left nothing
    resumed = cli_json("resume", cut["run_id"], "--store", "s.db", *RESUME)
    assert resumed["status"] == "finished" and resumed["configs"] == full["configs"]


KILL_IN_SAVE = """
import os, signal, sys
from decaylab.lab.store import Store
from decaylab.lab.cli import main
original = Store.save_results
calls = {"n": 0}
def save_then_die(self, run_id, results):
    calls["n"] += 1
    if calls["n"] < 3:
        return original(self, run_id, results)
    self._conn.execute("PRAGMA cache_size = 1")
    self._conn.execute("BEGIN IMMEDIATE")
    self._conn.executemany("UPDATE configs SET status = 'done', curves = ? WHERE run_id = ? AND idx = ?",
                           [("[" + "1.0," * 20000 + "1.0]", run_id, i) for i, _ in results])
    os.kill(os.getpid(), signal.SIGKILL)
Store.save_results = save_then_die
main(sys.argv[1:])
"""


def test_decaylab_run_killed_in_the_middle_of_storing_a_chunk(cli_json: Any, tmp_path: Path, stored: Any) -> None:
    """A real ``decaylab run`` killed inside its third chunk's transaction; ``resume`` completes it."""
    killed = subprocess.run(
        [sys.executable, "-c", KILL_IN_SAVE, *SWEEP, "--store", "s.db"], capture_output=True, text=True, cwd=tmp_path, timeout=300
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert (tmp_path / "s.db-journal").stat().st_size > 0
    (listed,) = cli_json("runs", "list", "--store", "s.db")
    assert listed["status"] == "interrupted" and listed["counts"] == {"done": 2, "pending": 4}
    resumed = cli_json("resume", listed["run_id"], "--store", "s.db", *RESUME)
    full = stored("full.db")
    assert resumed["status"] == "finished" and resumed["configs"] == full["configs"]


# -- dead and live owners ---------------------------------------------------------------------
@pytest.mark.parametrize("owner", ["pid gone", "stale heartbeat elsewhere", "stale heartbeat here"])
def test_dead_owner_is_shown_interrupted_and_resumable(cli: Any, cli_json: Any, tmp_path: Path, owner: str, stored: Any) -> None:
    full = stored("s.db")
    _cut(tmp_path / "s.db", keep_done={0, 2, 4})
    now = time.time()
    if owner == "pid gone":
        _own(tmp_path / "s.db", _dead_pid(), socket.gethostname(), now)
    elif owner == "stale heartbeat elsewhere":
        _own(tmp_path / "s.db", os.getpid(), "another-host", now - store_module.STALE_AFTER - 5)
    else:  # a live pid (this test's), but nobody has beaten for longer than the stale limit
        _own(tmp_path / "s.db", os.getpid(), socket.gethostname(), now - store_module.STALE_AFTER - 5)
    assert cli_json("runs", "list", "--store", "s.db")[0]["status"] == "interrupted"
    assert cli_json("runs", "show", full["run_id"], "--store", "s.db")["status"] == "interrupted"
    code, out, _ = cli("runs", "show", full["run_id"], "--store", "s.db")
    assert code == 0 and "interrupted" in out.splitlines()[0]
    resumed = cli_json("resume", full["run_id"], "--store", "s.db", *RESUME)
    assert resumed["status"] == "finished" and resumed["configs"] == full["configs"]
    pid, host = sql(tmp_path / "s.db", "SELECT owner_pid, owner_host FROM runs")[0]
    assert (pid, host) == (os.getpid(), socket.gethostname())  # the resume took the run over


@pytest.mark.parametrize("owner", ["live pid here", "fresh heartbeat elsewhere"])
def test_live_owner_is_refused(cli: Any, cli_json: Any, tmp_path: Path, owner: str, stored: Any) -> None:
    doc = stored("s.db")
    _cut(tmp_path / "s.db", keep_done={0})
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        if owner == "live pid here":
            _own(tmp_path / "s.db", sleeper.pid, socket.gethostname(), time.time())
        else:
            _own(tmp_path / "s.db", _dead_pid(), "another-host", time.time())  # a pid on another host is not ours to check
        assert cli_json("runs", "list", "--store", "s.db")[0]["status"] == "running"
        before = sql(tmp_path / "s.db", "SELECT idx, status, curves FROM configs ORDER BY idx")
        for argv in (("resume", doc["run_id"]), ("run", "d2l-linear", "--resume", doc["run_id"])):
            code, out, err = cli(*argv, "--store", "s.db")
            one_line_error(code, err, "'RUN_ID'", repr(doc["run_id"]), "no live process is training", "is training it")
        assert sql(tmp_path / "s.db", "SELECT idx, status, curves FROM configs ORDER BY idx") == before
        with pytest.raises(RunBusyError, match="is training it"):  # the store's own check, past the CLI's
            Store(tmp_path / "s.db").claim(doc["run_id"])
    finally:
        sleeper.kill()
        sleeper.wait()
    if owner == "live pid here":  # once the owner is gone, the run can be resumed
        sql(tmp_path / "s.db", "UPDATE runs SET heartbeat = ?", (time.time(),))
        assert cli_json("runs", "list", "--store", "s.db")[0]["status"] == "interrupted"
        assert cli_json("resume", doc["run_id"], "--store", "s.db", *RESUME)["configs"] == doc["configs"]


def test_owner_alive_rules() -> None:
    now = time.time()
    here = socket.gethostname()
    assert owner_alive(os.getpid(), here, now, now)
    assert not owner_alive(_dead_pid(), here, now, now)
    assert not owner_alive(os.getpid(), here, now - store_module.STALE_AFTER - 1, now)
    assert not owner_alive(None, None, None, now)  # a run stored before owners were recorded
    assert owner_alive(1, "another-host", now - 1, now)


# -- two resumes at once ------------------------------------------------------------------------
CLAIM = """
import sys, time
from decaylab.lab.store import RunBusyError, Store
start, path, run_id = float(sys.argv[1]), sys.argv[2], sys.argv[3]
store = Store(path)
while time.time() < start:
    pass
try:
    store.claim(run_id)
except RunBusyError:
    print("refused", flush=True)
else:
    print("claimed", flush=True)
    sys.stdin.readline()  # stay alive (the owner) until the test has seen every answer
"""


def test_simultaneous_claims_exactly_one_wins(cli_json: Any, tmp_path: Path, stored: Any) -> None:
    doc = stored("s.db")
    _cut(tmp_path / "s.db", keep_done=set())
    start = time.time() + 1.5
    claims = [
        subprocess.Popen([sys.executable, "-c", CLAIM, str(start), str(tmp_path / "s.db"), doc["run_id"]],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]  # fmt: skip
    answers = [c.stdout.readline().strip() for c in claims]
    for c in claims:
        c.communicate("\n", timeout=60)
    assert sorted(answers) == ["claimed", "refused", "refused", "refused"], [c.stderr for c in claims]


COUNTING_RESUME = """
import os, sys, time
from decaylab.lab.experiments.d2l_linear import D2LLinear
from decaylab.lab.cli import main
counter, go = sys.argv[1], sys.argv[2]
original = D2LLinear.run_chunk
def counted(self, opts, configs, engine, progress=None):
    deadline = time.monotonic() + 240
    while not os.path.exists(go) and time.monotonic() < deadline:  # hold the lease until the test says go
        time.sleep(0.05)
    with open(counter, "a") as fh:
        fh.write("".join(f"{c['lambd']}\\n" for c in configs))
    return original(self, opts, configs, engine, progress)
D2LLinear.run_chunk = counted
sys.exit(main(sys.argv[3:]))
"""


def test_two_resumes_at_once_one_is_refused_and_nothing_is_trained_twice(cli_json: Any, tmp_path: Path, stored: Any) -> None:
    full = stored("s.db")
    _cut(tmp_path / "s.db", keep_done={1, 3})
    counter, go = tmp_path / "trained.txt", tmp_path / "go"
    args = [sys.executable, "-c", COUNTING_RESUME, str(counter), str(go), "resume", full["run_id"], "--store", "s.db", *RESUME, "--json"]
    resumes = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path) for _ in range(2)]
    try:
        deadline = time.monotonic() + 240
        while all(r.poll() is None for r in resumes) and time.monotonic() < deadline:
            time.sleep(0.05)  # the refused one ends; the other waits in its first chunk, holding the run
        go.touch()
        outputs = [r.communicate(timeout=240) for r in resumes]
    finally:
        for r in resumes:
            r.kill()
    codes = sorted(r.returncode for r in resumes)
    assert codes == [0, 2], outputs
    (refused_err,) = [err for r, (out, err) in zip(resumes, outputs, strict=True) if r.returncode == 2]
    one_line_error(2, refused_err, repr(full["run_id"]), "no live process is training")
    (doc,) = [json.loads(out) for r, (out, err) in zip(resumes, outputs, strict=True) if r.returncode == 0]
    assert doc["status"] == "finished" and doc["configs"] == full["configs"]
    trained = [float(x) for x in counter.read_text().split()]
    lambds = [c["params"]["lambd"] for c in full["configs"]]
    assert sorted(trained) == sorted(lambds[i] for i in (0, 2, 4, 5))  # each missing one once, the done ones never


# -- the heartbeat ---------------------------------------------------------------------------
def _heartbeat(path: Path) -> float:
    return sql(path, "SELECT heartbeat FROM runs")[0][0]


@pytest.mark.parametrize("how", ["create_run", "claim"])
def test_owner_beats_until_the_run_ends(tmp_path: Path, how: str) -> None:
    """The owner's store refreshes the heartbeat from a thread; a final status or closing stops it."""
    import threading

    path = tmp_path / "s.db"
    store = Store(path)
    store.heartbeat_every = 0.05
    if how == "create_run":
        store.create_run("r", "d2l-linear", "cmd", {}, {}, "0", "0", [{"lambd": 0.0}])
    else:
        with Store(path) as creator:  # closing it stops its heartbeat
            creator.create_run("r", "d2l-linear", "cmd", {}, {}, "0", "0", [{"lambd": 0.0}])
        _own(path, _dead_pid(), socket.gethostname(), time.time())
        store.claim("r")
    sql(path, "UPDATE runs SET heartbeat = 0")
    deadline = time.monotonic() + 60
    while _heartbeat(path) == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _heartbeat(path) > time.time() - 60
    store.set_status("r", "interrupted")
    sql(path, "UPDATE runs SET heartbeat = 1")
    time.sleep(0.3)  # six beats' time: a thread that had not stopped would have written one
    assert _heartbeat(path) == 1
    assert not [t for t in threading.enumerate() if t.name.startswith("decaylab-heartbeat")]
    store.close()


def test_a_stored_chunk_beats_too(tmp_path: Path) -> None:
    from decaylab.results import ConfigResult

    store = Store(tmp_path / "s.db")
    store.create_run("r", "d2l-linear", "cmd", {}, {}, "0", "0", [{"lambd": 0.0}])
    sql(tmp_path / "s.db", "UPDATE runs SET heartbeat = 0")
    store.save_results("r", [(0, ConfigResult(params={"lambd": 0.0}))])
    assert sql(tmp_path / "s.db", "SELECT heartbeat FROM runs")[0][0] > time.time() - 60


def test_hot_journal_of_a_read_only_store_is_one_line_until_it_can_be_rolled_back(cli_json: Any, tmp_path: Path, stored: Any) -> None:
    """A read-only open cannot roll a hot journal back: never judge the file through it; say what to do."""
    from store_helpers import decaylab, unprivileged

    cut = stored("s.db")
    _cut(tmp_path / "s.db", keep_done={0, 1})
    writer = subprocess.Popen(
        [sys.executable, "-c", HOLD_A_COMMIT, str(tmp_path / "s.db")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert writer.stdout.readline().strip() == "writing"
    writer.send_signal(signal.SIGKILL)
    writer.communicate(timeout=30)
    (tmp_path / "s.db").chmod(0o444)
    listed = decaylab("runs", "list", "--store", "s.db", prefix=unprivileged(), cwd=tmp_path)
    one_line_error(listed.returncode, listed.stderr, "'s.db'", "killed while writing it", "make the file and its directory writable")
    assert (tmp_path / "s.db-journal").stat().st_size > 0  # left for a writable open
    (tmp_path / "s.db").chmod(0o644)
    (listed,) = cli_json("runs", "list", "--store", "s.db")
    assert listed["run_id"] == cut["run_id"] and listed["counts"] == {"done": 2, "pending": 4}


def test_runs_show_names_the_owner_of_a_running_run(cli: Any, cli_json: Any, tmp_path: Path, stored: Any) -> None:
    doc = stored("s.db")
    sql(tmp_path / "s.db", "UPDATE runs SET status = 'running'")
    _own(tmp_path / "s.db", os.getpid(), socket.gethostname(), time.time() - 3)
    code, out, _ = cli("runs", "show", doc["run_id"], "--store", "s.db")
    assert code == 0 and "running" in out.splitlines()[0]
    assert f"owner: process {os.getpid()} on {socket.gethostname()}, heartbeat" in out


def test_a_process_whose_run_was_taken_over_stores_nothing_more_of_it(tmp_path: Path) -> None:
    """The attacker's case: the owner stopped (Ctrl-Z) past STALE_AFTER, another process resumed the run, and the
    first one, woken, kept storing chunks and marked the live run interrupted, so a third resume trained it again.
    Every write of results or status checks the lease inside its transaction."""
    from decaylab.lab.store import LeaseLostError
    from decaylab.results import ConfigResult

    path = tmp_path / "s.db"
    with Store(path) as store:
        store.create_run("r", "d2l-linear", "cmd", {}, {}, "0", "0", [{"lambd": 0.0}, {"lambd": 1.0}])
        store.save_results("r", [(0, ConfigResult(params={"lambd": 0.0}, status="failed", error="first"))])  # its own
        _own(path, os.getpid(), socket.gethostname(), time.time())  # taken over (another token)
        with pytest.raises(LeaseLostError, match="taken over"):
            store.save_results("r", [(1, ConfigResult(params={"lambd": 1.0}, status="failed", error="late"))])
        with pytest.raises(LeaseLostError):
            store.set_status("r", "interrupted")
        with Store(path) as again:  # the same process through another Store object: the same lease
            with pytest.raises(LeaseLostError):
                again.set_status("r", "failed")
        record = store.get_run("r")
    assert record is not None and record.stored_status == "running"
    assert [c.status for c in record.configs] == ["failed", "pending"]
