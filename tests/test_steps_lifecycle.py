"""Attached steps follow the optimizer's life: freezing, schedules, GradScaler, decaying twice, layer kinds.

The reference is the ``torch.optim`` optimizer each setting should equal (``AdamW``), run over a whole
schedule; float32 trajectories of the same float operations, compared with margins far above rounding.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import nn

from decaylab.policy import DecayPolicy, param_groups
from decaylab.steps import CautiousDecay, DecoupledDecay, L1Prox, MaxNorm, attach, attached
from decaylab.validation import InvalidParameterError

LAMBDA = 0.05
STEPS = 30


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.backbone = nn.Sequential(nn.Linear(6, 16), nn.LayerNorm(16), nn.Tanh(), nn.Linear(16, 16))
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.backbone(x)))


def data(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(64, 6, generator=g), torch.randn(64, 3, generator=g)


def loss_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return ((model(x) - y) ** 2).mean()


def run(model: nn.Module, opt: torch.optim.Optimizer, sched: object | None = None, steps: int = STEPS,
        before_step: Callable[[int], None] | None = None) -> None:
    x, y = data()
    for t in range(steps):
        if before_step is not None:
            before_step(t)
        opt.zero_grad()
        loss_fn(model, x, y).backward()
        opt.step()
        if sched is not None:
            sched.step()  # type: ignore[attr-defined]


def assert_same(a: nn.Module, b: nn.Module, tol: float = 1e-5) -> None:
    for (name, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=tol, atol=tol, msg=name)


def adamw_reference(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW over every tensor, decaying those the default policy decays (as if all were trainable)."""
    frozen = [p for p in model.parameters() if not p.requires_grad]
    for p in frozen:
        p.requires_grad_(True)
    groups = param_groups(model, weight_decay)
    for p in frozen:
        p.requires_grad_(False)
    return torch.optim.AdamW(groups, lr=lr)


def test_a_backbone_frozen_at_attach_and_unfrozen_later_is_decayed_like_adamw() -> None:
    ours, ref = Net(), Net()
    for m in (ours, ref):
        m.backbone.requires_grad_(False)
    opt = torch.optim.Adam(ours.parameters(), lr=1e-2)
    attach(opt, DecoupledDecay(LAMBDA), model=ours)
    ref_opt = adamw_reference(ref, 1e-2, LAMBDA)

    def unfreeze(model: nn.Module) -> Callable[[int], None]:
        return lambda t: model.backbone.requires_grad_(True) if t == 10 else None

    run(ours, opt, before_step=unfreeze(ours))
    run(ref, ref_opt, before_step=unfreeze(ref))
    assert_same(ours, ref)
    # and the backbone really moved by decay: without it the result differs clearly
    plain = Net()
    plain.backbone.requires_grad_(False)
    plain_opt = torch.optim.Adam(plain.parameters(), lr=1e-2)
    run(plain, plain_opt, before_step=unfreeze(plain))
    assert (plain.backbone[0].weight - ours.backbone[0].weight).abs().max() > 1e-3


def _one_cycle(opt: torch.optim.Optimizer) -> torch.optim.lr_scheduler.OneCycleLR:
    return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.02, total_steps=STEPS)


@pytest.mark.parametrize("attach_first", [True, False])
def test_one_cycle_lr_scaled_decay_equals_adamw_whatever_the_order_of_calls(attach_first: bool) -> None:
    ours, ref = Net(), Net()
    opt = torch.optim.Adam(ours.parameters(), lr=0.02)
    if attach_first:
        attach(opt, DecoupledDecay(LAMBDA), model=ours)
        sched = _one_cycle(opt)
    else:
        sched = _one_cycle(opt)
        attach(opt, DecoupledDecay(LAMBDA), model=ours)
    ref_opt = torch.optim.AdamW(param_groups(ref, LAMBDA), lr=0.02)
    run(ours, opt, sched)
    run(ref, ref_opt, _one_cycle(ref_opt))
    assert_same(ours, ref)


@pytest.mark.parametrize("attach_first", [True, False])
def test_schedule_scaled_decay_takes_gamma0_from_initial_lr_not_from_the_order_of_calls(attach_first: bool) -> None:
    """(γ_t/γ₀)·λ with γ₀ = initial_lr (OneCycleLR: max_lr/25) is AdamW with weight_decay = λ/γ₀."""
    lam = 0.01  # (γ_t/γ₀)·λ peaks at 25·λ = 0.25 < 1
    ours, ref = Net(), Net()
    opt = torch.optim.Adam(ours.parameters(), lr=0.5)  # OneCycleLR overwrites lr: γ₀ must not be 0.5
    if attach_first:
        attach(opt, DecoupledDecay(lam, "schedule"), model=ours)
        sched = _one_cycle(opt)
    else:
        sched = _one_cycle(opt)
        attach(opt, DecoupledDecay(lam, "schedule"), model=ours)
    ref_opt = torch.optim.AdamW(param_groups(ref, lam / (0.02 / 25)), lr=0.5)
    run(ours, opt, sched)
    run(ref, ref_opt, _one_cycle(ref_opt))
    assert_same(ours, ref)


def _warmup(opt: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda t: min(1.0, t / 10))  # lr = 0 at the first step


@pytest.mark.parametrize(("scaled_by", "ref_wd"), [("lr", LAMBDA), ("schedule", LAMBDA / 0.01)])
def test_warm_up_from_lr_zero_reads_gamma0_from_initial_lr(scaled_by: str, ref_wd: float) -> None:
    ours, ref = Net(), Net()
    opt = torch.optim.Adam(ours.parameters(), lr=0.01)
    attach(opt, DecoupledDecay(LAMBDA, scaled_by), model=ours)  # type: ignore[arg-type]
    ref_opt = torch.optim.AdamW(param_groups(ref, ref_wd), lr=0.01)
    run(ours, opt, _warmup(opt))
    run(ref, ref_opt, _warmup(ref_opt))
    assert_same(ours, ref)


def test_an_optimizer_built_with_lr_zero_and_a_hand_written_warm_up_needs_gamma0() -> None:
    def hand_warmup(opt: torch.optim.Optimizer) -> Callable[[int], None]:
        def set_lr(t: int) -> None:
            for group in opt.param_groups:
                group["lr"] = 0.01 * min(1.0, t / 10)
        return set_lr

    model = Net()
    opt = torch.optim.Adam(model.parameters(), lr=0.0)
    attach(opt, DecoupledDecay(LAMBDA, "schedule"), model=model)
    with pytest.raises(InvalidParameterError, match=r"^The 'lr0' parameter of DecoupledDecay must be a float in "
                       r"\(0, inf\): the group's reference learning rate for scaled_by='schedule' is 0"):
        run(model, opt, before_step=hand_warmup(opt))
    ours, ref = Net(), Net()
    opt = torch.optim.Adam(ours.parameters(), lr=0.0)
    attach(opt, DecoupledDecay(LAMBDA, "schedule", lr0=0.01), model=ours)
    ref_opt = torch.optim.AdamW(param_groups(ref, LAMBDA / 0.01), lr=0.0)
    run(ours, opt, before_step=hand_warmup(opt))
    run(ref, ref_opt, before_step=hand_warmup(ref_opt))
    assert_same(ours, ref)


def test_a_decay_factor_at_or_below_zero_raises_before_anything_changes() -> None:
    model = Net()
    opt = torch.optim.Adam(model.parameters(), lr=0.5)
    sched = _one_cycle(opt)
    attach(opt, DecoupledDecay(0.05, "schedule"), model=model)  # (γ_t/γ₀)·λ reaches 25·0.05 = 1.25
    x, y = data()
    with pytest.raises(InvalidParameterError, match=r"factor 1 − s·m·λ stays > 0, but s·m·λ = 1\.0"):
        for _ in range(STEPS):
            opt.zero_grad()
            loss_fn(model, x, y).backward()
            before = copy.deepcopy(model.state_dict())
            opt.step()
            sched.step()
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name  # the failing step changed nothing
    with pytest.raises(InvalidParameterError, match="s·m·λ = 2"):
        w = nn.Parameter(torch.ones(2, 2))
        w.grad = torch.zeros(2, 2)
        o = torch.optim.SGD([w], lr=0.1)
        attach(o, DecoupledDecay(2.0, "none"))
        o.step()
    assert torch.equal(w, torch.ones(2, 2))


def _amp_run(model: nn.Module, opt: torch.optim.Optimizer, inf_steps: set[int]) -> list[bool]:
    """GradScaler on CPU; at the steps in ``inf_steps`` one gradient entry is inf (an overflow)."""
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    x, y = data()
    skipped = []
    for t in range(12):
        opt.zero_grad()
        scaler.scale(loss_fn(model, x, y)).backward()
        if t in inf_steps:
            with torch.no_grad():
                model.head.weight.grad[0, 0] = math.inf
        before = [p.detach().clone() for p in model.parameters()]
        scaler.step(opt)
        scaler.update()
        skipped.append(all(torch.equal(p, b) for p, b in zip(model.parameters(), before, strict=True)))
    return skipped


@pytest.mark.parametrize("fused", [True, False])
def test_a_step_that_grad_scaler_skips_skips_every_attached_step(fused: bool) -> None:
    inf_steps = {3, 7}
    ours, ref = Net(), Net()
    opt = torch.optim.Adam(ours.parameters(), lr=1e-2, fused=fused)
    assert getattr(opt, "_step_supports_amp_scaling", False) == fused  # fused: GradScaler calls step() with found_inf set
    attach(opt, DecoupledDecay(LAMBDA), model=ours)
    attach(opt, L1Prox(1e-4), MaxNorm(1.0), model=ours)
    ref_opt = torch.optim.AdamW(param_groups(ref, LAMBDA), lr=1e-2, fused=fused)
    skipped = _amp_run(ours, opt, inf_steps)
    assert [t for t, s in enumerate(skipped) if s] == sorted(inf_steps)  # nothing moved at those steps
    # and otherwise: AdamW under the same scaler, then the same projection and shrinkage by hand
    ref_skipped = _amp_run_with_post(ref, ref_opt, inf_steps)
    assert ref_skipped == skipped
    assert_same(ours, ref)


def _amp_run_with_post(model: nn.Module, opt: torch.optim.Optimizer, inf_steps: set[int]) -> list[bool]:
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    x, y = data()
    skipped = []
    for t in range(12):
        opt.zero_grad()
        scaler.scale(loss_fn(model, x, y)).backward()
        if t in inf_steps:
            with torch.no_grad():
                model.head.weight.grad[0, 0] = math.inf
        before = [p.detach().clone() for p in model.parameters()]
        scaler.step(opt)
        scaler.update()
        if t not in inf_steps:
            with torch.no_grad():
                for p in model.parameters():
                    if p.dim() < 2:
                        continue
                    lr = opt.param_groups[0]["lr"]
                    p.copy_(p.sign() * (p.abs() - lr * 1e-4).clamp_min(0))
                    norms = p.norm(dim=1, keepdim=True)
                    p.mul_(torch.where(norms > 1.0, 1.0 / norms, torch.ones_like(norms)))
        skipped.append(all(torch.equal(p, b) for p, b in zip(model.parameters(), before, strict=True)))
    return skipped


def test_a_second_decay_or_a_decaying_optimizer_is_refused_with_the_way_to_do_it_on_purpose() -> None:
    model = Net()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    first = attach(opt, DecoupledDecay(LAMBDA), model=model)
    for second in (DecoupledDecay(0.1), CautiousDecay(0.1)):
        with pytest.raises(InvalidParameterError, match="weight decay is attached already.*handle.detach\\(\\).*"
                           "allow_repeat=True"):
            attach(opt, second, model=model)
    assert attached(opt) == [first]
    both = attach(opt, DecoupledDecay(0.1), model=model, allow_repeat=True)
    assert attached(opt) == [first, both]
    both.detach()
    first.detach()
    attach(opt, DecoupledDecay(0.1), model=model)  # after detach: allowed
    with pytest.raises(InvalidParameterError, match="MaxNorm is attached already"):
        attach(opt, MaxNorm(1.0), MaxNorm(2.0))
    adamw = torch.optim.AdamW(model.parameters(), lr=1e-3)  # weight_decay=0.01 by default
    with pytest.raises(InvalidParameterError, match=r"^The 'optimizer' parameter of attach must be an optimizer "
                       r"that does not already decay .*weight_decay=0\.01, AdamW's default.*build it with "
                       r"weight_decay=0, or pass allow_repeat=True .* Got 'AdamW'\.$"):
        attach(adamw, DecoupledDecay(LAMBDA), model=model)
    attach(adamw, MaxNorm(3.0), model=model)  # not a decay: fine
    attach(torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0), DecoupledDecay(LAMBDA))
    # a group whose tensors the step leaves alone does not count
    attach(torch.optim.SGD(param_groups(model, 0.0), lr=0.1, weight_decay=0.1), DecoupledDecay(LAMBDA),
           policy=DecayPolicy(exclude="*"))


def test_max_norm_bounds_output_units_per_layer_kind_as_keras_axes_say() -> None:
    """Keras MaxNorm(c, axis): w · clip(‖w‖, 0, c)/(ε + ‖w‖), norms over ``axis`` of the Keras kernel."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 3), nn.ConvTranspose2d(6, 4, 3, groups=2), nn.Linear(5, 7))
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(8.0)  # most units outside the ball
    c = 1.0
    w = {n: p.detach().double().numpy().copy() for n, p in model.named_parameters()}
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    attach(opt, MaxNorm(c), model=model)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()

    def keras(kernel: np.ndarray, axis: tuple[int, ...]) -> np.ndarray:
        norms = np.sqrt((kernel**2).sum(axis=axis, keepdims=True))
        return kernel * np.clip(norms, 0, c) / (1e-7 + norms)

    conv = keras(w["0.weight"].transpose(2, 3, 1, 0), (0, 1, 2)).transpose(3, 2, 0, 1)  # (kh, kw, in, out)
    dense = keras(w["2.weight"].T, (0,)).T  # Keras Dense kernel (in, out), its default axis=0
    # transposed, groups=2: weight (in=6, out/g=2, k, k); output channel (g, j) has inputs of group g only
    t = w["1.weight"]
    tconv = np.concatenate(
        [keras(t[3 * g:3 * g + 3].transpose(2, 3, 1, 0), (0, 1, 3)).transpose(3, 2, 0, 1) for g in range(2)]
    )  # per group: (kh, kw, out, in) = Keras Conv2DTranspose's layout, axis=[0, 1, 3]
    for name, expected in (("0.weight", conv), ("1.weight", tconv), ("2.weight", dense)):
        got = dict(model.named_parameters())[name].detach().double().numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6, err_msg=name)
