"""Weight-decay schedulers: closed forms at every step, checkpoints, AdamW set by hand, bad input."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import decaylab
from decaylab.policy import param_groups
from decaylab.schedules import (
    INITIAL_WD_KEY,
    ChainedWD,
    ConstantWD,
    CosineWD,
    LambdaWD,
    LinearWarmupWD,
    SequentialWD,
    StepWD,
    WarmupStableDecayWD,
    WDScheduler,
)
from decaylab.steps import DecoupledDecay, L1Prox, attach
from decaylab.validation import InvalidParameterError

L0 = 0.04
STEPS = 60


def model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 3))


def adamw(m: nn.Module, wd: float = L0) -> torch.optim.Optimizer:
    return torch.optim.AdamW(param_groups(m, wd), lr=1e-2)


def dino_cosine(base: float, final: float, n: int) -> np.ndarray:
    """facebookresearch/dino utils.cosine_scheduler without warm-up, with n iterations in all."""
    iters = np.arange(n)
    return final + 0.5 * (base - final) * (1 + np.cos(np.pi * iters / len(iters)))


# (name, build(opt), closed form of λ_t for t = 0..STEPS-1 from λ₀), each written out independently
def _wsd(t: int, shape: str) -> float:
    W, T, s, f = 10, 50, 0.1, 0.05  # the decay's 20 steps: 30 to T, written out below
    if t < W:
        return L0 * (s + (1 - s) * t / W)
    if t < 30:
        return L0
    if t >= T:
        return L0 * f
    p = (t - 30) / 20
    phi = {"linear": 1 - p, "cosine": (1 + math.cos(math.pi * p)) / 2, "1-sqrt": 1 - math.sqrt(p)}[shape]
    return L0 * (f + (1 - f) * phi)


CASES: list[tuple[str, Callable[[Any], WDScheduler], Callable[[int], float]]] = [
    ("constant", lambda o: ConstantWD(o), lambda t: L0),
    ("constant-factor", lambda o: ConstantWD(o, factor=0.25, total_steps=7), lambda t: L0 * (0.25 if t < 7 else 1)),
    ("warmup", lambda o: LinearWarmupWD(o, 20), lambda t: L0 * min(t, 20) / 20),
    ("warmup-start", lambda o: LinearWarmupWD(o, 8, start_factor=0.5), lambda t: L0 * (0.5 + 0.5 * min(t, 8) / 8)),
    ("cosine-up", lambda o: CosineWD(o, 40, final_weight_decay=0.4),
     lambda t: float(dino_cosine(L0, 0.4, 40)[t]) if t < 40 else 0.4),
    ("cosine-down", lambda o: CosineWD(o, 40), lambda t: float(dino_cosine(L0, 0.0, 40)[t]) if t < 40 else 0.0),
    ("step", lambda o: StepWD(o, 15, gamma=0.5), lambda t: L0 * 0.5 ** (t // 15)),
    ("wsd-linear", lambda o: WarmupStableDecayWD(o, 50, 10, 20, final_factor=0.05, start_factor=0.1),
     lambda t: _wsd(t, "linear")),
    ("wsd-cosine", lambda o: WarmupStableDecayWD(o, 50, 10, 20, 0.05, 0.1, decay_shape="cosine"),
     lambda t: _wsd(t, "cosine")),
    ("wsd-1-sqrt", lambda o: WarmupStableDecayWD(o, 50, 10, 20, 0.05, 0.1, decay_shape="1-sqrt"),
     lambda t: _wsd(t, "1-sqrt")),
    ("lambda", lambda o: LambdaWD(o, lambda t: 0.97**t), lambda t: L0 * 0.97**t),
    ("sequential", lambda o: SequentialWD(o, [LinearWarmupWD(o, 10), CosineWD(o, 30, 0.2), ConstantWD(o)], [10, 40]),
     lambda t: L0 * t / 10 if t < 10 else (float(dino_cosine(L0, 0.2, 30)[t - 10]) if t < 40 else L0)),
    ("chained", lambda o: ChainedWD([LinearWarmupWD(o, 10), StepWD(o, 25, gamma=0.1)]),
     lambda t: L0 * min(t, 10) / 10 * 0.1 ** (t // 25)),
]


@pytest.mark.parametrize("name,build,closed", CASES, ids=[c[0] for c in CASES])
def test_every_step_equals_the_closed_form(name: str, build: Any, closed: Any) -> None:
    opt = adamw(model())
    sched = build(opt)
    seen = []
    for _ in range(STEPS):
        seen.append(opt.param_groups[0]["weight_decay"])
        assert sched.get_last_wd() == [g["weight_decay"] for g in opt.param_groups]
        assert opt.param_groups[1]["weight_decay"] == 0.0  # the no-decay group stays at 0
        sched.step()
    expected = [closed(t) for t in range(STEPS)]
    np.testing.assert_allclose(seen, expected, rtol=1e-12, atol=1e-15)
    assert sched.last_epoch == STEPS
    assert opt.param_groups[0][INITIAL_WD_KEY] == L0 and opt.param_groups[1][INITIAL_WD_KEY] == 0.0


@pytest.mark.parametrize("name,build,closed", CASES, ids=[c[0] for c in CASES])
def test_same_values_on_an_attached_step(name: str, build: Any, closed: Any) -> None:
    m = model()
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    handle = attach(opt, DecoupledDecay(L0), L1Prox(1e-3), model=m)
    sched = build(handle)
    seen = []
    for _ in range(STEPS):
        seen.append(handle.steps[0].weight_decay)
        assert sched.get_last_wd() == [handle.steps[0].weight_decay]
        sched.step()
    np.testing.assert_allclose(seen, [closed(t) for t in range(STEPS)], rtol=1e-12, atol=1e-15)
    assert handle.steps[0].initial_weight_decay == L0 and handle.steps[1].lambd == 1e-3


def _data(seed: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(64, 5, generator=g), torch.randn(64, 3, generator=g)


def _train_step(m: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> None:
    opt.zero_grad()
    ((m(x) - y) ** 2).mean().backward()
    opt.step()


def _wsd_steps(o: Any) -> WDScheduler:
    return WarmupStableDecayWD(o, total_steps=40, warmup_steps=5, decay_steps=15, final_factor=0.1)


def test_attached_decoupled_decay_equals_adamw_set_by_hand() -> None:
    """Adam + DecoupledDecay driven by a scheduler == AdamW whose group weight_decay is set each step."""
    x, y = _data()
    lam = 0.5  # large, so that a wrong λ at any step shows in the weights
    m1, m2 = model(), model()
    opt1 = torch.optim.Adam(param_groups(m1, 0.0), lr=3e-2)
    handle = attach(opt1, DecoupledDecay(lam), model=m1)
    sched = SequentialWD(handle, [LinearWarmupWD(handle, 5), CosineWD(handle, 30, 0.05)], [5])
    opt2 = torch.optim.AdamW(param_groups(m2, lam), lr=3e-2)
    hand = [lam * t / 5 if t < 5 else 0.05 + 0.5 * (lam - 0.05) * (1 + math.cos(math.pi * min(t - 5, 30) / 30))
            for t in range(40)]
    for t in range(40):
        opt2.param_groups[0]["weight_decay"] = hand[t]
        _train_step(m1, opt1, x, y)
        _train_step(m2, opt2, x, y)
        sched.step()
    for p1, p2 in zip(m1.parameters(), m2.parameters(), strict=True):
        torch.testing.assert_close(p1, p2, rtol=1e-6, atol=1e-7)
    # and the schedule mattered: a constant λ ends elsewhere
    m3 = model()
    opt3 = torch.optim.AdamW(param_groups(m3, lam), lr=3e-2)
    for _ in range(40):
        _train_step(m3, opt3, x, y)
    assert (m3[0].weight - m1[0].weight).abs().max() > 1e-2


@pytest.mark.parametrize("target", ["groups", "steps"])
@pytest.mark.parametrize("kind", ["wsd", "sequential", "chained", "lambda"])
def test_state_dict_round_trip_mid_training_continues_identically(target: str, kind: str) -> None:
    x, y = _data()

    def build(seed: int) -> tuple[nn.Module, torch.optim.Optimizer, Any, WDScheduler]:
        m = model(seed)
        if target == "groups":
            opt = torch.optim.AdamW(param_groups(m, 0.3), lr=2e-2)
            tgt: Any = opt
        else:
            opt = torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9)
            tgt = attach(opt, DecoupledDecay(0.3), model=m)
        sched: WDScheduler
        if kind == "wsd":
            sched = _wsd_steps(tgt)
        elif kind == "sequential":
            sched = SequentialWD(tgt, [LinearWarmupWD(tgt, 6), StepWD(tgt, 7, 0.5)], [6])
        elif kind == "chained":
            sched = ChainedWD([LinearWarmupWD(tgt, 12), CosineWD(tgt, 30, 0.01)])
        else:
            sched = LambdaWD(tgt, lambda t: 1 / (1 + t))
        return m, opt, tgt, sched

    m, opt, tgt, sched = build(0)
    for _ in range(17):
        _train_step(m, opt, x, y)
        sched.step()
    checkpoint = copy.deepcopy(
        {"model": m.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict()}
    )
    reference = []
    for _ in range(20):
        _train_step(m, opt, x, y)
        sched.step()
        reference.append(sched.get_last_wd())
    final = [p.detach().clone() for p in m.parameters()]

    m2, opt2, tgt2, sched2 = build(1)  # other initial weights: everything must come from the checkpoint
    m2.load_state_dict(checkpoint["model"])
    opt2.load_state_dict(checkpoint["opt"])
    sched2.load_state_dict(checkpoint["sched"])
    assert sched2.last_epoch == 17
    resumed = []
    for _ in range(20):
        _train_step(m2, opt2, x, y)
        sched2.step()
        resumed.append(sched2.get_last_wd())
    assert resumed == reference
    for a, b in zip(final, m2.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_the_optimizer_state_dict_keeps_the_initial_weight_decay() -> None:
    opt = adamw(model())
    sched = CosineWD(opt, 10, 0.4)
    for _ in range(4):
        sched.step()
    groups = opt.state_dict()["param_groups"]
    assert groups[0][INITIAL_WD_KEY] == L0 and groups[0]["weight_decay"] == pytest.approx(
        0.4 + 0.5 * (L0 - 0.4) * (1 + math.cos(math.pi * 4 / 10))
    )
    # resuming by last_epoch (torch's other way) reads λ₀ back from the groups
    again = CosineWD(opt, 10, 0.4, last_epoch=3)
    assert again.last_epoch == 4 and again.base_wds == [L0, 0.0]
    assert opt.param_groups[0]["weight_decay"] == pytest.approx(groups[0]["weight_decay"])


def test_works_with_torch_lr_schedulers_side_by_side() -> None:
    m = model()
    opt = adamw(m)
    lr_sched = torch.optim.lr_scheduler.StepLR(opt, 3, 0.5)
    wd_sched = StepWD(opt, 2, 0.5)
    x, y = _data()
    for _ in range(6):
        _train_step(m, opt, x, y)
        lr_sched.step()
        wd_sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-2 * 0.25)
    assert opt.param_groups[0]["weight_decay"] == pytest.approx(L0 * 0.125)


def _raises(match: str, fn: Callable[[], Any]) -> str:
    with pytest.raises(InvalidParameterError, match=match) as info:
        fn()
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("The '")
    return msg


def test_bad_input_is_one_line_in_the_library_style() -> None:
    opt = adamw(model())
    msg = _raises("final_weight_decay", lambda: CosineWD(opt, 10, final_weight_decay=-0.1))
    assert msg == "The 'final_weight_decay' parameter of CosineWD must be a float in [0, inf). Got -0.1."
    _raises("final_weight_decay", lambda: CosineWD(opt, 10, final_weight_decay=float("inf")))
    _raises("final_weight_decay", lambda: CosineWD(opt, 10, final_weight_decay=float("nan")))
    _raises("gamma", lambda: StepWD(opt, 3, gamma=-1))
    _raises("total_steps", lambda: CosineWD(opt, 0))
    # λ_t negative or not finite at some step
    sched = LambdaWD(opt, lambda t: 1.0 if t < 2 else -0.5)
    sched.step()
    msg = _raises("wd_lambda", sched.step)
    assert "at step 2" in msg and msg.endswith("Got -0.5.")
    _raises("wd_lambda", lambda: LambdaWD(opt, lambda t: float("nan")))
    # a negative λ₀ in the group
    bad = torch.optim.SGD(model().parameters(), lr=0.1)
    bad.param_groups[0]["weight_decay"] = -0.1
    _raises("initial_weight_decay", lambda: ConstantWD(bad))


def test_a_schedule_longer_or_shorter_than_asked_is_refused() -> None:
    opt = adamw(model())
    msg = _raises("decay_steps", lambda: WarmupStableDecayWD(opt, total_steps=50, warmup_steps=10, decay_steps=45))
    assert "[0, 40]" in msg
    _raises("warmup_steps", lambda: WarmupStableDecayWD(opt, total_steps=50, warmup_steps=60, decay_steps=0))
    a, b = LinearWarmupWD(opt, 5), CosineWD(opt, 10)
    _raises("milestones", lambda: SequentialWD(opt, [a, b], [5, 10]))  # one milestone too many
    _raises("milestones", lambda: SequentialWD(opt, [a, b, ConstantWD(opt)], [5]))  # one too few
    _raises("milestones", lambda: SequentialWD(opt, [a, b, ConstantWD(opt)], [5, 5]))
    msg = _raises("wd_lambda", lambda: LambdaWD(opt, [lambda t: 1.0]))  # 2 groups, 1 function
    assert "list of 2" in msg
    other = adamw(model())
    _raises("schedulers", lambda: SequentialWD(opt, [a, CosineWD(other, 10)], [5]))
    _raises("schedulers", lambda: ChainedWD([a, CosineWD(other, 10)]))
    _raises("schedulers", lambda: ChainedWD([]))


def test_a_target_with_no_decay_to_drive_is_refused() -> None:
    m = model()
    msg = _raises("optimizer", lambda: CosineWD(torch.optim.Adam(m.parameters(), lr=1e-3), 10, 0.4))
    assert "weight_decay is > 0" in msg
    _raises("optimizer", lambda: CosineWD(torch.optim.AdamW(param_groups(m, 0.0), lr=1e-3), 10))
    handle = attach(torch.optim.SGD(m.parameters(), lr=0.1), L1Prox(1e-3), model=m)
    msg = _raises("optimizer", lambda: StepWD(handle, 3))
    assert "AttachHandle" in msg
    _raises("optimizer", lambda: StepWD(m, 3))  # not an optimizer at all
    _raises("last_epoch", lambda: StepWD(torch.optim.AdamW(m.parameters(), lr=1e-3), 3, last_epoch=5))


def test_exported_from_the_package() -> None:
    assert decaylab.CosineWD is CosineWD and decaylab.SequentialWD is SequentialWD
    assert "WarmupStableDecayWD" in dir(decaylab)
