"""``decaylab sweep FILE.py:FUNCTION``: the user's own model as an experiment of the runner.

The runner, the backends (local, Ray), the store (with resume), progress, the table, ``--json`` and
the figures all identify an experiment by its name and rebuild it from its options. A sweep is the
experiment named ``sweep`` whose option ``target`` holds ``/absolute/path/FILE.py:FUNCTION``: any
process on the machine (a Ray worker, ``decaylab resume`` from another directory) imports the file
again and calls the function (:func:`decaylab.sweep.load_setup`, cached per file modification).
It is not listed by ``decaylab run --list``: its command is ``decaylab sweep``.

Options: the grids ``--lambd`` (coupled λ, ``torch.optim``'s ``weight_decay``), ``--decoupled`` (AdamW's
``θ ← θ − lr·λ·θ``), ``--l1`` (proximal step), ``--lr``, ``--seed``; ``--optimizer sgd|adam|adamw``,
``--momentum``, ``--nesterov``, ``--batch-size``, ``--epochs``; the decay policy ``--decay-bias``,
``--decay-norm``, ``--exclude-embeddings``, ``--include``, ``--exclude``, ``--multipliers``; and
``--select METRIC[:min|max]``, the final metric (mean over seeds) that picks the best setting.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from decaylab.lab.experiments.base import (
    Experiment,
    Option,
    Table,
    choice,
    epochs_int,
    float_grid,
    positive_int,
    seed_grid,
)
from decaylab.results import ConfigResult, Outcome
from decaylab.validation import check_float, parameter_error

__all__ = ["BOOL_OPTIONS", "ModuleSweep", "setup_digest"]

Progress = Callable[[int], None]


BOOL_OPTIONS = ("nesterov", "decay_bias", "decay_norm", "exclude_embeddings")


def _bool(text: str, name: str, owner: str) -> bool:
    value = str(text).strip().lower()
    if value not in ("true", "false"):
        raise parameter_error(name, owner, "true or false", text)
    return value == "true"


def _globs(text: str, name: str, owner: str) -> list[str]:
    return [t.strip() for t in str(text).split(",") if t.strip()]


def _multipliers(text: str, name: str, owner: str) -> list[list[Any]]:
    """``PATTERN=M,PATTERN=M`` → ``[[pattern, m], ...]`` (first match wins, as in DecayPolicy)."""
    out: list[list[Any]] = []
    for token in (t.strip() for t in str(text).split(",") if t.strip()):
        pattern, sep, value = token.rpartition("=")
        if not sep or not pattern:
            raise parameter_error(name, owner, "comma-separated PATTERN=MULTIPLIER pairs, e.g. 'head.*=0.1'", text)
        out.append([pattern, check_float(value, name, owner, low=0.0)])
    return out


def _target(text: str, name: str, owner: str) -> str:
    from decaylab.lab.sweep import parse_target

    return parse_target(text, "FILE.py:FUNCTION", owner)


def _text(text: str, name: str, owner: str) -> str:
    return str(text).strip()


def setup_digest(task: Any, seed: int) -> str:
    """A digest of what a setup gives every configuration: the training and validation tensors (values, shapes,
    dtypes) and the first seed's model architecture (module types, settings, tensor shapes)."""
    import hashlib

    from decaylab.engine.module import build_model, module_signature, tensor_digest

    tensors = [tensor_digest(t) for data in (task.train, task.val) if data is not None for t in data]
    text = repr((tensors, module_signature(build_model(task, seed))))
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def _momentum(text: str, name: str, owner: str) -> float:
    return check_float(text, name, owner, low=0.0, high=1.0, high_open=True)


class ModuleSweep(Experiment):
    name = "sweep"
    order = 1000
    summary = "λ sweeps over your own nn.Module: decaylab sweep FILE.py:FUNCTION."
    description = (
        "FUNCTION() returns {'model': seed -> nn.Module, 'train': (X, y), 'val': (X, y), 'loss': fn, 'metrics': {name: fn}};"
        " the grids say what varies. Every configuration is trained as torch.optim + decaylab.param_groups would"
        " train it alone (--engine batched stacks them with torch.func; sequential trains them one by one)."
        " Figures: sweep.png (the selected metric and ‖θ‖ of the decayed tensors against λ, one line per seed,"
        " best marked) and curves.png (curves of a few λ)."
    )
    engines = ("sequential", "batched")
    swept = ("lambd", "decoupled", "l1", "lr", "seed")  # their grids multiply into the configurations
    options = (
        Option("target", _target, "", "the setup function, FILE.py:FUNCTION", "FILE.py:FUNCTION"),
        Option("lambd", float_grid(low=0.0), "0", "coupled λ: g ← g + λθ (torch.optim weight_decay of SGD/Adam)", "GRID"),
        Option("decoupled", float_grid(low=0.0), "0", "decoupled λ: θ ← θ − lr·λ·θ before the update (AdamW)", "GRID"),
        Option("l1", float_grid(low=0.0), "0", "L1 proximal step: θ ← sign θ·max(|θ| − lr·λ₁, 0)", "GRID"),
        Option("lr", float_grid(low=0.0, low_open=True), "0.1", "learning rate", "GRID"),
        Option("seed", seed_grid, "0", "seeds: initial weights, batch order, dropout masks", "SEEDS"),
        Option("optimizer", choice("sgd", "adam", "adamw"), "sgd", "sgd, adam or adamw (torch.optim's)", "NAME"),
        Option("momentum", _momentum, "0", "SGD momentum (torch.optim convention)", "MU"),
        Option("nesterov", _bool, "false", "Nesterov momentum (SGD)"),
        Option("batch_size", positive_int, "64", "minibatch size", "B"),
        Option("epochs", epochs_int, "10", "training epochs", "N"),
        Option("decay_bias", _bool, "false", "decay biases and 1-D tensors too"),
        Option("decay_norm", _bool, "false", "decay the weights of normalization layers too, and any other 1-D tensor that is not a bias (biases: --decay-bias)"),
        Option("exclude_embeddings", _bool, "false", "do not decay nn.Embedding weights"),
        Option("include", _globs, "", "glob patterns of parameter names that always decay", "GLOBS"),
        Option("exclude", _globs, "", "glob patterns of parameter names that never decay", "GLOBS"),
        Option("multipliers", _multipliers, "", "λ multipliers by name pattern, e.g. 'head.*=0.1'", "PAT=M,..."),
        Option("select", _text, "val_loss", "final metric (mean over seeds) that picks the best λ, NAME[:min|max]", "METRIC"),
    )

    # -- the user's setup
    def task(self, opts: dict[str, Any]) -> Any:
        from decaylab.lab.sweep import load_setup, module_task

        return module_task(load_setup(opts["target"]), opts)

    def check(self, opts: dict[str, Any]) -> None:
        from decaylab.lab.sweep import check_combination, check_select

        if not opts["target"]:
            raise parameter_error("FILE.py:FUNCTION", "decaylab sweep", "given", "nothing")
        check_combination(opts, "decaylab sweep")
        if opts["nesterov"] and (opts["optimizer"] != "sgd" or not opts["momentum"]):
            raise parameter_error("--nesterov", "decaylab sweep", "false unless --optimizer sgd with --momentum > 0", "true")
        if opts["momentum"] and opts["optimizer"] != "sgd":
            raise parameter_error("--momentum", "decaylab sweep", "0 unless --optimizer sgd", opts["momentum"])
        from decaylab.lab.sweep import load_setup, module_task

        task = module_task(load_setup(opts["target"]), {**opts, "batch_size": None})
        if opts["batch_size"] > task.n_train:
            raise parameter_error("--batch-size", "decaylab sweep", f"an int in [1, n_train={task.n_train}]", opts["batch_size"])
        opts["select"] = check_select(opts["select"], task.metric_names)
        opts["setup_digest"] = setup_digest(task, opts["seed"][0])  # stored with the run: a resume compares it

    def check_resume(self, opts: dict[str, Any], stored: dict[str, Any], run_id: str) -> None:
        """The file's function must still return the data and the model the run began with (a resume imports the
        file anew: an edit since would mix two experiments in one run). Runs stored before the digest: unchecked."""
        if "setup_digest" not in stored:
            return
        self.check(opts)
        if opts["setup_digest"] != stored["setup_digest"]:
            raise parameter_error(
                "RUN_ID", "decaylab resume", f"a run whose {opts['target'].rpartition(':')[2]}() returns the data and"
                " model it began with (the file was changed since: start a new run, or change it back)", run_id,
            )

    def check_engine(self, opts: dict[str, Any], engine: str) -> None:
        """Build every seed's model and check them with ``engine`` (a layer it cannot batch is an error)."""
        from decaylab.engine.module import check_module_task

        check_module_task(self.task(opts), opts["seed"], engine)

    def configs(self, opts: dict[str, Any]) -> list[dict[str, Any]]:
        from decaylab.lab.sweep import sweep_configs

        return sweep_configs(opts)

    def chunk_size(self, opts: dict[str, Any], n_configs: int, engine: str) -> int:
        if engine != "batched" or n_configs <= 1:
            return 1
        from decaylab.engine.module import plan_module_chunks

        return max(len(r) for r in plan_module_chunks(self.task(opts), n_configs))

    def run_chunk(
        self, opts: dict[str, Any], configs: Sequence[dict[str, Any]], engine: str, progress: Progress | None = None
    ) -> list[Outcome]:
        from decaylab.engine.module import train_module
        from decaylab.lab.sweep import hyper_of

        # a chunk of one (the planner found no gain in stacking): chunk=None lets the batched engine train it with
        # torch.optim when that measures faster, as the Python API does (the same numbers within float32 rounding)
        chunk = None if len(configs) == 1 else len(configs)
        return train_module(self.task(opts), [hyper_of(c) for c in configs], engine, chunk, progress)

    # -- what it shows
    def table(self, results: Sequence[ConfigResult], opts: dict[str, Any]) -> Table:
        from decaylab.lab.sweep import results_table

        title = (
            f"sweep {Path(opts['target'].rpartition(':')[0]).name}:{opts['target'].rpartition(':')[2]}: {opts['optimizer']}"
            f" lr={','.join(f'{v:g}' for v in opts['lr'])}, batch {opts['batch_size']}, {opts['epochs']} epochs;"
            f" final metrics; * = best mean {opts['select']} over seeds"
        )
        return results_table(results, opts["select"], title)

    def summarize(self, results: Sequence[ConfigResult], opts: dict[str, Any]) -> dict[str, Any]:
        from decaylab.lab.sweep import summarize

        return summarize(results, opts["select"]) if results else {}
