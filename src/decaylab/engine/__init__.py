"""The training engine: many configurations of one task, trained one by one or batched, exactly alike.

::

    from functools import partial
    from decaylab.data.synthetic import d2l_linear_data
    from decaylab.engine import Hyper, Task, train

    task = Task(data=partial(d2l_linear_data, n_train=20, n_test=100, dim=200),
                layers=(200, 1), batch_size=5, epochs=100)
    outcomes = train(task, [Hyper(seed=0, lr=0.003, l2=lam) for lam in (0.0, 3.0)])

* :class:`Task` (shared) and :class:`Hyper` (per configuration) say what is trained;
  :mod:`decaylab.engine.semantics` says exactly how, step by step, for both engines.
* ``engine="sequential"`` (:mod:`~decaylab.engine.sequential`) is plain PyTorch, one configuration at a
  time — the reference; ``engine="batched"`` (:mod:`~decaylab.engine.batched`) stacks configurations
  and equals it within rounding (tested: 1e-5 relative in float32, 1e-12 with ``Task(dtype="float64")``).
* Besides curves, an outcome can carry the configuration's parameters (``Task.keep_weights``) and the
  Polyak–Ruppert average of its iterates (``Task.average_from``), and a configuration can be
  constrained to a norm ball (``Hyper.radius``: projected gradient descent).
* :mod:`~decaylab.engine.chunking` chooses how many configurations go in one stack.
* :mod:`~decaylab.engine.module` does the same for any ``nn.Module`` (``torch.func``): the engine of
  ``decaylab.sweep`` / ``decaylab sweep FILE.py:FUNCTION``. Both stacked engines update their parameters
  with :mod:`~decaylab.engine.updates`.
* :func:`run_chunk` trains one chunk; it is a module-level function so that a remote backend (Ray)
  can ship it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from decaylab.engine.batched import run_batched_chunk
from decaylab.engine.chunking import DEFAULT_MEMORY_BUDGET, plan_chunks, run_in_chunks, train_batched
from decaylab.engine.sequential import train_sequential
from decaylab.engine.task import Hyper, Task, check_hypers
from decaylab.results import Outcome
from decaylab.validation import check_choice, parameter_error

__all__ = [
    "ENGINES",
    "Hyper",
    "Task",
    "plan_chunks",
    "run_chunk",
    "train",
    "train_batched",
    "train_sequential",
]

ENGINES = ("batched", "sequential")

ChunkCallback = Callable[[list[int], list[Outcome]], None]


def run_chunk(task: Task, hypers: Sequence[Hyper], engine: str = "batched") -> list[Outcome]:
    """Train one chunk with ``engine`` (no further splitting); outcomes in the order of ``hypers``.

    Raises:
        InvalidParameterError: as :func:`train`.
    """
    check_choice(engine, "engine", "run_chunk", ENGINES)
    hypers = check_hypers(task, hypers, "run_chunk")
    if engine == "sequential":
        return train_sequential(task, hypers)
    return run_batched_chunk(task, hypers)


def train(
    task: Task,
    hypers: Sequence[Hyper],
    engine: str = "batched",
    chunk: int | None = None,
    on_chunk_done: ChunkCallback | None = None,
    *,
    memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET,
) -> list[Outcome]:
    """Train every configuration of ``hypers``; outcomes in the order of ``hypers``.

    Configurations are grouped by seed, split into chunks (``chunk``, else :func:`plan_chunks` for the
    batched engine and 1 for the sequential one), and each chunk is trained by :func:`run_chunk`.
    ``on_chunk_done(indices, outcomes)`` is called as each chunk finishes, with the positions in
    ``hypers`` of its configurations, so the caller can store results before the sweep ends.

    Raises:
        InvalidParameterError: ``task`` not a :class:`Task`; ``hypers`` not a non-empty list of :class:`Hyper`
            (a single ``Hyper`` included: pass ``[hyper]``) or not fitting the task; an unknown ``engine``;
            ``chunk`` or ``memory_budget_bytes`` not an int ≥ 1; ``on_chunk_done`` not callable.
    """
    hypers = check_hypers(task, hypers, "train")
    check_choice(engine, "engine", "train", ENGINES)
    if on_chunk_done is not None and not callable(on_chunk_done):
        raise parameter_error("on_chunk_done", "train", "None or a callable(indices, outcomes)", on_chunk_done)
    if engine == "sequential" and chunk is None:
        chunk = 1
    return run_in_chunks(
        task, hypers, lambda part: run_chunk(task, part, engine), chunk, on_chunk_done, memory_budget_bytes
    )
