"""The grid syntax of swept options.

=====================  ==============================================  ==========================
syntax                 meaning                                         example
=====================  ==============================================  ==========================
``a,b,c``              these values                                    ``--lambd 0,3``
``start:stop:num``     ``num`` evenly spaced values, both ends kept    ``--lambd 0:10:64``
``log:start:stop:num`` ``num`` log-spaced values, both ends kept       ``--lambd log:1e-4:1:32``
=====================  ==============================================  ==========================

Every value is then checked by the option's own rule (for λ: a finite float ≥ 0).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from decaylab.validation import InvalidParameterError, parameter_error

__all__ = ["GRID_SYNTAX", "parse_float_grid", "parse_int_grid"]

GRID_SYNTAX = "a grid: a list 'a,b,c', 'start:stop:num' or 'log:start:stop:num'"
MAX_GRID = 100_000


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
    try:
        num = int(token)
    except ValueError:
        raise _malformed(name, owner, text, f"num {token.strip()!r} is not a whole number") from None
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
) -> list[float]:
    """Parse ``text`` in the grid syntax into a list of floats, each passed through ``check``.

    ``name`` and ``owner`` go into the error message (``The '--lambd' parameter of d2l-linear ...``).
    """
    raw = text.strip()
    if not raw:
        raise _malformed(name, owner, text)
    parts = raw.split(":")
    if len(parts) == 1:
        tokens = raw.split(",")
        if any(not t.strip() for t in tokens):
            raise _malformed(name, owner, text, "empty value in the list")
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
    return values


def parse_int_grid(text: str, name: str, owner: str, *, low: int = 0) -> list[int]:
    """Parse a list ``a,b,c`` or a range ``start:stop`` (both ends kept) of whole numbers ``>= low``."""
    raw = text.strip()
    allowed = f"a list of whole numbers >= {low} ('0,1,2') or a range 'start:stop' ('0:4')"
    try:
        if ":" in raw:
            start, stop = (int(p) for p in raw.split(":"))
            if stop < start or stop - start >= MAX_GRID:
                raise ValueError
            values = list(range(start, stop + 1))
        else:
            values = [int(t) for t in raw.split(",")]
    except ValueError:
        raise parameter_error(name, owner, allowed, text) from None
    if any(v < low for v in values):
        raise parameter_error(name, owner, allowed, text)
    return values
