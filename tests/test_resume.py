"""A sweep cut off mid-way keeps every finished configuration, and resuming it gives the full result."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from decaylab.lab.store import Store

SWEEP = ["run", "d2l-linear", "--lambd", "0:4:24", "--epochs", "40", "--engine", "sequential", "--chunk", "1", "--no-figures"]


def _as_in_a_terminal() -> None:
    """Default Ctrl-C handling in the child, as in a terminal's foreground job.

    A shell that runs the test suite in the background makes SIGINT ignored, children inherit that,
    and Python then installs no KeyboardInterrupt handler: the "Ctrl-C" would do nothing.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _decaylab(*args: str, **kwargs: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "decaylab.lab.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_as_in_a_terminal,
        **kwargs,
    )


def _cut_off(store: Path, sig: int, at_least: int) -> tuple[str, int]:
    """Start the sweep, wait until ``at_least`` configurations are stored, send ``sig``."""
    proc = _decaylab(*SWEEP, "--store", str(store), "--quiet")
    deadline = time.monotonic() + 180  # generous: a loaded 2-core machine can take long to import torch
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"the sweep ended (exit code {proc.returncode}) before it was cut off: {proc.stderr.read()[-500:]}")
            if store.exists():
                try:
                    runs = Store(store).list_runs()
                except Exception:
                    runs = []
                if runs and runs[0].counts().get("done", 0) >= at_least:
                    proc.send_signal(sig)
                    break
            time.sleep(0.02)
        else:
            pytest.fail("the sweep never stored a configuration")
        proc.communicate(timeout=30)
    finally:
        proc.kill()
    (run,) = Store(store).list_runs()
    return run.run_id, proc.returncode


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["kill", "ctrl-c"])
def test_cut_off_sweep_resumes_to_the_uninterrupted_result(tmp_path: Path, sig: int, cli_json: Any) -> None:
    store = tmp_path / "cut.db"
    run_id, code = _cut_off(store, sig, at_least=3)
    record = Store(store).get_run(run_id)
    assert record is not None
    done_before = {i: c for i, c in enumerate(record.configs) if c.status == "done"}
    assert 3 <= len(done_before) < 24, "the sweep must be cut off mid-way"
    if sig == signal.SIGINT:
        assert code == 130 and record.status == "interrupted"
    else:
        # stored as running, shown as interrupted: its owner's pid is gone
        assert code == -signal.SIGKILL and record.stored_status == "running" and record.status == "interrupted"

    resumed = cli_json("resume", run_id, "--no-figures", "--store", str(store), "--quiet")
    full = cli_json(*SWEEP, "--store", str(tmp_path / "full.db"), "--quiet")
    assert resumed["run_id"] == run_id and resumed["status"] == "finished"
    # equal up to float32 rounding: thread counts may differ between this process and the killed one
    assert [c["params"] for c in resumed["configs"]] == [c["params"] for c in full["configs"]]
    for a, b in zip(resumed["configs"], full["configs"], strict=True):
        assert a["status"] == b["status"] == "done"
        for key, values in b["curves"].items():
            floor = 1e-8 * max(abs(v) for v in values)  # the engine's tolerance: 1e-5 of 1e-3 of the curve's max
            assert a["curves"][key] == pytest.approx(values, rel=1e-5, abs=floor)
    after = Store(store).get_run(run_id)
    for i, config in done_before.items():  # nothing finished before the cut was retrained or lost
        assert after.configs[i].curves == config.curves


def test_resume_through_run_checks_the_options(tmp_path: Path, cli: Any) -> None:
    store = tmp_path / "s.db"
    code, out, err = cli(*SWEEP[:6], "--epochs", "2", "--store", str(store), "--json")
    run_id = json.loads(out)["run_id"]
    code, out, err = cli("run", "d2l-linear", "--no-figures", "--resume", run_id, "--lambd", "1", "--store", str(store))
    assert code == 2 and "'--lambd'" in err and err.count("\n") == 1
    code, out, err = cli("run", "d2l-linear", "--no-figures", "--resume", run_id, "--store", str(store), "--json")
    assert code == 0 and json.loads(out)["run_id"] == run_id  # nothing left to train: the stored result
    code, out, err = cli("resume", "no-such-run", "--no-figures", "--store", str(store))
    assert code == 2 and "'no-such-run'" in err
