"""The module engine against torch.optim: every configuration of a stack follows the one trained alone.

The reference here is written independently of decaylab's engine: the model from the factory under the
seed's ``init`` stream, ``torch.optim.SGD`` / ``Adam`` / ``AdamW`` over ``decaylab.param_groups``,
decoupled decay for SGD through ``decaylab.attach(DecoupledDecay)``, the seed's ``order`` stream's
permutations as minibatches, full-set losses in eval mode after each epoch.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

import decaylab
from decaylab.engine.module import ModuleStack, ModuleTask, train_module
from decaylab.engine.task import Hyper
from decaylab.rng import generator, stream_seed
from sweep_models import setup, train_alone

pytestmark = pytest.mark.usefixtures("one_thread")

REL = 1e-5  # float32 drift across chunkings and CPUs is ~1e-7 here


def reference(task: ModuleTask, h: Hyper) -> list[tuple[float, float]]:
    """(train loss, val loss) after each epoch for ``h`` trained alone (:func:`sweep_models.train_alone`)."""
    return train_alone(task, h)[0]


def assert_matches(outcomes: list[Any], refs: list[list[tuple[float, float]]]) -> None:
    for o, ref in zip(outcomes, refs, strict=True):
        assert o.status == "done"
        for e, (train, val) in enumerate(ref):
            assert o.curves["train_loss"][e] == pytest.approx(train, rel=REL)
            assert o.curves["val_loss"][e] == pytest.approx(val, rel=REL)


# (model, optimizer, momentum, nesterov, [(l2, decoupled, l1)]) — two seeds each
CASES = {
    "mlp-sgd": ("mlp", "sgd", 0.0, False, [(0.0, 0.0, 0.0), (1e-2, 0.0, 0.0), (0.0, 0.0, 1e-3)]),
    "mlp-momentum-decoupled": ("mlp", "sgd", 0.9, False, [(0.0, 0.0, 0.0), (1e-2, 0.0, 0.0), (0.0, 5e-2, 0.0)]),
    "cnn_bn-nesterov": ("cnn_bn", "sgd", 0.9, True, [(0.0, 0.0, 0.0), (1e-3, 0.0, 0.0), (1e-1, 0.0, 0.0)]),
    "cnn_bn-adam": ("cnn_bn", "adam", 0.0, False, [(0.0, 0.0, 0.0), (1e-2, 0.0, 0.0), (0.0, 1e-1, 0.0)]),
    "block-adamw": ("block", "adamw", 0.0, False, [(0.0, 0.0, 0.0), (0.0, 1e-2, 0.0), (0.0, 1.0, 0.0)]),
    "block-adam-coupled": ("block", "adam", 0.0, False, [(0.0, 0.0, 0.0), (1e-2, 0.0, 0.0), (1e-1, 0.0, 0.0)]),
}


def case(name: str) -> tuple[ModuleTask, list[Hyper]]:
    kind, optimizer, momentum, nesterov, decays = CASES[name]
    lr = 0.05 if optimizer == "sgd" else 1e-2
    task = ModuleTask(**setup(kind), optimizer=optimizer, momentum=momentum, nesterov=nesterov, batch_size=32, epochs=2)
    hypers = [Hyper(seed=s, lr=lr, l2=a, decoupled=b, l1=c) for s in (0, 1) for a, b, c in decays]
    return task, hypers


@pytest.mark.parametrize("name", list(CASES))
def test_each_configuration_follows_torch_optim_at_every_chunk_size(name: str) -> None:
    task, hypers = case(name)
    refs = [reference(task, h) for h in hypers]
    for chunk in (1, 3, len(hypers)):
        assert_matches(train_module(task, hypers, chunk=chunk), refs)


@pytest.mark.parametrize("name", ["cnn_bn-nesterov", "block-adamw"])
@pytest.mark.parametrize("each", [False, True])
def test_evaluation_on_the_stack_or_one_configuration_at_a_time_gives_the_reference(
    monkeypatch: pytest.MonkeyPatch, name: str, each: bool
) -> None:
    """Whichever evaluation the stack uses (BatchNorm's running statistics, attention's fused inference path), every
    curve is the reference's."""
    import dataclasses

    from decaylab.engine import module

    calls: list[str] = []
    for method in ("_split_each", "_split_stacked"):
        original = getattr(module.ModuleStack, method)
        monkeypatch.setattr(module.ModuleStack, method,
                            lambda self, data, original=original, method=method: calls.append(method) or original(self, data))
    monkeypatch.setattr(module.ModuleStack, "_evaluates_each", lambda self: each)
    task, hypers = case(name)
    task = dataclasses.replace(task, epochs=3)
    assert_matches(train_module(task, hypers, chunk=len(hypers)), [reference(task, h) for h in hypers])
    assert calls == ["_split_each" if each else "_split_stacked"] * 6


@pytest.mark.parametrize(("name", "each"), [("cnn_bn-nesterov", False), ("block-adamw", True), ("mlp-sgd", False)])
def test_a_stack_evaluates_one_configuration_at_a_time_where_the_model_has_attention(name: str, each: bool) -> None:
    """A rule, not a timing, so that one command gives one set of numbers; a stack of one evaluates as the model."""
    task, hypers = case(name)
    assert ModuleStack(task, hypers).evaluate_each is each
    assert ModuleStack(task, hypers[:1]).evaluate_each is False
    assert ModuleStack(task, hypers, native=False).evaluate_each is True  # vmap: the model's own kernels


def test_sequential_engine_follows_torch_optim() -> None:
    task, hypers = case("cnn_bn-adam")
    assert_matches(train_module(task, hypers, engine="sequential"), [reference(task, h) for h in hypers])


@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_the_sequential_engine_is_torch_optim_where_adam_amplifies_rounding(optimizer: str) -> None:
    """A Linear with a bias before BatchNorm: the bias's true gradient is 0, its computed one rounding noise, which
    Adam's m/√v turns into steps of the learning rate's size, so any difference of rounding grows to the size of the
    learning rate. torch.optim's fused Adam rounds differently from its default for-loop implementation (the
    reference) and ended 1e-2 away from it here; the sequential engine runs the for-loop one and follows it on any
    machine (the same operations). The batched engine's products round as the reference's only where their kernels
    agree (bit for bit with MKL's AVX-512 code at one thread, 1e-3 apart with its AVX2 code): not asserted."""
    net = lambda seed: torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.BatchNorm1d(32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    task = ModuleTask(**{**setup("mlp"), "model": net}, optimizer=optimizer, batch_size=32, epochs=3)
    decay = {"l2": 1e-3} if optimizer == "adam" else {"decoupled": 1e-2}
    hypers = [Hyper(seed=2, lr=1e-2), Hyper(seed=0, lr=1e-2, **decay), Hyper(seed=1, lr=1e-2)]
    refs = [reference(task, h) for h in hypers]
    assert_matches(train_module(task, hypers, engine="sequential"), refs)


def test_batchnorm_running_statistics_are_per_configuration() -> None:
    """Eval-mode losses use each configuration's own running statistics: with a shared stack they would differ."""
    task, hypers = case("cnn_bn-nesterov")
    outs = train_module(task, hypers, chunk=len(hypers))
    alone = [train_module(task, [h], chunk=1)[0] for h in hypers]
    for a, b in zip(outs, alone, strict=True):
        assert a.curves["val_loss"] == pytest.approx(b.curves["val_loss"], rel=REL)
    assert len({round(o.curves["val_loss"][-1], 4) for o in outs}) == len(outs)  # all configurations differ


def test_coupled_and_decoupled_together_use_theta_before_the_decay() -> None:
    """With both, g ← g + λθ sees θ before θ ← θ(1 − lr·λ_d) (as the MLP engine's semantics); the
    sequential engine adds the coupled term by hand, the batched one through the shared update."""
    task = ModuleTask(**setup("mlp"), optimizer="sgd", momentum=0.5, batch_size=32, epochs=2)
    hypers = [Hyper(seed=0, lr=0.1, l2=0.05, decoupled=0.5)]
    seq = train_module(task, hypers, engine="sequential")[0]
    bat = train_module(task, hypers, chunk=1)[0]
    assert bat.curves["val_loss"] == pytest.approx(seq.curves["val_loss"], rel=REL)


def test_w_norm_is_the_norm_of_the_decayed_tensors() -> None:
    task = ModuleTask(**setup("mlp"), optimizer="sgd", batch_size=32, epochs=1)
    h = Hyper(seed=3, lr=0.05)
    out = train_module(task, [h], chunk=1)[0]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(stream_seed(3, "init"))
        model = task.model(3)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    order = generator(3, "order")
    X, y = task.train
    perm = torch.randperm(len(y), generator=order)
    for a in range(0, len(y), 32):
        opt.zero_grad()
        task.loss(model(X[perm[a : a + 32]]), y[perm[a : a + 32]]).backward()
        opt.step()
    weights = [model[0].weight.detach(), model[2].weight.detach()]  # biases are not decayed: not in the norm
    expected = math.sqrt(sum(float(w.double().pow(2).sum()) for w in weights))
    assert out.curves["w_norm"][0] == pytest.approx(expected, rel=REL)
    # the sequential engine (also what a planned sweep of stacks of one runs) sums the squares its own way
    assert train_module(task, [h], engine="sequential")[0].curves["w_norm"][0] == pytest.approx(expected, rel=REL)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, None])
def test_the_sequential_divergence_check_sees_any_non_finite_parameter(bad: float | None) -> None:
    from decaylab.engine.module import _diverged

    task = ModuleTask(**setup("mlp"), optimizer="sgd", batch_size=32, epochs=1)
    params = [torch.ones(3, 4), torch.zeros(5)]
    if bad is not None:
        params[0][1, 2] = bad
    assert _diverged(task, [0.5, 0.7], params) is (bad is not None)
    assert _diverged(task, [0.5, math.inf], [torch.ones(2)])


def test_a_diverging_configuration_is_isolated() -> None:
    task = ModuleTask(**setup("mlp"), optimizer="sgd", momentum=0.9, batch_size=32, epochs=3)
    good = [Hyper(seed=0, lr=0.05), Hyper(seed=1, lr=0.05, l2=1e-2)]
    bad = Hyper(seed=0, lr=1.0, l2=1e5)  # θ ← θ(1 − lr·λ) − ...: |1 − 1e5|ⁿ overflows float32 within two epochs
    together = train_module(task, [good[0], bad, good[1]], chunk=3)
    assert together[1].status == "diverged" and together[1].diverged_epoch in (1, 2)
    assert all(math.isnan(v) for v in together[1].curves["val_loss"][together[1].diverged_epoch :])
    alone = train_module(task, good, chunk=2)
    for a, b in zip([together[0], together[2]], alone, strict=True):
        assert a.status == "done"
        assert a.curves["val_loss"] == pytest.approx(b.curves["val_loss"], rel=REL)


def _dropout_task() -> ModuleTask:
    from torch import nn

    def model(seed: int) -> nn.Module:
        return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Dropout(0.3), nn.Linear(32, 32), nn.ReLU(),
                             decaylab.Dropout(0.5), nn.Linear(32, 10))

    return ModuleTask(**{**setup("mlp"), "model": model}, optimizer="sgd", momentum=0.9, batch_size=32, epochs=2)


def test_dropout_draws_from_each_seed_s_stream_whatever_the_chunk() -> None:
    task = _dropout_task()
    hypers = [Hyper(seed=s, lr=0.05, l2=l2) for s in (0, 1, 2) for l2 in (0.0, 1e-2)]
    seq = train_module(task, hypers, engine="sequential")
    for chunk in (1, 3, len(hypers)):
        refs = [list(zip(o.curves["train_loss"], o.curves["val_loss"], strict=True)) for o in seq]
        assert_matches(train_module(task, hypers, chunk=chunk), refs)
    # one configuration alone, beside others of other seeds: the same curves
    alone = train_module(task, [hypers[3]], chunk=1)[0]
    assert alone.curves["val_loss"] == pytest.approx(seq[3].curves["val_loss"], rel=REL)


def test_dropout_masks_are_the_seed_s_dropout_stream() -> None:
    """The sequential engine's masks are torch.rand(shape, generator=dropout stream) ≥ p, call by call:
    replaying them by hand into a model without dropout gives the same training."""
    from torch import nn

    task = _dropout_task()
    h = Hyper(seed=4, lr=0.05)
    got = train_module(task, [h], engine="sequential")[0]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(stream_seed(4, "init"))
        model = task.model(4)
    drops = generator(4, "dropout")

    class Replay(nn.Module):
        def __init__(self, p: float) -> None:
            super().__init__()
            self.p = p

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if not self.training:
                return x
            keep = (torch.rand(x.shape, generator=drops) >= self.p).float()
            return x * keep / (1 - self.p)

    model[2], model[5] = Replay(0.3), Replay(0.5)
    opt = torch.optim.SGD(decaylab.param_groups(model, 0.0), lr=0.05, momentum=0.9)
    order = generator(4, "order")
    (X, y), (Xv, yv) = task.train, task.val
    for epoch in range(2):
        model.train()
        perm = torch.randperm(len(y), generator=order)
        for a in range(0, len(y), 32):
            opt.zero_grad()
            task.loss(model(X[perm[a : a + 32]]), y[perm[a : a + 32]]).backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            assert got.curves["val_loss"][epoch] == pytest.approx(task.loss(model(Xv), yv).item(), rel=REL)


def test_the_decay_policy_and_its_multipliers_are_param_groups_own() -> None:
    """Biases decayed, the last layer's weight at half λ, the first layer's bias excluded by name."""
    policy = decaylab.DecayPolicy(exclude_bias=False, exclude_1d=False, exclude="0.bias", multipliers={"2.*": 0.5})
    task = ModuleTask(**setup("mlp"), optimizer="sgd", momentum=0.9, batch_size=32, epochs=2, policy=policy)
    hypers = [Hyper(seed=0, lr=0.05, l2=0.05), Hyper(seed=0, lr=0.05, decoupled=0.5), Hyper(seed=1, lr=0.05, l1=1e-2)]
    assert_matches(train_module(task, hypers, chunk=3), [reference(task, h) for h in hypers])
    default = ModuleTask(**setup("mlp"), optimizer="sgd", momentum=0.9, batch_size=32, epochs=2)
    other = train_module(default, hypers[:1], chunk=1)[0]
    assert other.curves["val_loss"][-1] != pytest.approx(train_module(task, hypers[:1], chunk=1)[0].curves["val_loss"][-1], rel=1e-4)


def test_frozen_parameters_stay_as_they_are() -> None:
    from torch import nn

    def model(seed: int) -> nn.Module:
        net = nn.Sequential(nn.Linear(64, 24), nn.ReLU(), nn.Linear(24, 10))
        net[0].requires_grad_(False)
        return net

    task = ModuleTask(**{**setup("mlp"), "model": model}, optimizer="sgd", momentum=0.9, batch_size=32, epochs=2)
    hypers = [Hyper(seed=0, lr=0.05, l2=0.1), Hyper(seed=1, lr=0.05, decoupled=0.5)]
    assert_matches(train_module(task, hypers, chunk=2), [reference(task, h) for h in hypers])


def test_planned_chunks_give_the_same_numbers(monkeypatch: pytest.MonkeyPatch) -> None:
    """chunk=None: the planner's stacks, or — when it finds no gain in stacking — the model and torch.optim one
    configuration at a time (no stack is built); either way the reference's numbers."""
    import decaylab.engine.module as module

    task, hypers = case("mlp-momentum-decoupled")
    refs = [reference(task, h) for h in hypers]
    assert_matches(train_module(task, hypers), refs)
    monkeypatch.setattr(module, "plan_and_start", lambda task, hypers, models, **kw: ([range(i, i + 1) for i in range(len(hypers))], None))
    alone, one = [], module.train_one_module
    monkeypatch.setattr(module, "train_one_module", lambda task, h, progress=None, model=None: alone.append(h) or one(task, h, progress, model))
    monkeypatch.setattr(module.ModuleStack, "run", None)  # no stack trains
    assert_matches(train_module(task, hypers), refs)
    assert alone == list(hypers)


class _ScaledByItsMaximum(torch.nn.Module):
    """``x / max|x|`` through a Python float: fine for one model, impossible for vmap (``.item()`` on a batched
    tensor) and untraceable for torch.fx — a layer the batched engine cannot batch that no static rule names."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / float(x.detach().abs().max())


def _unbatchable_task() -> ModuleTask:
    model = lambda seed: torch.nn.Sequential(torch.nn.Linear(64, 16), _ScaledByItsMaximum(), torch.nn.Linear(16, 10))
    return ModuleTask(**{**setup("mlp"), "model": model}, optimizer="sgd", batch_size=32, epochs=1)


def test_a_layer_vmap_cannot_batch_is_one_line_before_any_stack_trains(monkeypatch: pytest.MonkeyPatch) -> None:
    """check_module_task probes batching; the engine probes before its first stack (the planner's or a given chunk);
    training one configuration at a time (the planner found no gain) needs no probe and works."""
    import decaylab.engine.module as module
    from decaylab.validation import InvalidParameterError

    task = _unbatchable_task()
    hypers = [Hyper(seed=0, lr=0.05, l2=l2) for l2 in (0.0, 1e-3, 1e-2)]
    with pytest.raises(InvalidParameterError, match="--engine sequential") as info:
        module.check_module_task(task, [0])
    assert "\n" not in str(info.value)
    monkeypatch.setattr(module.ModuleStack, "run", None)  # no stack may train before the error
    for chunk in (2, None):  # None: the planner measures stacks, so it probes first
        with pytest.raises(InvalidParameterError, match="--engine sequential"):
            train_module(task, hypers, chunk=chunk)
    monkeypatch.setattr(module, "plan_and_start", lambda task, hypers, models, **kw: ([range(i, i + 1) for i in range(len(hypers))], None))
    outcomes = train_module(task, hypers)  # one at a time: the model itself, no batching to probe
    assert [o.status for o in outcomes] == ["done"] * 3
    assert outcomes == train_module(task, hypers, engine="sequential")


@pytest.mark.parametrize(
    ("rates", "size"),
    [
        ({1: 100.0}, 1),
        ({1: 100.0, 16: 104.0, 8: 90.0}, 1),  # no stack 5 % faster than one at a time: never slower than a plain loop
        ({1: 100.0, 16: 300.0, 8: 320.0, 4: 250.0}, 16),  # the largest within 10 % of the best
        ({1: 100.0, 16: 250.0, 8: 320.0, 4: 300.0}, 8),
        ({1: 100.0, 12: 106.0, 6: 110.0}, 12),
    ],
)
def test_the_planner_chooses_the_largest_stack_near_the_best_rate(rates: dict[int, float], size: int) -> None:
    from decaylab.engine.module import _chosen_size

    assert _chosen_size(rates) == size


@pytest.mark.parametrize(
    ("step", "gain", "cap", "config_steps", "probed", "chosen"),
    [
        # the digits CNN's shape: 1 ms steps, a stack of 16 training 3× as fast; a 5-epoch sweep of 16 (1,520 steps)
        (1e-3, 3.0, 16, 1_520, [1, 16, 8], 16),
        # the compute-bound MLP's: 20 ms steps, no gain; 4 configurations × 25 steps (2 s): no stack fits 5 % of it
        (2e-2, 1.0, 4, 100, [1], 1),
        (2e-2, 1.0, 4, 10_000, [1, 4, 2], 1),  # a long sweep of it affords the stacks, which lose
        (1e-3, 3.0, 4, 10, [1, 4, 2], 4),  # a sweep of 10 ms: PROBE_MIN_SECONDS (50 ms) still affords small stacks
    ],
)
def test_the_module_probe_stays_within_its_budget(
    step: float, gain: float, cap: int, config_steps: int, probed: list[int], chosen: int
) -> None:
    """On a simulated clock (no timing of this machine): measuring a stack of ``size`` costs 4 of its steps, a step
    of the stack ``step·size/gain`` (size 1: ``step``). The probe measures size 1, then the cap, halving, while
    4 steps at size 1's rate fit what is left of ``min(probe_seconds, max(PROBE_MIN_SECONDS, PROBE_FRACTION · the
    sweep's predicted time))``."""
    from decaylab.engine import module
    from decaylab.engine.module import _chosen_size, probe_stacks

    clock, sizes = [0.0], []

    def rate_of(size: int) -> float:
        per_step = step if size == 1 else step * size / gain
        clock[0] += 4 * per_step
        sizes.append(size)
        return size / per_step

    rates = probe_stacks(rate_of, cap, config_steps, probe_seconds=1.0, clock=lambda: clock[0])
    assert sizes == probed and _chosen_size(rates) == chosen
    budget = min(1.0, max(module.PROBE_MIN_SECONDS, module.PROBE_FRACTION * config_steps * step))
    assert clock[0] - 4 * step <= budget  # size 1 is always measured


@pytest.mark.parametrize("kind", ["cnn_bn", "dropout"])
def test_the_planner_s_stack_goes_on_as_the_first_chunk_with_the_same_numbers(monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    """When the largest stack wins, plan_and_start hands over the stack it measured, a few real steps into its first
    epoch (a warm-up and the timed ones); run() goes on from there and every number equals that of a stack that never
    paused (chunk=K, bit for bit): the minibatches, BatchNorm's running statistics and the dropout streams continue.
    No stack is kept when a smaller size wins or the first epoch has fewer than four full minibatches."""
    import dataclasses

    from decaylab.engine import module

    monkeypatch.setattr(module, "PROBE_MIN_SECONDS", 1.0)  # a slow machine's probe must still afford the largest stack
    monkeypatch.setattr(module, "_chosen_size", lambda rates: max(rates))
    if kind == "dropout":
        net = lambda seed: torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Dropout(0.3), torch.nn.Linear(32, 10))
        task = ModuleTask(**{**setup("mlp"), "model": net}, optimizer="sgd", momentum=0.9, batch_size=32, epochs=2)
    else:
        task = ModuleTask(**setup("cnn_bn"), optimizer="sgd", momentum=0.9, batch_size=32, epochs=2)
    hypers = [Hyper(seed=s, lr=0.05, l2=l2) for s in (0, 1) for l2 in (0.0, 1e-3, 1e-1)]
    models = module.check_module_task(task, [0, 1], probe=False)
    sizes, started = module.plan_and_start(task, hypers, models)
    assert sizes == [range(len(hypers))] and started is not None and started.K == len(hypers)
    assert 2 <= started.updater.t <= 4 and not started.history  # a warm-up and 1–3 timed steps, real
    steps_before_run, run = [], module.ModuleStack.run
    monkeypatch.setattr(module.ModuleStack, "run", lambda self, progress=None: steps_before_run.append(self.updater.t) or run(self, progress))
    planned, whole = train_module(task, hypers), train_module(task, hypers, chunk=len(hypers))
    assert steps_before_run[0] >= 2 and steps_before_run[1] == 0  # the planner's stack ran, begun; chunk=K's from step 0
    assert [o.curves for o in planned] == [o.curves for o in whole]
    for batch_size in (task.n_train // 3, task.n_train // 4 + 1):  # 3 minibatches; 4 but the last short
        assert module.plan_and_start(dataclasses.replace(task, batch_size=batch_size), hypers, models)[1] is None
    monkeypatch.setattr(module, "_chosen_size", lambda rates: min(c for c in rates if c > 1))
    assert module.plan_and_start(task, hypers, models)[1] is None


@pytest.mark.parametrize(
    ("optimizer", "momentum", "nesterov"),
    [("sgd", 0.0, False), ("sgd", 0.9, False), ("sgd", 0.9, True), ("adam", 0.0, False), ("adamw", 0.0, False)],
)
def test_the_planner_s_reference_update_is_torch_optim_s_fused_step(optimizer: str, momentum: float, nesterov: bool) -> None:
    """fused_update (the planner's one-configuration step, without constructing torch.optim) makes the numbers of
    torch.optim's fused step, over three steps; a tensor without a gradient is left alone."""
    from decaylab.engine.module import fused_update

    task = ModuleTask(**setup("mlp"), optimizer=optimizer, momentum=momentum, nesterov=nesterov, batch_size=32, epochs=1)
    torch.manual_seed(0)
    ours = [torch.randn(5, 3), torch.randn(3), torch.randn(2)]
    theirs = [p.clone() for p in ours]
    kind = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[optimizer]
    extra = {"momentum": momentum, "nesterov": nesterov} if optimizer == "sgd" else {"betas": task.betas, "eps": task.eps}
    opt = kind(theirs, lr=0.1, weight_decay=0.05, fused=True, **extra)
    update = fused_update(task, ours, lr=0.1, weight_decay=0.05)
    assert update is not None
    for _ in range(3):
        grads = [torch.randn_like(p) for p in ours[:2]]  # the last tensor gets none
        for p, q, g in zip(ours[:2], theirs[:2], grads, strict=True):
            p.grad, q.grad = g.clone(), g.clone()
        update()
        opt.step()
    assert all(torch.equal(p, q) for p, q in zip(ours, theirs, strict=True))
    assert torch.equal(ours[2], theirs[2])


def _sum_over_32(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cross_entropy(out, y, reduction="sum") / 32  # the batch's mean only at 32 rows


@pytest.mark.parametrize(
    ("fn", "row_mean"),
    [
        (torch.nn.functional.cross_entropy, True),
        (torch.nn.CrossEntropyLoss(label_smoothing=0.1), True),
        (lambda out, y: torch.nn.functional.mse_loss(out.sum(dim=1), y.float()), True),
        (_sum_over_32, False),
        (lambda out, y: torch.nn.functional.cross_entropy(out, y, reduction="none").max(), False),
        (lambda out, y: torch.nn.functional.cross_entropy(out - out.mean(dim=0), y), False),  # rows depend on each other
        (torch.nn.CrossEntropyLoss(weight=torch.linspace(0.5, 2.0, 10)), False),  # a weighted mean
    ],
)
def test_is_row_mean_tells_a_mean_over_the_rows(fn: Any, row_mean: bool) -> None:
    from decaylab.engine.module import is_row_mean

    torch.manual_seed(0)
    out, y = torch.randn(6, 10), torch.tensor([0, 3, 3, 7, 9, 1])
    assert is_row_mean(fn, out, y) is row_mean
    assert not is_row_mean(fn, out[:1], y[:1])  # one row proves nothing


def test_the_row_mean_check_sees_rows_of_several_targets() -> None:
    """Training data sorted by class: a class-weighted cross-entropy is no row mean (a weighted one), which rows
    of one class alone would not show."""
    from decaylab.engine.module import ModuleStack

    (X, y), val = setup("mlp")["train"], setup("mlp")["val"]
    order = torch.argsort(y, stable=True)
    weighted = torch.nn.CrossEntropyLoss(weight=torch.linspace(0.5, 2.0, 10))
    task = ModuleTask(**{**setup("mlp"), "train": (X[order], y[order]), "val": val, "loss": weighted}, batch_size=32, epochs=1)
    assert not ModuleStack(task, [Hyper(seed=0, lr=0.05)] * 2).row_mean


def test_the_row_mean_check_sees_a_rare_class() -> None:
    """15 positives among 200 rows, none of them among the rows spread over the set: the class-weighted loss is still
    found to be no row mean (the attacker's imbalanced problem, which the stack trained 3–45 % off)."""
    from decaylab.engine.module import ModuleStack, probe_rows

    X = torch.randn(200, setup("mlp")["train"][0].shape[1], generator=torch.Generator().manual_seed(0))
    y = torch.zeros(200, dtype=torch.long)
    y[torch.arange(3, 200, 13)[:15]] = 1
    spread = torch.linspace(0, 199, 8).round().long()
    assert not bool(y[spread].any()) and set(probe_rows(y).tolist()) >= set(spread.tolist()) | {3}
    weighted = torch.nn.CrossEntropyLoss(weight=torch.tensor([1.0, 9.0] + [1.0] * 8))
    task = ModuleTask(**{**setup("mlp"), "train": (X, y), "val": None, "loss": weighted}, batch_size=20, epochs=1)
    assert not ModuleStack(task, [Hyper(seed=0, lr=0.05)] * 2).row_mean


def test_a_loss_that_is_no_row_mean_trains_each_configuration_alone() -> None:
    """The stack sums K row means as K times one loss of all their rows; a loss that is not a mean over the rows
    takes vmap (one value per configuration) and still follows torch.optim."""
    from decaylab.engine.module import ModuleStack

    task = ModuleTask(**{**setup("mlp"), "loss": _sum_over_32}, optimizer="sgd", momentum=0.9, batch_size=32, epochs=2)
    hypers = [Hyper(seed=s, lr=0.05, l2=l2) for s in (0, 1) for l2 in (0.0, 1e-2)]
    assert not ModuleStack(task, hypers[:2]).row_mean
    assert ModuleStack(ModuleTask(**setup("mlp"), batch_size=32, epochs=2), hypers[:2]).row_mean
    assert_matches(train_module(task, hypers, chunk=4), [reference(task, h) for h in hypers])


def test_one_loss_of_all_rows_gives_vmap_s_gradients() -> None:
    """A training step with the loss of all K·B rows (row mean) moves each configuration as vmap's K losses do."""
    from decaylab.engine.module import ModuleStack

    task = ModuleTask(**setup("cnn_bn"), optimizer="sgd", momentum=0.9, batch_size=32, epochs=1)
    hypers = [Hyper(seed=s, lr=0.05, l2=l2) for s in (0, 1) for l2 in (0.0, 1e-2)]  # two seeds: per-seed batches
    flat, vmapped = ModuleStack(task, hypers), ModuleStack(task, hypers)
    assert flat.row_mean
    vmapped.row_mean = False
    for stack in (flat, vmapped):
        stack.train_step([torch.arange(32), torch.arange(32, 64)])
    for name in flat.names:
        assert torch.allclose(flat.params[name], vmapped.params[name], rtol=1e-6, atol=1e-7), name


def test_a_sweep_that_stacks_never_imports_torch_dynamo_or_sympy() -> None:
    """The planner times one configuration's step without constructing a torch.optim optimizer, whose first
    construction in a process imports torch._dynamo (1.5–1.8 s); a stack of up to LOOP_METRICS_UP_TO
    configurations computes its cross-entropy without vmap, whose decomposition imports sympy (~0.6 s): the
    planner (whatever it decides) and a stacked sweep never need either."""
    script = (
        "import sys, torch\n"
        "from sweep_models import setup\n"
        "from decaylab.engine.module import ModuleTask, plan_module_chunks, train_module\n"
        "from decaylab.engine.task import Hyper\n"
        "task = ModuleTask(**setup('cnn_bn'), optimizer='sgd', momentum=0.9, batch_size=32, epochs=1)\n"
        "plan_module_chunks(task, 4)\n"
        "train_module(task, [Hyper(seed=0, lr=0.05, l2=l2) for l2 in (0.0, 1e-3, 1e-2, 1e-1)], chunk=4)\n"
        "print('torch._dynamo' in sys.modules, 'sympy' in sys.modules)\n"
    )
    tests = Path(__file__).parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tests), str(tests.parent / "src")])}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=240, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["False", "False"]
