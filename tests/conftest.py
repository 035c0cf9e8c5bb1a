"""Shared fixtures: every test runs in its own directory with its own store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from decaylab.lab.cli import main
from decaylab.threads import limited_threads


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DECAYLAB_STORE", raising=False)


@pytest.fixture(scope="module")
def one_thread() -> Any:
    """One torch/BLAS thread for a module of small-matrix tests, as the experiments themselves use."""
    with limited_threads(1):
        yield


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Any:
    """Run the CLI in-process: ``code, out, err = cli("run", "d2l-linear", ...)``."""

    def run(*argv: str) -> tuple[int, str, str]:
        code = main(list(argv))
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


@pytest.fixture
def cli_json(cli: Any) -> Any:
    """Run the CLI with ``--json`` and return the parsed document (asserting exit code 0)."""

    def run(*argv: str) -> Any:
        code, out, err = cli(*argv, "--json")
        assert code == 0, err
        return json.loads(out)

    return run


@pytest.fixture(scope="session")
def ray_local() -> Any:
    """One local Ray instance (2 CPUs) for the whole session of this pytest worker, shared by every test
    that uses Ray in-process: starting one costs ~10 s, and its worker processes stay warm (torch
    imported) from one test to the next. ``decaylab``'s Ray backend runs inside a session that is already
    up (:func:`decaylab.lab.backends.ray_session`); starting and stopping its own Ray is tested in a
    separate process (tests/test_signals.py)."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's own hook
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests that start a local Ray (marker ``ray``) run one after another on one pytest-xdist worker
    (``--dist loadgroup`` in pyproject.toml): two local Rays at once on a 2-core machine compete for its
    CPUs, and one's start-up messages land in the other's stderr; and there, they share one Ray
    (:func:`ray_local`). Then every ``xdist_group`` is written into the node ids (:func:`_join_xdist_groups`)."""
    for item in items:
        if item.get_closest_marker("ray"):
            item.add_marker(pytest.mark.xdist_group("ray"))
    if getattr(config.option, "loadgroup", False):  # a pytest-xdist worker under --dist loadgroup
        _join_xdist_groups(items)


def _join_xdist_groups(items: list[pytest.Item]) -> None:
    """Append ``@GROUP`` to the node id of each test marked ``xdist_group(GROUP)``, as pytest-xdist does.

    pytest-xdist 3.8 (the newest) writes the suffix into ``item._nodeid``, which pytest 9.2 no longer
    reads (a node's id is ``item._id``, a ``NodeId``): the suffix never reaches the scheduler, and every
    group of the suite was silently ignored (its tests spread over both workers, module fixtures built
    twice, two Rays at once). ``NodeId.parse`` keeps the text as given, so the scheduler sees
    ``...::test@GROUP`` and keeps the group on one worker. Should pytest-xdist write the suffix again
    itself, the id ends in ``@GROUP@GROUP``, which the scheduler (it splits at the last ``@``) reads the same.
    """
    if not hasattr(items[0] if items else None, "_id"):
        return  # an older pytest: pytest-xdist's own hook works
    from _pytest.nodeid import NodeId

    for item in items:
        names = {str(m.args[0] if m.args else m.kwargs.get("name", "default")) for m in item.iter_markers("xdist_group")}
        if names:
            item._id = NodeId.parse(f"{item.nodeid}@{'_'.join(sorted(names))}")
