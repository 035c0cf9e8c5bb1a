"""Penalties: their values by hand, their gradients against torch.optim, their optima against scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import ElasticNet, Lasso
from torch import nn

from decaylab.penalties import elastic_net_penalty, l1_penalty, l2_penalty
from decaylab.policy import DecayPolicy
from decaylab.validation import InvalidParameterError


def _linear() -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(4, 3).double()


@torch.no_grad()
def test_l2_conventions_by_hand() -> None:
    lin = _linear()
    sq = float((lin.weight**2).sum())  # the bias is excluded by the default policy
    assert float(l2_penalty(lin, 0.3)) == pytest.approx(0.3 / 2 * sq, rel=1e-14)
    assert float(l2_penalty(lin, 0.3, "sum")) == pytest.approx(0.3 * sq, rel=1e-14)
    assert float(l2_penalty(lin, 0.3, "half_mean", n_samples=7)) == pytest.approx(0.3 / 14 * sq, rel=1e-14)
    everything = sq + float((lin.bias**2).sum())
    assert float(l2_penalty(lin.parameters(), 0.3, policy=DecayPolicy.decay_all())) == pytest.approx(
        0.15 * everything, rel=1e-14
    )
    assert float(l2_penalty(lin.parameters(), 0.3)) == pytest.approx(0.15 * sq, rel=1e-14)  # one default
    policy = DecayPolicy(multipliers={"bias": 2.0}, include="bias")
    assert float(l2_penalty(lin, 0.3, policy=policy)) == pytest.approx(
        0.15 * (sq + 2 * float((lin.bias**2).sum())), rel=1e-14
    )


@torch.no_grad()
def test_l1_and_elastic_net_by_hand() -> None:
    lin = _linear()
    a, s = float(lin.weight.abs().sum()), float((lin.weight**2).sum())
    assert float(l1_penalty(lin, 0.2)) == pytest.approx(0.2 * a, rel=1e-14)
    assert float(elastic_net_penalty(lin, 0.2, 0.3)) == pytest.approx(0.2 * (0.3 * a + 0.7 / 2 * s), rel=1e-14)
    assert float(elastic_net_penalty(lin, 0.2, 1.0)) == pytest.approx(float(l1_penalty(lin, 0.2)), rel=1e-14)
    assert float(elastic_net_penalty(lin, 0.2, 0.0)) == pytest.approx(float(l2_penalty(lin, 0.2)), rel=1e-14)


def test_half_l2_penalty_is_sgd_weight_decay() -> None:
    """loss + l2_penalty(λ, "half") under SGD == SGD(weight_decay=λ) on the loss (torch.optim's coupled L2)."""
    torch.manual_seed(1)
    x, y = torch.randn(16, 4, dtype=torch.float64), torch.randn(16, 3, dtype=torch.float64)
    a, b = _linear(), _linear()
    opt_a = torch.optim.SGD(a.parameters(), lr=0.1, momentum=0.9)
    opt_b = torch.optim.SGD(b.parameters(), lr=0.1, momentum=0.9, weight_decay=0.3)
    for _ in range(3):
        opt_a.zero_grad()
        opt_b.zero_grad()
        (((a(x) - y) ** 2).mean() + l2_penalty(a.parameters(), 0.3, policy=DecayPolicy.decay_all())).backward()  # all, like SGD
        ((b(x) - y) ** 2).mean().backward()
        opt_a.step()
        opt_b.step()
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-13, atol=1e-14)


def _data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(40, 6))
    y = X @ np.array([2.0, -1.5, 0.0, 0.0, 0.7, 0.0]) + 0.5 + 0.3 * rng.normal(size=40)
    return X, y


@pytest.mark.parametrize("l1_ratio", [1.0, 0.5])
def test_penalties_on_the_half_mean_loss_are_sklearns_objectives(l1_ratio: float) -> None:
    """KKT conditions of (1/(2n))‖y − Xw − b‖² + penalty, checked at scikit-learn's solution."""
    X, y = _data()
    alpha = 0.2
    est = (Lasso(alpha=alpha, tol=1e-14, max_iter=100_000) if l1_ratio == 1.0
           else ElasticNet(alpha=alpha, l1_ratio=l1_ratio, tol=1e-14, max_iter=100_000)).fit(X, y)
    assert (est.coef_ == 0).any()
    w = torch.tensor(est.coef_, requires_grad=True)
    b = torch.tensor(est.intercept_, requires_grad=True)
    Xt, yt = torch.tensor(X), torch.tensor(y)
    data = ((Xt @ w + b - yt) ** 2).mean() / 2
    data.backward()
    g_smooth = w.grad.clone()
    assert abs(float(b.grad)) < 1e-9  # the intercept is not penalized
    w.grad = None
    if l1_ratio == 1.0:
        penalty = l1_penalty([w], alpha, policy=DecayPolicy.decay_all())  # w is 1-D: named by hand
    else:
        penalty = elastic_net_penalty([w], alpha, l1_ratio, policy=DecayPolicy.decay_all())
    penalty.backward()  # at w_j != 0: the gradient of the penalty; at 0, torch's subgradient is the L2 part
    zero = est.coef_ == 0
    total = g_smooth + w.grad
    assert torch.all(total[~zero].abs() < 1e-8)
    assert torch.all(g_smooth[zero].abs() <= alpha * l1_ratio + 1e-9)


def test_bad_arguments_raise_the_template() -> None:
    lin = _linear()
    with pytest.raises(InvalidParameterError) as info:
        l2_penalty(lin, 0.1, "half_mean")
    assert str(info.value) == (
        "The 'n_samples' parameter of l2_penalty must be an int in [1, inf) when convention='half_mean'. Got None."
    )
    with pytest.raises(InvalidParameterError, match=r"^The 'convention' parameter of l2_penalty must be one of "
                       r"\{'half', 'sum', 'half_mean'\}\. Got 'mean'\.$"):
        l2_penalty(lin, 0.1, "mean")  # type: ignore[arg-type]
    with pytest.raises(InvalidParameterError, match=r"The 'lambd' parameter of l1_penalty must be a float in \[0, inf\)"):
        l1_penalty(lin, -1.0)
    with pytest.raises(InvalidParameterError, match=r"The 'l1_ratio' parameter of elastic_net_penalty must be a "
                       r"float in \[0, 1\]\. Got 1\.5\."):
        elastic_net_penalty(lin, 0.1, 1.5)
    with pytest.raises(InvalidParameterError, match="The 'n_samples' parameter of l2_penalty must be None"):
        l2_penalty(lin, 0.1, "half", n_samples=3)
