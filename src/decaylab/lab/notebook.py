"""The notebook API: ``decaylab.lab.run``, ``decaylab.lab.runs``, ``decaylab.lab.load`` and :class:`Run`.

::

    import decaylab.lab as lab
    r = lab.run("d2l-linear", lambd=[0, 3], epochs=50, seed=0)   # what `decaylab run d2l-linear --lambd 0,3 ...` does
    r.table          # the table the terminal shows, as a pandas DataFrame
    r.verdict        # the summary's verdict (one line)
    r.figures        # the PNGs of the run directory
    r                # in Jupyter: the run's HTML page
    lab.runs()       # the store as a DataFrame
    lab.load(r.id)   # the same run, read back

:func:`run` goes the way of ``decaylab run``: each option's Python value becomes the text a user would
type (``[0, 3]`` → ``"0,3"``, ``1e-3`` → ``"0.001"``), parsed and checked by the experiment's own option
parsers and :meth:`~decaylab.lab.experiments.base.Experiment.validate`, trained by
:func:`decaylab.lab.runner.execute` into the same store (``$DECAYLAB_STORE`` or ``./decaylab.db``), and
its ``results.json`` and figures are written to ``runs/RUN_ID`` (or ``out``). Bad input raises
:class:`~decaylab.validation.InvalidParameterError` with the message the CLI prints after
``decaylab: error:``. The figures are drawn in this process (matplotlib's Agg backend, the lab's style
inside an ``rc_context``; the notebook's own backend is switched back afterwards).
"""

from __future__ import annotations

import html
import numbers
import shlex
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from decaylab.lab.workspace import UsageError, check_out, make_progress, open_store, shown_options, writable_dir
from decaylab.validation import InvalidParameterError, check_choice, check_int, parameter_error

if TYPE_CHECKING:
    import pandas as pd

    from decaylab.lab.experiments.base import Experiment
    from decaylab.lab.store import RunRecord, Store
    from decaylab.results import ConfigResult

__all__ = ["Run", "load", "run", "runs"]

OWNER = "decaylab.lab.run"


# -- the workspace's helpers, their UsageError raised as InvalidParameterError ---------------------------
@contextmanager
def _as_parameter_errors() -> Iterator[None]:
    try:
        yield
    except UsageError as exc:
        raise InvalidParameterError(str(exc)) from None


def _open(path: str | Path | None, owner: str, *, create: bool, readonly: bool) -> Store:
    with _as_parameter_errors():
        store: Store = open_store(None if path is None else str(path), owner, create=create, readonly=readonly)
    return store


# -- options: Python values to the text the CLI parses ----------------------------------------------
def _scalar_text(value: Any, name: str, owner: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        return repr(float(value))
    raise parameter_error(name, owner, "a number, a string, or a list of them", value)


def option_text(value: Any, name: str, owner: str) -> str:
    """The text ``decaylab run`` would be given for ``value``: a string as it is (grid syntax such as
    ``"0:10:64"`` included), a number as Python writes it, a list, tuple or range as ``a,b,c``.

    Raises:
        InvalidParameterError: a value of another type (a dict, a nested list, ``None``).
    """
    if isinstance(value, (list, tuple, range)):
        if not len(value):
            raise parameter_error(name, owner, "a non-empty list", list(value))
        return ",".join(_scalar_text(v, name, owner) for v in value)
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):  # a numpy array or scalar
        return option_text(value.tolist(), name, owner)
    return _scalar_text(value, name, owner)


def parse_options(exp: Experiment, options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """Parse ``options`` (Python values) exactly as ``decaylab run`` parses its flags: every option from its
    text (given, or the default) with the experiment's parser, then :meth:`Experiment.validate`.
    Grid notes (duplicates merged) are issued as ``warnings`` of :class:`~decaylab.lab.grid.GridNote`.

    Returns ``(opts, raw)``: parsed values and the texts they came from (stored with the run).
    """
    known = {o.name: o for o in exp.options}
    for name in options:
        if name not in known:
            allowed = "the name of one of its options: " + ", ".join(known) + " (or store, out, quiet, engine, chunk, backend, address)"
            raise parameter_error(name, f"{OWNER}({exp.name!r})", allowed, options[name])
    opts, raw = {}, {}
    for opt in exp.options:
        text = option_text(options[opt.name], opt.flag, exp.name) if opt.name in options else opt.default
        raw[opt.name] = text
        opts[opt.name] = opt.parse(text, opt.flag, exp.name)
    exp.validate(opts)
    return opts, raw


def _command(exp: Experiment, raw: dict[str, str], given: Sequence[str], extra: dict[str, Any]) -> str:
    """The ``decaylab run`` command line that does what this call does (stored with the run)."""
    argv = ["decaylab", "run", exp.name]
    for opt in exp.options:
        if opt.name in given:
            argv += [opt.flag, raw[opt.name]]
    for flag, value in extra.items():
        if value is not None:
            argv += [flag, str(value)]
    return shlex.join(argv)


# -- figures, drawn in this process without changing the notebook's matplotlib -------------------------
def draw_figures(exp: Experiment, results: Sequence[ConfigResult], opts: dict[str, Any], out: Path) -> list[Path]:
    """:func:`decaylab.lab.plots.figures` into ``out``, inside ``matplotlib.rc_context`` (the lab's style
    does not leak into the notebook); pyplot's backend, if pyplot was loaded with another one, is
    switched back afterwards (switching closes pyplot's open figures, as matplotlib always does)."""
    from decaylab.lab.plots import figures

    previous = None
    if "matplotlib.pyplot" in sys.modules:
        import matplotlib

        previous = matplotlib.get_backend()
    import matplotlib

    with matplotlib.rc_context():
        paths = figures(exp, results, opts, out)
    if previous is not None and previous.lower() != "agg":
        import matplotlib.pyplot as plt

        plt.switch_backend(previous)
    return [Path(p) for p in paths]


def _expected_figures(exp: Experiment, opts: dict[str, Any], out: Path) -> list[Path] | None:
    """The figure files the experiment's plot module names for ``opts`` (None if it does not say)."""
    import importlib

    module = importlib.import_module(f"decaylab.lab.plots.{exp.name.replace('-', '_')}")
    names = getattr(module, "figure_names", None)
    return None if names is None else [out / n for n in names(opts)]


# -- the API --------------------------------------------------------------------------------------
def run(
    name: str,
    *,
    store: str | Path | None = None,
    out: str | Path | None = None,
    quiet: bool = True,
    engine: str | None = None,
    chunk: int | None = None,
    backend: str = "local",
    address: str | None = None,
    **options: Any,
) -> Run:
    """Run experiment ``name`` as ``decaylab run NAME`` does and return the stored :class:`Run`.

    ``options`` are the experiment's options under their Python names (``n_train``, not ``--n-train``),
    as numbers, strings (grid syntax too: ``lambd="log:1e-4:1:32"``) or lists; the rest as the CLI's
    ``--store``, ``--out``, ``--engine``, ``--chunk``, ``--backend``, ``--address``. ``quiet=False`` shows
    the progress bar. The run is stored in ``store`` (default ``$DECAYLAB_STORE`` or ``./decaylab.db``);
    ``results.json`` and the figures go to ``out`` (default ``runs/RUN_ID``).

    Raises:
        InvalidParameterError: bad input, with the CLI's one-line message (nothing is stored).
        decaylab.lab.runner.RunFailed: the run failed once stored (it is marked ``failed``).
        decaylab.lab.runner.RunInterrupted: Ctrl-C (the run is marked ``interrupted``; resumable).
        OSError: the run directory could not be written (the run itself is stored).
    """
    from decaylab.lab.experiments import get_experiment
    from decaylab.lab.outputs import CURVES_INLINE_MAX, run_document, write_json
    from decaylab.lab.runner import RunRequest, execute, new_run_id

    if name in ("sweep",):
        raise parameter_error("name", OWNER, "an experiment of `decaylab run --list` (for your own module: decaylab.sweep(...))", name)
    exp = get_experiment(name)
    opts, raw = parse_options(exp, options)
    if chunk is not None:
        chunk = check_int(chunk, "--chunk", "decaylab run", low=1)
    backend = check_choice(backend, "--backend", "decaylab run", ("local", "ray"))
    if engine is not None:
        check_choice(engine, "--engine", "decaylab run", exp.engines)
    if address and backend != "ray":
        raise parameter_error("--address", "decaylab run", "given with --backend ray", address)
    with _as_parameter_errors():
        check_out(None if out is None else str(out))
    command = _command(exp, raw, list(options), {"--engine": engine, "--chunk": chunk, "--backend": None if backend == "local" else backend, "--address": address})
    handle = _open(store, "decaylab", create=True, readonly=False)  # the owner `decaylab run` names
    store_path = handle.path
    run_id = new_run_id()
    try:
        record = execute(handle, RunRequest(exp, opts, raw, command, engine, chunk, backend, address),
                         progress=make_progress(not quiet), run_id=run_id)
    finally:
        handle.close()
    with _as_parameter_errors():
        directory = writable_dir(Path(out) if out is not None else Path("runs") / run_id, "--out")
    summary = exp.summarize(record.configs, opts)
    # results.json as the CLI writes it: a run of more than CURVES_INLINE_MAX configurations without curves
    write_json(run_document(record, summary, curves=record.n_configs <= CURVES_INLINE_MAX), directory / "results.json")
    result = Run(store_path, record, exp, opts, directory, summary)
    result._figures = draw_figures(exp, record.configs, opts, directory)
    return result


def load(run_id: str, store: str | Path | None = None, out: str | Path | None = None) -> Run:
    """The stored run ``run_id`` (its figures are looked for in ``out``, default ``runs/RUN_ID``, and
    drawn there when missing).

    Raises:
        InvalidParameterError: no such run, or a store that cannot be read (the CLI's messages).
    """
    handle = _open(store, "decaylab.lab.load", create=False, readonly=True)
    try:
        record = handle.get_run(run_id)
    finally:
        handle.close()
    if record is None:
        raise parameter_error("run_id", "decaylab.lab.load", "the id of a run in the store", run_id)
    exp, opts = shown_options(record)
    return Run(handle.path, record, exp, opts, Path(out) if out is not None else Path("runs") / run_id)


def runs(store: str | Path | None = None) -> pd.DataFrame:
    """The store's runs, newest first, one row each: ``id``, ``experiment``, ``status``, ``created``,
    ``done``/``configs`` (configurations finished / all), ``options`` (the non-default options, as in
    ``decaylab runs list``), ``version``, ``command`` (:func:`decaylab.lab.frames.runs_frame`).

    A store that does not exist yet is an empty frame.
    """
    from decaylab.lab.frames import runs_frame
    from decaylab.lab.outputs import main_options
    from decaylab.lab.store import default_store_path

    path = Path(store) if store is not None else default_store_path()
    if not path.exists():
        return runs_frame([], [])
    handle = _open(path, "decaylab.lab.runs", create=False, readonly=True)
    try:
        records = handle.list_runs()
    finally:
        handle.close()
    return runs_frame(records, [main_options(r) for r in records])


class Run:
    """A stored run: what ``decaylab runs show`` prints, as Python values.

    ``id``, ``experiment``, ``status``, ``options`` (parsed), ``results`` (one
    :class:`~decaylab.results.ConfigResult` per configuration), ``table`` (a DataFrame of the table the
    terminal shows), ``summary`` (the experiment's ``summarize``), ``verdict`` (its one-line verdict, or
    ``None`` for an experiment whose summary has none), ``figures`` (PNG paths), ``curves(idx)`` and
    ``curves_frame()``; ``repr`` is the table as text, ``_repr_html_`` the run's HTML page.
    """

    def __init__(
        self,
        store: Path,
        record: RunRecord,
        experiment: Experiment,
        options: dict[str, Any],
        out: Path,
        summary: dict[str, Any] | None = None,
    ) -> None:
        self.store = Path(store)
        self._record = record
        self._experiment = experiment
        self.options = options
        self.out = Path(out)
        self._summary = summary
        self._figures: list[Path] | None = None

    # -- what it is
    @property
    def id(self) -> str:
        return self._record.run_id

    @property
    def experiment(self) -> str:
        return self._record.experiment

    @property
    def status(self) -> str:
        return self._record.status

    @property
    def command(self) -> str:
        return self._record.command

    @property
    def results(self) -> list[ConfigResult]:
        return self._record.configs

    # -- what it shows
    @property
    def table(self) -> pd.DataFrame:
        from decaylab.lab.frames import table_frame

        return table_frame(self._experiment.table(self.results, self.options))

    @property
    def summary(self) -> dict[str, Any]:
        if self._summary is None:
            self._summary = self._experiment.summarize(self.results, self.options)
        return self._summary

    @property
    def verdict(self) -> str | None:
        """The summary's ``verdict`` on one line (a list of lines joined with "; "); ``None`` without one."""
        verdict = self.summary.get("verdict")
        if verdict is None:
            return None
        lines = verdict if isinstance(verdict, (list, tuple)) else [verdict]
        return "; ".join(" ".join(str(line).split()) for line in lines)

    @property
    def figures(self) -> list[Path]:
        """The run's figures in :attr:`out`, drawn there first if any is missing."""
        if self._figures is not None and all(p.exists() for p in self._figures):
            return list(self._figures)
        expected = _expected_figures(self._experiment, self.options, self.out)
        if expected and all(p.exists() for p in expected):
            self._figures = expected
        else:
            self.out.mkdir(parents=True, exist_ok=True)
            self._figures = draw_figures(self._experiment, self.results, self.options, self.out)
        return list(self._figures)

    def curves(self, idx: int) -> pd.DataFrame:
        """Configuration ``idx``'s curves, one row per point (``epoch``, ``train_loss``, ... as columns)."""
        from decaylab.lab.frames import curves_frame

        if not isinstance(idx, numbers.Integral) or not 0 <= idx < len(self.results):
            raise parameter_error("idx", "Run.curves", f"an int in [0, {len(self.results) - 1}]", idx)
        frame = curves_frame(self.results, [int(idx)])
        columns = list(frame.columns)
        return frame[columns[columns.index("point"):]].set_index("point")  # the curves, after idx and the parameters

    def curves_frame(self) -> pd.DataFrame:
        """Every configuration's curves as one long table: ``idx``, the parameters, ``point``, one column per curve."""
        from decaylab.lab.frames import curves_frame

        return curves_frame(self.results)

    # -- display
    def __repr__(self) -> str:
        head = f"Run {self.id}: {self.experiment}, {self.status}, {len(self.results)} configurations (store {self.store})"
        table = self.table
        lines = [head]
        if table.attrs.get("title"):
            lines.append(table.attrs["title"])
        lines.append(table.to_string(index=False))
        if self.verdict:
            lines.append(f"verdict: {self.verdict}")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        """The run's report page (:func:`decaylab.lab.report.run_page`) in an ``<iframe srcdoc>``: the page keeps
        its own styles, scripts and Content-Security-Policy, apart from the notebook's."""
        from decaylab.lab.report import run_page
        from decaylab.lab.store import Store

        with Store(self.store, create=False, readonly=True, owner="decaylab report") as store:
            page = run_page(store, self.id)
        return (f'<iframe title="decaylab run {html.escape(self.id)}" srcdoc="{html.escape(page, quote=True)}"'
                ' style="width: 100%; height: 900px; border: 0"></iframe>')

