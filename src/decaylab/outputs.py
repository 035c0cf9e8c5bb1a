"""What a run shows: the JSON document, tables on the terminal, the files of the run directory."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from decaylab.experiments.base import Table
from decaylab.results import json_safe
from decaylab.store import RunRecord

__all__ = ["environment_lines", "format_cell", "render_table", "run_document", "runs_table", "write_json"]


def run_document(record: RunRecord, summary: dict[str, Any]) -> dict[str, Any]:
    """The run as one JSON document (``--json``, ``results.json``, ``runs show --json``)."""
    return json_safe(
        {
            "run_id": record.run_id,
            "experiment": record.experiment,
            "status": record.status,
            "version": record.version,
            "command": record.command,
            "options": record.options,
            "environment": record.environment,
            "summary": summary,
            "configs": [c.to_json() for c in record.configs],
        }
    )


def environment_lines(record: RunRecord) -> list[str]:
    """``runs show``'s lines about where the run ran (:func:`decaylab.environment.describe`) and, while
    it runs, which process owns it."""
    from decaylab.environment import describe

    lines = describe(record.environment)
    if record.status == "running" and record.heartbeat is not None:
        import time

        lines.append(
            f"owner: process {record.owner_pid} on {record.owner_host}, heartbeat {time.time() - record.heartbeat:.0f} s ago"
        )
    return lines


def write_json(doc: Any, path: Path) -> Path:
    path.write_text(json.dumps(json_safe(doc), indent=1, allow_nan=False) + "\n")
    return path


def format_cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.4g}"
    return str(value)


def render_table(table: Table) -> Any:
    """A ``rich`` table: numbers right-aligned with four significant digits."""
    from rich.console import Group
    from rich.table import Table as RichTable
    from rich.text import Text

    out = RichTable(header_style="bold")
    numeric = [
        all(isinstance(row[i], (int, float)) or row[i] is None for row in table.rows) for i in range(len(table.columns))
    ]
    for name, is_number in zip(table.columns, numeric):
        out.add_column(name, justify="right" if is_number else "left", no_wrap=True)
    for row in table.rows:
        out.add_row(*(format_cell(v) for v in row))
    return Group(Text(table.title, style="bold"), out) if table.title else out


def runs_table(records: Sequence[RunRecord]) -> Table:
    import time

    rows = []
    for r in records:
        counts = r.counts()
        done = counts.get("done", 0) + counts.get("diverged", 0)
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(r.created))
        rows.append([r.run_id, r.experiment, r.status, f"{done}/{len(r.configs)}", when, r.version])
    return Table(["run", "experiment", "status", "configs done", "started", "version"], rows)
