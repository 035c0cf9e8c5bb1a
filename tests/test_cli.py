"""The command line: output formats, the store round trip, and every bad input (one line, exit 2)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from decaylab.lab.store import Store

FAST = ("--epochs", "5", "--quiet")


def test_run_prints_the_table_and_writes_the_run_directory(cli: Any, tmp_path: Path) -> None:
    code, out, err = cli("run", "d2l-linear", "--epochs", "5", "--out", "here")
    assert code == 0, err
    assert "‖w‖₂" in out and "train loss" in out and "test loss" in out
    for name in ("curves.png", "norms.png", "results.json"):
        assert (tmp_path / "here" / name).stat().st_size > 0
    doc = json.loads((tmp_path / "here" / "results.json").read_text())
    assert [c["params"]["lambd"] for c in doc["configs"]] == [0.0, 3.0]


def test_no_figures_forks_no_worker_draws_nothing_and_says_so(
    cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--no-figures``: the same run, store rows and results.json as with figures, but no figure worker is
    started, the run directory holds results.json alone, and the last line says no figure was drawn."""
    from decaylab.lab.plots import worker

    started: list[str | None] = []

    class CountedWorker(worker.FigureWorker):
        def __init__(self, experiment: str | None = None, *args: Any, **kwargs: Any) -> None:
            started.append(experiment)
            super().__init__(experiment, *args, **kwargs)

    monkeypatch.setattr(worker, "FigureWorker", CountedWorker)
    code, out, err = cli("run", "d2l-linear", "--epochs", "5", "--store", "s.db", "--out", "plain", "--no-figures")
    assert code == 0, err
    assert started == [] and sorted(p.name for p in (tmp_path / "plain").iterdir()) == ["results.json"]
    assert out.splitlines()[-1].endswith("plain/results.json (no figures drawn: --no-figures)")
    code, out, err = cli("run", "d2l-linear", "--epochs", "5", "--store", "s.db", "--out", "drawn")
    assert code == 0, err
    assert started == ["d2l-linear"] and "no figures" not in out
    assert sorted(p.name for p in (tmp_path / "drawn").iterdir()) == ["curves.png", "norms.png", "results.json"]
    plain, drawn = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("plain", "drawn"))
    assert plain["configs"] == drawn["configs"] and plain["summary"] == drawn["summary"]
    assert [r.status for r in Store(tmp_path / "s.db").list_runs()] == ["finished", "finished"]
    for command in (["resume", "--help"], ["sweep", "--help"]):
        code, out, _ = cli(*command)
        assert code == 0 and "--no-figures" in out


def test_default_run_directory_is_named_after_the_run(cli_json: Any, tmp_path: Path) -> None:
    doc = cli_json("run", "d2l-linear", "--no-figures", *FAST)
    assert (tmp_path / "runs" / doc["run_id"] / "results.json").exists()


def test_json_schema(cli_json: Any) -> None:
    doc = cli_json("run", "d2l-linear", "--no-figures", "--lambd", "0,1,3", "--epochs", "7", "--seed", "0,1")
    assert doc["experiment"] == "d2l-linear" and isinstance(doc["run_id"], str)
    assert len(doc["configs"]) == 6
    for config in doc["configs"]:
        assert {"lambd", "seed", "impl"} <= set(config["params"])
        assert set(config["metrics"]) >= {"w_norm", "train_loss", "test_loss"}
        curves = config["curves"]
        assert curves["epoch"] == [1, 2, 3, 4, 5, 6, 7]
        for key in ("train_loss", "test_loss", "w_norm"):
            assert len(curves[key]) == 7 and all(isinstance(v, float) for v in curves[key])
        assert config["metrics"]["test_loss"] == curves["test_loss"][-1]


def test_same_options_and_seed_give_the_same_numbers(cli_json: Any) -> None:
    a = cli_json("run", "d2l-linear", "--no-figures", *FAST, "--seed", "3")
    b = cli_json("run", "d2l-linear", "--no-figures", *FAST, "--seed", "3")
    assert a["run_id"] != b["run_id"]
    assert a["configs"] == b["configs"]
    c = cli_json("run", "d2l-linear", "--no-figures", *FAST, "--seed", "4")
    assert c["configs"][0]["metrics"] != a["configs"][0]["metrics"]


@pytest.mark.parametrize("engine", ["batched", "sequential"])
def test_impl_is_recorded_and_changes_nothing_but_the_code_path(cli_json: Any, engine: str) -> None:
    docs = {
        impl: cli_json("run", "d2l-linear", "--no-figures", *FAST, "--impl", impl, "--engine", engine)
        for impl in ("scratch", "concise", "batched")
    }
    for impl, doc in docs.items():
        assert {c["params"]["impl"] for c in doc["configs"]} == {impl}
    for impl in ("concise", "batched"):
        for x, y in zip(docs["scratch"]["configs"], docs[impl]["configs"], strict=True):
            assert x["metrics"]["test_loss"] == pytest.approx(y["metrics"]["test_loss"], rel=1e-4)


def test_store_round_trip_and_runs_list_show(cli: Any, cli_json: Any, tmp_path: Path) -> None:
    doc = cli_json("run", "d2l-linear", "--no-figures", *FAST, "--store", "s.db")
    listed = cli_json("runs", "list", "--store", "s.db")
    assert [r["run_id"] for r in listed] == [doc["run_id"]]
    assert listed[0]["status"] == "finished" and listed[0]["counts"] == {"done": 2}
    shown = cli_json("runs", "show", doc["run_id"], "--store", "s.db")
    assert shown["configs"] == doc["configs"]
    assert shown["options"]["lambd"] == [0.0, 3.0] and shown["version"] == doc["version"]
    code, out, _ = cli("runs", "show", doc["run_id"], "--store", "s.db")
    assert code == 0 and doc["run_id"] in out and "test loss" in out
    code, out, _ = cli("runs", "list", "--store", "s.db")
    assert code == 0 and doc["run_id"] in out


def test_store_from_the_environment(cli_json: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DECAYLAB_STORE", str(tmp_path / "env.db"))
    doc = cli_json("run", "d2l-linear", "--no-figures", *FAST)
    assert Store(tmp_path / "env.db").get_run(doc["run_id"]) is not None
    assert not (tmp_path / "decaylab.db").exists()


def test_interrupted_run_keeps_earlier_runs_and_marks_itself(
    cli: Any, cli_json: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = cli_json("run", "d2l-linear", "--no-figures", *FAST)
    from decaylab.lab.experiments.d2l_linear import D2LLinear

    original = D2LLinear.run_chunk
    calls = {"n": 0}

    def interrupted(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(D2LLinear, "run_chunk", interrupted)
    code, _, err = cli("run", "d2l-linear", "--no-figures", *FAST, "--lambd", "0,1,2,3", "--engine", "sequential")
    assert code == 130 and "interrupted" in err
    store = Store("decaylab.db")
    runs = {r.run_id: r for r in store.list_runs()}
    assert runs[first["run_id"]].status == "finished"
    (cut,) = [r for r in runs.values() if r.run_id != first["run_id"]]
    assert cut.status == "interrupted" and cut.counts() == {"done": 2, "pending": 2}
    assert store.get_run(first["run_id"]).configs[0].curves  # the earlier run's curves are intact


def test_progress_is_silent_when_stdout_is_not_a_terminal(cli: Any) -> None:
    code, out, err = cli("run", "d2l-linear", "--no-figures", "--epochs", "3")
    assert code == 0 and err == ""
    assert "config-epochs" not in out


def test_list_and_help(cli: Any) -> None:
    code, out, _ = cli("run", "--list")
    assert code == 0 and out.startswith("d2l-linear")
    code, out, _ = cli("run", "d2l-linear", "--help")
    assert code == 0 and "--lambd" in out and "default: 0,3" in out


BAD_INPUTS = [
    (["--lambd", "-1"], "The '--lambd' parameter of d2l-linear must be a float in [0, 1e+18]. Got -1.0."),
    (["--lambd", "nan"], "'--lambd' parameter of d2l-linear must be a float in [0, 1e+18]"),
    (["--lambd", "1,inf"], "'--lambd' parameter of d2l-linear must be a float in [0, 1e+18]"),
    (["--lambd", "1:2"], "'--lambd' parameter of d2l-linear must be a grid"),
    (["--lambd", "log:0:1:4"], "'--lambd' parameter of d2l-linear must be a grid"),
    (["--lr", "0"], "The '--lr' parameter of d2l-linear must be a float in (0, 1e+18]. Got '0'."),
    (["--lr", "-0.1"], "'--lr' parameter of d2l-linear must be a float in (0, 1e+18]"),
    (["--lr", "fast"], "'--lr' parameter of d2l-linear must be a float in (0, 1e+18]. Got 'fast'."),
    (["--batch-size", "0"], "'--batch-size' parameter of d2l-linear must be an int in [1, 1000000000]"),
    (["--batch-size", "21"], "'--batch-size' parameter of d2l-linear must be an int in [1, n_train=20]. Got 21."),
    (["--epochs", "2.5"], "'--epochs' parameter of d2l-linear must be an int in [1, 1000000]"),
    (["--impl", "fast"], "'--impl' parameter of d2l-linear must be one of {'batched', 'scratch', 'concise'}"),
    (["--seed", "-3"], "'--seed' parameter of d2l-linear must be a list of whole numbers"),
    (["--bogus", "1"], "unrecognized arguments: --bogus 1"),
    (["--chunk", "0"], "'--chunk' parameter of decaylab run must be an int in [1, inf)"),
]


@pytest.mark.parametrize("args,message", BAD_INPUTS, ids=[" ".join(a) for a, _ in BAD_INPUTS])
def test_bad_input_is_one_line_and_exit_2(cli: Any, args: list[str], message: str, tmp_path: Path) -> None:
    code, out, err = cli("run", "d2l-linear", "--no-figures", *args)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1 and "Traceback" not in err
    assert message in err
    assert not (tmp_path / "decaylab.db").exists() or Store("decaylab.db").list_runs() == []


def test_unknown_experiment_and_command(cli: Any) -> None:
    code, _, err = cli("run", "d2l-quadratic", "--no-figures")
    assert code == 2 and err.count("\n") == 1
    assert "The 'EXPERIMENT' parameter of decaylab run must be one of {" in err and "'d2l-quadratic'" in err
    code, _, err = cli("sprint")
    assert code == 2 and "'COMMAND'" in err


def test_unknown_run_id(cli: Any) -> None:
    Store("decaylab.db").close()  # an empty store: reading commands never create one
    code, _, err = cli("runs", "show", "nope")
    assert code == 2 and "'nope'" in err and err.count("\n") == 1


def test_out_not_writable(cli: Any, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = cli("run", "d2l-linear", "--no-figures", *FAST, "--out", str(blocker / "sub"))
    assert code == 2 and err.count("\n") == 1
    assert "The '--out' parameter of decaylab run must be a writable directory" in err
    assert not (tmp_path / "decaylab.db").exists()  # nothing was run or stored


@pytest.mark.parametrize("kind", ["text", "sqlite-of-another-app", "directory"])
def test_foreign_store_is_refused_and_left_untouched(cli: Any, tmp_path: Path, kind: str) -> None:
    path = tmp_path / "foreign.db"
    if kind == "text":
        path.write_text("my thesis, chapter 3\n")
    elif kind == "directory":
        path.mkdir()
    else:
        conn = sqlite3.connect(path)
        conn.execute("CREATE TABLE notes (body TEXT)")
        conn.execute("INSERT INTO notes VALUES ('keep me')")
        conn.commit()
        conn.close()
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    code, out, err = cli("run", "d2l-linear", "--no-figures", *FAST, "--store", str(path))
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "The '--store' parameter of decaylab must be a decaylab database" in err and "left untouched" in err
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    assert after == before  # same files, same bytes: no journal, no tables added


def test_console_script_flushes_its_output_and_keeps_the_exit_code() -> None:
    """`decaylab` is `cli.console`: `main`, a flush, `os._exit` (no interpreter teardown).

    Piped output is block-buffered, so without the flush `os._exit` would lose it.
    """
    import os
    import subprocess
    import sys

    import tomllib

    from decaylab.lab.experiments import list_experiments

    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert pyproject["project"]["scripts"]["decaylab"] == "decaylab.lab.cli:console"
    buffered = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    listing = subprocess.run(
        [sys.executable, "-m", "decaylab.lab.cli", "run", "--list"], capture_output=True, text=True, env=buffered
    )
    assert listing.returncode == 0, listing.stderr
    assert [line.split()[0] for line in listing.stdout.splitlines()] == [e.name for e in list_experiments()]
    bad = subprocess.run(
        [sys.executable, "-m", "decaylab.lab.cli", "run", "d2l-linear", "--lr", "0"], capture_output=True, text=True, env=buffered
    )
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.count("\n") == 1 and "--lr" in bad.stderr
    if Path("/dev/full").exists():  # output that cannot be written is not a success
        with open("/dev/full", "w") as full:
            lost = subprocess.run([sys.executable, "-m", "decaylab.lab.cli", "--version"], stdout=full, stderr=subprocess.PIPE,
                                  text=True, env=buffered)
        assert lost.returncode == 120 and "could not write the output" in lost.stderr


def test_listing_and_help_do_not_import_torch() -> None:
    """`run --list`, `--help` and bad-input errors answer at once: importing torch alone takes ~2 s."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from decaylab.lab.cli import main\n"
        "main(['run', '--list'])\n"
        "for name in ('d2l-linear', 'sparsity', 'constraint', 'scaling'):\n"
        "    try:\n"
        "        main(['run', name, '--help'])\n"
        "    except SystemExit:\n"
        "        pass\n"
        "assert main(['run', 'd2l-linear', '--lr', '0']) == 2\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
