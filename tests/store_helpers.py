"""Helpers of the store tests (not a test module): the version-1 schema, subprocesses, a lower privilege."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

# The schema of decaylab's first store, exactly as that version wrote it (positional columns and all).
V1_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE runs (
    run_id TEXT PRIMARY KEY,
    experiment TEXT NOT NULL,
    command TEXT NOT NULL,
    options TEXT NOT NULL,
    raw_options TEXT NOT NULL,
    version TEXT NOT NULL,
    seed TEXT NOT NULL,
    status TEXT NOT NULL,
    created REAL NOT NULL,
    finished REAL
);
CREATE TABLE configs (
    run_id TEXT NOT NULL REFERENCES runs(run_id),
    idx INTEGER NOT NULL,
    params TEXT NOT NULL,
    status TEXT NOT NULL,
    metrics TEXT,
    curves TEXT,
    diverged_epoch INTEGER,
    error TEXT,
    PRIMARY KEY (run_id, idx)
);
"""

V1_RUN_COLUMNS = "run_id, experiment, command, options, raw_options, version, seed, status, created, finished"
CONFIG_COLUMNS = "run_id, idx, params, status, metrics, curves, diverged_epoch, error"


def write_v1_store(path: Path, source: Path | None = None) -> None:
    """A version-1 store at ``path``, holding the runs of ``source`` (a current store) if given."""
    conn = sqlite3.connect(path)
    conn.executescript(V1_SCHEMA)
    conn.execute("INSERT INTO meta VALUES ('application', 'decaylab')")
    conn.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    if source is not None:
        conn.execute("ATTACH DATABASE ? AS src", (str(source),))
        conn.execute(f"INSERT INTO runs ({V1_RUN_COLUMNS}) SELECT {V1_RUN_COLUMNS} FROM src.runs")
        conn.execute(f"INSERT INTO configs ({CONFIG_COLUMNS}) SELECT {CONFIG_COLUMNS} FROM src.configs")
    conn.commit()
    conn.close()


def sql(path: Path, statement: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run one statement on the store file with plain sqlite3 (as a user or another program would)."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        return conn.execute(statement, args).fetchall()
    finally:
        conn.close()


def unprivileged() -> list[str]:
    """A command prefix under which file permissions hold: root ignores them unless it drops
    CAP_DAC_OVERRIDE (``setpriv`` from util-linux); an ordinary user needs nothing."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        import pytest

        pytest.skip("running as root without setpriv: read-only files cannot be made read-only")
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-dac_override,-dac_read_search"]


def decaylab(*args: str, prefix: list[str] | None = None, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """``decaylab ARGS`` in a subprocess (the environment, PYTHONPATH included, is inherited)."""
    return subprocess.run(
        [*(prefix or []), sys.executable, "-m", "decaylab.lab.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        **kwargs,
    )


def one_line_error(code: int, err: str, *fragments: str) -> None:
    """Exit code 2, one line on stderr, no traceback, every fragment in it."""
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("decaylab: error: "), err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
