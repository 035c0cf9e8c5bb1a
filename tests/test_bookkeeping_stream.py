"""Bookkeeping at scale, issue 15's last goals: ``runs show --json`` streams its document, and the
faster reads give the same numbers as before.

The references are independent of the code under test: the document as the whole-list path writes
it (``run_document`` + ``document_text``, and the old pure-json path of test_bookkeeping), and every
stored cell decoded row by row with ``json.loads`` and :func:`decaylab.codec.unpack`.
"""

from __future__ import annotations

import io
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from decaylab import codec
from decaylab.lab import outputs
from decaylab.lab.experiments import get_experiment
from decaylab.lab.outputs import CURVES_INLINE_MAX, document_text, run_document, write_document
from decaylab.lab.store import Store
from test_bookkeeping import old_document_text
from test_store_arrays import same


def _run(cli: Any, *argv: str) -> str:
    code, out, err = cli("run", "d2l-linear", "--no-figures", "--epochs", "3", "--quiet", "--json", *argv)
    assert code == 0, err
    return str(json.loads(out)["run_id"])


def _whole_list_text(run_id: str, curves: bool) -> str:
    """The document as the whole-list path makes it (what ``runs show --json`` printed before)."""
    record = Store("decaylab.db").get_run(run_id, curves=curves)
    summary = get_experiment("d2l-linear").summarize(record.configs, record.options)
    return document_text(run_document(record, summary, curves=curves))


@pytest.mark.parametrize(
    "argv, curves",
    [
        (("--lambd", "0,3,1e9", "--seed", "0,1", "--out", "o"), True),  # diverged λ: NaN written as null
        (("--lambd", f"0:1:{CURVES_INLINE_MAX + 6}", "--out", "o"), False),  # curves left out
    ],
)
def test_streamed_show_json_is_the_whole_documents_text(cli: Any, argv: tuple[str, ...], curves: bool) -> None:
    run_id = _run(cli, *argv)
    code, out, _ = cli("runs", "show", run_id, "--json")
    assert code == 0
    assert out == _whole_list_text(run_id, curves)  # byte for byte
    record = Store("decaylab.db").get_run(run_id)
    summary = get_experiment("d2l-linear").summarize(record.configs, record.options)
    if curves:  # and what the old pure-json code path wrote, value for value
        assert same(json.loads(out), json.loads(old_document_text(record, summary)))
    lines = out.splitlines()
    first = lines.index(' "configs": [') + 1
    assert [json.loads(line.strip().rstrip(",")) for line in lines[first : first + len(record.configs)]] == [
        json.loads(json.dumps(c.to_json(curves), allow_nan=False)) for c in record.configs
    ]  # one configuration a line, in order


@pytest.mark.parametrize("batch", [1, 3, 1000])
def test_write_document_is_document_text_in_small_writes(monkeypatch: pytest.MonkeyPatch, batch: int) -> None:
    nan = float("nan")
    doc = {
        "run_id": "r", "summary": {"rows": [{"x": 1.0, "y": nan}, {"x": 2, "y": [1, nan]}], "empty": [], "e": {}},
        "options": {"lambd": [0.0, 1e-05]}, "configs": [{"a": 1}, {"b": [nan]}, {"c": "λ"}],
    }  # fmt: skip
    expected = document_text(doc)
    assert same(json.loads(expected), json.loads(json.dumps(doc).replace("NaN", "null")))
    monkeypatch.setattr(outputs, "_WRITE_BATCH", batch)
    writes: list[str] = []

    class Sink(io.StringIO):
        def write(self, s: str) -> int:
            writes.append(s)
            return len(s)

    write_document(doc, Sink())
    assert "".join(writes) == expected
    if batch == 1:  # never the whole text in one write
        assert len(writes) > 10 and max(map(len, writes)) < len(expected) / 4


def test_streamed_configs_with_none_and_with_curves_kept(cli: Any) -> None:
    run_id = _run(cli, "--lambd", f"0:1:{CURVES_INLINE_MAX + 2}", "--out", "o")
    code, out, _ = cli("runs", "show", run_id, "--json", "--curves")
    assert code == 0 and out == _whole_list_text(run_id, True)
    record = Store("decaylab.db").get_run(run_id, curves=False)
    record.configs = []
    text = io.StringIO()
    write_document(run_document(record, {}, stream=True), text)
    assert text.getvalue() == document_text(run_document(record, {})) and '"configs": []' in text.getvalue()


def _cells(path: Path, run_id: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as conn:
        return conn.execute(
            "SELECT params, status, metrics, curves FROM configs WHERE run_id = ? ORDER BY idx", (run_id,)
        ).fetchall()


def test_get_run_reads_the_stored_numbers_row_by_row(cli: Any) -> None:
    """Read in one pass (params joined into one json.loads), the run is what each cell decodes to."""
    run_id = _run(cli, "--lambd", "0,3,1e9", "--seed", "0,1", "--out", "o")
    record = Store("decaylab.db").get_run(run_id)
    cells = _cells(Path("decaylab.db"), run_id)
    assert len(record.configs) == len(cells) == 6
    for c, (params, status, metrics, curves) in zip(record.configs, cells, strict=True):
        assert same(c.params, json.loads(params)) and c.status == status
        assert same(c.metrics, codec.unpack(metrics)) and same(c.curves, codec.unpack(curves))


@pytest.mark.parametrize("damage", ['{"lambd": 1', '{"lambd": 1}, {"seed": 2}', "[1]"])
def test_a_damaged_params_cell_is_named_even_when_the_others_are_whole(cli: Any, damage: str) -> None:
    run_id = _run(cli, "--lambd", "0,1,2", "--out", "o")
    with sqlite3.connect("decaylab.db") as conn:
        conn.execute("UPDATE configs SET params = ? WHERE idx = 1", (damage,))
    if damage == "[1]":  # JSON, but not a configuration's params: read as it is, row by row
        record = Store("decaylab.db").get_run(run_id, curves=False)
        assert [c.params for c in record.configs][1] == [1] and record.configs[2].params["lambd"] == 2.0
        return
    code, _, err = cli("runs", "show", run_id)
    assert code == 2 and err.count("\n") == 1
    assert f"column 'params' of run '{run_id}' is not JSON" in err


VALUES = [
    {"params": {"lambd": 0.1, "seed": 0, "impl": "batched"}, "status": "done", "metrics": {"loss": 1e-05}},
    [1, -0.0, 2.5e300, 10**30, True, None, "λ ‖w‖₂", 'quote " and \\ and \n'],
    {"nested": {"deep": [[{"x": []}], {}]}, "é": 3},
    "just a string",
    1.0,
]


@pytest.mark.parametrize("c_encoder", [True, False])
def test_compact_encoder_writes_what_json_dumps_writes(monkeypatch: pytest.MonkeyPatch, c_encoder: bool) -> None:
    import numpy as np

    if not c_encoder:  # a Python without the C encoder: JSONEncoder.encode itself
        monkeypatch.setattr(json.encoder, "c_make_encoder", None)
    encode = outputs._compact_encoder()
    for value in [*VALUES, {"np": np.float64(0.30000000000000004)}]:
        assert encode(value) == json.dumps(value, separators=(",", ":"), allow_nan=False)
    for bad in (float("nan"), {"a": [float("-inf")]}):
        with pytest.raises(ValueError):
            encode(bad)
    with pytest.raises(TypeError):
        encode({"a": object()})


def test_document_text_by_hand() -> None:
    """The layout, written out: dicts one key per line, lists of containers one compact element per line."""
    doc = {"run_id": "r", "summary": {"rows": [{"x": 1.0, "y": float("nan")}], "n": [1, 2], "e": []}, "configs": []}
    expected = (
        '{\n "run_id": "r",\n "summary": {\n  "rows": [\n   {"x":1.0,"y":null}\n  ],\n  "n": [1,2],\n'
        '  "e": []\n },\n "configs": []\n}\n'
    )
    assert document_text(doc) == expected
    text = io.StringIO()
    write_document({**doc, "configs": outputs.ConfigLines([], curves=False)}, text)
    assert text.getvalue() == expected
