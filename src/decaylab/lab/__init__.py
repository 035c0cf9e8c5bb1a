"""The lab: decaylab's application, built on the library (:mod:`decaylab`) and the engine (:mod:`decaylab.engine`).

Experiments (one module each), the sweep of a user's module, the runner and its backends (local, Ray), the
SQLite store, outputs (tables, JSON, DataFrames), figures, reports and the ``decaylab`` command line. Nothing
below this package imports it: ``import decaylab`` and ``import decaylab.engine`` never load the lab.

From a notebook (:mod:`decaylab.lab.notebook`; names loaded on first use, so ``import decaylab.lab`` stays cheap)::

    import decaylab.lab as lab
    r = lab.run("d2l-linear", lambd=[0, 3], epochs=50)   # as `decaylab run d2l-linear --lambd 0,3 --epochs 50`
    r.table, r.verdict, r.figures                         # a DataFrame, one line, PNG paths
    lab.runs()                                            # the store as a DataFrame
    lab.load(r.id)                                        # a stored run read back
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "run": "decaylab.lab.notebook",
    "runs": "decaylab.lab.notebook",
    "load": "decaylab.lab.notebook",
    "Run": "decaylab.lab.notebook",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'decaylab.lab' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from decaylab.lab.notebook import Run, load, run, runs
