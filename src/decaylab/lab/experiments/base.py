"""What an experiment declares, the option parsers and checks experiments share, and how they average.

An experiment is a small class: its options (each parsed and validated from the text a user types),
how its options expand into configurations, how to train a chunk of configurations, and what it
shows (a table, figures, a summary of its claim). The runner, the store and the CLI do the rest.

Bounds every option obeys, so that a run fits what the machine can represent and hold (each refused
up front by :meth:`Experiment.validate`, before anything is stored, with the one-line error):

=====================  ======================================================================
``MAX_GRID``           values in one grid (100,000; :mod:`decaylab.lab.grid`)
``MAX_CONFIGS``        configurations of one run, the product of its grids (1,000,000)
``MAX_CURVE_POINTS``   configurations × epochs, the curve values kept in memory and stored (10^7)
``MAX_EPOCHS``         epochs (10^6)
``MAX_SIZE``           any count (examples, features, sizes m): 10^9, and the data must fit
                       ``DATA_BUDGET`` (1 GiB, estimated as rows × columns × bytes per number)
``MAX_MAGNITUDE``      any float option (λ, σ, lr, noise): ≤ 10^18, so that squares (σ², λ²) and
                       products with sizes (n·λ, λ·‖w‖²) stay finite, even in float32 (max 3.4·10^38)
``MAX_WIDTH``          units of a hidden layer (10^5), and the parameters of one configuration
                       must fit ``DATA_BUDGET`` (4 bytes each)
``MAX_SEED``           seeds in [0, 2^32 − 1] (NumPy's and scikit-learn's ``random_state`` range)
=====================  ======================================================================
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any, ClassVar

from decaylab.lab.grid import merge_duplicates, parse_float_grid, parse_int_grid
from decaylab.results import ConfigResult, Outcome
from decaylab.validation import check_choice, check_float, check_int, parameter_error

DATA_BUDGET = 1 << 30  # bytes of data one configuration may need
MAX_CONFIGS = 1_000_000
MAX_CURVE_POINTS = 10_000_000
MAX_EPOCHS = 1_000_000
MAX_SIZE = 1_000_000_000
MAX_MAGNITUDE = 1e18
MAX_SEED = 2**32 - 1
MAX_WIDTH = 100_000  # units in one hidden layer

__all__ = [
    "DATA_BUDGET",
    "MAX_CONFIGS",
    "MAX_CURVE_POINTS",
    "MAX_EPOCHS",
    "MAX_MAGNITUDE",
    "MAX_SEED",
    "MAX_SIZE",
    "MAX_WIDTH",
    "Experiment",
    "Option",
    "Table",
    "check_batch_size",
    "check_data_budget",
    "check_model_budget",
    "choice",
    "choice_list",
    "diverged_rows",
    "epochs_int",
    "float_grid",
    "group_by",
    "holds_text",
    "int_grid",
    "mean_or_nan",
    "mean_over_seeds",
    "nonneg_float",
    "path_or_empty",
    "positive_float",
    "positive_int",
    "seed_grid",
    "status_text",
    "unfinished_note",
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
    notes: list[str] = field(default_factory=list)  # lines printed under the table


# -- parsers -----------------------------------------------------------------------------------
# The text goes to the check as typed, so an error quotes exactly what the user wrote.
def positive_float(text: str, name: str, owner: str) -> float:
    """A float in (0, MAX_MAGNITUDE]."""
    return check_float(text, name, owner, low=0.0, low_open=True, high=MAX_MAGNITUDE)


def nonneg_float(text: str, name: str, owner: str) -> float:
    """A float in [0, MAX_MAGNITUDE]."""
    return check_float(text, name, owner, low=0.0, high=MAX_MAGNITUDE)


def positive_int(text: str, name: str, owner: str) -> int:
    """A count in [1, MAX_SIZE] (the experiment's :meth:`~Experiment.check` bounds the data it makes)."""
    return check_int(text, name, owner, low=1, high=MAX_SIZE)


def epochs_int(text: str, name: str, owner: str) -> int:
    """A number of epochs in [1, MAX_EPOCHS]."""
    return check_int(text, name, owner, low=1, high=MAX_EPOCHS)


def float_grid(
    *, low: float = 0.0, low_open: bool = False, high: float = MAX_MAGNITUDE, merge: bool = True
) -> Parser:
    """A grid of floats (see :mod:`decaylab.lab.grid`) whose values lie in ``[low, high]``; ``merge``: duplicates merged."""

    def check(value: float, name: str, owner: str) -> float:
        return check_float(value, name, owner, low=low, low_open=low_open, high=high)

    def parse(text: str, name: str, owner: str) -> list[float]:
        return parse_float_grid(text, name, owner, check, merge=merge)

    return parse


def int_grid(*, low: int = 0, high: int = MAX_SIZE, merge: bool = True) -> Parser:
    """A list or range of whole numbers in ``[low, high]``; ``merge``: duplicates merged (not for layer widths)."""

    def parse(text: str, name: str, owner: str) -> list[int]:
        return parse_int_grid(text, name, owner, low=low, high=high, merge=merge)

    return parse


seed_grid = int_grid(low=0, high=MAX_SEED)


def choice(*choices: str) -> Parser:
    def parse(text: str, name: str, owner: str) -> str:
        return check_choice(text, name, owner, choices)

    return parse


def choice_list(*choices: str) -> Parser:
    """A comma-separated list of ``choices`` (order kept, duplicates merged with a :class:`~decaylab.lab.grid.GridNote`)."""

    def parse(text: str, name: str, owner: str) -> list[str]:
        tokens = [t.strip() for t in text.split(",")]
        if not text.strip() or any(not t for t in tokens):
            raise parameter_error(name, owner, "a comma-separated list of {" + ", ".join(map(repr, choices)) + "}", text)
        for token in tokens:
            check_choice(token, name, owner, choices)
        return merge_duplicates(tokens, name, text)

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


def check_data_budget(
    opts: dict[str, Any], owner: str, rows: Sequence[str], cols: str, *, itemsize: int = 4, budget: int = DATA_BUDGET
) -> None:
    """Refuse data of ``(Σ opts[rows]) × opts[cols]`` numbers of ``itemsize`` bytes beyond ``budget`` bytes.

    The error names the larger of the two sides (the sum of the row options, or ``cols``): the one to make smaller.

    Raises:
        InvalidParameterError: ``--dim`` (say) and the estimate, e.g. ``(n_train + n_test)·dim·4 bytes = 8 GiB``.
    """
    n_rows = sum(opts[r] for r in rows)
    nbytes = n_rows * opts[cols] * itemsize
    if nbytes <= budget:
        return
    blame = cols if opts[cols] >= n_rows else max(rows, key=lambda r: opts[r])
    flag = "--" + blame.replace("_", "-")
    formula = "(" + " + ".join(rows) + ")" if len(rows) > 1 else rows[0]
    allowed = (
        f"an int for which the data fit in memory: {formula}·{cols}·{itemsize} bytes"
        f" = {nbytes / 2**30:.3g} GiB here, more than the {budget / 2**30:g} GiB budget"
    )
    raise parameter_error(flag, owner, allowed, opts[blame])


def check_model_budget(layers: Sequence[int], owner: str, *, itemsize: int = 4, budget: int = DATA_BUDGET) -> None:
    """Refuse an MLP ``layers = (d_in, hidden..., d_out)`` whose weights and biases exceed ``budget`` bytes.

    Raises:
        InvalidParameterError: naming ``--hidden`` and the estimate Σ (fan_in + 1)·fan_out·itemsize.
    """
    n_params = sum((a + 1) * b for a, b in pairwise(layers))
    nbytes = n_params * itemsize
    if nbytes > budget:
        allowed = (
            f"widths for which one configuration's parameters fit in memory: {n_params:,} parameters ×"
            f" {itemsize} bytes = {nbytes / 2**30:.3g} GiB here, more than the {budget / 2**30:g} GiB budget"
        )
        raise parameter_error("--hidden", owner, allowed, ",".join(map(str, layers[1:-1])))


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

    # options whose values multiply into configurations (see n_configs)
    swept: ClassVar[tuple[str, ...]] = ("seed",)

    def check(self, opts: dict[str, Any]) -> None:  # noqa: B027 - optional hook
        """Validate combinations of options; raise :class:`InvalidParameterError`."""

    def check_resume(self, opts: dict[str, Any], stored: dict[str, Any], run_id: str) -> None:  # noqa: B027 - optional hook
        """Before a stored run trains on (``opts`` parsed again from its options' texts, ``stored`` the options as it
        was created with): raise :class:`InvalidParameterError` if what the options name has changed since, so that
        its configurations would not be one run's. Experiments whose options say everything have nothing to check."""

    def n_configs(self, opts: dict[str, Any]) -> int:
        """How many configurations :meth:`configs` makes, computed from the grid sizes without expanding them.

        The default: the product of the lengths of the ``swept`` options (experiments whose configurations
        are not a full product override it).
        """
        return math.prod(len(opts[name]) for name in self.swept)

    def curve_points(self, opts: dict[str, Any]) -> int:
        """Values per curve and configuration (default: ``--epochs``, or 1 without it)."""
        epochs = opts.get("epochs")
        return epochs if isinstance(epochs, int) else 1

    def validate(self, opts: dict[str, Any]) -> None:
        """Every check of parsed options before a run is created: :meth:`check`, then the run's size.

        Raises:
            InvalidParameterError: a bad combination, more than ``MAX_CONFIGS`` configurations (naming the
                largest swept grid), or more than ``MAX_CURVE_POINTS`` configurations × epochs (naming ``--epochs``).
        """
        self.check(opts)
        total = self.n_configs(opts)
        sizes = [(name, len(opts[name])) for name in self.swept]
        if total > MAX_CONFIGS:
            name, size = max(sizes, key=lambda item: item[1])
            listed = ", ".join(f"{n} {'--' + k.replace('_', '-')}" for k, n in sizes)
            allowed = (
                f"a grid for which the run has at most {MAX_CONFIGS:,} configurations"
                f" (here {total:,} from {listed})"
            )
            raise parameter_error("--" + name.replace("_", "-"), self.name, allowed, f"{size} values")
        points = total * self.curve_points(opts)
        if points > MAX_CURVE_POINTS and "epochs" in opts:
            allowed = (
                f"an int for which configurations × epochs ≤ {MAX_CURVE_POINTS:,} (the curves kept in memory"
                f" and stored; here {total:,} configurations)"
            )
            raise parameter_error("--epochs", self.name, allowed, opts["epochs"])

    @abstractmethod
    def configs(self, opts: dict[str, Any]) -> list[dict[str, Any]]:
        """Expand the options into configurations: one dict of parameters each."""

    @abstractmethod
    def run_chunk(
        self,
        opts: dict[str, Any],
        configs: Sequence[dict[str, Any]],
        engine: str,
        progress: Callable[[int], None] | None = None,
    ) -> list[Outcome]:
        """Train ``configs`` (a chunk of :meth:`configs`) and return one outcome each, in order;
        ``progress(n)`` (if given) reports ``n`` more configuration-epochs trained.

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

    def summarize(self, results: Sequence[ConfigResult], opts: dict[str, Any]) -> dict[str, Any]:
        """Run-level numbers derived from all configurations (the experiment's claim).

        Every experiment's summary has a ``verdict``: the claim, whether it holds and the numbers that
        decide it, in one line (or a list of lines, one per claim); the CLI prints it under the table
        (:func:`decaylab.lab.outputs.verdict_lines`) and ``--json`` carries it as ``summary.verdict``.
        """
        return {}


def holds_text(holds: bool | None) -> str:
    """The end of a verdict: ``holds``, ``does not hold``, or ``not tested`` (``None``: nothing to decide it)."""
    return "not tested" if holds is None else ("holds" if holds else "does not hold")


def finite(value: float) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _epochs_text(epochs: list[int]) -> str:
    lo, hi = min(epochs), max(epochs)
    return f"epoch {lo}" if lo == hi else f"epochs {lo}–{hi}"


def unfinished_note(results: Sequence[ConfigResult]) -> str:
    """One line on the configurations that did not finish, '' when all did::

        2 of 8 configurations diverged (at epochs 3–5); 1 failed
    """
    diverged = [r for r in results if r.status == "diverged"]
    failed = sum(r.status == "failed" for r in results)
    pending = sum(r.status == "pending" for r in results)
    if not (diverged or failed or pending):
        return ""
    parts = []
    if diverged:
        epochs = [r.diverged_epoch for r in diverged if r.diverged_epoch is not None]
        parts.append(f"{len(diverged)} diverged" + (f" (at {_epochs_text(epochs)})" if epochs else ""))
    if failed:
        parts.append(f"{failed} failed")
    if pending:
        parts.append(f"{pending} not trained")
    return f"{parts[0].split(' ', 1)[0]} of {len(results)} configurations {parts[0].split(' ', 1)[1]}" + "".join(
        f"; {p}" for p in parts[1:]
    )


def diverged_rows(results: Sequence[ConfigResult], limit: int = 10) -> list[str]:
    """For tables that aggregate (no status column): one line per configuration that did not finish."""
    lines = []
    for r in results:
        if r.status != "done":
            params = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in r.params.items())
            lines.append(f"{params}: {status_text(r)}")
    if len(lines) > limit:
        lines = lines[:limit] + [f"... and {len(lines) - limit} more"]
    return lines


def status_text(result: ConfigResult) -> str:
    """A result's status for a table: ``done``, ``diverged at epoch 3`` (or ``diverged`` without the epoch), ``failed``."""
    if result.status == "diverged" and result.diverged_epoch is not None:
        return f"diverged at epoch {result.diverged_epoch}"
    return result.status


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
