"""The Ray backend: same numbers as the local one; failing tasks are retried, then recorded as failed."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("ray")

from decaylab.lab.backends import run_on_ray  # noqa: E402
from decaylab.results import Outcome  # noqa: E402

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def ray_instance(ray_local: Any) -> Any:
    """The worker's shared local Ray (tests/conftest.py), with this module's functions sent by value."""
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests/
    return ray_local


def test_ray_backend_gives_the_local_results(ray_instance: Any, cli_json: Any) -> None:
    args = ("run", "d2l-linear", "--lambd", "0,0.5,1,3", "--seed", "0,1", "--epochs", "20", "--quiet")
    local = cli_json(*args)
    remote = cli_json(*args, "--backend", "ray")
    assert [c["params"] for c in remote["configs"]] == [c["params"] for c in local["configs"]]
    for a, b in zip(local["configs"], remote["configs"], strict=True):
        assert b["status"] == "done"
        for key, values in a["curves"].items():
            assert b["curves"][key] == pytest.approx(values, rel=1e-5, abs=1e-9)


def _flaky(marker_dir: str, configs: list[dict[str, Any]]) -> list[Outcome]:
    """Fails on the first attempt of every chunk, always for the chunk holding config 'bad'."""
    if any(c.get("bad") for c in configs):
        raise ValueError("this chunk always fails")
    marker = Path(marker_dir) / f"seen-{configs[0]['i']}"
    if not marker.exists():
        marker.write_text("")
        raise RuntimeError("first attempt fails")
    return [Outcome(metrics={"i": float(c["i"])}) for c in configs]


def test_failed_tasks_are_retried_then_reported(ray_instance: Any, tmp_path: Path) -> None:
    configs = [{"i": i, "bad": i == 2} for i in range(5)]
    chunks = [[0, 1], [2], [3, 4]]

    def chunk_fn(experiment: str, opts: Any, chunk_configs: Any, engine: str) -> list[Outcome]:
        return _flaky(str(tmp_path), chunk_configs)

    finished = dict(
        (tuple(chunk), result)
        for chunk, result in run_on_ray("none", {}, configs, chunks, "sequential", chunk_fn=chunk_fn, max_retries=2)
    )
    assert set(finished) == {(0, 1), (2,), (3, 4)}
    assert [o.metrics["i"] for o in finished[(0, 1)]] == [0.0, 1.0]  # succeeded on the retry
    assert [o.metrics["i"] for o in finished[(3, 4)]] == [3.0, 4.0]
    assert isinstance(finished[(2,)], BaseException) and "always fails" in str(finished[(2,)])


def _threads_seen(experiment: str, opts: Any, chunk_configs: Any, engine: str) -> list[Outcome]:
    import torch

    return [Outcome(metrics={"threads": float(torch.get_num_threads())}) for _ in chunk_configs]


def test_a_task_is_pinned_to_one_thread_whatever_its_environment() -> None:
    import torch

    from decaylab.lab.backends import _pinned

    before = torch.get_num_threads()
    torch.set_num_threads(2)  # as a worker whose OMP_NUM_THREADS says 2
    try:
        assert [o.metrics["threads"] for o in _pinned(_threads_seen, 1, "none", {}, [{}], "batched")] == [1.0]
        assert torch.get_num_threads() == 2  # restored for the worker's next task
    finally:
        torch.set_num_threads(before)


def test_each_ray_task_runs_with_one_thread(ray_instance: Any) -> None:
    finished = list(run_on_ray("none", {}, [{}, {}, {}], [[0, 1], [2]], "batched", chunk_fn=_threads_seen))
    assert sorted(o.metrics["threads"] for _, outcomes in finished for o in outcomes) == [1.0, 1.0, 1.0]


def test_an_address_without_a_cluster_is_one_line_and_stores_nothing(tmp_path: Path, cli: Any) -> None:
    """In a fresh process (this module's own Ray session would be used otherwise)."""
    import subprocess

    from decaylab.lab.store import Store

    store = tmp_path / "s.db"
    assert cli("run", "d2l-linear", "--no-figures", "--epochs", "2", "--quiet", "--store", str(store))[0] == 0
    argv = ["run", "d2l-linear", "--epochs", "2", "--backend", "ray", "--address", "not-an-address"]
    argv += ["--store", str(store)]
    done = subprocess.run([sys.executable, "-m", "decaylab.lab.cli", *argv], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        "decaylab: error: The '--address' parameter of decaylab run must be the address of a running Ray cluster,"
        " or left out to start a local Ray. Got 'not-an-address'."
    ]
    assert [r.status for r in Store(store).list_runs()] == ["finished"]  # the earlier run, untouched; no new one


@pytest.mark.parametrize("address", ["127.0.0.1:1", "ray://127.0.0.1:1"])
def test_an_address_nobody_answers_fails_fast_in_one_line(tmp_path: Path, address: str) -> None:
    """A port with no Ray behind it: refused before ray.init (which would retry it for minutes)."""
    import subprocess
    import time

    from decaylab.lab.store import Store

    store = tmp_path / "s.db"
    argv = ["run", "d2l-linear", "--epochs", "2", "--backend", "ray", "--address", address, "--store", str(store)]
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "decaylab.lab.cli", *argv], capture_output=True, text=True, timeout=120)
    assert time.monotonic() - start < 30, "an address nobody answers must fail within 30 s"
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines() == [
        "decaylab: error: The '--address' parameter of decaylab run must be the address of a running Ray cluster,"
        f" or left out to start a local Ray. Got '{address}'."
    ]
    assert Store(store).list_runs() == []
