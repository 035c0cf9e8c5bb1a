r"""The batched engine: K configurations of one :class:`~decaylab.engine.task.Task` trained at once.

Each configuration follows :mod:`decaylab.engine.semantics` exactly as if it ran alone; only the
arithmetic is laid out differently.

**Layout.** Parameters are stacked along a leading configuration axis, stored like ``nn.Linear``:
``W`` of shape ``(K, out, in)`` and ``b`` of shape ``(K, out, 1)``; activations are kept transposed,
``(K, features, m)`` for a minibatch of ``m`` rows, so a layer is ``Z = baddbmm(b, W, H)``. The
``(K, out, in)`` storage (rather than ``(K, in, out)``) lets the first layer of all configurations
that share a seed — hence the same minibatch — run as *one* matrix product
``(K·out, in) @ (in, m)`` instead of K small ones, which is what makes wide sweeps of small models fast.

**Precision.** Everything is in the task's dtype (:func:`~decaylab.engine.semantics.dtype_of`).
**Per-configuration numbers** (``lr``, ``l2``, ``decoupled``, ``l1``, ``radius``, dropout ``p``, noise
``σ``) are tensors of shape ``(K, 1, 1)`` broadcast along the configuration axis; each is computed in
float64 from the Python values and rounded once to the task's dtype, as PyTorch rounds its
Python-float arguments. A configuration without a radius gets ``radius = inf``: never projected.

**Random streams.** Configurations with the same seed draw the same numbers, so the chunk is sorted
by seed, and data, batch order, noise and dropout uniforms are produced once per distinct seed and
indexed per configuration (Python loops run over distinct seeds, never over configurations).
Dropout masks are ``keep = u ≥ p`` with ``u`` the seed's draws and ``p`` the configuration's.

**Gradients.** Each configuration's gradient is that of its own mean loss: the K losses are
independent, so the gradient of their sum w.r.t. configuration k's parameters is exactly k's gradient.
``backward="autograd"`` computes it with one ``backward()`` of the sum; ``backward="manual"`` (the
default) writes the backward pass out for the supported layers and losses:

.. math::

    \delta_L = \partial \bar L / \partial Z_L, \quad
    \nabla W_l = \delta_l H_{l-1}^\top, \quad \nabla b_l = \textstyle\sum_{\text{rows}} \delta_l, \quad
    \delta_{l-1} = \sigma'(Z_{l-1}) \odot \frac{\text{keep}}{1-p} \odot (W_l^\top \delta_l)

with :math:`\delta_L = (\hat Y - Y)/(m\,d)` for half-MSE, :math:`(\mathrm{softmax}(Z) - \mathrm{onehot}(y))/m`
for cross-entropy and :math:`(\mathrm{sigmoid}(Z) - y)/m` for BCE. It skips autograd's graph
bookkeeping, which dominates for small models (measured: see ``benchmarks/README.md``).

**Updates**, for every stacked parameter ``θ`` with gradient ``g`` (decay terms on decayed tensors only):

.. math::

    g &\leftarrow g + \lambda_2 \theta, \qquad \theta \leftarrow \theta\,(1 - \eta\lambda_d) \\
    \text{SGD:}\; b &\leftarrow \mu b + g,\; \theta \leftarrow \theta - \eta b \qquad
    \text{Adam:}\; m \leftarrow \mathrm{lerp}(m, g, 1-\beta_1),\;
    v \leftarrow \beta_2 v + (1-\beta_2) g^2,\;
    \theta \leftarrow \theta - \frac{\eta}{1-\beta_1^t}\,\frac{m}{\sqrt{v}/\sqrt{1-\beta_2^t} + \epsilon} \\
    \theta &\leftarrow \operatorname{sign}(\theta)\max(|\theta| - \eta\lambda_1, 0) \\
    \theta &\leftarrow \theta\,\frac{\rho}{r} \;\text{ if } r > \rho, \qquad
    r = \Big(\textstyle\sum_{\text{decayed } \theta} \sum \theta^2\Big)^{1/2}
    \;\text{(per configuration)}

written with the same elementary operations, in the same order, as ``torch.optim``'s single-tensor
kernels (Adam's bias corrections in float64 as Python floats, like ``torch.optim.Adam``); ``ρ`` is
the configuration's ``radius``. Everything but the projection is
:class:`decaylab.engine.updates.StackedUpdate`, the one implementation shared with the any-module
engine (:mod:`decaylab.engine.module`). Which tensors decay is asked of :mod:`decaylab.policy`
(:func:`decay_multipliers`): the weights, and the biases too with ``task.decay_bias``.

**Layer normalization** (``task.norm == 'layer'``): a hidden layer's output is
``Y = x̂ + b`` with ``x̂ = (Z − μ)·r``, ``r = 1/sqrt(σ² + ε)`` over the features of each column of
``Z = W H`` (no bias inside); its backward pass is
:math:`\partial L/\partial Z = r\,(dY - \overline{dY} - \hat x\,\overline{dY \hat x})` (means over the
features), and ``∇b = Σ_rows dY``.

**Kept weights.** With ``task.keep_weights`` the stack is copied after every epoch (``'epochs'``) or
after the last (``'final'``) and cut into one ``parameters_to_vector`` layout per configuration:
layer by layer, the ``(K, out, in)`` weight rows then the bias.

**Iterate average.** With ``task.average_from`` every stacked parameter has a float64 twin ``θ̄``,
updated after every step from that epoch on as ``θ̄ ← θ̄ + (θ − θ̄)/n`` (``n`` = steps averaged so
far, this one included; ``θ̄`` starts at 0), the arithmetic of ``AveragedModel``'s equal-weight
average; it is cut into the same per-configuration layout at the end.

**Optimizer state.** With ``task.keep_optimizer_state`` the buffers are cut after the last epoch
into the same layout and named as ``torch.optim`` names them (the momentum buffer is
``momentum_buffer``), with ``step = [t]``.

**Divergence.** At each evaluation a configuration whose losses or parameters are not finite is
marked diverged and frozen: its learning rate becomes 0 and its parameters and optimizer state are
set to zero, so it stays finite and costs nothing to the others; its stack rows keep being computed
(the shapes stay the same), so the other configurations' arithmetic is unchanged bit for bit. Between
evaluations (``task.eval_every > 1``) its non-finite numbers stay in its own rows: every product and
sum of the stack is row by row per configuration.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import TypeVar

import torch
import torch.nn.functional as F

from decaylab.engine.semantics import (
    LAYER_NORM_EPS,
    Split,
    decay_multipliers,
    dtype_of,
    epoch_batches,
    initial_parameters,
    load_data,
    make_outcome,
    tensor_sum,
)
from decaylab.engine.task import Hyper, Task, check_hypers
from decaylab.engine.updates import Coefficients, OptimizerSettings, StackedUpdate
from decaylab.results import Outcome
from decaylab.rng import generator
from decaylab.validation import check_choice, parameter_error

__all__ = ["BACKWARDS", "BatchedRun", "decay_multipliers", "run_batched_chunk"]

BACKWARDS = ("manual", "autograd")
EVAL_BLOCK_FLOATS = 1 << 20  # evaluation runs in row blocks of ≤ this many activations (K × width × rows)


def run_batched_chunk(task: Task, hypers: Sequence[Hyper], *, backward: str = "manual") -> list[Outcome]:
    """Train all of ``hypers`` as one stack (no further chunking); outcomes in the order of ``hypers``."""
    hypers = check_hypers(task, hypers)
    if not hypers:
        return []
    datasets = {seed: load_data(task, seed) for seed in sorted({h.seed for h in hypers})}
    return BatchedRun(task, hypers, datasets, backward=backward).run()


@dataclass
class _Group:
    """The configurations of one seed: rows ``start:stop`` of the (seed-sorted) stack, their data and streams."""

    seed: int
    start: int
    stop: int
    data: Split
    order: torch.Generator
    noise: torch.Generator | None
    dropout: torch.Generator | None

    @property
    def rows(self) -> slice:
        return slice(self.start, self.stop)


@dataclass
class _Batch:
    """One minibatch for the whole stack.

    ``xs`` holds each group's rows ``(m, in)`` when the configurations of a group see the same input;
    with input noise, ``x`` holds every configuration's own noisy input ``(K, m, in)`` instead.
    Targets are per configuration or broadcast (leading dim 1): ``y`` of shape (·, d_out, m) float,
    or ``labels`` (·, m) / ``onehot`` (·, C, m) for cross-entropy. ``keeps[l]`` is hidden layer l's
    dropout mask (K, w_l, m) or None.
    """

    xs: list[torch.Tensor] | None
    x: torch.Tensor | None
    y: torch.Tensor | None
    labels: torch.Tensor | None
    onehot: torch.Tensor | None
    keeps: list[torch.Tensor | None]  # 0./1. floats
    m: int

    # The fields a task's input mode and loss guarantee are set (an internal invariant, not user input):
    @property
    def shared_xs(self) -> list[torch.Tensor]:
        """``xs``: the task has no input noise."""
        return _required(self.xs, "_Batch.xs")

    @property
    def float_y(self) -> torch.Tensor:
        """``y``: the loss is half_mse or binary cross-entropy."""
        return _required(self.y, "_Batch.y")

    @property
    def class_labels(self) -> torch.Tensor:
        """``labels``: the loss is cross-entropy."""
        return _required(self.labels, "_Batch.labels")

    @property
    def onehot_targets(self) -> torch.Tensor:
        """``onehot``: the loss is cross-entropy and the batch is a training batch."""
        return _required(self.onehot, "_Batch.onehot")


_T = TypeVar("_T")


def _required(value: _T | None, name: str) -> _T:
    """``value``, or RuntimeError if it is None (a bug in this module, not a user error)."""
    if value is None:
        raise RuntimeError(f"internal error: {name} is None")
    return value


class BatchedRun:
    """The state of one stack of configurations: parameters, optimizer state, streams, curves.

    ``hypers`` may come in any order; the stack is sorted by seed internally and :meth:`run`
    returns the outcomes in the order given. ``datasets`` maps every seed to its :class:`Split`.
    """

    def __init__(
        self, task: Task, hypers: Sequence[Hyper], datasets: Mapping[int, Split], *, backward: str = "manual"
    ) -> None:
        self.task = task
        self.dtype = dtype_of(task)
        self.backward = check_choice(backward, "backward", "BatchedRun", BACKWARDS)
        self.perm = sorted(range(len(hypers)), key=lambda i: hypers[i].seed)
        self.hypers = [hypers[i] for i in self.perm]
        self.K = len(self.hypers)
        self.groups = self._make_groups(datasets)
        self.gidx = torch.tensor([gi for gi, g in enumerate(self.groups) for _ in range(g.start, g.stop)])
        self.W, self.b = self._initial_stack()
        self.params = self.W + self.b
        self.multipliers = decay_multipliers(task)
        self.decayed = [m > 0 for m in self.multipliers]
        self.updater = StackedUpdate(
            self.params,
            self.multipliers,
            OptimizerSettings(task.optimizer, task.momentum, False, task.betas, task.eps),
            Coefficients(
                lr=[h.lr for h in self.hypers], l2=[h.l2 for h in self.hypers],
                decoupled=[h.decoupled for h in self.hypers], l1=[h.l1 for h in self.hypers],
            ),
        )
        self.diverged_epoch: list[int | None] = [None] * self.K
        self.kept: list[torch.Tensor] = []  # (K, n_params) per kept epoch
        self.averaged: list[torch.Tensor] | None = None  # float64 running means of self.params (Task.average_from)
        if task.average_from is not None:
            self.averaged = [torch.zeros_like(P, dtype=torch.float64) for P in self.params]
        self.n_averaged = 0  # steps in the running means self.averaged
        self._set_coefficients()
        self._set_eval_targets()

    # ----------------------------------------------------------------- set-up
    def _make_groups(self, datasets: Mapping[int, Split]) -> list[_Group]:
        groups: list[_Group] = []
        for k, h in enumerate(self.hypers):
            if groups and groups[-1].seed == h.seed:
                groups[-1].stop = k + 1
                continue
            groups.append(
                _Group(
                    seed=h.seed,
                    start=k,
                    stop=k + 1,
                    data=datasets[h.seed],
                    order=generator(h.seed, "order"),
                    noise=generator(h.seed, "noise") if self.task.noise else None,
                    dropout=generator(h.seed, "dropout") if self.task.dropout else None,
                )
            )
        first = groups[0].data
        for g in groups[1:]:
            for name in ("X_train", "y_train", "X_test", "y_test"):
                if getattr(g.data, name).shape != getattr(first, name).shape:
                    raise parameter_error(
                        "data", "Task", "a function returning equally shaped data sets for every seed",
                        f"{name} {tuple(getattr(g.data, name).shape)} for seed {g.seed}",
                    )
        return groups

    def _initial_stack(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Draw each seed's initial parameters once and copy them to its configurations' rows."""
        Ws = [torch.empty(self.K, o, i, dtype=self.dtype) for i, o in pairwise(self.task.layers)]
        bs = [torch.empty(self.K, o, 1, dtype=self.dtype) for o in self.task.layers[1:]]
        for g in self.groups:
            for l, (W, b) in enumerate(initial_parameters(self.task, g.seed)):
                Ws[l][g.rows] = W.T
                bs[l][g.rows] = b[:, None]
        if self.backward == "autograd":
            for p in Ws + bs:
                p.requires_grad_(True)
        return Ws, bs

    def _coef(self, values: Sequence[float], dtype: torch.dtype | None = None) -> torch.Tensor:
        """Per-configuration numbers as a (K, 1, 1) tensor: computed in float64, rounded once (to the task's dtype)."""
        return torch.tensor(values, dtype=torch.float64).to(dtype or self.dtype).view(self.K, 1, 1)

    def _set_coefficients(self) -> None:
        """Build the per-configuration coefficient tensors of the layers and the constraint (the optimizer's
        own, lr and decays, are :class:`~decaylab.engine.updates.StackedUpdate`'s)."""
        hs = self.hypers
        has_radius = any(h.radius is not None for h in hs)
        self.radius = self._coef([math.inf if h.radius is None else h.radius for h in hs]) if has_radius else None
        self.sigma = self._coef([h.noise for h in hs]) if self.task.noise else None
        probs = [h.dropout_for(self.task) for h in hs]
        self.p = [self._coef([pr[l] for pr in probs]) for l in range(self.task.n_hidden)]
        # 1 − p, with 1 where p = 1: the mask is all False there, so h·keep/1 = 0 as in the reference
        self.q = [self._coef([1 - pr[l] if pr[l] < 1 else 1.0 for pr in probs]) for l in range(self.task.n_hidden)]

    def _set_eval_targets(self) -> None:
        """Evaluation batches per split, in row blocks small enough to stay in cache (about 4 MB per layer)."""
        rows = max(64, EVAL_BLOCK_FLOATS // (self.K * max(self.task.layers[1:])))
        self.eval_sets: list[tuple[int, list[_Batch]]] = []
        for split in ("train", "test"):
            xs = [getattr(g.data, f"X_{split}") for g in self.groups]
            ys = [getattr(g.data, f"y_{split}") for g in self.groups]
            n = int(xs[0].shape[0])
            blocks = [
                self._make_batch(
                    [x[a : a + rows] for x in xs], None, [y[a : a + rows] for y in ys],
                    [None] * self.task.n_hidden, onehot=False,
                )
                for a in range(0, n, rows)
            ]
            self.eval_sets.append((n, blocks))

    # ----------------------------------------------------------------- data
    def _per_config(self, per_seed: list[torch.Tensor]) -> torch.Tensor:
        """One tensor per seed → (K, ...) per configuration; (1, ...), broadcast, when there is one seed."""
        if len(per_seed) == 1:
            return per_seed[0].unsqueeze(0)
        return torch.stack(per_seed).index_select(0, self.gidx)

    def _make_batch(
        self,
        xs: list[torch.Tensor],
        noises: list[torch.Tensor] | None,
        ys: list[torch.Tensor],
        uniforms: list[list[torch.Tensor] | None],
        onehot: bool = True,
    ) -> _Batch:
        m = int(xs[0].shape[0])
        x = None
        if noises is not None:  # x + σ·ε, every configuration its own input
            x = self._per_config(xs) + _required(self.sigma, "BatchedRun.sigma") * self._per_config(noises)
        y = labels = targets = None
        if self.task.loss == "cross_entropy":
            labels = self._per_config(ys)
            targets = F.one_hot(labels, self.task.layers[-1]).to(self.dtype).transpose(1, 2) if onehot else None
        else:
            y = self._per_config([t.T for t in ys])
        keeps: list[torch.Tensor | None] = []
        for l, us in enumerate(uniforms):  # keep = u ≥ p as 0/1 floats, (K, w, m) contiguous
            keeps.append(None if us is None else (self._per_config([u.T.contiguous() for u in us]) >= self.p[l]).to(self.dtype))
        return _Batch(xs=None if x is not None else xs, x=x, y=y, labels=labels, onehot=targets, keeps=keeps, m=m)

    def _training_batch(self, indices: Sequence[torch.Tensor | None]) -> _Batch:
        """Gather each seed's minibatch and draw its noise and dropout uniforms (once per seed)."""
        xs, ys, noises = [], [], []
        drawn: list[list[torch.Tensor]] = [[] for _ in range(self.task.n_hidden)]  # per hidden layer, per seed
        widths = self.task.layers[1:-1]
        for g, idx in zip(self.groups, indices, strict=True):
            X = g.data.X_train if idx is None else g.data.X_train.index_select(0, idx)
            Y = g.data.y_train if idx is None else g.data.y_train.index_select(0, idx)
            xs.append(X)
            ys.append(Y)
            if g.noise is not None:
                noises.append(torch.randn(X.shape, generator=g.noise, dtype=self.dtype))
            if g.dropout is not None:
                for l, w in enumerate(widths):
                    drawn[l].append(torch.rand((X.shape[0], w), generator=g.dropout, dtype=self.dtype))
        uniforms: list[list[torch.Tensor] | None] = list(drawn) if self.task.dropout else [None] * self.task.n_hidden
        return self._make_batch(xs, noises if self.task.noise else None, ys, uniforms)

    # ----------------------------------------------------------------- forward / backward
    def _first_layer(self, batch: _Batch, bias: bool = True) -> torch.Tensor:
        """``W₁x + b₁`` for every configuration, (K, out, m); without ``b₁`` when ``bias`` is False."""
        W, b = self.W[0], self.b[0]
        if batch.x is not None:
            xt = batch.x.transpose(1, 2)
            return torch.baddbmm(b, W, xt) if bias else torch.bmm(W, xt)
        d_in, out = W.shape[2], W.shape[1]
        parts = [
            torch.addmm(b[g.rows].reshape(-1, 1), W[g.rows].reshape(-1, d_in), x.T) if bias
            else torch.mm(W[g.rows].reshape(-1, d_in), x.T)
            for g, x in zip(self.groups, batch.shared_xs, strict=True)
        ]
        Z = parts[0] if len(parts) == 1 else torch.cat(parts)
        return Z.view(self.K, out, batch.m)

    def _first_layer_grad(self, dZ: torch.Tensor, batch: _Batch) -> torch.Tensor:
        if batch.x is not None:
            return torch.bmm(dZ, batch.x)
        out = dZ.shape[1]
        parts = [torch.mm(dZ[g.rows].reshape(-1, batch.m), x) for g, x in zip(self.groups, batch.shared_xs, strict=True)]
        dW = parts[0] if len(parts) == 1 else torch.cat(parts)
        return dW.view(self.K, out, -1)

    def _activation_(self, Z: torch.Tensor) -> torch.Tensor:
        """A = act(Z), in place (Z is not needed afterwards: the backward pass uses A)."""
        name = self.task.activation
        if name == "relu":
            return Z.relu_()
        if name == "tanh":
            return Z.tanh_()
        if name == "sigmoid":
            return Z.sigmoid_()
        return Z

    def _activation_grad(self, dA: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
        """dL/dZ from dL/dA and A = act(Z): the kernels autograd itself calls."""
        name = self.task.activation
        if name == "relu":
            return torch.ops.aten.threshold_backward(dA, A, 0)  # dA where A > 0, else 0
        if name == "tanh":
            return torch.ops.aten.tanh_backward(dA, A)  # dA·(1 − A²)
        if name == "sigmoid":
            return torch.ops.aten.sigmoid_backward(dA, A)  # dA·(1 − A)·A
        return dA

    def _layer_norm(self, Z: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``LN(Z) + b`` over the features (dim 1) of every column of (K, width, m); also x̂ and 1/sqrt(σ² + ε).

        μ and σ² (biased) are taken over the features, as ``F.layer_norm`` over the last dimension of ``hW``.
        """
        var, mean = torch.var_mean(Z, dim=1, keepdim=True, correction=0)
        rstd = torch.rsqrt(var + LAYER_NORM_EPS)
        xhat = (Z - mean) * rstd
        return xhat + b, xhat, rstd

    @staticmethod
    def _layer_norm_grad(dY: torch.Tensor, xhat: torch.Tensor, rstd: torch.Tensor) -> torch.Tensor:
        r"""∂L/∂Z from ∂L/∂Y of ``Y = LN(Z) + b``: :math:`r\,(dY − \overline{dY} − \hat x\,\overline{dY\,\hat x})`,
        means over the features (dim 1)."""
        mean_dy = dY.mean(dim=1, keepdim=True)
        mean_dy_xhat = (dY * xhat).mean(dim=1, keepdim=True)
        return (dY - mean_dy - xhat * mean_dy_xhat) * rstd

    def _forward(
        self, batch: _Batch, norms: list[tuple[torch.Tensor, torch.Tensor]] | None = None
    ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """Logits (K, d_out, m), and per hidden layer its activation A and its (dropped-out) output H.

        With ``task.norm == 'layer'`` each hidden layer's ``(x̂, 1/sqrt(σ² + ε))`` is appended to ``norms``.
        """
        As, Hs = [], []
        normed = self.task.norm == "layer"
        Z = self._first_layer(batch, bias=not normed)
        for l in range(1, len(self.W)):
            if normed:
                Z, xhat, rstd = self._layer_norm(Z, self.b[l - 1])
                if norms is not None:
                    norms.append((xhat, rstd))
            A = self._activation_(Z)
            keep = batch.keeps[l - 1]
            H = A if keep is None else torch.mul(A, keep).div_(self.q[l - 1])  # A·keep/(1−p)
            As.append(A)
            Hs.append(H)
            last = l == len(self.W) - 1
            Z = torch.bmm(self.W[l], H) if normed and not last else torch.baddbmm(self.b[l], self.W[l], H)
        return Z, As, Hs

    def _loss_grad(self, Z: torch.Tensor, batch: _Batch) -> torch.Tensor:
        """∂(mean loss of configuration k)/∂Z for every k, shape (K, d_out, m)."""
        if self.task.loss == "half_mse":
            return (Z - batch.float_y) * (1.0 / (Z.shape[1] * batch.m))
        if self.task.loss == "cross_entropy":
            return (torch.softmax(Z, dim=1) - batch.onehot_targets) / batch.m
        return (torch.sigmoid(Z) - batch.float_y) / batch.m

    def _loss_sums(self, Z: torch.Tensor, batch: _Batch) -> torch.Tensor:
        """Every configuration's summed data loss over the batch, shape (K,)."""
        if self.task.loss == "half_mse":
            return ((Z - batch.float_y) ** 2 / 2).sum(dim=(1, 2))
        if self.task.loss == "cross_entropy":
            return F.cross_entropy(Z, batch.class_labels.expand(self.K, -1), reduction="none").sum(dim=1)
        return F.binary_cross_entropy_with_logits(Z, batch.float_y.expand_as(Z), reduction="none").sum(dim=(1, 2))

    def _loss_count(self, m: int) -> int:
        """How many terms the mean loss of ``m`` rows averages over (rows × outputs, except cross-entropy)."""
        return m if self.task.loss == "cross_entropy" else m * self.task.layers[-1]

    def _correct(self, Z: torch.Tensor, batch: _Batch) -> torch.Tensor:
        """Number of correctly classified rows per configuration (argmax; for BCE a logit > 0 is class 1)."""
        if self.task.loss == "cross_entropy":
            return (Z.argmax(dim=1) == batch.class_labels).sum(dim=1).to(self.dtype)
        return ((Z > 0) == (batch.float_y > 0.5)).sum(dim=(1, 2)).to(self.dtype)

    def _manual_grads(self, batch: _Batch) -> list[torch.Tensor]:
        norms: list[tuple[torch.Tensor, torch.Tensor]] = []
        Z, As, Hs = self._forward(batch, norms)
        dZ = self._loss_grad(Z, batch)
        L = len(self.W)
        dWs: dict[int, torch.Tensor] = {}  # layer -> gradient, filled from the last layer back
        dbs: dict[int, torch.Tensor] = {}
        for l in range(L - 1, -1, -1):
            dbs[l] = dZ.sum(dim=2, keepdim=True)
            if norms and l < L - 1:  # dZ is ∂L/∂(LN(hW) + b): through the normalization to ∂L/∂(hW)
                dZ = self._layer_norm_grad(dZ, *norms[l])
            if l == 0:
                dWs[0] = self._first_layer_grad(dZ, batch)
                break
            dWs[l] = torch.bmm(dZ, Hs[l - 1].transpose(1, 2))
            dH = torch.bmm(self.W[l].transpose(1, 2), dZ)
            keep = batch.keeps[l - 1]
            if keep is not None:
                dH = dH.div_(self.q[l - 1]).mul_(keep)  # autograd's order: (dH/(1−p))·keep
            dZ = self._activation_grad(dH, As[l - 1])
        return [dWs[l] for l in range(L)] + [dbs[l] for l in range(L)]

    def _autograd_grads(self, batch: _Batch) -> list[torch.Tensor]:
        with torch.enable_grad():
            Z, _, _ = self._forward(batch)
            means = self._loss_sums(Z, batch) / self._loss_count(batch.m)
            total = means.sum()  # the K losses are independent: ∂total/∂θ_k = ∂L_k/∂θ_k
            return list(torch.autograd.grad(total, self.params))

    # ----------------------------------------------------------------- updates
    @property
    def state(self) -> list[dict[str, torch.Tensor]]:
        """The optimizer buffers of every stacked tensor (``momentum_buffer``; ``exp_avg``, ``exp_avg_sq``)."""
        return self.updater.state

    @property
    def t(self) -> int:
        """Optimizer steps taken."""
        return self.updater.t

    @property
    def active(self) -> torch.Tensor:
        """(K,) bool: the configurations that have not diverged."""
        return self.updater.active

    def _update(self, grads: list[torch.Tensor]) -> None:
        self.updater.step(grads)  # coupled, decoupled, optimizer, L1: decaylab.engine.updates
        if self.radius is not None:
            self._project(self.radius)

    def _project(self, radius: torch.Tensor) -> None:
        """Every configuration's decayed tensors onto its ball ``‖w‖₂ ≤ radius`` (their joint norm)."""
        decayed = [P for P, d in zip(self.params, self.decayed, strict=True) if d]
        norm = torch.sqrt(tensor_sum((P * P).sum(dim=(1, 2)) for P in decayed)).view(self.K, 1, 1)
        factor = torch.where(norm > radius, radius / norm, torch.ones_like(norm))  # inf radius: 1
        for P in decayed:
            P.mul_(factor)

    def train_step(self, indices: Sequence[torch.Tensor | None]) -> None:
        """One optimizer step of every configuration on its seed's minibatch ``indices[group]``."""
        with torch.no_grad():
            batch = self._training_batch(indices)
            grads = self._manual_grads(batch) if self.backward == "manual" else self._autograd_grads(batch)
            self._update(grads)

    # ----------------------------------------------------------------- epochs
    @torch.no_grad()
    def evaluate(self) -> torch.Tensor:
        """This epoch's metrics, shape (K, M) in ``task.metric_names`` order."""
        losses, accuracies = [], []
        for n, blocks in self.eval_sets:
            loss_sum = correct = torch.zeros(self.K, dtype=self.dtype)
            for batch in blocks:
                Z, _, _ = self._forward(batch)
                loss_sum = loss_sum + self._loss_sums(Z, batch)
                if self.task.classification:
                    correct = correct + self._correct(Z, batch)
            losses.append(loss_sum / self._loss_count(n))
            accuracies.append(correct / n)
        cols = losses + [torch.sqrt(tensor_sum((W * W).sum(dim=(1, 2)) for W in self.W))]
        if self.task.classification:
            cols += accuracies
        return torch.stack(cols, dim=1)

    def _check_divergence(self, metrics: torch.Tensor, epoch: int) -> None:
        finite = torch.isfinite(metrics[:, 0])
        if self.groups[0].data.n_test:  # an empty test set has NaN metrics: not divergence
            finite &= torch.isfinite(metrics[:, 1])
        finite &= self.updater.finite()
        newly = self.active & ~finite
        if not bool(newly.any()):
            return
        for k in newly.nonzero().flatten().tolist():
            self.diverged_epoch[k] = epoch
        self.updater.freeze_(newly)  # frozen at zero: finite, and lr = 0 keeps it there

    def run_epoch(self, epoch: int, evaluate: bool = True) -> torch.Tensor | None:
        """Train one epoch; if ``evaluate``, evaluate, detect divergence and return the metrics (K, M)."""
        per_group = [epoch_batches(g.data.n_train, self.task.batch_size, g.order) for g in self.groups]
        start = self.task.average_from
        averaged = self.averaged if start is not None and epoch >= start else None
        for indices in zip(*per_group, strict=True):
            self.train_step(indices)
            if averaged is not None:
                self._accumulate_average(averaged)
        keep = self.task.keep_weights
        if keep == "epochs" or (keep == "final" and epoch == self.task.epochs):
            self.kept.append(self.parameter_vectors())
        if not evaluate:
            return None
        with torch.no_grad():
            metrics = self.evaluate()
            self._check_divergence(metrics, epoch)
        return metrics

    @torch.no_grad()
    def _accumulate_average(self, averaged: list[torch.Tensor]) -> None:
        """Add the current parameters to the running means ``averaged``: ``θ̄ ← θ̄ + (θ − θ̄)/n``, in float64."""
        self.n_averaged += 1
        for A, P in zip(averaged, self.params, strict=True):
            A.add_((P.detach().to(torch.float64) - A) / self.n_averaged)

    def parameter_vectors(self) -> torch.Tensor:
        """The current parameters, (K, n_params): row k is ``parameters_to_vector`` of configuration k's model."""
        return self._flatten(self.params)

    def _flatten(self, params: Sequence[torch.Tensor]) -> torch.Tensor:
        """Stacked tensors laid out as ``self.params`` (every W, then every b) → (K, n_params), per configuration
        ``parameters_to_vector``'s layout: layer by layer, the ``(out, in)`` weight row by row, then the bias."""
        n = len(self.W)
        parts = []
        for W, b in zip(params[:n], params[n:], strict=True):
            parts += [W.detach().reshape(self.K, -1), b.detach().reshape(self.K, -1)]
        return torch.cat(parts, dim=1)

    def run(self) -> list[Outcome]:
        """Train all epochs; the outcomes in the order the configurations were given."""
        evaluated = set(self.task.eval_epochs)
        metrics = [self.run_epoch(e, e in evaluated) for e in range(1, self.task.epochs + 1)]
        history = torch.stack([m for m in metrics if m is not None])  # (evaluated epochs, K, M)
        rows = history.transpose(0, 1).tolist()
        kept = torch.stack(self.kept, dim=1).tolist() if self.kept else None  # (K, kept epochs, n_params)
        averaged = self._flatten(self.averaged).tolist() if self.averaged is not None else None  # (K, n_params)
        states = self.optimizer_states() if self.task.keep_optimizer_state else None
        outcomes: dict[int, Outcome] = {}  # position in the hypers given -> outcome
        for k, original in enumerate(self.perm):
            outcomes[original] = make_outcome(
                self.task, rows[k], self.diverged_epoch[k], kept[k] if kept else None,
                averaged[k] if averaged else None, states[k] if states else None,
            )
        return [outcomes[i] for i in range(self.K)]

    def optimizer_states(self) -> list[dict[str, list[float]]]:
        """Per configuration, every optimizer buffer flattened like :meth:`parameter_vectors`, and ``step``."""
        names = sorted({name for state in self.state for name in state})
        flat = {name: self._flatten([state[name] for state in self.state]).tolist() for name in names}
        return [{**{name: flat[name][k] for name in names}, "step": [float(self.t)]} for k in range(self.K)]

