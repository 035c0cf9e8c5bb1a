"""Synthetic data sets."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from decaylab.rng import generator

__all__ = ["Regression", "d2l_linear_data"]


@dataclass(frozen=True)
class Regression:
    """A train/test split of a regression problem with the truth that generated it."""

    X_train: torch.Tensor  # (n_train, dim)
    y_train: torch.Tensor  # (n_train, 1)
    X_test: torch.Tensor  # (n_test, dim)
    y_test: torch.Tensor  # (n_test, 1)
    true_w: torch.Tensor  # (dim, 1)
    true_b: float


def d2l_linear_data(
    seed: int,
    n_train: int = 20,
    n_test: int = 100,
    dim: int = 200,
    *,
    w_value: float = 0.01,
    b_value: float = 0.05,
    noise_std: float = 0.01,
    dtype: torch.dtype = torch.float32,
) -> Regression:
    """D2L's high-dimensional linear regression (section "Weight Decay"), drawn from the ``data`` stream.

    ``y = X w + b + eps`` with ``X ~ N(0, 1)``, ``w = 0.01 * 1``, ``b = 0.05``, ``eps ~ N(0, 0.01^2)``.
    The training rows are drawn first, then the test rows, as ``d2l.synthetic_data`` is called twice.
    """
    g = generator(seed, "data")
    true_w = torch.full((dim, 1), w_value, dtype=dtype)

    def draw(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        X = torch.normal(0.0, 1.0, (n, dim), generator=g, dtype=dtype)
        y = X @ true_w + b_value
        y = y + torch.normal(0.0, noise_std, y.shape, generator=g, dtype=dtype)
        return X, y

    X_train, y_train = draw(n_train)
    X_test, y_test = draw(n_test)
    return Regression(X_train, y_train, X_test, y_test, true_w, b_value)
