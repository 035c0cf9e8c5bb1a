"""Where chunks of configurations are trained: in this process, or as Ray tasks.

A backend maps :func:`run_chunk` over chunks and yields ``(chunk, outcomes | error)`` as each chunk
finishes, in any order; the runner stores each chunk's results as soon as it arrives.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from decaylab.lab.interrupts import interrupt_received, reinstall, signals_deferred
from decaylab.results import Outcome
from decaylab.validation import parameter_error

__all__ = ["THREADS_PER_TASK", "Finished", "ray_session", "run_chunk", "run_local", "run_on_ray"]

THREADS_PER_TASK = 1  # each Ray task holds one CPU: one torch/BLAS thread, so tasks never oversubscribe a node
CONNECT_TIMEOUT_S = 10.0  # a --address whose host:port accepts no TCP connection within this is refused
_HOST_PORT = re.compile(r"^(?:ray://)?(?P<host>\[[^\]]+\]|[^:/\[\]]+):(?P<port>\d{1,5})$")

Finished = tuple[list[int], "list[Outcome] | BaseException"]


def run_chunk(
    experiment: str,
    opts: dict[str, Any],
    configs: Sequence[dict[str, Any]],
    engine: str,
    progress: Callable[[int], None] | None = None,
) -> list[Outcome]:
    """Train one chunk of ``experiment``'s configurations; a module-level function, so Ray can ship it."""
    from decaylab.lab.experiments import get_experiment

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
    """Train the chunks one after another in this process; a chunk that raises is yielded with its error.

    Ctrl-C is never a chunk's failure: a ``KeyboardInterrupt`` goes up as it is, and so does any error
    that follows a Ctrl-C or SIGTERM (:func:`decaylab.lab.interrupts.interrupt_received`), such as the
    ``ImportError`` of a C extension whose first import the signal cut off.
    """
    for chunk in chunks:
        try:
            outcomes: list[Outcome] | BaseException = run_chunk(
                experiment, opts, [configs[i] for i in chunk], engine, progress
            )
        except Exception as exc:
            if interrupt_received() is not None:
                raise KeyboardInterrupt(f"after an interrupt: {type(exc).__name__}: {exc}") from exc
            outcomes = exc  # recorded as failed
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
    and ``--address`` when no cluster answers there: an address of the form ``host:port`` (or
    ``ray://host:port``) must accept a TCP connection within :data:`CONNECT_TIMEOUT_S` before
    ``ray.init`` is called (``ray.init`` itself keeps retrying an address nobody answers for minutes).

    ``ray.init`` replaces the process's SIGTERM handler with one that calls ``sys.exit``; the handlers
    of :func:`decaylab.lab.interrupts.signals_as_interrupt` are put back right after it. Ray is shut down on
    every way out of the block (an error, Ctrl-C, SIGTERM), with both signals held back while it stops,
    so that a local Ray's processes (``gcs_server``, ``raylet``, workers) end with the command.
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
    if address is not None:
        _check_reachable(address)
    try:
        ray.init(
            address=address,
            num_cpus=num_cpus if address is None else None,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
            runtime_env={"env_vars": {"PYTHONHASHSEED": os.environ.get("PYTHONHASHSEED", "0")}},
        )
    except BaseException as exc:
        with signals_deferred():
            ray.shutdown()  # whatever the interrupted ray.init had started
        if isinstance(exc, (ConnectionError, ValueError)):
            allowed = "the address of a running Ray cluster, or left out to start a local Ray"
            raise parameter_error("--address", "decaylab run", allowed, address) from exc
        raise
    try:
        reinstall()
        yield
    finally:
        with signals_deferred():
            ray.shutdown()


def _check_reachable(address: str) -> None:
    """Refuse a ``host:port`` address whose port accepts no TCP connection within :data:`CONNECT_TIMEOUT_S`."""
    match = _HOST_PORT.match(address)
    if match is None:  # "auto", "local", or a form ray.init judges itself
        return
    host, port = match["host"].strip("[]"), int(match["port"])
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S):
            pass
    except (OSError, OverflowError) as exc:  # refused, timed out, unknown host; a port above 65535
        allowed = "the address of a running Ray cluster, or left out to start a local Ray"
        raise parameter_error("--address", "decaylab run", allowed, address) from exc


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
