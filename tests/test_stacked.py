"""The stacked native forward (``decaylab.engine.stacked``) against the ``vmap`` path and against torch.optim alone.

Every layer kind the stacker handles appears in a model below; each model is trained as a stack of
configurations with two seeds (so both the shared-input and the per-configuration-input layouts run) by the
stacked forward, by the ``vmap`` forward (``ModuleStack(native=False)``), and one configuration at a time by
an independent ``torch.optim.SGD`` loop (written here), and the curves — and BatchNorm's running statistics —
must agree to 1e-5 relative (float32 drift across CPUs and orderings is ~1e-7 here).
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import decaylab
from decaylab.engine.module import (
    ModuleStack,
    ModuleTask,
    train_module_batched,
    train_module_sequential,
)
from decaylab.engine.stacked import StackedForward, Unsupported
from decaylab.engine.task import Hyper
from sweep_models import Block, accuracy, digits, tokens, train_alone

pytestmark = pytest.mark.usefixtures("one_thread")

REL = 1e-5


def conv_net(seed: int) -> nn.Module:
    """Conv2d (shared input), ReLU, MaxPool2d, grouped Conv2d, Tanh, AvgPool2d, Flatten, Linear."""
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3, padding=1, groups=2), nn.Tanh(), nn.AvgPool2d(2),
        nn.Flatten(), nn.Linear(24, 10),
    )


def bn_net(seed: int, cumulative: bool = False) -> nn.Module:
    """BatchNorm2d after a bias-free Conv2d, BatchNorm1d (``cumulative``: the cumulative average, momentum=None,
    which the vmap path cannot run: ``nn.BatchNorm`` calls ``.item()`` on num_batches_tracked), GELU."""
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4, momentum=0.3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64, 16), nn.BatchNorm1d(16, momentum=None if cumulative else 0.1), nn.GELU(),
        nn.Linear(16, 10),
    )


class Norms(nn.Module):
    """LayerNorm with and without affine, a LayerNorm on the raw input, Embedding-free MLP with a parameter added."""

    def __init__(self) -> None:
        super().__init__()
        self.ln0 = nn.LayerNorm(64)
        self.fc = nn.Linear(64, 16)
        self.ln1 = nn.LayerNorm(16, elementwise_affine=False)
        self.shift = nn.Parameter(torch.randn(16) * 0.1)
        self.head = nn.Linear(16, 10, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.fc(self.ln0(x)))
        return self.head(torch.tanh(self.ln1(h) * 2.0 + self.shift))


def norms(seed: int) -> nn.Module:
    return Norms()


def block(seed: int) -> nn.Module:
    return Block()


def dropout_net(seed: int) -> nn.Module:
    """Dropout on the channel layout (after a convolution) and on rows (after a Linear)."""
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Dropout(0.25), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), decaylab.Dropout(0.4), nn.Linear(16, 10),
    )


def task_of(model: Any, kind: str = "image", epochs: int = 2, **kw: Any) -> ModuleTask:
    if kind == "tokens":
        train, val = tokens()
    else:
        train, val = digits(image=kind == "image")
    return ModuleTask(model=model, train=train, val=val, loss=F.cross_entropy, metrics={"acc": accuracy},
                      optimizer="sgd", momentum=0.9, batch_size=32, epochs=epochs, **kw)


HYPERS = [Hyper(seed=s, lr=0.05, l2=l2) for s in (0, 1) for l2 in (0.0, 1e-3, 3e-2)]


alone = train_alone  # the configuration trained alone with torch.optim: the reference


def losses(outcome: Any) -> list[tuple[float, float]]:
    assert outcome.status == "done"
    return list(zip(outcome.curves["train_loss"], outcome.curves["val_loss"], strict=True))


def assert_close(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> None:
    for (ta, va), (tb, vb) in zip(a, b, strict=True):
        assert ta == pytest.approx(tb, rel=REL)
        assert va == pytest.approx(vb, rel=REL)


CASES = {
    "conv-pool-linear": (conv_net, "image"),
    "batchnorm": (bn_net, "image"),
    "layernorm-parameter": (norms, "flat"),
    "transformer-block": (block, "tokens"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_stacked_forward_equals_vmap_and_torch_optim(name: str) -> None:
    model, kind = CASES[name]
    task = task_of(model, kind)
    stacked = ModuleStack(task, HYPERS)
    assert stacked.stacked is not None, stacked.fallback
    vmapped = ModuleStack(task, HYPERS, native=False)
    assert vmapped.stacked is None
    out_s, out_v = stacked.run(), vmapped.run()
    for k, h in enumerate(HYPERS):
        ref, _ = alone(task, h)
        assert_close(losses(out_s[k]), ref)
        assert_close(losses(out_s[k]), losses(out_v[k]))
    assert max(abs(a - b) for o in out_s for a, b in zip(o.curves["train_loss"], o.curves["train_loss"][1:], strict=False)) > 1e-3


def test_batchnorm_running_statistics_are_torch_s_per_configuration() -> None:
    """running_mean, running_var (momentum 0.3 and 0.1) and num_batches_tracked of every configuration equal those
    of its model trained alone, and the vmap path's."""
    task = task_of(bn_net, "image")
    stacked, vmapped = ModuleStack(task, HYPERS), ModuleStack(task, HYPERS, native=False)
    assert stacked.stacked is not None
    stacked.run(), vmapped.run()
    names = [n for n in stacked.buffers if "running" in n or "tracked" in n]
    assert len(names) == 6
    for k, h in enumerate(stacked.hypers):  # the stack's own (seed-sorted) order
        _, model = alone(task, h)
        own = dict(model.named_buffers())
        for n in names:
            torch.testing.assert_close(stacked.buffers[n][k], own[n], rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(stacked.buffers[n][k], vmapped.buffers[n][k], rtol=1e-5, atol=1e-6)
    assert int(stacked.buffers["1.num_batches_tracked"][0]) == task.epochs * math.ceil(task.n_train / task.batch_size)


def test_batchnorm_cumulative_average_follows_torch_optim() -> None:
    """momentum=None (running statistics as the cumulative average 1/num_batches_tracked): curves and running
    statistics equal the model trained alone (the vmap path cannot run this layer)."""
    task = task_of(lambda s: bn_net(s, cumulative=True), "image")
    stack = ModuleStack(task, HYPERS)
    assert stack.stacked is not None
    outcomes = stack.run()
    for k, h in enumerate(stack.hypers):
        ref, model = alone(task, h)
        assert_close(losses(outcomes[stack.perm[k]]), ref)
        own = dict(model.named_buffers())
        for n in ("6.running_mean", "6.running_var", "6.num_batches_tracked"):
            torch.testing.assert_close(stack.buffers[n][k], own[n], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("chunk", [1, 3, 6])
def test_dropout_masks_are_the_vmap_path_s_whatever_the_chunk(chunk: int) -> None:
    """Dropout on channel and row layouts draws each seed's uniforms: equal to the sequential engine (its masks
    from the seed's dropout stream) and to the vmap path, at chunk sizes 1, 3 and K."""
    task = task_of(dropout_net, "image")
    stack = ModuleStack(task, HYPERS)
    assert stack.stacked is not None
    batched = train_module_batched(task, HYPERS, chunk=chunk)
    sequential = train_module_sequential(task, HYPERS)
    vmapped = ModuleStack(task, HYPERS, native=False).run()
    for b, s, v in zip(batched, sequential, vmapped, strict=True):
        assert_close(losses(b), losses(s))
        assert_close(losses(b), losses(v))
    without = train_module_batched(task_of(lambda s: nn.Sequential(*[m for m in dropout_net(s) if not isinstance(
        m, (nn.Dropout, decaylab.Dropout))]), "image"), HYPERS[:1], chunk=1)
    assert abs(losses(without[0])[-1][0] - losses(batched[0])[-1][0]) > 1e-4  # the masks do act


class BatchCentred(nn.Module):
    """Subtracts the batch mean: an operation over the batch dimension, which the stacker must refuse."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc(x)
        return h - h.mean(dim=0)


class Branching(nn.Module):
    """Control flow on the input's shape: torch.fx cannot trace it (vmap can run it)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc(x)
        return h if x.shape[-1] == 64 else -h


def hooked(seed: int) -> nn.Module:
    model = nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))
    model[1].register_forward_hook(lambda m, i, o: o * 0.5)
    return model


class TrainingBranch(nn.Module):
    """A forward that branches on ``self.training`` (traced once per mode)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc(x)
        return h * 0.5 if self.training else h


def test_a_forward_that_branches_on_training_mode_is_exact() -> None:
    task = task_of(lambda s: TrainingBranch(), "flat")
    stack = ModuleStack(task, HYPERS)
    assert stack.stacked is not None
    for o, h in zip(stack.run(), HYPERS, strict=True):
        assert_close(losses(o), alone(task, h)[0])


UNKNOWN = {
    "forward hook": (hooked, "hooks"),
    "unknown layer": (lambda s: nn.Sequential(nn.Linear(64, 16), nn.Softsign(), nn.Linear(16, 10)), "layer"),
    "operation over the batch": (lambda s: BatchCentred(), "batch dimension"),
    "untraceable": (lambda s: Branching(), "torch.fx"),
}


@pytest.mark.parametrize("name", list(UNKNOWN))
def test_an_unknown_layer_or_operation_falls_back_to_vmap(name: str) -> None:
    model, reason = UNKNOWN[name]
    task = task_of(model, "flat")
    stack = ModuleStack(task, HYPERS)
    assert stack.stacked is None and reason in stack.fallback
    for o, h in zip(stack.run(), HYPERS, strict=True):
        assert_close(losses(o), alone(task, h)[0])


def test_the_check_run_catches_a_wrong_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    """A rule that computes something else than the layer (here: ReLU as the identity) is caught by the check
    run against the model itself before any training, and the stack falls back to vmap."""
    from decaylab.engine import stacked as st

    monkeypatch.setitem(st._UNARY_MODULES, nn.ReLU, lambda m, x: x)
    stack = ModuleStack(task_of(conv_net, "image"), HYPERS)
    assert stack.stacked is None and "differs" in stack.fallback


def test_unsupported_options_of_known_layers_are_refused() -> None:
    for layer in (nn.Embedding(12, 16, padding_idx=0), nn.Conv2d(1, 4, 3, padding=1, padding_mode="reflect")):
        model = nn.Sequential(layer)
        forward = StackedForward(model, 2)
        params = {n: p.detach().unsqueeze(0).expand(2, *p.shape) for n, p in model.named_parameters()}
        x = torch.zeros(3, 6, dtype=torch.long) if isinstance(layer, nn.Embedding) else torch.zeros(3, 1, 8, 8)
        with pytest.raises(Unsupported):
            forward(params, {}, x, None, [])


ONE_SEED = [Hyper(seed=0, lr=0.05, l2=l2) for l2 in (0.0, 1e-3, 3e-2)]


@pytest.mark.parametrize("name", ["conv-pool-linear", "batchnorm"])
def test_one_seed_shared_input_paths_follow_torch_optim(name: str) -> None:
    """One seed: every configuration sees the same minibatch, so the first Conv2d runs as one unfolded matrix
    product (channels-last output), ReLU→MaxPool as MaxPool→ReLU, and evaluation pools by strided maxima; the
    stack must use these rules (a wrong one would fall back to vmap) and follow torch.optim alone."""
    model, kind = CASES[name]
    task = task_of(model, kind)
    stack = ModuleStack(task, ONE_SEED)
    assert stack.stacked is not None, stack.fallback
    assert any(stack.stacked.relu_after_pool.values())
    for o, h in zip(stack.run(), ONE_SEED, strict=True):
        assert_close(losses(o), alone(task, h)[0])


class Ties(nn.Module):
    """A 1×1 convolution of two-channel integer images with integer weights: ReLU then 2×2 max pooling sees exact
    ties, at zero and above it, between elements computed from different inputs (so where the gradient goes
    changes the weights' gradient)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 1)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(2 * 4 * 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(torch.relu(self.conv(x))).flatten(1))


@pytest.mark.parametrize("training", [True, False])
def test_relu_after_max_pooling_and_unfolded_convolution_keep_values_and_gradients_with_ties(training: bool) -> None:
    """relu(maxpool(x)) for maxpool(relu(x)), the unfolded convolution and the strided maxima of evaluation: the
    outputs and every parameter's gradient equal the model's own per configuration (``functional_call``) on
    windows full of ties, where a gradient split between tied elements or sent to another one would differ by O(1)."""
    g = torch.Generator().manual_seed(0)
    model, K = Ties().train(training), 3
    forward = StackedForward(model, K)
    assert any(forward.relu_after_pool[training])
    params = {n: torch.stack([p.detach() for _ in range(K)]).clone() for n, p in model.named_parameters()}
    params["conv.weight"] = torch.randint(-2, 3, (K, 2, 2, 1, 1), generator=g).float()
    params["conv.bias"] = torch.randint(-1, 2, (K, 2), generator=g).float()
    for p in params.values():
        p.requires_grad_(True)
    x = torch.randint(-1, 2, (5, 2, 8, 8), generator=g).float()
    assert_each_configuration_is_the_model_s(forward, model, params, x, torch.randn(K, 5, 3, generator=g), rtol=1e-6, atol=1e-6)


def assert_each_configuration_is_the_model_s(
    forward: StackedForward, model: nn.Module, params: dict[str, torch.Tensor], x: torch.Tensor, w: torch.Tensor,
    rtol: float, atol: float,
) -> None:
    """``forward`` of the stacked ``params`` on ``x`` equals, for each configuration k, the model's own output
    (``functional_call`` on ``params[n][k]``) and, in training mode, every parameter's gradient of ``Σ out·w[k]``."""
    from torch.func import functional_call

    with torch.set_grad_enabled(model.training):
        out = forward(params, {}, x, None, [])
        for k in range(w.shape[0]):
            own = {n: p[k].detach().clone().requires_grad_(True) for n, p in params.items()}
            ref = functional_call(model, own, (x,))
            torch.testing.assert_close(out[k], ref, rtol=rtol, atol=atol)
            if model.training:
                grads = torch.autograd.grad((out[k] * w[k]).sum(), list(params.values()), retain_graph=True)
                own_grads = torch.autograd.grad((ref * w[k]).sum(), list(own.values()))
                for n, a, b in zip(params, grads, own_grads, strict=True):
                    torch.testing.assert_close(a[k], b, rtol=rtol, atol=atol, msg=lambda m, n=n: f"{n}: {m}")


@pytest.mark.parametrize("layout", ["kernel", "copies"])
@pytest.mark.parametrize("T", [1, 16, 33])
def test_short_attention_is_scaled_dot_product_attention_with_its_gradients(
    T: int, layout: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ShortAttention of packed (q, k, v) projections against F.scaled_dot_product_attention (math) per head in
    float64: output and gradient; and torch.autograd.gradcheck of its hand-written backward against finite
    differences — with the heads laid out by torch's private kernel, and by the copies used where it is absent."""
    from decaylab.engine.stacked import ShortAttention

    if layout == "copies":
        monkeypatch.delattr(torch, "_transform_bias_rescale_qkv")

    g = torch.Generator().manual_seed(T)
    heads, d = 3, 8
    qkv = torch.randn(6, T, 3 * heads * d, generator=g, dtype=torch.float64, requires_grad=True)
    out = ShortAttention.apply(qkv, heads)
    q, k, v = (t.unflatten(-1, (heads, d)).transpose(1, 2) for t in qkv.chunk(3, dim=-1))
    ref = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2)
    assert out.shape == (6, T, heads * d)
    assert torch.allclose(out, ref, rtol=1e-12, atol=1e-12)
    grad = torch.randn(out.shape, generator=g, dtype=torch.float64)
    (mine,), (theirs,) = torch.autograd.grad(out, qkv, grad), torch.autograd.grad(ref, qkv, grad)
    assert torch.allclose(mine, theirs, rtol=1e-10, atol=1e-12)
    assert torch.autograd.gradcheck(lambda x: ShortAttention.apply(x, heads), (qkv[:2].detach().requires_grad_(),))


def test_the_transformer_block_attends_through_short_attention(monkeypatch: pytest.MonkeyPatch) -> None:
    """T ≤ SHORT_SEQUENCE: the stacked block's attention is ShortAttention (training and, on the stack, evaluation —
    which a model with attention runs one configuration at a time unless told otherwise), and the stack still follows
    torch.optim (the parametrized test above); a sequence longer than the limit goes to the fused kernel, with the same
    curves."""
    import decaylab.engine.stacked as stacked_module

    monkeypatch.setattr(ModuleStack, "_evaluates_each", lambda self: False)
    calls: list[bool] = []
    apply = stacked_module.ShortAttention.apply
    monkeypatch.setattr(stacked_module.ShortAttention, "apply", lambda *a: calls.append(torch.is_grad_enabled()) or apply(*a))
    task = task_of(block, "tokens")
    stack = ModuleStack(task, HYPERS)
    assert stack.stacked is not None, stack.fallback
    calls.clear()
    short = stack.run()
    assert True in calls and False in calls
    monkeypatch.setattr(stacked_module, "SHORT_SEQUENCE", task.train[0].shape[1] - 1)
    calls.clear()
    stack = ModuleStack(task, HYPERS)
    assert stack.stacked is not None, stack.fallback  # the fused kernel in the stacked forward, not vmap
    fused = stack.run()
    assert calls == []
    for a, b in zip(short, fused, strict=True):
        assert_close(losses(a), losses(b))


class FoldedNorms(nn.Module):
    """LayerNorms whose affine folds into what follows — self-attention (both with biases), a bias-free Linear, a
    Linear with bias after a bias-free LayerNorm — and one that does not (its output is also added to the residual)."""

    def __init__(self, d: int = 8) -> None:
        super().__init__()
        self.ln_attn, self.attn = nn.LayerNorm(d), nn.MultiheadAttention(d, 2, batch_first=True)
        self.ln_fc, self.fc = nn.LayerNorm(d), nn.Linear(d, d, bias=False)
        self.ln_fc2, self.fc2 = nn.LayerNorm(d, bias=False), nn.Linear(d, d)
        self.ln_kept, self.head = nn.LayerNorm(d), nn.Linear(d, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ln_attn(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        x = x + self.fc(self.ln_fc(x))
        x = x + self.fc2(self.ln_fc2(x))
        h = self.ln_kept(x)
        return self.head(h + x).mean(dim=1)


@pytest.mark.parametrize("training", [True, False])
def test_layer_norm_affine_folded_into_the_next_layer_keeps_values_and_gradients(training: bool) -> None:
    """The LayerNorms whose only users are a Linear or self-attention fold their (random, per-configuration) affine
    into those layers' weights; outputs and every parameter's gradient equal the model's own per configuration, in
    float64 to 1e-10 (the same function; in float32 only the rounding differs, ~1e-6)."""
    g = torch.Generator().manual_seed(1)
    model, K = FoldedNorms().double().train(training), 3
    forward = StackedForward(model, K)
    assert sorted(str(n.target) for n in forward.folded_norms[training]) == ["ln_attn", "ln_fc", "ln_fc2"]
    params = {n: (torch.randn(K, *p.shape, generator=g, dtype=torch.float64) * 0.5
                  + (1.0 if ".weight" in n and "ln" in n else 0.0)).requires_grad_(True)
              for n, p in model.named_parameters()}
    x = torch.randn(5, 4, 8, generator=g, dtype=torch.float64)
    w = torch.randn(K, 5, 3, generator=g, dtype=torch.float64)
    assert_each_configuration_is_the_model_s(forward, model, params, x, w, rtol=1e-10, atol=1e-12)
