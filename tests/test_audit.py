"""The audit: every finding is triggered by a small setting and gone once the fix it prints has run.

The fix is executed as printed (``exec``), in a namespace holding ``model``, ``optimizer``, ``scheduler``,
``torch`` and ``decaylab``; the audit is then run again on what the namespace holds.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import decaylab
from decaylab.audit import audit
from decaylab.lab.cli import main
from decaylab.policy import DecayPolicy, param_groups
from decaylab.steps import CautiousDecay, DecoupledDecay, attach
from decaylab.validation import InvalidParameterError


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.ReLU(), nn.Linear(8, 3))


class LM(nn.Module):
    def __init__(self, tie_by_copy: bool = False) -> None:
        super().__init__()
        self.emb = nn.Embedding(12, 6)
        self.ln = nn.LayerNorm(6)
        self.head = nn.Linear(6, 12, bias=False)
        if tie_by_copy:  # the tie that is not one: a new Parameter over the same storage
            self.head.weight = nn.Parameter(self.emb.weight)


Setting = Callable[[], tuple[nn.Module, torch.optim.Optimizer, Any, dict[str, Any]]]


def _coupled() -> tuple:
    m = mlp()
    return m, torch.optim.Adam(param_groups(m, 1e-2), lr=1e-3), None, {}


def _excluded() -> tuple:
    m = mlp()
    return m, torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4), None, {}


def _embedding() -> tuple:
    m = LM()
    return m, torch.optim.AdamW(param_groups(m, 0.1), lr=1e-3), None, {}


def _twice_own() -> tuple:
    m = mlp()
    opt = torch.optim.AdamW(param_groups(m, 0.01), lr=1e-3)
    attach(opt, DecoupledDecay(0.05), model=m, allow_repeat=True)
    return m, opt, None, {}


def _twice_steps() -> tuple:
    m = mlp()
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    attach(opt, DecoupledDecay(0.05), model=m)
    attach(opt, DecoupledDecay(0.05), model=m, allow_repeat=True)
    return m, opt, None, {}


def _tied() -> tuple:
    m = LM(tie_by_copy=True)
    return m, torch.optim.AdamW(param_groups(m, 0.1, DecayPolicy(exclude_embeddings=True)), lr=1e-3), None, {}


def _no_group() -> tuple:
    m = mlp()
    return m, torch.optim.SGD(m[0].parameters(), lr=0.1), None, {}


def _weight_excluded() -> tuple:
    m = mlp()
    groups = [{"params": [m[0].weight], "weight_decay": 0.1},
              {"params": [m[0].bias, m[1].weight, m[1].bias, m[3].weight, m[3].bias], "weight_decay": 0.0}]
    return m, torch.optim.AdamW(groups, lr=1e-3), None, {}


def _timescale_long() -> tuple:
    m = mlp()
    return m, torch.optim.AdamW(param_groups(m, 1e-4), lr=1e-3), None, {"epochs": 10, "steps_per_epoch": 100}


def _timescale_short_steps() -> tuple:
    m = mlp()
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    attach(opt, DecoupledDecay(5.0), model=m)  # 1 − γλ = 0.5 per step: τ = 2 iterations
    return m, opt, None, {"epochs": 10, "steps_per_epoch": 100, "dataset_size": 6400}


def _schedule_above() -> tuple:
    m = mlp()
    opt = torch.optim.Adam(m.parameters(), lr=0.02)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.02, total_steps=100)
    attach(opt, DecoupledDecay(0.01, "schedule"), model=m)  # γ₀ = initial_lr = 0.02/25
    return m, opt, sched, {}


def _twice_cautious() -> tuple:
    m = mlp()
    opt = torch.optim.AdamW(param_groups(m, 0.01), lr=1e-3)
    attach(opt, CautiousDecay(0.05), model=m, allow_repeat=True)
    return m, opt, None, {}


def _corrected_above() -> tuple:
    m = mlp()
    opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: min(2.0, 1 + t / 10))  # rises to 2× initial_lr
    attach(opt, DecoupledDecay(0.01, "corrected"), model=m)  # γ_max = initial_lr = 0.01 < 0.02
    return m, opt, sched, {"epochs": 2, "steps_per_epoch": 50}


class Gated(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(4, 4)
        self.gate = nn.Parameter(torch.ones(4))  # a hand-written 1-D weight


def _one_d_weight() -> tuple:
    m = Gated()
    return m, torch.optim.AdamW(param_groups(m, 0.1), lr=1e-3), None, {}


SETTINGS: dict[str, tuple[Setting, str, str]] = {
    "one-d-weight": (_one_d_weight, "weight-1d-not-decayed", "info"),
    "twice-cautious": (_twice_cautious, "decay-twice", "error"),
    "corrected-above": (_corrected_above, "schedule-above-reference", "warning"),
    "coupled": (_coupled, "coupled-decay-adaptive", "warning"),
    "excluded": (_excluded, "decay-excluded", "warning"),
    "embedding": (_embedding, "decay-embedding", "info"),
    "twice-own": (_twice_own, "decay-twice", "error"),
    "twice-steps": (_twice_steps, "decay-twice", "error"),
    "tied": (_tied, "tied-split", "error"),
    "no-group": (_no_group, "no-group", "error"),
    "weight-excluded": (_weight_excluded, "weight-excluded", "warning"),
    "timescale-long": (_timescale_long, "timescale", "warning"),
    "timescale-short": (_timescale_short_steps, "timescale", "warning"),
    "schedule-above": (_schedule_above, "schedule-above-reference", "warning"),
}


class DDPLike(nn.Module):
    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module


@pytest.mark.parametrize("wrap", ["bare", "ddp+compile"])
@pytest.mark.parametrize("name", list(SETTINGS))
def test_each_finding_is_triggered_and_gone_once_its_printed_fix_has_run(name: str, wrap: str) -> None:
    make, code, severity = SETTINGS[name]
    model, optimizer, scheduler, kwargs = make()
    if wrap != "bare":  # names '_orig_mod.'/'module.': the findings and their fixes are the same
        model = DDPLike(torch.compile(model))
    report = audit(model, optimizer, scheduler, **kwargs)
    found = [f for f in report if f.code == code]
    assert len(found) == 1, str(report)
    finding = found[0]
    assert finding.severity == severity and finding.params and finding.why
    assert report.clean == (severity == "info" and all(f.severity == "info" for f in report))
    assert code in str(report) and finding.fix.splitlines()[0] in str(report)
    namespace = {"model": model, "optimizer": optimizer, "scheduler": scheduler, "torch": torch, "decaylab": decaylab}
    exec(finding.fix, namespace)  # noqa: S102 - the fix exactly as printed
    after = audit(namespace["model"], namespace["optimizer"], namespace["scheduler"], policy=namespace.get("policy"),
                  **kwargs)
    assert code not in after.codes(), str(after)


def test_a_good_set_up_is_clean_and_the_report_says_so() -> None:
    m = mlp()
    opt = torch.optim.AdamW(param_groups(m, 0.05), lr=1e-3)
    report = audit(m, opt, torch.optim.lr_scheduler.CosineAnnealingLR(opt, 100), epochs=10, steps_per_epoch=10_000)
    assert report == [] and report.clean
    assert str(report) == "audit: no findings"
    assert json.loads(report.to_json()) == {"clean": True, "findings": []}
    m2 = mlp()
    opt2 = torch.optim.Adam(m2.parameters(), lr=1e-3)
    attach(opt2, DecoupledDecay(0.05), model=m2)
    assert audit(m2, opt2).clean


def test_the_timescale_finding_gives_the_lambda_that_puts_tau_inside() -> None:
    model, opt, _, kwargs = _timescale_long()
    finding = audit(model, opt, **kwargs)[0]
    # τ_epoch = 1/(η·λ·S) = 1/(1e-3 · 1e-4 · 100) = 1e5 epochs; √10 needs λ = 1/(1e-3 · 100 · √10) = 3.16
    assert "1e+05 epochs" in finding.why and "= 3.16" in finding.why
    assert finding.fix == 'optimizer.param_groups[0]["weight_decay"] = 3.16'


def test_explain_accepts_an_optimizer_and_shows_its_own_decay_and_the_attached_steps() -> None:
    m = mlp()
    opt = torch.optim.Adam(param_groups(m, 0.0, with_names=False), lr=1e-3)
    attach(opt, DecoupledDecay(0.05), model=m)
    table = decaylab.explain(opt)
    rows = {r.name: r for r in table}
    assert rows["0.weight"].weight_decay == pytest.approx(0.05) and "DecoupledDecay" in rows["0.weight"].reason
    assert rows["0.bias"].weight_decay == 0
    assert [r.name for r in table] == [n for n, _ in m.named_parameters()]  # names from the model attached
    adamw = torch.optim.AdamW(m.parameters(), lr=1e-3)
    text = str(decaylab.explain(adamw))
    assert "AdamW weight_decay=0.01 (decoupled, ×lr)" in text
    # a model's options given with an optimizer: an error, not silently ignored
    with pytest.raises(InvalidParameterError, match="The 'weight_decay' parameter of explain must be None with an optimizer"):
        decaylab.explain(adamw, weight_decay=0.1)
    with pytest.raises(InvalidParameterError, match="The 'policy' parameter of explain must be None with an optimizer"):
        decaylab.explain(adamw, policy=decaylab.DecayPolicy())


def test_audit_arguments_are_validated() -> None:
    m = mlp()
    with pytest.raises(InvalidParameterError, match="The 'optimizer' parameter of audit must be a torch.optim"):
        audit(m, "adam")  # type: ignore[arg-type]
    with pytest.raises(InvalidParameterError, match=r"The 'epochs' parameter of audit must be an int in \[1, inf\)"):
        audit(m, torch.optim.SGD(m.parameters(), lr=0.1), epochs=0)


SCRIPT = """
import torch
from torch import nn
import decaylab

def coupled():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    return model, torch.optim.Adam(decaylab.param_groups(model, 0.01), lr=1e-3)

def clean():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    opt = torch.optim.AdamW(decaylab.param_groups(model, 0.05), lr=1e-2)  # τ = 1/(ηλS) = 2 epochs
    return model, opt, torch.optim.lr_scheduler.StepLR(opt, 10)

def wrong():
    return 3

def broken():
    raise RuntimeError("no data here")
"""


def _cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_audit_prints_the_table_and_exits_by_severity(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    script = tmp_path / "train_setup.py"
    script.write_text(SCRIPT)
    code, out, err = _cli(["audit", f"{script}:coupled"], capsys)
    assert code == 1 and err == ""
    assert "coupled-decay-adaptive" in out and "decaylab.DecoupledDecay(0.01)" in out
    code, out, _ = _cli(["audit", f"{script}:coupled", "--json"], capsys)
    doc = json.loads(out)
    assert code == 1 and doc["clean"] is False and doc["findings"][0]["code"] == "coupled-decay-adaptive"
    code, out, _ = _cli(["audit", f"{script}:clean", "--epochs", "3", "--steps-per-epoch", "1000"], capsys)
    assert code == 0 and "no findings" in out


@pytest.mark.parametrize(
    ("target", "words"),
    [("{script}:missing", "a function defined in"), ("{script}", "FILE.py:FUNCTION"),
     ("{tmp}/nope.py:f", "an existing Python file"), ("{script}:wrong", "(model, optimizer[, scheduler])"),
     ("{script}:broken", "RuntimeError: no data here")],
)
def test_cli_audit_bad_input_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   target: str, words: str) -> None:
    script = tmp_path / "train_setup.py"
    script.write_text(SCRIPT)
    code, out, err = _cli(["audit", target.format(script=script, tmp=tmp_path)], capsys)
    assert code == 2 and out == ""
    assert err.startswith("decaylab: error: ") and err.count("\n") == 1 and words in err, err


def test_cli_audit_runs_as_a_command(tmp_path: Path) -> None:
    script = tmp_path / "setup_file.py"
    script.write_text(SCRIPT)
    proc = subprocess.run([sys.executable, "-m", "decaylab.lab.cli", "audit", f"{script}:coupled", "--json"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 1, proc.stderr
    assert json.loads(proc.stdout)["findings"][0]["severity"] == "warning"


def test_a_decaying_step_of_the_users_own_without_weight_decay_is_left_out_not_a_crash() -> None:
    class ShrinkOnce(decaylab.steps.Step):  # decays (Step.decays) but has no weight_decay/scaled_by to read
        kind = "shrink"
        decays = True
        has_post = True

    m = mlp()
    opt = torch.optim.Adam(param_groups(m, 0.0, with_names=False), lr=1e-3)
    attach(opt, DecoupledDecay(0.05), model=m)
    attach(opt, ShrinkOnce(), model=m, allow_repeat=True)
    rows = {r.name: r for r in decaylab.explain(opt)}
    assert rows["0.weight"].weight_decay == pytest.approx(0.05)  # the DecoupledDecay only
    assert "DecoupledDecay" in rows["0.weight"].reason and "ShrinkOnce" not in rows["0.weight"].reason
    audit(m, opt, epochs=10, steps_per_epoch=100)  # read every decaying step's λ: AttributeError before
