"""Small float64 data sets for the engine tests (module level, so that tasks holding them pickle)."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from decaylab.rng import generator


def regression(seed: int, n_train: int = 40, n_test: int = 25, dim: int = 6, out: int = 1) -> SimpleNamespace:
    """A noisy linear target in float64 (float64 training sees it unrounded; float32 rounds it once)."""
    g = generator(seed, "data")
    w = torch.randn(dim, out, generator=g, dtype=torch.float64)
    X = torch.randn(n_train + n_test, dim, generator=g, dtype=torch.float64)
    Y = X @ w + 0.3 * torch.randn(n_train + n_test, out, generator=g, dtype=torch.float64)
    return SimpleNamespace(X_train=X[:n_train], y_train=Y[:n_train], X_test=X[n_train:], y_test=Y[n_train:])


def blobs(seed: int, n_train: int = 36, n_test: int = 20, dim: int = 5, classes: int = 3) -> SimpleNamespace:
    """Gaussian blobs around random centres in float64; integer labels."""
    g = generator(seed, "data")
    centres = 1.5 * torch.randn(classes, dim, generator=g, dtype=torch.float64)
    y = torch.randint(0, classes, (n_train + n_test,), generator=g)
    X = centres[y] + torch.randn(n_train + n_test, dim, generator=g, dtype=torch.float64)
    return SimpleNamespace(X_train=X[:n_train], y_train=y[:n_train], X_test=X[n_train:], y_test=y[n_train:])
