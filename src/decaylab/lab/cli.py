"""The ``decaylab`` command: thin; it parses, calls the layers below, and prints.

    decaylab run --list
    decaylab run EXPERIMENT [options]        # e.g. decaylab run d2l-linear --lambd 0:10:64
    decaylab sweep FILE.py:FUNCTION [options]  # λ sweeps over your own nn.Module
    decaylab resume RUN_ID
    decaylab runs list [--json]
    decaylab runs show RUN_ID [--json [--curves]]
    decaylab runs delete RUN_ID... [--yes]
    decaylab runs export RUN_ID --csv FILE | --parquet FILE [--curves]
    decaylab runs compare RUN_A RUN_B [--json]
    decaylab audit FILE.py:FUNCTION [--json]   # findings about (model, optimizer[, scheduler]) with fixes
    decaylab report RUN_ID [RUN_ID ...] [--out FILE] | decaylab report --all   # offline HTML pages

Bad input is one line on stderr naming the option, the value and what is allowed, and exit code 2.
Exit codes: 0 success, 1 a run failed (or finished with failed configurations, or its outputs could not
be written), 2 bad input, 130 interrupted (Ctrl-C or SIGTERM).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn, Protocol, cast

from decaylab import __version__
from decaylab.lab.interrupts import signals_as_interrupt
from decaylab.lab.workspace import (
    UsageError,
    check_out,
    make_progress,
    open_store,
    shown_options,
    writable_dir,
)
from decaylab.validation import InvalidParameterError, check_int, one_line, parameter_error

__all__ = ["main"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
EXIT_FLUSH_FAILED = 120  # the output could not be written at exit (CPython's own code for this)


class _Parser(argparse.ArgumentParser):
    """argparse, but errors are one line (no usage block) and raised, so ``main`` decides the exit."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")


# -- parsers -------------------------------------------------------------------------------------
class _ArgumentContainer(Protocol):
    """An ``ArgumentParser`` or one of its argument groups: what ``add_argument`` is called on."""

    def add_argument(self, *name_or_flags: str, **kwargs: Any) -> argparse.Action: ...


def _store_options(parser: _ArgumentContainer) -> None:
    parser.add_argument(
        "--store", metavar="PATH", help="SQLite run store (default: $DECAYLAB_STORE or ./decaylab.db)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    parser.add_argument(
        "--curves",
        action="store_true",
        help="keep every configuration's curves in the JSON document even when the run has more than 256"
        " (by default a larger run's document leaves them out and says how to get them)",
    )


def _output_options(parser: _ArgumentContainer) -> None:
    _store_options(parser)
    parser.add_argument("--out", metavar="DIR", help="run directory for figures and results.json (default runs/RUN_ID)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar, no table, no verdict (results.json keeps the verdict)")
    parser.add_argument(
        "--no-figures", dest="figures", action="store_false",
        help="draw no figures (the store, results.json and the table as usual; decaylab report draws them from the"
        " store when asked): for scripted sweeps nobody looks at, it saves the figure worker's CPU time",
    )
    parser.add_argument("--chunk", metavar="N", help="configurations trained together (default: the engine's choice)")
    parser.add_argument("--backend", choices=("local", "ray"), default="local", help="where chunks run")
    parser.add_argument("--address", metavar="ADDR", help="Ray cluster address (default: start a local Ray)")


def _experiment_parser(name: str) -> tuple[Any, argparse.ArgumentParser]:
    from decaylab.lab.experiments import get_experiment

    exp = get_experiment(name)
    parser = _Parser(
        prog=f"decaylab run {exp.name}",
        description=f"{exp.summary}\n\n{exp.description}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    group = parser.add_argument_group(f"{exp.name} options (grids: 'a,b,c', 'start:stop:num', 'log:start:stop:num')")
    for opt in exp.options:
        group.add_argument(opt.flag, dest=opt.name, metavar=opt.metavar, help=f"{opt.help} (default: {opt.default})")
    common = parser.add_argument_group("run options")
    common.add_argument(
        "--engine",
        choices=exp.engines,
        help=f"how configurations are trained (default: {exp.engines[-1]})",
    )
    common.add_argument("--resume", metavar="RUN_ID", help="train only the unfinished configurations of RUN_ID")
    _output_options(common)
    return exp, parser


def _parse_options(exp: Any, ns: argparse.Namespace) -> tuple[dict[str, Any], dict[str, str], set[str]]:
    """Parse every experiment option from its text (given or default); return values, texts, given names."""
    import warnings

    from decaylab.lab.grid import GridNote

    opts, raw, given = {}, {}, set()
    with warnings.catch_warnings(record=True) as notes:
        warnings.simplefilter("always", GridNote)
        for opt in exp.options:
            text = getattr(ns, opt.name)
            if text is None:
                text = opt.default
            else:
                given.add(opt.name)
            raw[opt.name] = text
            opts[opt.name] = opt.parse(text, opt.flag, exp.name)
    exp.validate(opts)
    for note in notes:  # e.g. duplicated grid values merged; only for input that is accepted
        print(f"decaylab: note: {note.message}", file=sys.stderr)
    return opts, raw, given


# -- helpers -------------------------------------------------------------------------------------
def _print_json(doc: Any) -> None:
    from decaylab.lab.outputs import document_text

    sys.stdout.write(document_text(doc))


def _with_curves(record: Any, ns: argparse.Namespace) -> bool:
    """Whether the run's JSON document carries the curves: with ``--curves``, or for a small run."""
    from decaylab.lab.outputs import CURVES_INLINE_MAX

    return bool(ns.curves) or record.n_configs <= CURVES_INLINE_MAX


def _say_curves_left_out(record: Any) -> None:
    from decaylab.lab.outputs import curves_left_out_note

    print(f"decaylab: {curves_left_out_note(record)}", file=sys.stderr)


def _console() -> Any:
    from rich.console import Console

    # a pipe or a CI log gets wide lines rather than cells wrapped at 80 columns
    return Console(width=None if sys.stdout.isatty() else 160)


# -- commands ------------------------------------------------------------------------------------
def _cmd_list() -> int:
    from decaylab.lab.experiments import list_experiments

    exps = list_experiments()
    width = max(len(e.name) for e in exps)
    for exp in exps:
        print(f"{exp.name:<{width}}  {exp.summary}")
    return EXIT_OK


def _run(exp: Any, opts: dict[str, Any], raw: dict[str, str], ns: argparse.Namespace, resume: str | None) -> int:
    """Train (or resume) a run, then write its outputs; every way out is one exit code and, on error,
    one line on stderr naming the run:

    * Ctrl-C or SIGTERM, at any phase: the run (if it was stored by then) is ``interrupted``, exit 130;
    * an error once the run is stored (:class:`~decaylab.lab.runner.RunFailed`, or drawing/printing its
      results): the run is ``failed``, exit 1 (2 when the error is about an option's value; a
      :class:`~decaylab.lab.store.StoreError`, e.g. a full store disk, comes up as it is: its own line, exit 2);
    * the outputs cannot be written (``OSError``: a full disk, a read-only directory): the run stays
      as stored (its results are safe in the store), exit 1; no file is left half-written.
    """
    from decaylab.lab.outputs import (
        command_of,
        diverged_note,
        failed_note,
        render_table,
        run_document,
        verdict_lines,
        write_json,
    )
    from decaylab.lab.plots.worker import FigureWorker
    from decaylab.lab.runner import RunFailed, RunRequest, execute, new_run_id

    command_name = command_of(exp.name)  # the command the options were given to
    chunk = check_int(ns.chunk, "--chunk", command_name, low=1) if ns.chunk is not None else None
    if ns.address and ns.backend != "ray":
        raise UsageError(str(parameter_error("--address", command_name, "given with --backend ray", ns.address)))
    check_out(ns.out)
    store = open_store(ns.store, create=resume is None)
    store_path = store.path
    run_id = resume or new_run_id()
    command = shlex.join(["decaylab", *sys.argv[1:]]) if sys.argv else "decaylab"
    request = RunRequest(exp, opts, raw, command, getattr(ns, "engine", None), chunk, ns.backend, ns.address)
    show_progress = not ns.quiet and not ns.json and sys.stdout.isatty()
    # loads matplotlib and lays out the figures on the other core while this one trains
    figures: FigureWorker | _NoFigures = FigureWorker(exp.name, opts) if ns.figures else _NoFigures()
    record = None
    try:
        try:
            record = execute(store, request, resume=resume, progress=make_progress(show_progress), run_id=run_id)
        finally:
            store.close()
        out = writable_dir(Path(ns.out) if ns.out else Path("runs") / record.run_id, "--out")
        figures.submit(exp.name, record.configs, opts, out)  # drawn on the other core while this one writes
        curves = _with_curves(record, ns)
        summary = exp.summarize(record.configs, opts)
        doc = run_document(record, summary, curves=curves)
        lost: list[OSError] = []  # files that could not be written; the others still are
        try:
            written = [write_json(doc, out / "results.json")]
        except OSError as exc:
            written, lost = [], [exc]
        if not curves:
            _say_curves_left_out(record)
        if ns.json:
            _print_json(doc)
        elif not ns.quiet:
            _console().print(render_table(exp.table(record.configs, opts), f"decaylab runs show {record.run_id} --json",
                                          verdict_lines(summary)))
        try:
            written = figures.collect() + written
        except OSError as exc:
            lost.append(exc)
        if lost:
            raise lost[0]
    except KeyboardInterrupt:
        _ignore_signals()  # the command is ending: a second Ctrl-C must not cut the clean-up short
        figures.terminate()
        return _interrupted(store_path, run_id)
    except RunFailed as exc:
        print(f"decaylab: error: {exc}", file=sys.stderr)
        # an error about an option's value (InvalidParameterError) met while training: exit 2, as bad input
        return EXIT_USAGE if isinstance(exc.__cause__, InvalidParameterError) else EXIT_FAILED
    except (UsageError, InvalidParameterError):  # bad input, found before the run was stored
        raise
    except OSError as exc:
        if record is None:  # before the run was stored
            print(f"decaylab: error: {one_line(exc)} (no run was stored)", file=sys.stderr)
        else:
            print(
                f"decaylab: error: run {run_id} is {record.status} in {store_path}, but its outputs could not be"
                f" written: {one_line(exc)}",
                file=sys.stderr,
            )
        return EXIT_FAILED
    except Exception as exc:
        if _set_status(store_path, run_id, "failed"):
            print(f"decaylab: error: run {run_id} failed: {one_line(exc)}", file=sys.stderr)
        else:
            print(f"decaylab: error: {one_line(exc)} (no run was stored)", file=sys.stderr)
        return EXIT_FAILED
    finally:
        figures.close()
    assert record is not None
    if not ns.json and not ns.quiet:
        drawn = "" if ns.figures else " (no figures drawn: --no-figures)"
        print(f"run {record.run_id} ({record.status}) stored in {store_path}; wrote " + ", ".join(map(str, written)) + drawn)
    if note := diverged_note(record):  # a result, not a failure: the exit code stays 0
        print(f"decaylab: note: {note}", file=sys.stderr)
    if error := failed_note(record):
        print(f"decaylab: error: run {record.run_id}: {error}", file=sys.stderr)
    return EXIT_OK if record.status == "finished" else EXIT_FAILED


class _NoFigures:
    """Stands in for :class:`~decaylab.lab.plots.worker.FigureWorker` under ``--no-figures``: forks nothing,
    draws nothing, and its :meth:`collect` returns no paths."""

    def submit(self, experiment: str, results: Sequence[Any], opts: dict[str, Any], out: Path) -> None:
        """Nothing to draw."""

    def collect(self) -> list[Path]:
        """No figure was drawn: no paths."""
        return []

    def terminate(self) -> None:
        """No worker to stop."""

    def close(self) -> None:
        """No worker to stop."""


def _ignore_signals() -> None:
    import signal

    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            signal.signal(sig, signal.SIG_IGN)
        except ValueError:  # not the main thread
            pass


def _set_status(store_path: Path, run_id: str, status: str) -> bool:
    """Set the status of ``run_id`` if it is stored; return ``False`` only when the store says there is
    no such run. Never raises: it runs on the way out of an error (a store that cannot be read or
    written any more counts as holding the run)."""
    from decaylab.lab.store import Store

    try:
        with Store(store_path) as store:
            if store.get_run(run_id) is None:
                return False
            store.set_status(run_id, status)
    except Exception:
        pass
    return True


def _interrupted(store_path: Path, run_id: str) -> int:
    """After Ctrl-C or SIGTERM: mark ``run_id`` ``interrupted`` if it is stored, say so in one line, 130."""
    if _set_status(store_path, run_id, "interrupted"):
        print(
            f"decaylab: interrupted; finished configurations are stored (decaylab resume {run_id})", file=sys.stderr
        )
    else:
        print("decaylab: interrupted before the run was stored; nothing to resume", file=sys.stderr)
    return EXIT_INTERRUPTED


def _cmd_run(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: decaylab run --list | decaylab run EXPERIMENT [options] (decaylab run EXPERIMENT --help)")
        return EXIT_OK
    if argv[0] == "--list":
        return _cmd_list()
    exp, parser = _experiment_parser(argv[0])
    ns = parser.parse_args(argv[1:])
    opts, raw, given = _parse_options(exp, ns)
    if ns.resume:
        store = open_store(ns.store, create=False)
        try:
            record = store.get_run(ns.resume, curves=False)
        finally:
            store.close()
        if record is None or record.experiment != exp.name:
            raise UsageError(str(parameter_error("--resume", f"decaylab run {exp.name}", f"a {exp.name} run in the store", ns.resume)))
        for name in given:
            if raw[name] != record.raw_options.get(name):
                flag = "--" + name.replace("_", "-")
                raise UsageError(
                    str(parameter_error(flag, f"decaylab run {exp.name} --resume", f"the run's own value {record.raw_options.get(name)!r} (or left out)", raw[name]))
                )
        return _resume(record, ns)
    return _run(exp, opts, raw, ns, None)


def _stored_options(record: Any) -> tuple[Any, dict[str, Any]]:
    """A stored run's experiment and its options, parsed again from the text they were given as
    (``resume`` trains again, so its input files must still be there)."""
    import warnings

    from decaylab.lab.experiments import get_experiment
    from decaylab.lab.grid import GridNote

    exp = get_experiment(record.experiment)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GridNote)  # noted when the run was created
        return exp, {o.name: o.parse(record.raw_options[o.name], o.flag, exp.name) for o in exp.options}


def _resume(record: Any, ns: argparse.Namespace) -> int:
    """Train what ``record`` has left; a ``finished`` run is left as it is (exit 0), shown with ``--json``."""
    exp, opts = _stored_options(record)
    if record.status == "finished":
        if ns.json:
            from decaylab.lab.outputs import run_document

            _print_json(run_document(record, exp.summarize(record.configs, opts)))
        else:
            print(f"run {record.run_id} is already finished; nothing to train (decaylab runs show {record.run_id})")
        return EXIT_OK
    exp.check_resume(opts, record.options, record.run_id)
    # it trains on as it began, unless told otherwise: with the same engine and, where one was given, the same chunk
    # size (the engines round differently, and so may stacks of other sizes: the configurations would then differ
    # from those of an uninterrupted run by more than rounding wherever training is unstable)
    if getattr(ns, "engine", None) is None:
        ns.engine = _stored_flag(record.command, "--engine")
    if ns.chunk is None:
        ns.chunk = _stored_flag(record.command, "--chunk")
    return _run(exp, opts, record.raw_options, ns, record.run_id)


def _stored_flag(command: str, flag: str) -> str | None:
    """The value ``flag`` had in a run's stored command (``--flag VALUE`` or ``--flag=VALUE``), or None."""
    try:
        words = shlex.split(command)
    except ValueError:  # not a command line (a run stored by an older version, or by hand)
        return None
    for word, following in zip(words, [*words[1:], None], strict=True):
        if word == flag:
            return following
        if word.startswith(flag + "="):
            return word[len(flag) + 1 :]
    return None


def _cmd_resume(argv: list[str]) -> int:
    parser = _Parser(prog="decaylab resume", description="Train the unfinished configurations of a stored run.")
    parser.add_argument("run_id", metavar="RUN_ID")
    parser.add_argument("--engine", choices=("sequential", "batched"))
    _output_options(parser)
    ns = parser.parse_args(argv)
    store = open_store(ns.store, "decaylab resume", create=False)
    try:
        record = store.get_run(ns.run_id, curves=False)
        if record is not None and record.status == "finished" and ns.json:  # printed whole: its summary reads curves
            record = store.get_run(ns.run_id)
    finally:
        store.close()
    if record is None:
        raise UsageError(str(parameter_error("RUN_ID", "decaylab resume", "the id of a run in the store", ns.run_id)))
    if record.status == "running":  # its owner is alive; the store's claim decides for good (no race)
        raise UsageError(
            str(parameter_error("RUN_ID", "decaylab resume", "a run no live process is training", ns.run_id))
            + f" Process {record.owner_pid} on {record.owner_host} is training it."
        )
    return _resume(record, ns)


def _cmd_runs(argv: list[str]) -> int:
    from decaylab.lab.outputs import main_options, render_table, run_document, runs_table, verdict_lines, write_document

    parser = _Parser(prog="decaylab runs", description="Read and manage the run store.")
    sub = parser.add_subparsers(dest="action", required=True, parser_class=_Parser)
    _store_options(sub.add_parser("list", help="every run, newest first, with its main options"))
    show = sub.add_parser("show", help="one run with its configurations")
    show.add_argument("run_id", metavar="RUN_ID")
    _store_options(show)
    _runs_management_parsers(sub)
    ns = parser.parse_args(argv)
    if ns.action in _RUNS_MANAGEMENT:
        return _RUNS_MANAGEMENT[ns.action](ns)
    store = open_store(ns.store, f"decaylab runs {ns.action}", create=False, readonly=True)
    try:
        if ns.action == "list":
            records = store.list_runs()
            if ns.json:
                _print_json(
                    [
                        {
                            "run_id": r.run_id,
                            "experiment": r.experiment,
                            "status": r.status,
                            "configs": r.n_configs,
                            "counts": r.counts(),
                            "created": r.created,
                            "version": r.version,
                            "command": r.command,
                            "main_options": main_options(r),
                        }
                        for r in records
                    ]
                )
            else:
                _console().print(render_table(runs_table(records)))
            return EXIT_OK
        record = _read_for_show(store, ns)
    finally:
        store.close()
    if record is None:
        raise UsageError(str(parameter_error("RUN_ID", "decaylab runs show", "the id of a run in the store", ns.run_id)))
    exp, opts = shown_options(record)
    if ns.json:
        curves = _with_curves(record, ns)
        # streamed: each configuration's line is made and written, never the whole document at once
        write_document(run_document(record, exp.summarize(record.configs, opts), curves=curves, stream=True), sys.stdout)
        if not curves:
            _say_curves_left_out(record)
    else:
        from decaylab.lab.outputs import environment_lines

        console = _console()
        console.print(f"run {record.run_id}: {record.experiment}, {record.status}, decaylab {record.version}")
        console.print(f"command: {record.command}", markup=False)
        for line in environment_lines(record):
            console.print(line, markup=False, highlight=False)
        console.print(render_table(exp.table(record.configs, opts), f"decaylab runs show {record.run_id} --json",
                                   verdict_lines(exp.summarize(record.configs, opts))))
    return EXIT_OK


# -- runs delete | export | compare ---------------------------------------------------------------
def _runs_management_parsers(sub: Any) -> None:
    """The parsers of ``runs delete``, ``runs export`` and ``runs compare``."""
    store_help = "SQLite run store (default: $DECAYLAB_STORE or ./decaylab.db)"
    delete = sub.add_parser("delete", help="delete runs with their configurations and curves (asks first)")
    delete.add_argument("run_ids", metavar="RUN_ID", nargs="+")
    delete.add_argument("--yes", action="store_true", help="do not ask (required when stdin is not a terminal)")
    delete.add_argument("--store", metavar="PATH", help=store_help)
    export = sub.add_parser("export", help="one run as a table file: one row per configuration (or --curves)")
    export.add_argument("run_id", metavar="RUN_ID")
    target = export.add_mutually_exclusive_group(required=True)
    target.add_argument("--csv", metavar="FILE", help="write CSV (UTF-8, a header line)")
    target.add_argument("--parquet", metavar="FILE", help="write Parquet (pyarrow)")
    export.add_argument("--curves", action="store_true", help="the long per-epoch table of every configuration's curves")
    export.add_argument("--store", metavar="PATH", help=store_help)
    compare = sub.add_parser("compare", help="two runs' options, summaries and metrics side by side")
    compare.add_argument("run_a", metavar="A")
    compare.add_argument("run_b", metavar="B")
    compare.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    compare.add_argument("--store", metavar="PATH", help=store_help)


def _stored_run(store: Any, run_id: str, command: str, curves: bool = True) -> Any:
    record = store.get_run(run_id, curves=curves)
    if record is None:
        raise UsageError(str(parameter_error("RUN_ID", command, "the id of a run in the store", run_id)))
    return record


def _runs_delete(ns: argparse.Namespace) -> int:
    """``runs delete ID... [--yes]``: ask per run on a terminal, then delete the confirmed runs in one
    transaction (:meth:`Store.delete_runs`, which refuses a run a live process trains)."""
    owner = "decaylab runs delete"
    store = open_store(ns.store, owner, create=False)
    try:
        records = [_stored_run(store, run_id, owner, curves=False) for run_id in dict.fromkeys(ns.run_ids)]
        for record in records:  # said before asking; the store checks again inside its transaction
            if record.status == "running":
                raise UsageError(
                    str(parameter_error("RUN_ID", owner, "a run no live process is training", record.run_id))
                    + f" Process {record.owner_pid} on {record.owner_host} is training it; nothing was deleted."
                )
        if not ns.yes and not sys.stdin.isatty():
            raise UsageError(
                str(parameter_error("--yes", owner, "given when stdin is not a terminal (nobody can answer"
                                    " 'Delete run ...? [y/N]'); nothing was deleted", "not given"))
            )
        chosen = [r for r in records if ns.yes or _confirm(r)]
        deleted = store.delete_runs([r.run_id for r in chosen], owner)
    finally:
        store.close()
    for record in records:
        if record.run_id in deleted:
            print(f"deleted run {record.run_id} ({record.experiment}, {deleted[record.run_id]} configs) from {store.path};"
                  f" files outside the store (runs/{record.run_id}/ or the run's --out) are left as they are")
        else:
            print(f"kept run {record.run_id}")
    return EXIT_OK


def _confirm(record: Any) -> bool:
    """Ask on the terminal; only 'y' or 'yes' deletes (end of input: no)."""
    try:
        answer = input(f"Delete run {record.run_id} ({record.experiment}, {record.n_configs} configs)? [y/N] ")
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")


def _runs_export(ns: argparse.Namespace) -> int:
    """``runs export ID --csv FILE | --parquet FILE [--curves]``, written atomically."""
    from decaylab.lab.frames import configs_frame, curves_frame, write_frame

    owner = "decaylab runs export"
    fmt, flag, path = ("csv", "--csv", ns.csv) if ns.csv is not None else ("parquet", "--parquet", ns.parquet)
    target = Path(path)
    if not path or target.is_dir() or not target.parent.is_dir() or not os.access(target.parent, os.W_OK | os.X_OK):
        raise UsageError(str(parameter_error(flag, owner, "a file path in an existing, writable directory", path)))
    import importlib.util

    for package in ("pandas", "pyarrow") if fmt == "parquet" else ("pandas",):
        if importlib.util.find_spec(package) is None:
            raise UsageError(str(parameter_error(flag, owner, f"used with {package} installed (pip install 'decaylab[lab]')", path)))
    store = open_store(ns.store, owner, create=False, readonly=True)
    try:
        record = _stored_run(store, ns.run_id, owner, curves=ns.curves)
    finally:
        store.close()
    frame = curves_frame(record.configs) if ns.curves else configs_frame(record.configs)
    try:
        write_frame(frame, target, fmt)
    except OSError as exc:
        print(f"decaylab: error: could not write {path}: {one_line(exc)}", file=sys.stderr)
        return EXIT_FAILED
    what = "curve points" if ns.curves else "configurations"
    print(f"wrote {path}: run {record.run_id}, {len(frame)} rows ({what}), {len(frame.columns)} columns")
    return EXIT_OK


def _runs_compare(ns: argparse.Namespace) -> int:
    """``runs compare A B [--json]``: options, summaries and metrics side by side (:mod:`decaylab.lab.compare`)."""
    from decaylab.lab.compare import compare_runs, comparison_tables
    from decaylab.lab.outputs import render_table

    owner = "decaylab runs compare"
    store = open_store(ns.store, owner, create=False, readonly=True)
    try:
        a, b = (_stored_run(store, run_id, owner) for run_id in (ns.run_a, ns.run_b))
    finally:
        store.close()
    exp_a, opts_a = shown_options(a)
    exp_b, opts_b = shown_options(b)
    order = [o.name for o in exp_a.options] + [o.name for o in exp_b.options]
    doc = compare_runs(a, b, exp_a.summarize(a.configs, opts_a), exp_b.summarize(b.configs, opts_b), order)
    if ns.json:
        _print_json(doc)
        return EXIT_OK
    console = _console()
    for side in ("a", "b"):
        run = doc[side]
        console.print(f"{side.upper()}: run {run['run_id']}: {run['experiment']}, {run['status']}", markup=False)
    for table in comparison_tables(doc):
        console.print(render_table(table, f"decaylab runs compare {a.run_id} {b.run_id} --json"))
    return EXIT_OK


_RUNS_MANAGEMENT = {"delete": _runs_delete, "export": _runs_export, "compare": _runs_compare}


def _load_setup(target: str) -> tuple[Any, ...]:
    """Import ``FILE.py`` and call ``FUNCTION`` of ``FILE.py:FUNCTION``; return its (model, optimizer[, scheduler])."""
    import importlib.util

    import torch

    owner = "decaylab audit"
    path_text, sep, func_name = target.rpartition(":")
    if not sep or not path_text or not func_name.isidentifier():
        raise UsageError(str(parameter_error("FILE.py:FUNCTION", owner, "a Python file and a function in it, as FILE.py:FUNCTION", target)))
    path = Path(path_text)
    if path.suffix != ".py" or not path.is_file():
        raise UsageError(str(parameter_error("FILE.py:FUNCTION", owner, "an existing Python file (.py) and a function", target)))
    spec = importlib.util.spec_from_file_location(f"_decaylab_audit_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise UsageError(str(parameter_error("FILE.py:FUNCTION", owner, "an importable Python file", target)))
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.resolve().parent))
    try:
        spec.loader.exec_module(module)
        func = getattr(module, func_name, None)
        if not callable(func):
            raise UsageError(str(parameter_error("FILE.py:FUNCTION", owner, f"a function defined in {path}", target)))
        result = func()
    except (UsageError, KeyboardInterrupt):
        raise
    except Exception as exc:  # noqa: BLE001 - the user's code failed: one line, exit 2
        raise UsageError(f"{target} raised {type(exc).__name__}: {exc}".splitlines()[0]) from None
    finally:
        sys.path.remove(str(path.resolve().parent))
    if not (isinstance(result, tuple) and len(result) in (2, 3) and isinstance(result[1], torch.optim.Optimizer)):
        raise UsageError(str(parameter_error("FILE.py:FUNCTION", owner, "a function returning (model, optimizer[, scheduler])", result)))
    return result


def _cmd_audit(argv: list[str]) -> int:
    from decaylab.audit import audit

    parser = _Parser(prog="decaylab audit", description="Audit the weight decay of a training set-up: calls "
                     "FUNCTION of FILE.py, which returns (model, optimizer[, scheduler]), and prints each finding "
                     "with its fix. Exit 0 clean, 1 when an error or warning stands, 2 bad input.")
    parser.add_argument("target", metavar="FILE.py:FUNCTION")
    parser.add_argument("--epochs", metavar="N", help="the run's epochs (with --steps-per-epoch: the timescale check)")
    parser.add_argument("--steps-per-epoch", metavar="N", help="optimizer steps per epoch")
    parser.add_argument("--dataset-size", metavar="N", help="training examples N (shown with the batch size)")
    parser.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    ns = parser.parse_args(argv)
    numbers = {key: check_int(getattr(ns, key), "--" + key.replace("_", "-"), "decaylab audit", low=1)
               for key in ("epochs", "steps_per_epoch", "dataset_size") if getattr(ns, key) is not None}
    model, optimizer, *rest = _load_setup(ns.target)
    report = audit(
        model, optimizer, rest[0] if rest else None, epochs=numbers.get("epochs"),
        steps_per_epoch=numbers.get("steps_per_epoch"), dataset_size=numbers.get("dataset_size"),
    )
    print(report.to_json() if ns.json else str(report))
    return EXIT_OK if report.clean else EXIT_FAILED


def _cmd_sweep(argv: list[str]) -> int:
    """``decaylab sweep FILE.py:FUNCTION [options]``: λ sweeps over the user's own module (:mod:`decaylab.lab.experiments.sweep`)."""
    from decaylab.lab.experiments import get_experiment
    from decaylab.lab.experiments.sweep import BOOL_OPTIONS, ModuleSweep

    exp = cast(ModuleSweep, get_experiment("sweep"))  # the registry maps "sweep" to ModuleSweep
    parser = _Parser(
        prog="decaylab sweep", description=f"{exp.summary}\n\n{exp.description}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("target", metavar="FILE.py:FUNCTION", help="the function that returns the model, data and loss")
    group = parser.add_argument_group("sweep options (grids: 'a,b,c', 'start:stop:num', 'log:start:stop:num')")
    for opt in exp.options[1:]:
        if opt.name in BOOL_OPTIONS:
            group.add_argument(opt.flag, dest=opt.name, action="store_const", const="true", help=opt.help)
        else:
            group.add_argument(opt.flag, dest=opt.name, metavar=opt.metavar, help=f"{opt.help} (default: {opt.default})")
    common = parser.add_argument_group("run options")
    common.add_argument("--engine", choices=exp.engines, help=f"how configurations are trained (default: {exp.engines[-1]})")
    _output_options(common)
    ns = parser.parse_args(argv)
    opts, raw, _ = _parse_options(exp, ns)
    exp.check_engine(opts, ns.engine or exp.engines[-1])
    raw["select"], raw["target"] = opts["select"], opts["target"]  # as checked: the absolute path, for resume
    return _run(exp, opts, raw, ns, None)


def _cmd_report(argv: list[str]) -> int:
    """``decaylab report RUN_ID [RUN_ID ...] [--out FILE]`` or ``--all``: self-contained HTML pages
    (:mod:`decaylab.lab.report`); prints the path written."""
    from decaylab.lab.report import write_report

    parser = _Parser(
        prog="decaylab report",
        description="Write one self-contained HTML page (figures embedded, works offline) of a run, a comparison"
        " page of several runs, or with --all an index of the store; print the path written.",
    )
    parser.add_argument("run_ids", metavar="RUN_ID", nargs="*", help="one run, or several to compare")
    parser.add_argument("--all", dest="all_runs", action="store_true", help="an index of every run in the store")
    parser.add_argument("--out", metavar="FILE", help="the HTML file (default: runs/RUN_ID/report.html beside the run's"
                        " outputs, else report-RUN_ID.html; compare-....html; decaylab-runs.html for --all)")
    parser.add_argument("--store", metavar="PATH", help="SQLite run store (default: $DECAYLAB_STORE or ./decaylab.db)")
    ns = parser.parse_args(argv)
    if ns.all_runs == bool(ns.run_ids):
        raise UsageError(str(parameter_error("RUN_ID", "decaylab report", "one or more run ids, or --all alone",
                                             " ".join(ns.run_ids) or "nothing")))
    if ns.out is not None and Path(ns.out).is_dir():
        raise UsageError(str(parameter_error("--out", "decaylab report", "a file path (not a directory)", ns.out)))
    store = open_store(ns.store, "decaylab report", create=False, readonly=True)
    try:
        try:
            path = write_report(store, ns.run_ids, ns.out, all_runs=ns.all_runs)
        except OSError as exc:
            raise UsageError(
                str(parameter_error("--out", "decaylab report", "a file that can be written", ns.out or "(default)"))
                + f" {one_line(exc)}"
            ) from None
    finally:
        store.close()
    print(path)
    return EXIT_OK


def _read_for_show(store: Any, ns: argparse.Namespace) -> Any:
    """The run ``runs show`` prints, read with only what it needs: without curves when the experiment's
    table and summary come from the metrics (``Experiment.table_reads_curves`` false) and the output
    leaves the curves out (a table, or the document of a run larger than ``CURVES_INLINE_MAX``)."""
    from decaylab.lab.experiments import get_experiment

    record = store.get_run(ns.run_id, curves=False)
    if record is None:
        return None
    try:
        needs_curves = getattr(get_experiment(record.experiment), "table_reads_curves", True)
    except InvalidParameterError:  # an experiment this decaylab does not know: shown_options says so
        return record
    if needs_curves or (ns.json and _with_curves(record, ns)):
        return store.get_run(ns.run_id)
    return record


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; ``main(["run", "d2l-linear"])`` runs in-process and returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    commands = {"run": _cmd_run, "resume": _cmd_resume, "runs": _cmd_runs, "sweep": _cmd_sweep, "audit": _cmd_audit,
                "report": _cmd_report}
    if not args or args[0] in ("-h", "--help"):
        print(__doc__.strip())
        return EXIT_OK
    if args[0] == "--version":
        print(f"decaylab {__version__}")
        return EXIT_OK
    try:
        with signals_as_interrupt():  # SIGTERM ends a command as Ctrl-C does
            command = commands.get(args[0])
            if command is None:
                raise UsageError(
                    str(parameter_error("COMMAND", "decaylab", "one of {" + ", ".join(map(repr, commands)) + "}", args[0]))
                )
            return command(args[1:])
    except (UsageError, InvalidParameterError) as exc:
        print(f"decaylab: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:  # before a run was stored (after it, _run says which run)
        print("decaylab: interrupted before the run was stored; nothing to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except SystemExit as exc:  # argparse's --help and errors; a message, as Python shows it: on stderr, exit 1
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        print(exc.code, file=sys.stderr)
        return 1


def console() -> NoReturn:
    """The ``decaylab`` command: :func:`main`, then an exit that skips the interpreter's teardown.

    Once ``torch`` is loaded, tearing the interpreter down (freeing every module's objects, one by one)
    takes ~0.5 s on a 2-core machine: a sixth of a short run. Everything that matters is closed by then
    (the store, the figure worker, Ray), so the process flushes its output and leaves with
    :func:`os._exit`, as long-running services do at shutdown for the same reason. An exception that
    escapes :func:`main` (a bug) takes the normal path, with its traceback. Before ``main`` the process
    is set to keep freed tensor memory (:func:`decaylab.memory.retain_freed_memory`); after it, Ctrl-C
    and SIGTERM are ignored while the output is flushed.
    """
    from decaylab.memory import retain_freed_memory

    retain_freed_memory()
    code = main()
    _ignore_signals()  # done: a late Ctrl-C must not turn the flush below into a traceback
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (BrokenPipeError, ValueError):  # the reader left (``decaylab runs | head``), or a closed stream
            pass
        except OSError as exc:  # the output was lost (a full disk): not a success, as CPython would say too
            os.write(2, f"decaylab: error: could not write the output: {exc}\n".encode())
            os._exit(EXIT_FLUSH_FAILED)
    os._exit(code)


if __name__ == "__main__":
    console()
