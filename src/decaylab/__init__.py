"""decaylab: weight decay and its relatives for PyTorch, correct, explicit and visible.

The library layer (no CLI, no store, no plotting) is importable piece by piece::

    import decaylab
    groups = decaylab.param_groups(model, weight_decay=0.05)      # biases, norms: no decay
    opt = torch.optim.AdamW(groups, lr=1e-3)                      # decoupled decay on weights only

    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    decaylab.attach(opt, decaylab.DecoupledDecay(5e-4), model=model)  # decoupled decay on any optimizer
    loss = loss + decaylab.l2_penalty(model, 3.0, convention="half")  # or: lambda/2 * sum(w^2) in the loss

Names are loaded on first use, so ``import decaylab`` (and the CLI's start-up) stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "InvalidParameterError": "decaylab.validation",
    # which parameters decay
    "DecayPolicy": "decaylab.policy",
    "param_groups": "decaylab.policy",
    "explain": "decaylab.audit",
    "decay_plan": "decaylab.policy",
    "unwrap": "decaylab.policy",
    # penalties added to the loss
    "l2_penalty": "decaylab.penalties",
    "l1_penalty": "decaylab.penalties",
    "elastic_net_penalty": "decaylab.penalties",
    # steps attached to any torch.optim optimizer
    "attach": "decaylab.steps",
    "attached": "decaylab.steps",
    "DecoupledDecay": "decaylab.steps",
    "CautiousDecay": "decaylab.steps",
    "L1Prox": "decaylab.steps",
    "MaxNorm": "decaylab.steps",
    "Step": "decaylab.steps",
    # weight-decay schedulers (torch.optim.lr_scheduler's interface)
    "WDScheduler": "decaylab.schedules",
    "ConstantWD": "decaylab.schedules",
    "LinearWarmupWD": "decaylab.schedules",
    "CosineWD": "decaylab.schedules",
    "StepWD": "decaylab.schedules",
    "WarmupStableDecayWD": "decaylab.schedules",
    "LambdaWD": "decaylab.schedules",
    "SequentialWD": "decaylab.schedules",
    "ChainedWD": "decaylab.schedules",
    # layers
    "Dropout": "decaylab.layers",
    "GaussianNoise": "decaylab.layers",
    # conventions and closed forms
    "convert": "decaylab.conventions",
    "convertible": "decaylab.conventions",
    "CONVENTIONS": "decaylab.conventions",
    "ridge_gcv": "decaylab.closed_form",
    "ridge": "decaylab.closed_form",
    "ridge_path": "decaylab.closed_form",
    "decay_timescale": "decaylab.closed_form",
    "rotational_equilibrium": "decaylab.closed_form",
    # what is wrong with a training set-up's weight decay
    "audit": "decaylab.audit",
    "Finding": "decaylab.audit",
    "AuditReport": "decaylab.audit",
    # λ sweeps over any nn.Module: the lab's function, loaded (with the lab) on first use
    "sweep": "decaylab.lab.sweep",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'decaylab' has no attribute {name!r}")
    imported = importlib.import_module(module)
    value = getattr(imported, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from decaylab.audit import AuditReport, Finding, audit, explain
    from decaylab.closed_form import decay_timescale, ridge, ridge_path, rotational_equilibrium
    from decaylab.conventions import convert
    from decaylab.lab.sweep import sweep
    from decaylab.layers import Dropout, GaussianNoise
    from decaylab.penalties import elastic_net_penalty, l1_penalty, l2_penalty
    from decaylab.policy import DecayPolicy, param_groups, unwrap
    from decaylab.schedules import (
        ChainedWD,
        ConstantWD,
        CosineWD,
        LambdaWD,
        LinearWarmupWD,
        SequentialWD,
        StepWD,
        WarmupStableDecayWD,
        WDScheduler,
    )
    from decaylab.steps import CautiousDecay, DecoupledDecay, L1Prox, MaxNorm, attach, attached
    from decaylab.validation import InvalidParameterError
