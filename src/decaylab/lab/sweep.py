"""How much decay for *your* model: ``decaylab.sweep(...)`` and ``decaylab sweep FILE.py:FUNCTION``.

The user's function (no arguments) returns what every configuration shares, as a dict::

    {"model": seed -> nn.Module,            # the same architecture for every seed
     "train": (X, y) or a TensorDataset,    # training data
     "val": (X, y) or a TensorDataset,      # optional: validation curves
     "loss": (output, y) -> scalar,         # a mean over the rows, e.g. F.cross_entropy
     "metrics": {name: (output, y) -> scalar}}   # optional, means over the rows (e.g. accuracy)

and the sweep's options say what varies — coupled λ (``lambd``: ``torch.optim``'s ``weight_decay`` of
SGD/Adam, the penalty ``λ/2·Σw²`` on the mean loss), decoupled decay (``decoupled``: AdamW's
``θ ← θ − lr·λ·θ``), the L1 proximal step (``l1``), the learning rate and the seed, each a grid
(:mod:`decaylab.lab.grid` syntax, or numbers from Python) — their product is the set of configurations.
Which tensors decay is :class:`decaylab.DecayPolicy`'s decision (default: weights decay; biases,
1-D tensors and norm layers do not), exactly as in :func:`decaylab.param_groups`.

The configurations are trained by :mod:`decaylab.engine.module` (``engine='batched'``: stacked with
``torch.func``; ``'sequential'``: one at a time with ``torch.optim``) and the result is a
:class:`SweepResult`: one :class:`~decaylab.results.ConfigResult` per configuration, a table, the best
configuration. The command line runs the same through the runner (store, resume, Ray, ``--json``,
figures): see :mod:`decaylab.lab.experiments.sweep`.

``decaylab.sweep`` is this module's :func:`sweep` (``decaylab.sweep(setup, lambd=[0, 1e-3, 1e-2])``),
loaded with the lab on first use.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from decaylab.results import ConfigResult
from decaylab.validation import check_choice, check_float, check_int, one_line, parameter_error

__all__ = ["SPEC_KEYS", "SweepResult", "best_config", "load_setup", "module_task", "parse_target", "sweep", "sweep_configs"]

SPEC_KEYS = ("model", "train", "val", "loss", "metrics")
SWEPT = ("lambd", "decoupled", "l1", "lr")  # per-configuration numbers besides the seed
LABELS = {"lambd": "λ", "decoupled": "λ decoupled", "l1": "λ₁", "lr": "lr"}  # their names in tables and verdicts
OWNER = "sweep"
_LOADED: dict[tuple[str, str, float], Mapping[str, Any]] = {}


# ----------------------------------------------------------------------------- FILE.py:FUNCTION
def parse_target(text: str, name: str = "FILE.py:FUNCTION", owner: str = "decaylab sweep") -> str:
    """``FILE.py:FUNCTION`` with the file made absolute (so a resumed or remote run finds it); checks the syntax and the file."""
    allowed = "FILE.py:FUNCTION, an existing Python file and the name of a function in it"
    path, sep, func = str(text).rpartition(":")
    if not sep or not path.endswith(".py") or not func.isidentifier():
        raise parameter_error(name, owner, allowed, text)
    full = Path(path).expanduser().resolve()
    if not full.is_file():
        raise parameter_error(name, owner, allowed + " (no such file)", text)
    return f"{full}:{func}"


def load_setup(target: str, owner: str = "decaylab sweep") -> Mapping[str, Any]:
    """Import the file of ``FILE.py:FUNCTION`` (once per modification), call the function, check what it returns."""
    path, _, func = target.rpartition(":")
    mtime = os.path.getmtime(path)
    key = (path, func, mtime)
    if key not in _LOADED:
        name = "decaylab_user_" + hashlib.blake2b(path.encode(), digest_size=6).hexdigest()
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise parameter_error("FILE.py:FUNCTION", owner, "a Python file", target)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        directory = str(Path(path).resolve().parent)  # the file may import modules beside it, as a script would
        sys.path.insert(0, directory)
        try:
            try:
                spec.loader.exec_module(module)
            except (Exception, SystemExit) as exc:  # noqa: BLE001 - any error of user code becomes one line
                raise parameter_error("FILE.py:FUNCTION", owner, "a file that imports without error", f"{target}: {one_line(exc)}") from None
            fn = getattr(module, func, None)
            if not callable(fn):
                raise parameter_error("FILE.py:FUNCTION", owner, f"the name of a function defined in {path}", func)
            _LOADED[key] = call_setup(fn, f"{func}()", "FILE.py:FUNCTION", owner)
        finally:
            sys.path.remove(directory)
    return _LOADED[key]


def call_setup(fn: Callable[[], Any], what: str, name: str, owner: str = OWNER) -> Mapping[str, Any]:
    """``fn()``, checked by :func:`check_setup`; an error it raises becomes one line naming ``what``."""
    try:
        value = fn()
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - any error of user code becomes one line
        raise parameter_error(name, owner, "a function that returns the setup dict without error",
                              f"{what}: {one_line(exc)}") from None
    return check_setup(value, what)


def check_setup(value: Any, what: str = "setup") -> Mapping[str, Any]:
    """The dict a setup function returns: ``model``, ``train``, ``loss`` required; ``val``, ``metrics`` optional."""
    allowed = "a dict with keys 'model', 'train', 'loss' and optionally 'val', 'metrics'"
    if not isinstance(value, Mapping):
        raise parameter_error(what, OWNER, allowed, type(value).__name__)
    unknown = [k for k in value if k not in SPEC_KEYS]
    missing = [k for k in ("model", "train", "loss") if k not in value]
    if unknown or missing:
        raise parameter_error(what, OWNER, allowed, f"unknown keys {unknown}, missing keys {missing}")
    return value


# ----------------------------------------------------------------------------- options -> task, configurations
def policy_of(opts: Mapping[str, Any]) -> Any:
    """The :class:`~decaylab.DecayPolicy` of the options ``decay_bias``, ``decay_norm``, ``exclude_embeddings``,
    ``include``, ``exclude``, ``multipliers`` (absent ones: the policy's defaults)."""
    from decaylab.policy import DecayPolicy

    decay_bias, decay_norm = bool(opts.get("decay_bias", False)), bool(opts.get("decay_norm", False))
    return DecayPolicy(
        # a norm layer's weight is 1-D: the shape rule would exclude it whatever exclude_norm says
        exclude_1d=not (decay_bias or decay_norm),
        exclude_bias=not decay_bias,
        exclude_norm=not decay_norm,
        exclude_embeddings=bool(opts.get("exclude_embeddings", False)),
        include=tuple(opts.get("include", ())),
        exclude=tuple(opts.get("exclude", ())),
        multipliers=tuple((p, float(m)) for p, m in opts.get("multipliers", ())),
    )


def module_task(setup: Mapping[str, Any], opts: Mapping[str, Any], policy: Any = None) -> Any:
    """The :class:`~decaylab.engine.module.ModuleTask` of a setup dict and the sweep's shared options."""
    from decaylab.engine.module import ModuleTask

    return ModuleTask(
        model=setup["model"],
        train=setup["train"],
        val=setup.get("val"),
        loss=setup["loss"],
        metrics=setup.get("metrics") or {},  # ModuleTask checks it is a dict
        optimizer=opts["optimizer"],
        momentum=opts.get("momentum", 0.0),
        nesterov=bool(opts.get("nesterov", False)),
        betas=opts.get("betas", (0.9, 0.999)),  # ModuleTask checks it is a pair
        eps=opts.get("eps", 1e-8),
        batch_size=opts.get("batch_size"),
        epochs=opts["epochs"],
        policy=policy if policy is not None else policy_of(opts),
    )


def sweep_configs(opts: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The product of the grids, seeds innermost: one dict ``{lambd, decoupled, l1, lr, seed}`` each."""
    out = []
    for lambd in opts["lambd"]:
        for decoupled in opts["decoupled"]:
            for l1 in opts["l1"]:
                for lr in opts["lr"]:
                    for seed in opts["seed"]:
                        out.append({"lambd": lambd, "decoupled": decoupled, "l1": l1, "lr": lr, "seed": seed})
    return out


def hyper_of(config: Mapping[str, Any]) -> Any:
    from decaylab.engine.task import Hyper

    return Hyper(seed=config["seed"], lr=config["lr"], l2=config["lambd"], decoupled=config["decoupled"], l1=config["l1"])


def check_combination(opts: Mapping[str, Any], owner: str) -> None:
    """``'adamw'`` has no coupled λ: its decay is the decoupled one. The names are the CLI's flags, or the Python
    API's arguments when ``owner`` is :data:`OWNER`."""
    if opts["optimizer"] == "adamw" and any(opts["lambd"]):
        if owner == OWNER:
            name, allowed = "lambd", "0 with optimizer='adamw' (AdamW's decay is decoupled=...; coupled λ: optimizer='adam')"
        else:
            name, allowed = "--lambd", "0 with --optimizer adamw (AdamW's decay is --decoupled; coupled λ: --optimizer adam)"
        raise parameter_error(name, owner, allowed, ",".join(f"{v:g}" for v in opts["lambd"]))


# ----------------------------------------------------------------------------- results
def select_key(select: str, results: Sequence[ConfigResult]) -> tuple[str, str]:
    """``'val_loss:min'`` → ``('val_loss', 'min')``; a metric the results do not have is an error."""
    name, _, mode = select.partition(":")
    mode = mode or ("max" if name.endswith(("acc", "accuracy")) else "min")
    check_choice(mode, "select", OWNER, ("min", "max"))
    have = next((list(r.curves) for r in results if r.curves), None)
    if have is not None and name not in have:
        raise parameter_error("--select", OWNER, "one of {" + ", ".join(k for k in have if k != "epoch") + "} with :min or :max", select)
    return name, mode


def swept_names(results: Sequence[ConfigResult]) -> list[str]:
    """The per-configuration numbers that take more than one value (at least ``lambd``)."""
    names = [k for k in SWEPT if len({r.params.get(k) for r in results}) > 1]
    return names or ["lambd"]


def best_config(results: Sequence[ConfigResult], select: str = "val_loss") -> dict[str, Any] | None:
    """The setting (all swept numbers but the seed) whose mean over seeds of the final ``select`` metric is best.

    Returns ``{"params": ..., "metric": name, "mode": "min"|"max", "value": mean, "n_seeds": n}``, or None
    when no configuration finished.
    """
    name, mode = select_key(select, results)
    groups: dict[tuple, list[ConfigResult]] = {}
    for r in results:
        groups.setdefault(tuple(r.params.get(k) for k in SWEPT), []).append(r)
    best: dict[str, Any] | None = None
    for key, group in groups.items():
        values = [r.metrics.get(name, math.nan) for r in group if r.status == "done"]
        values = [v for v in values if math.isfinite(v)]
        if not values:
            continue
        mean = sum(values) / len(values)
        if best is None or (mean < best["value"] if mode == "min" else mean > best["value"]):
            best = {"params": dict(zip(SWEPT, key, strict=True)), "metric": name, "mode": mode, "value": mean, "n_seeds": len(values)}
    return best


def results_table(results: Sequence[ConfigResult], select: str = "val_loss", title: str = "") -> Any:
    """One row per configuration: the swept numbers, the seed, the final metrics, the status; best marked ``*``."""
    from decaylab.lab.experiments.base import Table

    names = swept_names(results)
    metrics = next((list(r.curves)[1:] for r in results if r.curves), [])
    best = best_config(results, select) if results else None
    rows = []
    for r in results:
        is_best = best is not None and all(r.params.get(k) == best["params"][k] for k in SWEPT)
        rows.append(
            [r.params[k] for k in names] + [r.params["seed"]] + [r.metrics.get(m, math.nan) for m in metrics]
            + [r.status + (" *" if is_best else "")]
        )
    return Table([LABELS[k] for k in names] + ["seed"] + metrics + ["status"], rows, title)


def summarize(results: Sequence[ConfigResult], select: str = "val_loss") -> dict[str, Any]:
    """The best setting and, per setting, the mean over seeds of every final metric."""
    groups: dict[tuple, list[ConfigResult]] = {}
    for r in results:
        groups.setdefault(tuple(r.params.get(k) for k in SWEPT), []).append(r)
    settings = []
    for key, group in groups.items():
        done = [r for r in group if r.status == "done"]
        means = {m: sum(r.metrics[m] for r in done) / len(done) if done else math.nan for m in (done[0].metrics if done else {})}
        settings.append({**dict(zip(SWEPT, key, strict=True)), "n_seeds": len(done), **means})
    best = best_config(results, select) if results else None
    return {"best": best, "settings": settings, "verdict": sweep_verdict(results, best)}


def sweep_verdict(results: Sequence[ConfigResult], best: dict[str, Any] | None) -> str:
    """One line: the best setting with its metric (mean over seeds of the final value), and whether each swept
    number's best value lies inside its grid or at an edge of it — then the best may lie beyond the grid: widen
    it; no decay (0) being best is said as such, since no decay can go lower. A grid of two values has no inside."""
    if best is None:
        return "no configuration finished: no best setting"
    names = swept_names(results)
    setting = ", ".join(f"{LABELS[k]} = {best['params'][k]:g}" for k in names)
    seeds = f"mean of {best['n_seeds']} seeds" if best["n_seeds"] > 1 else "one seed"
    edges: list[str] = []
    notes: list[str] = []
    trained = [r for r in results if r.status in ("done", "diverged")]  # an interrupted run's pending ones say nothing
    if len(trained) < len(results):
        notes.append(f"{len(results) - len(trained)} of {len(results)} configurations not trained (pending or failed):"
                     " this is said of the others only")
    for k in names:
        grid = sorted({r.params[k] for r in trained if r.params.get(k) is not None})
        value = best["params"][k]
        if k != "lr" and value == 0 and len(grid) >= 2:  # a decay can go no lower than none
            notes.append(f"no decay ({LABELS[k]} = 0) was best: no {LABELS[k]} of the grid (≥ {grid[1]:g}) did better")
        elif len(grid) >= 3 and value in (grid[0], grid[-1]):
            side = "smallest" if value == grid[0] else "largest"
            edges.append(f"{LABELS[k]} = {value:g} is the {side} of its grid ({grid[0]:g} … {grid[-1]:g})")
    if edges:
        notes.append("; ".join(edges) + ": the best may lie beyond the grid — widen it")
    elif not notes and any(len({r.params.get(k) for r in trained}) >= 3 for k in names):
        notes.append("inside the grid of every swept number")
    where = "".join("; " + n for n in notes)
    return f"best {setting} ({best['metric']} {best['value']:.4g}, {seeds}){where}"


@dataclass
class SweepResult:
    """What :func:`sweep` returns: every configuration's :class:`~decaylab.results.ConfigResult`, in order."""

    results: list[ConfigResult]
    select: str = "val_loss"
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def best(self) -> dict[str, Any] | None:
        """:func:`best_config` of the results (mean over seeds of the final ``select`` metric)."""
        return best_config(self.results, self.select)

    def table(self) -> Any:
        return results_table(self.results, self.select)

    def figures(self, out: str | Path) -> list[Path]:
        """Write ``sweep.png`` (metric and ‖θ‖ against λ) and ``curves.png`` into ``out``; return the paths."""
        from decaylab.lab.plots.sweep import plot_curves, plot_sweep

        out = Path(out)
        return [plot_sweep(self.results, self.select, self.best, out / "sweep.png"),
                plot_curves(self.results, self.select, out / "curves.png")]

    def __str__(self) -> str:
        from decaylab.lab.outputs import format_cell

        t = self.table()
        cells = [t.columns] + [[format_cell(v) for v in row] for row in t.rows]
        widths = [max(len(str(row[i])) for row in cells) for i in range(len(t.columns))]
        return "\n".join("  ".join(str(c).rjust(w) for c, w in zip(row, widths, strict=True)) for row in cells)


def _grid(value: Any, name: str, check: Callable[[Any, str, str], Any]) -> list[Any]:
    """A grid given as a number, a list of numbers or a grid text; repeats merged with a ``GridNote``, as the CLI."""
    from decaylab.lab.experiments.base import MAX_SEED
    from decaylab.lab.grid import merge_duplicates, parse_float_grid, parse_int_grid

    if isinstance(value, str):
        if name == "seed":
            return parse_int_grid(value, name, OWNER, low=0, high=MAX_SEED)
        return parse_float_grid(value, name, OWNER, check)
    values = list(value) if isinstance(value, Sequence) else [value]
    if not values:
        raise parameter_error(name, OWNER, "a number, a list of numbers or a grid text", value)
    return merge_duplicates([check(v, name, OWNER) for v in values], name, str(value))


def sweep(
    setup: Callable[[], Mapping[str, Any]] | Mapping[str, Any] | str,
    *,
    lambd: Any = 0.0,
    decoupled: Any = 0.0,
    l1: Any = 0.0,
    lr: Any = 0.1,
    seed: Any = 0,
    optimizer: str = "sgd",
    momentum: float = 0.0,
    nesterov: bool = False,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    batch_size: int | None = 64,
    epochs: int = 10,
    policy: Any = None,
    engine: str = "batched",
    chunk: int | None = None,
    select: str = "val_loss",
    threads: int | None = 1,
) -> SweepResult:
    """Train the product of the grids ``lambd × decoupled × l1 × lr × seed`` of ``setup``'s model.

    Args:
        setup: a function returning the setup dict (module docstring), the dict itself, or ``"FILE.py:FUNCTION"``.
        lambd: coupled λ — ``g ← g + λθ`` (``torch.optim``'s ``weight_decay`` of SGD/Adam).
        decoupled: decoupled λ — ``θ ← θ − lr·λ·θ`` before the update (AdamW's ``weight_decay``).
        l1: L1 proximal step ``θ ← sign θ·max(|θ| − lr·λ₁, 0)`` after the update.
        lr, seed: learning rates and seeds (a seed fixes the initial weights, the batch order, dropout masks).
        optimizer: ``'sgd'`` (``momentum``, ``nesterov``), ``'adam'`` or ``'adamw'`` (``betas``, ``eps``).
        policy: a :class:`decaylab.DecayPolicy` (default: its defaults) — which tensors decay, multipliers.
        engine: ``'batched'`` (stacked, ``torch.func``) or ``'sequential'`` (``torch.optim``, one at a time).
        chunk: configurations per stack (``None``: planned from memory and a throughput probe).
        select: the final metric that picks :attr:`SweepResult.best`, ``'NAME'`` or ``'NAME:min|max'``.
        threads: torch threads while training (``None``: leave the process's setting).

    Each grid is a number, a list of numbers, or a grid text (``"0:1e-2:5"``, ``"log:1e-5:1e-1:9"``).
    Raises :class:`~decaylab.validation.InvalidParameterError` (one line) for bad input.
    """
    from contextlib import nullcontext

    from decaylab.engine.module import train_module
    from decaylab.lab.experiments.base import MAX_EPOCHS, MAX_SEED
    from decaylab.threads import limited_threads

    nonneg = lambda v, n, o: check_float(v, n, o, low=0.0)
    opts = {
        "lambd": _grid(lambd, "lambd", nonneg),
        "decoupled": _grid(decoupled, "decoupled", nonneg),
        "l1": _grid(l1, "l1", nonneg),
        "lr": _grid(lr, "lr", lambda v, n, o: check_float(v, n, o, low=0.0, low_open=True)),
        "seed": _grid(seed, "seed", lambda v, n, o: check_int(v, n, o, low=0, high=MAX_SEED)),
        "optimizer": optimizer, "momentum": momentum, "nesterov": nesterov, "betas": betas, "eps": eps,
        "batch_size": batch_size, "epochs": check_int(epochs, "epochs", OWNER, low=1, high=MAX_EPOCHS),
    }
    check_choice(optimizer, "optimizer", OWNER, ("sgd", "adam", "adamw"))
    check_combination(opts, OWNER)
    if isinstance(setup, str):
        spec = load_setup(parse_target(setup, "setup", OWNER), OWNER)
    elif isinstance(setup, Mapping):
        spec = check_setup(setup)
    elif callable(setup):
        spec = call_setup(setup, f"{getattr(setup, '__name__', 'setup')}()", "setup")
    else:
        raise parameter_error("setup", OWNER, "a function returning the setup dict, the dict, or 'FILE.py:FUNCTION'", setup)
    task = module_task(spec, opts, policy)
    select = check_select(select, task.metric_names, "select")
    configs = sweep_configs(opts)
    if threads is not None:
        threads = check_int(threads, "threads", OWNER, low=1)
    with limited_threads(threads) if threads is not None else nullcontext():
        outcomes = train_module(task, [hyper_of(c) for c in configs], engine, chunk)
    results = [ConfigResult.of(c, o) for c, o in zip(configs, outcomes, strict=True)]
    return SweepResult(results, select, opts)


def check_select(select: str, metric_names: Sequence[str], name: str = "--select") -> str:
    """``select`` if its metric is one of ``metric_names``; the default ``val_loss`` becomes ``train_loss``
    when there is no validation set."""
    metric, _, mode = str(select).partition(":")
    if metric == "val_loss" and "val_loss" not in metric_names:
        metric = "train_loss"
    if metric not in metric_names or mode not in ("", "min", "max"):
        raise parameter_error(name, OWNER, "one of {" + ", ".join(metric_names) + "}, optionally with :min or :max", select)
    return f"{metric}:{mode}" if mode else metric

