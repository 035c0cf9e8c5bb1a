"""An audit of a (model, optimizer, scheduler): what is decayed, how, and what looks wrong — each with its fix.

``audit(model, optimizer, scheduler=None, *, epochs=None, steps_per_epoch=None, dataset_size=None)``
returns an :class:`AuditReport`, a list of :class:`Finding` (code, severity, the parameters concerned,
why, and the fix as Python code). The fix is code to run where ``model``, ``optimizer``, ``scheduler``,
``torch`` and ``decaylab`` are defined; once it has run, a second audit no longer reports the finding.
The reference for "which tensors should decay" is :class:`~decaylab.DecayPolicy` ``()`` (or ``policy=``).

Findings (severity):

* ``coupled-decay-adaptive`` (warning): ``weight_decay`` of Adam, Adamax, NAdam/RAdam (without
  ``decoupled_weight_decay``), RMSprop, Adagrad, Adadelta is an L2 gradient ``g ← g + λθ`` that the
  optimizer then divides by √v̂: weights with large gradients are barely decayed (Loshchilov & Hutter 2019).
* ``decay-excluded`` (warning): the optimizer (or an attached step) decays biases, norm-layer weights,
  1-D tensors, or tensors the model declares (``no_weight_decay()``, ``_no_weight_decay``).
* ``decay-embedding`` (info): an embedding's weight is decayed (many language models exclude it).
* ``decay-twice`` (error): a tensor decayed by the optimizer's own ``weight_decay`` and an attached
  decay step, or by two attached decay steps.
* ``tied-split`` (error): two parameters that share storage (a tie made by copying a ``Parameter``)
  get different decay.
* ``no-group`` (error): a trainable parameter of the model is in no parameter group (never trained).
* ``weight-excluded`` (warning): a weight of two or more dimensions that the policy decays gets no
  decay while others do (e.g. groups built by a name test that caught it).
* ``weight-1d-not-decayed`` (info): a 1-D tensor that is neither a bias nor in a norm layer nor declared
  (a hand-written scale or gate, e.g. ``nn.Parameter(torch.ones(d))``) never decays, only because of the
  shape rule, while others do. Its fix defines ``policy`` (``DecayPolicy(include=...)``): audit again
  with ``policy=policy``.
* ``timescale`` (warning, needs ``epochs`` and ``steps_per_epoch``): the EMA timescale of decoupled
  decay, τ_iter = 1/(η·λ) iterations, i.e. τ_epoch = B/(η·λ·N) = 1/(η·λ·steps_per_epoch) epochs
  (Wang & Aitchison 2024), is outside ``[1, epochs]``; the fix sets the λ that puts τ_epoch at √epochs.
* ``schedule-above-reference`` (warning): a decay scaled by ``γ_t/γ₀`` (``"schedule"``) or
  ``γ_t²/γ_max`` (``"corrected"``) under a scheduler whose learning rate rises above that reference
  (OneCycleLR's γ₀ is max_lr/25: the decay peaks 25× higher). The schedule is simulated on a copy.

:func:`explain_optimizer` (also ``decaylab.explain(optimizer)``) shows what an optimizer does to each
tensor: its own ``weight_decay`` (coupled or decoupled) and the attached steps.
"""

from __future__ import annotations

import copy
import inspect
import json
import math
import sys
import types
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal, Protocol, runtime_checkable

import torch
from torch import nn

from decaylab.policy import DecayPolicy, DecayTable, ExplainRow, ModelOrParams, decay_plan, explain_model
from decaylab.steps import attached
from decaylab.validation import InvalidParameterError, check_int, parameter_error

__all__ = ["AuditReport", "Finding", "audit", "explain", "explain_optimizer"]

Severity = Literal["error", "warning", "info"]
SEVERITIES: tuple[str, ...] = ("error", "warning", "info")


@runtime_checkable
class _DecayStep(Protocol):
    """What the audit reads of a weight-decay step (``Step.decays``): decaylab's DecoupledDecay and
    CautiousDecay have it; a decaying step of the user's own without it is left out of the sums."""

    weight_decay: float
    scaled_by: str

    @property
    def reference(self) -> float | None: ...


# optimizers whose weight_decay is an L2 gradient divided by an adaptive denominator
_ADAPTIVE_COUPLED = ("Adam", "Adamax", "NAdam", "RAdam", "RMSprop", "Adagrad", "Adadelta", "SparseAdam")
# reasons of the default policy that mean "should not decay"
_EXCLUDED_KINDS = ("bias", "norm layer", "-D tensor", "no_weight_decay", "marked _no_weight_decay")


@dataclass(frozen=True)
class Finding:
    """One finding: ``code``, ``severity`` (error, warning, info), the parameters, why, and the fix as code."""

    code: str
    severity: Severity
    params: tuple[str, ...]
    why: str
    fix: str

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["params"] = list(self.params)
        return out


class AuditReport(list[Finding]):
    """The findings of :func:`audit`; ``str()`` is a table followed by each fix, ``to_json()`` one document."""

    @property
    def clean(self) -> bool:
        """No finding of severity ``error`` or ``warning``."""
        return not any(f.severity in ("error", "warning") for f in self)

    def codes(self) -> list[str]:
        return [f.code for f in self]

    def to_json(self) -> str:
        return json.dumps({"clean": self.clean, "findings": [f.to_dict() for f in self]}, indent=1)

    def __str__(self) -> str:
        if not self:
            return "audit: no findings"
        rows = [["#", "severity", "code", "parameters", "why"]]
        for i, f in enumerate(self, 1):
            shown = ", ".join(f.params[:3]) + (f", +{len(f.params) - 3}" if len(f.params) > 3 else "")
            rows.append([str(i), f.severity, f.code, shown or "-", f.why])
        widths = [max(len(r[c]) for r in rows) for c in range(4)]
        lines = ["  ".join(r[c].ljust(widths[c]) for c in range(4)) + "  " + r[4] for r in rows]
        lines.insert(1, "-" * min(120, max(len(line) for line in lines)))
        for i, f in enumerate(self, 1):
            lines.append(f"\nfix {i} ({f.code}):")
            lines.extend("    " + line for line in f.fix.splitlines())
        counts = {s: sum(f.severity == s for f in self) for s in SEVERITIES}
        lines.append("\n" + ", ".join(f"{n} {s}{'s' if n != 1 and s != 'info' else ''}" for s, n in counts.items()))
        return "\n".join(lines)


@dataclass
class _Tensor:
    """What the audit knows about one tensor of the model or the optimizer."""

    name: str  # relative to wrappers
    full: str  # as model.named_parameters() names it (for get_parameter in fixes)
    param: torch.Tensor
    policy_m: float
    reason: str
    group: int | None = None
    own: float = 0.0  # the optimizer's own weight_decay on it
    steps: float = 0.0  # attached decay steps' λ·m, summed
    n_steps: int = 0
    embedding: bool = False  # the weight of an nn.Embedding / nn.EmbeddingBag (tied or not)

    @property
    def decayed(self) -> bool:
        return self.own > 0 or self.steps > 0


def _is_decoupled(optimizer: torch.optim.Optimizer, group: dict[str, Any]) -> bool:
    name = type(optimizer).__name__
    return name == "AdamW" or bool(group.get("decoupled_weight_decay", False))


def _is_adaptive_coupled(optimizer: torch.optim.Optimizer, group: dict[str, Any]) -> bool:
    return type(optimizer).__name__ in _ADAPTIVE_COUPLED and not _is_decoupled(optimizer, group)


def _ctor(optimizer: torch.optim.Optimizer, weight_decay: float, policy_code: str = "") -> str:
    """Code that builds the same optimizer class over ``param_groups(model, λ)``, with its non-default settings."""
    cls = type(optimizer)
    module = "torch.optim" if cls.__module__.startswith("torch.optim") else cls.__module__
    kwargs = []
    try:
        signature: Mapping[str, inspect.Parameter] = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        signature = {}
    for key, value in optimizer.defaults.items():
        if key in ("weight_decay", "params") or key not in signature:
            continue
        default = signature[key].default
        if key == "lr" or not (value is default or value == default):
            kwargs.append(f"{key}={value!r}")
    extra = f", {policy_code}" if policy_code else ""
    return f"optimizer = {module}.{cls.__name__}(decaylab.param_groups(model, {weight_decay!r}{extra}), {', '.join(kwargs)})"


def _tensors(model: nn.Module, optimizer: torch.optim.Optimizer, policy: DecayPolicy) -> tuple[list[_Tensor], list[_Tensor]]:
    """Every tensor of the model (with its default-policy verdict and what the optimizer does to it), and
    tensors of the optimizer that the model does not have."""
    full_names: dict[int, str] = {}
    for full, p in model.named_parameters(remove_duplicate=False):
        full_names.setdefault(id(p), full)
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding | nn.EmbeddingBag)}
    by_id: dict[int, _Tensor] = {}
    for entry in decay_plan(model, policy, owner="audit", classify_frozen=True):
        by_id[id(entry.param)] = _Tensor(entry.name, full_names[id(entry.param)], entry.param, entry.multiplier,
                                         entry.reason, embedding=id(entry.param) in embeddings)
    extra: list[_Tensor] = []
    for index, group in enumerate(optimizer.param_groups):
        wd = float(group.get("weight_decay", 0) or 0)
        names = group.get("param_names") or []
        for j, p in enumerate(group["params"]):
            t = by_id.get(id(p))
            if t is None:
                t = _Tensor(names[j] if j < len(names) else f"<group {index} #{j}>", "", p, 0.0, "not in the model")
                extra.append(t)
                by_id[id(p)] = t
            t.group = index
            t.own = wd
    for handle in attached(optimizer):
        multipliers = handle.multipliers()
        for step in handle.steps:
            if not (step.decays and isinstance(step, _DecayStep)):
                continue
            for pid, m in multipliers.items():
                if m > 0 and pid in by_id:
                    by_id[pid].steps += step.weight_decay * m
                    by_id[pid].n_steps += 1
    model_tensors = [t for t in by_id.values() if t.full]
    return model_tensors, extra


def _main_lambda(tensors: list[_Tensor]) -> float:
    values = [t.own for t in tensors if t.own > 0] + [t.steps for t in tensors if t.steps > 0]
    return max(values, default=0.0)


def _names(ts: list[_Tensor]) -> tuple[str, ...]:
    return tuple(t.name for t in ts)


def _reattach_code(lam: float) -> str:
    return ("for handle in decaylab.steps.attached(optimizer):\n"
            "    if any(step.decays for step in handle.steps):\n"
            "        handle.detach()\n"
            f"decaylab.attach(optimizer, decaylab.DecoupledDecay({lam!r}), model=model)")


def _check_groups(model_tensors: list[_Tensor], optimizer: torch.optim.Optimizer) -> Iterator[Finding]:
    name = type(optimizer).__name__
    coupled = [t for t in model_tensors if t.own > 0 and t.group is not None
               and _is_adaptive_coupled(optimizer, optimizer.param_groups[t.group])]
    if coupled:
        lam = max(t.own for t in coupled)
        yield Finding(
            "coupled-decay-adaptive", "warning", _names(coupled),
            f"{name}'s weight_decay={lam:g} is an L2 gradient g ← g + λθ that {name} divides by √v̂: weights with "
            "large gradients are barely decayed; decoupled decay (AdamW's) shrinks every weight alike",
            "for group in optimizer.param_groups:\n    group[\"weight_decay\"] = 0.0\n"
            f"decaylab.attach(optimizer, decaylab.DecoupledDecay({lam!r}), model=model)",
        )
    excluded = [t for t in model_tensors if t.decayed and t.policy_m == 0
                and any(k in t.reason for k in _EXCLUDED_KINDS)]
    if excluded:
        lam = _main_lambda(model_tensors)
        by_own = any(t.own > 0 for t in excluded)
        kinds = sorted({k.strip("-") for t in excluded for k in _EXCLUDED_KINDS if k in t.reason})
        yield Finding(
            "decay-excluded", "warning", _names(excluded),
            f"{'the optimizer' if by_own else 'an attached step'} decays tensors that should not decay ("
            + ", ".join(kinds) + "): shrinking a bias, a norm scale or a declared tensor toward 0 only hurts",
            _ctor(optimizer, lam) if by_own else _reattach_code(lam),
        )
    embeddings = [t for t in model_tensors if t.decayed and t.policy_m > 0 and _is_embedding(t)]
    if embeddings:
        lam = _main_lambda(model_tensors)
        own = any(t.own > 0 for t in embeddings)
        yield Finding(
            "decay-embedding", "info", _names(embeddings),
            "embedding weights are decayed; many language models exclude them (rows of rare tokens get "
            "few gradients and decay toward 0)",
            _ctor(optimizer, lam, "decaylab.DecayPolicy(exclude_embeddings=True)") if own else
            ("for handle in decaylab.steps.attached(optimizer):\n    if any(step.decays for step in handle.steps):\n"
             "        handle.detach()\n"
             f"decaylab.attach(optimizer, decaylab.DecoupledDecay({lam!r}), model=model, "
             "policy=decaylab.DecayPolicy(exclude_embeddings=True))"),
        )
    twice = [t for t in model_tensors if (t.own > 0 and t.steps > 0) or t.n_steps > 1]
    if twice:
        if any(t.own > 0 and t.steps > 0 for t in twice):
            fix = "for group in optimizer.param_groups:\n    group[\"weight_decay\"] = 0.0"
            why = (f"{name}'s own weight_decay and an attached decay step both decay these tensors "
                   f"(e.g. {name}'s default weight_decay)")
        else:
            fix = ("kept = False\nfor handle in decaylab.steps.attached(optimizer):\n"
                   "    if any(step.decays for step in handle.steps):\n"
                   "        if kept:\n            handle.detach()\n        kept = True")
            why = "two attached decay steps decay these tensors"
        yield Finding("decay-twice", "error", _names(twice), why + ": the decay is applied twice", fix)
    yield from _check_ties(model_tensors, optimizer)
    missing = [t for t in model_tensors if t.group is None and t.param.requires_grad]
    if missing:
        lam = max((t.own for t in model_tensors if t.own > 0), default=0.0)
        with_names = any("param_names" in g for g in optimizer.param_groups)
        lines = []
        for value in sorted({lam * t.policy_m for t in missing}):
            ts = [t for t in missing if lam * t.policy_m == value]
            params = ", ".join(f"model.get_parameter({t.full!r})" for t in ts)
            names = f", \"param_names\": {[t.name for t in ts]!r}" if with_names else ""
            lines.append(f"optimizer.add_param_group({{\"params\": [{params}], \"weight_decay\": {value!r}{names}}})")
        yield Finding("no-group", "error", _names(missing),
                      "trainable parameters of the model are in no parameter group: the optimizer never updates them",
                      "\n".join(lines))
    someone = any(t.decayed for t in model_tensors)
    shape_only = [t for t in model_tensors if someone and not t.decayed and t.group is not None
                  and t.reason == "1-D tensor"]
    if shape_only:
        lam = _main_lambda(model_tensors)
        one_d = tuple(dict.fromkeys(t.name for t in shape_only))
        yield Finding(
            "weight-1d-not-decayed", "info", one_d,
            "1-D tensors that are neither biases nor norm-layer parameters nor declared never decay, only because "
            "of the shape rule; if they are weights (a learnable scale or gate), include them",
            f"policy = decaylab.DecayPolicy(include={one_d!r})\n" + _ctor(optimizer, lam, "policy"),
        )
    spared = [t for t in model_tensors if someone and not t.decayed and t.group is not None and t.param.dim() >= 2
              and t.policy_m > 0 and not _is_embedding(t)]
    if spared:
        lam = _main_lambda(model_tensors)
        by_steps = any(t.steps > 0 for t in model_tensors) and not any(t.own > 0 for t in model_tensors)
        yield Finding(
            "weight-excluded", "warning", _names(spared),
            "weights of two or more dimensions get no decay while others do (excluded by the groups or a policy "
            "rule you may not expect)",
            _reattach_code(lam) if by_steps else _ctor(optimizer, lam),
        )


def _is_embedding(t: _Tensor) -> bool:
    return t.embedding


def _check_ties(model_tensors: list[_Tensor], optimizer: torch.optim.Optimizer) -> Iterator[Finding]:
    def storage(p: torch.Tensor) -> tuple[int, int, tuple[int, ...]]:
        return (p.untyped_storage().data_ptr(), int(p.storage_offset()), tuple(p.shape))

    by_storage: dict[tuple[int, int, tuple[int, ...]], list[_Tensor]] = {}
    for t in model_tensors:
        if t.param.numel():
            by_storage.setdefault(storage(t.param), []).append(t)
    for ts in by_storage.values():
        if len(ts) > 1 and len({(t.own, t.steps) for t in ts}) > 1:
            keep, *others = ts
            lam = _main_lambda(model_tensors)
            lines = []
            for other in others:
                module, _, attr = other.full.rpartition(".")
                lines.append(f"model.get_submodule({module!r}).{attr} = model.get_parameter({keep.full!r})")
            lines.append(_ctor(optimizer, lam))
            yield Finding(
                "tied-split", "error", _names(ts),
                "these parameters share storage (a tie made by copying a Parameter) but get different decay; "
                "they also get separate gradients: tie them by assigning the same Parameter",
                "\n".join(lines),
            )


def _check_timescale(model_tensors: list[_Tensor], optimizer: torch.optim.Optimizer, epochs: int,
                     steps_per_epoch: int, dataset_size: int | None) -> Iterator[Finding]:
    for index, group in enumerate(optimizer.param_groups):
        ts = [t for t in model_tensors if t.group == index and t.decayed]
        if not ts:
            continue
        eta = float(group.get("initial_lr", group["lr"]))
        rate, how = 0.0, ""
        if t_own := max((t.own for t in ts), default=0.0):
            if _is_adaptive_coupled(optimizer, group):
                continue  # coupled L2 through Adam has no single timescale (coupled-decay-adaptive says so)
            rate, how = eta * t_own, "own"
        for handle in attached(optimizer):
            for step in handle.steps:
                if step.decays and isinstance(step, _DecayStep):
                    s = {"lr": eta, "schedule": 1.0, "none": 1.0}.get(step.scaled_by, eta)
                    rate += s * step.weight_decay
                    how = how or "steps"
        if rate <= 0 or eta <= 0:
            continue
        tau_epoch = 1.0 / (rate * steps_per_epoch)
        if 1.0 <= tau_epoch <= epochs:
            continue
        target = math.sqrt(epochs)
        factor = tau_epoch / target  # multiply every λ by this
        batch = f", B = {dataset_size / steps_per_epoch:g}, N = {dataset_size}" if dataset_size else ""
        side = "longer than the whole run" if tau_epoch > epochs else "shorter than one epoch"
        if how == "own":
            new = float(f"{float(group['weight_decay']) * factor:.3g}")
            fix = f"optimizer.param_groups[{index}][\"weight_decay\"] = {new!r}"
        else:
            new = None
            fix = ("for handle in decaylab.steps.attached(optimizer):\n    for step in handle.steps:\n"
                   f"        if step.decays:\n            step.weight_decay = float(f\"{{step.weight_decay * {factor!r}:.3g}}\")")
        yield Finding(
            "timescale", "warning", _names(ts),
            f"group {index}: the decay's timescale τ = 1/(η·λ) = {1 / rate:.3g} iterations = {tau_epoch:.3g} epochs "
            f"(η = {eta:g}, {steps_per_epoch} steps per epoch{batch}) is {side} ({epochs} epochs; Wang & Aitchison "
            f"2024 keep τ_epoch inside [1, epochs]); λ ×{factor:.3g}" + (f" = {new:g}" if new else "")
            + f" puts it at √epochs = {target:.3g}",
            fix,
        )


def _simulate(scheduler: Any, optimizer: torch.optim.Optimizer, steps: int) -> list[float] | None:
    """The largest learning rate of each group over ``steps`` scheduler steps, on a copy (None: cannot)."""
    if scheduler is None or not hasattr(scheduler, "step") or type(scheduler).__name__ == "ReduceLROnPlateau":
        return None
    groups = []
    for g in optimizer.param_groups:
        groups.append({k: copy.deepcopy(v) for k, v in g.items() if k not in ("params", "param_names")}
                      | {"params": [torch.zeros(1)]})
    fake = torch.optim.SGD(groups, lr=float(optimizer.param_groups[0]["lr"]))
    for g, src in zip(fake.param_groups, optimizer.param_groups, strict=True):
        g.update({k: v for k, v in src.items() if k not in ("params", "param_names")})
    try:
        twin = copy.deepcopy(scheduler, memo={id(optimizer): fake})
    except Exception:  # noqa: BLE001 - a scheduler we cannot copy is not simulated
        return None
    top = [float(g["lr"]) for g in fake.param_groups]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(steps):
            try:
                twin.step()
            except (ValueError, IndexError, ZeroDivisionError):  # e.g. OneCycleLR past total_steps
                break
            top = [max(a, float(g["lr"])) for a, g in zip(top, fake.param_groups, strict=True)]
    return top


def _check_schedule(optimizer: torch.optim.Optimizer, scheduler: Any, total: int) -> Iterator[Finding]:
    from decaylab.steps import reference_lr

    steps = [(h, s) for h in attached(optimizer) for s in h.steps
             if s.decays and isinstance(s, _DecayStep) and s.scaled_by in ("schedule", "corrected")]
    if not steps or scheduler is None:
        return
    top = _simulate(scheduler, optimizer, total)
    if top is None:
        return
    for _handle, step in steps:
        attr = "lr0" if step.scaled_by == "schedule" else "lr_max"
        for index, group in enumerate(optimizer.param_groups):
            try:
                ref = reference_lr(dict(group), step.scaled_by, step.reference, type(step).__name__)
            except InvalidParameterError:  # γ₀ = 0: the step itself raises at the first step, with its message
                continue
            if top[index] <= ref * (1 + 1e-9):
                continue
            peak = top[index] / ref * step.weight_decay
            if step.scaled_by == "corrected":
                peak = top[index] * top[index] / ref * step.weight_decay
            names = [n for n in (group.get("param_names") or [])] or [f"<group {index}>"]
            yield Finding(
                "schedule-above-reference", "warning", tuple(names),
                f"{step!r} scales λ by the learning rate over its reference ({attr} = {ref:g}), but the scheduler "
                f"raises the learning rate to {top[index]:g} ({top[index] / ref:.3g}× the reference): the decay "
                f"per step peaks at {peak:.3g}" + (" ≥ 1, which flips every weight's sign" if peak >= 1 else ""),
                "for handle in decaylab.steps.attached(optimizer):\n    for step in handle.steps:\n"
                f"        if getattr(step, \"scaled_by\", None) == {step.scaled_by!r}:\n"
                f"            step.{attr} = {top[index]!r}",
            )
            break


def audit(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any = None,
    *,
    epochs: int | None = None,
    steps_per_epoch: int | None = None,
    dataset_size: int | None = None,
    policy: DecayPolicy | None = None,
) -> AuditReport:
    """Find what is wrong with the weight decay of a training set-up; each finding carries its fix as code.

    Args:
        model: the ``nn.Module`` trained (wrappers such as ``torch.compile`` and DDP are fine).
        optimizer: its ``torch.optim`` optimizer, with any steps attached by :func:`decaylab.attach`.
        scheduler: its learning-rate scheduler, if any (simulated on a copy for ``schedule-above-reference``).
        epochs, steps_per_epoch: the run's length, for ``timescale`` (and the length of the simulation).
        dataset_size: N, shown with the batch size B = N/steps_per_epoch in ``timescale``.
        policy: the reference of which tensors should decay (default :class:`~decaylab.DecayPolicy` ``()``).

    Returns:
        An :class:`AuditReport` (a list of :class:`Finding`); ``report.clean`` is True when no finding of
        severity "error" or "warning" stands. See the module docstring for every finding.

    Raises:
        InvalidParameterError: an argument of the wrong type or range.
    """
    if not isinstance(model, nn.Module):
        raise parameter_error("model", "audit", "an nn.Module", model)
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise parameter_error("optimizer", "audit", "a torch.optim.Optimizer", optimizer)
    if scheduler is not None and not hasattr(scheduler, "step"):
        raise parameter_error("scheduler", "audit", "a learning-rate scheduler (with step()) or None", scheduler)
    epochs = None if epochs is None else check_int(epochs, "epochs", "audit", low=1)
    steps_per_epoch = None if steps_per_epoch is None else check_int(steps_per_epoch, "steps_per_epoch", "audit", low=1)
    dataset_size = None if dataset_size is None else check_int(dataset_size, "dataset_size", "audit", low=1)
    if policy is None:
        policy = DecayPolicy()
    elif not isinstance(policy, DecayPolicy):
        raise parameter_error("policy", "audit", "a DecayPolicy or None", policy)
    model_tensors, _ = _tensors(model, optimizer, policy)
    report = AuditReport(_check_groups(model_tensors, optimizer))
    if epochs is not None and steps_per_epoch is not None:
        report.extend(_check_timescale(model_tensors, optimizer, epochs, steps_per_epoch, dataset_size))
    total = epochs * steps_per_epoch if (epochs and steps_per_epoch) else int(getattr(scheduler, "total_steps", 0) or 1000)
    report.extend(_check_schedule(optimizer, scheduler, min(total, 100_000)))
    order = {s: i for i, s in enumerate(SEVERITIES)}
    report.sort(key=lambda f: order[f.severity])
    return report


def explain(
    model: ModelOrParams | torch.optim.Optimizer,
    policy: DecayPolicy | None = None,
    weight_decay: float | None = None,
) -> DecayTable:
    """Show which parameters decay: one row per tensor (name, shape, count, multiplier, λ, reason).

    ``print(explain(model))`` prints an aligned table and nanoGPT's totals; in a ``rich`` console the
    table renders as a rich table. With ``weight_decay`` the λ column shows ``m·weight_decay``.
    Frozen parameters are listed (and counted) but marked as skipped. A tied tensor is one row that
    shows every name (``wte.weight = lm_head.weight``). (:func:`decaylab.policy.explain_model`.)

    Given an optimizer instead (``explain(optimizer)``), the table shows what the optimizer *does*:
    each tensor's own ``weight_decay`` (coupled or decoupled, by optimizer class) and the steps
    attached to it (:func:`decaylab.attach`); the λ column is the total. Names come from the groups'
    ``"param_names"`` (:func:`explain_optimizer`). ``policy`` and ``weight_decay`` are a model's:
    given with an optimizer they raise :class:`~decaylab.InvalidParameterError`.
    """
    if not isinstance(model, torch.optim.Optimizer):
        return explain_model(model, policy, weight_decay)
    for name, value in (("policy", policy), ("weight_decay", weight_decay)):
        if value is not None:
            raise parameter_error(name, "explain", "None with an optimizer (its groups say how they decay)", value)
    return explain_optimizer(model)


def explain_optimizer(optimizer: torch.optim.Optimizer) -> DecayTable:
    """One row per tensor of ``optimizer``: its group's own ``weight_decay`` and the attached decay steps.

    The λ column is the total decay coefficient (own ``weight_decay`` + each attached step's λ·m); the
    reason says where each part comes from, e.g. ``group 0: AdamW weight_decay=0.01 (decoupled, ×lr)``
    or ``DecoupledDecay(weight_decay=0.05, scaled_by='lr') ×1``. Names come from ``"param_names"``.
    """
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise parameter_error("optimizer", "explain", "a torch.optim.Optimizer", optimizer)
    parts: dict[int, list[str]] = {}
    totals: dict[int, float] = {}
    known: dict[int, str] = {}  # names from the model given to attach, when the groups carry none
    for handle in attached(optimizer):
        if handle.model is not None:
            for entry in decay_plan(handle.model, DecayPolicy.decay_all(), classify_frozen=True, owner="explain"):
                known.setdefault(id(entry.param), entry.name)
    for handle in attached(optimizer):
        multipliers = handle.multipliers()
        for step in handle.steps:
            if step.decays and isinstance(step, _DecayStep):
                for pid, m in multipliers.items():
                    if m > 0:
                        parts.setdefault(pid, []).append(f"{step!r} ×{m:g}")
                        totals[pid] = totals.get(pid, 0.0) + step.weight_decay * m
    table = DecayTable()
    name = type(optimizer).__name__
    for index, group in enumerate(optimizer.param_groups):
        wd = float(group.get("weight_decay", 0) or 0)
        kind = ("decoupled, ×lr" if _is_decoupled(optimizer, group) else
                "coupled L2 through an adaptive denominator" if _is_adaptive_coupled(optimizer, group) else
                "coupled L2 gradient")
        names = group.get("param_names") or []
        for j, p in enumerate(group["params"]):
            reasons = [f"group {index}: {name} weight_decay={wd:g}" + (f" ({kind})" if wd > 0 else "")]
            reasons += parts.get(id(p), [])
            total = wd + totals.get(id(p), 0.0)
            table.append(ExplainRow(
                name=names[j] if j < len(names) else known.get(id(p), f"<group {index} #{j}>"), shape=tuple(p.shape),
                count=p.numel(), multiplier=1.0 if total > 0 else 0.0, weight_decay=total,
                reason="; ".join(reasons),
            ))
    return table


class _CallableModule(types.ModuleType):
    """``decaylab.audit`` is both this module and the function: importing the submodule (``import
    decaylab.audit``, ``from decaylab.audit import ...``) makes the package attribute the module, so the
    module itself is made callable as :func:`audit`."""

    def __call__(self, *args: Any, **kwargs: Any) -> AuditReport:
        return audit(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
