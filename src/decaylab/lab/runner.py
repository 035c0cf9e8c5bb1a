"""Run an experiment: expand it into configurations, train them in chunks, store every chunk as it ends.

The store sees a run before any training starts (status ``running``, every configuration ``pending``),
each finished chunk in one transaction, and the run's end (``finished``, or ``failed`` when a chunk
failed for good). From the moment the run is stored, every way out of :func:`execute` leaves it in a
final status:

* Ctrl-C, or SIGTERM inside :func:`decaylab.lab.interrupts.signals_as_interrupt` (the CLI): ``interrupted``,
  and :class:`RunInterrupted` (a ``KeyboardInterrupt``) carrying the run id;
* any other error (choosing the chunk size, a backend, the store): ``failed``, and :class:`RunFailed`
  carrying the run id and the reason;
* only a kill that cannot be caught (SIGKILL, a power cut) leaves it ``running`` with a dead owner, which
  the store shows as ``interrupted``.

Either way the finished configurations stay, and :func:`execute` with ``resume=RUN_ID`` trains only
the rest once it holds the run's lease (:meth:`Store.claim`; refused while a live process trains it).
While this process owns a run, the store keeps the run's heartbeat fresh. Resuming a run that has
nothing left to train changes nothing.
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

from decaylab import __version__
from decaylab.lab.backends import ray_session, run_local, run_on_ray
from decaylab.lab.environment import collect as collect_environment
from decaylab.lab.experiments.base import Experiment
from decaylab.lab.interrupts import signals_deferred
from decaylab.lab.store import LeaseLostError, RunRecord, Store, StoreError
from decaylab.results import ConfigResult, Outcome
from decaylab.validation import one_line, parameter_error

__all__ = ["Progress", "RunFailed", "RunInterrupted", "RunRequest", "execute", "new_run_id"]


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM after run ``run_id`` was stored; the run is marked ``interrupted``."""

    def __init__(self, run_id: str) -> None:
        super().__init__(run_id)
        self.run_id = run_id


class RunFailed(Exception):
    """An error after run ``run_id`` was stored (outside a chunk's training); the run is marked ``failed``.

    ``reason`` is the error as one line: ``"TypeName: first line of its message"``.
    """

    def __init__(self, run_id: str, reason: str) -> None:
        super().__init__(f"run {run_id} failed: {reason}")
        self.run_id = run_id
        self.reason = reason


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
    run_id: str | None = None,
) -> RunRecord:
    """Run (or resume) ``request``; return the stored run with all its configurations.

    A new run gets ``run_id`` (default :func:`new_run_id`; a caller that must name the run even when
    this raises makes the id first). With the Ray backend the cluster is reached (or a local Ray
    started) before anything is stored, so a wrong ``--address`` leaves the store as it was.

    Raises :class:`RunInterrupted` or :class:`RunFailed` once the run is stored (see the module's
    docstring); before that, the error as it came (a ``KeyboardInterrupt``, an
    :class:`~decaylab.validation.InvalidParameterError`).
    """
    exp = request.experiment
    engine = request.engine or exp.engines[-1]
    if engine not in exp.engines:
        allowed = "one of {" + ", ".join(map(repr, exp.engines)) + "}"
        raise parameter_error("--engine", exp.name, allowed, engine)
    if request.backend == "ray":
        with ray_session(request.address, request.ray_cpus):
            return _execute(store, request, engine, resume, progress or Progress(), run_id)
    return _execute(store, request, engine, resume, progress or Progress(), run_id)


def _mark(store: Store, run_id: str, status: str) -> None:
    """Write the run's final status on the way out, best effort: neither a second signal nor a store
    that cannot be written any more (a full disk) replaces the exception being raised."""
    try:
        with signals_deferred():
            store.set_status(run_id, status)
    except (KeyboardInterrupt, Exception):
        pass


def _execute(
    store: Store, request: RunRequest, engine: str, resume: str | None, progress: Progress, new_id: str | None
) -> RunRecord:
    exp, opts = request.experiment, request.opts

    if resume is None:
        run_id = new_id or new_run_id()
        configs = exp.configs(opts)
        seeds = sorted({str(c.get("seed")) for c in configs if "seed" in c})
        with ExitStack() as held:  # stored and inside _train's try, or not stored at all
            held.enter_context(signals_deferred())
            store.create_run(
                run_id, exp.name, request.command, opts, request.raw_options, __version__, ",".join(seeds), configs,
                environment=collect_environment(),
            )
            return _train(store, request, engine, run_id, configs, progress, held)
    run_id = resume
    environment = collect_environment()
    with ExitStack() as held:
        held.enter_context(signals_deferred())
        record = store.claim(run_id, environment=environment)  # refused while a live process trains it
        if record is None:
            raise parameter_error("RUN_ID", "decaylab resume", "the id of a run in the store", run_id)
        if not store.pending(run_id):  # nothing to train: a finished run stays as it is stored
            if record.status != "finished":  # cut off after its last chunk was stored
                store.set_status(run_id, "finished")
                record = store.get_run(run_id)
                assert record is not None
            return record
        configs = [c.params for c in record.configs]  # claimed: status running, this process the owner
        return _train(store, request, engine, run_id, configs, progress, held)


def _train(
    store: Store,
    request: RunRequest,
    engine: str,
    run_id: str,
    configs: list[dict[str, Any]],
    progress: Progress,
    held: ExitStack,
) -> RunRecord:
    """Plan and train the pending configurations of the stored run ``run_id``; end it in a final status.

    ``held`` holds Ctrl-C and SIGTERM back (:func:`~decaylab.lab.interrupts.signals_deferred`) since the
    run was stored; it is released inside the ``try``, so a signal that came meanwhile lands there.
    """
    try:
        held.close()
        return _plan_and_train(store, request, engine, run_id, configs, progress)
    except KeyboardInterrupt as exc:
        _mark(store, run_id, "interrupted")
        raise RunInterrupted(run_id) from exc
    except LeaseLostError:  # another process trains the run now: nothing of it is ours to mark
        raise
    except StoreError as exc:  # the store itself (locked, a full disk, a lost file): its own one line, exit 2
        _mark(store, run_id, "failed")
        raise StoreError(f"run {run_id}: {exc} (decaylab resume {run_id} trains the rest)") from exc
    except Exception as exc:
        _mark(store, run_id, "failed")
        raise RunFailed(run_id, one_line(exc)) from exc
    except BaseException:
        _mark(store, run_id, "failed")
        raise


def _plan_and_train(
    store: Store, request: RunRequest, engine: str, run_id: str, configs: list[dict[str, Any]], progress: Progress
) -> RunRecord:
    exp, opts = request.experiment, request.opts
    todo = store.pending(run_id)
    if request.chunk:
        size = request.chunk
    else:
        with exp.thread_limit():  # a probe must measure the setting the chunks will run in
            size = exp.chunk_size(opts, len(todo), engine)
    if request.backend == "ray":
        # at least two chunks per worker, so that the workers share the sweep
        size = min(size, math.ceil(len(todo) / (2 * (request.ray_cpus or 2))))
    size = max(1, size)
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

