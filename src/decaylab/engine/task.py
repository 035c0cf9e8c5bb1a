"""What a sweep trains: a :class:`Task` shared by all configurations and one :class:`Hyper` per configuration.

A ``Task`` fixes everything that must be equal for configurations to be trained together (the data
function, the architecture, the loss, the optimizer and its constants, the batch size, the number of
epochs, the initialization, whether the model has dropout layers and input noise, the floating-point
precision, which parameters to return and from which epoch on to average them). A ``Hyper`` holds a configuration's own numbers: its seed,
learning rate, the three kinds of decay, the radius of its norm constraint, its dropout probabilities
and its input-noise level.

Decay conventions (``w`` ranges over the *decayed tensors*: the weight matrices, and the biases too
only when ``Task.decay_bias``; ``g`` is the gradient of the mean data loss over the minibatch):

=============  =========================================  ============================================
``Hyper``      update                                     objective it corresponds to
=============  =========================================  ============================================
``l2``         ``g ← g + l2·w``  (coupled, before the      ``mean loss + l2/2·Σw²``; PyTorch's
               optimizer sees ``g``)                      ``weight_decay`` of SGD and Adam
``decoupled``  ``w ← w − lr·decoupled·w``  (before the     PyTorch's AdamW convention: with ``'adam'``
               optimizer update)                          this *is* AdamW; with ``'sgd'`` it equals
                                                          ``l2`` without momentum
``l1``         ``w ← sign(w)·max(|w| − lr·l1, 0)``        proximal step for ``mean loss + l1·Σ|w|``
               (after the optimizer update)               (exact zeros)
``radius``     ``w ← w·min(1, radius/‖w‖₂)``, ``‖w‖₂``     projection onto the constraint
               the norm of all decayed tensors together   ``‖w‖₂ ≤ radius`` (projected gradient
               (after the ``l1`` step; ``None``: none)    descent); one ball for the whole model,
                                                          unlike :class:`decaylab.MaxNorm`'s ball
                                                          per unit
=============  =========================================  ============================================

The full step-by-step semantics both engines follow are in :mod:`decaylab.engine.semantics`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from decaylab.validation import InvalidParameterError, check_choice, check_float, check_int, parameter_error

__all__ = [
    "ACTIVATIONS",
    "DTYPES",
    "INITS",
    "KEEP_WEIGHTS",
    "LOSSES",
    "NORMS",
    "OPTIMIZERS",
    "Hyper",
    "Task",
    "check_hypers",
]

ACTIVATIONS = ("relu", "tanh", "sigmoid", "identity")
LOSSES = ("half_mse", "cross_entropy", "bce")
OPTIMIZERS = ("sgd", "adam")
INITS = ("normal", "torch")
DTYPES = ("float32", "float64")
KEEP_WEIGHTS = ("none", "final", "epochs")
NORMS = ("none", "layer")

Activation = Literal["relu", "tanh", "sigmoid", "identity"]
Loss = Literal["half_mse", "cross_entropy", "bce"]
Optimizer = Literal["sgd", "adam"]
Init = Literal["normal", "torch"]
DType = Literal["float32", "float64"]
KeepWeights = Literal["none", "final", "epochs"]
Norm = Literal["none", "layer"]


@dataclass(frozen=True)
class Task:
    """What every configuration of a sweep shares.

    ``data`` must be picklable (a module-level function or a :func:`functools.partial` of one) and
    return, for a seed, an object with ``X_train``, ``y_train``, ``X_test``, ``y_test`` tensors:
    ``X`` of shape ``(n, layers[0])``; ``y`` of shape ``(n, layers[-1])`` (float) for ``'half_mse'``,
    ``(n,)`` int64 class labels for ``'cross_entropy'``, ``(n, 1)`` float in {0, 1} for ``'bce'``.
    An empty test set (``n = 0``) is allowed: its metrics are NaN.

    ``eval_every=N`` measures the metrics (and checks for divergence) only after every N-th epoch and
    the last, for long full-batch runs where evaluating costs more than training; the curves then
    hold those epochs only (``curves["epoch"]`` says which).

    ``dtype='float64'`` trains in double precision throughout, for solvers whose claims need it (exact
    zeros, agreement with a reference to 1e-8). ``keep_weights`` makes every outcome carry its
    parameters in ``Outcome.weights``, a list of flat vectors θ laid out as
    ``torch.nn.utils.parameters_to_vector(model.parameters())`` of the equivalent ``nn.Sequential``
    (per layer the weight ``(out, in)`` row by row, then the bias): ``'final'`` keeps one, after the
    last epoch; ``'epochs'`` one after every epoch (epochs × parameters numbers per configuration).
    A configuration that diverged has ``weights=None``.

    ``average_from=e`` (a 1-based epoch, at most ``epochs``) makes every outcome carry, in
    ``Outcome.averaged_weights``, the Polyak–Ruppert average of the iterates: the equal-weight mean of
    θ after every optimizer step from the first step of epoch ``e`` to the last (same layout as
    ``weights``; kept in float64; ``None`` for a configuration that diverged). ``average_from=1``
    averages every iterate; ``average_from=epochs`` those of the last epoch.

    ``norm='layer'`` puts a layer normalization without a scale after every hidden layer's weights:
    hidden layer ``l`` computes ``act(LN(h W_l) + b_l)`` with ``LN(z) = (z − mean(z))/sqrt(var(z) + ε)``
    over the layer's features (``ε`` = :data:`~decaylab.engine.semantics.LAYER_NORM_EPS`), so its bias is
    the normalization's shift β and its weights are scale-invariant: ``W_l → c·W_l`` leaves the network's
    outputs unchanged up to ``ε``. The readout layer is not normalized. It is
    ``nn.LayerNorm(elementwise_affine=False)`` on ``h W_l`` followed by adding ``b_l``.

    ``keep_optimizer_state=True`` makes every outcome carry, in ``Outcome.optimizer_state``, the
    optimizer's state after the last step, named as ``torch.optim`` names it per parameter
    (``'momentum_buffer'`` for SGD with momentum; ``'exp_avg'`` m and ``'exp_avg_sq'`` v for Adam/AdamW,
    before bias correction), each a flat vector in the layout of ``weights``, and ``'step'``: ``[t]``,
    the optimizer steps taken (``None`` for a configuration that diverged). Adam's bias-corrected
    second moment, as its step uses it, is ``v̂ = exp_avg_sq / (1 − β₂ᵗ)``.
    """

    data: Callable[[int], Any]  # seed -> object with X_train, y_train, X_test, y_test
    layers: tuple[int, ...]  # (d_in, hidden..., d_out); a linear model is (d, 1)
    activation: Activation = "relu"  # after every hidden layer
    loss: Loss = "half_mse"  # 'half_mse': mean over the batch of (ŷ−y)²/2 (D2L's squared_loss)
    optimizer: Optimizer = "sgd"
    momentum: float = 0.0  # SGD only, PyTorch convention (no dampening, not Nesterov)
    betas: tuple[float, float] = (0.9, 0.999)  # Adam only
    eps: float = 1e-8  # Adam only
    batch_size: int | None = None  # None: full batch (no permutation drawn)
    epochs: int = 10
    init: Init = "normal"  # 'normal': W ~ N(0, init_std²), b = 0; 'torch': nn.Linear's uniform
    init_std: float = 1.0  # 'normal' only
    dropout: bool = False  # a dropout layer after each hidden activation (p per Hyper)
    noise: bool = False  # Gaussian noise added to the inputs while training (σ per Hyper)
    decay_bias: bool = False  # whether l2 / decoupled / l1 / radius also act on the biases
    dtype: DType = "float32"  # of data, parameters, optimizer state, random draws and per-configuration numbers
    keep_weights: KeepWeights = "none"  # Outcome.weights: 'final' parameters, or after each of the 'epochs'
    eval_every: int = 1  # metrics (curves, divergence check) after every eval_every-th epoch and the last
    average_from: int | None = None  # Outcome.averaged_weights: mean of θ after every step from this epoch on
    keep_optimizer_state: bool = False  # Outcome.optimizer_state: torch.optim's state after the last step
    norm: Norm = "none"  # 'layer': hidden layer l computes act(LN(h W_l) + b_l), LN without scale (see above)

    def __post_init__(self) -> None:
        owner = "Task"
        if not callable(self.data):
            raise parameter_error("data", owner, "a callable seed -> data set", self.data)
        layers = tuple(self.layers) if isinstance(self.layers, Sequence) else self.layers
        if not isinstance(layers, tuple) or len(layers) < 2:
            raise parameter_error("layers", owner, "a tuple of at least two ints (d_in, ..., d_out)", self.layers)
        object.__setattr__(self, "layers", tuple(check_int(w, "layers", owner, low=1) for w in layers))
        check_choice(self.activation, "activation", owner, ACTIVATIONS)
        check_choice(self.loss, "loss", owner, LOSSES)
        check_choice(self.optimizer, "optimizer", owner, OPTIMIZERS)
        check_choice(self.init, "init", owner, INITS)
        check_choice(self.dtype, "dtype", owner, DTYPES)
        check_choice(self.keep_weights, "keep_weights", owner, KEEP_WEIGHTS)
        check_choice(self.norm, "norm", owner, NORMS)
        object.__setattr__(self, "momentum", check_float(self.momentum, "momentum", owner, low=0, high=1, high_open=True))
        if len(tuple(self.betas)) != 2:
            raise parameter_error("betas", owner, "a pair of floats in [0, 1)", self.betas)
        betas = tuple(check_float(b, "betas", owner, low=0, high=1, high_open=True) for b in self.betas)
        object.__setattr__(self, "betas", betas)
        object.__setattr__(self, "eps", check_float(self.eps, "eps", owner, low=0, low_open=True))
        if self.batch_size is not None:
            object.__setattr__(self, "batch_size", check_int(self.batch_size, "batch_size", owner, low=1))
        object.__setattr__(self, "epochs", check_int(self.epochs, "epochs", owner, low=1))
        object.__setattr__(self, "eval_every", check_int(self.eval_every, "eval_every", owner, low=1))
        object.__setattr__(self, "init_std", check_float(self.init_std, "init_std", owner, low=0))
        if self.average_from is not None:
            try:
                average_from = check_int(self.average_from, "average_from", owner, low=1, high=self.epochs)
            except InvalidParameterError:
                allowed = f"None (no averaging) or an int in [1, epochs={self.epochs}]"
                raise parameter_error("average_from", owner, allowed, self.average_from) from None
            object.__setattr__(self, "average_from", average_from)
        for flag in ("dropout", "noise", "decay_bias", "keep_optimizer_state"):
            if not isinstance(getattr(self, flag), bool):
                raise parameter_error(flag, owner, "a bool", getattr(self, flag))
        self._check_combinations()

    def _check_combinations(self) -> None:
        owner = "Task"
        if self.momentum and self.optimizer != "sgd":
            raise parameter_error(
                "momentum", owner, "0 with optimizer='adam' (set betas for Adam's moments)", self.momentum
            )
        if self.loss == "cross_entropy" and self.layers[-1] < 2:
            raise parameter_error("layers", owner, "a tuple ending in >= 2 classes for loss='cross_entropy'", self.layers)
        if self.loss == "bce" and self.layers[-1] != 1:
            raise parameter_error("layers", owner, "a tuple ending in 1 output for loss='bce'", self.layers)

    @property
    def eval_epochs(self) -> tuple[int, ...]:
        """The epochs after which metrics are measured: every ``eval_every``-th, and always the last."""
        every = tuple(range(self.eval_every, self.epochs + 1, self.eval_every))
        return every if every and every[-1] == self.epochs else every + (self.epochs,)

    @property
    def n_hidden(self) -> int:
        """Number of hidden layers (each followed by the activation, and by dropout if ``dropout``)."""
        return len(self.layers) - 2

    @property
    def classification(self) -> bool:
        """Whether accuracies are measured (``'cross_entropy'`` and ``'bce'``)."""
        return self.loss != "half_mse"

    @property
    def metric_names(self) -> tuple[str, ...]:
        """The per-epoch metrics an :class:`~decaylab.results.Outcome` carries, besides ``epoch``."""
        names = ("train_loss", "test_loss", "w_norm")
        return names + (("train_acc", "test_acc") if self.classification else ())


@dataclass(frozen=True)
class Hyper:
    """One configuration's own numbers.

    ``dropout`` holds one probability per hidden layer (empty: 0 everywhere); it and ``noise`` need
    ``Task.dropout`` / ``Task.noise``. All decay strengths and ``radius`` follow the conventions in the
    module docstring.
    """

    seed: int
    lr: float
    l2: float = 0.0  # coupled: g ← g + l2·w
    decoupled: float = 0.0  # w ← w − lr·decoupled·w before the update (AdamW)
    l1: float = 0.0  # w ← soft_threshold(w, lr·l1) after the update
    dropout: tuple[float, ...] = ()  # p per hidden layer
    noise: float = 0.0  # σ of the Gaussian input noise
    radius: float | None = None  # w ← w·min(1, radius/‖w‖₂) after the update, ‖w‖₂ over all decayed tensors

    def __post_init__(self) -> None:
        owner = "Hyper"
        object.__setattr__(self, "seed", check_int(self.seed, "seed", owner, low=0))
        object.__setattr__(self, "lr", check_float(self.lr, "lr", owner, low=0, low_open=True))
        for name in ("l2", "decoupled", "l1", "noise"):
            object.__setattr__(self, name, check_float(getattr(self, name), name, owner, low=0))
        if isinstance(self.dropout, (str, bytes)) or not isinstance(self.dropout, Sequence):
            raise parameter_error("dropout", owner, "a tuple of floats in [0, 1]", self.dropout)
        probs = tuple(check_float(p, "dropout", owner, low=0, high=1) for p in self.dropout)
        object.__setattr__(self, "dropout", probs)
        if self.radius is not None:
            try:
                radius = check_float(self.radius, "radius", owner, low=0, low_open=True)
            except InvalidParameterError:
                allowed = "None (no constraint) or a float in (0, inf)"
                raise parameter_error("radius", owner, allowed, self.radius) from None
            object.__setattr__(self, "radius", radius)

    def dropout_for(self, task: Task) -> tuple[float, ...]:
        """One dropout probability per hidden layer of ``task`` (zeros when none were given)."""
        return self.dropout or (0.0,) * task.n_hidden


def check_hypers(task: Task, hypers: Sequence[Hyper], owner: str = "train") -> list[Hyper]:
    """Check that ``task`` is a :class:`Task` and ``hypers`` a non-empty sequence of :class:`Hyper` that fit it;
    return them as a list.

    Raises:
        InvalidParameterError: naming the argument or the option to change — ``task`` not a ``Task``;
            ``hypers`` a single ``Hyper`` (wrap it in a list), not a sequence, empty, or holding another type;
            a ``Hyper``'s dropout or noise that the task does not have.
    """
    if not isinstance(task, Task):
        raise parameter_error("task", owner, "a decaylab.engine.Task", type(task).__name__)
    allowed = "a non-empty list of Hyper, one per configuration"
    if isinstance(hypers, Hyper):
        raise parameter_error("hypers", owner, allowed + " (for one configuration: [hyper])", hypers)
    if isinstance(hypers, (str, bytes, Mapping)) or not isinstance(hypers, Iterable):
        raise parameter_error("hypers", owner, allowed, type(hypers).__name__)
    hypers = list(hypers)
    if not hypers:
        raise parameter_error("hypers", owner, allowed, hypers)
    for i, h in enumerate(hypers):
        if not isinstance(h, Hyper):
            raise parameter_error("hypers", owner, f"{allowed} (item {i} is a {type(h).__name__})", h)
        if h.dropout and not task.dropout and any(h.dropout):
            raise parameter_error("dropout", "Hyper", "() unless Task.dropout=True", h.dropout)
        if h.dropout and len(h.dropout) != task.n_hidden:
            raise parameter_error(
                "dropout", "Hyper", f"a tuple of {task.n_hidden} probabilities (one per hidden layer)", h.dropout
            )
        if h.noise and not task.noise:
            raise parameter_error("noise", "Hyper", "0 unless Task.noise=True", h.noise)
    return hypers
