"""The reference engine: one configuration after another, written as ordinary PyTorch.

An ``nn.Module`` of ``nn.Linear`` layers, ``torch.optim.SGD`` / ``Adam`` / ``AdamW`` with two parameter
groups (decayed tensors and the rest), autograd. It follows :mod:`decaylab.engine.semantics` and is
the independent reference that :mod:`decaylab.engine.batched` is tested against, and the
``--engine sequential`` path. How each decay reaches the optimizer:

* coupled ``l2``: ``weight_decay=l2`` of the decayed group (``g ← g + l2·w`` inside ``step()``); when a
  configuration also has decoupled decay, the same term is added to ``.grad`` by hand before the
  decoupled step, so that it uses ``w`` before the decay, as the semantics say;
* ``decoupled``: ``torch.optim.AdamW(weight_decay=decoupled)`` for ``'adam'``; for ``'sgd'`` a manual
  ``w.mul_(1 − lr·decoupled)`` before ``step()``;
* ``l1``: a manual soft-threshold ``w ← sign(w)·max(|w| − lr·l1, 0)`` after ``step()``;
* ``radius``: a manual projection after that, ``w ← w·radius/‖w‖₂`` when ``‖w‖₂ > radius``, the norm
  taken over all decayed tensors together.

With ``task.norm == 'layer'`` the hidden layers are :class:`NormalizedLinear` (``F.layer_norm`` and
autograd), the reference for the batched engine's hand-written normalization and its backward pass.

The model's parameters are in ``task.dtype``; kept weights are
``torch.nn.utils.parameters_to_vector(model.parameters())``. The iterate average
(``task.average_from``) is PyTorch's own: a ``torch.optim.swa_utils.AveragedModel`` (equal weights)
of the ``nn.Linear`` layers, held in float64, whose ``update_parameters`` is called after every step
from that epoch on. The kept optimizer state (``task.keep_optimizer_state``) is the optimizer's own
``state`` after the last step.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parameters_to_vector
from torch.optim.swa_utils import AveragedModel

from decaylab.engine.semantics import (
    LAYER_NORM_EPS,
    Split,
    decay_multipliers,
    epoch_batches,
    initial_parameters,
    load_data,
    make_outcome,
    soft_threshold_,
    tensor_sum,
)
from decaylab.engine.stream_dropout import Draws, StreamDropout
from decaylab.engine.task import Hyper, Task, check_hypers
from decaylab.results import Outcome
from decaylab.rng import generator

__all__ = ["GaussianInputNoise", "NormalizedLinear", "build_model", "train_sequential"]

_ACTIVATION_MODULES = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "identity": nn.Identity}


class GaussianInputNoise(nn.Module):
    """``x + σ·ε``, ``ε ~ N(0, 1)`` drawn from ``generator`` while training; the identity in eval mode."""

    def __init__(self, sigma: float, gen: torch.Generator) -> None:
        super().__init__()
        self.sigma, self.gen = sigma, gen

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        return x + self.sigma * torch.randn(x.shape, generator=self.gen, dtype=x.dtype)


class NormalizedLinear(nn.Linear):
    """``LayerNorm(x Wᵀ) + b``: a linear map without bias, a layer normalization without affine parameters
    (``F.layer_norm``, ε = :data:`~decaylab.engine.semantics.LAYER_NORM_EPS`), then the bias as its shift.

    Its weight is scale-invariant: ``W → c·W`` (c > 0) leaves the output unchanged up to ε. An
    ``nn.Linear`` subclass, so that its parameters are laid out and grouped like every other layer's.
    """

    eps: float = LAYER_NORM_EPS  # set an instance's eps to 0 to see the exact invariance

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = F.linear(x, self.weight)
        return F.layer_norm(z, (self.out_features,), eps=self.eps) + self.bias


def build_model(task: Task, hyper: Hyper) -> nn.Sequential:
    """The configuration's model with its initial parameters and its own noise / dropout streams."""
    modules: list[nn.Module] = []
    if task.noise:
        modules.append(GaussianInputNoise(hyper.noise, generator(hyper.seed, "noise")))
    dropout_gen = generator(hyper.seed, "dropout") if task.dropout else None
    probs = hyper.dropout_for(task)
    params = initial_parameters(task, hyper.seed)
    for depth, (W, b) in enumerate(params):
        hidden = depth < len(params) - 1
        layer = NormalizedLinear if task.norm == "layer" and hidden else nn.Linear
        linear = layer(W.shape[0], W.shape[1], dtype=W.dtype)
        with torch.no_grad():
            linear.weight.copy_(W.T)  # nn.Linear stores (out, in)
            linear.bias.copy_(b)
        modules.append(linear)
        if depth < len(params) - 1:
            modules.append(_ACTIVATION_MODULES[task.activation]())
            if dropout_gen is not None:
                modules.append(StreamDropout(probs[depth], Draws(dropout_gen), draw_at_zero=True))
    return nn.Sequential(*modules)


def _split_parameters(task: Task, model: nn.Module) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
    """``(decayed, not decayed, weight matrices)``, as :mod:`decaylab.policy` decides for the batched engine
    (:func:`~decaylab.engine.semantics.decay_multipliers`: weights decay; biases too with ``task.decay_bias``)."""
    weights: list[torch.Tensor] = [m.weight for m in model.modules() if isinstance(m, nn.Linear)]
    biases: list[torch.Tensor] = [m.bias for m in model.modules() if isinstance(m, nn.Linear)]
    multipliers = decay_multipliers(task)  # every W, then every b
    decayed = [t for t, m in zip(weights + biases, multipliers, strict=True) if m > 0]
    rest = [t for t, m in zip(weights + biases, multipliers, strict=True) if m == 0]
    return decayed, rest, weights


def _optimizer(task: Task, hyper: Hyper, decayed: list, rest: list, l2_in_optimizer: bool) -> torch.optim.Optimizer:
    groups = [{"params": decayed, "weight_decay": hyper.l2 if l2_in_optimizer else 0.0}]
    if rest:
        groups.append({"params": rest, "weight_decay": 0.0})
    if task.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=hyper.lr, momentum=task.momentum)
    if hyper.decoupled:
        groups = [{"params": decayed, "weight_decay": hyper.decoupled}] + groups[1:]
        return torch.optim.AdamW(groups, lr=hyper.lr, betas=task.betas, eps=task.eps)
    return torch.optim.Adam(groups, lr=hyper.lr, betas=task.betas, eps=task.eps)


def data_loss(task: Task, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The mean data loss of the outputs ``out`` (n, d_out) against ``y``."""
    if task.loss == "half_mse":
        return ((out - y) ** 2 / 2).mean()  # D2L's squared_loss, averaged
    if task.loss == "cross_entropy":
        return F.cross_entropy(out, y)
    return F.binary_cross_entropy_with_logits(out, y)


def _accuracy(task: Task, out: torch.Tensor, y: torch.Tensor) -> float:
    if task.loss == "cross_entropy":
        return (out.argmax(dim=1) == y).to(out.dtype).mean().item()
    return ((out > 0) == (y > 0.5)).to(out.dtype).mean().item()


@torch.no_grad()
def _evaluate(task: Task, model: nn.Module, data: Split, weights: list[torch.Tensor]) -> list[float]:
    model.eval()
    row = []
    outs = {}
    for split, X, y in (("train", data.X_train, data.y_train), ("test", data.X_test, data.y_test)):
        outs[split] = (model(X), y)
        row.append(data_loss(task, *outs[split]).item())
    row.append(torch.sqrt(tensor_sum(w.pow(2).sum() for w in weights)).item())
    if task.classification:
        row += [_accuracy(task, *outs["train"]), _accuracy(task, *outs["test"])]
    model.train()
    return row


def _finite(model: nn.Module, row: list[float], data: Split) -> bool:
    """Losses (the test loss only if there is a test set) and parameters all finite."""
    losses = row[:2] if data.n_test else row[:1]
    return all(math.isfinite(v) for v in losses) and all(bool(torch.isfinite(p).all()) for p in model.parameters())


@torch.no_grad()
def _project(decayed: list[torch.Tensor], radius: float) -> None:
    """``w ← w·radius/‖w‖₂`` on every decayed tensor when their joint norm exceeds ``radius``."""
    norm = torch.sqrt(tensor_sum(w.pow(2).sum() for w in decayed))
    bound = norm.new_tensor(radius)  # rounded once to the task's dtype, as the batched engine does
    if norm > bound:
        for w in decayed:
            w.mul_(bound / norm)


def train_one(task: Task, hyper: Hyper, data: Split | None = None) -> Outcome:
    """Train one configuration the ordinary way and return its curves and final metrics."""
    data = load_data(task, hyper.seed) if data is None else data
    model = build_model(task, hyper)
    decayed, rest, weights = _split_parameters(task, model)
    both = bool(hyper.l2 and hyper.decoupled)  # coupled term by hand, so it sees w before decoupled decay
    opt = _optimizer(task, hyper, decayed, rest, l2_in_optimizer=not both)
    order = generator(hyper.seed, "order")
    linears = nn.ModuleList(m for m in model if isinstance(m, nn.Linear))  # all of the model's parameters
    averaged = AveragedModel(linears).to(torch.float64) if task.average_from is not None else None
    rows: list[list[float]] = []
    kept: list[list[float]] = []
    steps = 0
    evaluated = set(task.eval_epochs)
    diverged = None
    for epoch in range(1, task.epochs + 1):
        if diverged is None:
            for idx in epoch_batches(data.n_train, task.batch_size, order):
                x, y = (data.X_train, data.y_train) if idx is None else (data.X_train[idx], data.y_train[idx])
                opt.zero_grad(set_to_none=True)
                data_loss(task, model(x), y).backward()
                _decay_before_step(task, hyper, decayed, both)
                opt.step()
                steps += 1
                if hyper.l1:
                    with torch.no_grad():
                        for w in decayed:
                            soft_threshold_(w, hyper.lr * hyper.l1)
                if hyper.radius is not None:
                    _project(decayed, hyper.radius)
                if averaged is not None and task.average_from is not None and epoch >= task.average_from:
                    averaged.update_parameters(linears)
            if task.keep_weights == "epochs" or (task.keep_weights == "final" and epoch == task.epochs):
                kept.append(parameters_to_vector(model.parameters()).detach().tolist())
            if epoch in evaluated:
                rows.append(_evaluate(task, model, data, weights))
                if not _finite(model, rows[-1], data):
                    diverged = epoch
        elif epoch in evaluated:
            rows.append([math.nan] * len(task.metric_names))
    average = parameters_to_vector(averaged.parameters()).tolist() if averaged is not None else None
    state = _optimizer_state(opt, list(model.parameters()), steps) if task.keep_optimizer_state else None
    return make_outcome(task, rows, diverged, kept if task.keep_weights != "none" else None, average, state)


def _optimizer_state(opt: torch.optim.Optimizer, params: list[nn.Parameter], steps: int) -> dict[str, list[float]]:
    """``opt``'s per-parameter buffers (those shaped like their parameter), each flattened over ``params``
    in ``parameters_to_vector``'s layout; and ``step``: ``[steps]``."""
    names = sorted({k for p in params for k, v in opt.state[p].items() if torch.is_tensor(v) and v.shape == p.shape})
    state = {name: parameters_to_vector([opt.state[p][name] for p in params]).tolist() for name in names}
    state["step"] = [float(steps)]
    return state


@torch.no_grad()
def _decay_before_step(task: Task, hyper: Hyper, decayed: list[torch.Tensor], both: bool) -> None:
    if both:
        for w in decayed:
            if w.grad is not None:  # as torch.optim, a tensor without a gradient is skipped
                w.grad.add_(w, alpha=hyper.l2)
    if hyper.decoupled and task.optimizer == "sgd":
        for w in decayed:
            w.mul_(1 - hyper.lr * hyper.decoupled)


def train_sequential(task: Task, hypers: Sequence[Hyper]) -> list[Outcome]:
    """Train each configuration alone, one after another; outcomes in the order of ``hypers``."""
    hypers = check_hypers(task, hypers)
    cache: dict[int, Split] = {}
    outcomes = []
    for h in hypers:
        if h.seed not in cache:
            cache[h.seed] = load_data(task, h.seed)
        outcomes.append(train_one(task, h, cache[h.seed]))
    return outcomes
