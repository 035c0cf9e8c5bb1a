"""What a run shows: the JSON document, tables on the terminal, the files of the run directory."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from decaylab.lab.atomic import atomic_write
from decaylab.lab.experiments.base import Table
from decaylab.lab.store import RunRecord
from decaylab.results import ConfigResult, json_safe

__all__ = [
    "CURVES_INLINE_MAX",
    "ConfigLines",
    "MAX_TABLE_ROWS",
    "command_of",
    "curves_left_out_note",
    "diverged_note",
    "document_text",
    "environment_lines",
    "format_cell",
    "main_options",
    "render_table",
    "run_document",
    "runs_table",
    "verdict_lines",
    "write_document",
    "write_json",
]

CURVES_INLINE_MAX = 256  # more configurations than this: curves left out of the document unless --curves
MAX_TABLE_ROWS = 100  # a longer table shows its first and last TABLE_EDGE_ROWS rows and says how many it left out
TABLE_EDGE_ROWS = 20


def command_of(experiment: str) -> str:
    """The command that runs ``experiment``: ``decaylab sweep`` for a sweep, ``decaylab run`` for the rest."""
    return "decaylab sweep" if experiment == "sweep" else "decaylab run"


def curves_left_out_note(record: RunRecord) -> str:
    """What the document says (key ``curves_left_out``) when its configurations' curves are not in it."""
    return (
        f"{record.n_configs} configurations (more than {CURVES_INLINE_MAX}): their curves are in the store, "
        f"not in this document; `decaylab runs show {record.run_id} --json --curves` prints them "
        f"(or pass --curves to {command_of(record.experiment)})"
    )


class ConfigLines:
    """A run's configurations as the document's ``configs`` list, made one by one as it is written.

    ``run_document(..., stream=True)`` puts this in the document instead of a list of dicts, so that
    :func:`write_document` streams a run of 10⁵ configurations line by line (each
    :meth:`~decaylab.results.ConfigResult.to_json` made, encoded and dropped) rather than holding every
    dict and the whole text at once. Iterating gives the dicts; the text is the same as a list's.
    """

    def __init__(self, configs: Sequence[ConfigResult], curves: bool) -> None:
        self.configs = configs
        self.curves = curves

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return (c.to_json(self.curves) for c in self.configs)

    def __len__(self) -> int:
        return len(self.configs)


def run_document(
    record: RunRecord, summary: dict[str, Any], curves: bool = True, *, stream: bool = False
) -> dict[str, Any]:
    """The run as one JSON document (``--json``, ``results.json``, ``runs show --json``).

    ``curves=False`` leaves every configuration's ``curves`` out and adds ``curves_left_out`` (a
    sentence saying where they are). Non-finite numbers are ``None``: the run's own fields and the
    summary through :func:`~decaylab.results.json_safe`, the configurations list by list with numpy
    (:meth:`~decaylab.results.ConfigResult.to_json`), never float by float over the whole document.
    With ``stream=True`` the document is for :func:`write_document` (``runs show --json``):
    ``doc["configs"]`` is a :class:`ConfigLines` instead of a list, each configuration's dict made when
    it is written, and non-finite numbers elsewhere are made ``null`` as they are written.
    """
    head = {
        "run_id": record.run_id,
        "experiment": record.experiment,
        "status": record.status,
        "version": record.version,
        "command": record.command,
        "options": record.options,
        "environment": record.environment,
        "summary": summary,
    }
    # streamed, the writer makes every leaf strict JSON as it encodes it (_compact): checking the whole
    # head first (a summary of 10⁵ rows) would encode it twice
    doc = dict(head) if stream else json_safe(head)
    if not curves:
        doc["curves_left_out"] = curves_left_out_note(record)
    lines = ConfigLines(record.configs, curves)
    doc["configs"] = lines if stream else list(lines)
    return doc


def _compact_encoder() -> Callable[[Any], str]:
    """``json.dumps(value, separators=(",", ":"), allow_nan=False)`` as one function made once.

    ``json.dumps`` with arguments builds a ``JSONEncoder`` per call, and ``JSONEncoder.encode`` builds
    its C encoder per call: at 2·10⁵ small values (``runs show --json`` of 10⁵ configurations) that set-up
    was a third of the command. This is the C encoder ``JSONEncoder.iterencode`` makes for these settings
    (``json.encoder.c_make_encoder``, no circular-reference check: documents are trees), built once; where
    the C encoder is missing, or does not write the same text as ``json.dumps`` on a probe, it is
    ``JSONEncoder.encode`` itself. Raises ``ValueError`` on NaN or infinity, ``TypeError`` on an
    unknown type, as ``json.dumps`` does.
    """
    encoder = json.JSONEncoder(separators=(",", ":"), allow_nan=False)
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return encoder.encode
    c_encode = make(None, encoder.default, json.encoder.encode_basestring_ascii, None, ":", ",", False, False, False)

    def encode(value: Any) -> str:
        return "".join(c_encode(value, 0))

    probe = {"λ": [0.1, 1e-05, -0.0, 3, None, True], "s": "a\"b\n", "e": {}, "l": []}
    try:
        same = encode(probe) == json.dumps(probe, separators=(",", ":"), allow_nan=False)
    except Exception:
        same = False
    return encode if same else encoder.encode


_ENCODE = _compact_encoder()
_WRITE_BATCH = 2048  # pieces joined into one write by write_document


def _compact(value: Any) -> str:
    try:
        return _ENCODE(value)
    except ValueError:  # a NaN or infinity somewhere: the slow path, for this value only
        return _ENCODE(json_safe(value))


def document_text(doc: Any) -> str:
    """``doc`` as JSON text: dicts one key per line, lists of dicts or lists (``configs``, a summary's
    rows) one element per line, each element compact, written by the C encoder (``json.dumps`` with
    ``indent`` falls back to the pure-Python encoder, which at thousands of configurations was most of
    a run's time); NaN/inf as ``null``; ends in a newline."""
    return "".join(_pieces(doc, 0)) + "\n"


def write_document(doc: Any, out: IO[str]) -> None:
    """Write :func:`document_text` of ``doc`` to ``out`` as it is made, a few thousand lines per write:
    the whole text never exists at once (``runs show --json`` of 10⁵ configurations)."""
    batch: list[str] = []
    for piece in _pieces(doc, 0):
        batch.append(piece)
        if len(batch) >= _WRITE_BATCH:
            out.write("".join(batch))
            batch.clear()
    batch.append("\n")
    out.write("".join(batch))


def _one_per_line(value: Any) -> bool:
    """Whether ``value`` is written one element per line: a :class:`ConfigLines`, or a non-empty list
    whose elements are all dicts or lists."""
    if isinstance(value, ConfigLines):
        return len(value) > 0
    return isinstance(value, list) and bool(value) and all(isinstance(v, (dict, list)) for v in value)


def _pieces(value: Any, depth: int) -> Iterator[str]:
    """The text of ``value``, in pieces: a dict one key per line (recursively); a list of containers
    one element per line, each compact; anything else compact. Every leaf goes through the C encoder."""
    pad = " " * (depth + 1)
    if isinstance(value, dict) and value:
        yield "{\n"
        for i, (k, v) in enumerate(value.items()):
            yield (",\n" + pad) if i else pad
            yield f"{json.dumps(str(k))}: "
            yield from _pieces(v, depth + 1)
        yield "\n" + " " * depth + "}"
    elif _one_per_line(value):
        yield "[\n"
        for i, v in enumerate(value):
            yield (",\n" if i else "") + pad + _compact(v)
        yield "\n" + " " * depth + "]"
    elif isinstance(value, ConfigLines):
        yield "[]"
    else:
        yield _compact(value)


def environment_lines(record: RunRecord) -> list[str]:
    """``runs show``'s lines about where the run ran (:func:`decaylab.lab.environment.describe`) and, while
    it runs, which process owns it."""
    from decaylab.lab.environment import describe

    lines = describe(record.environment)
    if record.status == "running" and record.heartbeat is not None:
        import time

        lines.append(
            f"owner: process {record.owner_pid} on {record.owner_host}, heartbeat {time.time() - record.heartbeat:.0f} s ago"
        )
    return lines


def write_json(doc: Any, path: Path) -> Path:
    """Write ``doc`` as JSON (UTF-8, non-finite numbers as ``null``, :func:`document_text`) to ``path``,
    atomically: ``path`` holds the whole new document or is left as it was
    (:func:`decaylab.lab.atomic.atomic_write`).

    Raises ``OSError`` (e.g. ``ENOSPC``) if the file cannot be written.
    """
    text = document_text(doc)
    with atomic_write(path) as f:
        f.write(text.encode("utf-8"))
    return path


def format_cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.4g}"
    return str(value)


def verdict_lines(summary: dict[str, Any]) -> list[str]:
    """The lines printed under a run's table: ``verdict: ...`` from the summary's ``verdict`` (one line, or a
    list of lines, one per claim, as ``equilibrium``'s); none when the summary has no verdict."""
    verdict = summary.get("verdict")
    if not verdict:
        return []
    lines = [verdict] if isinstance(verdict, str) else [str(line) for line in verdict]
    return ["verdict: " + lines[0], *("         " + line for line in lines[1:])]


def render_table(table: Table, more: str = "--json", verdict: Sequence[str] = ()) -> Any:
    """A ``rich`` table: numbers right-aligned with four significant digits, and under it the ``verdict``
    lines (:func:`verdict_lines`) — the one place where every experiment's verdict is printed.

    A table longer than :data:`MAX_TABLE_ROWS` rows shows its first and last :data:`TABLE_EDGE_ROWS` and,
    between them a row of "…", and below a line saying how many rows were left out and that ``more`` (a
    command) prints them all.
    """
    from rich.console import Group
    from rich.table import Table as RichTable
    from rich.text import Text

    out = RichTable(header_style="bold")
    numeric = [
        all(isinstance(row[i], (int, float)) or row[i] is None for row in table.rows) for i in range(len(table.columns))
    ]
    for name, is_number in zip(table.columns, numeric, strict=True):
        out.add_column(name, justify="right" if is_number else "left", no_wrap=True)
    rows = table.rows
    if len(rows) > MAX_TABLE_ROWS:
        head, tail = rows[:TABLE_EDGE_ROWS], rows[-TABLE_EDGE_ROWS:]
        left_out = len(rows) - len(head) - len(tail)
    else:
        head, tail, left_out = rows, [], 0
    for row in head:
        out.add_row(*(format_cell(v) for v in row))
    if left_out:
        out.add_row(*(["…"] * len(table.columns)))
    for row in tail:
        out.add_row(*(format_cell(v) for v in row))
    parts: list[Any] = [Text(table.title, style="bold")] if table.title else []
    parts.append(out)
    if left_out:
        parts.append(Text(f"{left_out} of {len(rows)} rows left out; {more} prints them all", style="italic"))
    if table.notes:
        parts.append(Text("did not finish:\n" + "\n".join(f"  {line}" for line in table.notes)))
    if verdict:
        parts.append(Text("\n".join(verdict), style="bold"))
    return Group(*parts) if len(parts) > 1 else out


def diverged_note(record: RunRecord) -> str | None:
    """``"N of M configurations diverged"`` (with the epochs) when some did; printed once after a run.

    A diverged configuration is a result, not a failure: the run still exits 0.
    """
    diverged = [c for c in record.configs if c.status == "diverged"]
    if not diverged:
        return None
    epochs = sorted({c.diverged_epoch for c in diverged if c.diverged_epoch is not None})
    when = ""
    if epochs:
        when = f" (at epoch {epochs[0]})" if len(epochs) == 1 else f" (at epochs {epochs[0]}–{epochs[-1]})"
    return f"{len(diverged)} of {len(record.configs)} configurations diverged{when}"


def failed_note(record: RunRecord) -> str | None:
    """``"N of M configurations failed: ERROR"`` (the first failure's error) when some did; printed after a run,
    which then exits 1 — without it the reason would show only in ``runs show --json``."""
    failed = [c for c in record.configs if c.status == "failed"]
    if not failed:
        return None
    return f"{len(failed)} of {len(record.configs)} configurations failed: {failed[0].error or 'no error recorded'}"


def main_options(record: RunRecord) -> str:
    """The options of ``record`` that differ from its experiment's defaults, as the user gave them::

        lambd=0,1,3 epochs=20

    An option counts as given when its stored (parsed) value differs from the parsed default, so
    ``--lambd 0,3.0`` for a default ``0,3`` is not shown. An experiment this decaylab does not know
    shows every option it stored. '' when all are defaults.
    """
    from decaylab.lab.experiments import get_experiment
    from decaylab.validation import InvalidParameterError

    try:
        exp = get_experiment(record.experiment)
    except (InvalidParameterError, LookupError, ImportError):
        return " ".join(f"{k}={v}" for k, v in record.raw_options.items())
    parts = []
    for opt in exp.options:
        if opt.name not in record.options:
            continue
        if _canonical(record.options[opt.name]) != _default_of(exp.name, opt):
            parts.append(f"{opt.name}={record.raw_options.get(opt.name, _compact(record.options[opt.name]))}")
    return " ".join(parts)


_DEFAULTS: dict[tuple[str, str], str] = {}


def _canonical(value: Any) -> str:
    return json.dumps(json_safe(value), sort_keys=True, separators=(",", ":"), allow_nan=False)


def _default_of(experiment: str, opt: Any) -> str:
    """An option's parsed default, canonical JSON (cached; a default that does not parse here is '')."""
    import warnings

    key = (experiment, opt.name)
    if key not in _DEFAULTS:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                _DEFAULTS[key] = _canonical(opt.parse(opt.default, opt.flag, experiment))
        except ValueError:
            _DEFAULTS[key] = ""
    return _DEFAULTS[key]


def runs_table(records: Sequence[RunRecord]) -> Table:
    """``decaylab runs list``: one row per run with its main options (:func:`main_options`)."""
    import time

    rows = []
    for r in records:
        counts = r.counts()
        done = counts.get("done", 0) + counts.get("diverged", 0)
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(r.created))
        rows.append([r.run_id, r.experiment, r.status, f"{done}/{r.n_configs}", when, main_options(r), r.version])
    return Table(["run", "experiment", "status", "configs done", "started", "options", "version"], rows)
