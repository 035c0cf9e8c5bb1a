"""A numeric CSV file read with every problem named: which row, which column, what is wrong.

The file must be a regular file (not a FIFO, a directory or a device: ``/dev/zero`` would never end)
of at most ``MAX_CSV_BYTES``, UTF-8 text, comma-separated (the standard :mod:`csv` dialect: quotes
allowed). The first row is a header when none of its cells is a number; every other non-empty row
must hold as many cells as the first, each a finite number (``float`` syntax; no ``nan``/``inf``).
Empty lines are skipped. Rows and columns in messages count from 1, rows as lines of the file.

Numbers are collected row by row into a C array of doubles, so memory is 8 bytes per cell (at most
``MAX_CSV_BYTES / 2`` cells: ``"0,"`` is the shortest cell), never a Python object per cell.
"""

from __future__ import annotations

import csv
import math
import os
import stat
from array import array
from dataclasses import dataclass

import numpy as np

__all__ = ["MAX_CSV_BYTES", "CsvError", "NumericTable", "read_numeric_csv"]

MAX_CSV_BYTES = 64 * 2**20  # 64 MiB of text: at most 32 M cells, 256 MiB as float64


class CsvError(ValueError):
    """A CSV file that cannot be used; the message says where and why (``row 7, column 3: ...``)."""


@dataclass(frozen=True)
class NumericTable:
    """The cells of a numeric CSV: ``values`` (rows × columns, float64) and the column ``names``."""

    values: np.ndarray
    names: list[str]
    has_header: bool


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def _number(cell: str) -> float | None:
    """The cell as a float, or ``None`` when it is not a number (NaN and infinities are numbers here)."""
    try:
        return float(cell)
    except ValueError:
        return None


def read_numeric_csv(
    path: str | os.PathLike[str], *, min_rows: int = 1, min_columns: int = 1, max_bytes: int = MAX_CSV_BYTES
) -> NumericTable:
    """Read ``path`` as a table of finite numbers with an optional header row.

    Raises:
        CsvError: the file is missing or unreadable, not a regular file, larger than ``max_bytes``, not UTF-8,
            empty, only a header, has fewer than ``min_rows`` data rows or ``min_columns`` columns, a row of
            another length than the first, an empty, non-numeric or non-finite cell (row and column named).
    """
    try:
        info = os.stat(path)  # stat, not open: opening a FIFO would block until a writer comes
    except OSError as exc:
        raise CsvError(f"cannot read it: {exc.strerror or exc}") from None
    if not stat.S_ISREG(info.st_mode):
        raise CsvError(f"{_kind(info.st_mode)}, not a regular file")
    if info.st_size > max_bytes:
        raise CsvError(f"{info.st_size:,} bytes, more than the limit of {max_bytes:,} bytes")
    if info.st_size == 0:
        raise CsvError("the file is empty")
    cells = array("d")
    names: list[str] = []
    width = 0
    n_rows = 0
    has_header = False
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            reader = csv.reader(fh)
            for row in reader:
                if not row or all(not c.strip() for c in row):
                    continue  # an empty line
                line = reader.line_num
                if width == 0:  # the first row: the header, or data
                    width = len(row)
                    parsed = [_number(c) for c in row]
                    if all(v is None for v in parsed):
                        names, has_header = [c.strip() for c in row], True
                        continue
                    names = [f"x{j}" for j in range(width)]
                if len(row) != width:
                    first = "the header" if has_header else "the first row"
                    raise CsvError(f"row {line} has {len(row)} columns, {first} has {width}")
                for j, cell in enumerate(row):
                    text = cell.strip()
                    if not text:
                        raise CsvError(f"row {line}, column {j + 1}: empty cell")
                    value = _number(text)
                    if value is None:
                        header = " (a header row must have no numeric cell)" if n_rows == 0 and not has_header else ""
                        raise CsvError(f"row {line}, column {j + 1}: non-numeric cell {text!r}{header}")
                    if not math.isfinite(value):
                        raise CsvError(f"row {line}, column {j + 1}: non-finite cell {text!r}")
                    cells.append(value)
                n_rows += 1
    except UnicodeDecodeError as exc:
        raise CsvError(f"not UTF-8 text (byte {exc.start})") from None
    except csv.Error as exc:
        raise CsvError(f"not a readable CSV: {exc}") from None
    except OSError as exc:
        raise CsvError(f"cannot read it: {exc.strerror or exc}") from None
    if width == 0:
        raise CsvError("the file has no rows (only empty lines)")
    if n_rows == 0:
        raise CsvError("only a header row, no data rows")
    if width < min_columns:
        raise CsvError(f"{width} column(s); at least {min_columns} are needed")
    if n_rows < min_rows:
        raise CsvError(f"{n_rows} data row(s); at least {min_rows} are needed")
    values = np.frombuffer(cells, dtype=np.float64).reshape(n_rows, width).copy()
    return NumericTable(values, names, has_header)
