"""Every experiment's summary has a one-line verdict — the claim, holds / does not hold, the numbers — that the
CLI prints under the table (``run`` and ``runs show``), that ``--json`` carries as ``summary.verdict``, and that
``--quiet`` leaves out."""

from __future__ import annotations

from typing import Any

import pytest

from decaylab.lab.experiments import d2l_linear, l2_vs_decay
from decaylab.lab.outputs import verdict_lines


def test_l2_vs_decay_says_the_relative_differences_as_the_readme() -> None:
    row = {"wd": 0.005, "sgd": {"max_rel_diff": 1.2e-4}, "momentum": {"max_rel_diff": 0.2},
           "adam": {"max_rel_diff": 0.77}}
    assert l2_vs_decay.family_verdict(row) == (
        "SGD: L2 = decay (rel. diff 0.00012); SGD+momentum: differ (0.2); Adam: differ (0.77)")
    row["sgd"]["max_rel_diff"] = 0.05  # above RTOL_EQUAL: SGD's two forms differ
    row["adam"]["max_rel_diff"] = 0.001  # below RTOL_PART
    assert l2_vs_decay.family_verdict(row) == (
        "SGD: L2 ≠ decay (rel. diff 0.05); SGD+momentum: differ (0.2); Adam: do not differ (0.001)")


def test_d2l_verdict_compares_the_smallest_and_largest_lambda() -> None:
    rows = [{"lambd": 0.0, "n_seeds": 1, "w_norm": 13.59, "test_loss": 80.78},
            {"lambd": 1.0, "n_seeds": 1, "w_norm": 5.0, "test_loss": 2.0},
            {"lambd": 3.0, "n_seeds": 1, "w_norm": 0.3705, "test_loss": 0.09401}]
    assert d2l_linear._verdict(rows).endswith(
        "λ = 0 → 3: ‖w‖₂ 13.6 → 0.37, test loss 80.8 → 0.094 (mean over seeds) — holds")
    rows[-1]["test_loss"] = 100.0
    assert d2l_linear._verdict(rows).endswith("— does not hold")
    rows[-1]["n_seeds"] = 0  # λ = 3 diverged: λ = 1 is the largest that finished
    assert "λ = 0 → 1:" in d2l_linear._verdict(rows) and d2l_linear._verdict(rows).endswith("— holds")
    assert "not tested" in d2l_linear._verdict(rows[:1])


def test_verdict_lines() -> None:
    assert verdict_lines({}) == []
    assert verdict_lines({"verdict": "x — holds"}) == ["verdict: x — holds"]
    assert verdict_lines({"verdict": ["(a) HOLDS", "(b) HOLDS"]}) == ["verdict: (a) HOLDS", "         (b) HOLDS"]


def test_the_cli_prints_the_verdict_under_the_table(cli: Any, cli_json: Any) -> None:
    code, out, err = cli("run", "d2l-linear", "--no-figures", "--epochs", "3", "--out", "o")
    assert code == 0, err
    lines = out.splitlines()
    table_end = max(i for i, line in enumerate(lines) if line.startswith("└"))
    assert lines[table_end + 1].startswith("verdict: weight decay shrinks ‖w‖"), out
    verdict = printed_verdict(out)
    assert verdict.endswith("— holds")
    run_id = lines[-1].split()[1]
    code, shown, _ = cli("runs", "show", run_id)
    assert code == 0 and printed_verdict(shown) == verdict
    doc = cli_json("run", "d2l-linear", "--no-figures", "--epochs", "3", "--out", "o2")
    assert doc["summary"]["verdict"].split() == verdict.split()
    code, out, _ = cli("run", "d2l-linear", "--no-figures", "--epochs", "3", "--out", "o3", "--quiet")
    assert code == 0 and out == ""


def printed_verdict(out: str) -> str:
    """The verdict as printed under the table, its wrapped lines joined (rich wraps at the terminal's width)."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("verdict: "))
    end = next((i for i, line in enumerate(lines) if i > start and line.startswith("run ")), len(lines))
    return " ".join(line.strip() for line in lines[start:end]).removeprefix("verdict: ")


@pytest.mark.parametrize("name", ["constraint", "ridge-path", "sparsity", "noise-tikhonov", "scaling"])
def test_every_fast_experiment_prints_its_verdict(name: str, cli: Any, cli_json: Any) -> None:
    from test_validation_diverged import SMALL

    argv = [f"--{k.replace('_', '-')}={v}" for k, v in SMALL[name].items()]
    code, out, err = cli("run", name, "--no-figures", *argv, "--out", "o")
    assert code == 0, err
    verdict = printed_verdict(out)
    run_id = next(line.split()[1] for line in out.splitlines() if line.startswith("run "))
    assert verdict.split() == cli_json("runs", "show", run_id)["summary"]["verdict"].split()  # as --json has it
    assert any(word in verdict for word in ("holds", "does not hold", "not tested", "borne out", "undetermined",
                                            "inconclusive")), verdict
