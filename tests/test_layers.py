"""Dropout and Gaussian noise: exact cases, statistics with tolerances from their variances."""

from __future__ import annotations

import math

import pytest
import torch

from decaylab.layers import Dropout, GaussianNoise
from decaylab.validation import InvalidParameterError

N = 200_000


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_dropout_exact_cases() -> None:
    x = torch.randn(50, 7, generator=_gen(0))
    layer = Dropout(0.5)
    layer.eval()
    assert layer(x) is x
    assert Dropout(0.0)(x) is x
    assert torch.equal(Dropout(1.0)(x), torch.zeros_like(x))


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_dropout_keeps_the_mean(p: float) -> None:
    """E[y] = x and Var[y_i] = p/(1−p)·x_i², so mean(y − x) has standard error √(Σx²·p/(1−p))/N."""
    x = torch.randn(N, generator=_gen(1), dtype=torch.float64)
    y = Dropout(p, generator=_gen(2))(x)
    se = math.sqrt(float((x**2).sum()) * p / (1 - p)) / N
    assert abs(float((y - x).mean())) < 5 * se
    kept = y != 0
    torch.testing.assert_close(y[kept], x[kept] / (1 - p), rtol=1e-15, atol=0)


@pytest.mark.parametrize("p", [0.2, 0.7])
def test_dropout_matches_torch_nn_dropout_in_distribution(p: float) -> None:
    """Keep-rates agree within 5 standard errors of a two-proportion test; kept values are x/(1−p) in both."""
    x = torch.rand(N, generator=_gen(3)) + 0.5  # never 0: a zero output means dropped
    ours = Dropout(p, generator=_gen(4))(x)
    torch.manual_seed(5)
    ref = torch.nn.Dropout(p)(x)
    rate_ours, rate_ref = float((ours != 0).double().mean()), float((ref != 0).double().mean())
    se = math.sqrt(2 * p * (1 - p) / N)
    assert abs(rate_ours - rate_ref) < 5 * se
    assert abs(rate_ours - (1 - p)) < 5 * math.sqrt(p * (1 - p) / N)
    for y in (ours, ref):
        kept = y != 0
        torch.testing.assert_close(y[kept], x[kept] / (1 - p), rtol=1e-6, atol=0)


def test_dropout_follows_its_generator() -> None:
    x = torch.ones(1000)
    assert torch.equal(Dropout(0.5, generator=_gen(7))(x), Dropout(0.5, generator=_gen(7))(x))
    assert not torch.equal(Dropout(0.5, generator=_gen(7))(x), Dropout(0.5, generator=_gen(8))(x))


def test_gaussian_noise_is_l2_in_expectation_for_a_linear_model() -> None:
    """Bishop (1995): E[(wᵀ(x+σε) + b − y)²/2] = (wᵀx + b − y)²/2 + σ²/2·‖w‖², by Monte Carlo."""
    g = _gen(10)
    n, d, draws, sigma = 20, 5, 4000, 0.5
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    w = torch.randn(d, generator=g, dtype=torch.float64)
    b, y = 0.3, torch.randn(n, generator=g, dtype=torch.float64)
    noise = GaussianNoise(sigma, generator=_gen(11))
    noisy = noise(X.expand(draws, n, d))  # one independent draw of the whole batch per row
    losses = (((noisy @ w + b - y) ** 2) / 2).mean(dim=1)  # (draws,)
    clean = float((((X @ w + b - y) ** 2) / 2).mean())
    expected = clean + sigma**2 / 2 * float(w @ w)
    se = float(losses.std()) / math.sqrt(draws)
    assert abs(float(losses.mean()) - expected) < 5 * se
    assert expected - clean > 20 * se  # the test could tell a missing or wrongly scaled noise


def test_gaussian_noise_exact_cases() -> None:
    x = torch.randn(10, 3, generator=_gen(0))
    layer = GaussianNoise(1.0)
    layer.eval()
    assert layer(x) is x
    assert GaussianNoise(0.0)(x) is x
    assert not torch.equal(GaussianNoise(1.0)(x), x)


def test_bad_arguments_raise_the_template() -> None:
    with pytest.raises(InvalidParameterError) as info:
        Dropout(1.5)
    assert str(info.value) == "The 'p' parameter of Dropout must be a float in [0, 1]. Got 1.5."
    with pytest.raises(InvalidParameterError, match=r"The 'p' parameter of Dropout must be a float in \[0, 1\]"):
        Dropout(-0.1)
    with pytest.raises(InvalidParameterError) as info:
        GaussianNoise(-1)
    assert str(info.value) == "The 'sigma' parameter of GaussianNoise must be a float in [0, inf). Got -1."
    with pytest.raises(InvalidParameterError, match="The 'generator' parameter of Dropout must be a torch.Generator"):
        Dropout(0.5, generator=3)  # type: ignore[arg-type]
