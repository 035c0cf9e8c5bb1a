"""Two stored runs side by side (``decaylab runs compare A B``): options, summaries, per-configuration metrics.

* options: every option either run has, with the text each was given as; a difference is judged on the
  parsed values (``0,3`` and ``0,3.0`` are the same λ grid);
* summary: each run's summary (the experiment's ``summarize``) flattened to one line per number or
  text, keyed by its path in the summary (``by_lambda[1].test_loss``);
* configurations: matched by their parameters (equal parameter dicts), each metric of each matched
  configuration, and the configurations only one run has.

A value differs when it is not exactly equal (NaN equals NaN here): two runs of the same options on the
same machine give identical numbers, so any mark means something changed. Marked ``≠``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from decaylab.results import json_safe

if TYPE_CHECKING:
    from decaylab.lab.experiments.base import Table
    from decaylab.lab.store import RunRecord

__all__ = ["DIFFERS", "compare_runs", "comparison_tables"]

DIFFERS = "≠"


def _canonical(value: Any) -> str:
    return json.dumps(json_safe(value), sort_keys=True, separators=(",", ":"), allow_nan=False)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return _canonical(a) == _canonical(b)


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": [{"c": 1}]}}`` → ``{"a.b[0].c": 1}``; lists of numbers or strings stay whole."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(value, (list, tuple)) and any(isinstance(v, (dict, list, tuple)) for v in value):
        out = {}
        for i, item in enumerate(value):
            out.update(flatten(item, f"{prefix}[{i}]"))
        return out
    return {prefix: list(value) if isinstance(value, tuple) else value}


def _side(record: RunRecord) -> dict[str, Any]:
    return {"run_id": record.run_id, "experiment": record.experiment, "status": record.status, "command": record.command}


def _option_rows(a: RunRecord, b: RunRecord, order: Sequence[str]) -> list[dict[str, Any]]:
    names = list(dict.fromkeys([*order, *a.options, *b.options]))
    rows = []
    for name in names:
        in_a, in_b = name in a.options, name in b.options
        rows.append(
            {
                "name": name,
                "a": a.raw_options.get(name, _canonical(a.options[name])) if in_a else None,
                "b": b.raw_options.get(name, _canonical(b.options[name])) if in_b else None,
                "differs": not (in_a and in_b and _same(a.options[name], b.options[name])),
            }
        )
    return rows


def compare_runs(
    a: RunRecord, b: RunRecord, summary_a: dict[str, Any], summary_b: dict[str, Any], order: Sequence[str] = ()
) -> dict[str, Any]:
    """The comparison as one JSON-ready document (``runs compare --json``)::

        {"a": {run_id, experiment, status, command}, "b": {...},
         "options": [{"name", "a", "b", "differs"}],          # a / b: the option's text, None if absent
         "summary": [{"key", "a", "b", "differs"}],           # flattened summaries (see flatten)
         "configs": [{"params", "a", "b", "differs"}]}        # a / b: {"status", "metrics"} or None

    ``order`` lists option names to show first (the experiment's own order). A configuration's
    ``differs`` names the metrics (and ``status``) that differ; a configuration only one run has
    differs in everything (``["*"]``).
    """
    flat_a, flat_b = flatten(summary_a), flatten(summary_b)
    summary = [
        {"key": key, "a": flat_a.get(key), "b": flat_b.get(key),
         "differs": not (key in flat_a and key in flat_b and _same(flat_a[key], flat_b[key]))}
        for key in dict.fromkeys([*flat_a, *flat_b])
    ]  # fmt: skip
    by_params: dict[str, dict[str, Any]] = {}
    for side, record in (("a", a), ("b", b)):
        for c in record.configs:
            entry = by_params.setdefault(_canonical(c.params), {"params": c.params, "a": None, "b": None})
            entry[side] = {"status": c.status, "metrics": dict(c.metrics)}
    configs = []
    for entry in by_params.values():
        ea, eb = entry["a"], entry["b"]
        if ea is None or eb is None:
            differs = ["*"]
        else:
            differs = ["status"] if ea["status"] != eb["status"] else []
            for name in dict.fromkeys([*ea["metrics"], *eb["metrics"]]):
                if not (name in ea["metrics"] and name in eb["metrics"] and _same(ea["metrics"][name], eb["metrics"][name])):
                    differs.append(name)
        configs.append({**entry, "differs": differs})
    return json_safe(
        {"a": _side(a), "b": _side(b), "options": _option_rows(a, b, order), "summary": summary, "configs": configs}
    )


def _text(value: Any) -> Any:
    if value is None or isinstance(value, (int, float, str)):
        return value
    return json.dumps(value, separators=(",", ":"))


def comparison_tables(doc: dict[str, Any]) -> list[Table]:
    """The document of :func:`compare_runs` as three tables to print: options, summary, configurations
    (one row per matched configuration and metric)."""
    from decaylab.lab.experiments.base import Table

    a, b = doc["a"]["run_id"], doc["b"]["run_id"]
    mark = lambda differs: DIFFERS if differs else ""  # noqa: E731
    options = Table(
        ["option", a, b, ""], [[r["name"], r["a"], r["b"], mark(r["differs"])] for r in doc["options"]], title="options"
    )
    summary = Table(
        ["summary", a, b, ""], [[r["key"], _text(r["a"]), _text(r["b"]), mark(r["differs"])] for r in doc["summary"]],
        title="summary",
    )
    params = list(dict.fromkeys(k for c in doc["configs"] for k in c["params"]))
    rows = []
    for c in doc["configs"]:
        keys = [_text(c["params"].get(p)) for p in params]
        sides = [c["a"], c["b"]]
        names = list(dict.fromkeys(n for s in sides if s for n in ("status", *s["metrics"])))
        for name in names:
            values = [None if s is None else (s["status"] if name == "status" else s["metrics"].get(name)) for s in sides]
            rows.append([*keys, name, *map(_text, values), mark("*" in c["differs"] or name in c["differs"])])
    configs = Table([*params, "metric", a, b, ""], rows, title="configurations (matched by their parameters)")
    return [options, summary, configs]
