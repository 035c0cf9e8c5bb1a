"""scikit-learn's bundled handwritten digits (8×8 images, 10 classes, 1797 examples; offline).

For a seed, one permutation of the 1797 examples is drawn from the seed's ``data`` stream
(:mod:`decaylab.rng`); its first ``n_train`` rows are the training set and the next ``n_test`` rows
(default: all the rest) the test set. A small ``n_train`` makes over-fitting visible. Pixels (0–16)
are scaled to [0, 1]; labels are int64 class indices (the shape of ``loss="cross_entropy"`` in
:class:`decaylab.engine.Task`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

from decaylab.rng import generator
from decaylab.validation import check_int

__all__ = ["N_DIGITS", "Classification", "digits_data"]

N_DIGITS = 1797


@dataclass(frozen=True)
class Classification:
    """A train/test split of a classification problem: float32 features, int64 labels."""

    X_train: torch.Tensor  # (n_train, d) float32
    y_train: torch.Tensor  # (n_train,) int64
    X_test: torch.Tensor  # (n_test, d)
    y_test: torch.Tensor  # (n_test,)
    n_classes: int


@functools.lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return (bunch.data / 16.0).astype(np.float32), bunch.target.astype(np.int64)


def digits_data(seed: int, n_train: int = 200, n_test: int | None = None) -> Classification:
    """``n_train`` training and ``n_test`` (default: the remaining) test digits for ``seed`` (see module docstring)."""
    n_train = check_int(n_train, "n_train", "digits_data", low=1, high=N_DIGITS - 1)
    rest = N_DIGITS - n_train
    n_test = rest if n_test is None else check_int(n_test, "n_test", "digits_data", low=1, high=rest)
    X, y = _digits()
    perm = torch.randperm(N_DIGITS, generator=generator(seed, "data")).numpy()
    train, test = perm[:n_train], perm[n_train : n_train + n_test]
    return Classification(
        X_train=torch.from_numpy(X[train]),
        y_train=torch.from_numpy(y[train]),
        X_test=torch.from_numpy(X[test]),
        y_test=torch.from_numpy(y[test]),
        n_classes=10,
    )
