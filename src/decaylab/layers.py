"""Layers that regularize by noise: inverted dropout and Gaussian input noise, written out.

Both draw from an optional ``torch.Generator`` (decaylab gives each configuration its own ``dropout``
and ``noise`` streams, see :mod:`decaylab.rng`), act in training mode only, and are the identity in
evaluation mode (``module.eval()``).
"""

from __future__ import annotations

import torch
from torch import nn

from decaylab.validation import check_float, parameter_error

__all__ = ["Dropout", "GaussianNoise"]


def _check_generator(generator: object, owner: str) -> torch.Generator | None:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise parameter_error("generator", owner, "a torch.Generator or None", generator)
    return generator


class Dropout(nn.Module):
    r"""Inverted dropout: keep each entry with probability ``1 − p`` and scale the kept ones by ``1/(1 − p)``.

    .. math::
        u_i \sim \mathcal{U}[0, 1), \qquad
        y_i = \frac{\mathbb{1}[u_i \ge p]}{1 - p}\, x_i
        \quad\text{(training)}, \qquad y = x \quad\text{(evaluation)}

    so that ``E[y] = x`` and ``Var[y_i] = p/(1 − p)·x_i²``. ``p = 0`` is the identity, ``p = 1`` gives
    zeros. The same distribution as ``torch.nn.Dropout`` (a different random stream).

    References: Srivastava, Hinton, Krizhevsky, Sutskever & Salakhutdinov, "Dropout", JMLR 2014;
    D2L §5.6 (``dropout_layer``).
    """

    def __init__(self, p: float = 0.5, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.p = check_float(p, "p", "Dropout", low=0.0, high=1.0)
        self.generator = _check_generator(generator, "Dropout")

    def extra_repr(self) -> str:
        return f"p={self.p:g}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if self.p == 1.0:
            return torch.zeros_like(x)
        u = torch.rand(x.shape, generator=self.generator, device=x.device)
        keep = (u >= self.p).to(x.dtype)
        return x * (keep * (1.0 / (1.0 - self.p)))


class GaussianNoise(nn.Module):
    r"""Additive Gaussian noise in training mode: ``y = x + σ·ε``, ``ε ~ N(0, I)``; identity in evaluation.

    For a linear model ``ŷ = wᵀx + b`` and the loss ``(ŷ − y)²/2``, training on noisy inputs minimizes
    in expectation the clean loss plus ``σ²/2·‖w‖²`` — L2 regularization with ``λ = σ²``
    (Bishop, "Training with noise is equivalent to Tikhonov regularization", Neural Computation 1995).
    """

    def __init__(self, sigma: float, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.sigma = check_float(sigma, "sigma", "GaussianNoise", low=0.0)
        self.generator = _check_generator(generator, "GaussianNoise")

    def extra_repr(self) -> str:
        return f"sigma={self.sigma:g}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.sigma == 0.0:
            return x
        noise = torch.randn(x.shape, generator=self.generator, device=x.device, dtype=x.dtype)
        return x + self.sigma * noise
