"""``ridge-path --data FILE``: the CSV reader names every problem (row, column, what), and refuses what is not
a regular file, before a run is created."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from decaylab.data.csvfile import CsvError, read_numeric_csv
from decaylab.lab.store import Store

GOOD = "a,b,y\n1,2,3\n4,5,6.5\n7,8,9\n"


def _write(tmp_path: Path, text: str | bytes, name: str = "data.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def test_a_good_file_with_and_without_header(tmp_path: Path) -> None:
    table = read_numeric_csv(_write(tmp_path, GOOD))
    assert table.names == ["a", "b", "y"] and table.has_header
    np.testing.assert_array_equal(table.values, [[1, 2, 3], [4, 5, 6.5], [7, 8, 9]])
    table = read_numeric_csv(_write(tmp_path, "1, 2 ,3\n\n4,5,6\r\n"))
    assert table.names == ["x0", "x1", "x2"] and not table.has_header
    np.testing.assert_array_equal(table.values, [[1, 2, 3], [4, 5, 6]])
    # scikit-learn's / NumPy's own writer, with a UTF-8 byte-order mark: read like np.loadtxt reads it
    X = np.random.default_rng(0).normal(size=(5, 3))
    path = tmp_path / "np.csv"
    np.savetxt(path, X, delimiter=",", header="p,q,r", comments="", encoding="utf-8-sig")
    np.testing.assert_array_equal(read_numeric_csv(path).values, np.loadtxt(path, delimiter=",", skiprows=1))


CASES = [
    ("", "the file is empty"),
    ("\n\n", "the file has no rows"),
    ("a,b,y\n", "only a header row, no data rows"),
    ("a,b,y\n1,2,3\n4,5,6\n7,8\n", "row 4 has 2 columns, the header has 3"),
    ("1,2,3\n4,5,6,7\n", "row 2 has 4 columns, the first row has 3"),
    ("a,b,y\n1,2,3\n4,5,6\n7,8,9\n1,2,3\n1,2,3\n1,abc,3\n", "row 7, column 2: non-numeric cell 'abc'"),
    ("a,b,y\n1,2,3\n4,,6\n", "row 3, column 2: empty cell"),
    ("a,b,y\n1,2,3\n4,nan,6\n", "row 3, column 2: non-finite cell 'nan'"),
    ("a,b,y\n1,2,3\n4,5,-inf\n", "row 3, column 3: non-finite cell '-inf'"),
    ("a,b,y\n1,2,3\n4,5,1e999\n", "row 3, column 3: non-finite cell '1e999'"),
    ("age,2020,y\n1,2,3\n", "row 1, column 1: non-numeric cell 'age' (a header row must have no numeric cell)"),
    ("y\n1\n2\n3\n", "1 column(s); at least 2 are needed"),
    ("a,y\n1,2\n3,4\n", "2 data row(s); at least 3 are needed"),
    (b"a,b,y\n1,2,3\n\xff\xfe,1,2\n", "not UTF-8 text"),
]


@pytest.mark.parametrize("text,message", CASES, ids=[m for _, m in CASES])
def test_each_problem_is_named(tmp_path: Path, text: str | bytes, message: str) -> None:
    with pytest.raises(CsvError) as err:
        read_numeric_csv(_write(tmp_path, text), min_rows=3, min_columns=2)
    assert message in str(err.value)


def test_what_is_not_a_regular_file_is_refused_without_opening_it(tmp_path: Path) -> None:
    with pytest.raises(CsvError, match="a directory, not a regular file"):
        read_numeric_csv(tmp_path)
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)  # opening it would block until a writer comes: the test would hang
    with pytest.raises(CsvError, match=r"a FIFO \(named pipe\), not a regular file"):
        read_numeric_csv(fifo)
    with pytest.raises(CsvError, match="a character device, not a regular file"):
        read_numeric_csv("/dev/zero")
    with pytest.raises(CsvError, match="cannot read it: No such file"):
        read_numeric_csv(tmp_path / "missing.csv")


def test_a_file_beyond_the_size_limit_is_refused_before_reading(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD)
    size = len(GOOD)
    with pytest.raises(CsvError, match=f"{size} bytes, more than the limit of {size - 1} bytes"):
        read_numeric_csv(path, max_bytes=size - 1)
    assert read_numeric_csv(path, max_bytes=size).values.shape == (3, 3)


# -- through the command line ---------------------------------------------------------------------
def _refused(cli: Any, tmp_path: Path, data: str, *needles: str, extra: tuple[str, ...] = ()) -> None:
    store = tmp_path / "s.db"
    code, out, err = cli("run", "ridge-path", "--no-figures", "--data", data, *extra, "--store", str(store), "--quiet")
    assert code == 2 and out == "", err
    assert err.startswith("decaylab: error: The '--data' parameter of ridge-path must be") or "--standardize" in err
    assert err.count("\n") == 1, err
    for needle in needles:
        assert needle in err, err
    assert not store.exists() or Store(store).list_runs() == []


def test_cli_names_the_cell(cli: Any, tmp_path: Path) -> None:
    path = _write(tmp_path, "a,b,y\n1,2,3\n4,5,6\n7,8,9\n1,2,3\n1,2,3\n1,2,abc\n")
    _refused(cli, tmp_path, str(path), "row 7, column 3: non-numeric cell 'abc'", f"Got '{path}'.")


def test_cli_refuses_a_fifo_a_device_a_directory(cli: Any, tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    _refused(cli, tmp_path, str(fifo), "a FIFO (named pipe), not a regular file")
    _refused(cli, tmp_path, "/dev/zero", "a character device, not a regular file")
    _refused(cli, tmp_path, str(tmp_path), "a directory, not a regular file")


def test_cli_refuses_a_constant_feature_before_the_run(cli: Any, tmp_path: Path) -> None:
    path = _write(tmp_path, "a,b,y\n1,2,3\n1,5,6\n1,8,9\n1,3,2\n")
    _refused(cli, tmp_path, str(path), "feature 'a' is constant", extra=())
    code, _, err = cli("run", "ridge-path", "--no-figures", "--data", str(path), "--standardize", "no", "--lambd", "1e-3,1",
                       "--store", str(tmp_path / "s.db"), "--out", str(tmp_path / "out"), "--quiet")
    assert code == 0, err
