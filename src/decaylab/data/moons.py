"""scikit-learn's two interleaving half-moons, with training sets of several sizes and one validation set.

For a seed, two ``random_state`` values for :func:`sklearn.datasets.make_moons` are drawn from the
seed's ``data`` stream (:mod:`decaylab.rng`): one for the validation set, one for the training sets.
The training set of size ``m`` uses ``random_state = SeedSequence([train_state, m])``, so

* the validation set of a seed is the same whatever ``m`` (the yardstick of a comparison across m);
* a training set depends only on ``(seed, m, noise)``, never on which other sizes are in a sweep.

``make_moons`` places ``m/2`` points on each moon at evenly spaced angles, shuffles them and adds
Gaussian noise of standard deviation ``noise`` to both coordinates. Labels are ``0``/``1`` as float
column vectors (the shape of ``loss="bce"`` in :class:`decaylab.engine.Task`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from decaylab.rng import generator
from decaylab.validation import check_float, check_int

__all__ = ["Moons", "moons_data", "moons_states"]


@dataclass(frozen=True)
class Moons:
    """A training set of ``m`` points and the seed's validation set (exposed as ``X_test``/``y_test``)."""

    X_train: torch.Tensor  # (m, 2) float32
    y_train: torch.Tensor  # (m, 1) float32 in {0, 1}
    X_test: torch.Tensor  # (n_val, 2): the validation set
    y_test: torch.Tensor  # (n_val, 1)


def moons_states(seed: int) -> tuple[int, int]:
    """``(validation_state, training_state)``: two ints in [0, 2³¹ − 1) from the seed's ``data`` stream."""
    states = torch.randint(0, 2**31 - 1, (2,), generator=generator(seed, "data"))
    return int(states[0]), int(states[1])


def _moons(n: int, noise: float, state: int) -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import make_moons

    X, y = make_moons(n_samples=n, noise=noise, random_state=state)
    return torch.as_tensor(X, dtype=torch.float32), torch.as_tensor(y, dtype=torch.float32).reshape(-1, 1)


def moons_data(seed: int, m: int, n_val: int = 2000, noise: float = 0.3) -> Moons:
    """The ``m``-point training set and the ``n_val``-point validation set of ``seed`` (see module docstring)."""
    m = check_int(m, "m", "moons_data", low=2)
    n_val = check_int(n_val, "n_val", "moons_data", low=2)
    noise = check_float(noise, "noise", "moons_data", low=0.0)
    val_state, train_state = moons_states(seed)
    train_rs = int(np.random.SeedSequence([train_state, m]).generate_state(1)[0] & 0x7FFFFFFF)
    X_train, y_train = _moons(m, noise, train_rs)
    X_val, y_val = _moons(n_val, noise, val_state)
    return Moons(X_train, y_train, X_val, y_val)
