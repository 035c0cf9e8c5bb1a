"""Linear regression with a known, possibly sparse, ground truth (``sparsity``, ``constraint``, ``ridge-path``).

::

    y = X w* + b* + eps,   eps ~ N(0, noise_std^2)
    X rows ~ N(0, Sigma),  Sigma_ij = correlation^|i - j|   (AR(1); correlation = 0: independent features)
    w*: n_nonzero entries with |w*_j| ~ U(low, high) and a random sign; the other dim - n_nonzero are exactly 0

Everything is drawn from the ``data`` stream of the seed (:func:`decaylab.rng.generator`), in this order:
the support (``randperm(dim)[:n_nonzero]``), the magnitudes, the signs, then the training rows and
their noise, then the test rows and their noise — so ``n_test`` never changes the training set.
With ``n_nonzero = dim`` the truth is dense.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from decaylab.rng import generator
from decaylab.validation import check_float, check_int, parameter_error

__all__ = ["SparseRegression", "sparse_linear_data"]


@dataclass(frozen=True)
class SparseRegression:
    """A train/test split of a linear regression problem and the truth that generated it."""

    X_train: torch.Tensor  # (n_train, dim)
    y_train: torch.Tensor  # (n_train,)
    X_test: torch.Tensor  # (n_test, dim)
    y_test: torch.Tensor  # (n_test,)
    true_w: torch.Tensor  # (dim,), exactly 0 off the support
    true_b: float
    noise_std: float

    @property
    def support(self) -> torch.Tensor:
        """Boolean mask of the true non-zeros of ``w*``."""
        return self.true_w != 0


def _ar1_factor(dim: int, correlation: float, dtype: torch.dtype) -> torch.Tensor:
    """``L`` with ``L Lᵀ = Sigma``, ``Sigma_ij = correlation^|i−j|`` (so ``z Lᵀ`` has covariance Sigma)."""
    idx = torch.arange(dim, dtype=torch.float64)
    sigma = correlation ** (idx[:, None] - idx[None, :]).abs()
    return torch.linalg.cholesky(sigma).to(dtype)


def sparse_linear_data(
    seed: int,
    n_train: int = 200,
    n_test: int = 1000,
    dim: int = 100,
    n_nonzero: int = 8,
    *,
    low: float = 1.0,
    high: float = 3.0,
    noise_std: float = 1.0,
    correlation: float = 0.0,
    intercept: float = 0.0,
    dtype: torch.dtype = torch.float64,
) -> SparseRegression:
    """Draw the data set of ``seed`` (see the module docstring); float64 by default."""
    owner = "sparse_linear_data"
    n_train = check_int(n_train, "n_train", owner, low=1)
    n_test = check_int(n_test, "n_test", owner, low=0)
    dim = check_int(dim, "dim", owner, low=1)
    n_nonzero = check_int(n_nonzero, "n_nonzero", owner, low=0, high=dim)
    low = check_float(low, "low", owner, low=0.0)
    high = check_float(high, "high", owner, low=low)
    noise_std = check_float(noise_std, "noise_std", owner, low=0.0)
    correlation = check_float(correlation, "correlation", owner, low=0.0, high=1.0, high_open=True)
    intercept = check_float(intercept, "intercept", owner)
    if dtype not in (torch.float32, torch.float64):
        raise parameter_error("dtype", owner, "torch.float32 or torch.float64", dtype)

    g = generator(seed, "data")
    support = torch.randperm(dim, generator=g)[:n_nonzero].sort().values
    magnitude = low + (high - low) * torch.rand(n_nonzero, generator=g, dtype=torch.float64)
    sign = torch.where(torch.rand(n_nonzero, generator=g, dtype=torch.float64) < 0.5, -1.0, 1.0)
    true_w = torch.zeros(dim, dtype=torch.float64)
    true_w[support] = magnitude * sign
    factor = _ar1_factor(dim, correlation, torch.float64) if correlation > 0 else None

    def draw(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        X = torch.normal(0.0, 1.0, (n, dim), generator=g, dtype=torch.float64)
        if factor is not None:
            X = X @ factor.T
        y = X @ true_w + intercept + noise_std * torch.normal(0.0, 1.0, (n,), generator=g, dtype=torch.float64)
        return X.to(dtype), y.to(dtype)

    X_train, y_train = draw(n_train)
    X_test, y_test = draw(n_test)
    return SparseRegression(X_train, y_train, X_test, y_test, true_w.to(dtype), intercept, noise_std)
