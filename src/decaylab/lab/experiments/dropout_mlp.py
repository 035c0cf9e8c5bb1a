r"""``dropout-mlp``: dropout and weight decay narrow the generalization gap of an MLP (seeds 002, 001; D2L "Dropout").

An MLP with two hidden ReLU layers (default 64-256-256-10 on digits, 784-256-256-10 on MNIST) and
inverted dropout after each hidden activation, ``p = 0.2`` after the first and ``p = 0.5`` after the
second (D2L §5.6)::

    h₁ = drop_{p₁}(relu(x W₁ + b₁)),   h₂ = drop_{p₂}(relu(h₁ W₂ + b₂)),   ŷ = h₂ W₃ + b₃
    drop_p(h) = h · 1[u ≥ p] / (1 − p),   u ~ U[0, 1)   (training only; identity when evaluating)

trained by minibatch SGD on the mean cross-entropy, four ways (the ``variant`` of each configuration):

==========  ======================  ===============================================================
variant     dropout ``p``           update of each weight matrix ``W`` (biases: never decayed)
==========  ======================  ===============================================================
``none``    0, 0                    ``W ← W − η·g``
``dropout`` ``--dropout`` (0.2,0.5) ``W ← W − η·g``
``decay``   0, 0                    ``W ← W − η·(g + λW)`` = ``(1 − ηλ)W − ηg``
``both``    ``--dropout``           ``W ← W − η·(g + λW)``
==========  ======================  ===============================================================

where ``g`` is the gradient of the minibatch's mean cross-entropy. **λ convention**: the objective is
``mean CE + λ/2·Σ‖W‖²`` (D2L's λ/2·‖w‖² on a mean loss; PyTorch ``SGD(weight_decay=λ)``); with plain SGD
the coupled and decoupled forms coincide (see ``l2-vs-decay``). Initialization is D2L's:
``W ~ N(0, 0.01²)``, ``b = 0``.

**Data** (default): scikit-learn's bundled digits (8×8, offline), a small training subset of
``--n-train`` images and ``--n-test`` test images per seed, both drawn from the seed's ``data`` stream
(:mod:`decaylab.data.digits`), so that over-fitting is visible. ``--data-dir DIR`` reads MNIST or
Fashion-MNIST from the four standard IDX files, gzipped or not (:mod:`decaylab.data.idx`).

**Claim**: the generalization gap, train accuracy − test accuracy at the end of training (both
measured in evaluation mode, dropout off), averaged over seeds, is smaller with dropout, with decay and
with both than without regularization. "At the end of training" is the mean over the last fifth of the
epochs (:func:`end_window`): at η = 0.5 the accuracies still jitter by a few test images from one epoch
to the next, and the mean over a window measures the gap rather than the last epoch's luck.
:meth:`DropoutMLP.summarize` reports the mean gap of every variant and whether the claim holds.

**Dropout implementations** (``--dropout-impl``): ``engine`` trains all configurations through
:func:`decaylab.engine.run_chunk` (``--engine batched``, the default, stacks them; ``sequential`` is
plain PyTorch). ``decaylab`` and ``torch`` train each configuration with a small focused loop
(:func:`train_focused`) whose model holds :class:`decaylab.Dropout` (drawing from the seed's
``dropout`` stream, exactly the engine's draws) or :class:`torch.nn.Dropout` (the global generator,
seeded from the same stream inside :func:`torch.random.fork_rng`); the optimizer is
``torch.optim.SGD`` over :func:`decaylab.param_groups` (biases excluded). The ``decaylab`` loop follows
the engine's trajectory up to float32 rounding; ``torch`` draws other masks from the same distribution.
Whatever the choice, the summary's ``dropout_check`` compares the two layers directly: keep rate,
the value of kept entries (``1/(1 − p)``), mean and variance on a million ones.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from decaylab.lab.experiments.base import (
    MAX_WIDTH,
    Experiment,
    Option,
    Table,
    check_batch_size,
    check_model_budget,
    choice,
    choice_list,
    epochs_int,
    float_grid,
    group_by,
    holds_text,
    int_grid,
    mean_or_nan,
    path_or_empty,
    positive_float,
    positive_int,
    seed_grid,
    status_text,
)
from decaylab.results import ConfigResult, Outcome
from decaylab.validation import check_choice, parameter_error

__all__ = [
    "HIDDEN_OPTION",
    "VARIANTS",
    "DropoutMLP",
    "check_data",
    "compare_dropout",
    "data_function",
    "data_shape",
    "end_mean",
    "end_window",
    "evaluate",
    "mlp_task",
    "train_epoch",
    "train_focused",
    "training_options",
]

Progress = Callable[[int], None]


VARIANTS = ("none", "dropout", "decay", "both")


IMPLS = ("engine", "decaylab", "torch")


INIT_STD = 0.01  # D2L: nn.init.normal_(m.weight, std=0.01)


# -- the MLP on digits (or IDX files): options, data and Task, shared with l2-vs-decay ----------------


HIDDEN_OPTION = Option("hidden", int_grid(low=1, high=MAX_WIDTH, merge=False), "256,256", "hidden layer widths", "W,W")


def training_options(
    *, epochs: str, seeds: str, seed_help: str, n_train_help: str = "training examples per seed"
) -> tuple[Option, ...]:
    """``--epochs --batch-size --n-train --n-test --seed --data-dir``, in this order; the defaults of
    ``--epochs`` and ``--seed`` and the help of ``--seed`` and ``--n-train`` are the experiment's."""
    return (
        Option("epochs", epochs_int, epochs, "training epochs", "N"),
        Option("batch_size", positive_int, "20", "minibatch size", "B"),
        Option("n_train", positive_int, "200", n_train_help, "N"),
        Option("n_test", positive_int, "500", "test examples per seed", "N"),
        Option("seed", seed_grid, seeds, seed_help, "SEEDS"),
        Option("data_dir", path_or_empty, "", "directory of MNIST/Fashion-MNIST IDX files; empty: scikit-learn digits", "DIR"),
    )


def data_function(opts: dict[str, Any]) -> Callable[[int], Any]:
    """The picklable ``seed -> data set`` function of the options (digits, or the IDX files of ``--data-dir``)."""
    if opts["data_dir"]:
        from decaylab.data.idx import idx_data

        return partial(idx_data, data_dir=str(Path(opts["data_dir"]).resolve()), n_train=opts["n_train"], n_test=opts["n_test"])
    from decaylab.data.digits import digits_data

    return partial(digits_data, n_train=opts["n_train"], n_test=opts["n_test"])


def data_shape(opts: dict[str, Any]) -> tuple[int, int]:
    """``(input features, classes)`` of the data the options select."""
    if opts["data_dir"]:
        from decaylab.data.idx import load_idx_dataset

        ds = load_idx_dataset(opts["data_dir"])
        return ds.n_features, ds.n_classes
    return 64, 10


def data_name(opts: dict[str, Any]) -> str:
    return f"IDX files in {opts['data_dir']}" if opts["data_dir"] else "scikit-learn digits (8×8)"


def check_data(opts: dict[str, Any], owner: str) -> None:
    """Read ``--data-dir`` (one-line error naming the bad file) and check ``--n-train``/``--n-test``/``--batch-size`` fit."""
    if opts["data_dir"]:
        from decaylab.data.idx import IdxError, load_idx_dataset

        try:
            ds = load_idx_dataset(opts["data_dir"])
        except IdxError as exc:
            raise parameter_error(
                "--data-dir", owner, f"a directory of readable MNIST-style IDX files ({exc})", opts["data_dir"]
            ) from None
        n_train, n_test = len(ds.train_labels), len(ds.test_labels)
    else:
        from decaylab.data.digits import N_DIGITS

        n_train = N_DIGITS - 1
        n_test = N_DIGITS - min(opts["n_train"], n_train)
    if opts["n_train"] > n_train:
        raise parameter_error("--n-train", owner, f"an int in [1, {n_train}] for {data_name(opts)}", opts["n_train"])
    if opts["n_test"] > n_test:
        raise parameter_error("--n-test", owner, f"an int in [1, {n_test}] for {data_name(opts)}", opts["n_test"])
    check_batch_size(opts, owner)


def mlp_task(opts: dict[str, Any], **settings: Any) -> Any:
    """The :class:`decaylab.engine.Task` of a ReLU MLP with ``--hidden`` layers on the options' data, mean
    cross-entropy, ``W ~ N(0, INIT_STD²)`` where ``init='normal'``; ``settings``: the optimizer and the rest."""
    from decaylab.engine import Task

    d_in, n_classes = data_shape(opts)
    return Task(
        data=data_function(opts),
        layers=(d_in, *opts["hidden"], n_classes),
        activation="relu",
        loss="cross_entropy",
        batch_size=opts["batch_size"],
        epochs=opts["epochs"],
        init_std=INIT_STD,
        **settings,
    )


# -- focused loops beside the engine (--dropout-impl decaylab|torch) --


def train_epoch(model: Any, opt: Any, data: Any, batch_size: int | None, order: Any) -> None:
    """One epoch of ``opt`` on the minibatch mean cross-entropy, over the engine's batches (``order``: the
    seed's ``order`` generator)."""
    import torch.nn.functional as F

    from decaylab.engine.semantics import epoch_batches

    for idx in epoch_batches(data.n_train, batch_size, order):
        x, y = (data.X_train, data.y_train) if idx is None else (data.X_train[idx], data.y_train[idx])
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()


def evaluate(model: Any, data: Any) -> list[float]:
    """``[train_loss, test_loss, w_norm, train_acc, test_acc]`` in evaluation mode (the engine's order)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    from decaylab.engine.semantics import tensor_sum

    model.eval()
    with torch.no_grad():
        row, accs = [], []
        for X, y in ((data.X_train, data.y_train), (data.X_test, data.y_test)):
            out = model(X)
            row.append(F.cross_entropy(out, y).item())
            accs.append((out.argmax(dim=1) == y).float().mean().item())
        weights = [m.weight for m in model.modules() if isinstance(m, nn.Linear)]
        row.append(torch.sqrt(tensor_sum(w.pow(2).sum() for w in weights)).item())
    model.train()
    return row + accs


def _model(task: Any, hyper: Any, impl: str) -> Any:
    """The engine's MLP (same initial parameters) with ``decaylab.Dropout`` or ``torch.nn.Dropout`` layers."""
    import torch
    from torch import nn

    import decaylab
    from decaylab.engine.semantics import initial_parameters
    from decaylab.rng import generator

    gen = generator(hyper.seed, "dropout")
    modules: list[nn.Module] = []
    params = initial_parameters(task, hyper.seed)
    probs = hyper.dropout_for(task)
    for depth, (W, b) in enumerate(params):
        linear = nn.Linear(W.shape[0], W.shape[1])
        with torch.no_grad():
            linear.weight.copy_(W.T)
            linear.bias.copy_(b)
        modules.append(linear)
        if depth < len(params) - 1:
            modules.append(nn.ReLU())
            if probs[depth] > 0:
                modules.append(decaylab.Dropout(probs[depth], generator=gen) if impl == "decaylab" else nn.Dropout(probs[depth]))
    return nn.Sequential(*modules)


def train_focused(task: Any, hyper: Any, impl: str, progress: Progress | None = None) -> Outcome:
    """Train one configuration with ``decaylab.Dropout`` (``impl='decaylab'``) or ``torch.nn.Dropout``.

    Same data, initial parameters and batch order as the engine (:mod:`decaylab.engine.semantics`);
    ``torch.optim.SGD(decaylab.param_groups(model, l2), lr)``: coupled ``g ← g + λW`` on weights only.
    """
    import torch

    import decaylab
    from decaylab.engine.semantics import load_data, make_outcome
    from decaylab.rng import generator, stream_seed

    check_choice(impl, "impl", "train_focused", ("decaylab", "torch"))
    data = load_data(task, hyper.seed)
    order = generator(hyper.seed, "order")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(stream_seed(hyper.seed, "dropout"))  # torch.nn.Dropout draws from the global generator
        model = _model(task, hyper, impl)
        opt = torch.optim.SGD(decaylab.param_groups(model, hyper.l2), lr=hyper.lr)
        rows: list[list[float]] = []
        diverged = None
        for epoch in range(1, task.epochs + 1):
            if diverged is not None:
                rows.append([math.nan] * 5)
                continue
            train_epoch(model, opt, data, task.batch_size, order)
            rows.append(evaluate(model, data))
            finite = all(math.isfinite(v) for v in rows[-1][:2]) and all(bool(torch.isfinite(p).all()) for p in model.parameters())
            if not finite:
                diverged = epoch
            if progress:
                progress(1)
    return make_outcome(task, rows, diverged)


# -- decaylab.Dropout against torch.nn.Dropout ----------------------------------------------------


def compare_dropout(p: float, n: int = 1_000_000, seed: int = 0) -> dict[str, Any]:
    """Statistics of ``decaylab.Dropout(p)`` and ``torch.nn.Dropout(p)`` on ``n`` ones, in training mode.

    Both should keep each entry with probability ``1 − p`` and scale kept entries to exactly
    ``1/(1 − p)``, so that the mean is 1 and the variance ``p/(1 − p)``. ``z_keep`` is the difference of
    the two keep rates in units of its standard error ``sqrt(2p(1 − p)/n)``; ``agree`` requires
    ``|z_keep| < 4``, both kept values within 1e-6 of ``1/(1 − p)`` and both means within 4 standard errors of 1.
    """
    import torch

    import decaylab
    from decaylab.rng import generator, stream_seed

    ones = torch.ones(n)
    ours = decaylab.Dropout(p, generator=generator(seed, "dropout")).train()(ones)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(stream_seed(seed, "dropout"))
        theirs = torch.nn.Dropout(p).train()(ones)
    scale = 1.0 / (1.0 - p) if p < 1 else math.inf
    stats: dict[str, Any] = {"p": p, "n": n, "expected_keep_rate": 1 - p, "expected_kept_value": scale,
                             "expected_var": p / (1 - p) if p < 1 else math.inf}
    for name, out in (("decaylab", ours), ("torch", theirs)):
        kept = out[out != 0]
        stats[name] = {
            "keep_rate": kept.numel() / n,
            "kept_value_max_dev": (kept - scale).abs().max().item() if kept.numel() else 0.0,
            "mean": out.mean().item(),
            "var": out.var().item(),
        }
    se_keep = math.sqrt(2 * p * (1 - p) / n) if 0 < p < 1 else 1.0
    se_mean = math.sqrt(max(p / (1 - p), 1e-12) / n) if p < 1 else 1.0
    stats["z_keep"] = (stats["decaylab"]["keep_rate"] - stats["torch"]["keep_rate"]) / se_keep
    stats["agree"] = bool(
        abs(stats["z_keep"]) < 4
        and all(stats[k]["kept_value_max_dev"] < 1e-6 * scale for k in ("decaylab", "torch"))
        and all(abs(stats[k]["mean"] - 1) < 4 * se_mean for k in ("decaylab", "torch"))
    )
    return stats


# -- the experiment ------------------------------------------------------------------------------


def end_window(epochs: int) -> int:
    """How many final epochs "the end of training" averages over: the last fifth, at least one."""
    return max(1, epochs // 5)


def end_mean(result: ConfigResult, key: str, window: int) -> float:
    """The mean of curve ``key`` over the last ``window`` epochs (NaN if the curve is missing or not finite)."""
    values = result.curves.get(key, [])[-window:]
    if not values or not all(math.isfinite(v) for v in values):
        return math.nan
    return sum(values) / len(values)


def variant_label(params: dict[str, Any]) -> str:
    v = params["variant"]
    return f"{v} λ={params['wd']:g}" if v in ("decay", "both") else v


class DropoutMLP(Experiment):
    name = "dropout-mlp"
    order = 10
    summary = "MLP 2×256 on digits with SGD: none / dropout (0.2, 0.5) / weight decay / both — the generalization gap."
    description = (
        "Claim: the generalization gap in cross-entropy (test CE − train CE, eval mode, mean over seeds and the last"
        " epochs) with dropout, with weight decay (mean CE + λ/2·Σ‖W‖², biases not decayed) and with both is smaller"
        " than without. The accuracy gap (train − test accuracy) is shown too; it moves less and in steps of one"
        " test example, so it is reported, not claimed."
        " Figures: curves.png (train/test accuracy and loss per epoch, one column per variant), gap.png (the CE gap,"
        " claimed, and the accuracy gap, shown: per variant and seed, and per epoch). --data-dir reads (Fashion-)MNIST IDX files;"
        " --dropout-impl decaylab|torch trains with decaylab.Dropout or torch.nn.Dropout in a focused loop."
    )
    engines = ("sequential", "batched")
    options = (
        Option("variants", choice_list(*VARIANTS), ",".join(VARIANTS), "variants to train: none, dropout, decay, both", "LIST"),
        Option("wd", float_grid(low=0.0), "0.002", "λ of the decay variants: mean CE + λ/2·Σ‖W‖² (grid)", "GRID"),
        Option("dropout", float_grid(low=0.0, high=1.0, merge=False), "0.2,0.5", "dropout p after each hidden layer (one per layer)", "P,P"),
        HIDDEN_OPTION,
        Option("lr", positive_float, "0.5", "SGD learning rate η (D2L's 0.5)", "ETA"),
        *training_options(
            epochs="100",
            seeds="0,1,2",
            seed_help="seed(s) to average over: data subset, init, batch order, masks",
            n_train_help="training examples per seed (small: over-fitting shows)",
        ),
        Option("dropout_impl", choice(*IMPLS), "engine", "dropout layers: the engine's, decaylab.Dropout or torch.nn.Dropout"),
    )

    swept = ("variants", "wd", "seed")

    def n_configs(self, opts: dict[str, Any]) -> int:
        per_seed = sum(len(opts["wd"]) if v in ("decay", "both") else 1 for v in opts["variants"])
        return per_seed * len(opts["seed"])

    def check(self, opts: dict[str, Any]) -> None:
        if len(opts["dropout"]) != len(opts["hidden"]):
            raise parameter_error(
                "--dropout", self.name, f"{len(opts['hidden'])} probabilities, one per hidden layer", ",".join(map(str, opts["dropout"]))
            )
        check_data(opts, self.name)
        d_in, n_classes = data_shape(opts)
        check_model_budget((d_in, *opts["hidden"], n_classes), self.name)

    def configs(self, opts: dict[str, Any]) -> list[dict[str, Any]]:
        zeros = [0.0] * len(opts["hidden"])
        out = []
        for variant in opts["variants"]:
            wds = opts["wd"] if variant in ("decay", "both") else [0.0]
            p = list(opts["dropout"]) if variant in ("dropout", "both") else zeros
            for wd in wds:
                for seed in opts["seed"]:
                    out.append({"variant": variant, "wd": wd, "p": p, "seed": seed, "dropout_impl": opts["dropout_impl"]})
        return out

    def task(self, opts: dict[str, Any]) -> Any:
        return mlp_task(opts, optimizer="sgd", init="normal", dropout=True)

    def run_chunk(
        self, opts: dict[str, Any], configs: Sequence[dict[str, Any]], engine: str, progress: Progress | None = None
    ) -> list[Outcome]:
        from decaylab.engine import Hyper, run_chunk

        task = self.task(opts)
        hypers = [Hyper(seed=c["seed"], lr=opts["lr"], l2=c["wd"], dropout=tuple(c["p"])) for c in configs]
        if opts["dropout_impl"] == "engine":
            outcomes = run_chunk(task, hypers, engine)
            if progress:
                progress(len(configs) * opts["epochs"])
            return outcomes
        return [train_focused(task, h, opts["dropout_impl"], progress) for h in hypers]

    # -- what it shows
    def table(self, results: Sequence[ConfigResult], opts: dict[str, Any]) -> Table:
        rows = []
        w = end_window(opts["epochs"])
        keys = ("train_acc", "test_acc", "train_loss", "test_loss", "w_norm")
        for label, group in group_by(results, variant_label).items():
            for r in group:
                v = {k: end_mean(r, k, w) for k in keys}
                rows.append([label, r.params["seed"], v["train_acc"], v["test_acc"], v["train_acc"] - v["test_acc"],
                             v["train_loss"], v["test_loss"], v["test_loss"] - v["train_loss"], v["w_norm"], status_text(r)])
            done = [r for r in group if r.status == "done"]
            if len(group) > 1 and done:
                mean = {k: mean_or_nan(end_mean(r, k, w) for r in done) for k in keys}
                rows.append([label, "mean", mean["train_acc"], mean["test_acc"], mean["train_acc"] - mean["test_acc"],
                             mean["train_loss"], mean["test_loss"], mean["test_loss"] - mean["train_loss"], mean["w_norm"],
                             f"{len(done)} seeds"])
        p = ",".join(f"{v:g}" for v in opts["dropout"])
        return Table(
            ["variant", "seed", "train acc", "test acc", "acc gap", "train CE", "test CE", "CE gap", "‖W‖₂", "status"],
            rows,
            title=(f"dropout-mlp: {data_name(opts)}, n_train={opts['n_train']}, MLP {'-'.join(map(str, opts['hidden']))},"
                   f" SGD η={opts['lr']:g}, {opts['epochs']} epochs; dropout p=({p}); decay: mean CE + λ/2·Σ‖W‖²;"
                   f" values: mean over the last {w} epochs; acc gap = train − test accuracy,"
                   " CE gap = test − train cross-entropy (eval mode)"),
        )

    def summarize(self, results: Sequence[ConfigResult], opts: dict[str, Any]) -> dict[str, Any]:
        by_variant = []
        w = end_window(opts["epochs"])
        for label, group in group_by(results, variant_label).items():
            done = [r for r in group if r.status == "done"]
            row: dict[str, Any] = {"label": label, "variant": group[0].params["variant"], "wd": group[0].params["wd"],
                                   "p": group[0].params["p"], "n_seeds": len(done), "end_epochs": w}
            for key in ("train_acc", "test_acc", "train_loss", "test_loss", "w_norm"):
                row[key] = mean_or_nan(end_mean(r, key, w) for r in done)
            row["gap_per_seed"] = {str(r.params["seed"]): end_mean(r, "train_acc", w) - end_mean(r, "test_acc", w) for r in done}
            row["final_epoch_gap"] = mean_or_nan(r.metrics["train_acc"] - r.metrics["test_acc"] for r in done)
            row["gap"] = row["train_acc"] - row["test_acc"]
            row["ce_gap"] = row["test_loss"] - row["train_loss"]
            by_variant.append(row)
        claim: dict[str, Any] = {
            "statement": (f"mean over seeds of the cross-entropy gap (test CE − train CE, mean over the last {w} epochs)"
                          " of every regularized variant < that without regularization"),
            "holds": None,
        }
        base = next((r for r in by_variant if r["variant"] == "none"), None)
        others = [r for r in by_variant if r["variant"] != "none"]
        if base is not None and others and base["n_seeds"]:
            claim["ce_gap_none"] = base["ce_gap"]
            claim["smaller"] = {r["label"]: bool(r["ce_gap"] < base["ce_gap"]) for r in others}
            claim["reduction"] = {r["label"]: base["ce_gap"] - r["ce_gap"] for r in others}
            claim["holds"] = all(claim["smaller"].values())
            # reported, not claimed: the accuracy gap moves in steps of one test example and by less
            claim["accuracy_gap_none"] = base["gap"]
            claim["accuracy_gap_smaller"] = {r["label"]: bool(r["gap"] < base["gap"]) for r in others}
        check = [compare_dropout(p, seed=opts["seed"][0]) for p in sorted(set(opts["dropout"])) if 0 < p < 1]
        return {
            "by_variant": by_variant,
            "claim": claim,
            "verdict": _verdict(claim, by_variant, w),
            "dropout_check": {"layers": check, "agree": all(c["agree"] for c in check)},
        }


def _verdict(claim: dict[str, Any], by_variant: list[dict[str, Any]], window: int) -> str:
    """The claim in one line: every regularized variant's CE gap (test − train cross-entropy, mean over seeds and
    the last ``window`` epochs) against the unregularized one's, e.g.
    ``CE gap (test − train, last 5 epochs): none 0.42; dropout 0.21, decay λ=0.002 0.30 — holds``."""
    head = f"regularization shrinks the CE gap (test − train cross-entropy, last {window} epochs)"
    if claim["holds"] is None:
        return f"{head}: not tested (needs the variant none and a regularized one that finished)"
    others = ", ".join(f"{r['label']} {r['ce_gap']:.3g}" for r in by_variant if r["variant"] != "none")
    return f"{head}: none {claim['ce_gap_none']:.3g}; {others} — {holds_text(claim['holds'])}"
