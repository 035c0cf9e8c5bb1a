"""Curves and metrics stored as numbers (decaylab.codec, store schema 3): exact round trips, the choice
of float32 only where it is exact, old JSON-text stores read and migrated, reads that skip the curves."""

from __future__ import annotations

import json
import math
import sqlite3
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from decaylab import codec
from decaylab.lab.runner import RunRequest, execute
from decaylab.lab.store import Store
from decaylab.results import ConfigResult, json_safe
from store_helpers import CONFIG_COLUMNS, V1_RUN_COLUMNS, V1_SCHEMA, sql

NAN, INF = float("nan"), float("inf")


def same(a: Any, b: Any) -> bool:
    """Equal, with NaN equal to NaN and the Python type of every number the same (1 is not 1.0)."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return type(a) is type(b) and a == b


def kinds(blob: bytes) -> dict[str, str]:
    (size,) = struct.unpack_from("<I", blob, 4)
    return {name: kind for name, kind, _ in json.loads(blob[8 : 8 + size])}


# -- the codec ---------------------------------------------------------------------------------
F32_VALUES = np.array([0.1, -2.5, 1e-30, 3e38, 0.0, -0.0], dtype=np.float32).tolist()  # float32 values as Python floats


@pytest.mark.parametrize(
    "values, kind",
    [
        ({"a": F32_VALUES}, "f4"),
        ({"a": [0.1, 1 / 3, 1e-300]}, "f8"),  # genuinely float64: kept float64
        ({"a": [1e39]}, "f8"),  # beyond float32's range: float32 would make it inf
        ({"a": [NAN, INF, -INF, 0.5]}, "f4"),
        ({"a": [NAN, 0.1]}, "f8"),
        ({"a": []}, "f4"),
        ({"a": [1.0, 2.0, 3.0]}, "rf"),  # the epoch column: no payload
        ({"a": [1, 2, 3]}, "ri"),
        ({"a": [3, 1, 2**62]}, "i8"),
        ({"a": 0.1, "b": NAN}, "sf"),
        ({"a": 7}, "si"),
    ],
)
def test_pack_round_trip_is_exact(values: dict[str, Any], kind: str) -> None:
    blob = codec.pack(values)
    assert blob is not None and kinds(blob)["a"] == kind
    assert same(codec.unpack(blob), values)
    if kind == "f4":
        assert len(blob) < 8 + 40 + 4 * len(values["a"]) + 1  # 4 bytes a value


@pytest.mark.parametrize(
    "values",
    [{"a": [1.0, 2]}, {"a": [1, 2.0]}, {"a": ["x"]}, {"a": [None, 1.0]}, {"a": [[1.0]]}, {"a": True}, {"a": None},
     {"a": [True, False]}, {"a": 2**70}, {"a": [2**70]}, {"a": "text"}],
)  # fmt: skip
def test_values_with_no_binary_form_are_refused(values: dict[str, Any]) -> None:
    assert codec.pack(values) is None


def test_unpack_refuses_what_pack_did_not_write() -> None:
    with pytest.raises(ValueError, match="magic"):
        codec.unpack(b'{"a": [1]}')
    blob = codec.pack({"a": [0.5, 0.25]})
    with pytest.raises(ValueError, match="shorter"):
        codec.unpack(blob[:-1])


@pytest.mark.parametrize(
    "values",
    [[0.5, NAN, INF, -INF], [1, 2, 3], [1.0, 2, NAN], [], [[1.0, NAN], [INF, 2.0]], [None, 1.0], ["a", NAN],
     np.array([0.5, np.nan], dtype=np.float32), [True, False]],
)  # fmt: skip
def test_json_list_is_json_safe_value_by_value(values: Any) -> None:
    reference = json_safe(values.tolist() if isinstance(values, np.ndarray) else values)
    assert same(codec.json_list(values), reference)
    json.dumps(codec.json_list(values), allow_nan=False)


# -- the store ---------------------------------------------------------------------------------
def _results() -> list[ConfigResult]:
    return [
        ConfigResult(params={"lambd": 0.0}, metrics={"loss": 0.25, "count": 3}, curves={"epoch": [1.0, 2.0], "loss": F32_VALUES[:2]}),
        ConfigResult(params={"lambd": 1.0}, status="diverged", diverged_epoch=2, metrics={"loss": NAN},
                     curves={"epoch": [1.0, 2.0], "loss": [0.5, NAN], "big": [INF, -INF], "exact64": [0.1, 1 / 3]}),
        ConfigResult(params={"lambd": 2.0}, metrics={"note": "text"}, curves={"labels": ["a", "b"]}),  # JSON text
        ConfigResult(params={"lambd": 3.0}, status="failed", error="RuntimeError: boom"),
    ]  # fmt: skip


_opened: list[Store] = []


@pytest.fixture(autouse=True)
def _close_stores() -> Any:
    """Close every store a test opened: an owner's store keeps a heartbeat thread until then."""
    yield
    while _opened:
        _opened.pop().close()


def _open(path: Path) -> Store:
    store = Store(path)
    _opened.append(store)
    return store


def _store(path: Path, results: list[ConfigResult]) -> Store:
    store = _open(path)
    store.create_run("r1", "d2l-linear", "cmd", {}, {}, "0", "0", [r.params for r in results])
    store.save_results("r1", list(enumerate(results)))
    return store


def test_store_round_trip_of_curves_and_metrics(tmp_path: Path) -> None:
    results = _results()
    store = _store(tmp_path / "s.db", results)
    record = store.get_run("r1")
    for got, want in zip(record.configs, results, strict=True):
        assert same(got.curves, want.curves) and same(got.metrics, want.metrics)
        assert (got.status, got.diverged_epoch, got.error) == (want.status, want.diverged_epoch, want.error)
    types = sql(tmp_path / "s.db", "SELECT typeof(metrics), typeof(curves) FROM configs ORDER BY idx")
    assert types == [("blob", "blob"), ("blob", "blob"), ("text", "text"), ("blob", "blob")]
    (blob,) = sql(tmp_path / "s.db", "SELECT curves FROM configs WHERE idx = 1")[0]
    assert kinds(blob) == {"epoch": "rf", "loss": "f4", "big": "f4", "exact64": "f8"}


def test_reads_that_skip_curves(tmp_path: Path) -> None:
    results = _results()
    store = _store(tmp_path / "s.db", results)
    light = store.get_run("r1", curves=False)
    assert [c.curves for c in light.configs] == [{}] * 4
    assert same([c.metrics for c in light.configs], [r.metrics for r in results])
    assert same(store.get_curves("r1", 1), results[1].curves)
    assert same(store.get_curves("r1", 1, ["loss"]), {"loss": [0.5, NAN]})
    assert store.get_curves("r1", 99) is None
    (listed,) = store.list_runs()
    assert listed.configs == [] and listed.n_configs == 4
    assert listed.counts() == {"done": 2, "diverged": 1, "failed": 1}


def test_engine_float32_curves_are_stored_as_float32_exactly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the engine produced in the run (Python floats read out of float32 tensors) comes back bit for bit."""
    from decaylab.lab.experiments import get_experiment
    from decaylab.lab.experiments.d2l_linear import D2LLinear

    trained: list[Any] = []
    original = D2LLinear.run_chunk

    def capture(self: Any, *args: Any, **kwargs: Any) -> Any:
        out = original(self, *args, **kwargs)
        trained.extend(out)
        return out

    monkeypatch.setattr(D2LLinear, "run_chunk", capture)
    exp = get_experiment("d2l-linear")
    opts = {o.name: o.parse(o.default, o.flag, exp.name) for o in exp.options}
    opts.update(lambd=[0.0, 3.0, 1e9], epochs=3)  # λ = 1e9 diverges: NaN curves
    record = execute(_open(tmp_path / "s.db"), RunRequest(exp, opts, chunk=3))
    assert record.configs[2].status == "diverged" and len(trained) == 3
    for got, want in zip(record.configs, trained, strict=True):
        assert same(got.curves, want.curves) and same(got.metrics, want.metrics)
    for (blob,) in sql(tmp_path / "s.db", "SELECT curves FROM configs"):
        assert kinds(blob) == {"epoch": "ri", "train_loss": "f4", "test_loss": "f4", "w_norm": "f4"}


# -- an old store: JSON text, the old DDL ------------------------------------------------------
def _old_store(path: Path, results: list[ConfigResult], version: str) -> None:
    """A store as decaylab wrote it before schema 3: the version-1 DDL, curves and metrics as JSON text
    (written by the old code path: ``to_json`` then ``json.dumps(json_safe(...))``)."""
    conn = sqlite3.connect(path)
    conn.executescript(V1_SCHEMA)
    conn.execute("INSERT INTO meta VALUES ('application', 'decaylab')")
    conn.execute("INSERT INTO meta VALUES ('schema_version', ?)", (version,))
    conn.execute(
        f"INSERT INTO runs ({V1_RUN_COLUMNS}) VALUES ('old', 'd2l-linear', 'cmd', '{{}}', '{{}}', '0', '0', 'finished', 1.0, 2.0)"
    )

    def dumps(value: Any) -> str:
        return json.dumps(json_safe(value), separators=(",", ":"), allow_nan=False)

    for idx, r in enumerate(results):
        conn.execute(
            f"INSERT INTO configs ({CONFIG_COLUMNS}) VALUES ('old', ?, ?, ?, ?, ?, ?, ?)",
            (idx, dumps(r.params), r.status, dumps(r.metrics), dumps(r.curves), r.diverged_epoch, r.error),
        )
    conn.commit()
    conn.close()


def _through_json(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` as the old store gave them back: every non-finite number NaN."""
    out = {}
    for k, v in json_safe(values).items():
        out[k] = [NAN if x is None else x for x in v] if isinstance(v, list) else (NAN if v is None else v)
    return out


@pytest.mark.parametrize("version", ["1", "2"])
def test_old_store_with_json_text_reads_and_migrates(tmp_path: Path, version: str) -> None:
    results = _results()
    path = tmp_path / "old.db"
    _old_store(path, results, version)
    if version == "2":
        for name, kind in (("owner_pid", "INTEGER"), ("owner_host", "TEXT"), ("owner_token", "TEXT"),
                           ("heartbeat", "REAL"), ("environment", "TEXT")):  # fmt: skip
            sql(path, f"ALTER TABLE runs ADD COLUMN {name} {kind}")
    before = path.read_bytes()
    reader = Store(path, readonly=True, create=False)
    old = reader.get_run("old")
    reader.close()
    assert path.read_bytes() == before  # read as it is
    for got, want in zip(old.configs, results, strict=True):  # the numbers as written: JSON text kept ±inf as null, read as NaN
        assert same(got.curves, _through_json(want.curves)) and same(got.metrics, _through_json(want.metrics))

    store = _open(path)  # a writer migrates: version 3, old rows untouched, new rows packed
    assert sql(path, "SELECT value FROM meta WHERE key = 'schema_version'") == [("3",)]
    store.create_run("new", "d2l-linear", "cmd", {}, {}, "0", "0", [r.params for r in results])
    store.save_results("new", list(enumerate(results)))
    assert sql(path, "SELECT typeof(curves) FROM configs WHERE run_id = 'old'") == [("text",)] * 4
    assert sql(path, "SELECT typeof(curves) FROM configs WHERE run_id = 'new' AND idx = 0") == [("blob",)]
    new = store.get_run("new")
    for got, want in zip(new.configs, results, strict=True):  # packed: ±inf kept
        assert same(got.curves, want.curves) and same(got.metrics, want.metrics)
    assert {r.run_id: r.counts() for r in store.list_runs()} == {
        "old": {"done": 2, "diverged": 1, "failed": 1}, "new": {"done": 2, "diverged": 1, "failed": 1}
    }  # fmt: skip


def test_damaged_record_is_one_line(tmp_path: Path, cli: Any) -> None:
    store = _store(tmp_path / "s.db", _results())
    store.close()
    sql(tmp_path / "s.db", "UPDATE configs SET curves = X'444C413100' WHERE idx = 0")
    code, _, err = cli("runs", "show", "r1", "--store", "s.db", "--json")
    assert code == 2 and err.count("\n") == 1 and "damaged" in err and "'curves'" in err, err
