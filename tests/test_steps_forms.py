"""CautiousDecay and corrected decay against references written here from the papers' algorithms.

References (float32, the same float operations as torch.optim's single-tensor kernels for the base update):

* Cautious weight decay, Chen et al. 2025 (arXiv 2510.12402), Algorithm 1:
  ``x_{t+1} = x_t − η_t·u_t − η_t·λ·𝟙[u_t ⊙ x_t ≥ 0] ⊙ x_t``, u_t the optimizer's update direction.
* Corrected decay, Defazio et al. 2025 / timm ``adamc``: ``x_{t+1} = x_t − η_t·u_t − (η_t²/η_max)·λ·x_t``.

Both over a whole warm-up + cosine schedule, with Adam and with SGD + momentum as the base optimizer.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from decaylab.steps import CautiousDecay, DecoupledDecay, attach

LAMBDA, LR, STEPS, BETAS, EPS, MOMENTUM = 0.3, 0.02, 40, (0.9, 0.999), 1e-8, 0.9


def schedule(t: int) -> float:
    """Warm-up over 5 steps, then cosine to 0.1·LR: the factor of LambdaLR (peak 1 = γ_max/LR)."""
    if t < 5:
        return (t + 1) / 5
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (t - 5) / (STEPS - 5)))


def problem() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    X, Y = torch.randn(32, 5, generator=g), torch.randn(32, 3, generator=g)
    return X, Y, torch.randn(3, 5, generator=g)


def grad(W: torch.Tensor, X: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
    W = W.detach().requires_grad_(True)
    ((X @ W.T - Y) ** 2).mean().backward()
    assert W.grad is not None
    return W.grad


def reference(base: str, form: str) -> torch.Tensor:
    """The papers' algorithms by hand: base update u (Adam or heavy-ball SGD), then the decay form."""
    X, Y, W = problem()
    m, v, buf = torch.zeros_like(W), torch.zeros_like(W), None
    for t in range(STEPS):
        lr = LR * schedule(t)
        g = grad(W, X, Y)
        if base == "adam":  # torch.optim.Adam, single-tensor: η·u = (lr/bc1)·m / (√v/√bc2 + ε)
            m.lerp_(g, 1 - BETAS[0])
            v.mul_(BETAS[1]).addcmul_(g, g, value=1 - BETAS[1])
            bc1, bc2 = 1 - BETAS[0] ** (t + 1), 1 - BETAS[1] ** (t + 1)
            step = m / (v.sqrt() / math.sqrt(bc2)).add_(EPS) * (lr / bc1)
        else:  # torch.optim.SGD(momentum), dampening 0: b ← μb + g; η·u = lr·b
            buf = g.clone() if buf is None else buf.mul_(MOMENTUM).add_(g)
            step = lr * buf
        if form == "cautious":
            mask = (step * W >= 0).to(W.dtype)  # sign(u) = sign(x), u·x ≥ 0 as in the paper
            W = W - step - lr * LAMBDA * mask * W
        elif form == "corrected":
            W = W - step - (lr * lr / LR) * LAMBDA * W  # η_max = LR, the peak of the schedule
        else:
            W = W - step - lr * LAMBDA * W
    return W


def ours(base: str, step: object) -> torch.Tensor:
    X, Y, W0 = problem()
    W = nn.Parameter(W0.clone())
    opt = (torch.optim.Adam([W], lr=LR, betas=BETAS, eps=EPS, foreach=False) if base == "adam"
           else torch.optim.SGD([W], lr=LR, momentum=MOMENTUM))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    attach(opt, step)  # type: ignore[arg-type]
    for _ in range(STEPS):
        opt.zero_grad()
        ((X @ W.T - Y) ** 2).mean().backward()
        opt.step()
        sched.step()
    return W.detach()


@pytest.mark.parametrize("base", ["adam", "sgd"])
def test_cautious_decay_equals_the_papers_algorithm_over_a_schedule(base: str) -> None:
    got, expected = ours(base, CautiousDecay(LAMBDA)), reference(base, "cautious")
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
    # a real difference from plain decoupled decay: the mask left some coordinates undecayed
    assert (got - reference(base, "plain")).abs().max() > 1e-3


@pytest.mark.parametrize("base", ["adam", "sgd"])
def test_corrected_decay_equals_its_definition_over_a_schedule(base: str) -> None:
    got = ours(base, DecoupledDecay(LAMBDA, scaled_by="corrected"))  # γ_max = initial_lr = LR (LambdaLR)
    torch.testing.assert_close(got, reference(base, "corrected"), rtol=1e-6, atol=1e-6)
    assert (got - reference(base, "plain")).abs().max() > 1e-3
    explicit = ours(base, DecoupledDecay(LAMBDA, scaled_by="corrected", lr_max=LR))
    assert torch.equal(explicit, got)


def test_corrected_decay_at_constant_lr_is_adamw() -> None:
    """γ_t = γ_max: (γ²/γ_max)·λ = γ·λ, AdamW's decay."""
    X, Y, W0 = problem()
    a, b = nn.Parameter(W0.clone()), nn.Parameter(W0.clone())
    ours_opt = torch.optim.Adam([a], lr=LR)
    attach(ours_opt, DecoupledDecay(LAMBDA, scaled_by="corrected"))
    ref = torch.optim.AdamW([b], lr=LR, weight_decay=LAMBDA)
    for _ in range(STEPS):
        for p, opt in ((a, ours_opt), (b, ref)):
            opt.zero_grad()
            ((X @ p.T - Y) ** 2).mean().backward()
            opt.step()
    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_cautious_decay_with_the_mask_all_ones_is_decoupled_decay() -> None:
    """Loss ½‖θ‖² under plain SGD: the update u = θ has θ's sign everywhere, so every coordinate decays."""
    w0 = torch.randn(4, 6, generator=torch.Generator().manual_seed(3))
    out = []
    for step in (CautiousDecay(LAMBDA), DecoupledDecay(LAMBDA)):
        w = nn.Parameter(w0.clone())
        opt = torch.optim.SGD([w], lr=LR)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
        attach(opt, step)
        for _ in range(STEPS):
            opt.zero_grad()
            (0.5 * (w**2).sum()).backward()
            opt.step()
            sched.step()
        out.append(w.detach())
    torch.testing.assert_close(out[0], out[1], rtol=1e-6, atol=1e-7)
    assert (out[0] - w0).abs().max() > 0.1  # it moved


def test_cautious_decay_skips_with_the_optimizer_and_refuses_a_factor_below_zero() -> None:
    w = nn.Parameter(torch.ones(2, 2))
    opt = torch.optim.SGD([w], lr=0.5)
    attach(opt, CautiousDecay(3.0))
    w.grad = torch.ones(2, 2)
    from decaylab.validation import InvalidParameterError

    with pytest.raises(InvalidParameterError, match="s·m·λ = 1.5"):
        opt.step()
    assert torch.equal(w, torch.ones(2, 2))  # refused before the optimizer moved anything
