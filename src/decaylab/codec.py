"""Numbers as bytes for the store, and numbers as JSON lists, both done by numpy rather than per float.

A configuration's curves (name -> one value per epoch) or final metrics (name -> one number) are packed
into one little-endian record::

    b"DLA1" | header length (uint32 LE) | header (UTF-8 JSON: [[name, kind, n], ...]) | payloads

``kind`` says how each entry's payload is laid out:

* ``f4`` / ``f8``: ``n`` float32 / float64 values (``<f4`` / ``<f8``). A list of floats is stored as
  float32 when every value survives the round trip float64 -> float32 -> float64 unchanged (NaN as NaN,
  ±inf as ±inf) — which holds for every value the engine reads out of a float32 tensor — and as float64
  otherwise, so unpacking gives back exactly the floats that were packed;
* ``i8``: ``n`` int64 values (a list of Python ints);
* ``rf`` / ``ri``: the range 1, 2, …, n as floats / ints, no payload (the ``epoch`` curve);
* ``sf`` / ``si``: one float64 / int64 number (a metric), 8 bytes.

:func:`pack` returns ``None`` for anything else (strings, booleans, ``None``, nested lists, a list mixing
ints and floats): the store then keeps that row as JSON text, as before schema 3. :func:`json_list`
turns a list of numbers into a strict-JSON list (NaN and ±inf as ``None``) with one numpy pass.
"""

from __future__ import annotations

import functools
import json
import math
import struct
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["MAGIC", "json_list", "pack", "unpack"]

MAGIC = b"DLA1"
_LENGTH = struct.Struct("<I")
_F4, _F8, _I8 = np.dtype("<f4"), np.dtype("<f8"), np.dtype("<i8")


def _entry(name: str, value: Any) -> tuple[list[Any], bytes] | None:
    """The header entry and payload of one value, or ``None`` if it has no binary form."""
    kind = type(value)
    if kind is float:
        return [name, "sf", 1], struct.pack("<d", value)
    if kind is int:
        if not -(2**63) <= value < 2**63:
            return None
        return [name, "si", 1], struct.pack("<q", value)
    if not isinstance(value, (list, tuple, np.ndarray)):
        return None
    n = len(value)
    if n == 0:
        return [name, "f4", 0], b""
    if isinstance(value, np.ndarray):
        arr = value
        if arr.ndim != 1 or arr.dtype.kind not in "fiu":
            return None
    else:
        types = set(map(type, value))
        if types != {float} and types != {int}:
            return None  # strings, None, booleans, nested lists, ints mixed with floats: JSON text
        try:
            arr = np.array(value, dtype=_F8 if types == {float} else None)
        except OverflowError:  # ints beyond int64
            return None
    if arr.dtype.kind in "iu":
        if not np.array_equal(arr.astype(_I8), arr):
            return None
        if np.array_equal(arr, np.arange(1, n + 1)):
            return [name, "ri", n], b""
        return [name, "i8", n], arr.astype(_I8).tobytes()
    if arr.dtype.kind != "f":
        return None
    wide = arr.astype(_F8)
    if np.array_equal(wide, np.arange(1, n + 1, dtype=_F8)):
        return [name, "rf", n], b""
    narrow = wide.astype(_F4)
    if np.array_equal(narrow.astype(_F8), wide, equal_nan=True):
        return [name, "f4", n], narrow.tobytes()
    return [name, "f8", n], wide.tobytes()


def pack(values: Mapping[str, Any]) -> bytes | None:
    """``values`` (name -> list of numbers, or name -> number) as one record, or ``None`` when some value
    has no binary form (see the module docstring); ``unpack(pack(v))`` gives back ``v`` exactly."""
    header, payloads = [], []
    with np.errstate(over="ignore", invalid="ignore"):  # float64 -> float32 overflow is checked, not warned
        for name, value in values.items():
            entry = _entry(name, value)
            if entry is None:
                return None
            header.append(entry[0])
            payloads.append(entry[1])
    head = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    return b"".join([MAGIC, _LENGTH.pack(len(head)), head, *payloads])


def unpack(blob: bytes, names: set[str] | None = None) -> dict[str, Any]:
    """The values packed by :func:`pack` (lists of Python floats/ints, or numbers), only ``names`` if given.

    Raises ``ValueError`` if ``blob`` is not such a record (damaged, or written by another program).
    """
    if blob[:4] != MAGIC or len(blob) < 8:
        raise ValueError("not a packed decaylab record (wrong magic bytes)")
    (size,) = _LENGTH.unpack_from(blob, 4)
    header = _header(bytes(blob[8 : 8 + size]))
    out: dict[str, Any] = {}
    offset = 8 + size
    for name, kind, n in header:
        if kind in ("f4", "f8", "i8"):
            dtype = _F4 if kind == "f4" else _F8 if kind == "f8" else _I8
            end = offset + n * dtype.itemsize
            if end > len(blob):
                raise ValueError("damaged record (shorter than its header says)")
            if names is None or name in names:
                out[name] = np.frombuffer(blob, dtype, n, offset).tolist()
            offset = end
        elif kind in ("rf", "ri"):
            if names is None or name in names:
                out[name] = np.arange(1, n + 1, dtype=_F8 if kind == "rf" else _I8).tolist()
        elif kind in ("sf", "si"):
            if offset + 8 > len(blob):
                raise ValueError("damaged record (shorter than its header says)")
            if names is None or name in names:
                out[name] = struct.unpack_from("<d" if kind == "sf" else "<q", blob, offset)[0]
            offset += 8
        else:
            raise ValueError(f"damaged record (unknown kind {kind!r})")
    return out


@functools.lru_cache(maxsize=256)
def _header(text: bytes) -> tuple[tuple[str, str, int], ...]:
    """A record's header, parsed once per distinct header (a run's rows share a handful)."""
    try:
        return tuple((str(name), str(kind), int(n)) for name, kind, n in json.loads(text))
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError, ValueError) as exc:
        raise ValueError(f"damaged record header ({exc})") from None


def json_list(values: Any) -> list[Any]:
    """``values`` (a list of numbers, or of lists of numbers) as a new list for strict JSON: NaN and ±inf
    become ``None``. Vectorized: one numpy pass, then ``tolist``; anything numpy cannot take as one
    numeric array (ragged lists, ``None`` inside) goes value by value."""
    if isinstance(values, np.ndarray):
        values = values.tolist()  # Python numbers, which json knows
    if len(values) == 0:
        return []
    try:
        arr = np.asarray(values)
    except (ValueError, OverflowError):
        arr = None
    if arr is not None and arr.dtype.kind in "iub" and arr.ndim == 1:
        return list(values)
    if arr is not None and arr.dtype.kind == "f" and arr.ndim == 1:
        finite = np.isfinite(arr)
        if finite.all():
            return list(values)
        kept = np.array(values, dtype=object)  # the original Python numbers, so ints stay ints
        kept[~finite] = None
        return kept.tolist()
    return [json_list(v) if isinstance(v, (list, tuple, np.ndarray)) else _finite_or_none(v) for v in values]


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
