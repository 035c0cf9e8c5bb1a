"""The registry of ``decaylab run`` experiments: name -> module and class, imported on first use."""

from __future__ import annotations

import importlib

from decaylab.experiments.base import Experiment
from decaylab.validation import parameter_error

__all__ = ["EXPERIMENTS", "get_experiment", "list_experiments"]

# name -> "module:Class"; modules are imported only when their experiment is asked for
EXPERIMENTS: dict[str, str] = {
    "d2l-linear": "decaylab.experiments.d2l_linear:D2LLinear",
}


def get_experiment(name: str) -> Experiment:
    """The experiment called ``name``, or an error listing the experiments that exist."""
    target = EXPERIMENTS.get(name)
    if target is None:
        listed = ", ".join(sorted(EXPERIMENTS))
        raise parameter_error("EXPERIMENT", "decaylab run", f"one of {{{listed}}}", name)
    module, cls = target.split(":")
    return getattr(importlib.import_module(module), cls)()


def list_experiments() -> list[Experiment]:
    return [get_experiment(name) for name in EXPERIMENTS]
