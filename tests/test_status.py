"""Every way out of a stored run leaves it in a final status, named in one line: failed (exit 1),
interrupted (130), and resuming a finished run trains nothing and changes nothing (exit 0)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import decaylab.lab.backends
import decaylab.lab.runner
from decaylab.lab.experiments import get_experiment
from decaylab.lab.runner import RunFailed, RunInterrupted, RunRequest, execute
from decaylab.lab.store import Store
from experiment_helpers import options

# a tiny setting of every experiment (seconds each, closed form or a few epochs)
TINY = {
    "d2l-linear": {"lambd": "0,1", "epochs": "2"},
    "constraint": {"lambd": "0.1,1", "epochs": "5", "dim": "3", "n_train": "10"},
    "dropout-mlp": {"hidden": "8,8", "epochs": "2", "n_train": "20", "n_test": "20", "batch_size": "10", "seed": "0"},
    "l2-vs-decay": {"hidden": "8,8", "epochs": "2", "n_train": "20", "n_test": "20", "batch_size": "10", "seed": "0"},
    "noise-tikhonov": {"sigma": "0,1", "epochs": "2", "n_train": "20", "n_test": "10", "seed": "0"},
    "ridge-path": {"lambd": "log:0.01:1:5"},
    "scaling": {"m": "16,32", "seed": "0", "epochs": "5", "lambd_half": "0.01,0.1", "lambd_mean": "0.1,1"},
    "equilibrium": {"optimizers": "adamw", "lr_adamw": "0.002", "wd_adamw": "0.1", "hidden": "8,8", "epochs": "2",
                    "n_train": "64", "n_test": "32", "batch_size": "32", "seed": "0"},
    "sparsity": {"lambd": "0.1,1", "epochs": "5", "n_train": "20", "n_test": "20", "dim": "10", "n_nonzero": "3", "seed": "0"},
}


def _request(name: str) -> RunRequest:
    exp = get_experiment(name)
    raw = {o.name: o.default for o in exp.options} | TINY[name]
    return RunRequest(exp, options(exp, **TINY[name]), raw, command=f"decaylab run {name}")


def _nothing_trains(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("a finished run was trained again")


@pytest.mark.parametrize("name", sorted(TINY))
def test_resuming_a_finished_run_trains_nothing_and_changes_nothing(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli: Any
) -> None:
    store = Store(tmp_path / "s.db")
    record = execute(store, _request(name))
    assert record.status == "finished", [c.error for c in record.configs]

    monkeypatch.setattr(decaylab.lab.runner, "run_local", _nothing_trains)
    again = execute(store, _request(name), resume=record.run_id)  # the library: the stored run as it is
    assert (again.status, again.finished) == ("finished", record.finished)
    assert [c.curves for c in again.configs] == [c.curves for c in record.configs]

    code, out, err = cli("resume", record.run_id, "--no-figures", "--store", str(store.path))  # the command
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        f"run {record.run_id} is already finished; nothing to train (decaylab runs show {record.run_id})"
    ]
    code, out, err = cli("resume", record.run_id, "--no-figures", "--store", str(store.path), "--json")
    assert code == 0 and json.loads(out)["status"] == "finished"
    after = Store(store.path).get_run(record.run_id)
    assert after is not None and (after.status, after.finished) == ("finished", record.finished)


def test_resuming_a_run_cut_off_after_its_last_chunk_finishes_it(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    record = execute(store, _request("d2l-linear"))
    store.set_status(record.run_id, "running")  # killed between the last chunk and the final status
    assert execute(store, _request("d2l-linear"), resume=record.run_id).status == "finished"


def _planner_fails(self: Any, opts: Any, n: int, engine: str) -> int:
    raise RuntimeError(
        "[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory\nframe #0: c10::alloc"
    )


def test_an_error_while_planning_fails_the_run_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli: Any
) -> None:
    """As ``decaylab run d2l-linear --dim 100000000`` does: the chunk-size probe runs out of memory."""
    exp = get_experiment("d2l-linear")
    monkeypatch.setattr(type(exp), "chunk_size", _planner_fails)
    store = tmp_path / "s.db"
    code, out, err = cli("run", "d2l-linear", "--no-figures", "--epochs", "2", "--store", str(store), "--quiet")
    (run,) = Store(store).list_runs()
    assert code == 1 and run.status == "failed" and out == ""
    assert err.splitlines() == [
        f"decaylab: error: run {run.run_id} failed: RuntimeError: [enforce fail at alloc_cpu.cpp:127]"
        " DefaultCPUAllocator: can't allocate memory"
    ]


def test_the_runner_names_the_run_it_ends(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    exp = get_experiment("d2l-linear")
    store = Store(tmp_path / "s.db")
    monkeypatch.setattr(type(exp), "chunk_size", _planner_fails)
    with pytest.raises(RunFailed) as failed:
        execute(store, _request("d2l-linear"), run_id="run-a")
    assert failed.value.run_id == "run-a" and failed.value.reason.startswith("RuntimeError: [enforce fail")

    def interrupted(*args: Any) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(type(exp), "chunk_size", interrupted)
    with pytest.raises(RunInterrupted) as stopped:
        execute(store, _request("d2l-linear"), run_id="run-b")
    assert stopped.value.run_id == "run-b"
    assert {r.run_id: r.status for r in store.list_runs()} == {"run-a": "failed", "run-b": "interrupted"}


def test_a_chunk_that_fails_is_recorded_and_the_run_goes_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli: Any) -> None:
    """A chunk's own error is the chunk's failure (exit 1, the table), not the run's."""
    original = decaylab.lab.backends.run_chunk

    def second_fails(experiment: str, opts: Any, configs: Any, engine: str, progress: Any = None) -> Any:
        if configs[0]["lambd"] == 1.0:
            raise ValueError("this chunk only")
        return original(experiment, opts, configs, engine, progress)

    monkeypatch.setattr(decaylab.lab.backends, "run_chunk", second_fails)
    store = tmp_path / "s.db"
    code, out, err = cli("run", "d2l-linear", "--no-figures", "--lambd", "0,1,2", "--epochs", "2", "--chunk", "1",
                         "--store", str(store), "--json")
    doc = json.loads(out)
    assert code == 1 and doc["status"] == "failed"
    assert err == f"decaylab: error: run {doc['run_id']}: 1 of 3 configurations failed: ValueError: this chunk only\n"
    assert [c["status"] for c in doc["configs"]] == ["done", "failed", "done"]
    assert doc["configs"][1]["error"] == "ValueError: this chunk only"
