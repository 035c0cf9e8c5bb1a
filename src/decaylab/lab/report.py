"""HTML reports of stored runs: one self-contained page per run, a comparison of several, an index.

A page works offline: its figures are PNGs embedded as ``data:`` URIs, its style and script are inline,
and the λ slider's one library, plotly.js, is inlined from the installed ``plotly`` package
(:func:`plotly.offline.get_plotlyjs`), never fetched. A run's page shows, from the store alone:

* its status, the experiment's claim (its description) and verdict (the ``claims``/``claim``/``verdict``
  entries of :meth:`~decaylab.lab.experiments.base.Experiment.summarize`), the rest of the summary;
* the table (:meth:`~decaylab.lab.experiments.base.Experiment.table`; past ``MAX_TABLE_ROWS`` rows its
  first and last ``TABLE_EDGE_ROWS``, as on the terminal);
* the conventions behind the numbers: the title line the experiment prints over its table, and the
  summary's ``convention``/``conventions`` entries;
* the figures: the PNGs of the run directory when they are there, else drawn afresh into a temporary
  directory (:func:`decaylab.lab.plots.figures`);
* for a run with a λ grid, the slider (:mod:`decaylab.lab.report_slider`);
* the environment it ran in and the command that reproduces it.

Everything taken from the store or the file system (run ids, option values, file names, error texts) is
escaped (:func:`html.escape`); JSON inside ``<script>`` has ``<``, ``>`` and ``&`` written as ``\\u003c``…,
so no value can close the script. Bad input raises :class:`~decaylab.validation.InvalidParameterError`.
"""

from __future__ import annotations

import base64
import html
import json
import re
import shlex
import tempfile
import time
import warnings
from collections.abc import Iterable, Sequence
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from decaylab.lab.outputs import MAX_TABLE_ROWS, TABLE_EDGE_ROWS, format_cell
from decaylab.lab.store import RunRecord, Store
from decaylab.results import json_safe
from decaylab.validation import parameter_error

__all__ = [
    "comparison_page",
    "default_out",
    "index_page",
    "reproduce_command",
    "run_page",
    "write_report",
]

OWNER = "decaylab report"
SAFE_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # a run id usable as a directory name as it is


# -- small pieces ----------------------------------------------------------------------------------
def esc(value: Any) -> str:
    """``value`` as text, escaped for HTML content and attribute values (quotes included)."""
    return html.escape(str(value), quote=True)


def script_json(value: Any) -> str:
    """``value`` as JSON that is safe inside ``<script>``: NaN/inf as ``null``, ``<``, ``>``, ``&`` escaped."""
    text = json.dumps(json_safe(value), ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


@cache
def _asset(name: str) -> str:
    return (resources.files("decaylab.lab") / "report_assets" / name).read_text(encoding="utf-8")


@cache
def _plotly_js() -> str:
    """plotly.js from the ``plotly`` package, checked to hold nothing that would end its ``<script>``."""
    from plotly.offline import get_plotlyjs

    js = get_plotlyjs()
    if re.search(r"(?i)</script|<!--", js):  # never in plotly 5-7; escape rather than break the page
        js = re.sub(r"(?i)</script", r"<\\/script", js).replace("<!--", "<\\!--")
    return js


def _page(title: str, body: str, *, slider: bool) -> str:
    scripts = ""
    if slider:
        scripts = (f'<script id="plotly-js">{_plotly_js()}</script>\n'
                   f'<script id="decaylab-slider">{_asset("slider.js")}</script>\n')
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        # nothing on this page may be fetched: a browser that honours the policy refuses any request
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; "
        "style-src 'unsafe-inline'; script-src 'unsafe-inline'; font-src data:\">\n"
        f"<title>{esc(title)}</title>\n<style>{_asset('report.css')}</style>\n</head>\n<body>\n{body}\n{scripts}</body>\n</html>\n"
    )


def _when(seconds: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds)) if seconds else "–"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# -- what a page reads -----------------------------------------------------------------------------
def _load(store: Store, run_id: str) -> tuple[RunRecord, Any, dict[str, Any]]:
    """The run (curves read only when its table needs them), its experiment and its stored options."""
    from decaylab.lab.experiments import get_experiment

    record = store.get_run(run_id, curves=False)
    if record is None:
        raise parameter_error("RUN_ID", OWNER, "the id of a run in the store", run_id)
    exp = get_experiment(record.experiment)
    if getattr(exp, "table_reads_curves", True):
        record = store.get_run(run_id) or record
    opts = {}
    for o in exp.options:
        opts[o.name] = record.options[o.name] if o.name in record.options else o.parse(o.default, o.flag, exp.name)
    return record, exp, opts


def reproduce_command(record: RunRecord, exp: Any) -> str:
    """The command that trains ``record`` again: ``decaylab run NAME --opt TEXT ...`` (``decaylab sweep
    FILE.py:FUNCTION ...`` for a sweep), every option spelled out from the text it was given as (stored
    with the run), so that a later change of a default does not change what it trains."""
    raw = record.raw_options
    words = ["decaylab", "sweep", str(raw.get("target", ""))] if exp.name == "sweep" else ["decaylab", "run", exp.name]
    for o in exp.options:
        if exp.name == "sweep" and o.name == "target":
            continue
        text = raw.get(o.name)
        if text is None:  # not stored as text (an older run): the parsed value
            value = record.options.get(o.name)
            if value is None:
                continue
            text = ",".join(map(repr, value)) if isinstance(value, list) else str(value)
        text = str(text)
        if text.lower() in ("true", "false") and o.default.lower() in ("true", "false"):  # sweep's switches
            if text.lower() == "true":
                words.append(o.flag)
            continue
        if text == "" and o.default == "":
            continue
        words += [o.flag, text]
    return shlex.join(words)


def _run_dir(store: Store, record: RunRecord) -> Path | None:
    """Where the run's figures went: ``--out`` of its command, else ``runs/RUN_ID`` (both as given, and
    beside the store); the first that is a directory, else ``None``."""
    candidates: list[Path] = []
    try:
        words = shlex.split(record.command)
    except ValueError:
        words = []
    for i, word in enumerate(words):
        if word == "--out" and i + 1 < len(words):
            candidates.append(Path(words[i + 1]))
        elif word.startswith("--out="):
            candidates.append(Path(word.split("=", 1)[1]))
    if SAFE_RUN_ID.fullmatch(record.run_id):
        candidates.append(Path("runs") / record.run_id)
    for path in list(candidates):
        if not path.is_absolute():
            candidates.append(store.path.parent / path)
    return next((p for p in candidates if p.is_dir()), None)


def _figure_files(store: Store, record: RunRecord, exp: Any, opts: dict[str, Any]) -> tuple[list[tuple[str, bytes]], str]:
    """The run's figures as ``(file name, PNG bytes)`` and a note saying where they come from."""
    folder = _run_dir(store, record)
    if folder is not None:
        found = sorted(folder.glob("*.png"))
        if found:
            return [(p.name, p.read_bytes()) for p in found], f"from {folder}"
    if not record.configs:
        return [], "no configurations stored"
    from decaylab.lab.plots import figures

    full = store.get_run(record.run_id) if not any(c.curves for c in record.configs) else record
    assert full is not None
    with tempfile.TemporaryDirectory(prefix="decaylab-report-") as tmp:
        paths = figures(exp, full.configs, opts, Path(tmp))
        pngs = [(p.name, p.read_bytes()) for p in paths if p.suffix.lower() == ".png" and p.is_file()]
    return pngs, "drawn from the store (the run directory has no figures)"


# -- sections --------------------------------------------------------------------------------------
def _num_class(numeric: bool) -> str:
    return ' class="num"' if numeric else ""


def _table_html(table: Any, more: str) -> str:
    rows = table.rows
    numeric = [all(_is_number(r[i]) or r[i] is None for r in rows) for i in range(len(table.columns))]
    head = "".join(f"<th{_num_class(n)}>{esc(c)}</th>" for c, n in zip(table.columns, numeric, strict=True))
    left_out = 0
    shown: list[list[Any] | None] = list(rows)
    if len(rows) > MAX_TABLE_ROWS:
        left_out = len(rows) - 2 * TABLE_EDGE_ROWS
        shown = list(rows[:TABLE_EDGE_ROWS]) + [None] + list(rows[-TABLE_EDGE_ROWS:])
    body = []
    for row in shown:
        if row is None:
            body.append(f'<tr class="gap"><td colspan="{len(table.columns)}">… {left_out} rows …</td></tr>')
            continue
        cells = "".join(f"<td{_num_class(n)}>{esc(format_cell(v))}</td>" for v, n in zip(row, numeric, strict=True))
        body.append(f"<tr>{cells}</tr>")
    out = [f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>']
    if left_out:
        out.append(f'<p class="note">{left_out} of {len(rows)} rows left out; <code>{esc(more)}</code> prints them all.</p>')
    if table.notes:
        out.append('<p class="note">did not finish:</p><ul class="note">' + "".join(f"<li>{esc(n)}</li>" for n in table.notes) + "</ul>")
    return "\n".join(out)


def _verdicts(summary: dict[str, Any]) -> list[tuple[str, Any]]:
    """``(name, holds)`` of every claim in the summary: ``claims`` (name → bool/None), ``claim``
    (``statement``, ``holds``), and ``holds`` / ``claim_holds`` at the top (``None``: not decided);
    ``verdict`` texts are shown as they are."""
    found: list[tuple[str, Any]] = []
    claims = summary.get("claims")
    if isinstance(claims, dict):
        found += [(str(k).replace("_", " "), v) for k, v in claims.items() if v is None or isinstance(v, bool)]
    claim = summary.get("claim")
    if isinstance(claim, dict) and "holds" in claim:
        found.append((str(claim.get("statement", "claim")), claim["holds"]))
    for key in ("holds", "claim_holds"):
        if key in summary and (summary[key] is None or isinstance(summary[key], bool)):
            found.append(("the experiment's claim", summary[key]))
    return found


def _verdict_html(exp: Any, summary: dict[str, Any]) -> str:
    parts = [f"<p>{esc(exp.summary)}</p>"]
    if exp.description:
        parts.append(f"<details><summary>the experiment's claim and figures, in full</summary><p>{esc(exp.description)}</p></details>")
    items = []
    for name, holds in _verdicts(summary):
        mark = ('<span class="holds">✓ holds</span>' if holds else '<span class="fails">✗ does not hold</span>'
                if holds is False else '<span class="open">– not decided</span>')
        items.append(f"<li>{mark}: {esc(name)}</li>")
    texts = [summary[k] for k in ("verdict",) if isinstance(summary.get(k), str)]
    items += [f"<li>{esc(t)}</li>" for t in texts]
    if items:
        verdict = _overall(summary)
        parts.append(f'<h3>Verdict: {verdict}</h3><ul class="verdict">{"".join(items)}</ul>')
    else:
        parts.append('<p class="note">This experiment states no pass/fail verdict: its claim is read from the table '
                     "and the figures below.</p>")
    best = summary.get("best")
    if isinstance(best, dict):
        parts.append(f"<h3>Best setting</h3>{_value_html(best)}")
    return "\n".join(parts)


def _overall(summary: dict[str, Any]) -> str:
    values = [h for _, h in _verdicts(summary)]
    if values and all(v is True for v in values):
        return '<span class="holds">the claim holds</span>'
    if any(v is False for v in values):
        return '<span class="fails">the claim does not hold</span>'
    return '<span class="open">see below</span>' if not values else '<span class="open">not decided</span>'


def _value_html(value: Any, depth: int = 0) -> str:
    """A summary value: a dict as a list of names and values, a list of dicts as a table, else text."""
    if isinstance(value, dict) and value:
        if depth > 3:
            return f"<code>{esc(json.dumps(json_safe(value), ensure_ascii=False)[:400])}</code>"
        rows = "".join(f"<dt>{esc(k)}</dt><dd>{_value_html(v, depth + 1)}</dd>" for k, v in value.items())
        return f'<dl class="kv">{rows}</dl>'
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        columns = list(dict.fromkeys(k for v in value for k in v))
        if all(not isinstance(v.get(c), (dict, list)) for v in value for c in columns):
            from decaylab.lab.experiments.base import Table

            return _table_html(Table(columns, [[v.get(c) for c in columns] for v in value]), "decaylab runs show RUN_ID --json")
    if isinstance(value, list):
        text = ", ".join(format_cell(v) for v in value[:50]) + (f", … ({len(value)} values)" if len(value) > 50 else "")
        return f"<span class=\"num\">[{esc(text)}]</span>"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return f"<span class=\"num\">{esc(format_cell(value))}</span>" if _is_number(value) else esc(format_cell(value))


def _conventions_html(table: Any, summary: dict[str, Any]) -> str:
    items = []
    if table.title:
        items.append(f"<li>{esc(table.title)}</li>")
    for key in ("convention", "conventions", "averaging"):
        value = summary.get(key)
        if isinstance(value, str):
            items.append(f"<li>{esc(value)}</li>")
        elif isinstance(value, dict):
            items += [f"<li><b>{esc(k)}</b>: {esc(v)}</li>" for k, v in value.items() if isinstance(v, str)]
    items.append("<li>curves: one value per epoch, after the epoch (epoch counts from 1); a table's numbers are "
                 "final values; a diverged configuration has none</li>")
    return f"<ul>{''.join(items)}</ul>"


def _environment_html(record: RunRecord) -> str:
    from decaylab.lab.outputs import environment_lines

    lines = "".join(f"<li>{esc(line)}</li>" for line in environment_lines(record))
    env = record.environment or {}
    detail = ""
    if env:
        rows = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in env.items() if not isinstance(v, (list, dict)))
        detail = f'<details><summary>every recorded field</summary><dl class="kv">{rows}</dl></details>'
    return f"<ul>{lines}</ul>{detail}"


def _figures_html(pngs: list[tuple[str, bytes]], where: str) -> str:
    if not pngs:
        return f'<p class="note">No figures ({esc(where)}).</p>'
    out = [f'<p class="note">Figures {esc(where)}.</p>']
    for name, data in pngs:
        src = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
        size = _png_size(data)
        dims = f' width="{size[0]}" height="{size[1]}"' if size else ""
        out.append(f'<figure><img src="{src}" alt="{esc(name)}"{dims}><figcaption>{esc(name)}</figcaption></figure>')
    return "\n".join(out)


def _png_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from a PNG's IHDR chunk (bytes 16–24), ``None`` if ``data`` is not a PNG."""
    if data[:8] != b"\x89PNG\r\n\x1a\n" or len(data) < 24:
        return None
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def _slider_html(store: Store, record: RunRecord, key: str) -> str:
    from decaylab.lab.report_slider import slider_data

    def read(i: int) -> dict[str, list[Any]]:
        curves = record.configs[i].curves
        return curves if curves else (store.get_curves(record.run_id, i) or {})

    data = slider_data(record.configs, read) if record.configs else None
    if data is None or not data["entries"]:
        return ""
    n = len(data["entries"])
    start = n // 2  # the slider opens on the middle of the grid
    norm = f'<div class="plot norm-plot" id="{key}-norm"></div>' if data["norm_curve"] else ""
    if data["norm_key"]:
        norm += f'<div class="plot overview-plot" id="{key}-overview"></div>'
    note = f'<p class="note">{esc(data["note"])}.</p>' if data["note"] else ""
    return (
        f'<h2>{esc(data["label"])} slider</h2>\n<div class="lambda-view" id="{key}">'
        f'<div class="controls"><label for="{key}-range">{esc(data["label"])}</label>'
        f'<input type="range" class="lambda-range" id="{key}-range" min="0" max="{n - 1}" step="1" value="{start}">'
        f'<span class="readout"></span></div>'
        f'<div class="plots"><div class="plot curves-plot" id="{key}-curves"></div>{norm}</div>{note}'
        f'<script type="application/json" class="lambda-data">{script_json(data)}</script></div>'
    )


def _run_body(store: Store, run_id: str, key: str, heading: str = "h1") -> tuple[str, bool]:
    """The sections of one run's page; ``key`` makes its element ids unique on a comparison page.
    Returns the HTML and whether it has a slider."""
    record, exp, opts = _load(store, run_id)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        summary = exp.summarize(record.configs, opts) if record.configs else {}
        table = exp.table(record.configs, opts)
    pngs, where = _figure_files(store, record, exp, opts)
    slider = _slider_html(store, record, key)
    counts = ", ".join(f"{n} {s}" for s, n in sorted(record.counts().items()))
    status = esc(record.status)
    rest = {k: v for k, v in summary.items() if k not in ("claims", "claim", "claim_holds", "verdict", "holds", "best", "convention", "conventions")}
    parts = [
        f"<{heading}>{esc(exp.name)} — run <code>{esc(record.run_id)}</code></{heading}>",
        f'<p class="sub">status <span class="status-{status}">{status}</span> ({esc(counts) or "no configurations"});'
        f" started {esc(_when(record.created))}, finished {esc(_when(record.finished))}; decaylab {esc(record.version)}</p>",
        f"<h2>Claim and verdict</h2>\n{_verdict_html(exp, summary)}",
        f"<h2>Table</h2>\n{_table_html(table, f'decaylab runs show {record.run_id} --json')}",
        f"<h2>Conventions behind the numbers</h2>\n{_conventions_html(table, summary)}",
        slider,
        f"<h2>Figures</h2>\n{_figures_html(pngs, where)}",
    ]
    if rest:
        parts.append(f"<h2>Summary</h2><details><summary>the summary's numbers</summary>{_value_html(rest)}</details>")
    parts += [
        f"<h2>Reproduce</h2>\n<pre>{esc(reproduce_command(record, exp))}</pre>"
        f'<p class="note">as typed: <code>{esc(record.command)}</code></p>',
        f"<h2>Environment</h2>\n{_environment_html(record)}",
    ]
    return "\n".join(p for p in parts if p), bool(slider)


# -- pages -----------------------------------------------------------------------------------------
def run_page(store: Store, run_id: str) -> str:
    """The full HTML page of run ``run_id`` of ``store`` (self-contained; see the module's docstring).

    Raises:
        InvalidParameterError: no run ``run_id`` in the store, or an experiment this decaylab does not know.
    """
    body, slider = _run_body(store, run_id, "run")
    return _page(f"decaylab report {run_id}", body, slider=slider)


def comparison_page(store: Store, run_ids: Sequence[str]) -> str:
    """One page comparing ``run_ids``: their options side by side (rows that differ marked), then each
    run's own page, one after the other.

    Raises:
        InvalidParameterError: fewer than two ids, an id given twice, or one not in the store.
    """
    ids = list(run_ids)
    if len(ids) < 2 or len(set(ids)) != len(ids):
        raise parameter_error("RUN_ID", OWNER, "two or more distinct run ids", " ".join(ids))
    records = []
    for run_id in ids:
        record = store.get_run(run_id, curves=False)
        if record is None:
            raise parameter_error("RUN_ID", OWNER, "the id of a run in the store", run_id)
        records.append(record)
    names = list(dict.fromkeys(k for r in records for k in ("experiment", "status", *r.raw_options)))
    head = "".join(f"<th>{esc(r.run_id)}</th>" for r in records)
    rows = []
    for name in names:
        values = [r.experiment if name == "experiment" else r.status if name == "status" else r.raw_options.get(name, "–")
                  for r in records]
        differs = ' class="differs"' if len({str(v) for v in values}) > 1 else ""
        rows.append(f"<tr{differs}><th>{esc(name)}</th>" + "".join(f"<td>{esc(v)}</td>" for v in values) + "</tr>")
    sections, slider = [], False
    for i, run_id in enumerate(ids):
        body, has = _run_body(store, run_id, f"run{i}", heading="h2")
        slider = slider or has
        sections.append(f'<section class="run-section" id="section-{i}">{body}</section>')
    links = " · ".join(f'<a href="#section-{i}">{esc(r)}</a>' for i, r in enumerate(ids))
    body = (
        f"<h1>decaylab: {len(ids)} runs compared</h1>\n<p class=\"sub\">{links}</p>\n"
        '<h2>Options</h2><p class="note">Rows that differ between the runs are marked.</p>'
        f'<div class="scroll"><table><thead><tr><th>option</th>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>\n'
        + "\n".join(sections)
    )
    return _page("decaylab report: " + ", ".join(ids), body, slider=slider)


def index_page(store: Store, links: dict[str, str] | None = None) -> str:
    """A page listing every run of ``store``, newest first: id, experiment, status, configurations done,
    start, version and command. ``links`` maps run ids to (relative) paths of their report pages."""
    from decaylab.lab.outputs import runs_table

    records = store.list_runs()
    table = runs_table(records)
    rows = []
    for record, row in zip(records, table.rows, strict=True):
        href = (links or {}).get(record.run_id)
        run = f'<a href="{esc(href)}">{esc(record.run_id)}</a>' if href else esc(record.run_id)
        cells = [f"<td><code>{run}</code></td>"] + [f"<td>{esc(v)}</td>" for v in row[1:]] + [f"<td><code>{esc(record.command)}</code></td>"]
        rows.append(f"<tr>{''.join(cells)}</tr>")
    head = "".join(f"<th>{esc(c)}</th>" for c in [*table.columns, "command"])
    body = (
        f"<h1>decaylab runs</h1>\n<p class=\"sub\">{len(records)} run{'s' if len(records) != 1 else ''} in "
        f"<code>{esc(store.path)}</code>; <code>decaylab report RUN_ID</code> writes a run's page.</p>\n"
        f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>'
    )
    return _page("decaylab runs", body, slider=False)


def default_out(store: Store, run_ids: Sequence[str], all_runs: bool = False) -> Path:
    """Where ``decaylab report`` writes without ``--out``: one run's ``report.html`` in its run directory
    (``runs/RUN_ID``) when that exists, else ``report-RUN_ID.html`` in the current directory;
    ``compare-….html`` for several runs; ``decaylab-runs.html`` for ``--all``."""
    if all_runs:
        return Path("decaylab-runs.html")
    safe = [r if SAFE_RUN_ID.fullmatch(r) else re.sub(r"[^A-Za-z0-9._-]", "_", r).lstrip(".") or "run" for r in run_ids]
    if len(run_ids) == 1:
        record = store.get_run(run_ids[0], curves=False)
        folder = _run_dir(store, record) if record is not None else None
        if folder is not None and SAFE_RUN_ID.fullmatch(run_ids[0]):
            return folder / "report.html"
        return Path(f"report-{safe[0]}.html")
    name = "-".join(safe) if len(safe) <= 3 else f"{safe[0]}-and-{len(safe) - 1}-more"
    return Path(f"compare-{name}.html")


def _report_links(store: Store, index: Path) -> dict[str, str]:
    """Run id → path, relative to ``index``'s directory, of the run's ``report.html`` where one was written."""
    import os

    links = {}
    for record in store.list_runs():
        folder = _run_dir(store, record)
        if folder is not None and (folder / "report.html").is_file():
            links[record.run_id] = Path(os.path.relpath((folder / "report.html").resolve(), index.resolve().parent)).as_posix()
    return links


def write_report(store: Store, run_ids: Iterable[str] = (), out: str | Path | None = None, *, all_runs: bool = False) -> Path:
    """Write the page of ``run_ids`` (one: :func:`run_page`; several: :func:`comparison_page`) or, with
    ``all_runs``, the index of the store (:func:`index_page`) to ``out`` (default :func:`default_out`),
    atomically; return the path written.

    Raises:
        InvalidParameterError: no ids (or ids together with ``all_runs``), an unknown id.
        OSError: the file cannot be written.
    """
    from decaylab.lab.atomic import atomic_write

    ids = list(run_ids)
    if all_runs == bool(ids):
        raise parameter_error("RUN_ID", OWNER, "one or more run ids, or --all alone", " ".join(ids) or "nothing")
    path = Path(out) if out is not None else default_out(store, ids, all_runs)
    if all_runs:
        text = index_page(store, _report_links(store, path))
    elif len(ids) == 1:
        text = run_page(store, ids[0])
    else:
        text = comparison_page(store, ids)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as f:
        f.write(text.encode("utf-8"))
    return path
