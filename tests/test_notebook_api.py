"""The notebook API: decaylab.lab.run / runs / load and Run, against the CLI doing the same thing."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import decaylab.lab as lab
from decaylab import InvalidParameterError
from decaylab.lab.store import Store

SMALL = {"lambd": [0, 3], "epochs": 12}
SMALL_ARGV = ("--lambd", "0,3", "--epochs", "12")


def _same(a: Any, b: Any) -> bool:
    """Equal, NaN equal to NaN and to the document's null."""
    if isinstance(a, float) and math.isnan(a):
        return b is None or (isinstance(b, float) and math.isnan(b))
    return a == b


def test_run_gives_the_numbers_of_the_cli(cli_json: Any) -> None:
    doc = cli_json("run", "d2l-linear", "--no-figures", *SMALL_ARGV, "--store", "s.db", "--quiet")
    r = lab.run("d2l-linear", store="s.db", **SMALL)
    assert r.status == "finished" and r.experiment == "d2l-linear" and r.id != doc["run_id"]
    assert len(r.results) == len(doc["configs"]) == 2
    for mine, theirs in zip(r.results, doc["configs"], strict=True):
        assert mine.params == theirs["params"] and mine.status == theirs["status"]
        assert mine.metrics == theirs["metrics"]  # the same process, the same kernels: bit for bit
        assert mine.curves == theirs["curves"]
    assert json.loads(json.dumps(r.summary)) == doc["summary"]
    stored = Store("s.db").get_run(r.id, curves=False)
    cli_stored = Store("s.db").get_run(doc["run_id"], curves=False)
    assert stored is not None and cli_stored is not None
    assert stored.raw_options == cli_stored.raw_options and stored.options == cli_stored.options
    assert stored.command == "decaylab run d2l-linear --lambd 0,3 --epochs 12"
    # the run directory as the CLI writes it
    assert json.loads((Path("runs") / r.id / "results.json").read_text())["configs"][0]["metrics"] == doc["configs"][0]["metrics"]


def test_table_is_the_terminal_table_with_numbers_as_numbers() -> None:
    r = lab.run("d2l-linear", store="s.db", **SMALL)
    table = r.table
    assert list(table.columns) == ["λ", "seed", "‖w‖₂", "train loss", "test loss", "status"]
    assert table["λ"].tolist() == [0.0, 3.0] and str(table["seed"].dtype) == "int64"
    for column in ("‖w‖₂", "train loss", "test loss"):
        assert str(table[column].dtype) == "float64"
    assert table["test loss"].tolist() == [c.metrics["test_loss"] for c in r.results]
    assert table["status"].tolist() == ["done", "done"]
    assert "12 epochs" in table.attrs["title"]
    text = repr(r)
    assert r.id in text and "test loss" in text and "d2l-linear" in text


def test_load_reads_the_run_back_and_runs_lists_the_store() -> None:
    first = lab.run("d2l-linear", store="s.db", **SMALL)
    second = lab.run("d2l-linear", store="s.db", lambd="0:3:4", seed=[0, 1], epochs=5, out="elsewhere")
    loaded = lab.load(first.id, store="s.db")
    assert loaded.table.equals(first.table) and loaded.summary == json.loads(json.dumps(first.summary))
    assert [c.curves for c in loaded.results] == [c.curves for c in first.results]
    frame = lab.runs("s.db")
    assert frame["id"].tolist() == [second.id, first.id]  # newest first
    assert frame["options"].tolist() == ["lambd=0:3:4 epochs=5 seed=0,1", "epochs=12"]  # lambd=0,3 is the default
    assert frame["done"].tolist() == [8, 2] and frame["configs"].tolist() == [8, 2]
    assert frame["status"].tolist() == ["finished", "finished"]
    assert str(frame["created"].dtype).startswith("datetime64")
    assert (Path("elsewhere") / "results.json").is_file()
    assert lab.runs("missing.db").empty
    with pytest.raises(InvalidParameterError, match="'run_id' parameter of decaylab.lab.load must be the id of a run"):
        lab.load("20200101-000000-000000", store="s.db")


def test_figures_are_drawn_on_demand(tmp_path: Path) -> None:
    r = lab.run("d2l-linear", store="s.db", **SMALL)
    assert sorted(p.name for p in r.figures) == ["curves.png", "norms.png"]
    loaded = lab.load(r.id, store="s.db", out=tmp_path / "again")
    assert not (tmp_path / "again").exists()
    paths = loaded.figures
    assert sorted(p.name for p in paths) == ["curves.png", "norms.png"]
    for p in paths:
        assert p.parent == tmp_path / "again" and p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    paths[0].unlink()
    assert all(p.exists() for p in loaded.figures)  # a missing one is drawn again


def test_curves(tmp_path: Path) -> None:
    r = lab.run("d2l-linear", store="s.db", **SMALL)
    one = r.curves(1)
    assert list(one.columns) == ["epoch", "train_loss", "test_loss", "w_norm"]
    assert one["test_loss"].tolist() == r.results[1].curves["test_loss"]
    assert one["epoch"].tolist() == [float(e) for e in range(1, 13)]
    long = r.curves_frame()
    assert len(long) == 24 and long["lambd"].tolist() == [0.0] * 12 + [3.0] * 12
    assert long[long["idx"] == 0]["w_norm"].tolist() == r.results[0].curves["w_norm"]
    with pytest.raises(InvalidParameterError, match=r"'idx' parameter of Run.curves must be an int in \[0, 1\]"):
        r.curves(2)


@pytest.mark.parametrize(
    ("options", "argv"),
    [
        ({"lambd": [-1]}, ("--lambd", "-1")),
        ({"lambd": "0:1:x"}, ("--lambd", "0:1:x")),
        ({"epochs": 0}, ("--epochs", "0")),
        ({"epochs": 2.5}, ("--epochs", "2.5")),
        ({"batch_size": 50}, ("--batch-size", "50")),  # a combination: more than n_train
        ({"seed": "x"}, ("--seed", "x")),
        ({"impl": "fast"}, ("--impl", "fast")),
        ({"lr": float("nan")}, ("--lr", "nan")),
        ({"dim": 10**9}, ("--dim", str(10**9))),  # the data budget
    ],
)
def test_bad_input_raises_the_cli_message(cli: Any, options: dict[str, Any], argv: tuple[str, ...]) -> None:
    code, _, err = cli("run", "d2l-linear", "--no-figures", *argv, "--store", "s.db", "--quiet")
    assert code == 2 and err.startswith("decaylab: error: ") and err.count("\n") == 1, err
    with pytest.raises(InvalidParameterError) as caught:
        lab.run("d2l-linear", store="s.db", **options)
    assert f"decaylab: error: {caught.value}\n" == err
    assert not Path("s.db").exists()  # refused before anything is stored


def test_bad_store_and_names_raise(cli: Any, tmp_path: Path) -> None:
    Path("notes.txt").write_text("not a database\n")
    code, _, err = cli("run", "d2l-linear", "--no-figures", "--store", "notes.txt", "--quiet")
    with pytest.raises(InvalidParameterError) as caught:
        lab.run("d2l-linear", store="notes.txt")
    assert f"decaylab: error: {caught.value}\n" == err and code == 2
    assert Path("notes.txt").read_text() == "not a database\n"
    code, _, err = cli("run", "no-such-experiment", "--no-figures")
    with pytest.raises(InvalidParameterError) as caught:
        lab.run("no-such-experiment")
    assert f"decaylab: error: {caught.value}\n" == err
    with pytest.raises(InvalidParameterError, match="'lamb' parameter of decaylab.lab.run\\('d2l-linear'\\) must be the name of one"):
        lab.run("d2l-linear", lamb=[0, 3])
    with pytest.raises(InvalidParameterError, match="'--lambd' parameter of d2l-linear must be a number, a string, or a list"):
        lab.run("d2l-linear", lambd={"a": 1})
    with pytest.raises(InvalidParameterError, match="'--chunk' parameter of decaylab run must be an int"):
        lab.run("d2l-linear", chunk=0)
    with pytest.raises(InvalidParameterError, match="'--engine' parameter"):
        lab.run("d2l-linear", engine="fast")
    assert not Path("decaylab.db").exists()


def test_figures_leave_the_notebooks_matplotlib_as_it_was() -> None:
    import matplotlib

    matplotlib.use("svg")
    import matplotlib.pyplot as plt

    dpi = plt.rcParams["figure.dpi"]
    grid = plt.rcParams["axes.grid"]
    lab.run("d2l-linear", store="s.db", **SMALL)
    assert matplotlib.get_backend() == "svg"
    assert plt.rcParams["figure.dpi"] == dpi and plt.rcParams["axes.grid"] == grid
    matplotlib.use("agg")


def test_html_is_the_report_page_in_an_iframe() -> None:
    import html

    from decaylab.lab.report import run_page
    from decaylab.lab.store import Store

    r = lab.run("d2l-linear", store="s.db", **SMALL)
    shown = r._repr_html_()
    assert shown.startswith("<iframe") and shown.count("<iframe") == 1 and "<table" not in shown  # all of it escaped
    page = html.unescape(shown.split('srcdoc="', 1)[1].split('" style=', 1)[0])
    with Store("s.db", create=False, readonly=True) as store:
        assert page == run_page(store, r.id)
    assert r.id in page and "<table" in page and "test loss" in page and "data:image/png;base64," in page


def test_import_decaylab_lab_stays_cheap() -> None:
    code = "import sys, decaylab.lab; print(sorted(m for m in ('torch', 'pandas', 'matplotlib') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    assert {"run", "runs", "load", "Run"} <= set(dir(lab))
    with pytest.raises(AttributeError):
        lab.no_such_name  # noqa: B018


def test_option_values_become_the_cli_text() -> None:
    import numpy as np

    from decaylab.lab.notebook import option_text

    assert option_text([0, 3], "--lambd", "x") == "0,3"
    assert option_text((1e-3, 0.5), "--lambd", "x") == "0.001,0.5"
    assert option_text(range(3), "--seed", "x") == "0,1,2"
    assert option_text(np.array([0.0, 3.0]), "--lambd", "x") == "0.0,3.0"
    assert option_text(np.int64(7), "--epochs", "x") == "7"
    assert option_text("log:1e-4:1:32", "--lambd", "x") == "log:1e-4:1:32"
    assert option_text(True, "--decay-bias", "x") == "true"
    for bad in ([], [[1, 2]], None, {"a": 1}):
        with pytest.raises(InvalidParameterError, match="'--lambd' parameter of x must be"):
            option_text(bad, "--lambd", "x")


def test_grid_notes_are_warnings_and_grid_syntax_passes() -> None:
    from decaylab.lab.grid import GridNote

    with pytest.warns(GridNote, match="1 duplicate value"):
        r = lab.run("d2l-linear", store="s.db", lambd=[1, 1, 2], epochs=3)
    assert [c.params["lambd"] for c in r.results] == [1.0, 2.0]
    r = lab.run("d2l-linear", store="s.db", lambd="0:3:4", epochs=3)
    assert [c.params["lambd"] for c in r.results] == [0.0, 1.0, 2.0, 3.0]


def test_verdict_is_one_line() -> None:
    r = lab.run("d2l-linear", store="s.db", **SMALL)
    r._summary = {"verdict": ["(a) holds:  x = 1", "(b) does not\n hold"]}
    assert r.verdict == "(a) holds: x = 1; (b) does not hold"
    r._summary = {"verdict": "holds —\n the test loss falls"}
    assert r.verdict == "holds — the test loss falls"
    r._summary = {"by_lambda": []}
    assert r.verdict is None
