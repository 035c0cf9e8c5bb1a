"""``decaylab sweep FILE.py:FUNCTION`` and ``decaylab.sweep(...)``: runner, store, resume, Ray, bad input."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

import decaylab
from decaylab.lab.store import Store
from sweep_models import SWEEP_FILE

pytestmark = pytest.mark.usefixtures("one_thread")

SETUP = SWEEP_FILE  # the setup file every sweep test starts from (tests/sweep_models.py)

ARGS = ("--lambd", "0,0.01,0.1", "--seed", "0,1", "--lr", "0.1", "--momentum", "0.9", "--batch-size", "32", "--epochs", "2")


def write(tmp_path: Path, body: str = SETUP, name: str = "setup_file.py") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return path


def test_cli_sweep_stores_prints_and_draws(tmp_path: Path, cli: Any, cli_json: Any) -> None:
    target = f"{write(tmp_path)}:setup"
    doc = cli_json("sweep", target, *ARGS, "--quiet", "--out", str(tmp_path / "out"))
    assert doc["experiment"] == "sweep" and doc["status"] == "finished"
    assert [c["params"]["lambd"] for c in doc["configs"]] == [0.0, 0.0, 0.01, 0.01, 0.1, 0.1]
    assert set(doc["configs"][0]["curves"]) == {"epoch", "train_loss", "val_loss", "train_acc", "val_acc", "w_norm"}
    best = doc["summary"]["best"]
    means = {s["lambd"]: s["val_loss"] for s in doc["summary"]["settings"]}
    assert best["value"] == pytest.approx(min(means.values())) and means[best["params"]["lambd"]] == best["value"]
    assert (tmp_path / "out" / "sweep.png").stat().st_size > 0 and (tmp_path / "out" / "curves.png").stat().st_size > 0
    code, out, _ = cli("runs", "show", doc["run_id"])
    assert code == 0 and "done *" in out
    assert f"verdict: {doc['summary']['verdict']}" in " ".join(out.split())  # the verdict under the table
    # norms shrink with λ (mean over seeds): the figure's right panel shows a real effect
    norms = {s["lambd"]: s["w_norm"] for s in doc["summary"]["settings"]}
    assert norms[0.1] < norms[0.0]


def test_python_api_gives_the_cli_s_numbers(tmp_path: Path, cli_json: Any) -> None:
    path = write(tmp_path)
    doc = cli_json("sweep", f"{path}:setup", "--no-figures", *ARGS, "--quiet")
    import decaylab.lab.sweep as module  # importing the lab's module first must not shadow the function

    result = decaylab.sweep(f"{path}:setup", lambd="0,0.01,0.1", seed=[0, 1], lr=0.1, momentum=0.9, batch_size=32, epochs=2)
    assert decaylab.sweep is module.sweep
    assert [r.params for r in result.results] == [c["params"] for c in doc["configs"]]
    for r, c in zip(result.results, doc["configs"], strict=True):
        assert r.curves["val_loss"] == pytest.approx(c["curves"]["val_loss"], rel=1e-6)
    assert result.best["params"] == doc["summary"]["best"]["params"]
    assert "val_loss" in str(result)


def test_engine_sequential_matches_batched(tmp_path: Path, cli_json: Any) -> None:
    target = f"{write(tmp_path)}:setup"
    a = cli_json("sweep", target, "--no-figures", *ARGS, "--quiet")
    b = cli_json("sweep", target, "--no-figures", *ARGS, "--quiet", "--engine", "sequential")
    for x, y in zip(a["configs"], b["configs"], strict=True):
        assert x["curves"]["val_loss"] == pytest.approx(y["curves"]["val_loss"], rel=1e-5)


BAD = {
    "not a module": ("def model(seed):\n    return 3\n", "model", "torch.nn.Module"),
    "architectures differ": ("def model(seed):\n    return nn.Sequential(nn.Linear(64, 16 + seed), nn.ReLU(), nn.Linear(16 + seed, 10))\n",
                             "model", "same architecture for every seed"),
    "loss not scalar": (("def model(seed):\n    return nn.Sequential(nn.Linear(64, 10))\n"
                         "_loss = lambda out, t: F.cross_entropy(out, t, reduction='none')\n"), "loss", "scalar"),
    "wrong data shape": ("def model(seed):\n    return nn.Sequential(nn.Linear(63, 10))\n", "train", "inputs the model accepts"),
    "layer not batchable": ("def model(seed):\n    return nn.Sequential(nn.Unflatten(1, (1, 8, 8)), nn.Dropout2d(0.2), nn.Flatten(), nn.Linear(64, 10))\n",
                            "model", "--engine sequential"),
    # the stack would run the first seed's slope for every seed
    "settings differ": ("def model(seed):\n    return nn.Sequential(nn.Linear(64, 16), nn.LeakyReLU(0.1 * (seed + 1)), nn.Linear(16, 10))\n",
                        "model", "setting 1.negative_slope 0.1, seed 1: setting 1.negative_slope 0.2"),
    "model raises": ("def model(seed):\n    return 1 / 0\n", "model", "runs without error. Got 'for seed 0: ZeroDivisionError"),
    # the sequential engine would train each configuration on from the last one's weights
    "one module for every call": ("_one = nn.Sequential(nn.Linear(64, 10))\ndef model(seed):\n    return _one\n",
                                  "model", "builds a new module at each call"),
    "a metric named loss": ("def model(seed):\n    return nn.Sequential(nn.Linear(64, 10))\n", "metrics", "other than 'loss'"),
    "NaN in the data": ("def model(seed):\n    return nn.Sequential(nn.Linear(64, 10))\n", "train", "no NaN or inf"),
}
EDITS = {  # the setup's own lines each case changes
    "a metric named loss": ('"metrics": {"acc": acc}', '"metrics": {"loss": acc}'),
    "NaN in the data": ("y = torch.tensor(d.target)", "y = torch.tensor(d.target)\n    X[7, 3] = float('nan')"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line_and_exit_2(case: str, tmp_path: Path, cli: Any) -> None:
    model_code, name, words = BAD[case]
    body = SETUP.replace("def model(seed):\n    return nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))\n", model_code)
    if case == "loss not scalar":
        body = body.replace('"loss": F.cross_entropy', '"loss": _loss')
    if case in EDITS:
        assert EDITS[case][0] in body
        body = body.replace(*EDITS[case])
    code, out, err = cli("sweep", f"{write(tmp_path, body)}:setup", "--no-figures", *ARGS, "--quiet")
    assert code == 2, err
    assert err.startswith("decaylab: error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert f"'{name}'" in err and words in err
    assert not Path("decaylab.db").exists() or not Store(Path("decaylab.db")).list_runs()  # nothing was stored
    if case == "layer not batchable":  # the suggestion works
        code, _, err = cli("sweep", f"{write(tmp_path, body)}:setup", "--no-figures", *ARGS, "--quiet", "--engine", "sequential")
        assert code == 0, err


@pytest.mark.parametrize(
    "args, words",
    [
        (("--optimizer", "rmsprop"), "'--optimizer'"),
        (("--optimizer", "adamw", "--lambd", "0.1"), "--decoupled"),
        (("--select", "val_f1"), "'--select'"),
        (("--batch-size", "1000"), "'--batch-size'"),
    ],
)
def test_bad_options_are_one_line_and_exit_2(args: tuple[str, ...], words: str, tmp_path: Path, cli: Any) -> None:
    code, _, err = cli("sweep", f"{write(tmp_path)}:setup", "--no-figures", "--epochs", "1", *args, "--quiet")
    assert code == 2 and words in err and err.count("\n") == 1


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"optimizer": "adamw", "lambd": 0.1}, "'lambd' parameter of sweep must be 0 with optimizer='adamw'"),
        ({"threads": 0}, "'threads' parameter of sweep"),
        ({"optimizer": "adam", "betas": None}, "'betas' parameter of sweep"),
        ({"seed": 2**32}, "'seed' parameter of sweep must be an int in [0, 4294967295]"),
        ({"epochs": 10**6 + 1}, "'epochs' parameter of sweep must be an int in [1, 1000000]"),
    ],
)
def test_the_python_api_names_its_own_arguments(kwargs: dict[str, Any], words: str, tmp_path: Path) -> None:
    with pytest.raises(decaylab.InvalidParameterError) as info:
        decaylab.sweep(f"{write(tmp_path)}:setup", **kwargs)
    assert words in str(info.value) and "\n" not in str(info.value)


def test_bad_target_is_one_line_and_exit_2(tmp_path: Path, cli: Any) -> None:
    raising = write(tmp_path, SETUP + "\ndef raises():\n    raise RuntimeError('no data\\nsecond line')\n", "raising.py")
    for target in ("nofile.py:setup", f"{write(tmp_path)}:nosuch", "setup_file.py", f"{raising}:raises"):
        code, _, err = cli("sweep", target, "--no-figures", "--quiet")
        assert code == 2 and "FILE.py:FUNCTION" in err and err.count("\n") == 1 and "Traceback" not in err
    assert "raises(): RuntimeError: no data" in err


def test_configurations_that_fail_in_training_say_why_on_stderr(tmp_path: Path, cli: Any) -> None:
    """A target out of range beyond the rows the checks look at fails each configuration in training: the run
    is stored as failed (exit 1), and stderr says why in one line."""
    body = SETUP.replace("y = torch.tensor(d.target)", "y = torch.tensor(d.target)\n    y[100] = 10")
    code, _, err = cli("sweep", f"{write(tmp_path, body)}:setup", "--no-figures", *ARGS, "--quiet")
    assert code == 1 and err.count("\n") == 1
    assert "6 of 6 configurations failed: " in err and "out of bounds" in err  # the loss's error, or the stack's


def test_the_setup_file_imports_modules_beside_it_as_a_script_would(tmp_path: Path, cli: Any) -> None:
    (tmp_path / "proj").mkdir()
    write(tmp_path / "proj", "from setup_data import setup\n", "setup_file.py")
    write(tmp_path / "proj", SETUP, "setup_data.py")
    code, _, err = cli("sweep", f"{tmp_path / 'proj' / 'setup_file.py'}:setup", "--no-figures", "--epochs", "1", "--quiet")
    assert code == 0, err


def test_decay_norm_decays_the_norm_weights_and_decay_bias_the_biases() -> None:
    from torch import nn

    from decaylab.lab.sweep import policy_of

    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    for opts, decayed in [({}, {"0.weight"}), ({"decay_norm": True}, {"0.weight", "1.weight"}),
                          ({"decay_bias": True}, {"0.weight", "0.bias"}),
                          ({"decay_norm": True, "decay_bias": True}, {"0.weight", "0.bias", "1.weight", "1.bias"})]:
        assert {e.name for e in decaylab.decay_plan(model, policy_of(opts)) if e.multiplier > 0} == decayed, opts


def _decaylab(*args: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "decaylab.lab.cli", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd
    )


# the digits MLP, each forward 20 ms longer: a configuration trains for ~0.15 s, not a few ms, so a kill lands mid-sweep
SLOW_SETUP = SETUP + """
import time

class Slow(nn.Module):
    def forward(self, x):
        time.sleep(0.02)
        return x

def slow_model(seed):
    return nn.Sequential(model(seed), Slow())

def slow_setup():
    return {**setup(), "model": slow_model}
"""


def test_killed_sweep_resumed_equals_an_uninterrupted_one(tmp_path: Path, cli_json: Any) -> None:
    target = f"{write(tmp_path, SLOW_SETUP).name}:slow_setup"  # relative: the resumed run, started elsewhere, must find it
    store = tmp_path / "killed.db"
    # stacks of two (the resume must take the run's own chunk size): a kill lands between stacks
    proc = _decaylab("sweep", target, *ARGS, "--chunk", "2", "--store", str(store), "--quiet", "--no-figures", cwd=tmp_path)
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            try:  # the child may be creating the store at this moment
                runs = Store(store).list_runs() if store.exists() else []
            except Exception:  # noqa: BLE001
                runs = []
            if runs and runs[0].counts().get("done", 0) >= 2:
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.05)
        else:
            pytest.fail("the sweep never stored a configuration")
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    (run,) = Store(store).list_runs()
    assert run.status == "interrupted" and 2 <= run.counts().get("done", 0) < 6  # killed: its dead owner shows it interrupted
    (tmp_path / "elsewhere").mkdir()
    resumed = subprocess.run([sys.executable, "-m", "decaylab.lab.cli", "resume", run.run_id, "--store", str(store), "--json",
                              "--no-figures"],
                             capture_output=True, text=True, cwd=tmp_path / "elsewhere", timeout=600, check=False)
    assert resumed.returncode == 0, resumed.stderr
    whole = cli_json("sweep", target, "--no-figures", *ARGS, "--chunk", "2", "--quiet")
    got = json.loads(resumed.stdout)
    assert got["status"] == "finished"
    for a, b in zip(got["configs"], whole["configs"], strict=True):
        assert a["params"] == b["params"] and a["status"] == "done"
        assert a["curves"]["val_loss"] == pytest.approx(b["curves"]["val_loss"], rel=1e-5)


@pytest.mark.ray
def test_ray_backend_gives_the_local_results(tmp_path: Path, cli_json: Any, ray_local: Any) -> None:
    target = f"{write(tmp_path)}:setup"
    local = cli_json("sweep", target, "--no-figures", *ARGS, "--quiet")
    remote = cli_json("sweep", target, "--no-figures", *ARGS, "--quiet", "--backend", "ray")
    assert [c["params"] for c in remote["configs"]] == [c["params"] for c in local["configs"]]
    for a, b in zip(local["configs"], remote["configs"], strict=True):
        assert b["status"] == "done"
        assert b["curves"]["val_loss"] == pytest.approx(a["curves"]["val_loss"], rel=1e-5)


def _result(lambd: float, seed: int, val_loss: float, lr: float = 0.1) -> Any:
    from decaylab.results import ConfigResult

    return ConfigResult(metrics={"val_loss": val_loss}, curves={"epoch": [1], "val_loss": [val_loss]},
                        params={"lambd": lambd, "decoupled": 0.0, "l1": 0.0, "lr": lr, "seed": seed})


@pytest.mark.parametrize(
    ("losses", "words"),
    [
        ({0.0: 0.5, 1e-3: 0.3, 1e-2: 0.4}, "best λ = 0.001 (val_loss 0.3, mean of 2 seeds); inside the grid"),
        ({0.0: 0.5, 1e-3: 0.4, 1e-2: 0.3}, "λ = 0.01 is the largest of its grid (0 … 0.01): the best may lie beyond the grid — widen it"),
        ({0.0: 0.3, 1e-3: 0.4, 1e-2: 0.5}, "no decay (λ = 0) was best: no λ of the grid (≥ 0.001) did better"),
        ({1e-4: 0.3, 1e-3: 0.4, 1e-2: 0.5}, "λ = 0.0001 is the smallest of its grid (0.0001 … 0.01): the best may lie beyond"),
        ({1e-3: 0.4, 1e-2: 0.3}, "best λ = 0.01 (val_loss 0.3, mean of 2 seeds)"),
    ],
)
def test_the_sweep_verdict_says_whether_the_best_lies_inside_the_grid(losses: dict[float, float], words: str) -> None:
    """The mean over seeds picks the best (seed 1 is 0.1 worse everywhere); an edge of a grid of ≥ 3 values is said
    with the advice to widen it, no decay being best as such; two values have no inside, so nothing is said."""
    from decaylab.lab.sweep import summarize

    results = [_result(lam, seed, loss + 0.1 * seed) for lam, loss in losses.items() for seed in (0, 1)]
    verdict = summarize(results)["verdict"]
    assert words.replace("0.3,", "0.35,") in verdict
    if len(losses) == 2:
        assert verdict.endswith("seeds)")
    assert summarize([])["verdict"] == "no configuration finished: no best setting"


def test_an_interrupted_sweep_s_verdict_speaks_of_what_was_trained() -> None:
    """Only λ = 0 trained (the rest pending, an interrupted run): no claim about the λ that never trained."""
    import dataclasses

    from decaylab.lab.sweep import summarize

    results = [_result(lam, 0, 0.3 + lam) for lam in (0.0, 1e-3, 1e-2)]
    results[1:] = [dataclasses.replace(r, status="pending", metrics={}, curves={}) for r in results[1:]]
    verdict = summarize(results)["verdict"]
    assert verdict == "best λ = 0 (val_loss 0.3, one seed); 2 of 3 configurations not trained (pending or failed): this is said of the others only"


def test_the_readme_shows_the_example_file_and_its_own_command() -> None:
    """The README's sweep section quotes ``examples/sweep_digits_cnn.py`` (without its docstring) and the command of its
    docstring: neither may drift from the file."""
    import ast
    import re

    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text()
    source = (root / "examples" / "sweep_digits_cnn.py").read_text()
    section = readme[readme.index("`decaylab sweep FILE.py:FUNCTION`"):]
    python_block = re.search(r"```python\n(.*?)```", section, re.S)
    bash_block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert python_block and bash_block
    tree = ast.parse(source)
    docstring = ast.get_docstring(tree, clean=False)
    assert docstring is not None and tree.body[0].end_lineno is not None
    body = "".join(source.splitlines(keepends=True)[tree.body[0].end_lineno:]).lstrip("\n")
    assert python_block.group(1) == body
    words = lambda text: " ".join(text.replace("\\\n", " ").split())
    assert words(bash_block.group(1)) in words(docstring)


def test_a_resumed_run_trains_on_with_its_own_engine_and_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unless the resume command says otherwise: the engines, and stacks of other sizes, round differently."""
    import argparse
    from types import SimpleNamespace

    from decaylab.lab import cli as cli_module

    seen: list[tuple[Any, Any]] = []
    monkeypatch.setattr(cli_module, "_stored_options", lambda record: (SimpleNamespace(check_resume=lambda *a: None), {}))
    monkeypatch.setattr(cli_module, "_run", lambda exp, opts, raw, ns, run_id: seen.append((ns.engine, ns.chunk)) or 0)
    record = SimpleNamespace(status="interrupted", run_id="r", raw_options={}, options={},
                             command="decaylab sweep 'my file.py:setup' --engine sequential --chunk=3 --quiet")
    cli_module._resume(record, argparse.Namespace(engine=None, chunk=None, json=False))
    cli_module._resume(record, argparse.Namespace(engine="batched", chunk="2", json=False))
    cli_module._resume(SimpleNamespace(**{**vars(record), "command": "decaylab sweep f.py:setup"}), argparse.Namespace(chunk=None, json=False))
    assert seen == [("sequential", "3"), ("batched", "2"), (None, None)]


def test_a_resume_after_the_setup_file_changed_is_refused(tmp_path: Path, cli: Any, cli_json: Any) -> None:
    """The attacker's case: a run interrupted, the file's data edited, then resumed — four configurations on the old
    data, the rest on the new, in one run. The run stores a digest of its data and model; a resume compares it."""
    import time as clock

    from store_helpers import sql

    setup_file = write(tmp_path)
    store = tmp_path / "s.db"
    doc = cli_json("sweep", f"{setup_file}:setup", "--no-figures", *ARGS, "--store", str(store))
    sql(store, "UPDATE runs SET status = 'interrupted'")
    sql(store, "UPDATE configs SET status = 'pending', metrics = NULL, curves = NULL WHERE idx >= 3")
    clock.sleep(0.01)  # a new modification time: the file is imported anew
    write(tmp_path, SETUP.replace("X[:160], y[:160]", "X[:150], y[:150]"))
    code, _, err = cli("resume", doc["run_id"], "--store", str(store), "--no-figures", "--quiet")
    assert code == 2 and err.count("\n") == 1 and "'RUN_ID'" in err and "changed since" in err
    assert Store(store).get_run(doc["run_id"]).counts() == {"done": 3, "pending": 3}  # nothing trained
    write(tmp_path, SETUP)
    code, _, err = cli("resume", doc["run_id"], "--store", str(store), "--no-figures", "--quiet")
    assert code == 0, err
