"""Steps attached to any ``torch.optim`` optimizer through its step hooks, without replacing it.

``attach(optimizer, *steps, policy=None)`` registers one step pre-hook and one step post-hook. Every
``optimizer.step()`` then runs

    pre-steps → the optimizer's own update → post-steps

on the tensors that the decay policy selects (:func:`decaylab.policy.decay_plan`; default
:class:`~decaylab.DecayPolicy`: biases, 1-D tensors and norm layers are left alone) and that have a
gradient at this step — exactly the tensors ``torch.optim`` itself updates (it skips ``p.grad is None``).
A step's strength for a tensor is its λ times the tensor's policy multiplier.

The steps follow the optimizer's life:

* **Frozen and unfrozen tensors.** Which tensors a step touches is decided at every step from their
  gradients, not when ``attach`` was called: a backbone frozen at attach time and unfrozen later is
  decayed from its first step with a gradient, as ``torch.optim.AdamW`` does.
* **Skipped steps.** ``GradScaler`` skips ``optimizer.step()`` on an overflow. For fused and
  capturable optimizers (``_step_supports_amp_scaling``) it calls ``step()`` anyway with the
  attributes ``optimizer.found_inf`` / ``optimizer.grad_scale`` set, and the fused kernel skips the
  update when ``found_inf > 0``; the hooks read ``found_inf`` and then skip every attached step too.
* **Schedules.** γ₀ (``scaled_by="schedule"``) and γ_max (``scaled_by="corrected"``) are never taken
  from the order of calls: they are given explicitly (``lr0=``/``lr_max=``), or read from what PyTorch's
  schedulers record in the group (``"initial_lr"``; ``"max_lr"`` of ``OneCycleLR`` for γ_max), or
  else they are the group's learning rate at the first step (stored as ``"decaylab_lr0"`` in the group,
  so ``optimizer.state_dict()`` saves and ``load_state_dict()`` restores it). A reference rate of 0, or
  a decay factor ``1 − s·λ ≤ 0`` (every weight would flip sign), raises
  :class:`~decaylab.InvalidParameterError` from ``optimizer.step()``, before any tensor is changed.
* **Decaying twice.** ``attach`` refuses a weight-decay step on tensors that the optimizer already
  decays by its own ``weight_decay`` (``AdamW``'s default is 0.01), and a second step of a kind
  already attached to the same optimizer; ``allow_repeat=True`` does either on purpose.

Pass ``model=`` so that rules that need modules (norm layers, embeddings, ``no_weight_decay()``),
names and the layer kinds of :class:`MaxNorm` apply; without it the policy sees the names stored in
the groups' ``"param_names"`` (as set by :func:`decaylab.param_groups` or
``Optimizer(model.named_parameters())``), if any, and the shapes.
"""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from decaylab.policy import DecayPolicy, decay_plan
from decaylab.validation import check_choice, check_float, check_int, parameter_error

__all__ = [
    "LR0_KEY",
    "AttachHandle",
    "CautiousDecay",
    "DecoupledDecay",
    "L1Prox",
    "MaxNorm",
    "Step",
    "attach",
    "attached",
]

ScaledBy = Literal["lr", "schedule", "none", "corrected"]
SCALES: tuple[str, ...] = ("lr", "schedule", "none", "corrected")
LR0_KEY = "decaylab_lr0"
"""The parameter-group key holding the group's learning rate at its first step (γ₀ when nothing else says)."""

# per group: [(multiplier, [tensors])], one entry per (multiplier, device, dtype)
_Buckets = list[tuple[float, list[torch.Tensor]]]


def reference_lr(group: dict[str, Any], scaled_by: str, explicit: float | None, owner: str) -> float:
    """γ₀ (``"schedule"``) or γ_max (``"corrected"``) of a group, as the module docstring says.

    Raises:
        InvalidParameterError: the reference learning rate is 0 (the decay would be undefined).
    """
    if explicit is not None:
        return explicit
    if scaled_by == "corrected" and "max_lr" in group:
        value = group["max_lr"]
    elif "initial_lr" in group:
        value = group["initial_lr"]
    else:
        if LR0_KEY not in group:
            group[LR0_KEY] = float(group["lr"])
        value = group[LR0_KEY]
    value = float(value)
    if not value > 0:
        name = "lr_max" if scaled_by == "corrected" else "lr0"
        raise parameter_error(
            name, owner,
            f"a float in (0, inf): the group's reference learning rate for scaled_by={scaled_by!r} is {value:g} "
            f"(an optimizer built with lr=0?); give {name}= explicitly or create the scheduler, which records "
            "'initial_lr', before the first step",
            value,
        )
    return value


def lr_scale(group: dict[str, Any], scaled_by: str, explicit: float | None = None, owner: str = "attach") -> float:
    """``s_t``: γ_t (``"lr"``), γ_t/γ₀ (``"schedule"``), γ_t²/γ_max (``"corrected"``) or 1 (``"none"``)."""
    if scaled_by == "none":
        return 1.0
    lr = float(group["lr"])
    if scaled_by == "lr":
        return lr
    ref = reference_lr(group, scaled_by, explicit, owner)
    return lr / ref if scaled_by == "schedule" else lr * lr / ref


class StepContext:
    """What the handle gives a step at each call: per-tensor layer kinds, and scratch space per step."""

    def __init__(self) -> None:
        self.units: dict[int, tuple[str, int]] = {}  # id(weight) -> ("transposed", groups)
        self.scratch: dict[tuple[int, int], Any] = {}  # (id(step), id(group)) -> data


class Step:
    """A transformation of the optimizer's parameters before (:meth:`pre`) and/or after (:meth:`post`) its update.

    ``kind`` names what a step does, for the refusal of a second attach of the same kind.
    """

    kind: ClassVar[str]
    has_pre: ClassVar[bool] = False
    has_post: ClassVar[bool] = False
    decays: ClassVar[bool] = False  # a weight decay (refused on tensors the optimizer already decays)

    def pre(self, group: dict[str, Any], buckets: _Buckets, ctx: StepContext) -> None:
        """Transform one group's tensors before the update (under ``torch.no_grad()``)."""

    def post(self, group: dict[str, Any], buckets: _Buckets, ctx: StepContext) -> None:
        """Transform one group's tensors after the update (under ``torch.no_grad()``)."""


class _Decay(Step):
    """Shared by :class:`DecoupledDecay` and :class:`CautiousDecay`: λ, the scaling and its reference rate."""

    kind = "weight decay"
    decays = True
    owner: ClassVar[str]

    def __init__(
        self,
        weight_decay: float,
        scaled_by: ScaledBy = "lr",
        *,
        lr0: float | None = None,
        lr_max: float | None = None,
    ) -> None:
        self.weight_decay = check_float(weight_decay, "weight_decay", self.owner, low=0.0)
        self.scaled_by: str = check_choice(scaled_by, "scaled_by", self.owner, SCALES)
        for name, value, needs in (("lr0", lr0, "schedule"), ("lr_max", lr_max, "corrected")):
            if value is not None:
                check_float(value, name, self.owner, low=0.0, low_open=True)
                if self.scaled_by != needs:
                    raise parameter_error(name, self.owner, f"None unless scaled_by={needs!r}", value)
        self.lr0 = None if lr0 is None else float(lr0)
        self.lr_max = None if lr_max is None else float(lr_max)

    @property
    def reference(self) -> float | None:
        """The explicit γ₀ or γ_max, if one was given."""
        return self.lr0 if self.scaled_by == "schedule" else self.lr_max

    def __repr__(self) -> str:
        extra = ""
        if self.lr0 is not None:
            extra = f", lr0={self.lr0:g}"
        if self.lr_max is not None:
            extra = f", lr_max={self.lr_max:g}"
        return f"{type(self).__name__}(weight_decay={self.weight_decay:g}, scaled_by={self.scaled_by!r}{extra})"

    def coefficient(self, group: dict[str, Any]) -> float:
        """``s_t·λ`` for this group now (multiply by a tensor's policy multiplier)."""
        return lr_scale(group, self.scaled_by, self.reference, self.owner) * self.weight_decay

    def _factors(self, group: dict[str, Any], buckets: _Buckets) -> list[float]:
        """``s·m·λ`` per bucket; raises if ``1 − s·m·λ ≤ 0`` (checked before anything changes)."""
        c = self.coefficient(group)
        out = [c * m for m, _ in buckets]
        worst = max(out, default=0.0)
        if worst >= 1:
            raise parameter_error(
                "weight_decay", self.owner,
                f"small enough that the decay factor 1 − s·m·λ stays > 0, but s·m·λ = {worst:g} at lr "
                f"{float(group['lr']):g} (scaled_by={self.scaled_by!r}): every weight would shrink past 0; "
                "lower λ or check the learning-rate schedule",
                self.weight_decay,
            )
        return out


class DecoupledDecay(_Decay):
    r"""Decoupled weight decay before the optimizer's update: ``θ ← (1 − s_t·m·λ)·θ``.

    .. math::
        \theta_t \leftarrow (1 - s_t\,m\,\lambda)\,\theta_{t-1}, \qquad
        \theta_t \leftarrow \mathrm{OptimizerUpdate}(\theta_t, g_t)

    with ``g_t`` the gradient at θ_{t-1} (computed before the step), ``m`` the policy multiplier, and

    * ``scaled_by="lr"`` (default): ``s_t = γ_t``, the group's current learning rate — PyTorch's
      ``AdamW`` and optax's ``adamw`` convention; ``Adam`` + ``DecoupledDecay(λ)`` equals
      ``AdamW(weight_decay=λ)``, and ``SGD`` + ``DecoupledDecay(λ)`` equals ``SGD(weight_decay=λ)``
      when there is no momentum. A scheduler scales the decay with the learning rate.
    * ``scaled_by="schedule"``: ``s_t = γ_t/γ₀``, the schedule's factor only — Loshchilov & Hutter's
      ``η_t λ θ`` (2019, Algorithm 2) and Composer's ``DecoupledAdamW``; the decay no longer changes when
      the base learning rate is tuned. γ₀: ``lr0=``, else the group's ``"initial_lr"``, else its lr at
      the first step.
    * ``scaled_by="corrected"``: ``s_t = γ_t²/γ_max`` — corrected decay (Defazio et al. 2025, "Why
      gradients rapidly increase near the end of training"; timm's ``adamc`` / ``corrected_weight_decay``,
      ``lr**2 / max_lr``): the decay falls with γ_t² so normalized layers keep a steady norm as the
      learning rate anneals; equals ``"lr"`` while γ_t = γ_max. γ_max: ``lr_max=``, else the group's
      ``"max_lr"`` (``OneCycleLR``), else ``"initial_lr"``, else its lr at the first step.
    * ``scaled_by="none"``: ``s_t = 1``, a fixed shrinkage per step whatever the learning rate.

    Raises (from ``optimizer.step()``): :class:`~decaylab.InvalidParameterError` if ``1 − s_t·m·λ ≤ 0``
    or the reference learning rate is 0.

    References: Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019;
    Defazio, Mishchenko et al. 2025 (arXiv 2506.02285); PyTorch ``torch.optim.AdamW``.
    """

    owner = "DecoupledDecay"
    has_pre = True

    def pre(self, group: dict[str, Any], buckets: _Buckets, ctx: StepContext) -> None:
        if self.weight_decay == 0:
            return
        factors = self._factors(group, buckets)
        for c, (_, params) in zip(factors, buckets, strict=True):
            if c != 0:
                # the same float AdamW computes (1 - lr * weight_decay) when multiplier == 1
                torch._foreach_mul_(params, 1 - c)


class CautiousDecay(_Decay):
    r"""Cautious weight decay: decoupled decay only where the optimizer's update agrees in sign with θ.

    .. math::
        \theta_{t+1} = \theta_t - \eta_t\,u_t - s_t\,m\,\lambda\;\mathbb{1}[u_t \odot \theta_t \ge 0]\odot\theta_t

    where ``η_t u_t = θ_t − OptimizerUpdate(θ_t)`` is the optimizer's own update exactly as PyTorch
    computed it (Adam, SGD with momentum, anything): the tensors are copied before the step and the
    update is the difference after it. ``s_t`` as in :class:`DecoupledDecay` (default ``γ_t``, the paper's
    ``η_t λ``). Where the update moves θ towards 0 the decay helps it; where the update moves θ away from
    0 (the loss wants a larger weight) the decay is left out, so the decay no longer biases the
    stationary points of the loss. With the mask all ones it is :class:`DecoupledDecay` (the decay then
    acts on θ_t, which equals decaying before the update). Memory: one copy of the decayed tensors
    during each step.

    Reference: Chen, Li, Liang, Su, Xie, Pierse, Liang, Lao, Liu, "Cautious Weight Decay", 2025
    (arXiv 2510.12402), Algorithm 1: ``x_{t+1} = x_t − η_t(u_t + λ·𝕀(u_t x_t ≥ 0)·x_t)``.
    """

    owner = "CautiousDecay"
    has_pre = True
    has_post = True

    def pre(self, group: dict[str, Any], buckets: _Buckets, ctx: StepContext) -> None:
        if self.weight_decay == 0:
            return
        self._factors(group, buckets)  # refuse a factor ≤ 0 before the optimizer moves anything
        ctx.scratch[id(self), id(group)] = [[p.detach().clone() for p in params] for _, params in buckets]

    def post(self, group: dict[str, Any], buckets: _Buckets, ctx: StepContext) -> None:
        before = ctx.scratch.pop((id(self), id(group)), None)
        if before is None:
            return
        for c, (_, params), old in zip(self._factors(group, buckets), buckets, before, strict=True):
            if c == 0:
                continue
            moved = torch._foreach_sub(params, old)  # −η_t·u_t
            torch._foreach_mul_(moved, old)
            masks = [d.le(0).to(d.dtype) for d in moved]  # u·θ ≥ 0  ⇔  (−ηu)·θ ≤ 0
            torch._foreach_mul_(masks, old)
            torch._foreach_add_(params, masks, alpha=-c)


class L1Prox(Step):
    r"""Proximal step for ``λ·Σ|w|`` after the optimizer's update: soft-thresholding by ``s·m·λ``.

    .. math::
        \theta \leftarrow \operatorname{sign}(\theta)\,\max(|\theta| - s_t\,m\,\lambda,\ 0)

    with ``s_t`` as in :class:`DecoupledDecay` (default ``γ_t``; ``"lr"``, ``"schedule"`` or ``"none"``).
    With plain SGD this is proximal gradient descent (ISTA) on ``loss + λ·Σ|w|``: weights reach exact
    zeros, which the subgradient of :func:`decaylab.l1_penalty` never gives. On a mean loss
    ``(1/n) Σ (ŷ−y)²/2`` the fixed point is scikit-learn's ``Lasso(alpha=λ)``. With adaptive optimizers
    (Adam) it is the common heuristic of a Euclidean prox after a preconditioned step, not an exact
    proximal method.

    References: Tibshirani 1996 (the lasso); Daubechies, Defrise & De Mol 2004 and Beck & Teboulle 2009
    (iterative soft-thresholding).
    """

    kind = "L1Prox"
    has_post = True

    def __init__(self, lambd: float, scaled_by: Literal["lr", "schedule", "none"] = "lr", *,
                 lr0: float | None = None) -> None:
        self.lambd = check_float(lambd, "lambd", "L1Prox", low=0.0)
        self.scaled_by: str = check_choice(scaled_by, "scaled_by", "L1Prox", ("lr", "schedule", "none"))
        if lr0 is not None:
            check_float(lr0, "lr0", "L1Prox", low=0.0, low_open=True)
            if self.scaled_by != "schedule":
                raise parameter_error("lr0", "L1Prox", "None unless scaled_by='schedule'", lr0)
        self.lr0 = None if lr0 is None else float(lr0)

    def __repr__(self) -> str:
        return f"L1Prox(lambd={self.lambd:g}, scaled_by={self.scaled_by!r})"

    def post(self, group: dict[str, Any], buckets: _Buckets, ctx: StepContext) -> None:
        if self.lambd == 0:
            return
        s = lr_scale(group, self.scaled_by, self.lr0, "L1Prox")
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
    r"""Max-norm constraint after the optimizer's update: project each output unit onto ``‖w_u‖₂ ≤ c``.

    .. math::
        w_u \leftarrow w_u \cdot \min\!\left(1,\ \frac{c}{\lVert w_u\rVert_2}\right)

    A *unit* is one output unit (one output feature or channel) and ``w_u`` its incoming weights. With
    the default ``dim=None`` the layer kind decides (pass ``model=`` to :func:`attach`):

    ========================  =====================  ======  ===========================================
    layer                     weight shape           unit    the Keras constraint it equals
    ========================  =====================  ======  ===========================================
    ``nn.Linear``             ``(out, in)``          dim 0   ``Dense``: ``MaxNorm(c, axis=0)`` (default)
    ``nn.Conv1d/2d/3d``       ``(out, in/g, *k)``    dim 0   ``Conv2D``: ``MaxNorm(c, axis=[0, 1, 2])``
                                                             (kernel ``(kh, kw, in, out)``; 1-D:
                                                             ``[0, 1]``, 3-D: ``[0, 1, 2, 3]``)
    ``nn.ConvTranspose*d``    ``(in, out/g, *k)``    dim 1   ``Conv2DTranspose``: ``MaxNorm(c, axis=[0, 1,
                                                             3])`` (kernel ``(kh, kw, out, in)``); with
                                                             ``groups=g`` each output channel's own
                                                             ``in/g`` inputs
    anything else             any                    dim 0
    ========================  =====================  ======  ===========================================

    Keras' *default* ``MaxNorm(c)`` (``axis=0``) on a ``Conv2D`` kernel bounds something else (one
    ``(in, out)`` slice per kernel row). Without ``model=``, a transposed convolution cannot be told from
    its shape: give ``dim=1`` (``groups=1``) or the model. An explicit ``dim`` applies to every tensor.
    Units inside the ball are left bit-for-bit unchanged (Keras rescales them by ``‖w‖/(ε+‖w‖)``); units
    outside end on the sphere up to rounding. For a 1-D tensor (only if the policy includes one) every
    entry is a unit: ``|w_i| ≤ c``. The policy chooses the tensors; its multiplier does not scale ``c``.

    References: Srebro & Shraibman 2005; Srivastava et al. 2014 (dropout with max-norm, c ≈ 3–4);
    Keras ``keras.constraints.MaxNorm``.
    """

    kind = "MaxNorm"
    has_post = True

    def __init__(self, max_norm: float, dim: int | None = None) -> None:
        self.max_norm = check_float(max_norm, "max_norm", "MaxNorm", low=0.0, low_open=True)
        self.dim = None if dim is None else check_int(dim, "dim", "MaxNorm")

    def __repr__(self) -> str:
        return f"MaxNorm(max_norm={self.max_norm:g}, dim={self.dim})"

    def _norms(self, p: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        """‖w_u‖ broadcastable to ``p``: one value per output unit."""
        if p.dim() == 0:
            return p.abs()
        spec = ctx.units.get(id(p)) if self.dim is None else None
        if spec is not None and p.dim() >= 2:  # transposed convolution (in, out/g, *k), groups g
            groups = spec[1]
            in_g, out_g, kernel = p.shape[0] // groups, p.shape[1], p.shape[2:]
            view = p.reshape(groups, in_g, out_g, *kernel)
            norms = torch.linalg.vector_norm(view, dim=[1, *range(3, view.dim())], keepdim=True)
            ones = [1] * len(kernel)
            return norms.expand(groups, in_g, out_g, *ones).reshape(p.shape[0], out_g, *ones)
        dim = 0 if self.dim is None else self.dim
        if not -p.dim() <= dim < p.dim():
            raise parameter_error(
                "dim", "MaxNorm", f"a dimension of every constrained tensor (shape {tuple(p.shape)})", dim,
            )
        unit = dim % p.dim()
        others = [d for d in range(p.dim()) if d != unit]
        return p.abs() if not others else torch.linalg.vector_norm(p, dim=others, keepdim=True)

    def post(self, group: dict[str, Any], buckets: _Buckets, ctx: StepContext) -> None:
        c = self.max_norm
        for _, params in buckets:
            for p in params:
                norms = self._norms(p, ctx)
                factor = torch.where(norms > c, c / norms, torch.ones_like(norms))
                p.mul_(factor)


_ATTACHED: weakref.WeakKeyDictionary[torch.optim.Optimizer, list[AttachHandle]] = weakref.WeakKeyDictionary()


def attached(optimizer: torch.optim.Optimizer) -> list[AttachHandle]:
    """The handles currently attached to ``optimizer`` (in attach order)."""
    return [h for h in _ATTACHED.get(optimizer, []) if h.attached]


def _found_inf(optimizer: torch.optim.Optimizer) -> bool:
    """Whether ``GradScaler`` told a fused/capturable optimizer to skip this step (``found_inf > 0``)."""
    found = getattr(optimizer, "found_inf", None)
    if found is None:
        return False
    return bool(found.item() > 0) if isinstance(found, torch.Tensor) else bool(found)


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
        self._ctx = StepContext()
        self._pre = [s for s in self.steps if s.has_pre]
        self._post = [s for s in self.steps if s.has_post]
        self._skipping = False
        self._live: list[tuple[dict[str, Any], _Buckets]] | None = None
        self._hooks: list[Any] = []

    def _register(self) -> None:
        self._hooks.append(self.optimizer.register_step_pre_hook(self._pre_hook))
        if self._post:
            self._hooks.append(self.optimizer.register_step_post_hook(self._post_hook))
        _ATTACHED.setdefault(self.optimizer, []).append(self)

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
        handles = _ATTACHED.get(self.optimizer)
        if handles is not None and self in handles:
            handles.remove(self)

    def __enter__(self) -> AttachHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.detach()

    # -- the plan: policy multipliers of the optimizer's tensors, rebuilt when its groups change
    def buckets(self) -> list[_Buckets]:
        """Per parameter group, ``[(multiplier, tensors)]`` of the tensors the steps act on (m > 0).

        Frozen tensors are classified as if trainable; whether a step touches them is decided at each
        step from their gradient.
        """
        groups = self.optimizer.param_groups
        key = tuple(tuple(map(id, g["params"])) for g in groups)
        if key != self._key:
            self._buckets = self._build(groups)
            self._key = key
        return self._buckets

    def multipliers(self) -> dict[int, float]:
        """``id(tensor) -> m`` for every tensor of the optimizer (0: the steps leave it alone)."""
        out: dict[int, float] = {id(p): 0.0 for g in self.optimizer.param_groups for p in g["params"]}
        for buckets in self.buckets():
            for m, params in buckets:
                for p in params:
                    out[id(p)] = m
        return out

    def _build(self, groups: list[dict[str, Any]]) -> list[_Buckets]:
        known: dict[int, float] = {}
        if self.model is not None:
            for entry in decay_plan(self.model, self.policy, owner="attach", classify_frozen=True):
                known[id(entry.param)] = entry.multiplier
            for module in self.model.modules():
                if isinstance(module, nn.modules.conv._ConvTransposeNd):
                    self._ctx.units[id(module.weight)] = ("transposed", module.groups)
        missing: list[tuple[str, torch.Tensor]] = []
        for group in groups:
            params = group["params"]
            names = group.get("param_names") or [""] * len(params)
            missing += [(n, p) for n, p in zip(names, params, strict=True) if id(p) not in known]
        if missing:
            named = all(n for n, _ in missing)
            pairs: Any = missing if named else [p for _, p in missing]
            for entry in decay_plan(pairs, self.policy, owner="attach", check_patterns=self.model is None):
                known[id(entry.param)] = entry.multiplier
        out: list[_Buckets] = []
        for group in groups:
            by_key: dict[tuple[float, torch.device, torch.dtype], list[torch.Tensor]] = {}
            for p in group["params"]:
                m = known[id(p)]
                if m > 0:
                    by_key.setdefault((m, p.device, p.dtype), []).append(p)
            out.append([(k[0], ps) for k, ps in by_key.items()])
        return out

    def _select(self) -> list[tuple[dict[str, Any], _Buckets]]:
        """Per group, the tensors with a gradient at this step (what ``torch.optim`` updates)."""
        out = []
        for group, buckets in zip(self.optimizer.param_groups, self.buckets(), strict=True):
            live = [(m, [p for p in ps if p.grad is not None]) for m, ps in buckets]
            live = [(m, ps) for m, ps in live if ps]
            if live:
                out.append((group, live))
        return out

    def _pre_hook(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        self._skipping = _found_inf(optimizer)
        self._live = None
        if self._skipping:
            return
        live = self._select()
        self._live = live
        if not self._pre:
            return
        with torch.no_grad():
            for group, buckets in live:
                for step in self._pre:
                    step.pre(group, buckets, self._ctx)

    def _post_hook(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        if self._skipping:
            self._skipping = False
            return
        live = self._live if self._live is not None else self._select()
        self._live = None
        with torch.no_grad():
            for group, buckets in live:
                for step in self._post:
                    step.post(group, buckets, self._ctx)


def _own_decay_conflicts(handle: AttachHandle) -> str | None:
    """A description of the tensors the optimizer decays itself and a decay step would decay again."""
    opt = handle.optimizer
    for index, (group, buckets) in enumerate(zip(opt.param_groups, handle.buckets(), strict=True)):
        wd = group.get("weight_decay", 0)
        if not (isinstance(wd, int | float) and wd > 0) or not buckets:
            continue
        names = group.get("param_names")
        decayed = {id(p) for _, ps in buckets for p in ps}
        which = [names[i] if names else f"#{i}" for i, p in enumerate(group["params"]) if id(p) in decayed]
        default = ""
        try:
            if inspect.signature(type(opt)).parameters["weight_decay"].default == wd:
                default = f", {type(opt).__name__}'s default"
        except (KeyError, TypeError, ValueError):
            pass
        shown = ", ".join(map(str, which[:3])) + (", ..." if len(which) > 3 else "")
        return f"group {index} of {type(opt).__name__} has weight_decay={wd:g}{default}, on {shown}"
    return None


def attach(
    optimizer: torch.optim.Optimizer,
    *steps: Step,
    policy: DecayPolicy | None = None,
    model: nn.Module | None = None,
    allow_repeat: bool = False,
) -> AttachHandle:
    r"""Attach decay steps to ``optimizer`` through its step hooks; the optimizer itself is unchanged.

    Each ``optimizer.step()`` becomes: the ``pre`` parts of the steps in the given order
    (:class:`DecoupledDecay`; :class:`CautiousDecay` copies the tensors), the optimizer's update, then the
    ``post`` parts (:class:`CautiousDecay`, :class:`L1Prox`, :class:`MaxNorm`) in the given order. For
    example ``attach(torch.optim.Adam(params, lr), DecoupledDecay(λ))`` is
    ``AdamW(params, lr, weight_decay=λ)``, and ``attach(SGD(params, lr), L1Prox(λ))`` is proximal
    gradient descent for ``loss + λ·Σ|w|``.

    Args:
        optimizer: any ``torch.optim.Optimizer``; build it with ``weight_decay=0`` when attaching a
            weight decay (``AdamW``'s default is 0.01).
        *steps: one or more :class:`DecoupledDecay`, :class:`CautiousDecay`, :class:`L1Prox`, :class:`MaxNorm`.
        policy: which tensors the steps touch and their multipliers; ``None`` is
            :class:`~decaylab.DecayPolicy` ``()`` (biases and 1-D tensors excluded). Attach twice to use
            different policies for different steps (with ``allow_repeat=True`` if they are of one kind).
        model: the module the optimizer's tensors belong to, for the rules that need modules and names.
        allow_repeat: decay on purpose tensors the optimizer already decays, or attach a second step of
            a kind already attached to this optimizer.

    Returns:
        An :class:`AttachHandle`; ``handle.detach()`` removes the steps.

    Raises:
        InvalidParameterError: bad arguments; a weight-decay step on tensors the optimizer decays by its
            own ``weight_decay``; a second step of a kind already attached (both unless ``allow_repeat``).
    """
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise parameter_error("optimizer", "attach", "a torch.optim.Optimizer", optimizer)
    if not steps:
        raise parameter_error("steps", "attach", "at least one of DecoupledDecay, CautiousDecay, L1Prox, MaxNorm", steps)
    for step in steps:
        if not isinstance(step, Step):
            raise parameter_error("steps", "attach", "instances of DecoupledDecay, CautiousDecay, L1Prox or MaxNorm", step)
    if policy is None:
        policy = DecayPolicy()
    elif not isinstance(policy, DecayPolicy):
        raise parameter_error("policy", "attach", "a DecayPolicy or None", policy)
    if model is not None and not isinstance(model, nn.Module):
        raise parameter_error("model", "attach", "an nn.Module or None", model)
    if not isinstance(allow_repeat, bool):
        raise parameter_error("allow_repeat", "attach", "a bool", allow_repeat)
    handle = AttachHandle(optimizer, steps, policy, model)
    handle.buckets()  # the plan now: bad patterns and undecidable rules raise here, not at the first step
    if not allow_repeat:
        kinds = [s.kind for h in attached(optimizer) for s in h.steps]
        for step in steps:
            if step.kind in kinds:
                raise parameter_error(
                    "steps", "attach",
                    f"steps of kinds not yet attached to this optimizer ({step.kind} is attached already); "
                    "detach the first handle (handle.detach()) or pass allow_repeat=True to apply both on purpose",
                    step,
                )
            kinds.append(step.kind)
        if any(s.decays for s in steps):
            conflict = _own_decay_conflicts(handle)
            if conflict is not None:
                raise parameter_error(
                    "optimizer", "attach",
                    f"an optimizer that does not already decay the tensors a weight-decay step decays ({conflict}); "
                    "build it with weight_decay=0, or pass allow_repeat=True to decay twice on purpose",
                    type(optimizer).__name__,
                )
    handle._register()
    return handle

