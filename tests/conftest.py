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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests that start a local Ray (marker ``ray``) run one after another on one pytest-xdist worker
    (``--dist loadgroup`` in pyproject.toml): two local Rays at once on a 2-core machine compete for its
    CPUs, and one's start-up messages land in the other's stderr."""
    for item in items:
        if item.get_closest_marker("ray"):
            item.add_marker(pytest.mark.xdist_group("ray"))
