"""The grid syntax of swept options.

=====================  ==============================================  ==========================
syntax                 meaning                                         example
=====================  ==============================================  ==========================
``a,b,c``              these values                                    ``--lambd 0,3``
``start:stop:num``     ``num`` evenly spaced values, both ends kept    ``--lambd 0:10:64``
``log:start:stop:num`` ``num`` log-spaced values, both ends kept       ``--lambd log:1e-4:1:32``
=====================  ==============================================  ==========================

Every value is then checked by the option's own rule (for λ: a finite float ≥ 0). A grid holds at most
``MAX_GRID`` values; its size is read from the text (``num``, or ``stop − start + 1`` for a range of
seeds) before any value is built. A value given twice (``1,1,2``, or ``0:0:3``) is trained once: the
parsers merge duplicates, keeping the first occurrence's order, and say so with a :class:`GridNote`
warning (the CLI prints it as one ``decaylab: note: ...`` line on stderr). Options whose lists are not
swept (hidden-layer widths, dropout per layer) pass ``merge=False``.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from decaylab.validation import InvalidParameterError, parameter_error

__all__ = ["GRID_SYNTAX", "MAX_GRID", "GridNote", "merge_duplicates", "parse_float_grid", "parse_int_grid"]

GRID_SYNTAX = "a grid: a list 'a,b,c', 'start:stop:num' or 'log:start:stop:num'"
MAX_GRID = 100_000  # values in one grid


class GridNote(UserWarning):
    """Something the user should know about a grid that is not an error (duplicates merged)."""


def merge_duplicates(values: Sequence[Any], name: str, text: str) -> list[Any]:
    """``values`` without repeats (first occurrence kept, order kept); a :class:`GridNote` names what was merged."""
    unique = list(dict.fromkeys(values))
    if len(unique) < len(values):
        counts = Counter(values)
        repeated = [v for v in unique if counts[v] > 1]
        shown = ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in repeated[:5])
        which = f" ({shown}{', ...' if len(repeated) > 5 else ''})"
        quoted = repr(text) if len(text) <= 60 else repr(text[:57] + "...")
        warnings.warn(
            GridNote(
                f"{name} {quoted}: {len(values) - len(unique)} duplicate value(s){which} merged;"
                f" {len(unique)} distinct value(s) are trained"
            ),
            stacklevel=3,
        )
    return unique


def _malformed(name: str, owner: str, text: str, why: str = "") -> InvalidParameterError:
    allowed = GRID_SYNTAX + (f" ({why})" if why else "")
    return parameter_error(name, owner, allowed, text)


def _number(token: str, name: str, owner: str, text: str) -> float:
    try:
        value = float(token)
    except ValueError:
        raise _malformed(name, owner, text, f"{token.strip()!r} is not a number") from None
    return value


def _count(token: str, name: str, owner: str, text: str) -> int:
    """``num`` of a range: a whole number (``64``, or ``1e12`` written as a float) in [1, MAX_GRID]."""
    try:
        num = int(token)
    except ValueError:
        try:
            as_float = float(token)
        except ValueError:
            as_float = math.nan
        if not (math.isfinite(as_float) and as_float.is_integer()):
            raise _malformed(name, owner, text, f"num {token.strip()!r} is not a whole number") from None
        num = int(as_float)
    if not 1 <= num <= MAX_GRID:
        raise _malformed(name, owner, text, f"num must be in [1, {MAX_GRID}]")
    return num


def _linspace(start: float, stop: float, num: int) -> list[float]:
    if num == 1:
        return [start]
    step = (stop - start) / (num - 1)
    return [start + i * step for i in range(num - 1)] + [stop]


def parse_float_grid(
    text: str,
    name: str,
    owner: str,
    check: Callable[[float, str, str], float] | None = None,
    *,
    merge: bool = True,
) -> list[float]:
    """Parse ``text`` in the grid syntax into a list of floats, each passed through ``check``.

    ``name`` and ``owner`` go into the error message (``The '--lambd' parameter of d2l-linear ...``).
    With ``merge`` (the default) repeated values are merged with a :class:`GridNote` warning.

    Raises:
        InvalidParameterError: malformed text, more than ``MAX_GRID`` values, or a value ``check`` refuses.
    """
    raw = text.strip()
    if not raw:
        raise _malformed(name, owner, text)
    parts = raw.split(":")
    if len(parts) == 1:
        tokens = raw.split(",")
        if any(not t.strip() for t in tokens):
            raise _malformed(name, owner, text, "empty value in the list")
        if len(tokens) > MAX_GRID:
            raise _malformed(name, owner, f"{text[:40]}... ({len(tokens)} values)", f"at most {MAX_GRID} values")
        values = [_number(t, name, owner, text) for t in tokens]
    elif parts[0].strip().lower() == "log":
        if len(parts) != 4:
            raise _malformed(name, owner, text)
        start, stop = (_number(p, name, owner, text) for p in parts[1:3])
        num = _count(parts[3], name, owner, text)
        if not (start > 0 and stop > 0 and math.isfinite(start) and math.isfinite(stop)):
            raise _malformed(name, owner, text, "log-spaced ends must be finite and > 0")
        values = [10.0**e for e in _linspace(math.log10(start), math.log10(stop), num)]
        values[0], values[-1] = start, stop  # exact ends, no round-off from 10**log10(x)
    elif len(parts) == 3:
        start, stop = (_number(p, name, owner, text) for p in parts[:2])
        num = _count(parts[2], name, owner, text)
        values = _linspace(start, stop, num)
    else:
        raise _malformed(name, owner, text)
    if check is not None:
        values = [check(v, name, owner) for v in values]
    return merge_duplicates(values, name, text) if merge else values


def parse_int_grid(
    text: str, name: str, owner: str, *, low: int = 0, high: int | None = None, merge: bool = True
) -> list[int]:
    """Parse a list ``a,b,c`` or a range ``start:stop`` (both ends kept) of whole numbers in ``[low, high]``.

    At most ``MAX_GRID`` values (a range's size ``stop − start + 1`` is checked before it is built).
    With ``merge`` repeated values are merged with a :class:`GridNote` warning.

    Raises:
        InvalidParameterError: malformed text, a value out of range, or more than ``MAX_GRID`` values.
    """
    raw = text.strip()
    upper = "" if high is None else f" and <= {high}"
    allowed = f"a list of whole numbers >= {low}{upper} ('0,1,2') or a range 'start:stop' ('0:4')"
    too_many = parameter_error(name, owner, f"{allowed}, at most {MAX_GRID} values", text if len(text) <= 60 else text[:60] + "...")
    try:
        if ":" in raw:
            start, stop = (int(p) for p in raw.split(":"))
            if stop < start:
                raise ValueError
            size = stop - start + 1
        else:
            tokens = raw.split(",")
            size = len(tokens)
    except ValueError:
        raise parameter_error(name, owner, allowed, text) from None
    if size > MAX_GRID:
        raise too_many
    try:
        values = list(range(start, stop + 1)) if ":" in raw else [int(t) for t in tokens]
    except ValueError:
        raise parameter_error(name, owner, allowed, text) from None
    if any(v < low or (high is not None and v > high) for v in values):
        raise parameter_error(name, owner, allowed, text)
    return merge_duplicates(values, name, text) if merge else values
