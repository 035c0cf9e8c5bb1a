"""Decay steps attached to torch.optim optimizers, against torch.optim, closed forms and scikit-learn."""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import pytest
import torch
from sklearn.linear_model import ElasticNet, Lasso, Ridge
from torch import nn

from decaylab.conventions import convert
from decaylab.policy import DecayPolicy, param_groups
from decaylab.steps import LR0_KEY, DecoupledDecay, L1Prox, MaxNorm, attach
from decaylab.validation import InvalidParameterError

LAMBDA = 0.3


def mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2)).double()


def batch(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(32, 4, generator=g, dtype=torch.float64), torch.randn(32, 2, generator=g, dtype=torch.float64)


def backward(model: nn.Module, x: torch.Tensor, y: torch.Tensor, scale: float = 1.0) -> None:
    for p in model.parameters():
        p.grad = None
    (scale * ((model(x) - y) ** 2).mean()).backward()


def decayed(model: nn.Module) -> list[bool]:
    return [p.dim() >= 2 for p in model.parameters()]  # the default policy on an MLP


def test_sgd_coupled_weight_decay_equals_decoupled_decay_without_momentum() -> None:
    x, y = batch()
    a, b = mlp(), mlp()
    coupled = torch.optim.SGD(param_groups(a, LAMBDA), lr=0.1)  # torch's g + λθ, biases excluded
    plain = torch.optim.SGD(b.parameters(), lr=0.1)
    attach(plain, DecoupledDecay(LAMBDA))
    for _ in range(10):
        for model, opt in ((a, coupled), (b, plain)):
            backward(model, x, y)
            opt.step()
        for p, q in zip(a.parameters(), b.parameters(), strict=True):
            torch.testing.assert_close(p, q, rtol=1e-13, atol=1e-14)


def test_with_momentum_coupled_and_decoupled_differ_by_the_theory_after_two_steps() -> None:
    r"""Heavy ball, buffer b₁ = g₁ (+λθ₁ if coupled), b₂ = μb₁ + g₂ (+λθ₂):

    coupled   θ₃ = θ₂ − γ(μ(g₁ + λθ₁) + g₂ + λθ₂)
    decoupled θ₃ = θ₂ − γλθ₂ − γ(μg₁ + g₂)

    θ₂ and g₂ agree (the first step is the same), so θ₃ᶜ − θ₃ᵈ = −γμλθ₁ exactly.
    """
    lr, mu = 0.1, 0.9
    x, y = batch()
    a, b = mlp(), mlp()
    theta1 = [p.detach().clone() for p in a.parameters()]
    coupled = torch.optim.SGD(param_groups(a, LAMBDA), lr=lr, momentum=mu)
    plain = torch.optim.SGD(b.parameters(), lr=lr, momentum=mu)
    attach(plain, DecoupledDecay(LAMBDA))
    for step in range(2):
        for model, opt in ((a, coupled), (b, plain)):
            backward(model, x, y)
            opt.step()
        if step == 0:
            for p, q in zip(a.parameters(), b.parameters(), strict=True):
                torch.testing.assert_close(p, q, rtol=1e-13, atol=1e-14)
    for p, q, t1, dec in zip(a.parameters(), b.parameters(), theta1, decayed(a), strict=True):
        expected = -lr * mu * LAMBDA * t1 if dec else torch.zeros_like(t1)
        torch.testing.assert_close(p - q, expected, rtol=1e-9, atol=1e-13)
        if dec:
            assert (p - q).abs().max() > 1e-3  # a real difference, not rounding


@pytest.mark.parametrize("foreach", [True, False])
def test_adam_with_decoupled_decay_is_adamw_step_for_step(foreach: bool) -> None:
    x, y = batch()
    a, b = mlp(), mlp()
    ours = torch.optim.Adam(a.parameters(), lr=0.01, foreach=foreach)
    attach(ours, DecoupledDecay(LAMBDA))
    ref = torch.optim.AdamW(param_groups(b, LAMBDA), lr=0.01, foreach=foreach)
    for _ in range(8):
        for model, opt in ((a, ours), (b, ref)):
            backward(model, x, y)
            opt.step()
        for p, q in zip(a.parameters(), b.parameters(), strict=True):
            assert torch.equal(p, q)  # the same float operations: bit for bit


def test_adam_l2_is_not_decoupled_decay_where_lambda_theta_dominates_the_gradient() -> None:
    """First Adam step: m̂ = g', v̂ = g'², so θ₁ = θ₀ − γ·g'/(|g'| + ε) with g' the gradient Adam sees.

    Coupled (Adam(weight_decay=λ)): g' = g + λθ₀ → each weight moves by ≈ γ·sign(g + λθ₀).
    Decoupled (AdamW): θ₁ = (1 − γλ)θ₀ − γ·g/(|g| + ε). With a tiny gradient the first shrinks every
    weight by γ (the full step size), the second by γλ|θ₀| only.
    """
    lr, eps = 0.01, 1e-8
    x, y = batch()
    a, b = mlp(), mlp()
    theta0 = [p.detach().clone() for p in a.parameters()]
    adam_l2 = torch.optim.Adam(param_groups(a, LAMBDA), lr=lr, eps=eps)
    adamw = torch.optim.Adam(b.parameters(), lr=lr, eps=eps)
    attach(adamw, DecoupledDecay(LAMBDA))
    for model, opt in ((a, adam_l2), (b, adamw)):
        backward(model, x, y, scale=1e-6)
        opt.step()
    for p, q, t0, dec, g in zip(a.parameters(), b.parameters(), theta0, decayed(a),
                                (p.grad for p in a.parameters()), strict=True):
        g_coupled = g + (LAMBDA * t0 if dec else 0)
        torch.testing.assert_close(p, t0 - lr * g_coupled / (g_coupled.abs() + eps), rtol=1e-10, atol=1e-12)
        shrink = (1 - lr * LAMBDA) if dec else 1.0
        torch.testing.assert_close(q, shrink * t0 - lr * g / (g.abs() + eps), rtol=1e-10, atol=1e-12)
        if dec:
            assert ((p - q).abs() > 1e-3).float().mean() > 0.5  # differs on most weights


OPTIMIZERS: dict[str, Callable[[nn.Module], torch.optim.Optimizer]] = {
    "SGD": lambda m: torch.optim.SGD(m.parameters(), lr=0.1),
    "SGD+momentum": lambda m: torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9, nesterov=True),
    "Adam": lambda m: torch.optim.Adam(m.parameters(), lr=0.01),
    "RMSprop": lambda m: torch.optim.RMSprop(m.parameters(), lr=0.01, momentum=0.5),
}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_attach_works_with_any_optimizer_and_a_scheduler(name: str) -> None:
    """Reference: the same optimizer with the decay written out by hand before each step."""
    x, y = batch()
    a, b = mlp(), mlp()
    ours, ref = OPTIMIZERS[name](a), OPTIMIZERS[name](b)
    attach(ours, DecoupledDecay(LAMBDA))
    scheds = [torch.optim.lr_scheduler.StepLR(o, step_size=2, gamma=0.5) for o in (ours, ref)]
    for _ in range(6):
        backward(a, x, y)
        ours.step()
        backward(b, x, y)
        lr = ref.param_groups[0]["lr"]
        with torch.no_grad():
            for p, dec in zip(b.parameters(), decayed(b), strict=True):
                if dec:
                    p.mul_(1 - lr * LAMBDA)
        ref.step()
        for s in scheds:
            s.step()
        for p, q in zip(a.parameters(), b.parameters(), strict=True):
            torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14)


def _decay_only(scaled_by: str, base_lr: float, steps: int = 4) -> torch.Tensor:
    torch.manual_seed(0)
    w = nn.Parameter(torch.randn(3, 3, dtype=torch.float64))
    opt = torch.optim.SGD([w], lr=base_lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 0.5**t)
    attach(opt, DecoupledDecay(LAMBDA, scaled_by=scaled_by))  # type: ignore[arg-type]
    for _ in range(steps):
        w.grad = torch.zeros_like(w)  # SGD moves nothing: only the decay acts
        opt.step()
        sched.step()
    return w.detach()


@pytest.mark.parametrize("scaled_by", ["lr", "schedule", "none"])
@pytest.mark.parametrize("base_lr", [0.2, 0.02])
def test_lr_schedule_and_none_scaling(scaled_by: str, base_lr: float) -> None:
    """θ_T = θ_0 · Π_t (1 − s_t λ), s_t = γ_t = γ₀·0.5^t ("lr"), 0.5^t ("schedule") or 1 ("none")."""
    torch.manual_seed(0)
    w0 = torch.randn(3, 3, dtype=torch.float64)
    factor = 1.0
    for t in range(4):
        s = {"lr": base_lr * 0.5**t, "schedule": 0.5**t, "none": 1.0}[scaled_by]
        factor *= 1 - s * LAMBDA
    torch.testing.assert_close(_decay_only(scaled_by, base_lr), w0 * factor, rtol=1e-14, atol=0)


def test_schedule_scaling_does_not_depend_on_the_base_learning_rate() -> None:
    assert torch.equal(_decay_only("schedule", 0.2), _decay_only("schedule", 0.02))
    assert not torch.allclose(_decay_only("lr", 0.2), _decay_only("lr", 0.02))


@pytest.mark.parametrize("attach_first", [True, False])
def test_optimizer_checkpoints_round_trip(attach_first: bool) -> None:
    """γ₀ of "schedule" travels in the optimizer's state_dict; a resumed run equals the uninterrupted one."""
    x, y = batch()

    def train(model: nn.Module, opt: torch.optim.Optimizer, steps: range) -> None:
        for t in steps:
            backward(model, x, y)
            opt.step()
            opt.param_groups[0]["lr"] = 0.1 * 0.7 ** (t + 1)  # a hand-made schedule (no "initial_lr")

    def make(model: nn.Module, lr: float) -> torch.optim.Optimizer:
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)

    steps = (DecoupledDecay(LAMBDA, "schedule"), L1Prox(1e-3, "schedule"))
    full = mlp()
    opt = make(full, 0.1)
    attach(opt, *steps)
    train(full, opt, range(3))
    ckpt = copy.deepcopy({"model": full.state_dict(), "opt": opt.state_dict()})
    assert ckpt["opt"]["param_groups"][0][LR0_KEY] == 0.1
    train(full, opt, range(3, 6))

    resumed = mlp(seed=5)
    resumed.load_state_dict(ckpt["model"])
    opt2 = make(resumed, 0.1 * 0.7**3)  # a user who resumes at the current learning rate
    if attach_first:
        attach(opt2, *steps)
        opt2.load_state_dict(ckpt["opt"])
    else:
        opt2.load_state_dict(ckpt["opt"])
        attach(opt2, *steps)
    assert opt2.param_groups[0][LR0_KEY] == 0.1
    train(resumed, opt2, range(3, 6))
    for p, q in zip(full.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(p, q)


def test_detach_stops_the_steps_and_new_groups_are_picked_up() -> None:
    w = nn.Parameter(torch.ones(2, 2, dtype=torch.float64))
    v = nn.Parameter(torch.ones(2, 2, dtype=torch.float64))
    opt = torch.optim.SGD([w], lr=0.5)
    handle = attach(opt, DecoupledDecay(0.1))
    opt.add_param_group({"params": [v], "lr": 0.1})  # added after attach: the plan follows
    for p in (w, v):
        p.grad = torch.zeros_like(p)
    opt.step()
    assert torch.equal(w, torch.full((2, 2), 0.95, dtype=torch.float64))
    assert torch.equal(v, torch.full((2, 2), 0.99, dtype=torch.float64))
    handle.detach()
    handle.detach()  # idempotent
    assert not handle.attached
    opt.step()
    assert torch.equal(w, torch.full((2, 2), 0.95, dtype=torch.float64))
    with attach(opt, DecoupledDecay(0.1)):
        opt.step()
    opt.step()
    assert torch.equal(v, torch.full((2, 2), 0.99 * 0.99, dtype=torch.float64))


def test_parameters_without_gradient_are_not_decayed_like_torch_optim() -> None:
    w = nn.Parameter(torch.ones(2, 2))
    opt = torch.optim.SGD([w], lr=0.5)
    attach(opt, DecoupledDecay(0.1), MaxNorm(0.1), L1Prox(0.1))
    opt.step()  # w.grad is None: torch.optim skips w, and so do the steps
    assert torch.equal(w, torch.ones(2, 2))


def test_max_norm_keeps_every_unit_in_the_ball_and_leaves_inside_units_untouched() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 6, 3), nn.Flatten(), nn.Linear(6 * 4 * 4, 8)).double()
    twin = copy.deepcopy(model)
    c = 0.9
    ours = torch.optim.SGD(model.parameters(), lr=0.3)
    ref = torch.optim.SGD(twin.parameters(), lr=0.3)
    attach(ours, MaxNorm(c))
    g = torch.Generator().manual_seed(3)
    inside = outside = 0
    for _ in range(5):
        with torch.no_grad():
            for p, q in zip(model.parameters(), twin.parameters(), strict=True):
                q.copy_(p)
                p.grad = 0.2 * torch.randn(p.shape, generator=g, dtype=p.dtype)
                q.grad = p.grad.clone()
        ours.step()
        ref.step()  # the unconstrained step from the same point
        for p, q in zip(model.parameters(), twin.parameters(), strict=True):
            if p.dim() < 2:
                assert torch.equal(p, q)  # biases: excluded by the default policy
                continue
            for unit, target in zip(p, q, strict=True):  # dim 0: output units (rows of Linear, filters of Conv2d)
                norm = torch.linalg.vector_norm(target)
                assert torch.linalg.vector_norm(unit) <= c * (1 + 1e-12)
                if norm <= c:
                    assert torch.equal(unit, target)
                    inside += 1
                else:
                    torch.testing.assert_close(unit, target * (c / norm), rtol=1e-14, atol=0)
                    outside += 1
    assert inside > 10 and outside > 10, (inside, outside)


def _linear_data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(60, 6))
    y = X @ np.array([1.5, -2.0, 0.0, 0.0, 0.3, 0.0]) + 3.0 + 0.5 * rng.normal(size=60)
    return X, y


def _full_batch(X: np.ndarray, y: np.ndarray, make_opt: Callable[[nn.Module], torch.optim.Optimizer],
                *steps: object, iters: int) -> nn.Linear:
    """Full-batch training of a linear model on (1/n)Σ(ŷ − y)²/2 (D2L's loss), float64."""
    Xt, yt = torch.tensor(X), torch.tensor(y)
    model = nn.Linear(X.shape[1], 1).double()
    with torch.no_grad():
        model.weight.zero_()
        model.bias.zero_()
    opt = make_opt(model)
    if steps:
        attach(opt, *steps)  # type: ignore[arg-type]
    for _ in range(iters):
        opt.zero_grad()
        (((model(Xt).squeeze(1) - yt) ** 2).mean() / 2).backward()
        opt.step()
    return model


def test_gradient_descent_with_decoupled_decay_converges_to_sklearn_ridge() -> None:
    X, y = _linear_data()
    lam = 0.2
    model = _full_batch(X, y, lambda m: torch.optim.SGD(m.parameters(), lr=0.5), DecoupledDecay(lam), iters=400)
    ref = Ridge(alpha=len(y) * lam).fit(X, y)
    np.testing.assert_allclose(model.weight.detach().numpy()[0], ref.coef_, rtol=0, atol=1e-8)
    assert abs(model.bias.item() - ref.intercept_) < 1e-8


def test_proximal_gradient_with_l1_prox_converges_to_sklearn_lasso_with_the_same_zeros() -> None:
    X, y = _linear_data()
    lam = 0.15
    model = _full_batch(X, y, lambda m: torch.optim.SGD(m.parameters(), lr=0.5), L1Prox(lam), iters=600)
    ref = Lasso(alpha=convert(lam, "l1", "sklearn_lasso"), tol=1e-14, max_iter=100_000).fit(X, y)
    w = model.weight.detach().numpy()[0]
    np.testing.assert_allclose(w, ref.coef_, rtol=0, atol=1e-4)
    assert abs(model.bias.item() - ref.intercept_) < 1e-4
    assert (ref.coef_ == 0).sum() >= 2
    np.testing.assert_array_equal(w == 0, ref.coef_ == 0)


def test_proximal_gradient_with_coupled_l2_converges_to_sklearn_elastic_net() -> None:
    """Smooth part (1/(2n))‖r‖² + λ(1−ρ)/2‖w‖² by SGD's coupled weight_decay; λρ‖w‖₁ by L1Prox."""
    X, y = _linear_data()
    lam, rho = 0.2, 0.6
    model = _full_batch(X, y, lambda m: torch.optim.SGD(param_groups(m, lam * (1 - rho)), lr=0.5),
                        L1Prox(lam * rho), iters=600)
    ref = ElasticNet(alpha=lam, l1_ratio=rho, tol=1e-14, max_iter=100_000).fit(X, y)
    w = model.weight.detach().numpy()[0]
    np.testing.assert_allclose(w, ref.coef_, rtol=0, atol=1e-4)
    assert abs(model.bias.item() - ref.intercept_) < 1e-4
    assert (ref.coef_ == 0).sum() >= 2
    np.testing.assert_array_equal(w == 0, ref.coef_ == 0)


def test_policy_multipliers_scale_each_step() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3)).double()
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    attach(opt, DecoupledDecay(0.1), policy=DecayPolicy(multipliers={"1.*": 3.0}), model=model)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    w0, b0, w1, b1 = model.parameters()
    assert torch.equal(w0, before[0] * (1 - 0.5 * 0.1)) and torch.equal(b0, before[1])
    assert torch.equal(w1, before[2] * (1 - 0.5 * (0.1 * 3.0))) and torch.equal(b1, before[3])


def test_bad_arguments_raise_the_template() -> None:
    with pytest.raises(InvalidParameterError) as info:
        DecoupledDecay(-0.1)
    assert str(info.value) == "The 'weight_decay' parameter of DecoupledDecay must be a float in [0, inf). Got -0.1."
    with pytest.raises(InvalidParameterError) as info:
        DecoupledDecay(0.1, scaled_by="epoch")  # type: ignore[arg-type]
    assert str(info.value) == (
        "The 'scaled_by' parameter of DecoupledDecay must be one of {'lr', 'schedule', 'none', 'corrected'}. Got 'epoch'."
    )
    with pytest.raises(InvalidParameterError) as info:
        MaxNorm(0)
    assert str(info.value) == "The 'max_norm' parameter of MaxNorm must be a float in (0, inf). Got 0."
    with pytest.raises(InvalidParameterError, match=r"^The 'lambd' parameter of L1Prox must be a float in \[0, inf\)"):
        L1Prox(float("nan"))
    opt = torch.optim.SGD([nn.Parameter(torch.ones(2, 2))], lr=0.1)
    with pytest.raises(InvalidParameterError, match="The 'steps' parameter of attach must be instances of"):
        attach(opt, 0.1)  # type: ignore[arg-type]
    with pytest.raises(InvalidParameterError, match="The 'steps' parameter of attach must be at least one of"):
        attach(opt)
    with pytest.raises(InvalidParameterError, match="The 'optimizer' parameter of attach must be a torch.optim"):
        attach(object(), DecoupledDecay(0.1))  # type: ignore[arg-type]
