"""Steps attached to any ``torch.optim`` optimizer through its step hooks, without replacing it.

``attach(optimizer, *steps, policy=None)`` registers one step pre-hook (steps that act *before* the
optimizer's update: :class:`DecoupledDecay`) and one step post-hook (steps that act *after* it:
:class:`L1Prox`, :class:`MaxNorm`). Every ``optimizer.step()`` then runs

    pre-steps → the optimizer's own update → post-steps

on the tensors that the decay policy selects (:func:`decaylab.policy.decay_plan`; default
:class:`~decaylab.DecayPolicy`: biases, 1-D tensors and norm layers are left alone) and that have a
gradient — exactly the tensors ``torch.optim`` itself updates (it skips ``p.grad is None``), so a step
skipped by ``GradScaler`` on an overflow skips its decay too. A step's strength for a tensor is its λ
times the tensor's policy multiplier.

Pass ``model=`` so that rules that need modules (norm layers, embeddings, ``no_weight_decay()``) and
names apply; without it the policy sees the names stored in the groups' ``"param_names"`` (as set by
:func:`decaylab.param_groups` or ``Optimizer(model.named_parameters())``), if any, and the shapes.

Checkpoints: the only state the steps keep is the initial learning rate γ₀ used by
``scaled_by="schedule"``, stored as the key ``"decaylab_lr0"`` of each parameter group, which
``optimizer.state_dict()`` saves and ``load_state_dict()`` restores.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from decaylab.policy import DecayPolicy, decay_plan
from decaylab.validation import check_choice, check_float, check_int, parameter_error

__all__ = ["LR0_KEY", "AttachHandle", "DecoupledDecay", "L1Prox", "MaxNorm", "Step", "attach"]

ScaledBy = Literal["lr", "schedule", "none"]
SCALES: tuple[str, ...] = ("lr", "schedule", "none")
LR0_KEY = "decaylab_lr0"
"""The parameter-group key holding γ₀, the group's initial learning rate (``scaled_by="schedule"``)."""

# per group: [(multiplier, [tensors])], one entry per (multiplier, device, dtype)
_Buckets = list[tuple[float, list[torch.Tensor]]]


def _lr0(group: dict[str, Any]) -> float:
    lr0 = group.get(LR0_KEY)
    if lr0 is None:
        # a scheduler stores the base learning rate as "initial_lr"; before any scheduler, lr is it
        lr0 = group[LR0_KEY] = float(group.get("initial_lr", group["lr"]))
    return float(lr0)


def _scale(group: dict[str, Any], scaled_by: str) -> float:
    """``s``: γ (``"lr"``), γ/γ₀ (``"schedule"``) or 1 (``"none"``), for this group now."""
    if scaled_by == "none":
        return 1.0
    lr = float(group["lr"])
    if scaled_by == "lr":
        return lr
    lr0 = _lr0(group)
    return lr / lr0 if lr0 != 0 else 0.0


class Step:
    """A transformation of the optimizer's parameters before (``when="pre"``) or after its update."""

    when: ClassVar[Literal["pre", "post"]]
    uses_lr0: bool = False

    def apply(self, group: dict[str, Any], buckets: _Buckets) -> None:  # pragma: no cover - abstract
        """Transform the tensors of one parameter group in place (called under ``torch.no_grad()``)."""
        raise NotImplementedError


class DecoupledDecay(Step):
    r"""Decoupled weight decay before the optimizer's update: ``θ ← θ − s·m·λ·θ``.

    .. math::
        \theta_t \leftarrow (1 - s_t\,m\,\lambda)\,\theta_{t-1}, \qquad
        \theta_t \leftarrow \mathrm{OptimizerUpdate}(\theta_t, g_t)

    with ``g_t`` the gradient at θ_{t-1} (computed before the step), ``m`` the policy multiplier, and

    * ``scaled_by="lr"`` (default): ``s_t = γ_t``, the group's current learning rate — PyTorch's
      ``AdamW`` and optax's ``adamw`` convention; ``Adam`` + ``DecoupledDecay(λ)`` equals
      ``AdamW(weight_decay=λ)``, and ``SGD`` + ``DecoupledDecay(λ)`` equals ``SGD(weight_decay=λ)``
      when there is no momentum. A scheduler scales the decay with the learning rate.
    * ``scaled_by="schedule"``: ``s_t = γ_t/γ₀``, the schedule's factor only (γ₀: the group's initial
      learning rate) — Loshchilov & Hutter's ``η_t λ θ`` (2019, Algorithm 2) and Composer's
      ``DecoupledAdamW``; the decay no longer changes when the base learning rate is tuned.
    * ``scaled_by="none"``: ``s_t = 1``, a fixed shrinkage per step whatever the learning rate.

    References: Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019;
    Hanson & Pratt 1988 (decay as a step); PyTorch ``torch.optim.AdamW``.
    """

    when = "pre"

    def __init__(self, weight_decay: float, scaled_by: ScaledBy = "lr") -> None:
        self.weight_decay = check_float(weight_decay, "weight_decay", "DecoupledDecay", low=0.0)
        self.scaled_by: str = check_choice(scaled_by, "scaled_by", "DecoupledDecay", SCALES)
        self.uses_lr0 = self.scaled_by == "schedule"

    def __repr__(self) -> str:
        return f"DecoupledDecay(weight_decay={self.weight_decay:g}, scaled_by={self.scaled_by!r})"

    def apply(self, group: dict[str, Any], buckets: _Buckets) -> None:
        if self.weight_decay == 0:
            return
        s = _scale(group, self.scaled_by)
        if s == 0:
            return
        for multiplier, params in buckets:
            # the same float AdamW computes (1 - lr * weight_decay) when multiplier == 1
            torch._foreach_mul_(params, 1 - s * (self.weight_decay * multiplier))


class L1Prox(Step):
    r"""Proximal step for ``λ·Σ|w|`` after the optimizer's update: soft-thresholding by ``s·m·λ``.

    .. math::
        \theta \leftarrow \operatorname{sign}(\theta)\,\max(|\theta| - s_t\,m\,\lambda,\ 0)

    with ``s_t`` as in :class:`DecoupledDecay` (default ``γ_t``). With plain SGD this is proximal
    gradient descent (ISTA) on ``loss + λ·Σ|w|``: weights reach exact zeros, which the subgradient of
    :func:`decaylab.l1_penalty` never gives. On a mean loss ``(1/n) Σ (ŷ−y)²/2`` the fixed point is
    scikit-learn's ``Lasso(alpha=λ)``. With adaptive optimizers (Adam) it is the common heuristic of a
    Euclidean prox after a preconditioned step, not an exact proximal method.

    References: Tibshirani 1996 (the lasso); Daubechies, Defrise & De Mol 2004 and Beck & Teboulle 2009
    (iterative soft-thresholding).
    """

    when = "post"

    def __init__(self, lambd: float, scaled_by: ScaledBy = "lr") -> None:
        self.lambd = check_float(lambd, "lambd", "L1Prox", low=0.0)
        self.scaled_by: str = check_choice(scaled_by, "scaled_by", "L1Prox", SCALES)
        self.uses_lr0 = self.scaled_by == "schedule"

    def __repr__(self) -> str:
        return f"L1Prox(lambd={self.lambd:g}, scaled_by={self.scaled_by!r})"

    def apply(self, group: dict[str, Any], buckets: _Buckets) -> None:
        if self.lambd == 0:
            return
        s = _scale(group, self.scaled_by)
        for multiplier, params in buckets:
            threshold = s * self.lambd * multiplier
            if threshold == 0:
                continue
            shrunk = torch._foreach_abs(params)
            torch._foreach_sub_(shrunk, threshold)
            torch._foreach_clamp_min_(shrunk, 0.0)
            torch._foreach_mul_(shrunk, torch._foreach_sign(params))
            torch._foreach_copy_(params, shrunk)


class MaxNorm(Step):
    r"""Max-norm constraint after the optimizer's update: project each unit onto ``‖w_u‖₂ ≤ c``.

    .. math::
        w_u \leftarrow w_u \cdot \min\!\left(1,\ \frac{c}{\lVert w_u\rVert_2}\right)

    A *unit* is one index along ``dim``; its vector ``w_u`` is the slice of all other dimensions. With
    the default ``dim=0`` the unit is an output unit and ``w_u`` its incoming weights: a row of an
    ``nn.Linear`` weight ``(out, in)``, one filter ``(in, kh, kw)`` of an ``nn.Conv2d`` weight
    ``(out, in, kh, kw)``. This is Keras' ``MaxNorm(max_value=c, axis=0)`` on a Keras kernel
    ``(in, out)`` (Keras stores the transpose). Units inside the ball are left bit-for-bit unchanged
    (Keras rescales them by ``‖w‖/(ε+‖w‖)``); units outside end on the sphere up to rounding. For a
    1-D tensor (only if the policy includes one) every entry is a unit: ``|w_i| ≤ c``. The policy
    chooses the tensors; its multiplier does not scale ``c``.

    References: Srebro & Shraibman 2005; Srivastava et al. 2014 (dropout with max-norm, c ≈ 3–4).
    """

    when = "post"

    def __init__(self, max_norm: float, dim: int = 0) -> None:
        self.max_norm = check_float(max_norm, "max_norm", "MaxNorm", low=0.0, low_open=True)
        self.dim = check_int(dim, "dim", "MaxNorm")

    def __repr__(self) -> str:
        return f"MaxNorm(max_norm={self.max_norm:g}, dim={self.dim})"

    def apply(self, group: dict[str, Any], buckets: _Buckets) -> None:
        c = self.max_norm
        for _, params in buckets:
            for p in params:
                if p.dim() == 0:
                    norms = p.abs()
                else:
                    if not -p.dim() <= self.dim < p.dim():
                        raise parameter_error(
                            "dim", "MaxNorm", f"a dimension of every constrained tensor (shape {tuple(p.shape)})",
                            self.dim,
                        )
                    unit = self.dim % p.dim()
                    others = [d for d in range(p.dim()) if d != unit]
                    norms = p.abs() if not others else torch.linalg.vector_norm(p, dim=others, keepdim=True)
                factor = torch.where(norms > c, c / norms, torch.ones_like(norms))
                p.mul_(factor)


class AttachHandle:
    """What :func:`attach` returns: the steps, the hooks, and :meth:`detach`.

    Usable as a context manager: the steps are detached when the ``with`` block ends.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        steps: Sequence[Step],
        policy: DecayPolicy,
        model: nn.Module | None,
    ) -> None:
        self.optimizer = optimizer
        self.steps: tuple[Step, ...] = tuple(steps)
        self.policy = policy
        self.model = model
        self._key: tuple[tuple[int, ...], ...] | None = None
        self._buckets: list[_Buckets] = []
        self._pre = [s for s in self.steps if s.when == "pre"]
        self._post = [s for s in self.steps if s.when == "post"]
        if any(s.uses_lr0 for s in self.steps):
            for group in optimizer.param_groups:
                _lr0(group)
        self._hooks = []
        if self._pre:
            self._hooks.append(optimizer.register_step_pre_hook(self._pre_hook))
        if self._post:
            self._hooks.append(optimizer.register_step_post_hook(self._post_hook))

    def __repr__(self) -> str:
        state = "attached" if self.attached else "detached"
        return f"AttachHandle({', '.join(map(repr, self.steps))}; {state})"

    @property
    def attached(self) -> bool:
        return bool(self._hooks)

    def detach(self) -> None:
        """Remove the hooks: later ``optimizer.step()`` calls run the optimizer alone. Idempotent."""
        for hook in self._hooks:
            hook.remove()
        self._hooks = []

    def __enter__(self) -> AttachHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.detach()

    # -- the plan: policy multipliers of the optimizer's tensors, rebuilt when its groups change
    def buckets(self) -> list[_Buckets]:
        """Per parameter group, ``[(multiplier, tensors)]`` of the tensors the steps act on (m > 0)."""
        groups = self.optimizer.param_groups
        key = tuple(tuple(map(id, g["params"])) for g in groups)
        if key != self._key:
            self._buckets = self._build(groups)
            self._key = key
        return self._buckets

    def _build(self, groups: list[dict[str, Any]]) -> list[_Buckets]:
        known: dict[int, float] = {}
        if self.model is not None:
            for entry in decay_plan(self.model, self.policy, include_frozen=True, owner="attach"):
                known[id(entry.param)] = entry.multiplier
        out: list[_Buckets] = []
        for group in groups:
            params = group["params"]
            names = group.get("param_names") or [""] * len(params)
            missing = [(n, p) for n, p in zip(names, params) if id(p) not in known]
            if missing:
                for entry in decay_plan(missing, self.policy, owner="attach"):
                    known[id(entry.param)] = entry.multiplier
            by_key: dict[tuple[float, torch.device, torch.dtype], list[torch.Tensor]] = {}
            for p in params:
                m = known[id(p)]
                if m > 0:
                    by_key.setdefault((m, p.device, p.dtype), []).append(p)
            out.append([(k[0], ps) for k, ps in by_key.items()])
        return out

    def _run(self, steps: list[Step]) -> None:
        with torch.no_grad():
            for group, buckets in zip(self.optimizer.param_groups, self.buckets()):
                live = [(m, [p for p in ps if p.grad is not None]) for m, ps in buckets]
                live = [(m, ps) for m, ps in live if ps]
                if not live:
                    continue
                for step in steps:
                    step.apply(group, live)

    def _pre_hook(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        self._run(self._pre)

    def _post_hook(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        self._run(self._post)


def attach(
    optimizer: torch.optim.Optimizer,
    *steps: Step,
    policy: DecayPolicy | None = None,
    model: nn.Module | None = None,
) -> AttachHandle:
    r"""Attach decay steps to ``optimizer`` through its step hooks; the optimizer itself is unchanged.

    Each ``optimizer.step()`` becomes: the ``"pre"`` steps (:class:`DecoupledDecay`) in the given order,
    the optimizer's update, then the ``"post"`` steps (:class:`L1Prox`, :class:`MaxNorm`) in the given
    order. For example ``attach(torch.optim.Adam(params, lr), DecoupledDecay(λ))`` is
    ``AdamW(params, lr, weight_decay=λ)``, and ``attach(SGD(params, lr), L1Prox(λ))`` is proximal
    gradient descent for ``loss + λ·Σ|w|``.

    Args:
        optimizer: any ``torch.optim.Optimizer`` (its own ``weight_decay`` still applies: set it to 0
            unless you want both).
        *steps: one or more :class:`DecoupledDecay`, :class:`L1Prox`, :class:`MaxNorm`.
        policy: which tensors the steps touch and their multipliers; ``None`` is
            :class:`~decaylab.DecayPolicy` ``()`` (biases and 1-D tensors excluded). Attach twice to use
            different policies for different steps.
        model: the module the optimizer's tensors belong to, for the rules that need modules and names.

    Returns:
        An :class:`AttachHandle`; ``handle.detach()`` removes the steps.
    """
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise parameter_error("optimizer", "attach", "a torch.optim.Optimizer", optimizer)
    if not steps:
        raise parameter_error("steps", "attach", "at least one of DecoupledDecay, L1Prox, MaxNorm", steps)
    for step in steps:
        if not isinstance(step, Step):
            raise parameter_error("steps", "attach", "instances of DecoupledDecay, L1Prox or MaxNorm", step)
    if policy is None:
        policy = DecayPolicy()
    elif not isinstance(policy, DecayPolicy):
        raise parameter_error("policy", "attach", "a DecayPolicy or None", policy)
    if model is not None and not isinstance(model, nn.Module):
        raise parameter_error("model", "attach", "an nn.Module or None", model)
    return AttachHandle(optimizer, steps, policy, model)
