"""Run an experiment: expand it into configurations, train them in chunks, store every chunk as it ends.

The store sees a run before any training starts (status ``running``, every configuration ``pending``),
each finished chunk in one transaction, and the run's end (``finished``, or ``failed`` when a chunk
failed for good). Ctrl-C marks the run ``interrupted``; a kill leaves it ``running`` with a dead owner,
which the store shows as ``interrupted``. Either way the finished configurations stay, and
:func:`execute` with ``resume=RUN_ID`` trains only the rest once it holds the run's lease
(:meth:`Store.claim`). While this process owns a run, the store keeps the run's heartbeat fresh.
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from decaylab import __version__
from decaylab.backends import ray_session, run_local, run_on_ray
from decaylab.environment import collect as collect_environment
from decaylab.experiments.base import Experiment
from decaylab.results import ConfigResult, Outcome
from decaylab.store import RunRecord, Store
from decaylab.validation import parameter_error

__all__ = ["Progress", "RunRequest", "execute", "new_run_id"]


class Progress:
    """What the runner reports while it works; the CLI passes a progress bar, tests nothing."""

    def start(self, total: int, description: str) -> None:
        pass

    def advance(self, amount: int) -> None:
        pass

    def stop(self) -> None:
        pass


@dataclass
class RunRequest:
    """One ``decaylab run``: the experiment, its parsed options and how to train it."""

    experiment: Experiment
    opts: dict[str, Any]
    raw_options: dict[str, str] = field(default_factory=dict)
    command: str = ""
    engine: str | None = None  # None: the experiment's preferred (batched where it has one)
    chunk: int | None = None
    backend: str = "local"
    address: str | None = None
    ray_cpus: int | None = None


def new_run_id() -> str:
    """A sortable, unique run id: ``YYYYmmdd-HHMMSS-xxxxxx``."""
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


def _epochs(opts: dict[str, Any]) -> int:
    epochs = opts.get("epochs")
    return int(epochs) if isinstance(epochs, int) else 1


def execute(
    store: Store,
    request: RunRequest,
    *,
    resume: str | None = None,
    progress: Progress | None = None,
) -> RunRecord:
    """Run (or resume) ``request``; return the stored run with all its configurations.

    With the Ray backend the cluster is reached (or a local Ray started) before anything is stored,
    so a wrong ``--address`` leaves the store as it was.
    """
    exp = request.experiment
    engine = request.engine or exp.engines[-1]
    if engine not in exp.engines:
        allowed = "one of {" + ", ".join(map(repr, exp.engines)) + "}"
        raise parameter_error("--engine", exp.name, allowed, engine)
    if request.backend == "ray":
        with ray_session(request.address, request.ray_cpus):
            return _execute(store, request, engine, resume, progress or Progress())
    return _execute(store, request, engine, resume, progress or Progress())


def _execute(store: Store, request: RunRequest, engine: str, resume: str | None, progress: Progress) -> RunRecord:
    exp, opts = request.experiment, request.opts

    if resume is None:
        run_id = new_run_id()
        configs = exp.configs(opts)
        seeds = sorted({str(c.get("seed")) for c in configs if "seed" in c})
        store.create_run(
            run_id, exp.name, request.command, opts, request.raw_options, __version__, ",".join(seeds), configs,
            environment=collect_environment(),
        )
    else:
        run_id = resume
        record = store.claim(run_id, environment=collect_environment())  # refused while a live process trains it
        if record is None:
            raise parameter_error("RUN_ID", "decaylab resume", "the id of a run in the store", run_id)
        configs = [c.params for c in record.configs]
        store.set_status(run_id, "running")

    todo = store.pending(run_id)
    if request.chunk:
        size = request.chunk
    else:
        with exp.thread_limit():  # a probe must measure the setting the chunks will run in
            size = exp.chunk_size(opts, len(todo), engine)
    if request.backend == "ray" and todo:
        # at least two chunks per worker, so that the workers share the sweep
        size = min(size, max(1, math.ceil(len(todo) / (2 * (request.ray_cpus or 2)))))
    chunks = [todo[i : i + size] for i in range(0, len(todo), size)]

    progress.start(len(todo) * _epochs(opts), f"{exp.name}: {len(todo)} configurations")
    failed = False
    try:
        if request.backend == "ray":
            finished = run_on_ray(exp.name, opts, configs, chunks, engine, request.address, num_cpus=request.ray_cpus)
        else:
            finished = run_local(exp.name, opts, configs, chunks, engine, progress.advance)
        for chunk, outcome in finished:
            failed |= _store_chunk(store, run_id, configs, chunk, outcome)
            if request.backend == "ray":
                progress.advance(len(chunk) * _epochs(opts))
    except KeyboardInterrupt:
        store.set_status(run_id, "interrupted")
        raise
    except BaseException:
        store.set_status(run_id, "failed")
        raise
    finally:
        progress.stop()
    store.set_status(run_id, "failed" if failed else "finished")
    record = store.get_run(run_id)
    assert record is not None
    return record


def _store_chunk(
    store: Store,
    run_id: str,
    configs: Sequence[dict[str, Any]],
    chunk: list[int],
    outcome: list[Outcome] | BaseException,
) -> bool:
    """Store one chunk's results; return whether the chunk failed."""
    if isinstance(outcome, BaseException):
        error = f"{type(outcome).__name__}: {outcome}"
        store.save_results(run_id, [(i, ConfigResult(params=configs[i], status="failed", error=error)) for i in chunk])
        return True
    store.save_results(run_id, [(i, ConfigResult.of(configs[i], o)) for i, o in zip(chunk, outcome, strict=True)])
    return False

