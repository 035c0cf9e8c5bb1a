r"""The exact training semantics that both engines follow, and the pieces of it they share.

A configuration ``(task, hyper)`` is trained as follows; every random number comes from the
per-seed streams of :mod:`decaylab.rng` (``generator(hyper.seed, stream)``), so a configuration's
numbers depend on its own seed only — never on which configurations were trained beside it.

**Data.** ``task.data(seed)``; ``X`` is converted to float32, ``y`` to float32 (``'half_mse'``,
``'bce'``) or int64 (``'cross_entropy'``). Training is in float32.

**Initialization** (stream ``init``), layer by layer in order, ``(i, o)`` = (fan-in, fan-out):

* ``'normal'``: ``W = torch.normal(0.0, init_std, (i, o), generator=init)``, then ``b = torch.zeros(o)``;
* ``'torch'`` (``nn.Linear``'s distribution), with ``a = 1/sqrt(i)``:
  ``W = torch.rand((i, o), generator=init) * (2*a) - a``, then ``b = torch.rand((o,), generator=init) * (2*a) - a``.

The model computes ``h ← act(h @ W + b)`` for the hidden layers and ``ŷ = h @ W + b`` at the end.

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
6. L1 proximal step on decayed tensors: ``w ← sign(w)·max(|w| − lr·l1, 0)``.

**After each epoch**, in evaluation mode (no noise, no dropout), on the full training and test sets:
``train_loss`` and ``test_loss`` (data loss only, no penalty), ``w_norm`` = the L2 norm of all weight
matrices together (biases excluded), and for classification ``train_acc`` / ``test_acc`` (argmax of
the logits; for ``'bce'`` a logit > 0 means class 1). Curves hold ``epoch`` = 1..E; the final metrics
are the last epoch's values.

**Divergence.** If after an epoch a loss or any parameter is not finite, the configuration is marked
``status="diverged"`` with ``diverged_epoch`` = that epoch (1-based), its training stops, and its
curves after that epoch (and so its final metrics) are NaN.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from decaylab.engine.task import Task
from decaylab.results import Outcome
from decaylab.rng import generator
from decaylab.validation import parameter_error

__all__ = [
    "Split",
    "epoch_batches",
    "initial_parameters",
    "load_data",
    "make_outcome",
    "soft_threshold_",
]

DTYPE = torch.float32


@dataclass(frozen=True)
class Split:
    """A data set as the engines use it: float32 inputs, targets in the loss's dtype and shape."""

    X_train: torch.Tensor  # (n_train, d_in)
    y_train: torch.Tensor  # (n_train, d_out) float, or (n_train,) int64 for cross-entropy
    X_test: torch.Tensor
    y_test: torch.Tensor

    @property
    def n_train(self) -> int:
        return int(self.X_train.shape[0])


def load_data(task: Task, seed: int) -> Split:
    """``task.data(seed)``, converted to the engines' dtypes and checked against ``task``'s shapes."""
    raw = task.data(seed)
    parts = []
    for x_name, y_name in (("X_train", "y_train"), ("X_test", "y_test")):
        X = torch.as_tensor(getattr(raw, x_name)).to(DTYPE).contiguous()
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
        y = y.to(DTYPE)
        if y.ndim == 1 and task.layers[-1] == 1:
            y = y.reshape(-1, 1)
        expected = (n, task.layers[-1])
    if tuple(y.shape) != expected:
        raise parameter_error("data", "Task", f"a data set with {name} of shape {expected}", tuple(y.shape))
    return y.contiguous()


def initial_parameters(task: Task, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The initial ``(W, b)`` of every layer, ``W`` of shape ``(fan_in, fan_out)``, from the ``init`` stream."""
    g = generator(seed, "init")
    params = []
    for fan_in, fan_out in zip(task.layers[:-1], task.layers[1:]):
        if task.init == "normal":
            W = torch.normal(0.0, task.init_std, (fan_in, fan_out), generator=g, dtype=DTYPE)
            b = torch.zeros(fan_out, dtype=DTYPE)
        else:
            a = 1.0 / math.sqrt(fan_in)
            W = torch.rand((fan_in, fan_out), generator=g, dtype=DTYPE) * (2 * a) - a
            b = torch.rand((fan_out,), generator=g, dtype=DTYPE) * (2 * a) - a
        params.append((W, b))
    return params


def epoch_batches(n_train: int, batch_size: int | None, order: torch.Generator) -> list[torch.Tensor | None]:
    """The row indices of each minibatch of one epoch; ``[None]`` (all rows, in order) for full batch."""
    if batch_size is None:
        return [None]
    perm = torch.randperm(n_train, generator=order)
    return [perm[i : i + batch_size] for i in range(0, n_train, batch_size)]


def soft_threshold_(w: torch.Tensor, threshold: torch.Tensor | float) -> torch.Tensor:
    r"""In place :math:`w \leftarrow \operatorname{sign}(w)\max(|w| - t, 0)`, the proximal step of :math:`t\,|w|`."""
    return w.copy_(torch.sign(w) * torch.clamp(w.abs() - threshold, min=0))


def make_outcome(task: Task, rows: list[list[float]], diverged_epoch: int | None) -> Outcome:
    """An :class:`Outcome` from one row of metric values per epoch (in ``task.metric_names`` order).

    Rows after ``diverged_epoch`` are replaced by NaN; the final metrics are the last row.
    """
    nan = float("nan")
    names = task.metric_names
    if diverged_epoch is not None:
        rows = [row if e < diverged_epoch else [nan] * len(names) for e, row in enumerate(rows)]
    curves: dict[str, list[float]] = {"epoch": list(range(1, len(rows) + 1))}
    for j, name in enumerate(names):
        curves[name] = [float(row[j]) for row in rows]
    metrics = {name: curves[name][-1] for name in names}
    if diverged_epoch is None:
        return Outcome(status="done", metrics=metrics, curves=curves)
    return Outcome(status="diverged", metrics=metrics, curves=curves, diverged_epoch=diverged_epoch)
