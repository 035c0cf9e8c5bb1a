"""Bad input on the command line: refused up front (before a run is created), one line, exit 2.

Each case goes through ``decaylab.lab.cli.main`` in-process with ``--store tmp_path/s.db`` and checks
the exit code, that stderr is one line naming the option, and that the store holds no run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from decaylab.lab.store import Store


def _no_run_stored(path: Path) -> bool:
    if not path.exists():
        return True
    store = Store(path)
    try:
        return store.list_runs() == []
    finally:
        store.close()


def _refused(cli: Any, tmp_path: Path, experiment: str, args: list[str], *needles: str) -> str:
    store = tmp_path / "s.db"
    code, out, err = cli("run", experiment, "--no-figures", *args, "--store", str(store), "--quiet")
    assert code == 2, err
    assert out == ""
    assert err.startswith("decaylab: error: The ") and err.count("\n") == 1, err
    for needle in needles:
        assert needle in err, err
    assert _no_run_stored(store)
    return err


# -- the number of configurations, each grid's size ---------------------------------------------
SIZES = [
    # the product of two grids that are each allowed: 10^10 configurations, refused from the sizes
    ("d2l-linear", ["--lambd", "0:1:100000", "--seed", "0:99999"],
     ("'--lambd'", "at most 1,000,000 configurations", "10,000,000,000 from 100000 --lambd, 100000 --seed")),
    ("d2l-linear", ["--lambd", "0:1:1e12"], ("'--lambd'", "num must be in [1, 100000]", "'0:1:1e12'")),
    ("d2l-linear", ["--seed", "0:99999999999"], ("'--seed'", "at most 100000 values")),
    ("d2l-linear", ["--lambd", "0:10:100000", "--epochs", "1000"],
     ("'--epochs'", "configurations × epochs ≤ 10,000,000", "100,000 configurations", "Got 1000.")),
    ("dropout-mlp", ["--wd", "0:1:100000", "--seed", "0:50"], ("'--wd'", "10,200,102 from 4 --variants")),
    ("l2-vs-decay", ["--wd", "log:1e-3:1:100000", "--seed", "0:20"], ("'--wd'", "12,600,000 from")),
    ("scaling", ["--lambd-half", "log:1e-6:1e-3:100000", "--m", "16:40"], ("'--lambd-half'", "at most 1,000,000")),
    ("sparsity", ["--lambd", "log:1e-3:1:100000", "--seed", "0:10"], ("'--lambd'", "3,300,000 from")),
    ("constraint", ["--lambd", "log:1e-3:1:100000", "--seed", "0:10"], ("'--lambd'", "1,100,000 from")),
    ("noise-tikhonov", ["--sigma", "0:1:100000", "--seed", "0:10"], ("'--sigma'", "1,100,000 from")),
]


@pytest.mark.parametrize("experiment,args,needles", SIZES, ids=[f"{e} {' '.join(a)}" for e, a, _ in SIZES])
def test_runs_beyond_the_size_bounds_are_refused(cli: Any, tmp_path: Path, experiment: str, args: list[str],
                                                 needles: tuple[str, ...]) -> None:
    _refused(cli, tmp_path, experiment, args, *needles)


# -- magnitudes and sizes the machine cannot represent or hold ----------------------------------
BOUNDS = [
    ("d2l-linear", ["--epochs", "99999999999999999999"], ("'--epochs'", "an int in [1, 1000000]")),
    ("d2l-linear", ["--dim", "1e20"], ("'--dim'", "an int in [1, 1000000000]")),
    ("d2l-linear", ["--dim", "100000000"], ("'--dim'", "(n_train + n_test)·dim·4 bytes = 44.7 GiB", "1 GiB budget")),
    ("d2l-linear", ["--n-train", "300000000", "--dim", "1"], ("'--n-train'", "1.12 GiB here")),
    ("d2l-linear", ["--lambd", "1e19"], ("'--lambd'", "a float in [0, 1e+18]")),
    ("d2l-linear", ["--lr", "1e300"], ("'--lr'", "a float in (0, 1e+18]")),
    ("d2l-linear", ["--seed", "4294967296"], ("'--seed'", "<= 4294967295")),
    ("noise-tikhonov", ["--sigma", "1e308"], ("'--sigma'", "a float in [0, 1e+18]")),
    ("noise-tikhonov", ["--dim", "100000", "--n-train", "100001"], ("'--n-train'", "GiB here")),
    ("ridge-path", ["--lambd", "1e308"], ("'--lambd'", "a float in (0, 1e+18]")),
    ("ridge-path", ["--data", "synthetic", "--n-train", "100000", "--dim", "100000"],
     ("'--dim'", "n_train·dim·8 bytes = 74.5 GiB")),
    ("sparsity", ["--noise", "1e200"], ("'--noise'", "[0, 1e+18]")),
    ("sparsity", ["--dim", "20000000"], ("'--dim'", "(n_train + n_test)·dim·8 bytes")),
    ("sparsity", ["--epochs", "1000001"], ("'--epochs'", "[1, 1000000]")),
    ("constraint", ["--dim", "10000000", "--n-train", "10000001"], ("'--n-train'", "n_train·dim·8 bytes")),
    ("scaling", ["--n-val", "999999999"], ("'--n-val'", "GiB here")),
    ("scaling", ["--hidden", "50000,50000"], ("'--hidden'", "parameters × 4 bytes", "Got '50000,50000'")),
    ("scaling", ["--hidden", "1000000"], ("'--hidden'", "<= 100000")),
    ("dropout-mlp", ["--hidden", "100000,100000"], ("'--hidden'", "37.3 GiB")),
    ("l2-vs-decay", ["--hidden", "60000,60000"], ("'--hidden'", "GiB here")),
    ("l2-vs-decay", ["--lr-adam", "inf"], ("'--lr-adam'", "(0, 1e+18]")),
]


@pytest.mark.parametrize("experiment,args,needles", BOUNDS, ids=[f"{e} {' '.join(a)}" for e, a, _ in BOUNDS])
def test_values_beyond_what_the_machine_holds_are_refused(cli: Any, tmp_path: Path, experiment: str,
                                                          args: list[str], needles: tuple[str, ...]) -> None:
    _refused(cli, tmp_path, experiment, args, *needles)


def test_the_largest_values_allowed_still_run(cli: Any, tmp_path: Path) -> None:
    """The bounds are not tighter than they say: λ = σ = 1e18 train (and diverge or not) without a crash."""
    code, out, err = cli("run", "noise-tikhonov", "--no-figures", "--sigma", "0,1e18", "--seed", "0", "--epochs", "2",
                         "--store", str(tmp_path / "s.db"), "--json")
    assert code == 0, err
    statuses = [c["status"] for c in json.loads(out)["configs"]]
    assert statuses[0] == "done" and statuses[1] in ("done", "diverged")
    code, _, err = cli("run", "ridge-path", "--lambd", "1e-3,1,1e18", "--store", str(tmp_path / "s.db"),
                       "--out", str(tmp_path / "rp"), "--quiet")
    assert code == 0, err
    assert (tmp_path / "rp" / "ridge_path.png").stat().st_size > 0


# -- duplicated grid values ----------------------------------------------------------------------
def test_duplicated_grid_values_are_merged_with_one_note(cli: Any, tmp_path: Path) -> None:
    code, out, err = cli("run", "d2l-linear", "--no-figures", "--lambd", "1,1,2", "--seed", "0,0", "--epochs", "2",
                         "--store", str(tmp_path / "s.db"), "--json")
    assert code == 0, err
    assert err.splitlines() == [
        "decaylab: note: --lambd '1,1,2': 1 duplicate value(s) (1) merged; 2 distinct value(s) are trained",
        "decaylab: note: --seed '0,0': 1 duplicate value(s) (0) merged; 1 distinct value(s) are trained",
    ]
    assert [c["params"]["lambd"] for c in json.loads(out)["configs"]] == [1.0, 2.0]
    # showing the stored run parses its options again, without repeating the note
    run_id = json.loads(out)["run_id"]
    code, _, err = cli("runs", "show", run_id, "--store", str(tmp_path / "s.db"))
    assert code == 0 and err == ""


COUNTED = [
    ("d2l-linear", {"lambd": "0:1:7", "seed": "0:2"}),
    ("dropout-mlp", {"variants": "none,decay,both", "wd": "0.001,0.002", "seed": "0,1"}),
    ("l2-vs-decay", {"wd": "0.001,0.01", "variants": "sgd-l2,adam-l2"}),
    ("noise-tikhonov", {}),
    ("scaling", {"m": "16,32"}),
    ("sparsity", {"methods": "l1,l2", "seed": "0,1"}),
    ("constraint", {"seed": "0,1"}),
    ("ridge-path", {}),
]


@pytest.mark.parametrize("experiment,given", COUNTED, ids=[e for e, _ in COUNTED])
def test_the_count_checked_up_front_is_the_number_of_configurations(experiment: str, given: dict[str, str]) -> None:
    """The bound is checked on n_configs (from the grid sizes); it must be what configs() then expands to."""
    from decaylab.lab.experiments import get_experiment
    from experiment_helpers import options

    exp = get_experiment(experiment)
    for texts in ({}, given):
        opts = options(exp, **texts)
        assert exp.n_configs(opts) == len(exp.configs(opts))


def test_a_repeated_training_set_size_is_merged(cli: Any, tmp_path: Path) -> None:
    """``scaling --m 16,16`` (refused before duplicates were merged) now trains 16 once, with the note."""
    code, out, err = cli("run", "scaling", "--no-figures", "--m", "16,16,32", "--lambd-half", "0.01,0.1", "--lambd-mean", "0.1,1",
                         "--seed", "0", "--epochs", "3", "--n-val", "50", "--store", str(tmp_path / "s.db"), "--json")
    assert code == 0, err
    assert err == "decaylab: note: --m '16,16,32': 1 duplicate value(s) (16) merged; 2 distinct value(s) are trained\n"
    assert sorted({c["params"]["m"] for c in json.loads(out)["configs"]}) == [16, 32]


def test_refused_input_prints_the_error_alone_without_the_note(cli: Any, tmp_path: Path) -> None:
    _refused(cli, tmp_path, "d2l-linear", ["--lambd", "1,1,2", "--batch-size", "21"], "'--batch-size'")


@pytest.mark.parametrize("store", [" ", "", "s.db "])
def test_a_store_path_with_spaces_at_its_ends_is_refused_and_no_file_is_made(store: str, tmp_path: Path, cli: Any,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = cli("runs", "list", "--store", store)
    assert code == 2 and err.count("\n") == 1 and "'--store'" in err and "spaces" in err
    assert list(tmp_path.iterdir()) == []
