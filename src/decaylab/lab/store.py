"""The run store: an embedded SQLite database of runs, their configurations, curves and metrics.

Schema (version 3)::

    meta(key PRIMARY KEY, value)               -- application = 'decaylab', schema_version
    runs(run_id PRIMARY KEY, experiment, command, options, raw_options, version, seed,
         status, created, finished,            -- status: running | interrupted | finished | failed
         owner_pid, owner_host, owner_token,   -- the process training the run (its lease)
         heartbeat,                            -- when that process last said it is alive (Unix time)
         environment)                          -- versions, CPU, BLAS, threads (decaylab.lab.environment)
    configs(run_id, idx, params, status, metrics, curves, diverged_epoch, error,
            PRIMARY KEY (run_id, idx))         -- status: pending | done | diverged | failed

``metrics`` and ``curves`` hold numbers as numbers: one packed little-endian record per configuration
(:mod:`decaylab.codec`: float32 where that is exact, else float64; NaN kept as NaN), ~1.3 KB for 100
epochs of three curves where JSON text took ~8 KB, and decoded by numpy rather than a JSON parser. A
value with no binary form (a string, a boolean) keeps the row's column as JSON text, which is also
what stores before version 3 hold: a reader takes either, by the SQLite type of the value (BLOB or
TEXT), so old rows are read as they are and never rewritten.

Version 1 lacked the owner, heartbeat and environment columns; version 2 wrote metrics and curves as
JSON text only. A writable older store is migrated on open (``ALTER TABLE ... ADD COLUMN`` for version
1; for both, ``schema_version`` set to 3, after which packed records may appear), a read-only one is
read as it is. Every statement names its columns, so a store with columns added by a later schema
still reads and writes.

Safety, after SQLite's own rules ("How To Corrupt An SQLite Database File", "Atomic Commit"):

* Every write is one transaction, so a run cut off at any point (even by SIGKILL in the middle of a
  commit) leaves the earlier runs intact, its finished configurations stored, and itself unfinished.
* A kill during a commit leaves a *hot journal* (``PATH-journal``) that the next **read-write** open
  rolls back. A file is therefore never judged through a read-only open while a journal may exist:
  a file that is not SQLite is refused from its 16-byte header without being opened; otherwise the
  store is opened read-write and its ``meta`` table is checked inside ``BEGIN IMMEDIATE``, which is
  also what makes concurrent first opens safe (``CREATE TABLE IF NOT EXISTS``, ``INSERT OR IGNORE``).
  Only a store that cannot be written (read-only file or directory) is opened with ``mode=ro``, and
  only when it has no hot journal.
* The store keeps SQLite's default rollback journal rather than WAL: a store stays one file (plus a
  journal only during a write), and readers of a read-only store or directory need no ``-shm`` file.
* A file that is not a decaylab database is refused and never written to; every SQLite failure
  (locked longer than the busy timeout, disk full, read-only, damaged) is a :class:`StoreError` naming
  the file and what is wrong, and the failed transaction leaves nothing half-written.

Ownership (after Optuna's heartbeat for RDB trials): a run records the pid and host of the process
training it, a random lease token, and a heartbeat refreshed with every stored chunk and by a
background thread every :data:`HEARTBEAT_EVERY` seconds. A ``running`` run whose owner is dead (its pid
is gone on this host, or its heartbeat is older than :data:`STALE_AFTER` seconds) is shown as
``interrupted`` and can be resumed; :meth:`Store.claim` takes the lease in one ``BEGIN IMMEDIATE``
transaction (compare-and-set of the owner), so of two resumes at once exactly one proceeds. The lease is
the process's (one token per process, whichever :class:`Store` object it opens), and every write of a
run's results or status checks it: a process whose run was taken over — stopped for longer than
:data:`STALE_AFTER`, then resumed elsewhere — stores nothing more of it (:class:`LeaseLostError`).
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import sqlite3
import stat
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import wraps
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from decaylab import codec
from decaylab.results import ConfigResult, json_safe
from decaylab.validation import InvalidParameterError, parameter_error

__all__ = [
    "DEFAULT_STORE",
    "HEARTBEAT_EVERY",
    "STALE_AFTER",
    "LeaseLostError",
    "RunBusyError",
    "RunRecord",
    "Store",
    "StoreError",
    "default_store_path",
    "owner_alive",
]

DEFAULT_STORE = "decaylab.db"
APPLICATION = "decaylab"
SCHEMA_VERSION = 3
SQLITE_HEADER = b"SQLite format 3\x00"  # the first 16 bytes of every SQLite 3 database file
BUSY_TIMEOUT = 30.0  # seconds a statement waits for another process's lock before the store gives up
HEARTBEAT_EVERY = 5.0  # seconds between heartbeats of a run's owner
STALE_AFTER = 60.0  # a heartbeat older than this means the owner is gone (whatever its pid)
# SQLite page of a new store: a configuration's row (~1.45 KB for 100 epochs of 3 curves) fills 4 KB
# pages two to a page (2.1 KB a configuration); 16 KB pages hold eleven (measured: 1.6 KB a configuration)
PAGE_SIZE = 16384

_RUN_COLUMNS = (
    "run_id", "experiment", "command", "options", "raw_options", "version", "seed", "status", "created",
    "finished", "owner_pid", "owner_host", "owner_token", "heartbeat", "environment",
)  # fmt: skip
_V1_RUN_COLUMNS = _RUN_COLUMNS[:10]
_ADDED_IN_V2 = {
    "owner_pid": "INTEGER",
    "owner_host": "TEXT",
    "owner_token": "TEXT",
    "heartbeat": "REAL",
    "environment": "TEXT",
}
_CONFIG_COLUMNS = ("run_id", "idx", "params", "status", "metrics", "curves", "diverged_epoch", "error")

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS runs (
        run_id TEXT PRIMARY KEY,
        experiment TEXT NOT NULL,
        command TEXT NOT NULL,
        options TEXT NOT NULL,
        raw_options TEXT NOT NULL,
        version TEXT NOT NULL,
        seed TEXT NOT NULL,
        status TEXT NOT NULL,
        created REAL NOT NULL,
        finished REAL,
        owner_pid INTEGER,
        owner_host TEXT,
        owner_token TEXT,
        heartbeat REAL,
        environment TEXT
    )""",
    """CREATE TABLE IF NOT EXISTS configs (
        run_id TEXT NOT NULL REFERENCES runs(run_id),
        idx INTEGER NOT NULL,
        params TEXT NOT NULL,
        status TEXT NOT NULL,
        metrics BLOB,
        curves BLOB,
        diverged_epoch INTEGER,
        error TEXT,
        PRIMARY KEY (run_id, idx)
    )""",
)


class StoreError(InvalidParameterError):
    """The store file cannot be used; the message names the file and says what is wrong.

    A subclass of :class:`~decaylab.validation.InvalidParameterError` (the ``--store`` option has a value
    that cannot be used), so the CLI prints it as one line with exit code 2.
    """


class RunBusyError(InvalidParameterError):
    """The run is being trained by a live process; it cannot be resumed now."""


class LeaseLostError(StoreError):
    """Another process has taken the run over (it resumed the run while this one's heartbeat was stale)."""


_TOKEN: tuple[int, str] | None = None  # (pid, token): a forked child gets its own


def process_token() -> str:
    """This process's lease token on the runs it trains (random, one per process)."""
    global _TOKEN
    if _TOKEN is None or _TOKEN[0] != os.getpid():
        _TOKEN = (os.getpid(), secrets.token_hex(8))
    return _TOKEN[1]


def default_store_path() -> Path:
    """``$DECAYLAB_STORE`` if set, else ``decaylab.db`` in the working directory."""
    return Path(os.environ.get("DECAYLAB_STORE") or DEFAULT_STORE)


def owner_alive(pid: int | None, host: str | None, heartbeat: float | None, now: float | None = None) -> bool:
    """Whether the process that owns a ``running`` run is still alive.

    Dead when there is no heartbeat (a run written before owners were recorded), when the heartbeat is
    older than :data:`STALE_AFTER`, or when ``host`` is this machine and no process ``pid`` exists.
    A fresh heartbeat from another host counts as alive (its pid cannot be checked from here).
    """
    now = time.time() if now is None else now
    if heartbeat is None or now - heartbeat > STALE_AFTER:
        return False
    if host == socket.gethostname() and pid is not None and os.name == "posix":  # Windows' os.kill would kill
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # exists, owned by another user
            return True
    return True


@dataclass
class RunRecord:
    """A run as stored, with its configurations in order.

    ``status`` is what the run *is*: a run stored as ``running`` whose owner is dead is ``interrupted``
    (see :func:`owner_alive`); ``stored_status`` is the column as written.
    """

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
    stored_status: str = ""
    owner_pid: int | None = None
    owner_host: str | None = None
    heartbeat: float | None = None
    environment: dict[str, Any] | None = None
    status_counts: dict[str, int] | None = None  # set by Store.list_runs, which loads no configuration

    def counts(self) -> dict[str, int]:
        """How many configurations have each status."""
        if self.status_counts is not None:
            return dict(self.status_counts)
        out: dict[str, int] = {}
        for c in self.configs:
            out[c.status] = out.get(c.status, 0) + 1
        return out

    @property
    def n_configs(self) -> int:
        """How many configurations the run has (loaded or only counted)."""
        return sum(self.status_counts.values()) if self.status_counts is not None else len(self.configs)


def _dumps(value: Any) -> str:
    return json.dumps(json_safe(value), separators=(",", ":"), allow_nan=False)


P = ParamSpec("P")
R = TypeVar("R")


def _guarded(method: Callable[Concatenate[Store, P], R]) -> Callable[Concatenate[Store, P], R]:
    """Turn any SQLite failure inside ``method`` into a :class:`StoreError` naming the file."""

    @wraps(method)
    def wrapper(self: Store, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as exc:
            raise self._failure(exc) from None

    return wrapper


class Store:
    """A decaylab run store at ``path``.

    ``create=False`` refuses a path where no file exists (reading commands and ``resume`` never create
    a store); ``readonly=True`` never writes (except that SQLite rolls back a hot journal left by a
    killed process, which needs a read-write open) and reads a read-only file or directory too.
    ``owner`` names the command in error messages.

    Raises :class:`StoreError` if the file cannot be used as a store: not a decaylab database (left
    untouched), missing, not a regular file, read-only when a write is needed, damaged (a table missing),
    locked by another process for longer than :data:`BUSY_TIMEOUT`, or when SQLite reports a full disk.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        create: bool = True,
        readonly: bool = False,
        owner: str = "decaylab",
    ) -> None:
        self.path = Path(path)
        self.owner = owner
        self.readonly = readonly
        create = create and not readonly
        self.token = process_token()  # this process's lease on the runs it trains
        self.heartbeat_every = HEARTBEAT_EVERY
        self._beats: dict[str, tuple[threading.Event, threading.Thread]] = {}
        self._run_columns: tuple[str, ...] = _RUN_COLUMNS
        self._check_file(create)
        self._conn = self._connect()
        try:
            self._setup()
        except BaseException:
            self._conn.close()
            raise

    # -- errors ----------------------------------------------------------------------------
    def _error(self, allowed: str, why: str, untouched: bool = False) -> StoreError:
        err = parameter_error("--store", self.owner, allowed, str(self.path))
        tail = "; it was left untouched." if untouched else "."
        return StoreError(f"{err} {why}{tail}")

    def _not_a_store(self, why: str) -> StoreError:
        return self._error("a decaylab database", why, untouched=True)

    def _failure(self, exc: sqlite3.Error) -> StoreError:
        """What an SQLite error means for the user, in one sentence."""
        text = str(exc)
        low = text.lower()
        if "full" in low:
            return self._error(
                "a writable decaylab database",
                f"The disk is full ({text}); this write was rolled back and everything stored before is intact",
            )
        if "locked" in low or "busy" in low:
            return self._error(
                "a decaylab database no other process holds locked",
                f"Another process kept it locked for longer than {BUSY_TIMEOUT:g} s ({text}); try again when it is done",
            )
        if "readonly" in low or "read-only" in low:
            return self._error(
                "a writable decaylab database",
                f"It cannot be written: the file or its directory is read-only ({text})",
            )
        if "no such table" in low or "no such column" in low or "malformed" in low or "corrupt" in low:
            return self._error("an intact decaylab database", f"It is damaged ({text})")
        if "not a database" in low or "encrypted" in low:
            return self._not_a_store(f"It is not a decaylab database ({text})")
        if "unable to open" in low:
            return self._error(
                "a decaylab database path in a writable directory", f"SQLite cannot open it there ({text})"
            )
        return self._error("a usable decaylab database", f"SQLite failed: {text}")

    # -- opening ---------------------------------------------------------------------------
    @property
    def journal(self) -> Path:
        """SQLite's rollback journal of this store; present and non-empty = a write did not finish."""
        return self.path.with_name(self.path.name + "-journal")

    def _hot_journal(self) -> bool:
        try:
            return self.journal.stat().st_size > 0
        except OSError:
            return False

    def _writable(self) -> bool:
        """Whether SQLite can write the store: the file (if any) and its directory (for the journal)."""
        directory = self.path.parent if str(self.path.parent) else Path(".")
        if self.path.exists() and not os.access(self.path, os.W_OK):
            return False
        return os.access(directory, os.W_OK | os.X_OK)

    def _check_file(self, create: bool) -> None:
        """Refuse what is not a store without opening it with SQLite (see the module docstring)."""
        try:
            info = self.path.stat()
        except FileNotFoundError:
            if not create:
                raise self._error("an existing decaylab database", "There is no such file") from None
            directory = self.path.parent if str(self.path.parent) else Path(".")
            if not directory.is_dir():
                raise self._error("a path in an existing directory", f"The directory {str(directory)!r} does not exist") from None
            if not os.access(directory, os.W_OK | os.X_OK):
                raise self._error(
                    "a path where a new store can be created", f"Its directory {str(directory)!r} is read-only"
                ) from None
            return
        except OSError as exc:
            raise self._error("a readable file path", f"It cannot be read ({exc.strerror})") from None
        if stat.S_ISDIR(info.st_mode):
            raise self._not_a_store("It is a directory")
        if not stat.S_ISREG(info.st_mode):
            raise self._not_a_store("It is not a regular file")
        if not self.readonly and not self._writable():
            where = "file" if self.path.exists() and not os.access(self.path, os.W_OK) else "directory"
            raise self._error(
                "a writable decaylab database",
                f"Its {where} is read-only (SQLite writes the file and a journal beside it); "
                "reading commands (decaylab runs list/show) can still read it",
            )
        if info.st_size == 0:
            return  # a new store being created by another process, or an empty file: both become a store
        try:
            with open(self.path, "rb") as fh:
                header = fh.read(len(SQLITE_HEADER))
        except OSError as exc:
            raise self._error("a readable file", f"It cannot be read ({exc.strerror})") from None
        if header != SQLITE_HEADER and not self._hot_journal():
            raise self._not_a_store("It is not an SQLite database")

    def _connect(self) -> sqlite3.Connection:
        uri = "file:" + urllib.parse.quote(self.path.resolve().as_posix())  # a '?' or '#' in a name is not a query
        if self.readonly and not self._writable():
            if self._hot_journal():
                raise self._error(
                    "a decaylab database that can be written once",
                    f"A process was killed while writing it, and its journal {str(self.journal)!r} can only be "
                    "rolled back by a read-write open; make the file and its directory writable and run any "
                    "decaylab command once",
                )
            mode = "ro"
        else:
            mode = "rwc" if not self.readonly and not self.path.exists() else "rw"
        try:
            conn = sqlite3.connect(f"{uri}?mode={mode}", uri=True, timeout=BUSY_TIMEOUT, isolation_level=None)
        except sqlite3.Error as exc:
            raise self._failure(exc) from None
        return conn

    @_guarded
    def _setup(self) -> None:
        """Check (and create or migrate, when writing) the schema inside one transaction.

        ``BEGIN IMMEDIATE`` serializes concurrent first opens: the first creates the tables, the others
        find them. On a read-write connection the first statement also rolls back a hot journal.
        """
        conn = self._conn
        conn.execute("PRAGMA foreign_keys = ON")
        if not self.readonly:  # takes effect only in a file with no tables yet: a new store
            conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")
        conn.execute("BEGIN" if self.readonly else "BEGIN IMMEDIATE")
        try:
            self._check_schema(conn)
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _check_schema(self, conn: sqlite3.Connection) -> None:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not tables:
            if self.readonly:
                raise self._error("a decaylab database", "It is an empty SQLite file, not a run store")
            for statement in _SCHEMA:
                conn.execute(statement)
            conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('application', ?)", (APPLICATION,))
            conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            tables = {"meta", "runs", "configs"}
        if "meta" not in tables:
            raise self._not_a_store("It is an SQLite file of another application")
        meta = dict(conn.execute("SELECT key, value FROM meta WHERE key IN ('application', 'schema_version')"))
        if meta.get("application") != APPLICATION:
            raise self._not_a_store("It is an SQLite file of another application")
        try:
            version = int(meta.get("schema_version", ""))
        except ValueError:
            raise self._not_a_store(f"Its schema version is {meta.get('schema_version')!r}") from None
        for table in ("runs", "configs"):
            if table not in tables:
                raise self._error("an intact decaylab database", f"It is damaged: its table {table!r} is missing")
        run_columns = {r[1] for r in conn.execute("PRAGMA table_info(runs)")}
        config_columns = {r[1] for r in conn.execute("PRAGMA table_info(configs)")}
        if version < SCHEMA_VERSION and not self.readonly:
            for name, kind in _ADDED_IN_V2.items():
                if name not in run_columns:
                    conn.execute(f"ALTER TABLE runs ADD COLUMN {name} {kind}")
            conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))
            run_columns |= set(_ADDED_IN_V2)
            version = SCHEMA_VERSION
        needed = _V1_RUN_COLUMNS if version == 1 else _RUN_COLUMNS
        missing = [c for c in needed if c not in run_columns] + [c for c in _CONFIG_COLUMNS if c not in config_columns]
        if missing:
            raise self._error(
                "an intact decaylab database",
                f"It is damaged (schema version {version}): column(s) {', '.join(map(repr, missing))} are missing",
            )
        # a version-1 store opened read-only is read without the columns it lacks
        self._run_columns = tuple(c for c in _RUN_COLUMNS if c in run_columns)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: all of it lands, or none of it (SQLite errors become :class:`StoreError`)."""
        try:
            self._conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise self._failure(exc) from None
        try:
            yield self._conn
        except BaseException as exc:
            if self._conn.in_transaction:  # SQLite may already have rolled back (e.g. a full disk)
                try:
                    self._conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
            if isinstance(exc, sqlite3.Error):
                raise self._failure(exc) from None
            raise
        else:
            try:
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if self._conn.in_transaction:
                    try:
                        self._conn.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass
                raise self._failure(exc) from None

    def close(self) -> None:
        """Stop the heartbeats of the runs this store owns and close the connection."""
        for run_id in list(self._beats):
            self._stop_heartbeat(run_id)
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
        environment: dict[str, Any] | None = None,
    ) -> None:
        """Record a new run, status ``running`` and owned by this process, every configuration ``pending``."""
        now = time.time()
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO runs (run_id, experiment, command, options, raw_options, version, seed, status,"
                " created, finished, owner_pid, owner_host, owner_token, heartbeat, environment)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, 'running', ?, NULL, ?, ?, ?, ?, ?)",
                (
                    run_id, experiment, command, _dumps(options), _dumps(raw_options), version, seed, now,
                    os.getpid(), socket.gethostname(), self.token, now,
                    None if environment is None else _dumps(environment),
                ),
            )  # fmt: skip
            conn.executemany(
                "INSERT INTO configs (run_id, idx, params, status) VALUES (?, ?, ?, 'pending')",
                [(run_id, i, _dumps(p)) for i, p in enumerate(configs)],
            )
        self._start_heartbeat(run_id)

    def claim(self, run_id: str, environment: dict[str, Any] | None = None) -> RunRecord | None:
        """Take over ``run_id`` to train the rest of it; ``None`` if there is no such run.

        Compare-and-set in one ``BEGIN IMMEDIATE`` transaction: if the run is ``running`` and its owner
        is alive (another process, see :func:`owner_alive`), raise :class:`RunBusyError`; otherwise, if
        the run has configurations left to train, make this process its owner (status ``running``, fresh
        heartbeat, kept fresh until :meth:`set_status` ends the run or the store is closed). Of two claims
        at once exactly one succeeds. A run with nothing left to train keeps its status and owner.
        An ``environment`` that differs from the stored one is appended to its ``"resumed_in"``.
        """
        with self.transaction() as conn:
            row = conn.execute(
                "SELECT status, owner_pid, owner_host, owner_token, heartbeat, environment FROM runs WHERE run_id = ?",
                (run_id,),
            ).fetchone()
            if row is None:
                return None
            status, pid, host, token, heartbeat, env_text = row
            if status == "running" and token != self.token and owner_alive(pid, host, heartbeat):
                raise RunBusyError(
                    str(parameter_error("RUN_ID", "decaylab resume", "a run no live process is training", run_id))
                    + f" Process {pid} on {host} is training it (heartbeat {time.time() - heartbeat:.0f} s ago)."
                )
            left = conn.execute(
                "SELECT COUNT(*) FROM configs WHERE run_id = ? AND status IN ('pending', 'failed')", (run_id,)
            ).fetchone()[0]
            if not left:
                return self.get_run(run_id)
            stored_env = self._loads(env_text, run_id, "environment") if env_text else None
            if environment is not None:
                if stored_env is None:
                    stored_env = environment
                elif {k: v for k, v in stored_env.items() if k != "resumed_in"} != environment:
                    stored_env.setdefault("resumed_in", []).append(environment)
            conn.execute(
                "UPDATE runs SET status = 'running', finished = NULL, owner_pid = ?, owner_host = ?,"
                " owner_token = ?, heartbeat = ?, environment = ? WHERE run_id = ?",
                (
                    os.getpid(), socket.gethostname(), self.token, time.time(),
                    None if stored_env is None else _dumps(stored_env), run_id,
                ),
            )  # fmt: skip
        self._start_heartbeat(run_id)
        return self.get_run(run_id, curves=False)

    def save_results(self, run_id: str, results: Iterable[tuple[int, ConfigResult]]) -> None:
        """Store the outcome of finished configurations, all in one transaction; refresh the heartbeat.

        Metrics and curves are packed (:func:`decaylab.codec.pack`), or JSON text when they have no
        binary form.
        """
        rows = []
        for idx, r in results:
            metrics = codec.pack(r.metrics)
            curves = codec.pack(r.curves)
            rows.append(
                (
                    r.status,
                    _dumps(r.metrics) if metrics is None else metrics,
                    _dumps(r.curves) if curves is None else curves,
                    r.diverged_epoch, r.error, run_id, idx,
                )
            )  # fmt: skip
        with self.transaction() as conn:
            self._check_lease(conn, run_id)
            conn.executemany(
                "UPDATE configs SET status = ?, metrics = ?, curves = ?, diverged_epoch = ?, error = ?"
                " WHERE run_id = ? AND idx = ?",
                rows,
            )
            if "heartbeat" in self._run_columns:
                conn.execute(
                    "UPDATE runs SET heartbeat = ? WHERE run_id = ? AND owner_token = ?",
                    (time.time(), run_id, self.token),
                )

    def delete_runs(self, run_ids: Sequence[str], owner: str = "decaylab runs delete") -> dict[str, int]:
        """Delete the runs ``run_ids`` with their configurations (metrics and curves live in those rows),
        all in one ``BEGIN IMMEDIATE`` transaction: every run goes, or none does.

        Return how many configurations each deleted run had. The file keeps its size (SQLite reuses the
        freed pages for later runs; ``VACUUM`` would shrink it). Nothing outside the store is touched (a
        run's output directory stays).

        Raises:
            InvalidParameterError: an id that is not in the store (``owner`` names the command).
            RunBusyError: a run that a live process is training (see :func:`owner_alive`); checked inside
                the transaction, so a process cannot claim the run between the check and the delete.
        """
        counts: dict[str, int] = {}
        with self.transaction() as conn:
            for run_id in dict.fromkeys(run_ids):
                row = conn.execute(
                    "SELECT status, owner_pid, owner_host, heartbeat FROM runs WHERE run_id = ?", (run_id,)
                ).fetchone()
                if row is None:
                    raise parameter_error("RUN_ID", owner, "the id of a run in the store", run_id)
                status, pid, host, heartbeat = row
                if status == "running" and owner_alive(pid, host, heartbeat):
                    raise RunBusyError(
                        str(parameter_error("RUN_ID", owner, "a run no live process is training", run_id))
                        + f" Process {pid} on {host} is training it; nothing was deleted."
                    )
                counts[run_id] = conn.execute("SELECT COUNT(*) FROM configs WHERE run_id = ?", (run_id,)).fetchone()[0]
            for run_id in counts:
                conn.execute("DELETE FROM configs WHERE run_id = ?", (run_id,))
                conn.execute("DELETE FROM runs WHERE run_id = ?", (run_id,))
        return counts

    def set_status(self, run_id: str, status: str) -> None:
        """Set the run's status; any status but ``running`` ends this process's heartbeat for it."""
        if status != "running":
            self._stop_heartbeat(run_id)
        finished = time.time() if status in ("finished", "failed") else None
        with self.transaction() as conn:
            self._check_lease(conn, run_id)
            conn.execute("UPDATE runs SET status = ?, finished = ? WHERE run_id = ?", (status, finished, run_id))

    def _check_lease(self, conn: sqlite3.Connection, run_id: str) -> None:
        """Raise :class:`LeaseLostError` if another live process holds ``run_id``'s lease (see :func:`owner_alive`;
        a dead owner's lease is void, as for :meth:`claim`), inside the writing transaction: no other process can
        take it between the check and the write."""
        if "owner_token" not in self._run_columns or "heartbeat" not in self._run_columns:  # before leases
            return
        row = conn.execute(
            "SELECT owner_token, owner_pid, owner_host, heartbeat FROM runs WHERE run_id = ?", (run_id,)
        ).fetchone()
        if row is not None and row[0] is not None and row[0] != self.token and owner_alive(row[1], row[2], row[3]):
            raise LeaseLostError(
                f"run {run_id} in {self.path} was taken over by process {row[1]} on {row[2]} (resumed while this"
                " process's heartbeat was stale); this process stores nothing more of it"
            )

    def _start_heartbeat(self, run_id: str) -> None:
        """Refresh ``run_id``'s heartbeat every :attr:`heartbeat_every` seconds from a daemon thread.

        The thread has its own connection and a short busy timeout; a beat that cannot be written (the
        store busy or full) is skipped, never raised: the heartbeat must not stop or slow the training
        (a beat is one small UPDATE, ~10 ms of mostly fsync, every 5 s).
        """
        if run_id in self._beats:
            return
        stop = threading.Event()
        every, path, token = self.heartbeat_every, self.path, self.token

        def beat() -> None:
            try:
                conn = sqlite3.connect(path, timeout=1.0, isolation_level=None, check_same_thread=False)
            except sqlite3.Error:
                return
            try:
                while not stop.wait(every):
                    try:
                        conn.execute(
                            "UPDATE runs SET heartbeat = ? WHERE run_id = ? AND owner_token = ?",
                            (time.time(), run_id, token),
                        )
                    except sqlite3.Error:
                        pass
            finally:
                conn.close()

        thread = threading.Thread(target=beat, name=f"decaylab-heartbeat-{run_id}", daemon=True)
        thread.start()
        self._beats[run_id] = (stop, thread)

    def _stop_heartbeat(self, run_id: str) -> None:
        stop, thread = self._beats.pop(run_id, (None, None))
        if stop is not None and thread is not None:
            stop.set()
            thread.join(timeout=5.0)

    # -- reading ---------------------------------------------------------------------------
    def _loads(self, text: str, run_id: str, column: str) -> Any:
        try:
            return json.loads(text)
        except (json.JSONDecodeError, TypeError) as exc:
            raise self._error(
                "an intact decaylab database", f"It is damaged: column {column!r} of run {run_id!r} is not JSON ({exc})"
            ) from None

    def _select_runs(self, where: str = "", args: tuple[Any, ...] = ()) -> list[RunRecord]:
        columns = ", ".join(c if c in self._run_columns else f"NULL AS {c}" for c in _RUN_COLUMNS)
        rows = self._conn.execute(f"SELECT {columns} FROM runs {where}", args).fetchall()
        return [self._record(row) for row in rows]

    def _numbers(self, value: Any, run_id: str, column: str, names: set[str] | None = None) -> dict[str, Any]:
        """A ``metrics`` or ``curves`` cell: a packed record (schema 3), JSON text (older rows, or values
        with no binary form; ``null`` read back as NaN), or NULL (a pending configuration)."""
        if value is None:
            return {}
        if isinstance(value, bytes):
            try:
                return codec.unpack(value, names)
            except ValueError as exc:
                raise self._error(
                    "an intact decaylab database", f"It is damaged: column {column!r} of run {run_id!r}: {exc}"
                ) from None
        doc = self._loads(value, run_id, column) if value else {}
        nan = float("nan")
        if column == "metrics":
            return {k: nan if v is None else v for k, v in doc.items() if names is None or k in names}
        return {k: [nan if v is None else v for v in vs] for k, vs in doc.items() if names is None or k in names}

    @_guarded
    def list_runs(self) -> list[RunRecord]:
        """Every run, newest first, with per-status counts of its configurations (one ``GROUP BY``;
        no configuration is loaded: ``record.configs`` is empty, ``record.counts()`` is filled)."""
        out = self._select_runs("ORDER BY created DESC, run_id DESC")
        counts: dict[str, dict[str, int]] = {}
        for run_id, status, n in self._conn.execute(
            "SELECT run_id, status, COUNT(*) FROM configs GROUP BY run_id, status"
        ):
            counts.setdefault(run_id, {})[status] = n
        for record in out:
            record.status_counts = counts.get(record.run_id, {})
        return out

    @_guarded
    def get_run(self, run_id: str, curves: bool = True) -> RunRecord | None:
        """The run with its configurations and metrics, and their curves unless ``curves=False``
        (then every ``curves`` is ``{}``: what ``runs show``, resume and a table need, read without
        the bulk of the store); ``None`` if there is no such run."""
        found = self._select_runs("WHERE run_id = ?", (run_id,))
        if not found:
            return None
        record = found[0]
        curves_column = "curves" if curves else "NULL"
        rows = self._conn.execute(
            f"SELECT params, status, metrics, {curves_column}, diverged_epoch, error FROM configs"
            " WHERE run_id = ? ORDER BY idx",
            (run_id,),
        ).fetchall()
        for params, (_, status, metrics, curve_cell, diverged, error) in zip(
            self._params(rows, run_id), rows, strict=True
        ):
            record.configs.append(
                ConfigResult(
                    params=params,
                    status=status,
                    metrics=self._numbers(metrics, run_id, "metrics"),
                    curves=self._numbers(curve_cell, run_id, "curves"),
                    diverged_epoch=diverged,
                    error=error,
                )
            )
        return record

    def _params(self, rows: Sequence[tuple[Any, ...]], run_id: str) -> list[Any]:
        """The ``params`` cells (first column of ``rows``), decoded: all in one ``json.loads`` of the
        cells joined as a JSON array (a run of 10⁵ configurations pays the parser's call once, not per
        row), taken when it gives one object per cell; otherwise (a damaged cell) row by row, which
        names the cell that is not JSON."""
        cells = [row[0] for row in rows]
        if all(type(c) is str for c in cells):
            try:
                decoded = json.loads("[" + ",".join(cells) + "]")
            except json.JSONDecodeError:
                decoded = None
            if decoded is not None and len(decoded) == len(cells) and all(type(d) is dict for d in decoded):
                return decoded
        return [self._loads(c, run_id, "params") for c in cells]

    @_guarded
    def get_curves(self, run_id: str, idx: int, names: Sequence[str] | None = None) -> dict[str, list[Any]] | None:
        """The curves of configuration ``idx`` of ``run_id`` (only ``names`` if given), read on their
        own; ``None`` if there is no such configuration."""
        row = self._conn.execute(
            "SELECT curves FROM configs WHERE run_id = ? AND idx = ?", (run_id, idx)
        ).fetchone()
        if row is None:
            return None
        return self._numbers(row[0], run_id, "curves", None if names is None else set(names))

    @_guarded
    def pending(self, run_id: str) -> list[int]:
        """Indices of the configurations of ``run_id`` that have not finished (pending or failed)."""
        rows = self._conn.execute(
            "SELECT idx FROM configs WHERE run_id = ? AND status IN ('pending', 'failed') ORDER BY idx",
            (run_id,),
        ).fetchall()
        return [r[0] for r in rows]

    def _record(self, row: tuple[Any, ...]) -> RunRecord:
        (run_id, experiment, command, options, raw, version, seed, status, created, finished,
         pid, host, _token, heartbeat, environment) = row  # fmt: skip
        shown = "interrupted" if status == "running" and not owner_alive(pid, host, heartbeat) else status
        return RunRecord(
            run_id, experiment, command, self._loads(options, run_id, "options"),
            self._loads(raw, run_id, "raw_options"), version, seed, shown, created, finished,
            stored_status=status, owner_pid=pid, owner_host=host, heartbeat=heartbeat,
            environment=self._loads(environment, run_id, "environment") if environment else None,
        )  # fmt: skip
