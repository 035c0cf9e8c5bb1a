"""The decay policy: every parameter lands where the rules say, and every mechanism obeys it."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from decaylab.audit import explain
from decaylab.penalties import elastic_net_penalty, l1_penalty, l2_penalty
from decaylab.policy import DecayPolicy, decay_plan, param_groups
from decaylab.steps import DecoupledDecay, L1Prox, MaxNorm, attach
from decaylab.validation import InvalidParameterError


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 4)
        self.scale = nn.Parameter(torch.ones(4, 4))

    def no_weight_decay(self) -> set[str]:
        return {"scale"}


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(10, 4)
        self.conv = nn.Conv2d(1, 2, 3)
        self.bn = nn.BatchNorm2d(2)
        self.fc = nn.Linear(8, 4)
        self.ln = nn.LayerNorm(4)
        self.block = Block()
        self.head = nn.Linear(4, 3)
        self.pos = nn.Parameter(torch.zeros(5, 4))
        self.frozen = nn.Linear(2, 2)
        self.frozen.requires_grad_(False)

    def no_weight_decay(self) -> set[str]:
        return {"pos"}


# name -> (multiplier, words of the reason) under the default policy
DEFAULT = {
    "pos": (0.0, "no_weight_decay() lists 'pos'"),  # a module's own parameters come first
    "emb.weight": (1.0, "decayed"),
    "conv.weight": (1.0, "decayed"),
    "conv.bias": (0.0, "bias"),
    "bn.weight": (0.0, "norm layer (BatchNorm2d)"),
    "bn.bias": (0.0, "norm layer (BatchNorm2d)"),
    "fc.weight": (1.0, "decayed"),
    "fc.bias": (0.0, "bias"),
    "ln.weight": (0.0, "norm layer (LayerNorm)"),
    "ln.bias": (0.0, "norm layer (LayerNorm)"),
    "block.scale": (0.0, "no_weight_decay() lists 'block.scale'"),
    "block.proj.weight": (1.0, "decayed"),
    "block.proj.bias": (0.0, "bias"),
    "head.weight": (1.0, "decayed"),
    "head.bias": (0.0, "bias"),
}

VARIANTS = [
    (DecayPolicy(), {}),
    (DecayPolicy(exclude_embeddings=True), {"emb.weight": (0.0, "embedding (Embedding)")}),
    (
        DecayPolicy(multipliers={"head.*": 0.1, "fc.*": 0.0}, include=("head.bias",), exclude="conv.*"),
        {
            "head.weight": (0.1, "×0.1 (pattern 'head.*')"),
            "head.bias": (0.1, "included by pattern 'head.bias'"),
            "fc.weight": (0.0, "multiplier 0 (pattern 'fc.*')"),
            "conv.weight": (0.0, "excluded by pattern 'conv.*'"),
            "conv.bias": (0.0, "excluded by pattern 'conv.*'"),
        },
    ),
    (DecayPolicy(use_model_no_weight_decay=False), {"pos": (1.0, "decayed"), "block.scale": (1.0, "decayed")}),
    (
        DecayPolicy(exclude_1d=False, exclude_bias=False, exclude_norm=False),
        {name: (1.0, "decayed") for name in ("conv.bias", "bn.weight", "bn.bias", "fc.bias", "ln.weight",
                                              "ln.bias", "block.proj.bias", "head.bias")},
    ),
    (
        DecayPolicy(exclude_bias=False),
        {name: (0.0, "1-D tensor") for name in ("conv.bias", "fc.bias", "block.proj.bias", "head.bias")},
    ),
]


@pytest.mark.parametrize(("policy", "changes"), VARIANTS)
def test_every_parameter_lands_where_the_rules_say(policy: DecayPolicy, changes: dict) -> None:
    expected = {**DEFAULT, **changes}
    plan = decay_plan(Net(), policy)
    assert [e.name for e in plan] == list(DEFAULT)  # model order, frozen skipped
    for entry in plan:
        multiplier, reason = expected[entry.name]
        assert entry.multiplier == multiplier, entry.name
        assert reason in entry.reason, (entry.name, entry.reason)


def test_param_groups_hold_every_trainable_parameter_once_with_its_weight_decay() -> None:
    net = Net()
    policy = DecayPolicy(multipliers={"head.*": 0.5})
    groups = param_groups(net, 0.1, policy)
    assert [g["weight_decay"] for g in groups] == [0.0, 0.1, 0.05]  # order of first appearance
    seen = {}
    for g in groups:
        assert len(g["params"]) == len(g["param_names"])
        for name, p in zip(g["param_names"], g["params"], strict=True):
            seen[name] = (p, g["weight_decay"])
    params = dict(net.named_parameters())
    for name, (multiplier, _) in {**DEFAULT, "head.weight": (0.5, "")}.items():
        assert seen[name][0] is params[name]
        assert seen[name][1] == pytest.approx(0.1 * multiplier)
    assert "frozen.weight" not in seen and len(seen) == len(DEFAULT)
    # plain torch.optim groups: AdamW accepts them and keeps the names in its state_dict
    opt = torch.optim.AdamW(groups, lr=1e-3)
    saved = opt.state_dict()["param_groups"]
    assert [g["param_names"] for g in saved] == [g["param_names"] for g in groups]
    assert "param_names" not in param_groups(net, 0.1, with_names=False)[0]


def test_one_default_for_bare_tensors_and_named_pairs() -> None:
    w, b = torch.ones(3, 2), torch.ones(3)
    assert [e.multiplier for e in decay_plan([w, b])] == [1.0, 0.0]  # the same default as for a module
    assert [e.multiplier for e in decay_plan([w, b], DecayPolicy())] == [1.0, 0.0]
    assert [e.multiplier for e in decay_plan([w, b], DecayPolicy.decay_all())] == [1.0, 1.0]
    assert [e.multiplier for e in decay_plan([("w", w), ("layer.bias", torch.ones(2, 2))])] == [1.0, 0.0]
    assert [e.multiplier for e in decay_plan(w)] == [1.0]


def test_explain_prints_a_table_with_totals_and_renders_in_rich() -> None:
    table = explain(Net(), weight_decay=0.1)
    text = str(table)
    decayed = [n for n, (m, _) in DEFAULT.items() if m > 0]
    net = Net()
    params = dict(net.named_parameters())
    n_decayed = sum(params[n].numel() for n in decayed)
    n_other = sum(p.numel() for n, p in params.items() if n not in decayed and p.requires_grad)
    assert f"decayed: {len(decayed)} tensors, {n_decayed:,} parameters" in text
    assert f"not decayed: {len(DEFAULT) - len(decayed)} tensors, {n_other:,} parameters" in text
    assert "frozen (skipped): 2 tensors, 6 parameters" in text
    lines = text.splitlines()
    assert lines[0].split() == ["parameter", "shape", "count", "mult", "λ", "reason"]
    row = next(line for line in lines if line.startswith("conv.weight"))
    assert row.split()[:5] == ["conv.weight", "2×1×3×3", "18", "1", "0.1"]
    assert len({line.index("reason") if i == 0 else None for i, line in enumerate(lines)} - {None}) == 1
    from rich.console import Console

    console = Console(file=io.StringIO(), width=120)
    console.print(table)
    assert "conv.weight" in console.file.getvalue()


def _zero_grads(net: nn.Module) -> None:
    for p in net.parameters():
        if p.requires_grad:
            p.grad = torch.zeros_like(p)


@pytest.mark.parametrize(
    "make_step",
    [lambda: DecoupledDecay(0.5), lambda: DecoupledDecay(0.5, "none"), lambda: L1Prox(0.5),
     lambda: MaxNorm(0.01)],
    ids=["DecoupledDecay", "DecoupledDecay-none", "L1Prox", "MaxNorm"],
)
def test_excluded_parameters_receive_no_decay_from_any_step(make_step) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    net = Net()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.rand_like(p) + 1.0)  # every entry clearly away from 0 and outside the ball
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.1)
    attach(opt, make_step(), model=net)
    _zero_grads(net)
    opt.step()  # SGD with zero gradients: only the attached step moves anything
    for name, p in net.named_parameters():
        decayed = DEFAULT.get(name, (0.0, ""))[0] > 0
        assert torch.equal(p, before[name]) != decayed, name


@pytest.mark.parametrize(
    "penalty",
    [lambda m: l2_penalty(m, 0.3), lambda m: l1_penalty(m, 0.3), lambda m: elastic_net_penalty(m, 0.3, 0.5)],
    ids=["l2", "l1", "elastic_net"],
)
def test_excluded_parameters_receive_no_penalty_gradient(penalty) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    net = Net()
    penalty(net).backward()
    for name, p in net.named_parameters():
        if not p.requires_grad:
            continue
        decayed = DEFAULT[name][0] > 0
        assert (p.grad is not None and bool(p.grad.abs().sum() > 0)) == decayed, name


def test_policy_and_plan_arguments_are_validated_with_the_template() -> None:
    with pytest.raises(InvalidParameterError, match=r"^The 'multipliers' parameter of DecayPolicy must be a "
                       r"float in \[0, inf\)\. Got -1\.$"):
        DecayPolicy(multipliers={"fc.*": -1})
    with pytest.raises(InvalidParameterError, match="The 'exclude_1d' parameter of DecayPolicy must be a bool. Got 1."):
        DecayPolicy(exclude_1d=1)  # type: ignore[arg-type]
    with pytest.raises(InvalidParameterError) as info:
        param_groups(Net(), -0.1)
    assert str(info.value) == "The 'weight_decay' parameter of param_groups must be a float in [0, inf). Got -0.1."
    with pytest.raises(InvalidParameterError, match="The 'model_or_params' parameter of decay_plan must be"):
        decay_plan(3)  # type: ignore[arg-type]
    with pytest.raises(InvalidParameterError, match="The 'policy' parameter of param_groups must be"):
        param_groups(Net(), 0.1, policy="default")  # type: ignore[arg-type]
