"""Ctrl-C and SIGTERM at every phase of ``decaylab run``: the run ends ``interrupted`` (or is never
stored, at start-up), exit code 130, one line on stderr naming the run, no traceback, no process left.

Each child runs ``tests/slow_phase.py``, which holds the command in one phase and prints a marker, so the
signal is sent in that phase for sure. Ctrl-C is sent to the child's whole process group, as a terminal
does (the figure worker and its helper get it too); SIGTERM to the command's process only, as ``kill`` does.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from decaylab.lab.store import Store

HERE = Path(__file__).parent
TINY = ["run", "d2l-linear", "--lambd", "0,1,2", "--epochs", "2", "--quiet"]
TIMEOUT_S = 240  # a loaded 2-core machine can take long to import torch; never reached when things work


def _as_in_a_terminal() -> None:
    """Default Ctrl-C handling in the child (see tests/test_resume.py for why)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def processes_with(token: str) -> list[str]:
    """Every process whose environment holds ``DECAYLAB_TEST_TOKEN=token``: the child and all it started
    (Ray's gcs_server, raylet and workers too, whatever parent they were re-attached to)."""
    needle = f"DECAYLAB_TEST_TOKEN={token}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                found.append(f"{entry.name} {cmdline[:120]}")
        except OSError:  # ended meanwhile, or not ours to read
            continue
    return found


def interrupt_in(phase: str, sig: int, argv: list[str], store: Path, token: str) -> tuple[int, str]:
    """Start ``decaylab argv`` held in ``phase``, send ``sig`` when it gets there; return (exit code, stderr)."""
    env = dict(os.environ, DECAYLAB_TEST_TOKEN=token)
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "slow_phase.py"), phase, *argv, "--store", str(store)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,  # its own process group: a Ctrl-C reaches it and its children only
        preexec_fn=_as_in_a_terminal,
    )
    watchdog = threading.Timer(TIMEOUT_S, lambda: os.killpg(proc.pid, signal.SIGKILL))
    watchdog.start()
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if f"PHASE {phase}" in line:
                break
        else:
            pytest.fail(f"the command ended before the {phase} phase: {proc.communicate()[1][-2000:]}")
        if sig == signal.SIGINT:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
        _, err = proc.communicate(timeout=TIMEOUT_S)
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return proc.returncode, err


def assert_no_process_left(token: str) -> None:
    deadline = time.monotonic() + 20  # orphans that were told to stop may take a moment to go
    while (left := processes_with(token)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert left == [], "processes outlived the command"


SIGNALS = [pytest.param(signal.SIGINT, id="ctrl-c"), pytest.param(signal.SIGTERM, id="sigterm")]


@pytest.mark.parametrize("sig", SIGNALS)
@pytest.mark.parametrize("phase", ["planning", "training", "figures"])
def test_a_signal_ends_the_run_interrupted(tmp_path: Path, phase: str, sig: int) -> None:
    store, token = tmp_path / "s.db", uuid.uuid4().hex
    out = tmp_path / "out"
    code, err = interrupt_in(phase, sig, [*TINY, "--out", str(out)], store, token)
    (run,) = Store(store).list_runs()
    assert err.splitlines() == [
        f"decaylab: interrupted; finished configurations are stored (decaylab resume {run.run_id})"
    ]
    assert code == 130 and run.status == "interrupted"
    assert_no_process_left(token)
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")] if out.exists() else True, sorted(p.name for p in out.rglob("*"))


@pytest.mark.parametrize("sig", SIGNALS)
def test_a_signal_at_start_up_stores_no_run(tmp_path: Path, sig: int) -> None:
    store, token = tmp_path / "s.db", uuid.uuid4().hex
    code, err = interrupt_in("startup", sig, TINY, store, token)
    assert code == 130
    assert err.splitlines() == ["decaylab: interrupted before the run was stored; nothing to resume"]
    assert Store(store).list_runs() == []
    assert_no_process_left(token)


def test_an_interrupted_run_resumes_to_finished(tmp_path: Path, cli_json: object) -> None:
    """Interrupted while its figures were drawn (all trained): resume trains nothing and writes the outputs."""
    store, token = tmp_path / "s.db", uuid.uuid4().hex
    code, _ = interrupt_in("figures", signal.SIGTERM, TINY, store, token)
    (run,) = Store(store).list_runs()
    assert code == 130 and run.status == "interrupted" and run.counts() == {"done": 3}
    doc = cli_json("resume", run.run_id, "--store", str(store), "--out", str(tmp_path / "again"))  # type: ignore[operator]
    assert doc["status"] == "finished" and Store(store).get_run(run.run_id).status == "finished"
    assert sorted(p.name for p in (tmp_path / "again").iterdir()) == ["curves.png", "norms.png", "results.json"]


RAY_NOTICE = re.compile(
    r"Token authentication is enabled"  # where ~/.ray/auth_token exists
    # Ray's C++ core logging in its own format, e.g. a Ctrl-C that reached Ray's workers races the shutdown:
    # "[2026-12-01 06:30:05,092 E 14132 14408] task_manager.cc:1545: Failed to push error to driver for task ..."
    r"|\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [DIWEF] \d+ \d+\] \w+\.cc:\d+: "
)


@pytest.mark.ray
@pytest.mark.parametrize("sig", SIGNALS)
def test_a_signal_with_ray_running_ends_interrupted_and_stops_ray(tmp_path: Path, sig: int) -> None:
    pytest.importorskip("ray")
    store, token = tmp_path / "s.db", uuid.uuid4().hex
    argv = [*TINY, "--backend", "ray", "--chunk", "1"]
    code, err = interrupt_in("ray", sig, argv, store, token)
    (run,) = Store(store).list_runs()
    # Ray's own notices and log lines are Ray's; decaylab says one line and no traceback
    assert [line for line in err.splitlines() if not RAY_NOTICE.match(line)] == [
        f"decaylab: interrupted; finished configurations are stored (decaylab resume {run.run_id})"
    ]
    assert code == 130 and run.status == "interrupted"
    assert_no_process_left(token)  # gcs_server, raylet, ray:: workers included


def test_an_error_after_a_swallowed_interrupt_is_no_failed_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    """An import that Ctrl-C cut off fails again on every later import ("cannot load module more than
    once per process"): after a signal, such an error ends the run as interrupted, not as failed chunks."""
    import decaylab.lab.backends
    from decaylab.lab.interrupts import signals_as_interrupt

    def interrupted_import(*args: object, **kwargs: object) -> None:
        try:
            signal.raise_signal(signal.SIGINT)
        except KeyboardInterrupt:  # swallowed on its way up, as a C extension's import can
            pass
        raise ImportError("cannot load module more than once per process")

    def broken_import(*args: object, **kwargs: object) -> None:
        raise ImportError("cannot load module more than once per process")

    monkeypatch.setattr(decaylab.lab.backends, "run_chunk", broken_import)
    with signals_as_interrupt():  # without a signal, the error is the chunk's failure
        ((chunk, outcome),) = decaylab.lab.backends.run_local("d2l-linear", {}, [{}], [[0]], "batched")
    assert chunk == [0] and isinstance(outcome, ImportError)

    monkeypatch.setattr(decaylab.lab.backends, "run_chunk", interrupted_import)
    with signals_as_interrupt(), pytest.raises(KeyboardInterrupt):
        list(decaylab.lab.backends.run_local("d2l-linear", {}, [{}, {}], [[0], [1]], "batched"))
