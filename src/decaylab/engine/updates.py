r"""The optimizer update of K stacked configurations: one implementation for every stacked engine.

Both the MLP fast path (:mod:`decaylab.engine.batched`) and the any-module path
(:mod:`decaylab.engine.module`) keep each parameter as one tensor ``θ`` of shape ``(K, ...)``: row
``k`` is configuration ``k``'s copy. Per-configuration numbers (learning rate, the three decays) are
tensors of shape ``(K, 1, ..., 1)`` broadcast along that axis; each is computed in float64 from the
Python values and rounded once to the parameters' dtype, as PyTorch rounds its Python-float
arguments. Which tensors decay, and by how much, is a *multiplier* ``m`` per tensor, given by
:func:`decaylab.policy.decay_plan` (``m = 0``: not decayed); tensor ``θ`` of configuration ``k`` gets
``m·λ_k``.

**The update** of one step ``t`` (counted from 1), for every tensor ``θ`` with gradient ``g``:

.. math::

    g &\leftarrow g + m\lambda_2\,\theta && \text{coupled L2 (torch.optim's ``weight_decay`` of SGD/Adam)}\\
    \theta &\leftarrow \theta\,(1 - \eta\,m\lambda_d) && \text{decoupled decay (AdamW), with } \theta \text{ before it in } g\\
    \text{SGD:}\quad b &\leftarrow g \ (t = 1), \quad b \leftarrow \mu b + g, \quad
        d = g + \mu b \ (\text{Nesterov}) \text{ else } d = b, \quad \theta \leftarrow \theta - \eta d\\
    \text{Adam:}\quad m_1 &\leftarrow \mathrm{lerp}(m_1, g, 1-\beta_1),\quad
        v \leftarrow \beta_2 v + (1-\beta_2) g^2,\quad
        \theta \leftarrow \theta - \frac{\eta}{1-\beta_1^t}\,\frac{m_1}{\sqrt{v}/\sqrt{1-\beta_2^t} + \epsilon}\\
    \theta &\leftarrow \operatorname{sign}(\theta)\max(|\theta| - \eta\,m\lambda_1, 0) && \text{L1 proximal step}

written with the same elementary operations, in the same order, as ``torch.optim``'s single-tensor
kernels (``torch.optim.SGD``, ``Adam``, ``AdamW``; Adam's bias corrections as Python floats), and
decaylab's :class:`~decaylab.DecoupledDecay` / :class:`~decaylab.L1Prox` steps.

**Divergence freezing.** :meth:`StackedUpdate.freeze_` sets a configuration's parameters and optimizer
buffers to zero and its learning rate to 0: it stays finite, its rows keep being computed (the shapes
do not change) and the other configurations' arithmetic is unchanged bit for bit, since every
operation here is row by row.

Sources: ``torch/optim/sgd.py`` and ``adam.py`` (``_single_tensor_*``); Loshchilov & Hutter,
*Decoupled Weight Decay Regularization*, ICLR 2019.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from decaylab.engine.semantics import soft_threshold_
from decaylab.validation import check_choice, check_float, parameter_error

__all__ = ["OPTIMIZERS", "Coefficients", "OptimizerSettings", "StackedUpdate"]

OPTIMIZERS = ("sgd", "adam")


@dataclass(frozen=True)
class _TensorCoefficients:
    """One tensor's per-configuration coefficients, each ``(K, 1, ..., 1)``; None: 0 for every configuration."""

    lr64: torch.Tensor  # η, float64
    neg_lr: torch.Tensor  # −η
    l2: torch.Tensor | None  # m·λ₂ (coupled L2)
    decay: torch.Tensor | None  # 1 − η·m·λ_d (decoupled decay)
    l1: torch.Tensor | None  # η·m·λ₁ (L1 threshold)


@dataclass(frozen=True)
class OptimizerSettings:
    """The optimizer constants every configuration of a stack shares (``torch.optim``'s conventions).

    ``momentum`` and ``nesterov`` are SGD's (no dampening); ``betas`` and ``eps`` Adam's.
    """

    name: str = "sgd"
    momentum: float = 0.0
    nesterov: bool = False
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8

    def __post_init__(self) -> None:
        owner = "OptimizerSettings"
        check_choice(self.name, "name", owner, OPTIMIZERS)
        check_float(self.momentum, "momentum", owner, low=0.0, high=1.0, high_open=True)
        if not isinstance(self.nesterov, bool):
            raise parameter_error("nesterov", owner, "a bool", self.nesterov)
        if self.nesterov and (self.name != "sgd" or self.momentum == 0):
            raise parameter_error("nesterov", owner, "False unless name='sgd' with momentum > 0", self.nesterov)


@dataclass(frozen=True)
class Coefficients:
    """Each configuration's own numbers, one Python float per configuration (float64 until rounded)."""

    lr: Sequence[float]
    l2: Sequence[float]
    decoupled: Sequence[float]
    l1: Sequence[float]


class StackedUpdate:
    """Optimizer state and update of K stacked configurations (see the module docstring).

    Args:
        params: the stacked tensors, each ``(K, ...)``, updated in place.
        multipliers: the policy multiplier of each tensor (0: not decayed).
        settings: the optimizer.
        coefficients: per configuration ``lr``, ``l2``, ``decoupled``, ``l1``.
    """

    def __init__(
        self,
        params: Sequence[torch.Tensor],
        multipliers: Sequence[float],
        settings: OptimizerSettings,
        coefficients: Coefficients,
    ) -> None:
        if len(params) != len(multipliers):
            raise parameter_error("multipliers", "StackedUpdate", f"{len(params)} numbers, one per tensor", len(multipliers))
        self.params = list(params)
        self.multipliers = [float(m) for m in multipliers]
        self.settings = settings
        self.K = int(self.params[0].shape[0])
        self.dtype = self.params[0].dtype
        self.state: list[dict[str, torch.Tensor]] = [{} for _ in self.params]
        self.t = 0  # optimizer steps taken
        self.active = torch.ones(self.K, dtype=torch.bool)
        self.coefficients = coefficients
        self._set_coefficients()

    # ----------------------------------------------------------------- coefficients
    def _coef(self, values: Sequence[float], ndim: int, dtype: torch.dtype | None = None) -> torch.Tensor:
        """(K, 1, ..., 1) with ``ndim`` dimensions: computed in float64, rounded once to ``dtype``."""
        t = torch.tensor(list(values), dtype=torch.float64).to(dtype or self.dtype)
        return t.view(self.K, *([1] * (ndim - 1)))

    def _set_coefficients(self) -> None:
        """(Re)build the coefficient tensors of every tensor; frozen configurations get lr = 0."""
        c, act = self.coefficients, self.active.tolist()
        lr = [float(x) if a else 0.0 for x, a in zip(c.lr, act, strict=True)]
        self._lr = lr
        lr_cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        cache: dict[tuple[str, float, int], torch.Tensor | None] = {}

        def lr_coef(ndim: int) -> tuple[torch.Tensor, torch.Tensor]:
            """η in float64 and −η in the parameters' dtype."""
            if ndim not in lr_cache:
                lr_cache[ndim] = (self._coef(lr, ndim, torch.float64), self._coef([-x for x in lr], ndim))
            return lr_cache[ndim]

        def coef(kind: str, m: float, ndim: int) -> torch.Tensor | None:
            """A decay's coefficient, or None when it is 0 for every configuration."""
            key = (kind, m, ndim)
            if key not in cache:
                if kind == "l2":
                    cache[key] = self._coef([h * m for h in c.l2], ndim) if m and any(c.l2) else None
                elif kind == "decay":
                    has = m and any(c.decoupled)
                    cache[key] = self._coef([1 - x * (h * m) for x, h in zip(lr, c.decoupled, strict=True)], ndim) if has else None
                else:  # l1 threshold η·m·λ₁
                    cache[key] = self._coef([x * h * m for x, h in zip(lr, c.l1, strict=True)], ndim) if m and any(c.l1) else None
            return cache[key]

        self._per_tensor = [
            _TensorCoefficients(*lr_coef(P.dim()), coef("l2", m, P.dim()), coef("decay", m, P.dim()), coef("l1", m, P.dim()))
            for P, m in zip(self.params, self.multipliers, strict=True)
        ]

    # ----------------------------------------------------------------- the step
    def step(self, grads: Sequence[torch.Tensor]) -> None:
        """One update of every tensor with its gradient ``grads[i]`` (same shape; may be modified in place)."""
        self.t += 1
        s = self.settings
        if s.name == "adam":
            beta1, beta2 = s.betas
            bias_correction2_sqrt = (1 - beta2**self.t) ** 0.5
            bias_correction1 = 1 - beta1**self.t
        for P, g, coef, state in zip(self.params, grads, self._per_tensor, self.state, strict=True):
            # coefficients expanded to θ's shape: the same operation and numbers as broadcasting them, but
            # PyTorch's CPU kernels run it 2-3× faster on large tensors (measured on 2048² rows)
            if coef.l2 is not None:
                g = g.addcmul_(coef.l2.expand_as(P), P)  # g + m·l2·θ (g is this step's own gradient tensor)
            if coef.decay is not None:
                P.mul_(coef.decay.expand_as(P))  # θ·(1 − lr·m·decoupled)
            if s.name == "sgd":
                if s.momentum:
                    buf = state.get("momentum_buffer")
                    if buf is None:
                        buf = state["momentum_buffer"] = g.detach().clone()
                    else:
                        buf.mul_(s.momentum).add_(g)
                    g = g.add(buf, alpha=s.momentum) if s.nesterov else buf
                P.addcmul_(g, coef.neg_lr.expand_as(P))  # θ − lr·g
            else:
                if not state:
                    state["exp_avg"], state["exp_avg_sq"] = torch.zeros_like(P), torch.zeros_like(P)
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.lerp_(g, 1 - beta1)
                v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                denom = (v.sqrt() / bias_correction2_sqrt).add_(s.eps)
                neg_step = (coef.lr64 / bias_correction1).neg().to(self.dtype)  # −lr/(1−β₁ᵗ), rounded once
                P.addcdiv_(m * neg_step.expand_as(P), denom)  # θ + (−step·m)/denom, torch's addcdiv order
            if coef.l1 is not None:
                soft_threshold_(P, coef.l1.expand_as(P))

    # ----------------------------------------------------------------- divergence
    def finite(self) -> torch.Tensor:
        """(K,) bool: whether every parameter of each configuration is finite."""
        ok = torch.ones(self.K, dtype=torch.bool)
        for P in self.params:
            ok &= torch.isfinite(P.detach()).reshape(self.K, -1).all(dim=1)
        return ok

    @torch.no_grad()
    def freeze_(self, newly: torch.Tensor) -> None:
        """Freeze the configurations of the (K,) bool mask ``newly``: parameters and buffers 0, lr 0."""
        if not bool(newly.any()):
            return
        self.active &= ~newly
        for P, state in zip(self.params, self.state, strict=True):
            P[newly] = 0.0
            for buf in state.values():
                buf[newly] = 0.0
        self._set_coefficients()
