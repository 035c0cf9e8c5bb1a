"""Options and runs of an experiment for its tests, taken as the CLI takes them (not a test module)."""

from __future__ import annotations

from typing import Any

from decaylab.lab.experiments.base import Experiment
from decaylab.results import ConfigResult


def options(exp: Experiment, **given: str) -> dict[str, Any]:
    """``exp``'s options: the defaults with ``given`` (texts as typed on the command line) on top, checked."""
    texts = {o.name: o.default for o in exp.options} | given
    opts = {o.name: o.parse(texts[o.name], o.flag, exp.name) for o in exp.options}
    exp.check(opts)
    return opts


def train(exp: Experiment, opts: dict[str, Any], engine: str = "batched") -> list[ConfigResult]:
    """Every configuration of ``opts`` trained in one chunk, in order."""
    configs = exp.configs(opts)
    return [ConfigResult.of(c, o) for c, o in zip(configs, exp.run_chunk(opts, configs, engine), strict=True)]
