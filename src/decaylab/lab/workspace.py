"""What a command of the lab needs around a run: the store it opens, the directory it writes, its
progress bar, a stored run's options, and :class:`UsageError` for bad input — shared by the ``decaylab``
command (:mod:`decaylab.lab.cli`, which prints a ``UsageError`` as one line and exits with code 2) and the
notebook API (:mod:`decaylab.lab.notebook`, which raises it as :class:`~decaylab.InvalidParameterError`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from decaylab.validation import parameter_error

__all__ = ["UsageError", "check_out", "make_progress", "open_store", "shown_options", "writable_dir"]


class UsageError(Exception):
    """Bad input to a command: the CLI prints it as one line and exits with code 2; the notebook API raises it
    as :class:`~decaylab.InvalidParameterError`."""


def open_store(path: str | None, owner: str = "decaylab", *, create: bool = True, readonly: bool = False) -> Any:
    """The store at ``--store`` (or the default); reading commands pass ``create=False, readonly=True``."""
    from decaylab.lab.store import Store, StoreError, default_store_path

    if path is not None and (not path.strip() or path != path.strip()):  # a typo that would name a file ' '
        raise UsageError(str(parameter_error("--store", owner, "a file path without leading or trailing spaces", path)))
    target = Path(path) if path else default_store_path()
    try:
        return Store(target, create=create, readonly=readonly, owner=owner)
    except StoreError as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:
        raise UsageError(str(parameter_error("--store", "decaylab", "a writable file path", str(target)))) from exc


def writable_dir(path: Path, flag: str) -> Path:
    """Create ``path`` if needed and check that a file can be written there."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".decaylab-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError:
        raise UsageError(str(parameter_error(flag, "decaylab run", "a writable directory", str(path)))) from None
    return path


def check_out(out: str | None) -> None:
    """Fail before training if the run directory cannot be made (its final name needs the run id)."""
    target = Path(out) if out else Path("runs")
    existing = target
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if existing.exists() and (not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK)):
        raise UsageError(str(parameter_error("--out", "decaylab run", "a writable directory", str(target))))


def make_progress(enabled: bool) -> Any:
    from decaylab.lab.runner import Progress

    if not enabled:
        return Progress()

    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
    from rich.progress import Progress as Bar

    class RichProgress(Progress):
        def __init__(self) -> None:
            self.bar = Bar(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("config-epochs"),
                TimeRemainingColumn(),
                transient=True,
            )
            self.task: Any = None

        def start(self, total: int, description: str) -> None:
            self.bar.start()
            self.task = self.bar.add_task(description, total=total)

        def advance(self, amount: int) -> None:
            self.bar.advance(self.task, amount)

        def stop(self) -> None:
            self.bar.stop()

    return RichProgress()


def shown_options(record: Any) -> tuple[Any, dict[str, Any]]:
    """A stored run's experiment and its options as stored (parsed when it ran): ``runs show`` needs no
    input file. An option the run's decaylab did not have yet takes its default."""
    from decaylab.lab.experiments import get_experiment

    exp = get_experiment(record.experiment)
    opts = {}
    for o in exp.options:
        if o.name in record.options:
            opts[o.name] = record.options[o.name]
        else:
            opts[o.name] = o.parse(o.default, o.flag, exp.name)
    return exp, opts
