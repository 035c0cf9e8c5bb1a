"""How many configurations to train at once: a memory bound, then a short throughput probe.

Batching removes per-configuration overhead (Python, kernel launches, small matrix products), which
dominates for small models; for large models every configuration already keeps the CPU busy, and a
bigger stack only costs memory. So :func:`plan_chunks`

1. bounds the chunk by ``memory_budget_bytes`` / :func:`bytes_per_config` (a deliberately generous
   estimate: parameters, gradients, optimizer state, temporaries, minibatch and evaluation activations);
2. measures configurations·steps per second of the batched engine on synthetic data of the task's
   shapes (a warm-up step, then the best of two timed ones; one for size 1) at chunk sizes 1, 2, 4, …
   up to that bound. It stops when the next size would take the probe past its budget —
   ``probe_seconds``, and at most ``PROBE_FRACTION`` of the sweep's training time as estimated from
   the size-1 step — or when two doublings in a row gained less than 5 %; it keeps the smallest size
   within 5 % of the best rate. For a compute-bound model this is 1, so batched is not slower than
   one configuration at a time, and the probe costs about 2 % of such a sweep.

``chunk=`` overrides both. Chunks are balanced (their sizes differ by at most one). :func:`train_batched`
trains configurations of the MLP engine in the chunks planned, :func:`run_in_chunks` any engine.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from itertools import pairwise

import torch

from decaylab.engine.batched import BACKWARDS, BatchedRun, run_batched_chunk
from decaylab.engine.semantics import Split, dtype_of, load_data
from decaylab.engine.task import Hyper, Task, check_hypers
from decaylab.results import Outcome
from decaylab.validation import check_choice, check_float, check_int

__all__ = [
    "DEFAULT_MEMORY_BUDGET",
    "PROBE_SECONDS",
    "bytes_per_config",
    "measure_rate",
    "plan_chunks",
    "run_in_chunks",
    "seed_order",
    "train_batched",
]

DEFAULT_MEMORY_BUDGET = 1 << 30  # bytes
PROBE_SECONDS = 0.15
PROBE_FRACTION = 0.02  # of the estimated training time of the whole sweep
_GAIN = 1.05  # a larger chunk must be this much faster to be preferred


def seed_order(hypers: Sequence[Hyper]) -> list[int]:
    """Indices of ``hypers`` sorted by seed (stable), so chunks hold as few distinct seeds as possible."""
    return sorted(range(len(hypers)), key=lambda i: hypers[i].seed)


def train_batched(
    task: Task, hypers: Sequence[Hyper], chunk: int | None = None, *, backward: str = "manual"
) -> list[Outcome]:
    """Train ``hypers`` in chunks of ``chunk`` configurations at once; outcomes in the order of ``hypers``.

    ``chunk=None`` asks :func:`plan_chunks` (memory budget and a short
    throughput probe). Results do not depend on the chunking beyond float32 rounding.
    """
    hypers = check_hypers(task, hypers)
    check_choice(backward, "backward", "train_batched", BACKWARDS)
    return run_in_chunks(task, hypers, lambda part: run_batched_chunk(task, part, backward=backward), chunk)


def run_in_chunks(
    task: Task,
    hypers: Sequence[Hyper],
    run: Callable[[list[Hyper]], list[Outcome]],
    chunk: int | None = None,
    on_chunk_done: Callable[[list[int], list[Outcome]], None] | None = None,
    memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET,
) -> list[Outcome]:
    """Group ``hypers`` by seed, split them by :func:`plan_chunks`, ``run`` each chunk; outcomes in input order.

    ``on_chunk_done(indices, outcomes)`` is called after each chunk with the positions in ``hypers``.
    """
    order = seed_order(hypers)
    sizes: dict[str, int] = {}
    if chunk is None and hypers:  # the planner needs the data's sizes: those of the first seed's data set
        data = load_data(task, hypers[order[0]].seed)
        sizes = {"n_train": data.n_train, "n_test": int(data.X_test.shape[0])}
    outcomes: dict[int, Outcome] = {}  # position in hypers -> outcome
    for part in plan_chunks(task, len(hypers), memory_budget_bytes, chunk, **sizes):
        indices = [order[i] for i in part]
        done = run([hypers[i] for i in indices])
        for i, outcome in zip(indices, done, strict=True):
            outcomes[i] = outcome
        if on_chunk_done is not None:
            on_chunk_done(indices, done)
    return [outcomes[i] for i in range(len(hypers))]


PY_FLOAT_BYTES = 32  # a float in a list: its 8-byte slot and the 24-byte float object


def bytes_per_config(task: Task, n_train: int, n_test: int) -> int:
    """An upper estimate of the memory one configuration adds to a batched stack, in bytes.

    Parameter vectors handed back in the outcome (kept weights, the average, optimizer buffers) are
    Python lists, ``PY_FLOAT_BYTES`` a number, on top of the tensors they are cut from.
    """
    widths = task.layers
    n_params = sum(i * o + o for i, o in pairwise(widths))
    state = (1 if task.momentum else 0) + (2 if task.optimizer == "adam" else 0)  # optimizer buffers
    copies = 4 + state + (1 if task.optimizer == "adam" else 0)  # θ, g, temporaries, buffers, Adam's denominator
    kept = {"none": 0, "final": 1, "epochs": task.epochs}[task.keep_weights]  # kept parameter vectors
    buffers = state if task.keep_optimizer_state else 0
    copies += kept + buffers  # as tensors, flattened at the end
    returned = kept + buffers + (1 if task.average_from is not None else 0)  # as lists of Python floats
    m = task.batch_size or n_train
    step_acts = 4 * m * sum(widths[1:]) + 2 * m * widths[0]  # Z, A, H, mask per layer; noisy input
    eval_acts = 3 * max(n_train, n_test) * max(widths[1:])
    itemsize = torch.empty((), dtype=dtype_of(task)).element_size()
    averaged = 8 * n_params if task.average_from is not None else 0  # the float64 running mean
    return itemsize * (copies * n_params + step_acts + eval_acts) + averaged + PY_FLOAT_BYTES * returned * n_params


def plan_chunks(
    task: Task,
    n_configs: int,
    memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET,
    chunk: int | None = None,
    *,
    n_train: int | None = None,
    n_test: int | None = None,
    probe_seconds: float = PROBE_SECONDS,
) -> list[range]:
    """Split positions ``0..n_configs-1`` into consecutive, balanced chunks.

    ``n_train`` / ``n_test`` default to the sizes of ``task.data(0)``.
    """
    n_configs = check_int(n_configs, "n_configs", "plan_chunks", low=0)
    if n_configs == 0:
        return []
    if chunk is not None:
        return _balanced(n_configs, check_int(chunk, "chunk", "plan_chunks", low=1))
    check_int(memory_budget_bytes, "memory_budget_bytes", "plan_chunks", low=1)
    check_float(probe_seconds, "probe_seconds", "plan_chunks", low=0)
    if n_train is None or n_test is None:
        data = load_data(task, 0)
        n_train, n_test = data.n_train, int(data.X_test.shape[0])
    cap = max(1, min(n_configs, memory_budget_bytes // bytes_per_config(task, n_train, n_test)))
    rows = task.batch_size or n_train
    config_steps = n_configs * task.epochs * -(-n_train // rows)
    size = best_chunk(task, cap, rows, probe_seconds, config_steps) if cap > 1 else 1
    return _balanced(n_configs, size)


def _balanced(n: int, size: int) -> list[range]:
    n_chunks = -(-n // min(size, n))
    bounds = [round(i * n / n_chunks) for i in range(n_chunks + 1)]
    return [range(a, b) for a, b in pairwise(bounds)]


def best_chunk(
    task: Task, cap: int, rows: int, probe_seconds: float = PROBE_SECONDS, config_steps: int | None = None
) -> int:
    """The chunk size in 1..cap with the best measured throughput (smallest within 5 % of the best).

    ``rows`` is the minibatch size; ``config_steps`` (configurations × steps of the sweep), when
    given, limits the probe to ``PROBE_FRACTION`` of the training time it predicts.
    """
    start = time.perf_counter()
    rate, per_step = measure_rate(task, 1, rows, repeats=1)
    budget = probe_seconds
    if config_steps is not None:
        budget = min(budget, PROBE_FRACTION * per_step * config_steps)
    rates = {1: rate}
    size, stalls = 1, 0
    while size < cap and stalls < 2:
        nxt = min(cap, 2 * size)
        predicted = 4 * per_step * nxt / size  # set-up, warm-up and timed steps of the next size
        if time.perf_counter() - start + predicted > budget:
            break
        rate, per_step = measure_rate(task, nxt, rows)
        stalls = stalls + 1 if rate < max(rates.values()) * _GAIN else 0
        rates[nxt], size = rate, nxt
    best = max(rates.values())
    return min(c for c, r in rates.items() if r * _GAIN >= best)


def measure_rate(task: Task, size: int, rows: int, repeats: int = 2) -> tuple[float, float]:
    """Configurations·steps per second, and seconds per step, of a ``size``-stack on synthetic data."""
    run = BatchedRun(task, [_probe_hyper(task)] * size, {0: _synthetic(task, rows)})
    run.train_step([None])  # warm-up: allocations, kernel selection
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        run.train_step([None])
        best = min(best, time.perf_counter() - t0)
    return size / best, best


def _probe_hyper(task: Task) -> Hyper:
    return Hyper(
        seed=0,
        lr=1e-6,
        l2=1e-4,
        decoupled=1e-4 if task.optimizer == "adam" else 0.0,
        dropout=(0.5,) * task.n_hidden if task.dropout else (),
        noise=0.1 if task.noise else 0.0,
    )


def _synthetic(task: Task, rows: int) -> Split:
    g = torch.Generator().manual_seed(0)
    dtype = dtype_of(task)
    X = torch.randn((rows, task.layers[0]), generator=g, dtype=dtype)
    if task.loss == "cross_entropy":
        y = torch.randint(0, task.layers[-1], (rows,), generator=g)
    elif task.loss == "bce":
        y = torch.randint(0, 2, (rows, 1), generator=g).to(dtype)
    else:
        y = torch.randn((rows, task.layers[-1]), generator=g, dtype=dtype)
    return Split(X, y, X[:1], y[:1])
