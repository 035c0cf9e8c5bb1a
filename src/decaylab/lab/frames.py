"""A stored run as pandas DataFrames: its table, one row per configuration, its curves, the store's runs.

* :func:`table_frame` — an experiment's :class:`~decaylab.lab.experiments.base.Table` (the columns the
  terminal shows; numbers stay numbers, a missing number is NaN);
* :func:`configs_frame` — one row per configuration: ``idx``, its parameters, ``status``,
  ``diverged_epoch``, ``error``, then its final metrics (what ``decaylab runs export`` writes);
* :func:`curves_frame` — the long per-point table: one row per configuration and curve point, ``idx``,
  the parameters, ``point`` (0, 1, ...) and one column per curve (``epoch``, ``train_loss``, ...);
  curves of different lengths are padded with NaN (``runs export --curves``);
* :func:`runs_frame` — the store's runs, one row each (``decaylab.lab.runs()``);
* :func:`write_frame` — a frame to CSV or Parquet, atomically (:mod:`decaylab.lab.atomic`).

A parameter whose value is not a number or a string (a list of layer widths) is kept as its JSON text,
so that CSV and Parquet hold the same thing. A parameter with the name of one of the frame's own columns
is prefixed ``param_``, a metric or a curve with the name of a column before it ``metric_`` or ``curve_``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from decaylab.lab.atomic import atomic_write

if TYPE_CHECKING:
    import pandas as pd

    from decaylab.lab.experiments.base import Table
    from decaylab.lab.store import RunRecord
    from decaylab.results import ConfigResult

__all__ = ["FORMATS", "configs_frame", "curves_frame", "runs_frame", "table_frame", "write_frame"]

FORMATS = ("csv", "parquet")
_CONFIG_COLUMNS = ("idx", "status", "diverged_epoch", "error")


def _cell(value: Any) -> Any:
    """A parameter's value as a DataFrame cell: numbers, strings, booleans and ``None`` as they are, the
    rest (lists, dicts) as compact JSON text."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return json.dumps(value, separators=(",", ":"))


def table_frame(table: Table) -> pd.DataFrame:
    """``table`` as a DataFrame with its columns as shown; a column whose cells are all numbers (or
    missing) is numeric (``None`` → NaN). The title and the notes go to ``frame.attrs``."""
    import pandas as pd

    frame = pd.DataFrame(table.rows, columns=list(table.columns), dtype=object)
    for i, name in enumerate(table.columns):
        cells = [row[i] for row in table.rows]
        if all(c is None or (isinstance(c, (int, float)) and not isinstance(c, bool)) for c in cells):
            if all(isinstance(c, int) for c in cells):
                frame[name] = pd.array(cells, dtype="int64")
            else:
                frame[name] = pd.array([math.nan if c is None else float(c) for c in cells], dtype="float64")
    frame.attrs["title"] = table.title
    frame.attrs["notes"] = list(table.notes)
    return frame


def _param_columns(results: Sequence[ConfigResult], reserved: Sequence[str]) -> dict[str, str]:
    """Every parameter name (in order of first appearance) -> its column: the name, or ``param_NAME``
    when it is one of the frame's own columns (``reserved``)."""
    names: dict[str, None] = {}
    for r in results:
        names.update(dict.fromkeys(r.params))
    return {p: f"param_{p}" if p in reserved else p for p in names}


def configs_frame(results: Sequence[ConfigResult]) -> pd.DataFrame:
    """One row per configuration, in order: ``idx``, the parameters, ``status``, ``diverged_epoch``
    (missing: ``<NA>``), ``error``, then every final metric (NaN where a configuration has none)."""
    import pandas as pd

    params = _param_columns(results, _CONFIG_COLUMNS)
    taken = set(params.values()) | set(_CONFIG_COLUMNS)
    metric_names: dict[str, None] = {}
    for r in results:
        metric_names.update(dict.fromkeys(r.metrics))
    metric_columns = {m: f"metric_{m}" if m in taken else m for m in metric_names}
    rows = []
    for idx, r in enumerate(results):
        row: dict[str, Any] = {"idx": idx}
        row.update({column: _cell(r.params.get(p)) for p, column in params.items()})
        row.update(status=r.status, diverged_epoch=r.diverged_epoch, error=r.error)
        row.update({column: _metric(r.metrics.get(m)) for m, column in metric_columns.items()})
        rows.append(row)
    columns = ["idx", *params.values(), "status", "diverged_epoch", "error", *metric_columns.values()]
    frame = pd.DataFrame(rows, columns=columns)
    frame["idx"] = frame["idx"].astype("int64")
    frame["diverged_epoch"] = frame["diverged_epoch"].astype("Int64")
    frame["status"] = frame["status"].astype(object)
    frame["error"] = frame["error"].astype(object)
    for column in metric_columns.values():
        if all(isinstance(v, float) for v in frame[column]):
            frame[column] = frame[column].astype("float64")
    return frame


def _metric(value: Any) -> Any:
    if value is None:
        return math.nan
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return _cell(value)


def curves_frame(results: Sequence[ConfigResult], indices: Sequence[int] | None = None) -> pd.DataFrame:
    """The long table of the curves of ``results`` (of the configurations ``indices``; all by default):
    one row per configuration and curve point, columns ``idx``, the parameters, ``point`` and one
    column per curve (float64). A configuration without curves (pending, failed) has no rows."""
    import numpy as np
    import pandas as pd

    params = _param_columns(results, ("idx", "point"))
    curve_names: dict[str, None] = {}
    for r in results:
        curve_names.update(dict.fromkeys(r.curves))
    taken = set(params.values()) | {"idx", "point"}
    columns = {c: f"curve_{c}" if c in taken else c for c in curve_names}
    parts = []
    for idx in range(len(results)) if indices is None else indices:
        r = results[idx]
        length = max((len(v) for v in r.curves.values()), default=0)
        if not length:
            continue
        part: dict[str, Any] = {"idx": np.full(length, idx, dtype=np.int64)}
        part.update({column: [_cell(r.params.get(p))] * length for p, column in params.items()})
        part["point"] = np.arange(length, dtype=np.int64)
        for name, column in columns.items():
            values = np.full(length, np.nan)
            got = np.asarray(r.curves.get(name, []), dtype=np.float64)
            values[: len(got)] = got
            part[column] = values
        parts.append(pd.DataFrame(part))
    if not parts:
        return pd.DataFrame({"idx": pd.Series(dtype="int64"), **{p: pd.Series(dtype=object) for p in params.values()},
                             "point": pd.Series(dtype="int64"), **{c: pd.Series(dtype="float64") for c in columns.values()}})
    return pd.concat(parts, ignore_index=True)


def runs_frame(records: Sequence[RunRecord], options: Sequence[str]) -> pd.DataFrame:
    """The runs (as :meth:`Store.list_runs` gives them) one row each: ``id``, ``experiment``, ``status``,
    ``created`` (a local ``datetime``), ``done`` (configurations done or diverged), ``configs`` (all),
    ``options`` (``options[i]``: the run's main options as text), ``version``, ``command``."""
    import pandas as pd

    rows = []
    for record, text in zip(records, options, strict=True):
        counts = record.counts()
        rows.append(
            {
                "id": record.run_id,
                "experiment": record.experiment,
                "status": record.status,
                "created": pd.Timestamp.fromtimestamp(record.created),
                "done": counts.get("done", 0) + counts.get("diverged", 0),
                "configs": record.n_configs,
                "options": text,
                "version": record.version,
                "command": record.command,
            }
        )
    columns = ["id", "experiment", "status", "created", "done", "configs", "options", "version", "command"]
    frame = pd.DataFrame(rows, columns=columns)
    if not rows:
        frame = frame.astype({"created": "datetime64[ns]", "done": "int64", "configs": "int64"})
    return frame


def write_frame(frame: pd.DataFrame, path: str | os.PathLike[str], fmt: str) -> Path:
    """Write ``frame`` to ``path`` as ``fmt`` (``"csv"``: UTF-8, no index; ``"parquet"``: pyarrow, no
    index), atomically: ``path`` holds the whole file or is left as it was.

    Raises ``OSError`` if it cannot be written, ``ImportError`` for Parquet without pyarrow.
    """
    target = Path(path)
    with atomic_write(target) as f:
        if fmt == "csv":
            f.write(frame.to_csv(index=False).encode("utf-8"))
        elif fmt == "parquet":
            frame.to_parquet(f, engine="pyarrow", index=False)
        else:
            raise ValueError(f"unknown format {fmt!r}; one of {FORMATS}")
    return target
