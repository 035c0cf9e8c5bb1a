"""convert: literal values, round trips, and every exact pair checked on gradients or updates."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.linear_model import Ridge

from decaylab.conventions import CONVENTIONS, convert, convertible
from decaylab.steps import DecoupledDecay, attach
from decaylab.validation import InvalidParameterError

NAMES = list(CONVENTIONS)
EXACT = [(a, b) for a, b in itertools.product(NAMES, NAMES) if convertible(a, b)]
L2 = [n for n in NAMES if CONVENTIONS[n].family == "l2"]
L1 = [n for n in NAMES if CONVENTIONS[n].family == "l1"]
DECOUPLED = [n for n in NAMES if CONVENTIONS[n].family == "decoupled"]


def test_the_table_documents_every_convention() -> None:
    assert set(NAMES) >= {"d2l", "keras_l2", "torch_sgd", "torch_adam_l2", "torch_adamw", "sklearn_ridge",
                          "sklearn_lasso", "ng", "optax_add_decayed_weights", "l1"}
    for conv in CONVENTIONS.values():
        assert conv.formula and conv.source
    assert convert.__doc__ is not None
    import decaylab.conventions as module

    for name in NAMES:
        assert name in (module.__doc__ or "")


def test_literal_values() -> None:
    assert convert(0.01, "d2l", "sklearn_ridge", n_samples=100) == pytest.approx(1.0)
    assert convert(0.01, "d2l", "keras_l2") == pytest.approx(0.01)  # Keras with loss="mse"
    assert convert(0.01, "d2l", "torch_sgd") == pytest.approx(0.02)  # with nn.MSELoss
    assert convert(0.01, "d2l", "torch_sgd", loss="half_mse") == pytest.approx(0.01)
    assert convert(0.01, "d2l", "ng", n_samples=50) == pytest.approx(0.5)
    assert convert(0.01, "keras_l2", "d2l", src_loss="half_mse") == pytest.approx(0.02)
    assert convert(0.05, "torch_adamw", "decoupled_schedule", lr=1e-3) == pytest.approx(5e-5)
    assert convert(0.05, "torch_adamw", "optax_add_decayed_weights") == 0.05
    assert convert(0.05, "torch_sgd", "torch_adamw") == 0.05
    assert convert(0.2, "l1", "sklearn_lasso") == pytest.approx(0.2)
    assert convert(0.2, "keras_l1", "sklearn_lasso") == pytest.approx(0.1)


CONTEXT = st.fixed_dictionaries(
    {"n_samples": st.integers(1, 10**6), "lr": st.floats(1e-6, 10.0), "lr_max": st.floats(1e-6, 10.0)},
    optional={"src_loss": st.sampled_from(["half_mse", "mse"]), "dst_loss": st.sampled_from(["half_mse", "mse"])},
)


@settings(max_examples=150, deadline=None)
@given(pair=st.sampled_from(EXACT), value=st.floats(1e-9, 1e4), context=CONTEXT)
def test_convert_round_trips(pair: tuple[str, str], value: float, context: dict) -> None:
    src, dst = pair
    ctx = {k: v for k, v in context.items()
           if not (k == "src_loss" and CONVENTIONS[src].loss is None and CONVENTIONS[src].family != "decoupled")
           and not (k == "dst_loss" and CONVENTIONS[dst].loss is None and CONVENTIONS[dst].family != "decoupled")}
    back = {k: v for k, v in ctx.items() if k not in ("src_loss", "dst_loss")}
    if "src_loss" in ctx:
        back["dst_loss"] = ctx["src_loss"]
    if "dst_loss" in ctx:
        back["src_loss"] = ctx["dst_loss"]
    there = convert(value, src, dst, **ctx)
    assert convert(there, dst, src, **back) == pytest.approx(value, rel=1e-12)


# --- L2 and L1 conventions: the objective each one means, written out independently --------------
SCALE = {"half_mse": 1.0, "mse": 2.0}


def _data(r: torch.Tensor, loss: str) -> torch.Tensor:
    return SCALE[loss] * (r**2).mean() / 2


Objective = Callable[[float, torch.Tensor, torch.Tensor, int, "str | None"], torch.Tensor]
OBJECTIVES: dict[str, Objective] = {
    "d2l": lambda v, r, w, n, loss: _data(r, loss or "half_mse") + v / 2 * (w**2).sum(),
    "ng": lambda v, r, w, n, loss: _data(r, loss or "half_mse") + v / (2 * n) * (w**2).sum(),
    "keras_l2": lambda v, r, w, n, loss: _data(r, loss or "mse") + v * (w**2).sum(),
    "torch_sgd": lambda v, r, w, n, loss: _data(r, loss or "mse") + v / 2 * (w**2).sum(),
    "torch_adam_l2": lambda v, r, w, n, loss: _data(r, loss or "mse") + v / 2 * (w**2).sum(),
    "sklearn_ridge": lambda v, r, w, n, loss: (r**2).sum() + v * (w**2).sum(),
    "l1": lambda v, r, w, n, loss: _data(r, loss or "half_mse") + v * w.abs().sum(),
    "keras_l1": lambda v, r, w, n, loss: _data(r, loss or "mse") + v * w.abs().sum(),
    "sklearn_lasso": lambda v, r, w, n, loss: (r**2).mean() / 2 + v * w.abs().sum(),
}
FIXED = {"sklearn_ridge", "sklearn_lasso"}


def _problem(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(15, 3, generator=g, dtype=torch.float64), torch.randn(15, generator=g, dtype=torch.float64)


def _grad(name: str, value: float, theta: torch.Tensor, loss: str | None) -> torch.Tensor:
    X, y = _problem()
    theta = theta.clone().requires_grad_(True)
    w, b = theta[:3], theta[3]
    OBJECTIVES[name](value, X @ w + b - y, w, len(y), None if name in FIXED else loss).backward()
    return theta.grad


@pytest.mark.parametrize("loss", [None, "half_mse", "mse"])
def test_every_exact_penalty_pair_has_proportional_gradients(loss: str | None) -> None:
    """J_src(θ) = k·J_dst(θ) + const for one k and every θ: the same minimizer, the same descent directions."""
    g = torch.Generator().manual_seed(1)
    thetas = [torch.randn(4, generator=g, dtype=torch.float64) for _ in range(3)]
    pairs = [(a, b) for a, b in itertools.product(L2 + L1, repeat=2) if convertible(a, b)]
    assert len(pairs) == len(L2) ** 2 + len(L1) ** 2
    for src, dst in pairs:
        ctx = {"n_samples": 15} | ({} if loss is None else {"loss": loss})
        v = 0.37
        v2 = convert(v, src, dst, **ctx)
        ratios = []
        for theta in thetas:
            g_src, g_dst = _grad(src, v, theta, loss), _grad(dst, v2, theta, loss)
            k = float(g_src @ g_dst / (g_dst @ g_dst))
            torch.testing.assert_close(g_src, k * g_dst, rtol=1e-10, atol=1e-12, msg=f"{src} -> {dst}")
            ratios.append(k)
        assert max(ratios) - min(ratios) < 1e-9 * abs(ratios[0]), (src, dst)


def test_the_written_out_objectives_are_the_frameworks() -> None:
    """torch.optim's SGD and Adam weight_decay = λ/2·Σw² added to the loss; Ridge's alpha minimizes n·(d2l)."""
    X, y = _problem()
    v, lr = 0.37, 0.1
    for make in (lambda p, wd: torch.optim.SGD(p, lr=lr, weight_decay=wd),
                 lambda p, wd: torch.optim.Adam(p, lr=lr, weight_decay=wd)):
        w1 = torch.ones(3, dtype=torch.float64, requires_grad=True)
        w2 = torch.ones(3, dtype=torch.float64, requires_grad=True)
        o1, o2 = make([w1], v), make([w2], 0.0)
        for _ in range(3):
            o1.zero_grad()
            o2.zero_grad()
            _data(X @ w1 - y, "mse").backward()
            OBJECTIVES["torch_sgd"](v, X @ w2 - y, w2, 15, None).backward()
            o1.step()
            o2.step()
        torch.testing.assert_close(w1, w2, rtol=1e-13, atol=1e-14)
    lam = 0.05
    ref = Ridge(alpha=convert(lam, "d2l", "sklearn_ridge", n_samples=len(y))).fit(X.numpy(), y.numpy())
    theta = torch.tensor(np.r_[ref.coef_, ref.intercept_])
    assert float(_grad("d2l", lam, theta, None).abs().max()) < 1e-12


# --- decoupled conventions and the plain-SGD bridge: compare one update -------------------------
def _decay_part(name: str, value: float, theta: torch.Tensor, lr_now: float, lr0: float) -> torch.Tensor:
    """θ_after − θ_before for a zero gradient: the decay alone, from the framework (or its formula)."""
    p = torch.nn.Parameter(theta.clone())
    if name == "torch_adamw":
        opt: torch.optim.Optimizer = torch.optim.AdamW([p], lr=lr_now, weight_decay=value)
    elif name == "torch_sgd":
        opt = torch.optim.SGD([p], lr=lr_now, weight_decay=value)
    elif name == "decoupled_schedule":
        opt = torch.optim.SGD([p], lr=lr0)
        attach(opt, DecoupledDecay(value, scaled_by="schedule", lr0=lr0))
        opt.param_groups[0]["lr"] = lr_now  # a schedule moved the learning rate since
    elif name == "decoupled_fixed":
        opt = torch.optim.SGD([p], lr=lr_now)
        attach(opt, DecoupledDecay(value, scaled_by="none"))
    elif name == "decoupled_corrected":
        opt = torch.optim.SGD([p], lr=lr_now)
        attach(opt, DecoupledDecay(value, scaled_by="corrected", lr_max=LR_MAX))
    elif name == "keras_weight_decay":  # Keras 3 BaseOptimizer._apply_weight_decay: θ ← θ − θ·λ·γ
        return -theta * value * lr_now
    else:  # optax: u ← u + λθ (add_decayed_weights), then θ ← θ − γu (scale_by_learning_rate)
        assert name == "optax_add_decayed_weights"
        return -lr_now * (0.0 + value * theta)
    p.grad = torch.zeros_like(p)
    opt.step()
    return (p - theta).detach()


LR_MAX = 0.5
ONE_RATE = {"decoupled_fixed", "decoupled_corrected"}  # exact at one learning rate (the `lr` given)


@pytest.mark.parametrize("constant", [True, False], ids=["constant-lr", "scheduled-lr"])
def test_every_exact_decoupled_pair_gives_the_same_update(constant: bool) -> None:
    theta = torch.randn(3, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    lr0 = 0.3
    lr_now = lr0 if constant else 0.3 * 0.25
    names = DECOUPLED + ["torch_sgd"]
    assert {"keras_weight_decay", "decoupled_fixed", "decoupled_corrected"} <= set(names)
    pairs = [(a, b) for a, b in itertools.product(names, repeat=2) if convertible(a, b)]
    assert len(pairs) == len(names) ** 2
    if not constant:  # a schedule: γ₀ ≠ γ_t; the one-rate conventions are converted at γ_t, γ₀ is fixed
        pairs = [(a, b) for a, b in pairs if not ({a, b} & ONE_RATE and {a, b} & {"decoupled_schedule"})]
    for src, dst in pairs:
        v = 0.2
        lr = lr_now if {src, dst} & ONE_RATE else lr0
        v2 = convert(v, src, dst, lr=lr, lr_max=LR_MAX)
        torch.testing.assert_close(_decay_part(src, v, theta, lr_now, lr0), _decay_part(dst, v2, theta, lr_now, lr0),
                                   rtol=1e-12, atol=1e-15, msg=f"{src} -> {dst}")
    # the corrected form decays less than AdamW's λ below γ_max: (γ/γ_max)·λ
    assert convert(0.2, "decoupled_corrected", "torch_adamw", lr=0.1, lr_max=0.4) == pytest.approx(0.05)


def test_losses_on_each_side_and_the_cross_entropies() -> None:
    # Ng's logistic regression: (1/m)Σ CE + λ/(2m)Σw² is D2L's form with λ/m on the same loss
    assert convert(1.0, "ng", "d2l", loss="bce", n_samples=50) == pytest.approx(0.02)
    assert convert(0.02, "d2l", "keras_l2", loss="cross_entropy") == pytest.approx(0.01)  # c·Σw² = λ/2·Σw²
    assert convert(0.02, "torch_sgd", "d2l", loss="cross_entropy") == pytest.approx(0.02)
    for src_loss, dst_loss in (("cross_entropy", "mse"), ("mse", "bce"), ("bce", "cross_entropy")):
        with pytest.raises(InvalidParameterError, match="have different minimizers, so no exact conversion"):
            convert(0.1, "d2l", "keras_l2", src_loss=src_loss, dst_loss=dst_loss)
    with pytest.raises(InvalidParameterError, match="have different minimizers"):
        convert(0.1, "d2l", "sklearn_ridge", n_samples=10, loss="cross_entropy")
    with pytest.raises(InvalidParameterError, match="no exact conversion from 'cautious' exists"):
        convert(0.1, "cautious", "torch_adamw")
    assert convert(0.1, "cautious", "cautious") == 0.1


def test_no_exact_conversion_raises_and_says_why() -> None:
    with pytest.raises(InvalidParameterError) as info:
        convert(0.1, "torch_adam_l2", "torch_adamw")
    message = str(info.value)
    assert message.startswith("The 'dst' parameter of convert must be one of {")
    assert "no exact conversion from 'torch_adam_l2' exists" in message and "√v̂" in message
    assert message.endswith("Got 'torch_adamw'.")
    with pytest.raises(InvalidParameterError, match="no exact conversion from 'torch_adamw' exists"):
        convert(0.1, "torch_adamw", "torch_adam_l2")
    for l1, l2 in itertools.product(L1, L2 + DECOUPLED):
        for a, b in ((l1, l2), (l2, l1)):
            with pytest.raises(InvalidParameterError, match="L1"):
                convert(0.1, a, b, n_samples=10, lr=0.1)
    with pytest.raises(InvalidParameterError, match="convert to 'torch_sgd' first"):
        convert(0.1, "d2l", "torch_adamw")


def test_bad_arguments_raise_the_template() -> None:
    with pytest.raises(InvalidParameterError) as info:
        convert(0.1, "d2l", "sklearn_ridge")
    assert str(info.value) == (
        "The 'n_samples' parameter of convert must be an int in [1, inf) when converting 'sklearn_ridge'. Got None."
    )
    with pytest.raises(InvalidParameterError, match=r"^The 'src' parameter of convert must be one of \{'d2l', "):
        convert(0.1, "keras", "d2l")
    with pytest.raises(InvalidParameterError, match=r"^The 'value' parameter of convert must be a float in \[0, inf\)"):
        convert(-1, "d2l", "keras_l2")
    with pytest.raises(InvalidParameterError, match=r"^The 'n' parameter of convert must be one of the context"):
        convert(0.1, "d2l", "ng", n=3)
    with pytest.raises(InvalidParameterError, match=r"^The 'loss' parameter of convert must be one of "
                       r"\{'half_mse', 'mse', 'cross_entropy', 'bce'\}\. Got 'sse'\.$"):
        convert(0.1, "d2l", "keras_l2", loss="sse")
    with pytest.raises(InvalidParameterError, match="The 'src_loss' parameter of convert must be None"):
        convert(0.1, "sklearn_ridge", "d2l", n_samples=3, src_loss="mse")
