"""What an experiment declares, and the option parsers experiments share.

An experiment is a small class: its options (each parsed and validated from the text a user types),
how its options expand into configurations, how to train a chunk of configurations, and what it
shows (a table, figures, a summary of its claim). The runner, the store and the CLI do the rest.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from decaylab.grid import parse_float_grid, parse_int_grid
from decaylab.results import ConfigResult, Outcome
from decaylab.validation import check_choice, check_float, check_int

__all__ = [
    "Experiment",
    "Option",
    "Table",
    "choice",
    "float_grid",
    "int_grid",
    "nonneg_float",
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


# -- the experiment interface ------------------------------------------------------------------
class Experiment(ABC):
    """Base class of every ``decaylab run NAME`` experiment."""

    name: ClassVar[str]
    summary: ClassVar[str]  # one line, for ``decaylab run --list``
    order: ClassVar[int] = 100  # position in ``decaylab run --list``
    description: ClassVar[str] = ""  # the claim and what the figures show, for ``--help``
    options: ClassVar[tuple[Option, ...]]
    engines: ClassVar[tuple[str, ...]] = ("sequential",)  # engines this experiment can train with

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
