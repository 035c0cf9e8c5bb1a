"""The training engine: the batched engine equals the sequential reference, configuration by configuration.

Tolerance used throughout (float32): for every value ``a`` (batched) of a curve ``b`` (sequential),
``|a − b| ≤ 1e-5 · max(|b_e|, 1e-3 · max_e' |b_e'|)`` — 1e-5 relative, with an absolute floor of
1e-3 times the largest value of that curve of that configuration. The floor matters only for a
training loss fitted far below where it started (D2L without decay: from ~100 to ~1e-6): it is the
mean of squared residuals that are small differences of O(10) predictions and targets, so float32
rounding in them is relative to the predictions, not to the loss. NaN must match NaN.
"""

from __future__ import annotations

import functools
import math
import pickle
from functools import partial
from types import SimpleNamespace

import pytest
import torch

from decaylab.data.synthetic import d2l_linear_data
from decaylab.engine import (
    Hyper,
    Task,
    run_chunk,
    train,
    train_batched,
    train_sequential,
)
from decaylab.engine.batched import BatchedRun, run_batched_chunk
from decaylab.engine.semantics import initial_parameters, load_data, tensor_sum
from decaylab.engine.sequential import build_model
from decaylab.results import Outcome
from decaylab.rng import generator
from decaylab.validation import InvalidParameterError

RTOL, FLOOR = 1e-5, 1e-3


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny kernels: see decaylab.threads


# ---------------------------------------------------------------- data (module level: picklable)
def blobs(seed: int, n_train: int = 40, n_test: int = 30, dim: int = 6, classes: int = 3) -> SimpleNamespace:
    """Gaussian blobs around random centres; integer labels."""
    g = generator(seed, "data")
    centres = 1.5 * torch.randn(classes, dim, generator=g)

    def draw(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(0, classes, (n,), generator=g)
        return centres[y] + torch.randn(n, dim, generator=g), y

    (Xtr, ytr), (Xte, yte) = draw(n_train), draw(n_test)
    return SimpleNamespace(X_train=Xtr, y_train=ytr, X_test=Xte, y_test=yte)


def binary_blobs(seed: int) -> SimpleNamespace:
    d = blobs(seed, classes=2)
    return SimpleNamespace(
        X_train=d.X_train, y_train=d.y_train.float()[:, None], X_test=d.X_test, y_test=d.y_test.float()[:, None]
    )


def smooth_regression(seed: int, n_train: int = 36, n_test: int = 24, dim: int = 5, out: int = 2) -> SimpleNamespace:
    g = generator(seed, "data")
    R = torch.randn(dim, out, generator=g)
    X = torch.randn(n_train + n_test, dim, generator=g)
    Y = torch.tanh(X @ R) + 0.1 * torch.randn(n_train + n_test, out, generator=g)
    return SimpleNamespace(X_train=X[:n_train], y_train=Y[:n_train], X_test=X[n_train:], y_test=Y[n_train:])


D2L = partial(d2l_linear_data, n_train=20, n_test=100, dim=200)


# ---------------------------------------------------------------- comparison
def assert_outcomes_close(got: list[Outcome], want: list[Outcome]) -> None:
    assert len(got) == len(want)
    for k, (a, b) in enumerate(zip(got, want, strict=True)):
        assert a.status == b.status, k
        assert a.diverged_epoch == b.diverged_epoch, k
        assert a.curves.keys() == b.curves.keys()
        for name in b.curves:
            floor = FLOOR * max((abs(v) for v in b.curves[name] if not math.isnan(v)), default=0.0)
            for e, (x, y) in enumerate(zip(a.curves[name], b.curves[name], strict=True)):
                if math.isnan(y):
                    assert math.isnan(x), (k, name, e)
                elif x != y:  # (equal infinities pass)
                    assert abs(x - y) <= RTOL * max(abs(y), floor), (k, name, e, x, y)
        assert a.metrics.keys() == b.metrics.keys()


def assert_outcomes_equal(got: Outcome, want: Outcome) -> None:
    assert got.status == want.status
    assert got.curves.keys() == want.curves.keys()
    for name in want.curves:
        assert got.curves[name] == want.curves[name], name  # bit for bit (no NaN in finite runs)


# ---------------------------------------------------------------- the exactness matrix
def _case(name: str) -> tuple[Task, list[Hyper]]:
    if name == "d2l_sgd_l2":
        task = Task(data=D2L, layers=(200, 1), batch_size=5, epochs=15)
        return task, [Hyper(seed=s, lr=0.003, l2=lam) for s in (0, 1) for lam in (0.0, 3.0)] + [Hyper(seed=0, lr=0.01, l2=10.0)]
    if name == "d2l_momentum_decoupled_l1":
        task = Task(data=D2L, layers=(200, 1), batch_size=5, epochs=20, momentum=0.9, init_std=0.1)
        return task, [
            Hyper(seed=0, lr=0.001, decoupled=1.0),
            Hyper(seed=1, lr=0.002, l1=0.5),
            Hyper(seed=0, lr=0.001, l2=1.0, decoupled=2.0, l1=0.1),
            Hyper(seed=2, lr=0.0005),
        ]
    cls = dict(data=blobs, layers=(6, 16, 12, 3), loss="cross_entropy", batch_size=8, epochs=4, init="torch")
    hypers_sgd = [
        Hyper(seed=0, lr=0.1, l2=0.01, dropout=(0.2, 0.5), noise=0.3),
        Hyper(seed=1, lr=0.05, dropout=(0.0, 0.1), noise=0.0),
        Hyper(seed=0, lr=0.2, l1=0.01, dropout=(0.5, 0.0), noise=1.0),
        Hyper(seed=0, lr=0.1, decoupled=0.1, dropout=(1.0, 0.3), noise=0.1),
        Hyper(seed=2, lr=0.1, l2=0.001, l1=0.001, dropout=(0.3, 0.3), noise=0.5),
    ]
    if name == "mlp_sgd_dropout_noise":
        return Task(**cls, dropout=True, noise=True), hypers_sgd
    if name == "mlp_momentum_dropout":
        hypers = [Hyper(h.seed, h.lr / 2, h.l2, h.decoupled, h.l1, h.dropout) for h in hypers_sgd]
        return Task(**cls, momentum=0.9, dropout=True), hypers
    if name == "mlp_adam_noise":
        task = Task(**cls, optimizer="adam", noise=True)
        return task, [Hyper(seed=s, lr=lr, l2=l2, noise=sig) for s, lr, l2, sig in
                      [(0, 1e-3, 0.0, 0.0), (1, 3e-3, 1e-2, 0.5), (0, 1e-2, 1e-3, 0.1), (3, 3e-3, 0.0, 1.0)]]
    if name == "mlp_adamw_dropout_decay_bias":
        task = Task(**cls, optimizer="adam", dropout=True, decay_bias=True, betas=(0.8, 0.99), eps=1e-6)
        return task, [Hyper(seed=s, lr=lr, decoupled=wd, l1=l1, l2=l2, dropout=(p, p / 2)) for s, lr, wd, l1, l2, p in
                      [(0, 3e-3, 0.1, 0.0, 0.0, 0.2), (1, 1e-2, 1.0, 1e-3, 0.0, 0.5), (0, 1e-3, 0.0, 0.0, 0.0, 0.0),
                       (2, 3e-3, 0.5, 0.0, 1e-2, 0.9)]]
    if name == "mlp_tanh_regression_fullbatch":
        task = Task(data=smooth_regression, layers=(5, 8, 2), activation="tanh", epochs=15, init="normal", init_std=0.5)
        return task, [Hyper(seed=s, lr=lr, l2=l2) for s, lr, l2 in [(0, 0.1, 0.0), (1, 0.05, 0.1), (0, 0.2, 0.01)]]
    if name == "mlp_sigmoid_bce":
        task = Task(data=binary_blobs, layers=(6, 10, 1), activation="sigmoid", loss="bce", batch_size=7, epochs=5,
                    init="torch", momentum=0.5, dropout=True)
        rows = [(0, 0.5, 0.0, 0.1), (1, 0.3, 0.01, 0.0), (0, 1.0, 0.0, 0.4)]
        return task, [Hyper(seed=s, lr=lr, l2=l2, dropout=(p,)) for s, lr, l2, p in rows]
    raise KeyError(name)


CASES = [
    "d2l_sgd_l2",
    "d2l_momentum_decoupled_l1",
    "mlp_sgd_dropout_noise",
    "mlp_momentum_dropout",
    "mlp_adam_noise",
    "mlp_adamw_dropout_decay_bias",
    "mlp_tanh_regression_fullbatch",
    "mlp_sigmoid_bce",
]

@functools.cache
def _sequential(name: str) -> tuple[Task, list[Hyper], list[Outcome]]:
    """The case and its sequential reference outcomes, computed once per module."""
    task, hypers = _case(name)
    return task, hypers, train_sequential(task, hypers)


@pytest.mark.parametrize("chunk", [1, 3, None], ids=["chunk1", "chunk3", "chunkK"])
@pytest.mark.parametrize("name", CASES)
def test_batched_equals_sequential(name: str, chunk: int | None) -> None:
    task, hypers, want = _sequential(name)
    got = train_batched(task, hypers, chunk=chunk or len(hypers))
    assert_outcomes_close(got, want)
    assert all(o.status == "done" for o in want)


@pytest.mark.parametrize("name", ["mlp_sgd_dropout_noise", "mlp_adamw_dropout_decay_bias", "mlp_sigmoid_bce"])
def test_autograd_backward_equals_sequential(name: str) -> None:
    task, hypers, want = _sequential(name)
    assert_outcomes_close(run_batched_chunk(task, hypers, backward="autograd"), want)


def test_full_d2l_experiment_matches() -> None:
    """The D2L weight-decay experiment as in the book: 100 epochs, batch 5, lr 0.003."""
    task = Task(data=D2L, layers=(200, 1), batch_size=5, epochs=100)
    hypers = [Hyper(seed=0, lr=0.003, l2=lam) for lam in (0.0, 3.0)] + [Hyper(seed=7, lr=0.003, l2=1.0)]
    want = train_sequential(task, hypers)
    assert_outcomes_close(train_batched(task, hypers, chunk=3), want)
    # weight decay shrinks the weights and the gap between train and test (D2L's figure)
    assert want[1].metrics["w_norm"] < want[0].metrics["w_norm"] / 10
    assert want[1].metrics["test_loss"] < want[0].metrics["test_loss"]


def test_single_configuration_is_bit_identical_to_reference() -> None:
    task, hypers, want = _sequential("d2l_sgd_l2")
    for h, w in zip(hypers[:2], want[:2], strict=True):
        assert_outcomes_equal(run_batched_chunk(task, [h])[0], w)


# ---------------------------------------------------------------- semantics
def test_initial_parameters_follow_the_stated_draws() -> None:
    task = Task(data=blobs, layers=(6, 4, 3), init="normal", init_std=0.5)
    g = generator(11, "init")
    W1 = torch.normal(0.0, 0.5, (6, 4), generator=g)
    W2 = torch.normal(0.0, 0.5, (4, 3), generator=g)
    (a, b1), (c, b2) = initial_parameters(task, 11)
    assert torch.equal(a, W1) and torch.equal(c, W2) and not b1.any() and not b2.any()
    task = Task(data=blobs, layers=(6, 4, 3), init="torch")
    g = generator(11, "init")
    bound = 1 / math.sqrt(6)
    W1 = torch.rand((6, 4), generator=g) * (2 * bound) - bound
    b1 = torch.rand((4,), generator=g) * (2 * bound) - bound
    (a, b), _ = initial_parameters(task, 11)
    assert torch.equal(a, W1) and torch.equal(b, b1) and a.abs().max() <= bound
    model = build_model(task, Hyper(seed=11, lr=0.1))
    assert torch.equal(model[0].weight, W1.T)


def test_zero_dropout_and_zero_noise_change_nothing() -> None:
    """Dropout layers with p = 0 and noise with σ = 0 still draw, on their own streams: same numbers."""
    base = Task(data=blobs, layers=(6, 16, 12, 3), loss="cross_entropy", batch_size=8, epochs=3)
    with_layers = Task(**{**base.__dict__, "dropout": True, "noise": True})
    hypers = [Hyper(seed=0, lr=0.1), Hyper(seed=1, lr=0.2, l2=0.01)]
    for a, b in zip(run_batched_chunk(with_layers, hypers), run_batched_chunk(base, hypers), strict=True):
        assert_outcomes_equal(a, b)


def test_batch_order_and_curves_are_per_seed() -> None:
    """Configurations with the same seed and numbers give identical outcomes wherever they sit."""
    task, hypers, _ = _sequential("mlp_sgd_dropout_noise")
    alone = run_batched_chunk(task, [hypers[0]])[0]
    got = run_batched_chunk(task, [hypers[4], hypers[0], hypers[1], hypers[0]])
    assert_outcomes_close([got[1], got[3]], [alone, alone])
    assert got[1].curves == got[3].curves


def test_outcome_layout() -> None:
    task, hypers, want = _sequential("mlp_sgd_dropout_noise")
    out = want[0]
    assert out.curves["epoch"] == [1, 2, 3, 4]
    assert set(out.curves) == {"epoch", "train_loss", "test_loss", "w_norm", "train_acc", "test_acc"}
    assert out.metrics == {k: v[-1] for k, v in out.curves.items() if k != "epoch"}


# ---------------------------------------------------------------- isolation
def _divergence_case() -> tuple[Task, list[Hyper], Hyper]:
    task = Task(data=blobs, layers=(6, 16, 12, 3), loss="cross_entropy", batch_size=8, epochs=5, momentum=0.9,
                dropout=True, init="torch")
    hypers = [
        Hyper(seed=0, lr=0.05, l2=0.01, dropout=(0.2, 0.5)),
        Hyper(seed=0, lr=1e6, dropout=(0.2, 0.5)),  # diverges in its first epoch
        Hyper(seed=1, lr=0.1, dropout=(0.1, 0.0)),
        Hyper(seed=0, lr=0.02, l1=0.01, dropout=(0.0, 0.3)),
    ]
    return task, hypers, Hyper(seed=0, lr=0.05, dropout=(0.2, 0.5))


def test_diverging_configuration_is_frozen_and_marked() -> None:
    task, hypers, _ = _divergence_case()
    got = run_batched_chunk(task, hypers)
    want = train_sequential(task, hypers)
    assert got[1].status == want[1].status == "diverged"
    assert got[1].diverged_epoch == want[1].diverged_epoch == 1
    assert all(math.isnan(v) for v in got[1].curves["train_loss"][1:])
    assert all(math.isnan(v) for v in got[1].metrics.values())
    assert_outcomes_close(got, want)


def test_divergence_leaves_neighbours_bit_for_bit_unchanged() -> None:
    task, hypers, tame = _divergence_case()
    with_nan = run_batched_chunk(task, hypers)
    without = run_batched_chunk(task, [tame if i == 1 else h for i, h in enumerate(hypers)])
    for i in (0, 2, 3):
        assert_outcomes_equal(with_nan[i], without[i])
    # and, to float32 rounding, the values they get in a chunk without that configuration at all
    assert_outcomes_close([with_nan[i] for i in (0, 2, 3)], run_batched_chunk(task, [hypers[i] for i in (0, 2, 3)]))


def test_divergence_in_a_linear_sweep() -> None:
    task = Task(data=D2L, layers=(200, 1), batch_size=5, epochs=6)
    hypers = [Hyper(seed=0, lr=0.003, l2=1.0), Hyper(seed=0, lr=10.0), Hyper(seed=0, lr=0.003)]
    got, want = run_batched_chunk(task, hypers), train_sequential(task, hypers)
    assert got[1].status == "diverged" and got[1].diverged_epoch == want[1].diverged_epoch
    assert_outcomes_close(got, want)


# ---------------------------------------------------------------- train(), callbacks, pickling
def test_train_orders_outcomes_and_reports_chunks() -> None:
    task, hypers, want = _sequential("mlp_adam_noise")
    seen: list[list[int]] = []
    got = train(task, hypers, chunk=2, on_chunk_done=lambda idx, outs: seen.append(list(idx)) or None)
    assert sorted(i for chunk in seen for i in chunk) == list(range(len(hypers)))
    assert all(len(c) <= 2 for c in seen)
    # same-seed configurations are trained together
    assert any(sorted(c) == [0, 2] for c in seen)
    assert_outcomes_close(got, want)
    seq = train(task, hypers, engine="sequential")
    for a, b in zip(seq, want, strict=True):
        assert_outcomes_equal(a, b)


def test_run_chunk_is_picklable_for_remote_backends() -> None:
    task, hypers, want = _sequential("mlp_tanh_regression_fullbatch")
    fn, args = pickle.loads(pickle.dumps((run_chunk, (task, hypers, "batched"))))
    assert_outcomes_close(fn(*args), want)


def test_batched_run_accepts_hypers_in_any_seed_order() -> None:
    task, hypers, want = _sequential("d2l_momentum_decoupled_l1")
    data = {s: load_data(task, s) for s in {h.seed for h in hypers}}
    run = BatchedRun(task, hypers[::-1], data)
    assert [g.seed for g in run.groups] == sorted({h.seed for h in hypers})
    assert_outcomes_close(run.run(), want[::-1])


# ---------------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"layers": (3,)}, "The 'layers' parameter of Task must be a tuple of at least two ints"),
        ({"loss": "mse"}, "The 'loss' parameter of Task must be one of {'half_mse', 'cross_entropy', 'bce'}. Got 'mse'."),
        ({"optimizer": "adam", "momentum": 0.9}, "The 'momentum' parameter of Task must be 0 with optimizer='adam'"),
        ({"batch_size": 0}, "The 'batch_size' parameter of Task must be an int in [1, inf). Got 0."),
        ({"loss": "bce", "layers": (4, 2)}, "The 'layers' parameter of Task must be a tuple ending in 1 output"),
        ({"betas": (0.9, 1.0)}, "The 'betas' parameter of Task must be a float in [0, 1). Got 1.0."),
    ],
)
def test_task_validation(kwargs: dict, message: str) -> None:
    args = {"data": blobs, "layers": (6, 3), **kwargs}
    with pytest.raises(InvalidParameterError) as err:
        Task(**args)
    assert str(err.value).startswith(message)


def test_hyper_validation() -> None:
    with pytest.raises(InvalidParameterError, match=r"The 'lr' parameter of Hyper must be a float in \(0, inf\)"):
        Hyper(seed=0, lr=0.0)
    with pytest.raises(InvalidParameterError, match=r"The 'dropout' parameter of Hyper must be a float in \[0, 1\]"):
        Hyper(seed=0, lr=0.1, dropout=(1.5,))
    task = Task(data=blobs, layers=(6, 4, 3), loss="cross_entropy")
    with pytest.raises(InvalidParameterError, match="unless Task.dropout=True"):
        train(task, [Hyper(seed=0, lr=0.1, dropout=(0.5,))])
    with pytest.raises(InvalidParameterError, match="unless Task.noise=True"):
        train(task, [Hyper(seed=0, lr=0.1, noise=0.5)])
    with pytest.raises(InvalidParameterError, match="must be one of {'batched', 'sequential'}"):
        train(task, [Hyper(seed=0, lr=0.1)], engine="vmap")


def test_data_shapes_are_checked() -> None:
    task = Task(data=blobs, layers=(5, 3), loss="cross_entropy")
    with pytest.raises(InvalidParameterError, match=r"X_train of shape \(n, 5\)"):
        train(task, [Hyper(seed=0, lr=0.1)], chunk=1)


def test_tensor_sum_adds_left_to_right_as_python_sum_and_rejects_no_terms() -> None:
    # float32: 1 + 1e8 rounds to 1e8, so only the left-to-right order gives 0 (right to left gives 1)
    terms = [torch.tensor([1.0, 3.0]), torch.tensor([1e8, 1e8]), torch.tensor([-1e8, -1e8])]
    total = tensor_sum(iter(terms))
    assert torch.equal(total, sum(terms)) and total.tolist() == [0.0, 0.0]
    one = torch.tensor(2.5, dtype=torch.float64)
    assert torch.equal(tensor_sum([one]), one) and tensor_sum([one]).dtype == torch.float64
    with pytest.raises(InvalidParameterError, match="'terms' parameter of tensor_sum must be at least one tensor"):
        tensor_sum([])  # Python's sum gives the int 0, which torch.sqrt rejects


@pytest.mark.parametrize("decay_bias", [False, True])
def test_both_mlp_engines_decay_what_param_groups_decays(decay_bias: bool) -> None:
    """The MLP engines ask decaylab.policy (decay_multipliers, batched and sequential alike); against an independent
    reference: decaylab.param_groups of the same MLP as an nn.Sequential (other names, a real module)."""
    import decaylab
    from decaylab.engine.semantics import decay_multipliers
    from decaylab.engine.sequential import _split_parameters, build_model

    task = Task(data=D2L, layers=(200, 8, 1), batch_size=5, epochs=1, decay_bias=decay_bias)
    policy = decaylab.DecayPolicy(exclude_bias=False, exclude_1d=False) if decay_bias else None
    linears = [torch.nn.Linear(200, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1)]
    groups = decaylab.param_groups(torch.nn.Sequential(*linears), 1.0, policy=policy)
    decayed = {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    layers = [m for m in linears if isinstance(m, torch.nn.Linear)]
    expected = [float(id(t) in decayed) for t in [m.weight for m in layers] + [m.bias for m in layers]]
    assert decay_multipliers(task) == expected
    model = build_model(task, Hyper(seed=0, lr=0.1))
    decayed_seq, rest, _ = _split_parameters(task, model)
    names = {id(p): n for n, p in model.named_parameters()}
    assert [names[id(t)] for t in decayed_seq] == (["0.weight", "2.weight", "0.bias", "2.bias"] if decay_bias else ["0.weight", "2.weight"])
    assert [names[id(t)] for t in rest] == ([] if decay_bias else ["0.bias", "2.bias"])
