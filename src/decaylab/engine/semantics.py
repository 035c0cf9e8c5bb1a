r"""The exact training semantics that both engines follow, and the pieces of it they share.

A configuration ``(task, hyper)`` is trained as follows; every random number comes from the
per-seed streams of :mod:`decaylab.rng` (``generator(hyper.seed, stream)``), so a configuration's
numbers depend on its own seed only — never on which configurations were trained beside it.

**Precision.** Everything is computed in ``task.dtype`` (float32 by default, or float64): data,
parameters, gradients, optimizer state, random draws (each drawn directly in that dtype) and the
per-configuration numbers (``lr``, ``l2``, ... rounded once to it).

**Data.** ``task.data(seed)``; ``X`` is converted to ``task.dtype``, ``y`` to ``task.dtype`` (``'half_mse'``,
``'bce'``) or int64 (``'cross_entropy'``). The test set may be empty.

**Initialization** (stream ``init``), layer by layer in order, ``(i, o)`` = (fan-in, fan-out):

* ``'normal'``: ``W = torch.normal(0.0, init_std, (i, o), generator=init)``, then ``b = torch.zeros(o)``
  (``init_std = 0``: all parameters start at exactly 0);
* ``'torch'`` (``nn.Linear``'s distribution), with ``a = 1/sqrt(i)``:
  ``W = torch.rand((i, o), generator=init) * (2*a) - a``, then ``b = torch.rand((o,), generator=init) * (2*a) - a``.

The model computes ``h ← act(h @ W + b)`` for the hidden layers and ``ŷ = h @ W + b`` at the end.
With ``task.norm == 'layer'`` a hidden layer computes ``h ← act(LN(h @ W) + b)`` instead, where
``LN(z) = (z − μ)/sqrt(σ² + ε)`` with μ and σ² (biased) the mean and variance of each row ``z`` over the
layer's features and ``ε = LAYER_NORM_EPS`` — ``F.layer_norm(z, (width,))`` without weight or bias; the
bias is added after the normalization (the shift β of an affine LayerNorm whose scale is fixed at 1).

**Each epoch** (stream ``order``): ``perm = torch.randperm(n_train, generator=order)`` and the
minibatches are the consecutive slices ``perm[i:i+B]`` (the last may be smaller, as a DataLoader
without ``drop_last``). Full batch (``batch_size=None``): no permutation is drawn, rows in order.

**Each step** on a minibatch ``(x, y)`` of ``m`` rows:

1. input noise, if ``task.noise`` (stream ``noise``): ``x ← x + σ·torch.randn(x.shape, generator=noise)``;
2. forward; after each hidden activation, if ``task.dropout`` (stream ``dropout``), for every hidden
   layer in order ``u = torch.rand(h.shape, generator=dropout)``, ``keep = u ≥ p``,
   ``h ← h·keep/(1−p)`` (zeros when ``p = 1``). The draws happen for every hidden layer whatever ``p``
   (also 0), so a stream's position never depends on the configuration's numbers;
3. ``g = ∇ L`` with ``L`` the mean data loss over the minibatch:
   ``'half_mse'``: :math:`\frac{1}{m\,d}\sum (\hat y-y)^2/2`; ``'cross_entropy'``: mean of
   ``-log softmax(ŷ)[y]``; ``'bce'``: mean binary cross-entropy on the logits;
4. decayed tensors ``w`` (weights; biases only if ``task.decay_bias``):
   coupled ``g_w ← g_w + l2·w``, then decoupled ``w ← w·(1 − lr·decoupled)``;
5. optimizer update of every parameter ``θ`` with its ``g`` (``t`` = step count from 1):

   * ``'sgd'``: ``buf ← g`` at the first step, else ``buf ← momentum·buf + g``; ``θ ← θ − lr·buf``
     (with ``momentum = 0``: ``θ ← θ − lr·g``), as ``torch.optim.SGD``;
   * ``'adam'``: ``m ← β₁m + (1−β₁)g`` (``lerp``), ``v ← β₂v + (1−β₂)g²``,
     ``θ ← θ − (lr/(1−β₁ᵗ))·m / (√v/√(1−β₂ᵗ) + ε)``, as ``torch.optim.Adam`` (single-tensor path);
     together with step 4's decoupled decay this is ``torch.optim.AdamW``;
6. L1 proximal step on decayed tensors: ``w ← sign(w)·max(|w| − lr·l1, 0)``;
7. projection, if ``hyper.radius`` is not None: with ``r = ‖w‖₂`` the norm of all decayed tensors
   together (``sqrt(Σ_tensors Σ w²)``), every decayed tensor ``w ← w·(radius/r)`` when ``r > radius``;
   inside the ball nothing changes. This is the Euclidean projection onto ``{‖w‖₂ ≤ radius}``, so
   with ``'sgd'`` steps 5 and 7 are projected gradient descent.

**After every** ``task.eval_every``-th **epoch and the last** (after every epoch by default), in
evaluation mode (no noise, no dropout), on the full training and test sets:
``train_loss`` and ``test_loss`` (data loss only, no penalty), ``w_norm`` = the L2 norm of all weight
matrices together (biases excluded), and for classification ``train_acc`` / ``test_acc`` (argmax of
the logits; for ``'bce'`` a logit > 0 means class 1). Curves hold ``epoch`` = those epochs
(``task.eval_epochs``; 1..E by default); the final metrics are the last epoch's values. An empty
test set gives NaN test metrics.

**Parameters kept** (``task.keep_weights``): the flat vector
``θ = parameters_to_vector(model.parameters())`` of the equivalent ``nn.Sequential`` of ``nn.Linear``
layers — for each layer ``Wᵀ`` (``(o, i)``, row by row) then ``b`` — after the last epoch (``'final'``)
or after every epoch (``'epochs'``), into ``Outcome.weights``.

**Iterate average** (``task.average_from``, a 1-based epoch; ``None``: none). From the first step of
epoch ``average_from`` on, after every step (after step 7), the flat vector ``θ`` (layout above) enters
the running mean ``θ̄ₙ = θ̄ₙ₋₁ + (θₙ − θ̄ₙ₋₁)/n`` (``θ̄₀ = 0``, so ``θ̄₁ = θ₁`` exactly), the
equal-weight average of ``torch.optim.swa_utils.AveragedModel``: after the last epoch ``θ̄`` is the
Polyak–Ruppert average ``(θ₁ + … + θ_N)/N`` of the ``N`` iterates of epochs ``average_from..E``, into
``Outcome.averaged_weights``. The mean is kept in float64 whatever ``task.dtype`` (each float32
iterate converted exactly): a running mean of thousands of float32 iterates in float32 would drift
by about √N float32 roundings. Averaging changes no other number.

**Optimizer state kept** (``task.keep_optimizer_state``): after the last epoch, the optimizer's
per-parameter buffers under ``torch.optim``'s names (``momentum_buffer``; ``exp_avg``, ``exp_avg_sq``),
each flattened in the layout of ``θ``, and ``step = [t]``, the number of optimizer steps taken, into
``Outcome.optimizer_state``.

**Divergence.** If at an evaluation the training loss, the test loss (unless the test set is empty)
or any parameter is not finite, the configuration is marked ``status="diverged"`` with
``diverged_epoch`` = that epoch (1-based), its training stops, its curves after that epoch (and so its
final metrics) are NaN, and it keeps no parameters (``weights=None``, ``averaged_weights=None``,
``optimizer_state=None``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Protocol

import torch

from decaylab.engine.task import Task
from decaylab.policy import DecayPolicy, decay_plan
from decaylab.results import Outcome
from decaylab.rng import generator
from decaylab.validation import parameter_error

__all__ = [
    "LAYER_NORM_EPS",
    "EvaluatedTask",
    "Split",
    "decay_multipliers",
    "dtype_of",
    "epoch_batches",
    "initial_parameters",
    "layer_tensors",
    "load_data",
    "make_outcome",
    "soft_threshold_",
    "tensor_sum",
]


LAYER_NORM_EPS = 1e-5
"""ε of the layer normalization of ``Task(norm='layer')``: ``torch.nn.LayerNorm``'s default."""


def dtype_of(task: Task) -> torch.dtype:
    """The torch dtype the engines compute in: ``task.dtype`` (``'float32'`` or ``'float64'``)."""
    return torch.float64 if task.dtype == "float64" else torch.float32


@dataclass(frozen=True)
class Split:
    """A data set as the engines use it: inputs in the task's dtype, targets in the loss's dtype and shape."""

    X_train: torch.Tensor  # (n_train, d_in)
    y_train: torch.Tensor  # (n_train, d_out) float, or (n_train,) int64 for cross-entropy
    X_test: torch.Tensor
    y_test: torch.Tensor

    @property
    def n_train(self) -> int:
        return int(self.X_train.shape[0])

    @property
    def n_test(self) -> int:
        """Rows of the test set; 0 is allowed (test metrics are then NaN, which is not divergence)."""
        return int(self.X_test.shape[0])


def load_data(task: Task, seed: int) -> Split:
    """``task.data(seed)``, converted to the engines' dtypes and checked against ``task``'s shapes."""
    raw = task.data(seed)
    parts = []
    for x_name, y_name in (("X_train", "y_train"), ("X_test", "y_test")):
        X = torch.as_tensor(getattr(raw, x_name)).to(dtype_of(task)).contiguous()
        y = torch.as_tensor(getattr(raw, y_name))
        if X.ndim != 2 or X.shape[1] != task.layers[0]:
            raise parameter_error("data", "Task", f"a data set with {x_name} of shape (n, {task.layers[0]})", tuple(X.shape))
        y = _targets(task, y, y_name, int(X.shape[0]))
        parts += [X, y]
    return Split(*parts)


def _targets(task: Task, y: torch.Tensor, name: str, n: int) -> torch.Tensor:
    if task.loss == "cross_entropy":
        y = y.reshape(-1).to(torch.int64)
        expected: tuple[int, ...] = (n,)
    else:
        y = y.to(dtype_of(task))
        if y.ndim == 1 and task.layers[-1] == 1:
            y = y.reshape(-1, 1)
        expected = (n, task.layers[-1])
    if tuple(y.shape) != expected:
        raise parameter_error("data", "Task", f"a data set with {name} of shape {expected}", tuple(y.shape))
    return y.contiguous()


def initial_parameters(task: Task, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The initial ``(W, b)`` of every layer, ``W`` of shape ``(fan_in, fan_out)``, from the ``init`` stream."""
    g = generator(seed, "init")
    dtype = dtype_of(task)
    params = []
    for fan_in, fan_out in pairwise(task.layers):
        if task.init == "normal":
            W = torch.normal(0.0, task.init_std, (fan_in, fan_out), generator=g, dtype=dtype)
            b = torch.zeros(fan_out, dtype=dtype)
        else:
            a = 1.0 / math.sqrt(fan_in)
            W = torch.rand((fan_in, fan_out), generator=g, dtype=dtype) * (2 * a) - a
            b = torch.rand((fan_out,), generator=g, dtype=dtype) * (2 * a) - a
        params.append((W, b))
    return params


def layer_tensors(task: Task, vector: Sequence[float] | torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Cut a flat vector in the layout of ``θ`` (kept weights, averages, optimizer buffers) into one
    ``(W, b)`` per layer, ``W`` of shape ``(out, in)`` as ``nn.Linear.weight``, ``b`` of shape ``(out,)``, in the
    task's dtype."""
    flat = torch.as_tensor(vector, dtype=dtype_of(task)).reshape(-1)
    sizes = [n for i, o in pairwise(task.layers) for n in (o * i, o)]
    if flat.numel() != sum(sizes):
        raise parameter_error("vector", "layer_tensors", f"{sum(sizes)} numbers for layers {task.layers}", f"{flat.numel()} numbers")
    parts = flat.split(sizes)
    return [(parts[2 * l].view(o, i), parts[2 * l + 1]) for l, (i, o) in enumerate(pairwise(task.layers))]


def epoch_batches(n_train: int, batch_size: int | None, order: torch.Generator) -> list[torch.Tensor | None]:
    """The row indices of each minibatch of one epoch; ``[None]`` (all rows, in order) for full batch."""
    if batch_size is None:
        return [None]
    perm = torch.randperm(n_train, generator=order)
    return [perm[i : i + batch_size] for i in range(0, n_train, batch_size)]


def tensor_sum(terms: Iterable[torch.Tensor]) -> torch.Tensor:
    r"""``t₁ + t₂ + … + t_n`` added left to right: bit for bit what Python's ``sum`` gives (``0 + t₁`` is
    ``t₁``), but always a tensor — ``sum`` of no terms is the int 0, which ``torch.sqrt`` rejects.

    Raises:
        InvalidParameterError: ``terms`` is empty.
    """
    it = iter(terms)
    total = next(it, None)
    if total is None:
        raise parameter_error("terms", "tensor_sum", "at least one tensor", "none")
    for t in it:
        total = total + t
    return total


def soft_threshold_(w: torch.Tensor, threshold: torch.Tensor | float) -> torch.Tensor:
    r"""In place :math:`w \leftarrow \operatorname{sign}(w)\max(|w| - t, 0)`, the proximal step of :math:`t\,|w|`."""
    return w.copy_(torch.sign(w) * torch.clamp(w.abs() - threshold, min=0))


class EvaluatedTask(Protocol):
    """What :func:`make_outcome` reads of a task: :class:`~decaylab.engine.task.Task` and
    :class:`~decaylab.engine.module.ModuleTask` both have it."""

    @property
    def eval_epochs(self) -> tuple[int, ...]: ...

    @property
    def metric_names(self) -> tuple[str, ...]: ...


def make_outcome(
    task: EvaluatedTask,
    rows: list[list[float]],
    diverged_epoch: int | None,
    weights: list[list[float]] | None = None,
    averaged_weights: list[float] | None = None,
    optimizer_state: dict[str, list[float]] | None = None,
) -> Outcome:
    """An :class:`Outcome` from one row of metric values per evaluated epoch (``task.eval_epochs``),
    each in ``task.metric_names`` order.

    Rows after ``diverged_epoch`` are replaced by NaN; the final metrics are the last row. ``weights``
    (the kept parameter vectors), ``averaged_weights`` (the iterate average) and ``optimizer_state``
    are dropped for a configuration that diverged.
    """
    nan = float("nan")
    names = task.metric_names
    epochs: list[float] = list(task.eval_epochs)  # ints; Outcome.curves holds floats
    if diverged_epoch is not None:
        rows = [row if epoch <= diverged_epoch else [nan] * len(names) for epoch, row in zip(epochs, rows, strict=True)]
    curves: dict[str, list[float]] = {"epoch": epochs}
    for j, name in enumerate(names):
        curves[name] = [float(row[j]) for row in rows]
    metrics = {name: curves[name][-1] for name in names}
    if diverged_epoch is None:
        return Outcome(
            status="done", metrics=metrics, curves=curves, weights=weights, averaged_weights=averaged_weights,
            optimizer_state=optimizer_state,
        )
    return Outcome(status="diverged", metrics=metrics, curves=curves, diverged_epoch=diverged_epoch)


def decay_multipliers(task: Task) -> list[float]:
    """λ's multiplier of every stacked tensor (every ``W``, then every ``b``), asked of :mod:`decaylab.policy`.

    The MLP's tensors are named as in an ``nn.Sequential`` of ``nn.Linear`` layers (``layers.{l}.weight``,
    ``layers.{l}.bias``) and judged by name and shape; the policy is :class:`~decaylab.DecayPolicy`'s default
    (weights decay, biases do not), or with ``task.decay_bias`` one that also decays biases and 1-D tensors.
    """
    pairs = [(f"layers.{l}.weight", torch.empty(o, i, device="meta")) for l, (i, o) in enumerate(pairwise(task.layers))]
    pairs += [(f"layers.{l}.bias", torch.empty(o, device="meta")) for l, o in enumerate(task.layers[1:])]
    # the MLP has no norm-layer parameters (Task(norm="layer") is scale-free, its shift is the layer's bias)
    policy = DecayPolicy(exclude_bias=False, exclude_1d=False, exclude_norm=False) if task.decay_bias else DecayPolicy()
    return [entry.multiplier for entry in decay_plan(pairs, policy, owner="Task")]
