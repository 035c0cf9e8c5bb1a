"""What an experiment declares, the option parsers and checks experiments share, and how they average.

An experiment is a small class: its options (each parsed and validated from the text a user types),
how its options expand into configurations, how to train a chunk of configurations, and what it
shows (a table, figures, a summary of its claim). The runner, the store and the CLI do the rest.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from contextlib import AbstractContextManager, nullcontext
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from decaylab.grid import parse_float_grid, parse_int_grid
from decaylab.results import ConfigResult, Outcome
from decaylab.validation import check_choice, check_float, check_int, parameter_error

__all__ = [
    "Experiment",
    "Option",
    "Table",
    "check_batch_size",
    "choice",
    "choice_list",
    "float_grid",
    "group_by",
    "int_grid",
    "mean_or_nan",
    "mean_over_seeds",
    "nonneg_float",
    "path_or_empty",
    "positive_float",
    "positive_int",
]

Parser = Callable[[str, str, str], Any]  # (text, option name, owner) -> value


@dataclass(frozen=True)
class Option:
    """One option of an experiment: ``--{name with dashes}``, parsed from text by ``parse``."""

    name: str
    parse: Parser
    default: str
    help: str
    metavar: str | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


@dataclass
class Table:
    """Rows to print: ``columns`` are headers, each row a list of cells (numbers or text)."""

    columns: list[str]
    rows: list[list[Any]]
    title: str = ""


# -- parsers -----------------------------------------------------------------------------------
# The text goes to the check as typed, so an error quotes exactly what the user wrote.
def positive_float(text: str, name: str, owner: str) -> float:
    return check_float(text, name, owner, low=0.0, low_open=True)


def nonneg_float(text: str, name: str, owner: str) -> float:
    return check_float(text, name, owner, low=0.0)


def positive_int(text: str, name: str, owner: str) -> int:
    return check_int(text, name, owner, low=1)


def float_grid(*, low: float = 0.0, low_open: bool = False, high: float | None = None) -> Parser:
    """A grid of floats (see :mod:`decaylab.grid`) whose values lie in ``[low, high]``."""

    def check(value: float, name: str, owner: str) -> float:
        return check_float(value, name, owner, low=low, low_open=low_open, high=high)

    def parse(text: str, name: str, owner: str) -> list[float]:
        return parse_float_grid(text, name, owner, check)

    return parse


def int_grid(*, low: int = 0) -> Parser:
    def parse(text: str, name: str, owner: str) -> list[int]:
        return parse_int_grid(text, name, owner, low=low)

    return parse


def choice(*choices: str) -> Parser:
    def parse(text: str, name: str, owner: str) -> str:
        return check_choice(text, name, owner, choices)

    return parse


def choice_list(*choices: str) -> Parser:
    """A comma-separated list of ``choices`` (order kept, duplicates dropped)."""

    def parse(text: str, name: str, owner: str) -> list[str]:
        tokens = [t.strip() for t in text.split(",")]
        if not text.strip() or any(not t for t in tokens):
            raise parameter_error(name, owner, "a comma-separated list of {" + ", ".join(map(repr, choices)) + "}", text)
        out: list[str] = []
        for token in tokens:
            check_choice(token, name, owner, choices)
            if token not in out:
                out.append(token)
        return out

    return parse


def path_or_empty(text: str, name: str, owner: str) -> str:
    """A path ('' for none; ``~`` expanded); what it holds is for the experiment's :meth:`~Experiment.check`."""
    text = text.strip()
    return str(Path(text).expanduser()) if text else ""


# -- checks of combinations ----------------------------------------------------------------------
def check_batch_size(opts: dict[str, Any], owner: str) -> None:
    """``--batch-size`` must not exceed ``--n-train``."""
    if opts["batch_size"] > opts["n_train"]:
        raise parameter_error("--batch-size", owner, f"an int in [1, n_train={opts['n_train']}]", opts["batch_size"])


# -- the experiment interface ------------------------------------------------------------------
class Experiment(ABC):
    """Base class of every ``decaylab run NAME`` experiment."""

    name: ClassVar[str]
    summary: ClassVar[str]  # one line, for ``decaylab run --list``
    order: ClassVar[int] = 100  # position in ``decaylab run --list``
    description: ClassVar[str] = ""  # the claim and what the figures show, for ``--help``
    options: ClassVar[tuple[Option, ...]]
    engines: ClassVar[tuple[str, ...]] = ("sequential",)  # engines this experiment can train with
    # torch/BLAS threads while its chunks train and its chunk size is probed (small models: one thread is
    # fastest and never stalls on a busy machine); None leaves the process's setting. See thread_limit.
    threads: ClassVar[int | None] = 1

    def check(self, opts: dict[str, Any]) -> None:  # noqa: B027 - optional hook
        """Validate combinations of options; raise :class:`InvalidParameterError`."""

    @abstractmethod
    def configs(self, opts: dict[str, Any]) -> list[dict[str, Any]]:
        """Expand the options into configurations: one dict of parameters each."""

    @abstractmethod
    def run_chunk(self, opts: dict[str, Any], configs: Sequence[dict[str, Any]], engine: str) -> list[Outcome]:
        """Train ``configs`` (a chunk of :meth:`configs`) and return one outcome each, in order.

        Must be a pure function of its arguments: the runner may call it in another process.
        """

    def chunk_size(self, opts: dict[str, Any], n_configs: int, engine: str) -> int:
        """How many configurations one call of :meth:`run_chunk` trains (the runner's default)."""
        return n_configs if engine == "batched" else 1

    def thread_limit(self) -> AbstractContextManager[None]:
        """The ``with`` block in which the runner and the backends call :meth:`chunk_size` and :meth:`run_chunk`."""
        from decaylab.threads import limited_threads

        return nullcontext() if self.threads is None else limited_threads(self.threads)

    @abstractmethod
    def table(self, results: Sequence[ConfigResult], opts: dict[str, Any]) -> Table:
        """The table printed after the run."""

    def figures(self, results: Sequence[ConfigResult], opts: dict[str, Any], out: Path) -> list[Path]:
        """Write the figures into ``out``; return their paths."""
        return []

    def summarize(self, results: Sequence[ConfigResult], opts: dict[str, Any]) -> dict[str, Any]:
        """Run-level numbers derived from all configurations (the experiment's claim)."""
        return {}


def finite(value: float) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


# -- averaging over seeds ------------------------------------------------------------------------
def mean_or_nan(values: Iterable[float]) -> float:
    """The mean, summed left to right; NaN when there are no values."""
    values = list(values)
    return sum(values) / len(values) if values else math.nan


def group_by(results: Iterable[ConfigResult], by: str | Callable[[dict[str, Any]], Any]) -> dict[Any, list[ConfigResult]]:
    """``results`` grouped by the parameter named ``by``, or by ``by(params)``; groups in order of first appearance."""
    key = (lambda params: params[by]) if isinstance(by, str) else by
    groups: dict[Any, list[ConfigResult]] = {}
    for r in results:
        groups.setdefault(key(r.params), []).append(r)
    return groups


def positions_by(configs: Sequence[dict[str, Any]], name: str) -> dict[Any, list[int]]:
    """Positions in ``configs`` grouped by the value of their parameter ``name``, in order of first appearance."""
    groups: dict[Any, list[int]] = {}
    for i, config in enumerate(configs):
        groups.setdefault(config[name], []).append(i)
    return groups


def mean_over_seeds(
    results: Iterable[ConfigResult],
    by: str,
    metrics: Sequence[str],
    average: Callable[[list[float]], Any] = mean_or_nan,
) -> list[tuple[Any, dict[str, float]]]:
    """Per value of the parameter ``by``, ascending: ``n_seeds``, how many of its configurations finished
    (status ``done``), and the ``average`` over them of each of ``metrics`` (NaN when none finished)::

        for lambd, means in mean_over_seeds(results, "lambd", ("train_loss", "test_loss")):
            ...  # means == {"n_seeds": 3, "train_loss": ..., "test_loss": ...}
    """
    rows = []
    for value, group in sorted(group_by(results, by).items()):
        done = [r for r in group if r.status == "done"]
        means = {key: float(average([r.metrics[key] for r in done])) if done else math.nan for key in metrics}
        rows.append((value, {"n_seeds": len(done), **means}))
    return rows
