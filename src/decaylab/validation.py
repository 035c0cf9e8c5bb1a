"""One validation style for the whole of decaylab.

Every public callable and every CLI option reports bad input with the same one-line template,
modelled on scikit-learn's parameter validation::

    The 'weight_decay' parameter of DecoupledDecay must be a float in [0, inf). Got -0.1.

The error type, :class:`InvalidParameterError`, subclasses :class:`ValueError`, so callers that
already catch ``ValueError`` keep working; the CLI turns it into one line on stderr and exit code 2.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

__all__ = [
    "InvalidParameterError",
    "check_choice",
    "check_float",
    "check_int",
    "parameter_error",
]


class InvalidParameterError(ValueError):
    """A parameter was given a value outside what is allowed; the message names both."""


def one_line(exc: BaseException) -> str:
    """``"TypeName: message"`` with only the first non-empty line of the message (user code's errors, reported
    on one line)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def parameter_error(name: str, owner: str, allowed: str, got: Any) -> InvalidParameterError:
    """Build the error in the one template: ``The 'name' parameter of owner must be allowed. Got got.``"""
    return InvalidParameterError(f"The {name!r} parameter of {owner} must be {allowed}. Got {got!r}.")


def _interval(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    left = "(" if (low is None or low_open) else "["
    right = ")" if (high is None or high_open) else "]"
    lo = "-inf" if low is None else f"{low:g}"
    hi = "inf" if high is None else f"{high:g}"
    return f"{left}{lo}, {hi}{right}"


def check_float(
    value: Any,
    name: str,
    owner: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """Return ``value`` as a finite float inside the interval, or raise :class:`InvalidParameterError`.

    ``low``/``high`` of ``None`` mean unbounded; ``*_open`` excludes the end point.
    Booleans are rejected: ``True`` is not a learning rate.
    """
    allowed = f"a float in {_interval(low, high, low_open, high_open)}"
    if isinstance(value, bool):
        raise parameter_error(name, owner, allowed, value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise parameter_error(name, owner, allowed, value) from None
    if not math.isfinite(number):
        raise parameter_error(name, owner, allowed, value)
    if low is not None and (number < low or (low_open and number == low)):
        raise parameter_error(name, owner, allowed, value)
    if high is not None and (number > high or (high_open and number == high)):
        raise parameter_error(name, owner, allowed, value)
    return number


def check_int(
    value: Any,
    name: str,
    owner: str,
    *,
    low: int | None = None,
    high: int | None = None,
) -> int:
    """Return ``value`` as an int in the closed range ``[low, high]``, or raise."""
    lo = "-inf" if low is None else str(low)
    hi = "inf" if high is None else str(high)
    allowed = f"an int in [{lo}, {hi}]" if high is not None else f"an int in [{lo}, inf)"
    if isinstance(value, bool):
        raise parameter_error(name, owner, allowed, value)
    if isinstance(value, float):
        if not value.is_integer():
            raise parameter_error(name, owner, allowed, value)
        value = int(value)
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise parameter_error(name, owner, allowed, value) from None
    if (low is not None and number < low) or (high is not None and number > high):
        raise parameter_error(name, owner, allowed, value)
    return number


def check_choice(value: Any, name: str, owner: str, choices: Iterable[Any]) -> Any:
    """Return ``value`` if it is one of ``choices``, or raise naming every allowed choice."""
    options = tuple(choices)
    if value not in options:
        listed = ", ".join(repr(c) for c in options)
        raise parameter_error(name, owner, f"one of {{{listed}}}", value)
    return value
