"""The registry of ``decaylab run`` experiments.

An experiment called ``some-name`` lives in the module ``decaylab.lab.experiments.some_name`` as the one
:class:`~decaylab.lab.experiments.base.Experiment` subclass whose ``name`` is ``some-name``; adding a module
adds an experiment. Modules are imported only when asked for (``--list`` imports them all; experiment
modules import torch and matplotlib lazily, inside their functions).
"""

from __future__ import annotations

import importlib
import pkgutil

from decaylab.lab.experiments.base import Experiment
from decaylab.validation import parameter_error

__all__ = ["experiment_names", "get_experiment", "list_experiments"]

_NOT_EXPERIMENTS = {"base"}
_OWN_COMMAND = {"sweep"}  # experiments with a command of their own (decaylab sweep): not listed by ``run``


def _available() -> list[str]:
    hidden = _NOT_EXPERIMENTS | _OWN_COMMAND
    return sorted(m.name.replace("_", "-") for m in pkgutil.iter_modules(__path__) if m.name not in hidden)


def _load(name: str) -> type[Experiment]:
    module = importlib.import_module(f"{__name__}.{name.replace('-', '_')}")
    for value in vars(module).values():
        if isinstance(value, type) and issubclass(value, Experiment) and getattr(value, "name", None) == name:
            return value
    raise LookupError(f"module {module.__name__} defines no experiment named {name!r}")


def experiment_names() -> list[str]:
    """Every experiment's name, in the order of ``decaylab run --list`` (by each class's ``order``)."""
    return sorted(_available(), key=lambda n: (_load(n).order, n))


def get_experiment(name: str) -> Experiment:
    """The experiment called ``name``, or an error listing the experiments that exist."""
    known = _available()
    if name in _OWN_COMMAND:
        return _load(name)()
    if name not in known:
        raise parameter_error("EXPERIMENT", "decaylab run", "one of {" + ", ".join(known) + "}", name)
    return _load(name)()


def list_experiments() -> list[Experiment]:
    return [_load(name)() for name in experiment_names()]
