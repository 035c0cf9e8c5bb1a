r"""Sweeps over any ``nn.Module``: K configurations of one model trained together with ``torch.func``.

A :class:`ModuleTask` holds what every configuration shares — a model factory ``seed -> nn.Module``,
the training and validation data, the loss, optional metrics, the optimizer, the batch size, the
epochs and the decay policy; a :class:`~decaylab.engine.task.Hyper` holds what varies: ``seed``,
``lr``, coupled ``l2`` (``torch.optim``'s ``weight_decay`` of SGD/Adam), ``decoupled`` (AdamW's) and
``l1`` (a proximal step). Two engines train them and agree:

* ``"sequential"`` (:func:`train_module_sequential`): each configuration alone, as one writes it by hand —
  ``torch.optim.SGD`` / ``Adam`` / ``AdamW`` (fused CPU update) over :func:`decaylab.param_groups`, decoupled decay and the
  L1 step through :func:`decaylab.attach`;
* ``"batched"`` (:func:`train_module_batched`): parameters and buffers of the K copies stacked along a
  leading configuration axis (``torch.func.stack_module_state``), one forward pass of the K copies, one
  ``backward()`` of the sum of the K mean losses (they are independent, so the gradient w.r.t. ``θ_k`` is
  configuration k's own; for a loss that is a mean over the rows, :func:`is_row_mean`, that sum is K times the
  loss of all K·B rows, one call; for any other, ``vmap`` of the loss), and the update of
  :mod:`decaylab.engine.updates`, shared with the MLP engine.
  The forward pass is the *stacked native forward* of :mod:`decaylab.engine.stacked` when it knows every
  layer and operation of the model (convolutions as one grouped convolution, Linear as ``baddbmm``,
  BatchNorm over ``K·C`` channels, attention as batched products with a hand-written backward, …) and a
  check run on two rows agrees with the model itself; otherwise ``vmap(functional_call(model, (θ_k,
  buffers_k), x))`` for the whole model (``ModuleStack.fallback`` says why). A stack of one runs the model
  itself. A stack evaluates on the stack, or one configuration at a time with the model itself where the model's
  own kernels are known to be faster (:meth:`ModuleStack._evaluates_each`).

**Semantics** (both engines). ``model = factory(seed)`` is called with PyTorch's global generator
seeded from the seed's ``init`` stream (:mod:`decaylab.rng`) inside ``torch.random.fork_rng``, so a
factory that just builds modules gets per-seed initial weights. Each epoch the minibatches are
``randperm(n_train, generator=order)`` cut into ``batch_size`` slices (the seed's ``order`` stream; the
last may be smaller). Each step: ``g = ∇ loss(model(x), y)`` in training mode, then the update of
:mod:`decaylab.engine.updates` — coupled ``g ← g + m·l2·θ``, decoupled ``θ ← θ(1 − lr·m·decoupled)``
(the coupled term sees θ before this decay), the optimizer, the L1 step ``θ ← sign θ·max(|θ| − lr·m·l1, 0)``;
``m`` is the tensor's multiplier under the policy (:func:`decaylab.policy.decay_plan`; default: weights
decay, biases / 1-D tensors / norm layers do not). After every epoch, in evaluation mode, on the whole
training and validation sets (in blocks of ``eval_batch_size`` rows, block means weighted by their rows):
``train_loss``, ``val_loss``, each metric as ``train_NAME`` / ``val_NAME``, and ``w_norm``, the L2 norm of
all decayed tensors together. Loss and metrics must be *means over the rows* of a batch (as
``nn.CrossEntropyLoss()``), which is what makes block averaging exact up to rounding.

**BatchNorm** and other buffers: each configuration has its own copy of every buffer, stacked like the
parameters; BatchNorm's in-place running-statistics update (``running_mean``, ``running_var``,
``num_batches_tracked``) writes into the configuration's own row of the stack (under ``vmap``, or through
the stacked forward's views of the stack). ``momentum=None`` (the cumulative average) runs only on the
stacked forward: under ``vmap`` ``nn.BatchNorm`` calls ``.item()`` and the model is refused.

**Dropout** (``nn.Dropout`` and :class:`decaylab.Dropout`, elementwise): in training mode each dropout
call multiplies by ``1[u ≥ p]/(1 − p)`` with ``u ~ U[0, 1)`` drawn by
``torch.rand(x.shape, generator=dropout, dtype=x.dtype)`` from the seed's ``dropout`` stream, one draw
per call in the order of the forward pass (``p = 0``: the identity, no draw; ``p = 1``: zeros). The
batched engine draws the same uniforms outside the forward (``vmap`` or stacked) — once per distinct seed and step, with the
shapes of the calls recorded by a forward pass of one copy — and feeds them in; so a configuration's
masks depend only on its seed, never on the chunk, the backend or the other configurations
(configurations that share a seed share masks). Other random layers (``Dropout2d``, ``AlphaDropout``,
``F.dropout`` inside ``forward``, ``torch.rand``) cannot be batched: the batched engine refuses them
and names ``--engine sequential``, where they draw from PyTorch's global generator, seeded per
configuration from the ``dropout`` stream (reproducible per seed).

**Divergence.** At an evaluation a configuration whose training or validation loss or parameters are
not finite is marked diverged and frozen (:meth:`~decaylab.engine.updates.StackedUpdate.freeze_`);
the others' arithmetic does not change.

**Exactness.** Without random layers each configuration's curves equal those of the configuration
trained alone with ``torch.optim`` + ``decaylab.param_groups`` to float32 rounding (tested: 1e-5
relative on the losses' scale), at any chunk size; with dropout, the batched engine equals the
sequential one to the same tolerance. Except where Adam amplifies rounding: a gradient that is only rounding noise
(the bias of a Linear before BatchNorm: its true gradient is 0) becomes steps of the learning rate's size, and any two
roundings drift apart by ~1e-3–1e-2 — the stacked products against the model's own, ``torch.optim``'s fused Adam against
its for-loop implementation (which the sequential engine runs: :func:`_fused`).
"""

from __future__ import annotations

import copy
import functools
import hashlib
import itertools
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from decaylab.engine.semantics import epoch_batches, make_outcome
from decaylab.engine.stacked import StackedForward, Unsupported, build_stacked
from decaylab.engine.stream_dropout import Draws, with_stream_dropout
from decaylab.engine.task import Hyper
from decaylab.engine.updates import Coefficients, OptimizerSettings, StackedUpdate
from decaylab.results import Outcome
from decaylab.rng import generator, stream_seed
from decaylab.validation import (
    InvalidParameterError,
    check_choice,
    check_float,
    check_int,
    one_line,
    parameter_error,
)

__all__ = [
    "MODULE_ENGINES",
    "MODULE_OPTIMIZERS",
    "ModuleTask",
    "build_model",
    "check_module_task",
    "module_signature",
    "tensor_digest",
    "plan_and_start",
    "plan_module_chunks",
    "train_module",
    "train_module_batched",
    "train_module_sequential",
]

MODULE_OPTIMIZERS = ("sgd", "adam", "adamw")
MODULE_ENGINES = ("batched", "sequential")
OWNER = "sweep"
SEQUENTIAL_HINT = "; --engine sequential (engine='sequential') trains it one configuration at a time"
_RANDOM_TYPES: tuple[type, ...] = (nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)

Progress = Callable[[int], None]


def _pair(data: Any, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(inputs, targets)`` from a pair of tensors or a ``TensorDataset`` of two tensors."""
    tensors = getattr(data, "tensors", data)
    allowed = "a pair (inputs, targets) of tensors with the same number of rows, or a TensorDataset of two"
    if not isinstance(tensors, (tuple, list)) or len(tensors) != 2 or not all(isinstance(t, torch.Tensor) for t in tensors):
        raise parameter_error(name, OWNER, allowed, type(data).__name__)
    X, y = tensors
    if X.ndim == 0 or y.ndim == 0 or X.shape[0] != y.shape[0] or X.shape[0] == 0:
        raise parameter_error(name, OWNER, allowed, f"inputs {tuple(X.shape)}, targets {tuple(y.shape)}")
    for what, t in (("inputs", X), ("targets", y)):
        if t.is_floating_point() or t.is_complex():
            bad = ~torch.isfinite(t).reshape(t.shape[0], -1).all(dim=1)
            if bool(bad.any()):  # every configuration would diverge at its first evaluation
                row = int(bad.nonzero()[0])
                raise parameter_error(name, OWNER, "finite numbers (no NaN or inf)", f"{what} of row {row}: {t[row].flatten()[:4].tolist()}…")
    return X, y


@dataclass(frozen=True)
class ModuleTask:
    """What every configuration of a module sweep shares (see the module docstring).

    ``model``: ``seed -> nn.Module`` (the same architecture for every seed); ``train`` and ``val``:
    ``(inputs, targets)`` or a ``TensorDataset`` (``val`` may be ``None``: no validation curves);
    ``loss(output, targets)`` and each ``metrics[name](output, targets)``: a scalar mean over the rows.
    ``optimizer``: ``'sgd'`` (with ``momentum``, ``nesterov``), ``'adam'`` or ``'adamw'`` (= Adam whose
    decoupled decay is ``torch.optim.AdamW``'s own; takes no coupled ``l2``). ``policy``: which tensors
    decay (:class:`decaylab.DecayPolicy`, ``None``: its defaults). ``batch_size=None``: full batch.
    """

    model: Callable[[int], nn.Module]
    train: Any
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    val: Any = None
    metrics: Mapping[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = field(default_factory=dict)
    optimizer: str = "sgd"
    momentum: float = 0.0
    nesterov: bool = False
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    batch_size: int | None = None
    epochs: int = 10
    policy: Any = None
    eval_batch_size: int = 1024

    def __post_init__(self) -> None:
        if not callable(self.model):
            raise parameter_error("model", OWNER, "a function seed -> torch.nn.Module", self.model)
        if not callable(self.loss):
            raise parameter_error("loss", OWNER, "a function (output, targets) -> scalar tensor", self.loss)
        object.__setattr__(self, "train", _pair(self.train, "train"))
        if self.val is not None:
            object.__setattr__(self, "val", _pair(self.val, "val"))
        if not isinstance(self.metrics, Mapping) or not all(isinstance(k, str) and callable(f) for k, f in self.metrics.items()):
            raise parameter_error("metrics", OWNER, "a dict name -> function (output, targets) -> scalar tensor", self.metrics)
        taken = [k for k in self.metrics if k in ("loss", "w_norm")]
        if taken:  # its curves would be train_loss and val_loss, over the loss's own
            raise parameter_error("metrics", OWNER, "names other than 'loss' and 'w_norm' (the curves decaylab keeps itself)", taken[0])
        check_choice(self.optimizer, "optimizer", OWNER, MODULE_OPTIMIZERS)
        object.__setattr__(self, "momentum", check_float(self.momentum, "momentum", OWNER, low=0, high=1, high_open=True))
        if self.momentum and self.optimizer != "sgd":
            raise parameter_error("momentum", OWNER, "0 unless optimizer='sgd' (Adam's moments are its betas)", self.momentum)
        if not isinstance(self.nesterov, bool) or (self.nesterov and not self.momentum):
            raise parameter_error("nesterov", OWNER, "False unless optimizer='sgd' with momentum > 0", self.nesterov)
        betas = tuple(self.betas) if isinstance(self.betas, (tuple, list)) else ()
        if len(betas) != 2:
            raise parameter_error("betas", OWNER, "a pair of floats in [0, 1)", self.betas)
        object.__setattr__(self, "betas", tuple(check_float(b, "betas", OWNER, low=0, high=1, high_open=True) for b in betas))
        object.__setattr__(self, "eps", check_float(self.eps, "eps", OWNER, low=0, low_open=True))
        if self.batch_size is not None:
            object.__setattr__(self, "batch_size", check_int(self.batch_size, "batch_size", OWNER, low=1, high=self.n_train))
        object.__setattr__(self, "epochs", check_int(self.epochs, "epochs", OWNER, low=1))
        object.__setattr__(self, "eval_batch_size", check_int(self.eval_batch_size, "eval_batch_size", OWNER, low=1))
        from decaylab.policy import DecayPolicy

        if self.policy is not None and not isinstance(self.policy, DecayPolicy):
            raise parameter_error("policy", OWNER, "a decaylab.DecayPolicy or None", self.policy)

    @property
    def n_train(self) -> int:
        return int(self.train[0].shape[0])

    @property
    def eval_epochs(self) -> tuple[int, ...]:
        """Metrics are measured after every epoch."""
        return tuple(range(1, self.epochs + 1))

    @property
    def metric_names(self) -> tuple[str, ...]:
        """The curves of every outcome, besides ``epoch``, in this order."""
        names = ["train_loss"] + (["val_loss"] if self.val is not None else [])
        for split in ("train", "val") if self.val is not None else ("train",):
            names += [f"{split}_{name}" for name in self.metrics]
        return tuple(names) + ("w_norm",)

    @property
    def settings(self) -> OptimizerSettings:
        name = "sgd" if self.optimizer == "sgd" else "adam"
        return OptimizerSettings(name, self.momentum, self.nesterov, self.betas, self.eps)


def check_module_hypers(task: ModuleTask, hypers: Sequence[Hyper]) -> list[Hyper]:
    """Every configuration must be a :class:`Hyper` without the MLP-only fields; ``'adamw'`` takes no coupled l2."""
    hypers = list(hypers)
    for h in hypers:
        if not isinstance(h, Hyper):
            raise parameter_error("hypers", OWNER, "a sequence of Hyper", h)
        if h.dropout or h.noise or h.radius is not None:
            raise parameter_error("hypers", OWNER, "Hyper(seed, lr, l2, decoupled, l1) without dropout, noise or radius", h)
        if task.optimizer == "adamw" and h.l2:
            raise parameter_error(
                "lambd", OWNER, "0 with optimizer 'adamw' (AdamW has no coupled L2; use 'adam' with coupled λ)", h.l2
            )
    return hypers


# ----------------------------------------------------------------------------- models
def build_model(task: ModuleTask, seed: int) -> nn.Module:
    """``task.model(seed)`` with the global generator seeded from ``seed``'s ``init`` stream; checked to be a module."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(stream_seed(seed, "init"))
        try:
            model = task.model(seed)
        except Exception as exc:  # noqa: BLE001 - any error of user code becomes one line
            raise parameter_error("model", OWNER, "a function seed -> torch.nn.Module that runs without error",
                                  f"for seed {seed}: {one_line(exc)}") from None
    if not isinstance(model, nn.Module):
        raise parameter_error("model", OWNER, "a function seed -> torch.nn.Module", f"{type(model).__name__} for seed {seed}")
    return model


def tensor_digest(t: torch.Tensor) -> str:
    """``"tensor (shape) dtype #digest"``: a tensor's shape, dtype and a digest of its values (only its shape and dtype
    where the values cannot be read as bytes: sparse, meta, …)."""
    try:
        data = t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes()
    except (RuntimeError, TypeError):
        return f"tensor {tuple(t.shape)} {t.dtype}"
    return f"tensor {tuple(t.shape)} {t.dtype} #{hashlib.blake2b(data, digest_size=8).hexdigest()}"


def _setting(value: Any) -> str:
    """A module attribute as the text that must match between seeds: numbers, strings and containers of them by
    value; a tensor (not a parameter or buffer: the stack keeps the first seed's) by shape, dtype and a digest of
    its values; a function by name; any other object by type (its text may hold its address)."""
    if isinstance(value, (bool, int, float, complex, str, bytes, type(None))):
        return repr(value)
    if isinstance(value, torch.Tensor):
        return tensor_digest(value)
    if isinstance(value, (tuple, list)):
        return type(value).__name__ + "(" + ", ".join(_setting(v) for v in value) + ")"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k!r}: {_setting(v)}" for k, v in value.items()) + "}"
    if callable(value):
        return f"function {getattr(value, '__qualname__', type(value).__name__)}"
    return f"object {type(value).__name__}"


def module_signature(model: nn.Module) -> list[tuple[str, str]]:
    """What must match between seeds: module types and settings (their public attributes other than ``training``:
    a ``LeakyReLU``'s slope, a ``Dropout``'s p, which the stack takes from the first seed's model), and parameter
    and buffer names, shapes and dtypes."""
    sig = []
    for n, m in model.named_modules():
        sig.append((f"module {n or '<root>'}", type(m).__name__))
        sig += [(f"setting {n or '<root>'}.{k}", _setting(v)) for k, v in sorted(vars(m).items())
                if not k.startswith("_") and k != "training"]
    sig += [(f"parameter {n}", f"{tuple(p.shape)} {p.dtype} requires_grad={p.requires_grad}") for n, p in model.named_parameters()]
    sig += [(f"buffer {n}", f"{tuple(b.shape)} {b.dtype}") for n, b in model.named_buffers()]
    return sig


def check_same_architecture(models: Mapping[int, nn.Module]) -> None:
    """Raise, naming the first difference, unless every seed's model has the same architecture."""
    seeds = sorted(models)
    first = module_signature(models[seeds[0]])
    for seed in seeds[1:]:
        other = module_signature(models[seed])
        if other == first:
            continue
        for a, b in zip(first + [("(nothing)", "")] * len(other), other + [("(nothing)", "")] * len(first), strict=True):
            if a != b:
                got = f"seed {seeds[0]}: {a[0]} {a[1]}, seed {seed}: {b[0]} {b[1]}".replace("  ", " ")
                raise parameter_error("model", OWNER, "a function that builds the same architecture for every seed", got)


def _unbatchable(model: nn.Module) -> str | None:
    """A layer the batched engine cannot train, with the reason, or None."""
    for name, module in model.named_modules():
        if isinstance(module, _RANDOM_TYPES):
            return f"layer {name!r} ({type(module).__name__}) draws random numbers the batched engine cannot give each configuration"
    return None


def _decay_multipliers(task: ModuleTask, model: nn.Module) -> dict[str, float]:
    from decaylab.policy import decay_plan

    return {e.name: e.multiplier for e in decay_plan(model, task.policy, owner=OWNER)}


def _batches(X: torch.Tensor, y: torch.Tensor, size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The rows of ``X``, ``y`` in blocks of at most ``size`` rows, as equal as they can be (the chunks of
    :func:`~decaylab.engine.chunking._balanced`): 1,200 rows at 1,024 are two blocks of 600, not 1,024 and 176 (a small
    block costs nearly what a large one does: the transformer block's evaluation of one configuration, 5.5 ms for
    1,200 rows at once, 5.7 ms as 1,024 + 176)."""
    from decaylab.engine.chunking import _balanced

    for block in _balanced(int(X.shape[0]), size):
        yield X[block.start : block.stop], y[block.start : block.stop]


def _scalar(value: Any, what: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor) or value.numel() != 1 or value.ndim != 0:
        shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise parameter_error(what, OWNER, "a function returning a scalar tensor (a mean over the rows)", f"a result of shape {shape}")
    return value


def check_module_task(
    task: ModuleTask, seeds: Sequence[int], engine: str = "batched", probe: bool = True
) -> dict[int, nn.Module]:
    """Build every seed's model and check the task on it; return the models.

    Raises :class:`~decaylab.validation.InvalidParameterError` (one line) for a factory that does not
    return a module, architectures that differ between seeds, data the model or the loss cannot take,
    a loss or metric that is not a scalar, and (``engine='batched'``) a layer the batched engine
    cannot batch, suggesting ``--engine sequential`` — known layers from the model's modules, any other
    by one training step and one evaluation of a stack of two on two rows (``probe=False``: not yet; the
    engine itself probes before it first stacks the model, and not at all when it trains one at a time).
    """
    models = {seed: build_model(task, seed) for seed in sorted(set(seeds))}
    if not models:
        return models
    # a factory that hands out one module (or its layers) again: the sequential engine would train each configuration
    # on from the last one's weights. The first seed's model is built twice for it.
    seen: set[int] = set()
    for model in [*models.values(), build_model(task, next(iter(models)))]:
        ids = {id(p) for p in model.parameters()}
        if ids & seen:
            raise parameter_error("model", OWNER, "a function that builds a new module at each call",
                                  "the same parameter tensors twice (a module built once, outside the function?)")
        seen |= ids
    check_same_architecture(models)
    model = copy.deepcopy(next(iter(models.values())))
    if not any(p.requires_grad for p in model.parameters()):
        raise parameter_error("model", OWNER, "a function returning a module with trainable parameters", "no trainable parameter")
    for split in ("train", "val"):
        data = getattr(task, split)
        if data is None:
            continue
        X, y = data[0][:2], data[1][:2]
        model.train(split == "train")
        try:
            with torch.random.fork_rng(devices=[]), torch.no_grad():
                out = model(X)
        except Exception as exc:  # noqa: BLE001 - any error of user code becomes one line
            raise parameter_error(split, OWNER, "inputs the model accepts", f"inputs of shape {tuple(data[0].shape)}: {one_line(exc)}") from None
        for what, fn in (("loss", task.loss), *((f"metrics[{n!r}]", f) for n, f in task.metrics.items())):
            try:
                value = fn(out, y)
            except Exception as exc:  # noqa: BLE001 - any error of user code becomes one line
                raise parameter_error(
                    split, OWNER, f"targets that {what} accepts with the model's output",
                    f"output {tuple(out.shape)}, targets {tuple(data[1].shape)}: {one_line(exc)}",
                ) from None
            _scalar(value, what)
    if engine == "batched":
        reason = _unbatchable(model)
        if reason is not None:
            raise parameter_error("model", OWNER, "a model the batched engine can train" + SEQUENTIAL_HINT, reason)
        if probe:
            _probe_batched(task, models)
    return models


def _probe_batched(task: ModuleTask, models: Mapping[int, nn.Module]) -> None:
    """One training step and one evaluation forward of a stack of two copies on two rows: a layer ``vmap``
    cannot batch fails here, before any training, as one line."""
    seed = next(iter(models))
    stack = ModuleStack(task, [Hyper(seed=seed, lr=1e-9)] * 2, {seed: models[seed]})
    stack.train_step([torch.arange(min(2, task.n_train))])
    _probe_evaluation(stack)


def _probe_evaluation(stack: ModuleStack) -> None:
    """One forward of ``stack`` in evaluation mode on two training rows (``vmap`` raises the one-line error for a
    layer it cannot batch; a stacked native forward was already checked in both modes)."""
    stack.base.eval()
    try:
        with torch.no_grad():
            stack._forward(stack.task.train[0][:2], None, [])
    finally:
        stack.base.train()


# ----------------------------------------------------------------------------- sequential reference
def _fused(task: ModuleTask, model: nn.Module) -> bool | None:
    """``True`` for SGD when every trainable tensor is a floating-point CPU tensor: ``torch.optim``'s fused CPU kernel
    then updates each tensor in one pass, equal to the default for-loop implementation within rounding (~5 % of a
    step of the 64-2048-2048-10 MLP, measured at 2 threads); else ``None``, PyTorch's default.

    Never for Adam and AdamW: their fused kernel rounds differently from the for-loop one, and Adam's normalization
    ``m/√v`` turns the difference into steps of the size of the learning rate wherever a gradient is only rounding
    noise — the bias of a Linear before BatchNorm, whose true gradient is 0: validation losses 1e-2 apart after three
    epochs, where the for-loop implementation and the batched engine agree bit for bit."""
    params = [p for p in model.parameters() if p.requires_grad]
    cpu = params and all(p.device.type == "cpu" and p.is_floating_point() for p in params)
    return True if task.optimizer == "sgd" and cpu else None


def _optimizer(task: ModuleTask, hyper: Hyper, model: nn.Module, both: bool) -> torch.optim.Optimizer:
    """``torch.optim`` (fused where :func:`_fused` says) over :func:`decaylab.param_groups`, decoupled decay and
    L1 through :func:`decaylab.attach`."""
    from decaylab.policy import param_groups
    from decaylab.steps import DecoupledDecay, L1Prox, Step, attach

    fused = _fused(task, model)
    if task.optimizer == "adamw":
        opt: torch.optim.Optimizer = torch.optim.AdamW(
            param_groups(model, hyper.decoupled, task.policy), lr=hyper.lr, betas=task.betas, eps=task.eps, fused=fused
        )
    else:
        groups = param_groups(model, 0.0 if both else hyper.l2, task.policy)
        if task.optimizer == "sgd":
            opt = torch.optim.SGD(groups, lr=hyper.lr, momentum=task.momentum, nesterov=task.nesterov, fused=fused)
        else:
            opt = torch.optim.Adam(groups, lr=hyper.lr, betas=task.betas, eps=task.eps, fused=fused)
    steps: list[Step] = []
    if hyper.decoupled and task.optimizer != "adamw":
        steps.append(DecoupledDecay(hyper.decoupled))
    if hyper.l1:
        steps.append(L1Prox(hyper.l1))
    if steps:
        attach(opt, *steps, model=model, policy=task.policy)
    return opt


def _block_means(
    data: tuple[torch.Tensor, torch.Tensor], rows: int, block_values: Callable[[torch.Tensor, torch.Tensor], Mapping[str, Any]]
) -> dict[str, Any]:
    """Means over the rows of ``data`` of the values (floats, or tensors of one per configuration) that
    ``block_values(X, y)`` gives for each block of at most ``rows`` rows (:func:`_batches`), the blocks weighted by
    their rows: exact for losses and metrics that are means over the rows, up to rounding."""
    X_all, y_all = data
    total: dict[str, Any] = {}
    for X, y in _batches(X_all, y_all, rows):
        for key, value in block_values(X, y).items():
            total[key] = total.get(key, 0) + value * int(X.shape[0])
    return {key: value / int(X_all.shape[0]) for key, value in total.items()}


def _split_means(task: ModuleTask, forward: Callable[[torch.Tensor], torch.Tensor], data: tuple[torch.Tensor, torch.Tensor]) -> dict[str, float]:
    """The loss and each metric of ``forward`` (one configuration's model, in evaluation mode) on the split ``data``,
    in blocks of ``task.eval_batch_size`` rows (:func:`_block_means`)."""
    fns = {"loss": task.loss, **task.metrics}

    def block(X: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        out = forward(X)
        return {key: float(fn(out, y)) for key, fn in fns.items()}

    return _block_means(data, task.eval_batch_size, block)


@torch.no_grad()
def _evaluate_one(task: ModuleTask, model: nn.Module, multipliers: Mapping[str, float]) -> list[float]:
    model.eval()
    sums: dict[str, float] = {}
    for split in ("train", "val"):
        data = getattr(task, split)
        if data is not None:
            sums.update({f"{split}_{key}": value for key, value in _split_means(task, model, data).items()})
    params = dict(model.named_parameters())
    # ‖θ‖² summed per tensor in float32 (PyTorch's cascade summation: ~1e-8 relative from the float64 sum, measured on
    # 2048² weights) then in float64: 13× faster than converting every tensor to float64 first (4 ms against 54 ms)
    sums["w_norm"] = math.sqrt(sum(float(params[n].detach().square().sum()) for n, m in multipliers.items() if m > 0))
    model.train()
    return [sums[name] for name in task.metric_names]


def _diverged(task: ModuleTask, row: list[float], params: Sequence[torch.Tensor]) -> bool:
    losses = row[:2] if task.val is not None else row[:1]
    # finite iff the largest and smallest elements are (both propagate NaN): one reduction, no bool tensor
    return not (all(math.isfinite(v) for v in losses)
                and all(all(math.isfinite(float(e)) for e in torch.aminmax(p.detach())) for p in params))


def train_one_module(task: ModuleTask, hyper: Hyper, progress: Progress | None = None, model: nn.Module | None = None) -> Outcome:
    """Train one configuration alone with ``torch.optim`` (see the module docstring); its outcome. ``model``: its
    initial model, which this trains in place (a copy of :func:`build_model`'s for its seed: a deep copy costs 0.9 ms
    where the 64-2048-2048-10 MLP's factory takes 10 ms to initialize); ``None``: built here."""
    model = build_model(task, hyper.seed) if model is None else model
    draws = Draws(generator(hyper.seed, "dropout"))
    with_stream_dropout(model, draws)
    multipliers = _decay_multipliers(task, model)
    both = bool(hyper.l2 and hyper.decoupled) and task.optimizer != "adamw"
    opt = _optimizer(task, hyper, model, both)
    decayed = [(p, multipliers[n] * hyper.l2) for n, p in model.named_parameters() if multipliers.get(n, 0) > 0]
    order = generator(hyper.seed, "order")
    X, Y = task.train
    rows: list[list[float]] = []
    diverged = None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(stream_seed(hyper.seed, "dropout"))  # other random layers: the global generator, per seed
        for epoch in range(1, task.epochs + 1):
            if diverged is not None:
                rows.append([math.nan] * len(task.metric_names))
            else:
                model.train()
                for idx in epoch_batches(task.n_train, task.batch_size, order):
                    x, y = (X, Y) if idx is None else (X[idx], Y[idx])
                    opt.zero_grad(set_to_none=True)
                    task.loss(model(x), y).backward()
                    if both:  # the coupled term by hand, so that it sees θ before the decoupled decay
                        with torch.no_grad():
                            for p, coef in decayed:
                                if p.grad is not None:
                                    p.grad.add_(p, alpha=coef)
                    opt.step()
                rows.append(_evaluate_one(task, model, multipliers))
                if _diverged(task, rows[-1], list(model.parameters())):
                    diverged = epoch
            if progress:
                progress(1)
    return make_outcome(task, rows, diverged)


def train_module_sequential(task: ModuleTask, hypers: Sequence[Hyper], progress: Progress | None = None) -> list[Outcome]:
    """Train each configuration alone, one after another (the reference); outcomes in the order of ``hypers``."""
    hypers = check_module_hypers(task, hypers)
    check_module_task(task, [h.seed for h in hypers], engine="sequential")
    return [train_one_module(task, h, progress) for h in hypers]


# ----------------------------------------------------------------------------- batched engine
def _clock() -> Callable[[], float]:
    """The clock of the engine's timings: the process's CPU time with one torch thread (other processes on a shared
    machine do not decide), the wall clock with more (CPU time would count the threads' spin-waiting)."""
    return time.process_time if torch.get_num_threads() == 1 else time.perf_counter


LOOP_METRICS_UP_TO = 32
"""Stacks of up to this many configurations evaluate their loss and metrics with one call per configuration,
larger ones with ``vmap``: as fast up to 16–32 configurations (blocks of 128–1,024 rows, cross-entropy and
accuracy: 0.5 against 0.6 ms for 16 × 128 rows), 5× slower at 256; and ``vmap`` of ``F.cross_entropy`` runs its
decomposition, whose ``torch._check`` imports sympy (~0.6 s) on a process's first call."""


def is_row_mean(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], out: torch.Tensor, y: torch.Tensor) -> bool:
    """Whether ``fn(out, y)`` is the mean of ``fn`` over each row alone, on all rows of ``out`` (at least 2), within
    float32 rounding (relative 1e-5). Then the sum of K configurations' losses on batches of equal size is K times
    ``fn`` of all their rows together (see :meth:`ModuleStack.train_step`). Rows of different targets tell a
    weighted mean (``F.cross_entropy(weight=...)``) from a plain one."""
    n = int(out.shape[0])
    if n < 2:
        return False
    try:
        whole = float(fn(out, y))
        alone = [float(fn(out[i : i + 1], y[i : i + 1])) for i in range(n)]
    except Exception:  # noqa: BLE001 - a loss that needs more than one row: not a row mean
        return False
    return math.isclose(whole, sum(alone) / n, rel_tol=1e-5, abs_tol=1e-7)


def probe_rows(y: torch.Tensor, spread: int = 8, classes: int = 16) -> torch.Tensor:
    """Rows of a training set (targets ``y``) for :func:`is_row_mean`: ``spread`` rows spread over the set, and for
    class labels (1-D integer targets) the first row of each of the first ``classes`` labels — a class-weighted loss
    looks like a plain mean on rows of one class (the spread rows of 200 with 15 positives can all be negatives)."""
    n = int(y.shape[0])
    rows = torch.linspace(0, n - 1, min(n, spread)).round().long()
    if y.dim() == 1 and not (y.is_floating_point() or y.is_complex()):  # class labels
        _, inverse = torch.unique(y, return_inverse=True)
        first = torch.full((int(inverse.max()) + 1,), n, dtype=torch.long).scatter_reduce(0, inverse, torch.arange(n), "amin")
        rows = torch.cat([rows, first[:classes]])
    return rows.unique()


class ModuleStack:
    """K configurations of a :class:`ModuleTask` as one stack: parameters, buffers, optimizer, streams."""

    def __init__(
        self, task: ModuleTask, hypers: Sequence[Hyper], models: Mapping[int, nn.Module] | None = None, native: bool = True
    ) -> None:
        """``native=False``: always the ``vmap`` forward, even for a model the stacked native forward knows."""
        from torch.func import stack_module_state

        self.task = task
        self.perm = sorted(range(len(hypers)), key=lambda i: hypers[i].seed)
        self.hypers = [hypers[i] for i in self.perm]
        self.K = len(self.hypers)
        self.seeds = sorted({h.seed for h in self.hypers})
        models = dict(models) if models is not None else check_module_task(task, self.seeds)
        self.gidx = torch.tensor([self.seeds.index(h.seed) for h in self.hypers])
        copies = [models[h.seed] for h in self.hypers]
        params, buffers = stack_module_state(copies)  # (K, ...) copies, in named_parameters() order
        trainable = {n for n, p in copies[0].named_parameters() if p.requires_grad}  # frozen ones are never updated
        self.names = [n for n in params if n in trainable]
        self.params = {n: p.detach().clone().requires_grad_(n in trainable) for n, p in params.items()}
        self.buffers = {n: b.clone() for n, b in buffers.items()}
        self.draws = Draws()
        self.base = copy.deepcopy(copies[0])
        self.n_dropout = with_stream_dropout(self.base, self.draws)
        multipliers = _decay_multipliers(task, copies[0])
        self.multipliers = [multipliers.get(n, 0.0) for n in self.names]
        hs = self.hypers
        self.updater = StackedUpdate(
            [self.params[n] for n in self.names],
            self.multipliers,
            task.settings,
            Coefficients(lr=[h.lr for h in hs], l2=[h.l2 for h in hs], decoupled=[h.decoupled for h in hs], l1=[h.l1 for h in hs]),
        )
        self.order = [generator(s, "order") for s in self.seeds]
        self.dropout = [generator(s, "dropout") for s in self.seeds]
        self.shapes: dict[tuple[int, ...], list[tuple[tuple[int, ...], torch.dtype]]] = {}
        self.diverged_epoch: list[int | None] = [None] * self.K
        self.history: list[torch.Tensor] = []  # (K, M) metrics of each epoch done
        self._epoch = 0  # the epoch begun, and its minibatches not trained on yet:
        self._minibatches_left: Iterator[tuple[torch.Tensor | None, ...]] = iter(())
        self.eval_rows, self.row_mean = self._look_at_the_model()
        self.stacked: StackedForward | None = None
        self.fallback = "one configuration: the model itself" if self.K == 1 else "native=False"
        if native and self.K > 1:
            self.stacked, self.fallback = build_stacked(self.base, self.K, self._check_stacked)
        self.evaluate_each = self._evaluates_each()

    def _check_stacked(self, forward: StackedForward) -> None:
        """Run ``forward`` once on two training rows, in training and evaluation mode, on copies of the buffers, and
        compare it with the model itself for the first and last configuration (outputs and updated buffers) and
        with per-configuration inputs; raise :class:`~decaylab.engine.stacked.Unsupported` when they differ."""
        from torch.func import functional_call

        X = self.task.train[0][:2]
        params = {n: p.detach() for n, p in self.params.items()}
        try:
            self.draws.shapes = []  # dropout layers: the identity (no uniforms drawn)
            with torch.no_grad(), torch.random.fork_rng(devices=[]):
                for training in (True, False):
                    self.base.train(training)
                    bufs = {n: b.clone() for n, b in self.buffers.items()}
                    ref_bufs = {n: b.clone() for n, b in self.buffers.items()}
                    out = forward(params, bufs, X, None, [])
                    per_config = forward(params, {n: b.clone() for n, b in self.buffers.items()},
                                         X.unsqueeze(0).expand(self.K, *X.shape), 0, [])
                    for k in (0, self.K - 1):
                        ref = functional_call(self.base, ({n: p[k] for n, p in params.items()},
                                                          {n: b[k] for n, b in ref_bufs.items()}), (X,))
                        if not isinstance(ref, torch.Tensor) or out.shape[1:] != ref.shape or out.shape[0] != self.K:
                            raise Unsupported("its output differs in shape from the model's")
                        if not (torch.allclose(out[k], ref, rtol=1e-4, atol=1e-5)
                                and torch.allclose(per_config[k], ref, rtol=1e-4, atol=1e-5)):
                            raise Unsupported("its output differs from the model's")
                        for n in bufs:
                            if not torch.allclose(bufs[n][k].double(), ref_bufs[n][k].double(), rtol=1e-4, atol=1e-6):
                                raise Unsupported(f"buffer {n} differs from the model's")
        finally:
            self.draws.shapes = None
            self.base.train()

    # -- the functional model
    def _call(self, params: dict, buffers: dict, masks: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        from torch.func import functional_call

        self.draws.queue = list(masks)
        return functional_call(self.base, (params, buffers), (x,))

    def _forward(self, x: torch.Tensor, x_dim: int | None, masks: list[torch.Tensor]) -> torch.Tensor:
        if self.K == 1:  # one configuration: its rows of the stack as an ordinary model (no vmap, plain kernels)
            one = lambda d: {n: t[0] for n, t in d.items()}
            return self._call(one(self.params), one(self.buffers), [m[0] for m in masks], x if x_dim is None else x[0]).unsqueeze(0)
        if self.stacked is not None:  # the model's layers on stacked layouts, ordinary kernels (engine/stacked.py)
            return self.stacked(self.params, self.buffers, x, x_dim, masks)
        return self._vmapped(x, x_dim, masks)

    def _vmapped(self, x: torch.Tensor, x_dim: int | None, masks: list[torch.Tensor]) -> torch.Tensor:
        from torch.func import vmap
        from torch.nn.attention import SDPBackend, sdpa_kernel

        fastpath = torch.backends.mha.get_fastpath_enabled()
        try:
            # attention as matrix products: vmap has no batching rule for the fused CPU kernels (nn.MultiheadAttention's
            # eval-mode fast path, flash attention), it would loop over the K configurations
            torch.backends.mha.set_fastpath_enabled(False)
            with sdpa_kernel([SDPBackend.MATH]):
                return vmap(self._call, in_dims=(0, 0, 0, x_dim), randomness="error")(self.params, self.buffers, masks, x)
        except InvalidParameterError:
            raise
        except Exception as exc:  # noqa: BLE001 - any error of user code becomes one line
            raise parameter_error(
                "model", OWNER, "a model the batched engine can train" + SEQUENTIAL_HINT, one_line(exc)
            ) from None
        finally:
            torch.backends.mha.set_fastpath_enabled(fastpath)

    def _look_at_the_model(self) -> tuple[int, bool]:
        """One forward of the stack's own copy of the model, in evaluation mode (no dropout draw, BatchNorm's
        statistics untouched), on :func:`probe_rows` of the training set: the evaluation's block rows
        (:func:`eval_block_rows` of the largest module output per row) and whether the task's loss
        :func:`is_row_mean` on that output."""
        rows = probe_rows(self.task.train[1])
        X, y = self.task.train[0].index_select(0, rows), self.task.train[1].index_select(0, rows)
        was_training = self.base.training
        self.base.eval()
        try:
            out, (_, largest) = _outputs_per_row(self.base, X)
        finally:
            self.base.train(was_training)
        return eval_block_rows(self.task, self.K, largest), isinstance(out, torch.Tensor) and is_row_mean(self.task.loss, out, y)

    def _each_config(self, fn: Callable, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``(K,)``: ``fn`` of each configuration's output ``out[k]`` and the shared targets ``y``
        (:data:`LOOP_METRICS_UP_TO`)."""
        if self.K <= LOOP_METRICS_UP_TO:
            return torch.stack([torch.as_tensor(fn(out[k], y)) for k in range(self.K)])
        return self._losses(fn, out, y, None)

    def _losses(self, fn: Callable, out: torch.Tensor, y: torch.Tensor, y_dim: int | None) -> torch.Tensor:
        from torch.func import vmap

        return vmap(fn, in_dims=(0, y_dim))(out, y)

    def _mask_shapes(self, x: torch.Tensor) -> list[tuple[tuple[int, ...], torch.dtype]]:
        """The shapes of the dropout calls of a forward pass on inputs like ``x`` (one copy, recorded once)."""
        key = tuple(x.shape)
        if key not in self.shapes:
            self.draws.shapes = []
            try:
                from torch.func import functional_call

                one_p = {n: p[0].detach() for n, p in self.params.items()}
                one_b = {n: b[0].clone() for n, b in self.buffers.items()}  # BatchNorm must not move the real stats
                with torch.no_grad():
                    functional_call(self.base, (one_p, one_b), (x,))
                self.shapes[key] = self.draws.shapes
            finally:
                self.draws.shapes = None
        return self.shapes[key]

    def _per_config(self, per_seed: list[torch.Tensor]) -> tuple[torch.Tensor, int | None]:
        if len(per_seed) == 1:
            return per_seed[0], None
        return torch.stack(per_seed).index_select(0, self.gidx), 0

    # -- training
    def train_step(self, indices: Sequence[torch.Tensor | None]) -> None:
        X, Y = self.task.train
        xs = [X if idx is None else X.index_select(0, idx) for idx in indices]
        ys = [Y if idx is None else Y.index_select(0, idx) for idx in indices]
        masks: list[torch.Tensor] = []
        if self.n_dropout:
            for shape, dtype in self._mask_shapes(xs[0]):
                us = [torch.rand(shape, generator=g, dtype=dtype) for g in self.dropout]
                masks.append(torch.stack(us).index_select(0, self.gidx) if len(us) > 1 else us[0].expand(self.K, *shape))
        x, x_dim = self._per_config(xs)
        y, y_dim = self._per_config(ys)
        self.base.train()
        with torch.enable_grad():
            out = self._forward(x, x_dim, masks)
            if self.row_mean:  # Σ_k L_k = K · loss of all K·B rows: one call of the loss, no vmap
                rows = y.flatten(0, 1) if y_dim == 0 else y.expand(self.K, *y.shape).flatten(0, 1)
                total = self.K * self.task.loss(out.flatten(0, 1), rows)
            else:
                total = self._losses(self.task.loss, out, y, y_dim).sum()
            # the configurations are independent: ∂total/∂θ_k = ∂L_k/∂θ_k
            grads = list(torch.autograd.grad(total, [self.params[n] for n in self.names]))
        with torch.no_grad():
            self.updater.step(grads)

    @torch.no_grad()
    def evaluate(self) -> torch.Tensor:
        """(K, M) metrics in ``task.metric_names`` order: on the stack (blocks of ``eval_rows`` rows of the K
        configurations), or one configuration at a time (the model itself on blocks of ``task.eval_batch_size`` rows)
        where :meth:`_evaluates_each` says so. The same numbers either way, up to float32 rounding."""
        self.base.eval()
        cols: dict[str, torch.Tensor] = {}
        for split in ("train", "val"):
            data = getattr(self.task, split)
            if data is not None:
                means = self._split_each(data) if self.evaluate_each else self._split_stacked(data)
                cols.update({f"{split}_{key}": value for key, value in means.items()})
        decayed = [self.params[n] for n, m in zip(self.names, self.multipliers, strict=True) if m > 0]
        sq = sum((P.detach().double() ** 2).reshape(self.K, -1).sum(dim=1) for P in decayed)
        cols["w_norm"] = torch.sqrt(sq) if decayed else torch.zeros(self.K, dtype=torch.float64)
        self.base.train()
        return torch.stack([cols[name] for name in self.task.metric_names], dim=1)

    def _split_stacked(self, data: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``(K,)`` float64 loss and metrics on ``data``, the K configurations' forward on blocks of ``eval_rows``
        (:func:`_block_means`)."""
        fns = {"loss": self.task.loss, **self.task.metrics}

        def block(X: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
            out = self._forward(X, None, [])
            return {key: self._each_config(fn, out, y).to(torch.float64) for key, fn in fns.items()}

        return _block_means(data, self.eval_rows, block)

    @torch.no_grad()
    def _one(self, k: int) -> nn.Module:
        """Configuration ``k``'s model for evaluation: the stack's own copy of the model with configuration ``k``'s
        rows of the stack copied into its parameters and buffers (the model itself, its fused inference paths
        included; the copies cost less than ``functional_call``, 0.1 ms a call for the transformer block)."""
        for name, t in itertools.chain(self.base.named_parameters(), self.base.named_buffers()):
            t.copy_((self.params[name] if name in self.params else self.buffers[name])[k])
        return self.base

    def _split_each(self, data: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
        """What :meth:`_split_stacked` gives, one configuration at a time (:func:`_split_means` of its model)."""
        rows = [_split_means(self.task, self._one(k), data) for k in range(self.K)]
        return {key: torch.tensor([r[key] for r in rows], dtype=torch.float64) for key in rows[0]}

    def _evaluates_each(self) -> bool:
        """Whether the stack evaluates one configuration at a time with the model itself (else on the stack): where
        the model has an ``nn.MultiheadAttention``, whose fused inference path beats the stacked layers (the
        transformer block's evaluation of 16 configurations at 2 threads: 134 against 156–194 ms), or where the stack
        has no native forward (``vmap`` would batch the model's own kernels); never for a stack of one. The stacked
        forward wins where it batches small layers (the digits CNN: 31–44 against 74 ms).

        A rule, not a timing (as it was until the eleventh session): the two round differently (~1e-8), so a choice
        by the clock gave two runs of one command different numbers."""
        if self.K == 1:
            return False
        return self.stacked is None or any(isinstance(m, nn.MultiheadAttention) for m in self.base.modules())

    def _check_divergence(self, metrics: torch.Tensor, epoch: int) -> None:
        n_losses = 2 if self.task.val is not None else 1
        finite = torch.isfinite(metrics[:, :n_losses]).all(dim=1) & self.updater.finite()
        newly = self.updater.active & ~finite
        if not bool(newly.any()):
            return
        for k in newly.nonzero().flatten().tolist():
            self.diverged_epoch[k] = epoch
        self.updater.freeze_(newly)
        with torch.no_grad():
            for B in self.buffers.values():
                if B.is_floating_point():
                    B[newly] = 0.0

    def _minibatches(self, epoch: int) -> Iterator[tuple[torch.Tensor | None, ...]]:
        """The minibatches of ``epoch`` not trained on yet, one index tensor per seed: each seed's shuffle of the
        epoch is drawn when the epoch begins, once."""
        if epoch != self._epoch:
            per_seed = [epoch_batches(self.task.n_train, self.task.batch_size, g) for g in self.order]
            self._epoch, self._minibatches_left = epoch, iter(list(zip(*per_seed, strict=True)))
        return self._minibatches_left

    def train_first_steps(self, n: int) -> int:
        """Train on the next ``n`` minibatches of the first epoch, fewer if it has fewer left; return how many.

        The planner times a stack's first steps this way and may keep the stack: :meth:`run` goes on with the
        epoch's next minibatch, so the numbers are those of a stack that never paused.
        """
        if self.history:
            raise RuntimeError("train_first_steps: the first epoch is over")
        taken = 0
        for indices in itertools.islice(self._minibatches(1), n):
            self.train_step(indices)
            taken += 1
        return taken

    def run(self, progress: Progress | None = None) -> list[Outcome]:
        """Train every epoch (from where :meth:`train_first_steps` left off); outcomes in the order the
        configurations were given."""
        for epoch in range(len(self.history) + 1, self.task.epochs + 1):
            for indices in self._minibatches(epoch):
                self.train_step(indices)
            metrics = self.evaluate()
            self._check_divergence(metrics, epoch)
            self.history.append(metrics)
            if progress:
                progress(self.K)
        rows = torch.stack(self.history).transpose(0, 1).tolist()  # (K, epochs, M)
        outcomes: dict[int, Outcome] = {}  # position in the hypers given -> outcome
        for k, original in enumerate(self.perm):
            outcomes[original] = make_outcome(self.task, rows[k], self.diverged_epoch[k])
        return [outcomes[i] for i in range(self.K)]


_FUSED_OPS = {"sgd": "_fused_sgd_", "adam": "_fused_adam_", "adamw": "_fused_adamw_"}


def fused_update(task: ModuleTask, params: Sequence[torch.Tensor], lr: float, weight_decay: float) -> Callable[[], None] | None:
    """The update ``torch.optim``'s fused CPU kernel makes for ``task.optimizer`` from the ``.grad`` of ``params``
    (tensors without one are left alone, as ``torch.optim`` leaves them) — ``torch._fused_sgd_`` /
    ``_fused_adam_`` / ``_fused_adamw_``, the ops that ``SGD`` / ``Adam`` / ``AdamW(fused=True)`` call, with their
    own state (momentum buffers; moments and step counts) — or ``None`` where those kernels do not apply
    (floating-point CPU tensors of one dtype) or the private ops are absent.

    It is what a step of one configuration costs without constructing a ``torch.optim`` optimizer: the first
    construction in a process imports ``torch._dynamo`` (1.5–1.8 s on this machine), which a sweep that goes on to
    stack configurations never needs. It leaves out ``Optimizer.step``'s Python (0.1–0.25 ms per step of the small
    test CNNs at one thread, ~10–18 % of their step), so the planner measures one configuration at a time a little
    faster than it runs: a stack must beat it by that much more, which errs towards one at a time. Tested: the
    same numbers as ``torch.optim``'s fused step.
    """
    op = getattr(torch, _FUSED_OPS[task.optimizer], None)
    params = list(params)
    if op is None or not params or not all(
        p.device.type == "cpu" and p.dtype == params[0].dtype and p.is_floating_point() for p in params
    ):
        return None

    def live() -> list[int]:
        return [i for i, p in enumerate(params) if p.grad is not None]

    if task.optimizer == "sgd":  # buffers from zero: with dampening 0 the first step sets them to the gradient
        buffers = [torch.zeros_like(p) for p in params] if task.momentum else []

        def sgd() -> None:
            at = live()
            op([params[i] for i in at], [params[i].grad for i in at], [buffers[i] for i in at] if buffers else [],
               weight_decay=weight_decay, momentum=task.momentum, lr=lr, dampening=0.0, nesterov=task.nesterov,
               maximize=False, is_first_step=False)

        return sgd
    avg, avg_sq = [torch.zeros_like(p) for p in params], [torch.zeros_like(p) for p in params]
    steps = [torch.zeros((), dtype=torch.float32) for _ in params]  # torch.optim's fused step counts

    def adam() -> None:
        at = live()
        counts = [steps[i] for i in at]
        torch._foreach_add_(counts, 1)
        op([params[i] for i in at], [params[i].grad for i in at], [avg[i] for i in at], [avg_sq[i] for i in at], [],
           counts, amsgrad=False, lr=lr, beta1=task.betas[0], beta2=task.betas[1], weight_decay=weight_decay,
           eps=task.eps, maximize=False)

    return adam


def _plain_step(task: ModuleTask, model: nn.Module, seed: int, rows: int) -> Callable[[], None]:
    """One training step of one configuration as the sequential engine (and a hand-written loop) takes it:
    ``model`` (a copy) on the first ``rows`` rows, then the update of ``torch.optim``'s fused kernel
    (:func:`fused_update`; where it does not apply, ``torch.optim`` over :func:`decaylab.param_groups`). For Adam and
    AdamW the sequential engine runs the for-loop implementation (:func:`_fused`), no faster than the fused kernel timed
    here: like the rest of :func:`fused_update`'s omissions, this errs towards one configuration at a time."""
    X, y = task.train[0][:rows], task.train[1][:rows]
    model = copy.deepcopy(model)
    params = [p for p in model.parameters() if p.requires_grad]
    update = fused_update(task, params, lr=1e-9, weight_decay=1e-4)
    if update is None:
        opt = _optimizer(task, Hyper(seed=seed, lr=1e-9, l2=1e-4 if task.optimizer != "adamw" else 0.0), model, False)
        update = opt.step

    def step() -> None:
        for p in params:
            p.grad = None
        task.loss(model(X), y).backward()
        update()

    return step


def train_module_batched(
    task: ModuleTask, hypers: Sequence[Hyper], chunk: int | None = None, progress: Progress | None = None
) -> list[Outcome]:
    """Train ``hypers`` in stacks of ``chunk`` configurations.

    ``chunk=None``: the plan of :func:`plan_module_chunks` (:func:`plan_and_start`: the first chunk's stack may be the
    one the planner measured, its first steps taken); when it finds no gain in stacking (it measured stacks
    against one configuration's ``torch.optim`` step), the configurations are trained one at a time by the
    sequential engine — what a hand-written loop runs — with equal results within float32 rounding.
    """
    hypers = check_module_hypers(task, hypers)
    if not hypers:
        return []
    order = sorted(range(len(hypers)), key=lambda i: hypers[i].seed)
    models = check_module_task(task, [h.seed for h in hypers], probe=False)
    if chunk is None:  # probes the model's batching if it tries stacks; may keep the first chunk's stack, begun
        sizes, started = plan_and_start(task, [hypers[i] for i in order], models)
    else:
        sizes, started = plan_module_chunks(task, len(hypers), chunk), None
    if chunk is None and max(len(r) for r in sizes) == 1:  # the model and torch.optim, one configuration at a time
        # the same numbers, within float32 rounding; each from a copy of its seed's model, built and checked above
        return [train_one_module(task, h, progress, copy.deepcopy(models[h.seed])) for h in hypers]
    if chunk is not None and max(len(r) for r in sizes) > 1:  # a layer the engine cannot batch: one line, before training
        _probe_batched(task, models)
    outcomes: dict[int, Outcome] = {}  # position in hypers -> outcome
    for part in sizes:
        idx = [order[i] for i in part]
        stack = started if started is not None else ModuleStack(task, [hypers[i] for i in idx], models)
        started = None  # the first chunk's, begun by the planner
        done = stack.run(progress)
        del stack  # one stack at a time: freed before the next chunk's is built (the memory budget is per stack)
        for i, o in zip(idx, done, strict=True):
            outcomes[i] = o
    return [outcomes[i] for i in range(len(hypers))]


def train_module(
    task: ModuleTask, hypers: Sequence[Hyper], engine: str = "batched", chunk: int | None = None, progress: Progress | None = None
) -> list[Outcome]:
    """Train with ``engine`` (``'batched'`` or ``'sequential'``); outcomes in the order of ``hypers``."""
    check_choice(engine, "engine", OWNER, MODULE_ENGINES)
    if engine == "sequential":
        return train_module_sequential(task, hypers, progress)
    return train_module_batched(task, hypers, chunk, progress)


# ----------------------------------------------------------------------------- chunk planning
DEFAULT_MODULE_MEMORY_BUDGET = 1 << 30
PROBE_SECONDS = 1.0
PROBE_FRACTION = 0.05  # of the sweep's training time, estimated from one configuration's step
# the probe may always take this long. It was 0.3 s, which the compute-bound 64-2048-2048-10 MLP's sweep of 4
# configurations (3 s in all) spent on a stack of 2 that could not gain: 10 % of the run, 0.94× the plain loop's speed
PROBE_MIN_SECONDS = 0.05
PROBE_LONG_STEP = 0.01  # seconds: steps are timed after a warm-up until they took this long in all (1–3 of them)
_GAIN = 1.05  # a stack must train this much faster than one at a time to be used at all, a halved one to be probed further
_NEAR_BEST = 0.9  # the largest stack whose rate is at least this fraction of the best rate is chosen


# evaluation runs in row blocks of about this many numbers (16 MiB of float32) in the largest module output: per
# evaluation of 16 configurations at 2 threads, medians of 6 (ms), block rows → time — transformer block: 32 → 523,
# 128 → 412, 256 → 395, 1600 → 898; digits CNN: 128 → 94, 512 → 88, 1024 → 98; CNN+BN: 128 → 118, 512 → 94 (1 << 20,
# before: 32 and 128 rows)
EVAL_BLOCK_FLOATS = 1 << 22


def module_outputs_per_row(model: nn.Module, X: torch.Tensor, rows: int = 8) -> tuple[int, int]:
    """The numbers the modules' outputs hold per input row, all together and the largest one, measured by forward
    hooks on a copy, on ``rows`` rows, without gradients."""
    return _outputs_per_row(copy.deepcopy(model), X[: min(rows, int(X.shape[0]))])[1]


def _outputs_per_row(model: nn.Module, X: torch.Tensor) -> tuple[Any, tuple[int, int]]:
    """``model(X)`` without gradients (PyTorch's generator left as it was), and the numbers its modules' outputs
    hold per row of ``X``, all together and the largest one (forward hooks, removed after)."""
    total = largest = 0

    def hook(_m: nn.Module, _i: Any, out: Any) -> None:
        nonlocal total, largest
        if isinstance(out, torch.Tensor):
            total, largest = total + out.numel(), max(largest, out.numel())

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            out = model(X)
    finally:
        for h in handles:
            h.remove()
    n = int(X.shape[0])
    return out, (max(1, total // n), max(1, largest // n))


def eval_block_rows(task: ModuleTask, K: int, largest_per_row: int) -> int:
    """The rows a stack of ``K`` evaluates at once: about ``EVAL_BLOCK_FLOATS`` numbers in its largest module
    output (``largest_per_row`` per row and configuration), at least 32 and at most ``task.eval_batch_size``."""
    return max(32, min(task.eval_batch_size, EVAL_BLOCK_FLOATS // max(1, K * largest_per_row)))


def stack_memory(task: ModuleTask, model: nn.Module) -> Callable[[int], int]:
    """An upper estimate, in bytes, of a stack of ``K`` configurations, as a function of ``K``: per
    configuration the parameters ×(θ, g, 2 temporaries, optimizer buffers), the buffers, and 3× the
    activations of a training minibatch and of the evaluation block the stack uses (outputs of every module,
    measured by forward hooks on one copy; see :func:`eval_block_rows`)."""
    n_params = sum(p.numel() for p in model.parameters())
    n_buffers = sum(b.numel() for b in model.buffers())
    state = (1 if task.momentum else 0) + (0 if task.optimizer == "sgd" else 2)
    rows = task.batch_size or task.n_train
    per_row, largest = module_outputs_per_row(model, task.train[0])
    data_rows = max(task.n_train, int(task.val[0].shape[0]) if task.val is not None else 0)
    itemsize = next(model.parameters()).element_size()

    def estimate(K: int) -> int:
        eval_rows = min(data_rows, eval_block_rows(task, K, largest))
        return K * itemsize * ((4 + state) * n_params + n_buffers + 3 * per_row * (rows + eval_rows))

    return estimate


def _largest_stack(memory: Callable[[int], int], n_configs: int, budget: int) -> int:
    """The largest ``K ≤ n_configs`` whose ``memory(K)`` fits ``budget`` (at least 1), by bisection."""
    low, high = 1, n_configs
    while low < high:
        mid = (low + high + 1) // 2
        if memory(mid) <= budget:
            low = mid
        else:
            high = mid - 1
    return low


def plan_module_chunks(
    task: ModuleTask,
    n_configs: int,
    chunk: int | None = None,
    *,
    models: Mapping[int, nn.Module] | None = None,
    memory_budget_bytes: int = DEFAULT_MODULE_MEMORY_BUDGET,
    probe_seconds: float = PROBE_SECONDS,
) -> list[range]:
    """Consecutive, balanced chunks of ``0..n_configs-1`` (configurations sorted by seed).

    ``chunk`` fixes the size. Else the size is bounded by ``memory_budget_bytes`` and
    :func:`stack_memory` (the cap), and the configurations·steps per second are measured on the
    first minibatch (a warm-up step, then the best of up to three timed steps, as many as fit in
    ``PROBE_LONG_STEP``, at least one): first of one configuration as the sequential engine runs it (the model and the
    update of ``torch.optim``'s fused kernel, :func:`fused_update`; :func:`train_module_batched` then runs
    ``torch.optim``), then of stacks of the cap, half of it, a quarter, … down to 2 (each of the size of the first
    chunk of a plan with that bound: 20 configurations at a cap of 16 are two chunks of 10, so 10 are measured),
    within the probe's budget (:func:`probe_stacks`: ``PROBE_FRACTION`` of the sweep's training time estimated from
    one configuration's step, at least ``PROBE_MIN_SECONDS``, at most ``probe_seconds``).

    Stacks are used only when one trains at least 5 % faster than one configuration at a time — so a
    compute-bound model is never slower batched than one at a time; among them the *largest* whose rate is
    within 10 % of the best wins: the probe times only the training step, and what it leaves out (building
    and checking each stack, the evaluation after every epoch, the per-epoch bookkeeping) costs less per
    configuration in a larger stack, as do the rounding and allocation noise of short steps. (The rates are
    not monotone in the size: on the digits CNN at 2 threads a stack of 2 trained 1.1×, 4 1.9×, 8 1.9–3×
    and 16 2.6–3× as fast per configuration as one at a time.)

    Times are the process's CPU time with one torch thread (other processes on a shared machine do not
    decide the chunk), the wall clock with more: the CPU time of several threads counts their spin-waiting
    between parallel regions (a stack of one of the digits CNN, 1.6–1.8 ms per step by the wall clock at 2
    threads, measured 1.6–5.8 ms of CPU time), which penalizes the stacks that use the threads well.
    """
    from decaylab.engine.chunking import _balanced

    n_configs = check_int(n_configs, "n_configs", "plan_module_chunks", low=0)
    if n_configs == 0:
        return []
    if chunk is not None:
        return _balanced(n_configs, check_int(chunk, "chunk", OWNER, low=1))
    models = dict(models) if models is not None else check_module_task(task, [0], probe=False)
    return _plan(task, n_configs, models, memory_budget_bytes, probe_seconds)[0]


def plan_and_start(
    task: ModuleTask,
    hypers: Sequence[Hyper],
    models: Mapping[int, nn.Module],
    *,
    memory_budget_bytes: int = DEFAULT_MODULE_MEMORY_BUDGET,
    probe_seconds: float = PROBE_SECONDS,
) -> tuple[list[range], ModuleStack | None]:
    """The chunks :func:`plan_module_chunks` plans for ``hypers`` (sorted by seed; ``models``: each seed's), and the
    first chunk's stack, already trained on its first minibatches, when the planner kept it (else None).

    The probe's stack of the largest size is then built from the first configurations themselves, and its timed
    steps are their first training steps (:meth:`ModuleStack.train_first_steps`: a warm-up, then 1–3 timed, as many
    as fit in ``3 · PROBE_LONG_STEP``, all real); when that size wins — the common case — its building and its steps
    are not spent twice, and its rate is the best of more steps than a discarded stack affords (the transformer
    block's stack of 16, 14–16 ms a step: two or three, not one). Kept only where the first epoch has at least four
    full minibatches. The smaller stacks are measured on the seeds of the configurations they would hold; while they
    are, the kept stack holds its parameters, buffers and optimizer state (not its activations).

    Returns:
        ``(chunks, stack)``: consecutive ranges of positions in ``hypers``, and the stack of ``chunks[0]`` or None.

    Raises:
        InvalidParameterError: a layer the batched engine cannot batch (one line, naming ``--engine sequential``),
            found by the first stack the probe builds (in evaluation mode before any step, in training mode at its
            first), before any configuration is trained for real.
    """
    return _plan(task, len(hypers), models, memory_budget_bytes, probe_seconds, hypers)


def _plan(
    task: ModuleTask,
    n_configs: int,
    models: Mapping[int, nn.Module],
    memory_budget_bytes: int,
    probe_seconds: float,
    first: Sequence[Hyper] | None = None,
) -> tuple[list[range], ModuleStack | None]:
    """:func:`plan_module_chunks` for ``chunk=None``; with ``first`` (the configurations, sorted by seed), as
    :func:`plan_and_start`."""
    from decaylab.engine.chunking import _balanced

    model = next(iter(models.values()))
    cap = _largest_stack(stack_memory(task, model), n_configs, memory_budget_bytes)
    if cap == 1:
        return _balanced(n_configs, 1), None
    seed = next(iter(models))
    rows = min(task.batch_size or task.n_train, task.n_train)
    # the kept stack's warm-up and up to three timed steps must be full minibatches of the first epoch (a short last
    # one, 4 rows of 100 at batch 32, timed 0.97 against 1.35 ms: a rate 40 % too high)
    keep_cap = first is not None and task.n_train // rows >= 4
    clock = _clock()
    kept: ModuleStack | None = None
    first_stack = True  # the first stack built is also the batching probe

    def rate_of(size: int) -> float:
        """Configurations·steps per second of a stack of ``size`` (1: the model with torch.optim's fused update).
        The first stack is also the batching probe: a layer the engine cannot batch fails on it as one line (the
        check of check_module_task), in evaluation mode before any step, in training mode at the first step."""
        nonlocal first_stack, kept
        if size == 1:
            return 1 / _best_step_seconds(_plain_step(task, model, seed, rows), clock)
        K = len(_balanced(n_configs, size)[0])  # the stacks the plan would train
        keep = keep_cap and size == cap
        if first is None:  # copies of one configuration
            stack = ModuleStack(task, [Hyper(seed=seed, lr=1e-9, l2=1e-4)] * K, {seed: model})
        else:  # the first configurations themselves, or (discarded after) their seeds: one input and dropout draw per
            # seed, as the plan's stacks will have (a stack of 4 seeds trains at half the rate of one seed's copies)
            configs = list(first[:K]) if keep else [Hyper(seed=h.seed, lr=1e-9, l2=1e-4) for h in first[:K]]
            stack = ModuleStack(task, configs, models)
        if first_stack and stack.stacked is None:
            _probe_evaluation(stack)
        first_stack = False
        if keep:
            kept = stack
            return K / _best_step_seconds(lambda: stack.train_first_steps(1), clock, 3 * PROBE_LONG_STEP)  # real steps
        return K / _best_step_seconds(functools.partial(stack.train_step, [torch.arange(rows)] * len(stack.seeds)), clock)

    config_steps = n_configs * task.epochs * -(-task.n_train // rows)
    size = _chosen_size(probe_stacks(rate_of, cap, config_steps, probe_seconds, clock))
    return _balanced(n_configs, size), kept if size == cap else None


def _best_step_seconds(step: Callable[[], Any], clock: Callable[[], float], long: float = PROBE_LONG_STEP) -> float:
    """The shortest of 1–3 timed calls of ``step`` after a warm-up call, as many as fit in ``long`` seconds (long
    steps are their own average); PyTorch's generator left as it was."""
    times: list[float] = []
    with torch.random.fork_rng(devices=[]):
        step()  # warm-up: allocations, kernel selection
        while len(times) < 3 and sum(times) <= long:
            t0 = clock()
            step()
            times.append(clock() - t0)
    return min(times)


def probe_stacks(
    rate_of: Callable[[int], float], cap: int, config_steps: int, probe_seconds: float, clock: Callable[[], float]
) -> dict[int, float]:
    """The configurations·steps per second ``rate_of(size)`` measured for size 1, then for the stacks ``cap``,
    ``⌈cap/2⌉``, … down to 2, within the probe's budget: ``min(probe_seconds, max(PROBE_MIN_SECONDS,
    PROBE_FRACTION · config_steps / rate_of(1)))`` seconds of ``clock`` after size 1. A size is skipped when four
    of its steps at size 1's rate (building the stack, a warm-up and the timed steps, as if it gained nothing)
    would not fit what is left; the probe stops once a halved stack is not ``_GAIN`` faster than the one before it
    (halving again would hardly find the best: the transformer block's 16 and 8 trained at the same rate, 4 slower)."""
    rates = {1: rate_of(1)}
    start = clock()  # the probe's own time from here: the first step of size 1 may pay for imports
    budget = min(probe_seconds, max(PROBE_MIN_SECONDS, PROBE_FRACTION * config_steps / rates[1]))
    size = cap
    while size >= 2:
        if clock() - start + 4 * size / rates[1] <= budget:
            rates[size] = rate_of(size)
            if len(rates) > 2 and rates[size] < _GAIN * rates[min(c for c in rates if c > size)]:
                break
        size = (size + 1) // 2 if size > 2 else 1
    return rates


def _chosen_size(rates: Mapping[int, float]) -> int:
    """The stack size to train with, from the configurations·steps per second measured for each size (1 included):
    the largest within ``_NEAR_BEST`` of the best rate among the stacks ``_GAIN`` faster than size 1, else 1."""
    gaining = {c: r for c, r in rates.items() if c > 1 and r >= _GAIN * rates[1]}
    if not gaining:
        return 1
    top = max(gaining.values())
    return max(c for c, r in gaining.items() if r >= _NEAR_BEST * top)

