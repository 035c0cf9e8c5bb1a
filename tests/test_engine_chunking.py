"""Chunk planning, and a property test: random configurations, batched == sequential."""

from __future__ import annotations

from functools import partial

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from decaylab.data.synthetic import d2l_linear_data
from decaylab.engine import Hyper, Task, chunking, plan_chunks, train_batched, train_sequential
from decaylab.engine.chunking import best_chunk, bytes_per_config, seed_order
from decaylab.validation import InvalidParameterError
from test_engine import assert_outcomes_close, blobs

D2L = partial(d2l_linear_data, n_train=20, n_test=100, dim=200)


pytestmark = pytest.mark.usefixtures("one_thread")  # small matrices: see decaylab.threads


def _sizes(parts: list[range]) -> list[int]:
    return [len(p) for p in parts]


def test_chunk_override_gives_balanced_consecutive_chunks() -> None:
    task = Task(data=D2L, layers=(200, 1), batch_size=5)
    parts = plan_chunks(task, 10, chunk=4)
    assert _sizes(parts) == [3, 4, 3]
    assert [i for p in parts for i in p] == list(range(10))
    assert _sizes(plan_chunks(task, 5, chunk=100)) == [5]
    assert plan_chunks(task, 0) == []
    with pytest.raises(InvalidParameterError, match="The 'chunk' parameter of plan_chunks must be an int in"):
        plan_chunks(task, 5, chunk=0)


def test_memory_budget_bounds_the_chunk() -> None:
    task = Task(data=blobs, layers=(6, 256, 256, 3), loss="cross_entropy", batch_size=8, optimizer="adam")
    per = bytes_per_config(task, 40, 30)
    assert per > 4 * 3 * (6 * 256 + 256 * 256)  # parameters, gradients, two Adam moments at least
    assert _sizes(plan_chunks(task, 7, memory_budget_bytes=per)) == [1] * 7  # no probe needed
    parts = plan_chunks(task, 7, memory_budget_bytes=3 * per + 1, probe_seconds=0.05)
    assert max(_sizes(parts)) <= 3


def test_probe_batches_small_models() -> None:
    task = Task(data=D2L, layers=(200, 1), batch_size=5, epochs=100)
    parts = plan_chunks(task, 64)
    assert max(_sizes(parts)) >= 16  # per-step overhead dominates: batching wins by far


@pytest.mark.parametrize(
    ("base_step", "config_steps", "probed"),
    [(1e-4, None, [1, 2, 4, 8, 16, 32, 64]), (1e-2, None, [1, 2]), (1e-2, 10_000, [1, 2]), (1e-2, 300, [1])],
)
def test_the_probe_stays_within_its_budget(
    monkeypatch: pytest.MonkeyPatch, base_step: float, config_steps: int | None, probed: list[int]
) -> None:
    """On a simulated clock (no timing of this machine): measuring a stack of ``size`` costs 4 steps of
    ``base_step·(1 + size/16)`` s. The probe measures size 1, then doubles up to the cap while the next size's
    predicted cost (4 steps of the current one, scaled by the sizes) fits what is left of ``probe_seconds`` and of
    ``PROBE_FRACTION`` of the sweep's predicted training time."""
    clock = [0.0]
    sizes: list[int] = []

    def per_step(size: int) -> float:
        return base_step * (1 + size / 16)

    def fake_rate(task: Task, size: int, rows: int, repeats: int = 2) -> tuple[float, float]:
        clock[0] += 4 * per_step(size)
        sizes.append(size)
        return size / per_step(size), per_step(size)

    monkeypatch.setattr(chunking, "measure_rate", fake_rate)
    monkeypatch.setattr(chunking, "time", type("Clock", (), {"perf_counter": staticmethod(lambda: clock[0])}))
    task = Task(data=D2L, layers=(200, 1), batch_size=5)
    best = best_chunk(task, cap=64, rows=5, probe_seconds=0.15, config_steps=config_steps)
    budget = min(0.15, chunking.PROBE_FRACTION * per_step(1) * (config_steps or 10**12))
    assert sizes == probed and best == probed[-1]  # the rate grows with the size here
    assert clock[0] <= max(budget, 4 * per_step(1))  # size 1 is always measured
    if probed[-1] < 64:  # it stopped because the next size would not have fitted
        assert clock[0] + 4 * per_step(probed[-1]) * 2 > budget


@pytest.mark.parametrize(
    ("rates", "expected"),
    [
        ({1: 1.0, 2: 1.01, 4: 0.99, 8: 1.0}, 1),  # compute-bound: flat, keep 1
        ({1: 1.0, 2: 1.9, 4: 3.5, 8: 6.0, 16: 9.0}, 16),  # overhead-bound: the largest
        ({1: 1.0, 2: 1.9, 4: 3.0, 8: 3.05, 16: 2.0}, 4),  # the smallest within 5 % of the best
    ],
)
def test_best_chunk_rule(monkeypatch: pytest.MonkeyPatch, rates: dict[int, float], expected: int) -> None:
    calls: list[int] = []

    def fake(task: Task, size: int, rows: int, repeats: int = 2) -> tuple[float, float]:
        calls.append(size)
        return rates.get(size, 0.0), 1e-6

    monkeypatch.setattr(chunking, "measure_rate", fake)
    task = Task(data=D2L, layers=(200, 1))
    assert best_chunk(task, cap=max(rates), rows=5) == expected
    assert calls[0] == 1 and all(b == 2 * a for a, b in zip(calls, calls[1:], strict=False))


def test_probe_stops_within_its_share_of_a_heavy_sweep(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 1 s step with 100 config-steps to go: 2 % is 2 s, so size 2 (predicted 8 s) is never probed."""
    calls: list[int] = []

    def fake(task: Task, size: int, rows: int, repeats: int = 2) -> tuple[float, float]:
        calls.append(size)
        return size / 1.0, 1.0

    monkeypatch.setattr(chunking, "measure_rate", fake)
    assert best_chunk(Task(data=D2L, layers=(200, 1)), cap=64, rows=5, probe_seconds=10.0, config_steps=100) == 1
    assert calls == [1]


def test_seed_order_groups_seeds_stably() -> None:
    hypers = [Hyper(seed=s, lr=0.1 * (i + 1)) for i, s in enumerate([3, 1, 3, 0, 1])]
    assert seed_order(hypers) == [3, 1, 4, 0, 2]


# ---------------------------------------------------------------- property: any configurations, any chunk
_hyper = st.builds(
    lambda seed, lr, l2, dec, l1, p1, p2, sigma: Hyper(
        seed=seed, lr=lr, l2=l2, decoupled=dec, l1=l1, dropout=(p1, p2), noise=sigma
    ),
    seed=st.integers(0, 3),
    lr=st.sampled_from([0.01, 0.05, 0.1]),
    l2=st.sampled_from([0.0, 1e-3, 0.1]),
    dec=st.sampled_from([0.0, 0.01, 0.5]),
    l1=st.sampled_from([0.0, 1e-3]),
    p1=st.sampled_from([0.0, 0.3, 1.0]),
    p2=st.sampled_from([0.0, 0.5]),
    sigma=st.sampled_from([0.0, 0.2]),
)


@settings(max_examples=25, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    hypers=st.lists(_hyper, min_size=1, max_size=5),
    optimizer=st.sampled_from(["sgd", "adam"]),
    momentum=st.sampled_from([0.0, 0.9]),
    chunk=st.integers(1, 5),
)
def test_batched_equals_sequential_for_random_sweeps(hypers: list[Hyper], optimizer: str, momentum: float, chunk: int) -> None:
    task = Task(
        data=blobs, layers=(6, 10, 8, 3), loss="cross_entropy", optimizer=optimizer,
        momentum=momentum if optimizer == "sgd" else 0.0, batch_size=16, epochs=2, init="torch",
        dropout=True, noise=True,
    )
    if optimizer == "adam":
        hypers = [Hyper(h.seed, h.lr / 10, h.l2, h.decoupled, h.l1, h.dropout, h.noise) for h in hypers]
    assert_outcomes_close(train_batched(task, hypers, chunk=chunk), train_sequential(task, hypers))
