"""Which parameters decay: one policy, asked by every other piece of decaylab.

The rule in one sentence: *every trainable tensor with two or more dimensions decays, except those of
normalization layers and those the model or the user excludes by name; biases and 1-D tensors do not.*

:class:`DecayPolicy` holds the rules, :func:`decay_plan` applies them to a model (or to tensors) and
returns one ``(name, param, multiplier, reason, aliases)`` entry per tensor; a multiplier of 0 means "not
decayed", any other value multiplies λ. :func:`param_groups` turns the plan into plain ``torch.optim``
parameter groups, :func:`explain_model` into a table a person can read. The penalties
(:mod:`decaylab.penalties`) and the optimizer steps (:mod:`decaylab.steps`) ask :func:`decay_plan` too,
so a bias the policy excludes receives no decay from any of them.

Rules, the first that matches decides (``name`` is the dotted name from ``model.named_parameters()``,
taken relative to the wrappers below):

1. frozen (``requires_grad=False``, parameters of a module only): skipped entirely;
2. ``exclude`` glob patterns: not decayed;
3. ``include`` glob patterns: decayed (they beat rules 4-8);
4. what the model declares (timm's and Mamba's conventions): the tensor attribute
   ``p._no_weight_decay = True``; ``no_weight_decay()`` of the model or any submodule (names relative to
   that submodule: exact names, glob patterns or module prefixes); ``no_weight_decay_keywords()`` of the
   model or any submodule (a keyword anywhere in the name relative to it, as timm's Swin): not decayed;
5. ``exclude_norm``: parameters of normalization layers (BatchNorm, LayerNorm, GroupNorm,
   InstanceNorm, RMSNorm, and any module whose class name ends in ``Norm`` or ``Norm1d/2d/3d``);
6. ``exclude_embeddings``: weights of ``nn.Embedding`` / ``nn.EmbeddingBag``;
7. ``exclude_bias``: biases in all the forms PyTorch names them: the last name component is ``bias``
   or has ``bias`` as one of its ``_``-separated words (``bias_ih_l0``, ``bias_hh_l0_reverse`` of
   ``nn.LSTM``, ``in_proj_bias``, ``bias_k``/``bias_v`` of ``nn.MultiheadAttention(add_bias_kv=True)``);
8. ``exclude_1d``: tensors with fewer than two dimensions;
9. otherwise decayed, with the multiplier of the first ``multipliers`` pattern that matches (else 1).

**Tied parameters** (one ``Parameter`` registered under several names, e.g. an LM head sharing the
embedding's weight) are decided once, whatever the registration order: a rule holds if it holds for
any of the names or owning modules (a pattern naming any alias applies, an embedding tied to a
``Linear`` head is an embedding). The entry carries every name in ``aliases``.

**Wrappers.** Names are relative to ``torch.compile`` (``_orig_mod.``), DDP / ``DataParallel`` and any
module whose only child is ``module`` and which has no parameter of its own (``module.``), and FSDP /
activation checkpointing (``_fsdp_wrapped_module.``, ``_checkpoint_wrapped_module.``, anywhere in the
name). Patterns may use the relative or the full name.

**One default for every input.** ``policy=None`` is :class:`DecayPolicy()` for a module, for
``(name, tensor)`` pairs and for bare tensors alike. Without a module, rules 5, 6 and the
``no_weight_decay*()`` methods cannot be decided: the default's shape rule still excludes every norm
weight and bias (they are 1-D), and a policy that needs them (``exclude_embeddings=True``, or
``exclude_norm=True`` with ``exclude_1d=False``) raises. Bare tensors have no names either: a policy
with patterns, or ``exclude_bias=True`` with ``exclude_1d=False``, raises for them. Pass
:meth:`DecayPolicy.decay_all` to decay every tensor given.

Errors: a pattern of ``include``, ``exclude`` or ``multipliers`` that matches no parameter name raises
:class:`~decaylab.InvalidParameterError` naming it (a typo must not silently decay or spare anything).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple, cast

import torch
from torch import nn

from decaylab.validation import check_float, parameter_error

__all__ = [
    "DecayPolicy",
    "DecayTable",
    "ExplainRow",
    "PlanEntry",
    "decay_plan",
    "explain_model",
    "is_bias_name",
    "param_groups",
    "unwrap",
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
# name components that wrappers insert anywhere in a name (torch.compile, FSDP, activation checkpointing)
_WRAPPER_PARTS = re.compile(r"(?:^|(?<=\.))(?:_orig_mod|_fsdp_wrapped_module|_checkpoint_wrapped_module)\.")
_ROOT_WRAPPER_CHILDREN = ("_orig_mod", "module")


def _is_norm(module: nn.Module | None) -> bool:
    return module is not None and (
        isinstance(module, _NORM_TYPES) or bool(_NORM_NAME.search(type(module).__name__))
    )


def is_bias_name(name: str) -> bool:
    """Whether a parameter name is a bias: its last component is ``bias`` or has ``bias`` as a ``_`` word.

    ``fc.bias``, ``bias_ih_l0``, ``bias_hh_l0_reverse``, ``in_proj_bias``, ``bias_k`` are biases;
    ``fc.weight`` and ``biased_proj`` (a word containing "bias") are not.
    """
    last = name.rsplit(".", 1)[-1]
    return "bias" in last.split("_")


def unwrap(model: nn.Module) -> tuple[nn.Module, str]:
    """The module inside ``torch.compile`` / DDP-like wrappers, and the name prefix they add.

    A wrapper is a module with no parameter of its own whose only child is ``_orig_mod``
    (``torch.compile``'s ``OptimizedModule``) or ``module`` (``DistributedDataParallel``,
    ``DataParallel``, and hand-made wrappers of that shape). Wrappers nest.
    """
    prefix = ""
    while True:
        children = list(model.named_children())
        if (
            len(children) == 1
            and children[0][0] in _ROOT_WRAPPER_CHILDREN
            and next(model.named_parameters(recurse=False), None) is None
        ):
            prefix += children[0][0] + "."
            model = children[0][1]
        else:
            return model, prefix


def _relative(name: str, prefix: str) -> str:
    if prefix and name.startswith(prefix):
        name = name[len(prefix):]
    return _WRAPPER_PARTS.sub("", name)


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
        exclude_bias: biases (see :func:`is_bias_name`) are not decayed.
        exclude_norm: parameters of normalization layers are not decayed.
        exclude_embeddings: weights of ``nn.Embedding`` / ``nn.EmbeddingBag`` are not decayed.
        include: glob patterns (``fnmatch``, on the dotted name) of parameters that always decay.
        exclude: glob patterns of parameters that never decay (beats ``include``).
        multipliers: ``{pattern: m}``; a decayed parameter gets the ``m`` of the first pattern that
            matches its name (else 1). ``m = 0`` excludes it.
        use_model_no_weight_decay: honour what the model declares: ``no_weight_decay()``,
            ``no_weight_decay_keywords()`` (of the model and its submodules) and ``p._no_weight_decay``.

    Every pattern must match at least one parameter name when the policy is applied, or
    :func:`decay_plan` raises :class:`~decaylab.InvalidParameterError` naming it.

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

    def _pairs(self) -> tuple[tuple[str, float], ...]:
        """``multipliers`` as the ``(pattern, m)`` pairs ``__post_init__`` made of it."""
        return cast(tuple[tuple[str, float], ...], self.multipliers)

    def _pattern_sets(self) -> list[tuple[str, tuple[str, ...]]]:
        return [("exclude", cast(tuple[str, ...], self.exclude)), ("include", cast(tuple[str, ...], self.include)),
                ("multipliers", tuple(p for p, _ in self._pairs()))]


class PlanEntry(NamedTuple):
    """One tensor of a decay plan: its name (``""`` if unknown), the tensor, λ's multiplier, why, its other names."""

    name: str
    param: torch.Tensor
    multiplier: float
    reason: str
    aliases: tuple[str, ...] = ()

    @property
    def decayed(self) -> bool:
        return self.multiplier > 0


@dataclass
class _Item:
    """A tensor to classify: its names (relative, first = primary), full names, owning modules."""

    names: list[str]
    full: list[str]
    param: torch.Tensor
    owners: list[nn.Module]


def _first_match(names: Iterable[str], patterns: Iterable[str]) -> str | None:
    names = list(names)
    for pattern in patterns:
        if any(fnmatch.fnmatchcase(n, pattern) for n in names):
            return pattern
    return None


@dataclass
class _Declared:
    """What a model declares: ``(prefix, entry)`` of ``no_weight_decay()`` and of ``*_keywords()``."""

    names: list[tuple[str, str]] = field(default_factory=list)
    keywords: list[tuple[str, str]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.names or self.keywords)


def _declared(model: nn.Module, root_prefix: str) -> _Declared:
    out = _Declared()
    for prefix, module in model.named_modules():
        prefix = _relative(prefix + "." if prefix else "", root_prefix).rstrip(".")
        for method_name, sink in (("no_weight_decay", out.names), ("no_weight_decay_keywords", out.keywords)):
            method = getattr(module, method_name, None)
            if not callable(method):
                continue
            for entry in method():
                if not isinstance(entry, str):
                    raise parameter_error(method_name, type(module).__name__, "a method returning parameter names", entry)
                sink.append((prefix, entry))
    return out


def _model_declares(names: list[str], declared: _Declared) -> str | None:
    for prefix, entry in declared.names:
        full = f"{prefix}.{entry}" if prefix else entry
        for name in names:
            if name == full or name.startswith(full + ".") or fnmatch.fnmatchcase(name, full):
                return f"no_weight_decay() lists {full!r}"
    for prefix, keyword in declared.keywords:
        for name in names:
            if prefix and not name.startswith(prefix + "."):
                continue
            rest = name[len(prefix) + 1:] if prefix else name
            if keyword in rest:
                where = f" of {prefix!r}" if prefix else ""
                return f"no_weight_decay_keywords(){where} lists {keyword!r}"
    return None


def _classify(item: _Item, policy: DecayPolicy, declared: _Declared) -> tuple[float, str]:
    """The multiplier and the reason for one tensor under ``policy`` (rules 2-9 of the module docstring)."""
    names = [n for n in (*item.names, *item.full) if n]
    param = item.param
    pattern = _first_match(names, policy.exclude)
    if pattern is not None:
        return 0.0, f"excluded by pattern {pattern!r}"
    pattern = _first_match(names, policy.include)
    if pattern is not None:
        base = f"included by pattern {pattern!r}"
    else:
        if policy.use_model_no_weight_decay:
            if getattr(param, "_no_weight_decay", False):
                return 0.0, "marked _no_weight_decay"
            hit = _model_declares(item.names, declared) if declared else None
            if hit is not None:
                return 0.0, hit
        if policy.exclude_norm:
            norm = next((m for m in item.owners if _is_norm(m)), None)
            if norm is not None:
                return 0.0, f"norm layer ({type(norm).__name__})"
        if policy.exclude_embeddings:
            emb = next((m for m in item.owners if isinstance(m, _EMBEDDING_TYPES)), None)
            if emb is not None:
                return 0.0, f"embedding ({type(emb).__name__})"
        if policy.exclude_bias and any(is_bias_name(n) for n in item.names if n):
            return 0.0, "bias"
        if policy.exclude_1d and param.dim() < 2:
            return 0.0, f"{param.dim()}-D tensor"
        base = "decayed"
    pattern = _first_match(names, (p for p, _ in policy._pairs()))
    if pattern is None:
        return 1.0, base
    multiplier = dict(policy._pairs())[pattern]
    if multiplier == 0:
        return 0.0, f"multiplier 0 (pattern {pattern!r})"
    return multiplier, f"{base}, ×{multiplier:g} (pattern {pattern!r})"


def _module_items(model: nn.Module) -> tuple[list[_Item], str]:
    _, prefix = unwrap(model)
    owners: dict[int, list[nn.Module]] = {}
    for _, module in model.named_modules(remove_duplicate=False):
        for _, p in module.named_parameters(recurse=False):
            bucket = owners.setdefault(id(p), [])
            if not any(m is module for m in bucket):
                bucket.append(module)
    items: dict[int, _Item] = {}
    for full, p in model.named_parameters(remove_duplicate=False):
        item = items.get(id(p))
        if item is None:
            items[id(p)] = _Item([_relative(full, prefix)], [full], p, owners.get(id(p), []))
        else:
            item.names.append(_relative(full, prefix))
            item.full.append(full)
    return list(items.values()), prefix


def _items(model_or_params: Any, owner: str) -> tuple[list[_Item], bool, bool, str]:
    """``(items, from_module, named, wrapper prefix)`` for any accepted input."""
    allowed = "an nn.Module, a tensor, or an iterable of tensors or (name, tensor) pairs"
    if isinstance(model_or_params, nn.Module):
        items, prefix = _module_items(model_or_params)
        return items, True, True, prefix
    if isinstance(model_or_params, torch.Tensor):
        return [_Item([""], [""], model_or_params, [])], False, False, ""
    if isinstance(model_or_params, str | bytes | Mapping) or not isinstance(model_or_params, Iterable):
        raise parameter_error("model_or_params", owner, allowed, model_or_params)
    by_id: dict[int, _Item] = {}
    named = False
    for item in model_or_params:
        if isinstance(item, torch.Tensor):
            name, tensor = "", item
        elif isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str) and isinstance(item[1], torch.Tensor):
            name, tensor = item
            named = True
        else:
            raise parameter_error("model_or_params", owner, allowed, item)
        found = by_id.get(id(tensor))
        if found is None:
            by_id[id(tensor)] = _Item([name], [name], tensor, [])
        elif name and name not in found.full:
            found.names.append(name)
            found.full.append(name)
    items = list(by_id.values())
    prefix = ""
    full_names = [n for it in items for n in it.full if n]
    if full_names and all(n.startswith("module.") for n in full_names):  # DDP's names
        prefix = "module."
    for it in items:
        it.names = [_relative(n, prefix) for n in it.full]
    return items, False, named, prefix


def _check_decidable(policy: DecayPolicy, from_module: bool, named: bool, owner: str) -> None:
    """Raise for a rule the input cannot decide (no modules, or no names)."""
    if from_module:
        return
    what = "(name, tensor) pairs" if named else "bare tensors"
    if policy.exclude_embeddings:
        raise parameter_error("policy", owner, f"a policy without exclude_embeddings=True for {what} (which "
                              "tensors are embeddings needs the model: pass the module)", policy)
    if policy.exclude_norm and not policy.exclude_1d:
        raise parameter_error("policy", owner, f"a policy with exclude_1d=True or exclude_norm=False for {what} "
                              "(which tensors belong to norm layers needs the model: pass the module)", policy)
    if not named:
        if any(patterns for _, patterns in policy._pattern_sets()):
            raise parameter_error("policy", owner, "a policy without patterns for bare tensors (patterns need "
                                  "names: pass the module or (name, tensor) pairs)", policy)
        if policy.exclude_bias and not policy.exclude_1d:
            raise parameter_error("policy", owner, "a policy with exclude_1d=True or exclude_bias=False for bare "
                                  "tensors (which tensors are biases needs names: pass the module or "
                                  "(name, tensor) pairs)", policy)


def _check_patterns(items: list[_Item], policy: DecayPolicy, owner: str) -> None:
    names = [n for it in items for n in (*it.names, *it.full) if n]
    for field_name, patterns in policy._pattern_sets():
        for pattern in patterns:
            if not any(fnmatch.fnmatchcase(n, pattern) for n in names):
                shown = ", ".join(repr(n) for n in list(dict.fromkeys(it.names[0] for it in items))[:4])
                raise parameter_error(
                    field_name, owner,
                    f"glob patterns that each match a parameter name (the names look like {shown}, ...)",
                    pattern,
                )


def decay_plan(
    model_or_params: ModelOrParams,
    policy: DecayPolicy | None = None,
    *,
    include_frozen: bool = False,
    owner: str = "decay_plan",
    classify_frozen: bool = False,
    check_patterns: bool = True,
) -> list[PlanEntry]:
    """Apply ``policy`` to every tensor: THE mechanism behind penalties, decay steps and parameter groups.

    Args:
        model_or_params: an ``nn.Module`` (all rules apply), ``(name, tensor)`` pairs such as
            ``model.named_parameters()`` (name and shape rules), or tensors (shape rule only).
        policy: the rules; ``None`` means :class:`DecayPolicy()` for every kind of input.
        include_frozen: also list a module's frozen parameters (multiplier 0, reason "frozen").
        owner: the name used in error messages.
        classify_frozen: give a module's frozen parameters the multiplier they would have if trainable
            (what the attached steps use, since they decide at each step from ``p.grad``).
        check_patterns: raise for a pattern that matches no name (off only for a part of a model).

    Returns:
        One :class:`PlanEntry` ``(name, param, multiplier, reason, aliases)`` per tensor, in the order of
        ``named_parameters()`` (a tied tensor once, under its first name; ``aliases`` holds the others);
        ``multiplier == 0`` means not decayed.

    Raises:
        InvalidParameterError: bad input; a pattern that matches no parameter; a rule that cannot be
            decided for this kind of input (see the module docstring).
    """
    if policy is not None and not isinstance(policy, DecayPolicy):
        raise parameter_error("policy", owner, "a DecayPolicy or None", policy)
    items, from_module, named, prefix = _items(model_or_params, owner)
    if policy is None:
        policy = DecayPolicy()
    _check_decidable(policy, from_module, named, owner)
    if check_patterns:
        _check_patterns(items, policy, owner)
    declared = (
        _declared(model_or_params, prefix)
        if (isinstance(model_or_params, nn.Module) and policy.use_model_no_weight_decay)  # = from_module
        else _Declared()
    )
    plan: list[PlanEntry] = []
    for item in items:
        aliases = tuple(item.names[1:])
        if from_module and not item.param.requires_grad and not classify_frozen:
            if include_frozen:
                plan.append(PlanEntry(item.names[0], item.param, 0.0, "frozen (skipped)", aliases))
            continue
        multiplier, reason = _classify(item, policy, declared)
        if aliases:
            reason += f"; tied with {', '.join(repr(a) for a in aliases)}"
        plan.append(PlanEntry(item.names[0], item.param, multiplier, reason, aliases))
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
    """One row of :func:`decaylab.explain`: a parameter, its shape and size, its multiplier and λ, and why."""

    name: str
    shape: tuple[int, ...]
    count: int
    multiplier: float
    weight_decay: float | None
    reason: str
    aliases: tuple[str, ...] = ()

    @property
    def decayed(self) -> bool:
        return self.multiplier > 0

    @property
    def frozen(self) -> bool:
        return self.reason.startswith("frozen")


def _fmt(x: float) -> str:
    return f"{x:g}"


class DecayTable(list[ExplainRow]):
    """The rows of :func:`decaylab.explain`; ``str()`` is an aligned table with totals, ``rich`` renders it too."""

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
            name = " = ".join([row.name or "<tensor>", *row.aliases])  # a tied tensor: every name
            cells = [name, "×".join(map(str, row.shape)) or "scalar", f"{row.count:,}",
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
            parts = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))]
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
        for row, cells in zip(self, body, strict=True):
            table.add_row(*cells, style=None if row.decayed else "dim")
        return table


def explain_model(
    model: ModelOrParams,
    policy: DecayPolicy | None = None,
    weight_decay: float | None = None,
) -> DecayTable:
    """Which parameters of ``model`` decay under ``policy``: one row per tensor (name, shape, count,
    multiplier, λ, reason) — :func:`decaylab.explain` of a model.

    With ``weight_decay`` the λ column shows ``m·weight_decay``. Frozen parameters are listed (and
    counted) but marked as skipped. A tied tensor is one row that shows every name
    (``wte.weight = lm_head.weight``).
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
                aliases=entry.aliases,
            )
        )
    return table
