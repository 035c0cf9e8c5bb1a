"""Penalties added to the loss: L2 (each convention named), L1, elastic net.

Each function returns a scalar tensor to add to the data loss; its gradient is the coupled decay
(``g ← g + ∂penalty/∂w``). The tensors it sums over, and their multipliers ``m``, come from the
decay policy (:func:`decaylab.policy.decay_plan`): ``policy=None`` is the default
:class:`~decaylab.DecayPolicy` for a module, named tensors and bare tensors alike (biases, 1-D tensors
and norm layers excluded); pass ``policy=DecayPolicy.decay_all()`` to penalize every tensor given.
In the formulas below ``Σ`` runs over the decayed tensors ``w`` and their entries, each tensor
weighted by its multiplier ``m``.

How the data term is normalized decides what λ means; the matching scikit-learn and framework values
are listed in :mod:`decaylab.conventions` (``decaylab.convert``).
"""

from __future__ import annotations

from typing import Literal

import torch

from decaylab.policy import DecayPolicy, ModelOrParams, PlanEntry, decay_plan
from decaylab.validation import check_choice, check_float, check_int, parameter_error

__all__ = ["elastic_net_penalty", "l1_penalty", "l2_penalty"]

L2Convention = Literal["half", "sum", "half_mean"]


def _zero(plan: list[PlanEntry]) -> torch.Tensor:
    if plan:
        return plan[0].param.new_zeros(())
    return torch.zeros(())


def _weighted_sum(plan: list[PlanEntry], term: str) -> torch.Tensor:
    """``Σ_w m_w · Σ_i f(w_i)`` with ``f = x²`` (``term="sq"``) or ``|x|`` (``term="abs"``)."""
    total = _zero(plan)
    for entry in plan:
        if entry.multiplier == 0:
            continue
        w = entry.param
        value = w.square().sum() if term == "sq" else w.abs().sum()
        total = total + (value if entry.multiplier == 1 else entry.multiplier * value)
    return total


def l2_penalty(
    model_or_params: ModelOrParams,
    lambd: float,
    convention: L2Convention = "half",
    n_samples: int | None = None,
    policy: DecayPolicy | None = None,
) -> torch.Tensor:
    r"""The L2 penalty ``R(w)`` to add to the loss, in one of three named conventions.

    ======================  =====================  ===============================================
    ``convention``          ``R(w)``               where it comes from
    ======================  =====================  ===============================================
    ``"half"`` (default)    ``λ/2 · Σ w²``         D2L (§3.7), Goodfellow et al. (2016, §7.1.1);
                                                   gradient ``λw``, so SGD's ``weight_decay=λ``
    ``"sum"``               ``λ · Σ w²``           Keras ``regularizers.L2(λ)``; gradient ``2λw``
    ``"half_mean"``         ``λ/(2m) · Σ w²``      Andrew Ng's course, ``m = n_samples``
    ======================  =====================  ===============================================

    Added to the mean loss ``(1/n) Σ (ŷ−y)²/2``, ``"half"`` gives scikit-learn's ``Ridge`` with
    ``alpha = n·λ`` (Ridge's error is the unnormalized ``‖y − Xw‖²``).

    Args:
        model_or_params: a module, ``(name, tensor)`` pairs, or tensors (see the module docstring).
        lambd: λ ≥ 0.
        convention: ``"half"``, ``"sum"`` or ``"half_mean"``.
        n_samples: ``m``, required for (and only for) ``"half_mean"``.
        policy: which tensors count, and their multipliers of λ.

    Example::

        loss = F.mse_loss(model(x), y) / 2 + l2_penalty(model, 1e-3)   # D2L's objective
    """
    lam = check_float(lambd, "lambd", "l2_penalty", low=0.0)
    check_choice(convention, "convention", "l2_penalty", ("half", "sum", "half_mean"))
    if convention == "half_mean":
        if n_samples is None:
            raise parameter_error("n_samples", "l2_penalty", "an int in [1, inf) when convention='half_mean'", None)
        scale = lam / (2 * check_int(n_samples, "n_samples", "l2_penalty", low=1))
    elif n_samples is not None:
        raise parameter_error("n_samples", "l2_penalty", "None unless convention='half_mean'", n_samples)
    else:
        scale = lam / 2 if convention == "half" else lam
    plan = decay_plan(model_or_params, policy, owner="l2_penalty")
    return scale * _weighted_sum(plan, "sq")


def l1_penalty(
    model_or_params: ModelOrParams,
    lambd: float,
    policy: DecayPolicy | None = None,
) -> torch.Tensor:
    r"""The L1 penalty ``R(w) = λ · Σ |w|`` (the lasso, Tibshirani 1996).

    Added to the mean loss ``(1/n) Σ (ŷ−y)²/2`` it is scikit-learn's ``Lasso`` objective
    ``(1/(2n))‖y − Xw‖² + alpha·‖w‖₁`` with ``alpha = λ``. Its subgradient never produces exact zeros
    with (stochastic) gradient descent; for exact zeros use the proximal step :class:`decaylab.L1Prox`.
    """
    lam = check_float(lambd, "lambd", "l1_penalty", low=0.0)
    plan = decay_plan(model_or_params, policy, owner="l1_penalty")
    return lam * _weighted_sum(plan, "abs")


def elastic_net_penalty(
    model_or_params: ModelOrParams,
    lambd: float,
    l1_ratio: float,
    policy: DecayPolicy | None = None,
) -> torch.Tensor:
    r"""The elastic-net penalty ``R(w) = λ · ( ρ·Σ|w| + (1−ρ)/2 · Σw² )`` with ``ρ = l1_ratio``.

    This is scikit-learn's parametrization (Zou & Hastie 2005, as in ``ElasticNet``): scikit-learn
    minimizes ``(1/(2n))‖y − Xw‖² + alpha·l1_ratio·‖w‖₁ + alpha·(1 − l1_ratio)/2·‖w‖²``, so added to the
    mean loss ``(1/n) Σ (ŷ−y)²/2`` this penalty gives ``ElasticNet(alpha=λ, l1_ratio=ρ)``; added to a
    plain MSE ``(1/n) Σ (ŷ−y)²`` it gives ``alpha = λ/2``. ``ρ = 1`` is :func:`l1_penalty`, ``ρ = 0`` is
    :func:`l2_penalty` (``"half"``).
    """
    lam = check_float(lambd, "lambd", "elastic_net_penalty", low=0.0)
    rho = check_float(l1_ratio, "l1_ratio", "elastic_net_penalty", low=0.0, high=1.0)
    plan = decay_plan(model_or_params, policy, owner="elastic_net_penalty")
    total = _zero(plan)
    if rho > 0:
        total = total + (lam * rho) * _weighted_sum(plan, "abs")
    if rho < 1:
        total = total + (lam * (1 - rho) / 2) * _weighted_sum(plan, "sq")
    return total
