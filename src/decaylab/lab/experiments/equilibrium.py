r"""``equilibrium``: what weight decay does to normalized networks — rotational equilibrium (Kosson et al. 2024).

An MLP on synthetic teacher data (:func:`teacher_data`) whose hidden layers are each followed by a layer normalization without
scale (``Task(norm='layer')``: hidden layer ``l`` computes ``relu(LN(h W_l) + b_l)``, the bias being the
normalization's shift), mean cross-entropy, minibatches of ``--batch-size``, ``nn.Linear``'s initial
weights; the readout layer is not normalized. Trained over a grid of (η, λ) with

* **AdamW** (``adamw``): ``w ← (1 − ηλ)w − η·m̂/(√v̂ + ε)``, β = (``--momentum``, 0.999) —
  ``torch.optim.AdamW(lr=η, weight_decay=λ)``, the engine's ``Hyper(decoupled=λ)`` with ``'adam'``;
* **SGD with momentum** (``sgdm``): ``b ← αb + g + λw``, ``w ← w − ηb`` —
  ``torch.optim.SGD(lr=η, momentum=α, weight_decay=λ)``, the engine's ``Hyper(l2=λ)``.

Every weight matrix decays (the readout's too), biases do not. The normalized weights are
*scale-invariant*: the loss depends on ``W_l/‖W_l‖`` only, so the gradient is orthogonal to ``W_l`` and
shrinks as ``1/‖W_l‖``. Then (:func:`decaylab.closed_form.rotational_equilibrium`, ``C`` = elements of
``W_l``, ``α`` = momentum or β₁):

(a) **scale invariance**: multiplying a normalized layer's weights by ``c`` leaves the outputs unchanged
    (up to the normalization's ε); multiplying the readout's does not;
(b) **equilibrium norm**: ``‖W_l‖`` settles at ``√(ηC/(2λ))`` (AdamW) or
    ``(η·E‖g̃‖²/(2λ(1−α)))^{1/4}`` (SGDM; ``E‖g̃‖²`` = mean squared minibatch gradient times ``‖W_l‖²``,
    measured at the end), on the timescale ``τ = 1/(ηλ)`` (AdamW) or ``(1−α)/(ηλ)`` (SGDM);
(c) **angular update** per step at equilibrium: ``√(2ηλ(1−β₁)/(1+β₁))`` (AdamW; ``√(2ηλ)`` only when
    β₁ = 0) and ``√(2ηλ/(1+α))`` (SGDM);
(d) **without decay** (λ = 0) the norm grows and the effective learning rate ``η/‖W_l‖²`` falls.

**How it is measured.** Training runs through :func:`decaylab.engine.run_chunk`, which keeps the weights
after every epoch (per-layer norms) and the optimizer state after the last step. The last step's
angular update is computed exactly from them: AdamW's previous weights are
``(w_T + η/(1−β₁ᵗ)·m/(√v/√(1−β₂ᵗ) + ε))/(1 − ηλ)``, SGDM's ``w_T + η·b_T``; the angle is
``arccos(⟨w_{T−1}, w_T⟩/(‖w_{T−1}‖‖w_T‖))``. The measured equilibrium norm is the mean over the last
tenth of the epochs. ``E‖g̃‖²`` and the scale test use the final weights in float64 (the engine's
sequential model): 16 minibatches drawn from the seed's ``order`` stream and the test set.

Reference: Kosson, Messmer & Jaggi, "Rotational Equilibrium: How Weight Decay Balances Learning Across
Neural Networks", ICML 2024 (arXiv 2305.17212); van Laarhoven, "L2 Regularization versus Batch and
Weight Normalization", 2017; Wang & Aitchison 2024 (the timescale τ).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial
from itertools import pairwise
from typing import Any

from decaylab.lab.experiments.base import (
    MAX_WIDTH,
    Experiment,
    Option,
    Table,
    check_batch_size,
    check_data_budget,
    check_model_budget,
    choice_list,
    epochs_int,
    float_grid,
    group_by,
    int_grid,
    mean_or_nan,
    positive_int,
    seed_grid,
)
from decaylab.results import ConfigResult, Outcome
from decaylab.validation import check_float

__all__ = [
    "NORM_TOL",
    "ANGLE_TOL",
    "OPTIMIZERS",
    "Equilibrium",
    "angular_updates",
    "teacher_data",
    "grad_norm_sq",
    "predictions",
    "scale_invariance",
]

Progress = Callable[[int], None]


OPTIMIZERS = ("adamw", "sgdm")
BETA2, EPS = 0.999, 1e-8
DIM, CLASSES = 32, 10  # the teacher data: inputs and classes


SCALES = (0.5, 2.0, 10.0)  # c of the scale-invariance test


GRAD_BATCHES = 16  # minibatches averaged for E‖g̃‖²


END_FRACTION = 0.1  # the measured equilibrium norm: mean over this last fraction of the epochs


NORM_TOL = 0.3  # (b) holds when measured/predicted ‖W‖ is within 1 ± NORM_TOL


ANGLE_TOL = 0.3  # (c) holds when measured/predicted angle is within 1 ± ANGLE_TOL (one step, measured: 0.99–1.23)


SCALE_TOL_EXACT = 1e-9  # (a): largest relative change of the logits for a normalized layer with ε = 0 (float64)


SCALE_TOL = 1e-2  # (a): the same with the network's ε = 1e-5 (≈ ε/(2σ²) for the row of smallest variance σ²)


SETTLE_TAU = 3.0  # (b) timescale: ‖W‖ is within 1 ± NORM_TOL of ‖W‖* from at most this many τ on


GROWTH_MIN = 1.1  # (d): ‖W‖ at the end / at the start, at least


def _momentum(text: str, name: str, owner: str) -> float:
    return check_float(text, name, owner, low=0.0, high=1.0, high_open=True)


def teacher_data(seed: int, n_train: int, n_test: int, dim: int = 32, classes: int = 10, scale: float = 3.0) -> Any:
    r"""Synthetic classification with label noise: ``x ~ N(0, I_dim)``, ``y ~ softmax(scale·x T/√dim)``.

    ``T ~ N(0, 1)`` (dim × classes) is the seed's teacher. Labels are *drawn* from the teacher's
    probabilities, so even the teacher errs: the loss cannot reach 0 and minibatch gradients stay noisy
    for the whole run — the random-walk regime in which the equilibrium is predicted. Everything comes
    from the seed's ``data`` stream.
    """
    import torch

    from decaylab.data.digits import Classification
    from decaylab.rng import generator

    g = generator(seed, "data")
    T = torch.randn(dim, classes, generator=g)
    X = torch.randn(n_train + n_test, dim, generator=g)
    probs = torch.softmax(scale * X @ T / math.sqrt(dim), dim=1)
    y = torch.multinomial(probs, 1, generator=g).reshape(-1)
    return Classification(X[:n_train], y[:n_train], X[n_train:], y[n_train:], classes)


def steps_per_epoch(opts: dict[str, Any]) -> int:
    return math.ceil(opts["n_train"] / opts["batch_size"])


def hidden_sizes(opts: dict[str, Any]) -> list[int]:
    """``C`` of every normalized layer: ``out × in`` of each hidden weight matrix."""
    widths = [DIM, *opts["hidden"]]
    return [o * i for i, o in pairwise(widths)]


def predictions(opts: dict[str, Any], optimizer: str, lr: float, wd: float, g2: Sequence[float] | None = None) -> list[Any]:
    """:func:`~decaylab.closed_form.rotational_equilibrium` of every normalized layer (``g2``: its E‖g̃‖², SGDM)."""
    from decaylab.closed_form import rotational_equilibrium

    out = []
    for l, C in enumerate(hidden_sizes(opts)):
        if optimizer == "adamw":
            out.append(rotational_equilibrium("adamw", lr, wd, n_elements=C, momentum=opts["momentum"]))
        else:
            g = None if g2 is None else g2[l]
            out.append(rotational_equilibrium("sgdm", lr, wd, grad_norm_sq=g, momentum=opts["momentum"]))
    return out


# -- measurements on the engine's outcome -------------------------------------------------------------


def angular_updates(task: Any, optimizer: str, lr: float, wd: float, outcome: Outcome) -> list[float]:
    """The angle (radians) turned by each weight matrix in the last optimizer step, from the final weights
    and the optimizer state (see the module docstring); one per layer, readout last."""

    from decaylab.engine.semantics import layer_tensors

    state = outcome.optimizer_state
    final = [W.double() for W, _ in layer_tensors(task, outcome.weights[-1])]  # type: ignore[index]
    if optimizer == "adamw":
        t = state["step"][0]  # type: ignore[index]
        beta1, beta2 = task.betas
        m = [W.double() for W, _ in layer_tensors(task, state["exp_avg"])]  # type: ignore[index]
        v = [W.double() for W, _ in layer_tensors(task, state["exp_avg_sq"])]  # type: ignore[index]
        step = [lr / (1 - beta1**t) * mi / (vi.sqrt() / math.sqrt(1 - beta2**t) + task.eps) for mi, vi in zip(m, v, strict=True)]
        prev = [(w + s) / (1 - lr * wd) for w, s in zip(final, step, strict=True)]
    else:
        buf = [W.double() for W, _ in layer_tensors(task, state["momentum_buffer"])]  # type: ignore[index]
        prev = [w + lr * b for w, b in zip(final, buf, strict=True)]
    angles = []
    for a, b in zip(prev, final, strict=True):
        cos = float((a * b).sum() / (a.norm() * b.norm()))
        angles.append(math.acos(max(-1.0, min(1.0, cos))))
    return angles


def _final_model(task: Any, seed: int, vector: Sequence[float]) -> Any:
    """The engine's sequential model with the final parameters, in float64."""
    import torch
    from torch.nn.utils import vector_to_parameters

    from decaylab.engine import Hyper
    from decaylab.engine.sequential import build_model

    model = build_model(task, Hyper(seed=seed, lr=1.0)).double()
    vector_to_parameters(torch.as_tensor(vector, dtype=torch.float64), model.parameters())
    return model


def _linears(model: Any) -> list[Any]:
    from torch import nn

    return [m for m in model.modules() if isinstance(m, nn.Linear)]


def grad_norm_sq(task: Any, seed: int, vector: Sequence[float], data: Any) -> list[float]:
    """Per normalized layer, ``E‖g̃‖² = mean over minibatches of ‖∇_W L‖²·‖W‖²`` at the final weights."""
    import torch
    import torch.nn.functional as F

    from decaylab.rng import generator

    model = _final_model(task, seed, vector)
    hidden = _linears(model)[:-1]
    X, y = data.X_train.double(), data.y_train
    g = generator(seed, "order")
    sums = [0.0] * len(hidden)
    for _ in range(GRAD_BATCHES):
        idx = torch.randint(0, X.shape[0], (task.batch_size,), generator=g)
        model.zero_grad()
        F.cross_entropy(model(X[idx]), y[idx]).backward()
        for l, layer in enumerate(hidden):
            sums[l] += float(layer.weight.grad.pow(2).sum() * layer.weight.detach().pow(2).sum())
    return [s / GRAD_BATCHES for s in sums]


def scale_invariance(task: Any, seed: int, vector: Sequence[float], data: Any, eps: float | None = None) -> dict[str, list[float]]:
    """``max|f_c(x) − f(x)| / max|f(x)|`` on the test set when one layer's weights are multiplied by each c of
    :data:`SCALES`: per normalized layer (``layer1``, ...) and for the readout (``readout``), in float64.

    ``eps``: the normalization's ε for this test (``None``: the network's, 1e-5; ``0``: exact invariance,
    where only float64 rounding remains). With ε > 0 a row whose pre-normalization variance is σ² moves by
    about ``ε/(2σ²)·|1 − 1/c²|``.
    """
    import torch

    from decaylab.engine.sequential import NormalizedLinear

    model = _final_model(task, seed, vector)
    if eps is not None:
        for m in model.modules():
            if isinstance(m, NormalizedLinear):
                m.eps = eps
    X = data.X_test.double()
    out: dict[str, list[float]] = {}
    with torch.no_grad():
        base = model(X)
        linears = _linears(model)
        for l, layer in enumerate(linears):
            key = "readout" if l == len(linears) - 1 else f"layer{l + 1}"
            diffs = []
            for c in SCALES:
                layer.weight.mul_(c)
                diffs.append(float((model(X) - base).abs().max() / base.abs().max()))
                layer.weight.div_(c)
            out[key] = diffs
    return out


class Equilibrium(Experiment):
    name = "equilibrium"
    order = 80
    summary = "Normalized layers under weight decay: scale invariance, equilibrium norm, angular update (Kosson et al. 2024)."
    description = (
        "Claim: in an MLP whose hidden layers are each followed by a LayerNorm, the hidden weights are"
        " scale-invariant (a), their norm settles at the equilibrium predicted by Kosson et al. 2024 on the"
        " timescale 1/(ηλ) (b), their angular update per step matches sqrt(2ηλ(1−β₁)/(1+β₁)) for AdamW and"
        " sqrt(2ηλ/(1+α)) for SGD+momentum (c), and with λ = 0 the norm grows and η/‖W‖² falls (d)."
        " λ is PyTorch's weight_decay (AdamW: w ← (1−ηλ)w − η·update; SGD: b ← αb + g + λw)."
        " Figures: norms.png (‖W‖ per layer against the prediction, and against t/τ), claims.png"
        " (scale invariance; predicted vs measured norm and angular update), no_decay.png (λ = 0)."
    )
    engines = ("sequential", "batched")
    options = (
        Option("optimizers", choice_list(*OPTIMIZERS), ",".join(OPTIMIZERS), "adamw, sgdm (SGD + momentum, coupled λ)", "LIST"),
        Option("lr_adamw", float_grid(low=0.0, low_open=True), "0.002,0.005", "AdamW learning rates η (grid)", "GRID"),
        Option("wd_adamw", float_grid(low=0.0), "0,0.5,1", "AdamW weight_decay λ (grid; 0: no decay, claim d)", "GRID"),
        Option("lr_sgdm", float_grid(low=0.0, low_open=True), "0.02,0.05", "SGD+momentum learning rates η (grid)", "GRID"),
        Option("wd_sgdm", float_grid(low=0.0), "0,0.005,0.01", "SGD+momentum weight_decay λ (grid)", "GRID"),
        Option("momentum", _momentum, "0.9", "SGD's momentum α and AdamW's β₁ (β₂ = 0.999, ε = 1e-8)", "MU"),
        Option("hidden", int_grid(low=1, high=MAX_WIDTH, merge=False), "32,32", "hidden layer widths (each followed by a LayerNorm)", "W,W"),
        Option("epochs", epochs_int, "25", "training epochs", "N"),
        Option("batch_size", positive_int, "32", "minibatch size", "B"),
        Option("n_train", positive_int, "4096", "training examples per seed (teacher data, 32 inputs, 10 classes)", "N"),
        Option("n_test", positive_int, "512", "test examples per seed", "N"),
        Option("seed", seed_grid, "0", "seed(s) to average over: teacher and data, initial weights, batch order", "SEEDS"),
    )

    swept = ("lr_adamw", "wd_adamw", "lr_sgdm", "wd_sgdm", "seed")  # n_configs: not a full product

    def check(self, opts: dict[str, Any]) -> None:
        check_batch_size(opts, self.name)
        # the inputs are DIM = 32 wide, so an oversized data set is always blamed on --n-train or --n-test
        check_data_budget({**opts, "dim": DIM}, self.name, ("n_train", "n_test"), "dim")
        check_model_budget((DIM, *opts["hidden"], CLASSES), self.name)

    def n_configs(self, opts: dict[str, Any]) -> int:
        return len(opts["seed"]) * sum(len(opts[f"lr_{o}"]) * len(opts[f"wd_{o}"]) for o in opts["optimizers"])

    def configs(self, opts: dict[str, Any]) -> list[dict[str, Any]]:
        return [
            {"optimizer": o, "lr": lr, "wd": wd, "seed": seed}
            for o in opts["optimizers"]
            for lr in opts[f"lr_{o}"]
            for wd in opts[f"wd_{o}"]
            for seed in opts["seed"]
        ]

    def task(self, opts: dict[str, Any], optimizer: str) -> Any:
        from decaylab.engine import Task

        return Task(
            data=partial(teacher_data, n_train=opts["n_train"], n_test=opts["n_test"], dim=DIM, classes=CLASSES),
            layers=(DIM, *opts["hidden"], CLASSES),
            activation="relu",
            loss="cross_entropy",
            optimizer="adam" if optimizer == "adamw" else "sgd",
            momentum=opts["momentum"] if optimizer == "sgdm" else 0.0,
            betas=(opts["momentum"], BETA2),
            eps=EPS,
            batch_size=opts["batch_size"],
            epochs=opts["epochs"],
            init="torch",
            norm="layer",
            keep_weights="epochs",
            keep_optimizer_state=True,
        )

    def run_chunk(
        self, opts: dict[str, Any], configs: Sequence[dict[str, Any]], engine: str, progress: Progress | None = None
    ) -> list[Outcome]:
        from decaylab.engine import Hyper, run_chunk
        from decaylab.engine.semantics import initial_parameters, layer_tensors, load_data

        outcomes: list[Outcome | None] = [None] * len(configs)
        # one stack per (optimizer, seed): every epoch's weights are kept, so stacks stay small
        groups: dict[str, list[int]] = {}
        for i, c in enumerate(configs):
            groups.setdefault(c["optimizer"], []).append(i)
        for optimizer, members in groups.items():
            task = self.task(opts, optimizer)
            coupling = "decoupled" if optimizer == "adamw" else "l2"
            hypers = [Hyper(seed=configs[i]["seed"], lr=configs[i]["lr"], **{coupling: configs[i]["wd"]}) for i in members]
            for i, outcome in zip(members, run_chunk(task, hypers, engine), strict=True):
                c = configs[i]
                if outcome.status == "done":
                    data = load_data(task, c["seed"])
                    start = [float(W.norm()) for W, _ in initial_parameters(task, c["seed"])]
                    self._measure(opts, task, c, outcome, data, start, layer_tensors)
                outcome.weights = outcome.optimizer_state = None  # used up: not handed on
                outcomes[i] = outcome
            if progress:
                progress(len(members) * opts["epochs"])
        return outcomes  # type: ignore[return-value]

    def _measure(self, opts: dict[str, Any], task: Any, c: dict[str, Any], outcome: Outcome, data: Any,
                 start: list[float], layer_tensors: Any) -> None:
        """Per-layer norms per epoch, the last step's angles, E‖g̃‖² and the scale test, into the outcome."""
        n_layers = len(task.layers) - 1
        norms = [[] for _ in range(n_layers)]  # type: list[list[float]]
        for vector in outcome.weights:  # type: ignore[union-attr]
            for l, (W, _) in enumerate(layer_tensors(task, vector)):
                norms[l].append(float(W.double().norm()))
        names = [f"layer{l + 1}" for l in range(n_layers - 1)] + ["readout"]
        final = outcome.weights[-1]  # type: ignore[index]
        angles = angular_updates(task, c["optimizer"], c["lr"], c["wd"], outcome)
        g2 = grad_norm_sq(task, c["seed"], final, data)
        scale = scale_invariance(task, c["seed"], final, data)
        exact = scale_invariance(task, c["seed"], final, data, eps=0.0)
        outcome.curves["step"] = [e * steps_per_epoch(opts) for e in outcome.curves["epoch"]]
        for l, name in enumerate(names):
            outcome.curves[f"norm_{name}"] = norms[l]
            outcome.metrics[f"norm0_{name}"] = start[l]
            outcome.metrics[f"angle_{name}"] = angles[l]
            outcome.curves[f"scale_rel_diff_{name}"] = scale[name]
            outcome.curves[f"scale_rel_diff_exact_{name}"] = exact[name]
        for l, g in enumerate(g2):
            outcome.metrics[f"grad_norm_sq_layer{l + 1}"] = g

    # -- what it shows
    def rows(self, results: Sequence[ConfigResult], opts: dict[str, Any]) -> list[dict[str, Any]]:
        """Prediction vs measurement per (optimizer, η, λ, normalized layer), averaged over the seeds that finished."""
        out = []
        T = opts["epochs"] * steps_per_epoch(opts)
        n_end = max(1, round(END_FRACTION * opts["epochs"]))
        groups = group_by((r for r in results if r.status == "done"), lambda p: (p["optimizer"], p["lr"], p["wd"]))
        for (optimizer, lr, wd), group in groups.items():
            for l in range(len(opts["hidden"])):
                name = f"layer{l + 1}"
                g2 = mean_or_nan(r.metrics[f"grad_norm_sq_{name}"] for r in group)
                pred = predictions(opts, optimizer, lr, wd, [g2] * len(opts["hidden"]))[l]
                curves = [r.curves[f"norm_{name}"] for r in group]
                measured = mean_or_nan(sum(cv[-n_end:]) / n_end for cv in curves)
                start = mean_or_nan(r.metrics[f"norm0_{name}"] for r in group)
                angle = mean_or_nan(r.metrics[f"angle_{name}"] for r in group)
                settle = max(_settle_step(cv, group[0].curves["step"], pred.norm) for cv in curves)
                row = {
                    "optimizer": optimizer, "lr": lr, "wd": wd, "layer": l + 1, "n_elements": hidden_sizes(opts)[l],
                    "n_seeds": len(group), "steps": T, "tau": pred.timescale, "norm_start": start,
                    "norm_measured": measured, "norm_predicted": pred.norm, "norm_ratio": measured / pred.norm if math.isfinite(pred.norm) else math.nan,
                    "angle_measured": angle, "angle_predicted": pred.angular_update,
                    "angle_ratio": angle / pred.angular_update if pred.angular_update else math.nan,
                    "grad_norm_sq": g2, "settle_step": settle,
                    "settle_tau": settle / pred.timescale if math.isfinite(pred.timescale) else math.nan,
                    "eff_lr_start": lr / start**2, "eff_lr_end": lr / measured**2,
                }
                if optimizer == "adamw" and wd > 0:
                    row["angle_ratio_beta1_free"] = angle / math.sqrt(2 * lr * wd)  # against √(2ηλ)
                out.append(row)
        return out

    def table(self, results: Sequence[ConfigResult], opts: dict[str, Any]) -> Table:
        summary = self.summarize(results, opts)
        rows = []
        for r in summary["rows"]:
            rows.append([
                r["optimizer"], r["lr"], r["wd"], r["layer"], r["tau"], r["norm_start"], r["norm_measured"],
                r["norm_predicted"], r["norm_ratio"], r["angle_measured"], r["angle_predicted"], r["angle_ratio"],
                r["settle_tau"],
            ])
        return Table(
            ["opt", "η", "λ", "layer", "τ (steps)", "‖W‖ start", "‖W‖ end", "‖W‖* pred", "ratio",
             "angle/step", "pred", "ratio", "settled (τ)"],
            rows,
            title=(f"equilibrium: teacher data, n_train={opts['n_train']}, MLP {'-'.join(map(str, opts['hidden']))} with LayerNorm,"
                   f" batch {opts['batch_size']}, {opts['epochs'] * steps_per_epoch(opts)} steps, seeds {opts['seed']};"
                   " ‖W‖ end: mean of the last tenth; angle: the last step (radians); τ = 1/(ηλ) (AdamW),"
                   " (1−α)/(ηλ) (SGDM)"),
        )

    def summarize(self, results: Sequence[ConfigResult], opts: dict[str, Any]) -> dict[str, Any]:
        rows = self.rows(results, opts)
        decayed = [r for r in rows if r["wd"] > 0]
        zero = [r for r in rows if r["wd"] == 0]
        T = opts["epochs"] * steps_per_epoch(opts)
        done = [r for r in results if r.status == "done"]
        claims: dict[str, Any] = {}
        numbers: dict[str, Any] = {}
        if done:
            layers = range(len(opts["hidden"]))
            exact = max(max(r.curves[f"scale_rel_diff_exact_layer{l + 1}"]) for r in done for l in layers)
            with_eps = max(max(r.curves[f"scale_rel_diff_layer{l + 1}"]) for r in done for l in layers)
            readout_diff = min(min(r.curves["scale_rel_diff_readout"]) for r in done)
            numbers["a"] = {"max_rel_change_normalized_eps0": exact, "max_rel_change_normalized": with_eps,
                            "min_rel_change_readout": readout_diff, "scales": list(SCALES)}
            claims["a_scale_invariance"] = bool(exact < SCALE_TOL_EXACT and with_eps < SCALE_TOL and readout_diff > 0.1)
        if decayed:
            ratios = [r["norm_ratio"] for r in decayed]
            long_enough = [r for r in decayed if T >= SETTLE_TAU * r["tau"]]
            numbers["b"] = {"norm_ratio_min": min(ratios), "norm_ratio_max": max(ratios),
                            "settle_tau_max": max((r["settle_tau"] for r in long_enough), default=math.nan),
                            "runs_long_enough": len(long_enough), "runs": len(decayed)}
            claims["b_equilibrium_norm"] = all(abs(x - 1) <= NORM_TOL for x in ratios)
            claims["b_timescale"] = all(r["settle_tau"] <= SETTLE_TAU for r in long_enough) if long_enough else None
            angle = [r["angle_ratio"] for r in decayed]
            numbers["c"] = {"angle_ratio_min": min(angle), "angle_ratio_max": max(angle)}
            free = [r["angle_ratio_beta1_free"] for r in decayed if "angle_ratio_beta1_free" in r]
            if free:
                numbers["c"]["adamw_ratio_to_sqrt_2_eta_lambda"] = [min(free), max(free)]
            claims["c_angular_update"] = all(abs(x - 1) <= ANGLE_TOL for x in angle)
        if zero:
            growth = [r["norm_measured"] / r["norm_start"] for r in zero]
            fall = [r["eff_lr_end"] / r["eff_lr_start"] for r in zero]
            numbers["d"] = {"norm_growth_min": min(growth), "eff_lr_end_over_start_max": max(fall)}
            claims["d_no_decay_norm_grows"] = all(g >= GROWTH_MIN for g in growth) and all(f < 1 for f in fall)
        tested = [v for v in claims.values() if v is not None]
        return {"rows": rows, "claims": claims, "numbers": numbers, "verdict": _verdict(claims, numbers),
                "holds": all(tested) if tested else None}


def _settle_step(curve: Sequence[float], steps: Sequence[float], predicted: float) -> float:
    """The first measured step from which ‖W‖ stays within 1 ± :data:`NORM_TOL` of the predicted ‖W‖*
    (0: from the first epoch on; inf: never, or no prediction)."""
    if not math.isfinite(predicted) or not curve:
        return math.inf
    settle = 0.0
    for s, v in zip(steps, curve, strict=True):
        if abs(v / predicted - 1) > NORM_TOL:
            settle = s
    return math.inf if settle == steps[-1] else float(settle)


def _verdict(claims: dict[str, Any], numbers: dict[str, Any]) -> list[str]:
    """One plain line per claim: holds / does not hold, with the numbers that decide it."""
    say = lambda ok: "HOLDS" if ok else ("not tested" if ok is None else "DOES NOT HOLD")  # noqa: E731
    lines = []
    if "a_scale_invariance" in claims:
        a = numbers["a"]
        lines.append(f"(a) scale invariance {say(claims['a_scale_invariance'])}: W→cW (c = {', '.join(f'{c:g}' for c in a['scales'])})"
                     f" changes the logits by ≤ {a['max_rel_change_normalized_eps0']:.1e} (relative; ε = 0) or"
                     f" ≤ {a['max_rel_change_normalized']:.1e} (ε = 1e-5) for a normalized layer,"
                     f" by ≥ {a['min_rel_change_readout']:.2g} for the readout")
    if "b_equilibrium_norm" in claims:
        b = numbers["b"]
        lines.append(f"(b) equilibrium norm {say(claims['b_equilibrium_norm'])}: measured/predicted ‖W‖ in"
                     f" [{b['norm_ratio_min']:.2f}, {b['norm_ratio_max']:.2f}] (allowed 1 ± {NORM_TOL});"
                     f" timescale {say(claims['b_timescale'])}: within 1 ± {NORM_TOL} of ‖W‖* from"
                     f" ≤ {b['settle_tau_max']:.2f} τ on (allowed {SETTLE_TAU:g} τ; {b['runs_long_enough']} of"
                     f" {b['runs']} (η, λ, layer) last ≥ {SETTLE_TAU:g} τ)")
    if "c_angular_update" in claims:
        c = numbers["c"]
        line = (f"(c) angular update {say(claims['c_angular_update'])}: measured/predicted in"
                f" [{c['angle_ratio_min']:.2f}, {c['angle_ratio_max']:.2f}] (allowed 1 ± {ANGLE_TOL})")
        if "adamw_ratio_to_sqrt_2_eta_lambda" in c:
            lo, hi = c["adamw_ratio_to_sqrt_2_eta_lambda"]
            line += f"; AdamW against √(2ηλ) without the β₁ factor: [{lo:.2f}, {hi:.2f}]"
        lines.append(line)
    if "d_no_decay_norm_grows" in claims:
        d = numbers["d"]
        lines.append(f"(d) without decay {say(claims['d_no_decay_norm_grows'])}: ‖W‖ grows ×{d['norm_growth_min']:.2f} at least;"
                     f" η/‖W‖² ends at ≤ {d['eff_lr_end_over_start_max']:.2f} of its start")
    return lines
