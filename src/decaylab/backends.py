"""Where chunks of configurations are trained: in this process, or as Ray tasks.

A backend maps :func:`run_chunk` over chunks and yields ``(chunk, outcomes | error)`` as each chunk
finishes, in any order; the runner stores each chunk's results as soon as it arrives.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from decaylab.results import Outcome
from decaylab.validation import parameter_error

__all__ = ["THREADS_PER_TASK", "Finished", "ray_session", "run_chunk", "run_local", "run_on_ray"]

THREADS_PER_TASK = 1  # each Ray task holds one CPU: one torch/BLAS thread, so tasks never oversubscribe a node

Finished = tuple[list[int], "list[Outcome] | BaseException"]


def run_chunk(
    experiment: str,
    opts: dict[str, Any],
    configs: Sequence[dict[str, Any]],
    engine: str,
    progress: Callable[[int], None] | None = None,
) -> list[Outcome]:
    """Train one chunk of ``experiment``'s configurations; a module-level function, so Ray can ship it."""
    from decaylab.experiments import get_experiment

    exp = get_experiment(experiment)
    with exp.thread_limit():
        return exp.run_chunk(opts, configs, engine, progress)


def run_local(
    experiment: str,
    opts: dict[str, Any],
    configs: Sequence[dict[str, Any]],
    chunks: Sequence[list[int]],
    engine: str,
    progress: Callable[[int], None] | None = None,
) -> Iterator[Finished]:
    """Train the chunks one after another in this process; a chunk that raises is yielded with its error."""
    for chunk in chunks:
        try:
            outcomes: list[Outcome] | BaseException = run_chunk(
                experiment, opts, [configs[i] for i in chunk], engine, progress
            )
        except Exception as exc:  # recorded as failed; Ctrl-C still ends the run
            outcomes = exc
        yield chunk, outcomes


def _pinned(chunk_fn: Callable[..., list[Outcome]], threads: int, *args: Any) -> list[Outcome]:
    """Run ``chunk_fn(*args)`` inside a Ray task with ``threads`` torch/BLAS threads, in a worker that
    keeps freed tensor memory (:mod:`decaylab.memory`)."""
    from decaylab.memory import retain_freed_memory
    from decaylab.threads import limited_threads

    retain_freed_memory()
    with limited_threads(threads):
        return chunk_fn(*args)


@contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None) -> Iterator[None]:
    """Ray for the ``with`` block: the cluster at ``address``, or a local instance started and stopped here.

    Inside an existing session (``ray.is_initialized()``) it does nothing. Raises
    :class:`~decaylab.validation.InvalidParameterError` naming ``--backend`` when Ray is not installed
    and ``--address`` when no cluster answers there.
    """
    try:
        import ray
    except ImportError:
        raise parameter_error(
            "--backend", "decaylab run", "'local' unless Ray is installed (pip install 'decaylab[ray]')", "ray"
        ) from None
    if ray.is_initialized():
        yield
        return
    try:
        ray.init(
            address=address,
            num_cpus=num_cpus if address is None else None,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
            runtime_env={"env_vars": {"PYTHONHASHSEED": os.environ.get("PYTHONHASHSEED", "0")}},
        )
    except (ConnectionError, ValueError) as exc:
        allowed = "the address of a running Ray cluster, or left out to start a local Ray"
        raise parameter_error("--address", "decaylab run", allowed, address) from exc
    try:
        yield
    finally:
        ray.shutdown()


def run_on_ray(
    experiment: str,
    opts: dict[str, Any],
    configs: Sequence[dict[str, Any]],
    chunks: Sequence[list[int]],
    engine: str,
    address: str | None = None,
    max_retries: int = 2,
    num_cpus: int | None = None,
    chunk_fn: Callable[..., list[Outcome]] = run_chunk,
) -> Iterator[Finished]:
    """Train each chunk as a Ray task; yield chunks as they finish.

    Without ``address`` a local Ray instance is started and stopped again. Each task asks Ray for one
    CPU and runs with :data:`THREADS_PER_TASK` threads. A task that raises is retried ``max_retries``
    times; a chunk that still fails is yielded with its exception, and the rest go on. ``chunk_fn`` is
    what each task runs (:func:`run_chunk`; tests pass a stand-in).
    """
    with ray_session(address, num_cpus):
        import ray

        task = ray.remote(num_cpus=THREADS_PER_TASK, max_retries=max_retries, retry_exceptions=True)(_pinned)
        pending = {
            task.remote(chunk_fn, THREADS_PER_TASK, experiment, opts, [configs[i] for i in chunk], engine): chunk
            for chunk in chunks
        }
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                chunk = pending.pop(ref)
                try:
                    yield chunk, ray.get(ref)
                except Exception as exc:  # the task failed after its retries
                    yield chunk, getattr(exc, "cause", None) or exc
