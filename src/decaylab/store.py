"""The run store: an embedded SQLite database of runs, their configurations, curves and metrics.

Schema (version 1)::

    meta(key PRIMARY KEY, value)               -- application = 'decaylab', schema_version
    runs(run_id PRIMARY KEY, experiment, command, options, raw_options, version, seed,
         status, created, finished)            -- status: running | interrupted | finished | failed
    configs(run_id, idx, params, status, metrics, curves, diverged_epoch, error,
            PRIMARY KEY (run_id, idx))         -- status: pending | done | diverged | failed

JSON columns hold dicts. Every write is one transaction, so a run cut off at any point leaves the
earlier runs intact, its finished configurations stored, and itself marked unfinished. A file that
is not a decaylab database is refused and never written to.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from decaylab.results import ConfigResult, json_safe
from decaylab.validation import parameter_error

__all__ = ["DEFAULT_STORE", "RunRecord", "Store", "StoreError", "default_store_path"]

DEFAULT_STORE = "decaylab.db"
APPLICATION = "decaylab"
SCHEMA_VERSION = "1"

_SCHEMA = """
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


class StoreError(ValueError):
    """The store file cannot be used; the message says which file and why."""


def default_store_path() -> Path:
    """``$DECAYLAB_STORE`` if set, else ``decaylab.db`` in the working directory."""
    return Path(os.environ.get("DECAYLAB_STORE") or DEFAULT_STORE)


@dataclass
class RunRecord:
    """A run as stored, with its configurations in order."""

    run_id: str
    experiment: str
    command: str
    options: dict[str, Any]
    raw_options: dict[str, str]
    version: str
    seed: str
    status: str
    created: float
    finished: float | None
    configs: list[ConfigResult] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for c in self.configs:
            out[c.status] = out.get(c.status, 0) + 1
        return out


def _dumps(value: Any) -> str:
    return json.dumps(json_safe(value), separators=(",", ":"), allow_nan=False)


class Store:
    """A decaylab run store at ``path`` (created on first use).

    Raises :class:`StoreError` if ``path`` exists and is not a decaylab database; such a file is only
    read, never written.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if self.path.exists() and self.path.stat().st_size > 0:
            self._check_foreign()
            self._conn = self._connect()
        else:
            self._conn = self._connect()
            self._create()

    # -- opening ---------------------------------------------------------------------------
    def _not_a_store(self, why: str) -> StoreError:
        err = parameter_error("--store", "decaylab", "a decaylab database", str(self.path))
        return StoreError(f"{err} {why}; it was left untouched.")

    def _check_foreign(self) -> None:
        if self.path.is_dir():
            raise self._not_a_store("It is a directory")
        uri = f"file:{self.path.resolve().as_posix()}?mode=ro"
        try:
            probe = sqlite3.connect(uri, uri=True)
            try:
                row = probe.execute("SELECT value FROM meta WHERE key = 'application'").fetchone()
                version = probe.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            finally:
                probe.close()
        except sqlite3.DatabaseError as exc:
            raise self._not_a_store(f"It is not a decaylab database ({exc})") from None
        if row is None or row[0] != APPLICATION:
            raise self._not_a_store("It is an SQLite file of another application")
        if version is None or version[0] != SCHEMA_VERSION:
            got = None if version is None else version[0]
            raise self._not_a_store(f"Its schema version is {got}, this decaylab reads {SCHEMA_VERSION}")

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        conn.execute("PRAGMA foreign_keys = ON")
        return conn

    def _create(self) -> None:
        with self.transaction() as conn:
            for statement in filter(str.strip, _SCHEMA.split(";")):
                conn.execute(statement)
            conn.execute("INSERT INTO meta VALUES ('application', ?)", (APPLICATION,))
            conn.execute("INSERT INTO meta VALUES ('schema_version', ?)", (SCHEMA_VERSION,))

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: all of it lands, or none of it."""
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        else:
            self._conn.execute("COMMIT")

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing ---------------------------------------------------------------------------
    def create_run(
        self,
        run_id: str,
        experiment: str,
        command: str,
        options: dict[str, Any],
        raw_options: dict[str, str],
        version: str,
        seed: str,
        configs: Sequence[dict[str, Any]],
    ) -> None:
        """Record a new run, status ``running``, with every configuration ``pending``."""
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, 'running', ?, NULL)",
                (run_id, experiment, command, _dumps(options), _dumps(raw_options), version, seed, time.time()),
            )
            conn.executemany(
                "INSERT INTO configs (run_id, idx, params, status) VALUES (?, ?, ?, 'pending')",
                [(run_id, i, _dumps(p)) for i, p in enumerate(configs)],
            )

    def save_results(self, run_id: str, results: Iterable[tuple[int, ConfigResult]]) -> None:
        """Store the outcome of finished configurations, all in one transaction."""
        rows = []
        for idx, r in results:
            doc = r.to_json()
            rows.append(
                (r.status, _dumps(doc["metrics"]), _dumps(doc["curves"]), r.diverged_epoch, r.error, run_id, idx)
            )
        with self.transaction() as conn:
            conn.executemany(
                "UPDATE configs SET status = ?, metrics = ?, curves = ?, diverged_epoch = ?, error = ?"
                " WHERE run_id = ? AND idx = ?",
                rows,
            )

    def set_status(self, run_id: str, status: str) -> None:
        finished = time.time() if status in ("finished", "failed") else None
        with self.transaction() as conn:
            conn.execute("UPDATE runs SET status = ?, finished = ? WHERE run_id = ?", (status, finished, run_id))

    # -- reading ---------------------------------------------------------------------------
    def list_runs(self) -> list[RunRecord]:
        """Every run, newest first, with per-status counts of its configurations (curves not loaded)."""
        runs = self._conn.execute("SELECT * FROM runs ORDER BY created DESC, run_id DESC").fetchall()
        out = []
        for row in runs:
            record = self._record(row)
            statuses = self._conn.execute(
                "SELECT idx, params, status FROM configs WHERE run_id = ? ORDER BY idx", (record.run_id,)
            ).fetchall()
            record.configs = [ConfigResult(params=json.loads(p), status=s) for _, p, s in statuses]
            out.append(record)
        return out

    def get_run(self, run_id: str) -> RunRecord | None:
        """The run with its configurations, curves and metrics, or ``None`` if there is no such run."""
        row = self._conn.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        if row is None:
            return None
        record = self._record(row)
        for idx, params, status, metrics, curves, diverged, error in self._conn.execute(
            "SELECT idx, params, status, metrics, curves, diverged_epoch, error FROM configs"
            " WHERE run_id = ? ORDER BY idx",
            (run_id,),
        ):
            record.configs.append(
                ConfigResult.from_json(
                    {
                        "params": json.loads(params),
                        "status": status,
                        "metrics": json.loads(metrics) if metrics else {},
                        "curves": json.loads(curves) if curves else {},
                        "diverged_epoch": diverged,
                        "error": error,
                    }
                )
            )
        return record

    def pending(self, run_id: str) -> list[int]:
        """Indices of the configurations of ``run_id`` that have not finished (pending or failed)."""
        rows = self._conn.execute(
            "SELECT idx FROM configs WHERE run_id = ? AND status IN ('pending', 'failed') ORDER BY idx",
            (run_id,),
        ).fetchall()
        return [r[0] for r in rows]

    @staticmethod
    def _record(row: tuple[Any, ...]) -> RunRecord:
        run_id, experiment, command, options, raw, version, seed, status, created, finished = row
        return RunRecord(
            run_id, experiment, command, json.loads(options), json.loads(raw), version, seed, status, created, finished
        )
