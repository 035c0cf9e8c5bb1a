"""Which parameters decay: one policy, asked by every other piece of decaylab.

The rule in one sentence: *every trainable tensor with two or more dimensions decays, except those of
normalization layers and those the model or the user excludes by name; biases and 1-D tensors do not.*

:class:`DecayPolicy` holds the rules, :func:`decay_plan` applies them to a model (or to tensors) and
returns one ``(name, param, multiplier, reason)`` entry per tensor; a multiplier of 0 means "not
decayed", any other value multiplies λ. :func:`param_groups` turns the plan into plain ``torch.optim``
parameter groups, :func:`explain` into a table a person can read. The penalties
(:mod:`decaylab.penalties`) and the optimizer steps (:mod:`decaylab.steps`) ask :func:`decay_plan` too,
so a bias the policy excludes receives no decay from any of them.

Rules, the first that matches decides (``name`` is the dotted name from ``model.named_parameters()``):

1. frozen (``requires_grad=False``, parameters of a module only): skipped entirely;
2. ``exclude`` glob patterns: not decayed;
3. ``include`` glob patterns: decayed (they beat rules 4-8);
4. the model's ``no_weight_decay()`` (also of any submodule, names relative to it; exact names,
   glob patterns or module prefixes, as in timm): not decayed;
5. ``exclude_norm``: parameters of normalization layers (BatchNorm, LayerNorm, GroupNorm,
   InstanceNorm, RMSNorm, and any module whose class name ends in ``Norm`` or ``Norm1d/2d/3d``);
6. ``exclude_embeddings``: weights of ``nn.Embedding`` / ``nn.EmbeddingBag``;
7. ``exclude_bias``: parameters whose last name component ends in ``bias``;
8. ``exclude_1d``: tensors with fewer than two dimensions;
9. otherwise decayed, with the multiplier of the first ``multipliers`` pattern that matches (else 1).

Rules 5, 6 and 4 need the modules, so they apply when a model is given; for ``(name, tensor)`` pairs
only the name and shape rules apply; for bare tensors, only the shape rule.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch import nn

from decaylab.validation import check_float, parameter_error

__all__ = [
    "DecayPolicy",
    "DecayTable",
    "ExplainRow",
    "PlanEntry",
    "decay_plan",
    "explain",
    "param_groups",
]

ModelOrParams = nn.Module | torch.Tensor | Iterable[torch.Tensor] | Iterable[tuple[str, torch.Tensor]]

_NORM_TYPES: tuple[type, ...] = tuple(
    t
    for t in (
        nn.modules.batchnorm._NormBase,  # BatchNorm*, InstanceNorm*, SyncBatchNorm, lazy variants
        nn.LayerNorm,
        nn.GroupNorm,
        nn.LocalResponseNorm,
        getattr(nn, "RMSNorm", None),
    )
    if t is not None
)
_NORM_NAME = re.compile(r"Norm(\d[dD])?$")
_EMBEDDING_TYPES: tuple[type, ...] = (nn.Embedding, nn.EmbeddingBag)


def _is_norm(module: nn.Module | None) -> bool:
    return module is not None and (
        isinstance(module, _NORM_TYPES) or bool(_NORM_NAME.search(type(module).__name__))
    )


def _patterns(value: Any, name: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = (value,)
    try:
        items = tuple(value)
    except TypeError:
        raise parameter_error(name, "DecayPolicy", "a glob pattern or a sequence of glob patterns", value) from None
    for item in items:
        if not isinstance(item, str):
            raise parameter_error(name, "DecayPolicy", "a glob pattern or a sequence of glob patterns", item)
    return items


@dataclass(frozen=True)
class DecayPolicy:
    """The rules that say which parameters decay and by how much (see the module docstring).

    Each decayed tensor ``w`` gets the weight decay ``m·λ``, where ``λ`` is the strength given to the
    mechanism (``param_groups``, a penalty, a decay step) and ``m`` its multiplier; ``m = 0`` means
    "not decayed". The defaults are timm's and nanoGPT's: every tensor of two or more dimensions
    decays, biases, 1-D tensors and normalization layers do not, embeddings do.

    Args:
        exclude_1d: tensors with fewer than two dimensions are not decayed.
        exclude_bias: parameters named ``*bias`` (last name component) are not decayed.
        exclude_norm: parameters of normalization layers are not decayed.
        exclude_embeddings: weights of ``nn.Embedding`` / ``nn.EmbeddingBag`` are not decayed.
        include: glob patterns (``fnmatch``, on the dotted name) of parameters that always decay.
        exclude: glob patterns of parameters that never decay (beats ``include``).
        multipliers: ``{pattern: m}``; a decayed parameter gets the ``m`` of the first pattern that
            matches its name (else 1). ``m = 0`` excludes it.
        use_model_no_weight_decay: honour ``no_weight_decay()`` of the model and its submodules.

    Example::

        policy = DecayPolicy(exclude_embeddings=True, multipliers={"head.*": 0.1})
        groups = param_groups(model, weight_decay=0.05, policy=policy)
    """

    exclude_1d: bool = True
    exclude_bias: bool = True
    exclude_norm: bool = True
    exclude_embeddings: bool = False
    include: str | tuple[str, ...] = ()
    exclude: str | tuple[str, ...] = ()
    multipliers: Mapping[str, float] | tuple[tuple[str, float], ...] = field(default=())
    use_model_no_weight_decay: bool = True

    def __post_init__(self) -> None:
        for flag in ("exclude_1d", "exclude_bias", "exclude_norm", "exclude_embeddings", "use_model_no_weight_decay"):
            value = getattr(self, flag)
            if not isinstance(value, bool):
                raise parameter_error(flag, "DecayPolicy", "a bool", value)
        object.__setattr__(self, "include", _patterns(self.include, "include"))
        object.__setattr__(self, "exclude", _patterns(self.exclude, "exclude"))
        raw = self.multipliers
        pairs = list(raw.items()) if isinstance(raw, Mapping) else list(raw)
        normalized: list[tuple[str, float]] = []
        for pair in pairs:
            if not (isinstance(pair, tuple | list) and len(pair) == 2 and isinstance(pair[0], str)):
                raise parameter_error(
                    "multipliers", "DecayPolicy", "a mapping from glob pattern to a float in [0, inf)", pair
                )
            normalized.append((pair[0], check_float(pair[1], "multipliers", "DecayPolicy", low=0.0)))
        object.__setattr__(self, "multipliers", tuple(normalized))

    @classmethod
    def decay_all(cls) -> DecayPolicy:
        """The policy that decays every trainable tensor with multiplier 1 (no rule excludes anything)."""
        return cls(
            exclude_1d=False,
            exclude_bias=False,
            exclude_norm=False,
            exclude_embeddings=False,
            use_model_no_weight_decay=False,
        )


class PlanEntry(NamedTuple):
    """One tensor of a decay plan: its name (``""`` if unknown), the tensor, λ's multiplier, and why."""

    name: str
    param: torch.Tensor
    multiplier: float
    reason: str

    @property
    def decayed(self) -> bool:
        return self.multiplier > 0


def _first_match(name: str, patterns: Iterable[str]) -> str | None:
    for pattern in patterns:
        if fnmatch.fnmatchcase(name, pattern):
            return pattern
    return None


def _model_no_weight_decay(model: nn.Module) -> list[tuple[str, str]]:
    """``(prefix, entry)`` for every entry of every ``no_weight_decay()`` in the module tree."""
    found: list[tuple[str, str]] = []
    for prefix, module in model.named_modules():
        method = getattr(module, "no_weight_decay", None)
        if callable(method):
            for entry in method():
                if not isinstance(entry, str):
                    raise parameter_error(
                        "no_weight_decay", type(module).__name__, "a method returning parameter names", entry
                    )
                found.append((prefix, entry))
    return found


def _in_no_weight_decay(name: str, declared: list[tuple[str, str]]) -> str | None:
    for prefix, entry in declared:
        full = f"{prefix}.{entry}" if prefix else entry
        if name == full or name.startswith(full + ".") or fnmatch.fnmatchcase(name, full):
            return full
    return None


def _classify(
    name: str,
    param: torch.Tensor,
    module: nn.Module | None,
    policy: DecayPolicy,
    declared: list[tuple[str, str]],
) -> tuple[float, str]:
    """The multiplier and the reason for one tensor under ``policy`` (rules 2-9 of the module docstring)."""
    pattern = _first_match(name, policy.exclude) if name else None
    if pattern is not None:
        return 0.0, f"excluded by pattern {pattern!r}"
    pattern = _first_match(name, policy.include) if name else None
    if pattern is not None:
        base = f"included by pattern {pattern!r}"
    else:
        hit = _in_no_weight_decay(name, declared) if (name and declared) else None
        if hit is not None:
            return 0.0, f"no_weight_decay() lists {hit!r}"
        if policy.exclude_norm and _is_norm(module):
            return 0.0, f"norm layer ({type(module).__name__})"
        if policy.exclude_embeddings and isinstance(module, _EMBEDDING_TYPES):
            return 0.0, f"embedding ({type(module).__name__})"
        if policy.exclude_bias and name.rsplit(".", 1)[-1].endswith("bias"):
            return 0.0, "bias"
        if policy.exclude_1d and param.dim() < 2:
            return 0.0, f"{param.dim()}-D tensor"
        base = "decayed"
    pattern = _first_match(name, (p for p, _ in policy.multipliers)) if name else None
    if pattern is None:
        return 1.0, base
    multiplier = dict(policy.multipliers)[pattern]
    if multiplier == 0:
        return 0.0, f"multiplier 0 (pattern {pattern!r})"
    return multiplier, f"{base}, ×{multiplier:g} (pattern {pattern!r})"


def _items(model_or_params: Any, owner: str) -> tuple[list[tuple[str, torch.Tensor, nn.Module | None]], bool, bool]:
    """``([(name, tensor, owning module)], from_module, named)`` for any accepted input."""
    allowed = "an nn.Module, a tensor, or an iterable of tensors or (name, tensor) pairs"
    if isinstance(model_or_params, nn.Module):
        owners: dict[int, nn.Module] = {}
        for _, module in model_or_params.named_modules():
            for _, p in module.named_parameters(recurse=False):
                owners.setdefault(id(p), module)
        return [(n, p, owners.get(id(p))) for n, p in model_or_params.named_parameters()], True, True
    if isinstance(model_or_params, torch.Tensor):
        return [("", model_or_params, None)], False, False
    if isinstance(model_or_params, str | bytes | Mapping) or not isinstance(model_or_params, Iterable):
        raise parameter_error("model_or_params", owner, allowed, model_or_params)
    items: list[tuple[str, torch.Tensor, nn.Module | None]] = []
    named = False
    seen: set[int] = set()
    for item in model_or_params:
        if isinstance(item, torch.Tensor):
            name, tensor = "", item
        elif isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str) and isinstance(item[1], torch.Tensor):
            name, tensor = item
            named = True
        else:
            raise parameter_error("model_or_params", owner, allowed, item)
        if id(tensor) not in seen:
            seen.add(id(tensor))
            items.append((name, tensor, None))
    return items, False, named


def decay_plan(
    model_or_params: ModelOrParams,
    policy: DecayPolicy | None = None,
    *,
    include_frozen: bool = False,
    owner: str = "decay_plan",
) -> list[PlanEntry]:
    """Apply ``policy`` to every tensor: THE mechanism behind penalties, decay steps and parameter groups.

    Args:
        model_or_params: an ``nn.Module`` (all rules apply), ``(name, tensor)`` pairs such as
            ``model.named_parameters()`` (name and shape rules), or tensors (shape rule only).
        policy: the rules; ``None`` means :class:`DecayPolicy()` for a module or named pairs and
            :meth:`DecayPolicy.decay_all` for bare tensors ("these tensors, all decayed").
        include_frozen: also list a module's frozen parameters (multiplier 0, reason "frozen").
        owner: the name used in error messages.

    Returns:
        One :class:`PlanEntry` ``(name, param, multiplier, reason)`` per tensor, in the order of
        ``named_parameters()`` (shared tensors once); ``multiplier == 0`` means not decayed.
    """
    if policy is not None and not isinstance(policy, DecayPolicy):
        raise parameter_error("policy", owner, "a DecayPolicy or None", policy)
    items, from_module, named = _items(model_or_params, owner)
    if policy is None:
        policy = DecayPolicy() if (from_module or named) else DecayPolicy.decay_all()
    declared = (
        _model_no_weight_decay(model_or_params)
        if (from_module and policy.use_model_no_weight_decay)
        else []
    )
    plan: list[PlanEntry] = []
    for name, param, module in items:
        if from_module and not param.requires_grad:
            if include_frozen:
                plan.append(PlanEntry(name, param, 0.0, "frozen (skipped)"))
            continue
        multiplier, reason = _classify(name, param, module, policy, declared)
        plan.append(PlanEntry(name, param, multiplier, reason))
    return plan


def param_groups(
    model: ModelOrParams,
    weight_decay: float,
    policy: DecayPolicy | None = None,
    *,
    with_names: bool = True,
) -> list[dict[str, Any]]:
    """Plain ``torch.optim`` parameter groups: ``{"params", "weight_decay", "param_names"}`` per λ value.

    Every trainable tensor goes to the group of its weight decay ``m·weight_decay`` (``m`` from
    :func:`decay_plan`); tensors with equal values share one group. Groups appear in the order of the
    first parameter of each, parameters in model order. Frozen parameters are left out.

    The groups carry the optimizer's own ``weight_decay``, so they are meant for an optimizer that
    decays by itself (``SGD``/``Adam``: coupled ``g ← g + λθ``; ``AdamW``: decoupled
    ``θ ← θ − γλθ``). With :func:`decaylab.attach` and a :class:`~decaylab.DecoupledDecay` step, build the
    optimizer with ``weight_decay=0`` instead and give the policy to ``attach``.

    ``"param_names"`` is the key ``torch.optim`` (≥ 2.6) keeps in ``state_dict()``; pass
    ``with_names=False`` if you will add parameter groups without names later (torch refuses a mix).

    Example::

        opt = torch.optim.AdamW(param_groups(model, weight_decay=0.1), lr=3e-4)
    """
    wd = check_float(weight_decay, "weight_decay", "param_groups", low=0.0)
    groups: dict[float, dict[str, Any]] = {}
    for entry in decay_plan(model, policy, owner="param_groups"):
        value = wd * entry.multiplier
        group = groups.get(value)
        if group is None:
            group = {"params": [], "weight_decay": value}
            if with_names:
                group["param_names"] = []
            groups[value] = group
        group["params"].append(entry.param)
        if with_names:
            group["param_names"].append(entry.name)
    return list(groups.values())


@dataclass(frozen=True)
class ExplainRow:
    """One row of :func:`explain`: a parameter, its shape and size, its multiplier and λ, and why."""

    name: str
    shape: tuple[int, ...]
    count: int
    multiplier: float
    weight_decay: float | None
    reason: str

    @property
    def decayed(self) -> bool:
        return self.multiplier > 0

    @property
    def frozen(self) -> bool:
        return self.reason.startswith("frozen")


def _fmt(x: float) -> str:
    return f"{x:g}"


class DecayTable(list[ExplainRow]):
    """The rows of :func:`explain`; ``str()`` is an aligned table with totals, ``rich`` renders it too."""

    def totals(self) -> dict[str, int]:
        """Tensor and element counts: decayed, not decayed (trainable) and frozen."""
        out = {"decayed_tensors": 0, "decayed_params": 0, "other_tensors": 0, "other_params": 0,
               "frozen_tensors": 0, "frozen_params": 0}
        for row in self:
            key = "frozen" if row.frozen else ("decayed" if row.decayed else "other")
            out[f"{key}_tensors"] += 1
            out[f"{key}_params"] += row.count
        return out

    def _cells(self) -> tuple[list[str], list[list[str]]]:
        with_wd = any(row.weight_decay is not None for row in self)
        header = ["parameter", "shape", "count", "mult"] + (["λ"] if with_wd else []) + ["reason"]
        body = []
        for row in self:
            cells = [row.name or "<tensor>", "×".join(map(str, row.shape)) or "scalar", f"{row.count:,}",
                     "-" if row.frozen else _fmt(row.multiplier)]
            if with_wd:
                cells.append("-" if row.frozen or row.weight_decay is None else _fmt(row.weight_decay))
            cells.append(row.reason)
            body.append(cells)
        return header, body

    def summary(self) -> str:
        """nanoGPT's two lines: decayed and non-decayed tensors with their parameter counts."""
        t = self.totals()
        total = t["decayed_params"] + t["other_params"]
        share = 100.0 * t["decayed_params"] / total if total else 0.0
        lines = [
            f"decayed: {t['decayed_tensors']} tensors, {t['decayed_params']:,} parameters ({share:.1f}%)",
            f"not decayed: {t['other_tensors']} tensors, {t['other_params']:,} parameters",
        ]
        if t["frozen_tensors"]:
            lines.append(f"frozen (skipped): {t['frozen_tensors']} tensors, {t['frozen_params']:,} parameters")
        return "\n".join(lines)

    def __str__(self) -> str:
        header, body = self._cells()
        right = {2, 3, 4} if len(header) == 6 else {2, 3}
        widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]

        def line(cells: list[str]) -> str:
            parts = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))]
            return "  ".join(parts).rstrip()

        rule = "-" * len(line(["-" * w for w in widths]))
        return "\n".join([line(header), rule, *(line(r) for r in body), rule, self.summary()])

    def __rich__(self) -> Any:
        from rich.table import Table

        header, body = self._cells()
        table = Table(caption=self.summary(), caption_justify="left")
        for i, title in enumerate(header):
            table.add_column(title, justify="right" if title in ("count", "mult", "λ") else "left",
                             no_wrap=i < 2)
        for row, cells in zip(self, body):
            table.add_row(*cells, style=None if row.decayed else "dim")
        return table


def explain(
    model: ModelOrParams,
    policy: DecayPolicy | None = None,
    weight_decay: float | None = None,
) -> DecayTable:
    """Show which parameters decay: one row per tensor (name, shape, count, multiplier, λ, reason).

    ``print(explain(model))`` prints an aligned table and nanoGPT's totals; in a ``rich`` console the
    table renders as a rich table. With ``weight_decay`` the λ column shows ``m·weight_decay``.
    Frozen parameters are listed (and counted) but marked as skipped.
    """
    wd = None if weight_decay is None else check_float(weight_decay, "weight_decay", "explain", low=0.0)
    table = DecayTable()
    for entry in decay_plan(model, policy, include_frozen=True, owner="explain"):
        table.append(
            ExplainRow(
                name=entry.name,
                shape=tuple(entry.param.shape),
                count=entry.param.numel(),
                multiplier=entry.multiplier,
                weight_decay=None if wd is None else wd * entry.multiplier,
                reason=entry.reason,
            )
        )
    return table
