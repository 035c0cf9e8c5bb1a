r"""Weight-decay schedulers with the interface of ``torch.optim.lr_scheduler``.

A scheduler changes λ during training, as a learning-rate scheduler changes γ::

    opt = torch.optim.AdamW(decaylab.param_groups(model, 0.04), lr=1e-3)
    wd_sched = decaylab.CosineWD(opt, total_steps=10_000, final_weight_decay=0.4)   # DINO: 0.04 → 0.4
    for batch in loader:
        loss(batch).backward(); opt.step(); opt.zero_grad()
        wd_sched.step()                                    # after opt.step(), like an lr scheduler

It drives either

* the ``"weight_decay"`` of a plain ``torch.optim`` optimizer's parameter groups (``AdamW``, ``SGD``,
  ``Adam``'s coupled L2, ...). λ₀ of a group is recorded as ``group["initial_weight_decay"]`` (like
  ``"initial_lr"``), so ``optimizer.state_dict()`` saves it. A group whose λ₀ is 0 — the no-decay
  group of :func:`decaylab.param_groups` (biases, norms) — is left at 0; or
* the ``weight_decay`` of the steps of an :class:`~decaylab.steps.AttachHandle` (what
  :func:`decaylab.attach` returns), e.g. :class:`~decaylab.DecoupledDecay`; λ₀ of a step is recorded
  as its attribute ``initial_weight_decay``.

Every scheduler is a closed form ``λ_t = f(λ₀, t)`` of the number of ``step()`` calls ``t``
(``last_epoch``); the value for ``t = 0`` is written when the scheduler is built. Chaining
(:class:`ChainedWD`) multiplies the schedules' factors ``λ_i(t)/λ₀``; :class:`SequentialWD` runs one
schedule after another at milestones, each restarting from its own ``t = 0`` (as ``SequentialLR``).

Checkpoints: save ``optimizer.state_dict()`` and ``scheduler.state_dict()``; to resume, rebuild the
optimizer (and attach the same steps with their λ₀), build the scheduler the same way, then call both
``load_state_dict``. The scheduler writes its current λ back to the groups or steps (a step's λ is not
part of the optimizer's state). Functions given to :class:`LambdaWD` are not saved (as ``LambdaLR``).

Errors (one line, :func:`decaylab.validation.parameter_error`): a negative or non-finite λ or factor,
a schedule whose phases are longer than its total, milestones that do not match the schedules, a
number of ``wd_lambda`` functions that does not match the groups, and a target with no decay to drive
(no group with ``weight_decay > 0``, or a handle without a step with ``weight_decay > 0``).

References: PyTorch ``torch.optim.lr_scheduler`` (the interface); Caron et al., *Emerging Properties in
Self-Supervised Vision Transformers* (DINO), 2021 (cosine λ from 0.04 to 0.4); Hu et al., *MiniCPM*,
2024, and Hägele et al., *Scaling Laws and Compute-Optimal Training beyond Fixed Training
Durations*, 2024 (warm-up–stable–decay); PyTorch issue #22343 (a weight-decay scheduler).
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Callable, Sequence
from itertools import pairwise
from typing import Any

import torch

from decaylab.steps import AttachHandle
from decaylab.validation import check_choice, check_float, check_int, parameter_error

__all__ = [
    "INITIAL_WD_KEY",
    "ChainedWD",
    "ConstantWD",
    "CosineWD",
    "LambdaWD",
    "LinearWarmupWD",
    "SequentialWD",
    "StepWD",
    "WDScheduler",
    "WarmupStableDecayWD",
]

INITIAL_WD_KEY = "initial_weight_decay"
"""The parameter-group key (and the step attribute) holding λ₀, the weight decay the schedule starts from."""

DECAY_SHAPES: tuple[str, ...] = ("linear", "cosine", "1-sqrt")


class _Target:
    """The slots a scheduler drives: an optimizer's groups or an attach handle's steps, with their λ₀."""

    def __init__(self, target: Any, owner: str, last_epoch: int) -> None:
        self.obj = target
        if isinstance(target, torch.optim.Optimizer):
            self.kind = "groups"
            slots: list[Any] = list(target.param_groups)
            has = [isinstance(g, dict) and "weight_decay" in g for g in slots]
        elif isinstance(target, AttachHandle):
            self.kind = "steps"
            slots = [s for s in target.steps if hasattr(s, "weight_decay")]
            has = [True] * len(slots)
        else:
            raise parameter_error(
                "optimizer", owner, "a torch.optim.Optimizer or the AttachHandle of decaylab.attach",
                type(target).__name__,
            )
        bases: list[float] = []
        for i, (slot, ok) in enumerate(zip(slots, has, strict=True)):
            if not ok:
                bases.append(0.0)
                continue
            if last_epoch == -1:
                base = self._get(slot, INITIAL_WD_KEY, None)
                if base is None:
                    base = self._get(slot, "weight_decay", 0.0)
                    self._set(slot, INITIAL_WD_KEY, float(base))
            else:
                base = self._get(slot, INITIAL_WD_KEY, None)
                if base is None:
                    where = f"param_groups[{i}]" if self.kind == "groups" else f"the step {slot!r}"
                    raise parameter_error(
                        "last_epoch", owner,
                        f"-1 unless {INITIAL_WD_KEY!r} is set in {where} (resume from a state_dict instead)",
                        last_epoch,
                    )
            bases.append(check_float(base, INITIAL_WD_KEY, owner, low=0.0))
        self.bases = bases
        self.driven = [ok and b > 0 for ok, b in zip(has, bases, strict=True)]
        if not any(self.driven):
            what = (
                "an optimizer with a parameter group whose weight_decay is > 0"
                if self.kind == "groups"
                else "an AttachHandle with a step whose weight_decay is > 0 (DecoupledDecay)"
            )
            got = [self._get(s, "weight_decay", None) for s in slots] if slots else type(target).__name__
            raise parameter_error("optimizer", owner, what, got)

    @property
    def slots(self) -> list[Any]:
        """The groups (looked up each time: ``optimizer.load_state_dict`` replaces the dicts) or the steps."""
        if self.kind == "groups":
            return list(self.obj.param_groups)
        return [s for s in self.obj.steps if hasattr(s, "weight_decay")]

    def _get(self, slot: Any, key: str, default: Any) -> Any:
        return slot.get(key, default) if self.kind == "groups" else getattr(slot, key, default)

    def _set(self, slot: Any, key: str, value: float) -> None:
        if self.kind == "groups":
            slot[key] = value
        else:
            setattr(slot, key, value)

    def read(self) -> list[float]:
        return [float(self._get(s, "weight_decay", 0.0)) for s in self.slots]

    def write(self, values: list[float | None]) -> None:
        for slot, value in zip(self.slots, values, strict=True):
            if value is not None:
                self._set(slot, "weight_decay", value)

    def restore_bases(self, bases: list[float]) -> None:
        self.bases = list(bases)
        self.driven = [b > 0 for b in self.bases]
        for slot, base in zip(self.slots, self.bases, strict=True):
            self._set(slot, INITIAL_WD_KEY, base)


class WDScheduler:
    r"""Base class: ``step()`` advances ``last_epoch`` by one and writes ``λ_t`` to every driven slot.

    Subclasses define :meth:`value`, the closed form ``λ_t`` of one slot from its λ₀. The interface is
    ``torch.optim.lr_scheduler.LRScheduler``'s: ``step()``, ``last_epoch``, :meth:`get_last_wd`,
    :meth:`state_dict` / :meth:`load_state_dict`.

    Args:
        optimizer: a ``torch.optim.Optimizer`` (its groups' ``"weight_decay"``) or the
            :class:`~decaylab.steps.AttachHandle` of :func:`decaylab.attach` (its steps' ``weight_decay``).
        last_epoch: the index of the last step; ``-1`` starts a new schedule (records λ₀).
    """

    owner = "WDScheduler"
    _unsaved: tuple[str, ...] = ("target", "optimizer")

    def __init__(self, optimizer: Any, last_epoch: int = -1) -> None:
        last_epoch = check_int(last_epoch, "last_epoch", self.owner, low=-1)
        self.target = _Target(optimizer, self.owner, last_epoch)
        self.optimizer = optimizer
        self.base_wds: list[float] = list(self.target.bases)
        self.last_epoch = last_epoch
        self._check_target()
        self.step()

    def _check_target(self) -> None:
        """Checks of the settings against the target's slots, before the first value is written."""

    # -- the schedule
    def value(self, slot: int, base: float, t: int) -> float:  # pragma: no cover - abstract
        """``λ_t`` of slot ``slot`` (a group or a step) whose λ₀ is ``base``, after ``t`` steps."""
        raise NotImplementedError

    def _values(self, t: int) -> list[float | None]:
        out: list[float | None] = []
        for i, (base, driven) in enumerate(zip(self.target.bases, self.target.driven, strict=True)):
            if not driven:
                out.append(None)
                continue
            v = self.value(i, base, t)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise parameter_error(
                    "weight_decay", self.owner, f"a finite float >= 0 at every step (step {t}, λ₀ = {base:g})", v
                )
            out.append(float(v))
        return out

    # -- the interface of torch.optim.lr_scheduler
    def step(self) -> None:
        """Advance one step and write ``λ_t`` (call it after ``optimizer.step()``)."""
        self.last_epoch += 1
        self.target.write(self._values(self.last_epoch))
        self._last_wd = self.target.read()

    def get_last_wd(self) -> list[float]:
        """The λ last written: one per parameter group (optimizer) or per driven step (handle)."""
        return list(self._last_wd)

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the schedule: ``last_epoch``, λ₀ of each slot, its settings."""
        return {k: v for k, v in self.__dict__.items() if k not in self._unsaved}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` and write its current λ back to the groups or steps."""
        self.__dict__.update({k: v for k, v in state_dict.items() if k not in self._unsaved})
        self.target.restore_bases(self.base_wds)
        self.target.write(self._values(self.last_epoch))
        self._last_wd = self.target.read()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(last_epoch={self.last_epoch}, last_wd={self._last_wd})"


def _steps(value: Any, name: str, owner: str, low: int = 1) -> int:
    return check_int(value, name, owner, low=low)


def _factor(value: Any, name: str, owner: str) -> float:
    return check_float(value, name, owner, low=0.0)


class ConstantWD(WDScheduler):
    r"""``λ_t = factor·λ₀`` for ``t < total_steps``, then ``λ₀`` (``torch.optim.lr_scheduler.ConstantLR``).

    With the defaults (``factor=1``, ``total_steps=0``) λ stays at λ₀: a constant schedule that still
    records λ₀ and takes part in :class:`SequentialWD`.
    """

    owner = "ConstantWD"

    def __init__(self, optimizer: Any, factor: float = 1.0, total_steps: int = 0, last_epoch: int = -1) -> None:
        self.factor = _factor(factor, "factor", self.owner)
        self.total_steps = _steps(total_steps, "total_steps", self.owner, low=0)
        super().__init__(optimizer, last_epoch)

    def value(self, slot: int, base: float, t: int) -> float:
        return base * self.factor if t < self.total_steps else base


class LinearWarmupWD(WDScheduler):
    r"""Linear warm-up of λ: ``λ_t = λ₀·(s + (1 − s)·min(t, W)/W)``, ``s`` = ``start_factor``.

    λ rises from ``s·λ₀`` at ``t = 0`` to λ₀ at ``t = W`` (``warmup_steps``) and stays there
    (``torch.optim.lr_scheduler.LinearLR`` with ``end_factor=1``).
    """

    owner = "LinearWarmupWD"

    def __init__(self, optimizer: Any, warmup_steps: int, start_factor: float = 0.0, last_epoch: int = -1) -> None:
        self.warmup_steps = _steps(warmup_steps, "warmup_steps", self.owner)
        self.start_factor = _factor(start_factor, "start_factor", self.owner)
        super().__init__(optimizer, last_epoch)

    def value(self, slot: int, base: float, t: int) -> float:
        s = self.start_factor
        return base * (s + (1 - s) * min(t, self.warmup_steps) / self.warmup_steps)


class CosineWD(WDScheduler):
    r"""Cosine from λ₀ to λ₁ over ``T`` steps, then λ₁ (DINO's weight-decay schedule).

    .. math::
        \lambda_t = \lambda_1 + \tfrac12(\lambda_0 - \lambda_1)\left(1 + \cos\frac{\pi\,\min(t, T)}{T}\right)

    λ₁ = ``final_weight_decay`` may be above λ₀ (DINO raises λ from 0.04 to 0.4) or below it. For
    ``t < T`` this is DINO's ``cosine_scheduler(λ₀, λ₁, ...)`` with ``T`` its number of iterations.

    Reference: Caron et al. 2021, ``utils.cosine_scheduler`` of facebookresearch/dino.
    """

    owner = "CosineWD"

    def __init__(
        self, optimizer: Any, total_steps: int, final_weight_decay: float = 0.0, last_epoch: int = -1
    ) -> None:
        self.total_steps = _steps(total_steps, "total_steps", self.owner)
        self.final_weight_decay = check_float(final_weight_decay, "final_weight_decay", self.owner, low=0.0)
        super().__init__(optimizer, last_epoch)

    def value(self, slot: int, base: float, t: int) -> float:
        lam1 = self.final_weight_decay
        return lam1 + 0.5 * (base - lam1) * (1 + math.cos(math.pi * min(t, self.total_steps) / self.total_steps))


class StepWD(WDScheduler):
    r"""``λ_t = λ₀·γ^{⌊t / step_size⌋}`` (``torch.optim.lr_scheduler.StepLR``)."""

    owner = "StepWD"

    def __init__(self, optimizer: Any, step_size: int, gamma: float = 0.1, last_epoch: int = -1) -> None:
        self.step_size = _steps(step_size, "step_size", self.owner)
        self.gamma = _factor(gamma, "gamma", self.owner)
        super().__init__(optimizer, last_epoch)

    def value(self, slot: int, base: float, t: int) -> float:
        return base * self.gamma ** (t // self.step_size)


class WarmupStableDecayWD(WDScheduler):
    r"""Warm-up, stable, decay (WSD): ``W`` steps up, a plateau at λ₀, ``D`` steps down, ``T`` in all.

    .. math::
        \lambda_t = \lambda_0 \cdot \begin{cases}
          s + (1 - s)\,t/W & t < W \\
          1 & W \le t < T - D \\
          f + (1 - f)\,\phi\!\left(\frac{t - (T - D)}{D}\right) & T - D \le t < T \\
          f & t \ge T
        \end{cases}

    with ``s`` = ``start_factor``, ``f`` = ``final_factor`` and the decay shape φ(p) = ``1 − p``
    (``"linear"``), ``(1 + cos πp)/2`` (``"cosine"``) or ``1 − √p`` (``"1-sqrt"``, Hägele et al. 2024).
    ``W + D ≤ T`` (the stable phase has ``T − W − D ≥ 0`` steps).

    References: Hu et al., MiniCPM, 2024; Hägele et al. 2024.
    """

    owner = "WarmupStableDecayWD"

    def __init__(
        self,
        optimizer: Any,
        total_steps: int,
        warmup_steps: int,
        decay_steps: int,
        final_factor: float = 0.0,
        start_factor: float = 0.0,
        decay_shape: str = "linear",
        last_epoch: int = -1,
    ) -> None:
        self.total_steps = _steps(total_steps, "total_steps", self.owner)
        self.warmup_steps = check_int(warmup_steps, "warmup_steps", self.owner, low=0, high=self.total_steps)
        self.decay_steps = check_int(
            decay_steps, "decay_steps", self.owner, low=0, high=self.total_steps - self.warmup_steps
        )
        self.final_factor = _factor(final_factor, "final_factor", self.owner)
        self.start_factor = _factor(start_factor, "start_factor", self.owner)
        self.decay_shape: str = check_choice(decay_shape, "decay_shape", self.owner, DECAY_SHAPES)
        super().__init__(optimizer, last_epoch)

    def value(self, slot: int, base: float, t: int) -> float:
        W, D, T = self.warmup_steps, self.decay_steps, self.total_steps
        if t < W:
            s = self.start_factor
            return base * (s + (1 - s) * t / W)
        if t < T - D:
            return base
        f = self.final_factor
        if t >= T:
            return base * f
        p = (t - (T - D)) / D
        if self.decay_shape == "linear":
            phi = 1 - p
        elif self.decay_shape == "cosine":
            phi = 0.5 * (1 + math.cos(math.pi * p))
        else:
            phi = 1 - math.sqrt(p)
        return base * (f + (1 - f) * phi)


class LambdaWD(WDScheduler):
    r"""``λ_t = λ₀·f(t)`` for a function ``f`` (one per slot, or one for all) — ``LambdaLR``'s form.

    ``f(t)`` must be a finite float ≥ 0 at every step; the functions are not saved by :meth:`state_dict`
    (pass them again when you rebuild the scheduler).
    """

    owner = "LambdaWD"
    _unsaved = ("target", "optimizer", "wd_lambdas", "_one")

    def __init__(
        self,
        optimizer: Any,
        wd_lambda: Callable[[int], float] | Sequence[Callable[[int], float]],
        last_epoch: int = -1,
    ) -> None:
        if callable(wd_lambda):
            self.wd_lambdas: list[Callable[[int], float]] | None = None
            self._one: Callable[[int], float] | None = wd_lambda
        else:
            fns = list(wd_lambda) if isinstance(wd_lambda, Sequence) else None
            if fns is None or not fns or not all(callable(f) for f in fns):
                raise parameter_error("wd_lambda", self.owner, "a function of the step or a list of them", wd_lambda)
            self.wd_lambdas, self._one = fns, None
        super().__init__(optimizer, last_epoch)

    def _check_target(self) -> None:
        n = len(self.target.slots)
        if self.wd_lambdas is not None and len(self.wd_lambdas) != n:
            raise parameter_error(
                "wd_lambda", self.owner, f"one function or a list of {n} (one per group or step)",
                f"a list of {len(self.wd_lambdas)}",
            )

    def value(self, slot: int, base: float, t: int) -> float:
        f = self._one if self.wd_lambdas is None else self.wd_lambdas[slot]
        assert f is not None  # __init__ sets exactly one of wd_lambdas and _one
        factor = f(t)
        try:
            number = float(factor) if not isinstance(factor, bool) else math.nan
        except (TypeError, ValueError):
            number = math.nan
        if not (math.isfinite(number) and number >= 0):
            raise parameter_error(
                "wd_lambda", self.owner, f"a function returning a finite float >= 0 (at step {t})", factor
            )
        return base * number


def _same_target(schedulers: Sequence[WDScheduler], owner: str, optimizer: Any = None) -> Any:
    if not schedulers or not all(isinstance(s, WDScheduler) for s in schedulers):
        raise parameter_error("schedulers", owner, "a non-empty list of weight-decay schedulers", schedulers)
    target = schedulers[0].optimizer if optimizer is None else optimizer
    for i, s in enumerate(schedulers):
        if s.optimizer is not target:
            raise parameter_error(
                "schedulers", owner, "schedulers of the same optimizer or handle",
                f"scheduler {i} drives {type(s.optimizer).__name__} at {id(s.optimizer):#x}",
            )
    return target


class _ComposedWD(WDScheduler):
    """A scheduler made of others (``self.schedulers``): its state holds each part's state too."""

    schedulers: list[WDScheduler]

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["_schedulers"] = [s.state_dict() for s in self.schedulers]
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = dict(state_dict)
        for s, sd in zip(self.schedulers, state.pop("_schedulers"), strict=True):
            s.__dict__.update({k: v for k, v in sd.items() if k not in s._unsaved})
        super().load_state_dict(state)


class SequentialWD(_ComposedWD):
    r"""One schedule after another: schedule ``k`` runs for ``milestones[k-1] ≤ t < milestones[k]``.

    ``λ_t = S_k(λ₀, t − m_{k−1})`` with ``k = #{milestones ≤ t}`` and ``m_0 = 0``: each schedule restarts
    from its own step 0 at its milestone (``torch.optim.lr_scheduler.SequentialLR``). There must be one
    milestone fewer than schedules, strictly increasing and ≥ 1.
    """

    owner = "SequentialWD"
    _unsaved = ("target", "optimizer", "schedulers")

    def __init__(
        self, optimizer: Any, schedulers: Sequence[WDScheduler], milestones: Sequence[int], last_epoch: int = -1
    ) -> None:
        schedulers = list(schedulers) if isinstance(schedulers, Sequence) else schedulers
        _same_target(schedulers, self.owner, optimizer)
        ms = list(milestones) if isinstance(milestones, Sequence) else None
        if ms is None or len(ms) != len(schedulers) - 1:
            raise parameter_error(
                "milestones", self.owner, f"a list of {len(schedulers) - 1} steps (one fewer than the schedulers)",
                milestones,
            )
        ms = [check_int(m, "milestones", self.owner, low=1) for m in ms]
        if any(b <= a for a, b in pairwise(ms)):
            raise parameter_error("milestones", self.owner, "strictly increasing steps", milestones)
        self.schedulers = schedulers
        self.milestones = ms
        super().__init__(optimizer, last_epoch)

    def _phase(self, t: int) -> tuple[int, int]:
        k = bisect_right(self.milestones, t)
        return k, t - (self.milestones[k - 1] if k else 0)

    def value(self, slot: int, base: float, t: int) -> float:
        k, local = self._phase(t)
        return self.schedulers[k].value(slot, base, local)

    def step(self) -> None:
        super().step()
        k, local = self._phase(self.last_epoch)
        for i, s in enumerate(self.schedulers):  # keep the parts' own counters and values in step
            if i == k:
                s.last_epoch = local
            s._last_wd = self._last_wd


class ChainedWD(_ComposedWD):
    r"""Several schedules at once: their factors multiply, ``λ_t = λ₀·Π_i S_i(λ₀, t)/λ₀``.

    Every ``step()`` advances all of them (``torch.optim.lr_scheduler.ChainedScheduler`` for
    multiplicative schedules). For example a :class:`LinearWarmupWD` chained with a :class:`StepWD`
    warms λ up and then steps it down.
    """

    owner = "ChainedWD"
    _unsaved = ("target", "optimizer", "schedulers")

    def __init__(self, schedulers: Sequence[WDScheduler], last_epoch: int = -1) -> None:
        schedulers = list(schedulers) if isinstance(schedulers, Sequence) else schedulers
        target = _same_target(schedulers, self.owner)
        self.schedulers = schedulers
        super().__init__(target, last_epoch)

    def value(self, slot: int, base: float, t: int) -> float:
        v = base
        for s in self.schedulers:
            v *= s.value(slot, base, t) / base
        return v

    def step(self) -> None:
        super().step()
        for s in self.schedulers:
            s.last_epoch = self.last_epoch
            s._last_wd = self._last_wd
