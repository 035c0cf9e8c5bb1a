"""``sparsity``: L1 reaches exact zeros and the support, L2 does not; the paths equal scikit-learn's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from decaylab.closed_form import hessian_eigs
from decaylab.data.sparse import sparse_linear_data
from decaylab.lab.experiments import get_experiment
from decaylab.lab.experiments.sparsity import sklearn_solutions, strengths
from decaylab.results import ConfigResult

EXP = get_experiment("sparsity")
SMALL = {"lambd": "log:0.01:3:10", "epochs": "1500", "n_train": "100", "n_test": "200", "dim": "40",
         "n_nonzero": "4", "seed": "0,1"}


pytestmark = pytest.mark.usefixtures("one_thread")  # small matrices: see decaylab.threads


def small_opts(**over: str) -> dict[str, Any]:
    texts = {o.name: o.default for o in EXP.options} | SMALL | over
    return {o.name: o.parse(texts[o.name], o.flag, EXP.name) for o in EXP.options}


@pytest.fixture(scope="module")
def small_run() -> tuple[dict[str, Any], list[ConfigResult]]:
    opts = small_opts()
    configs = EXP.configs(opts)
    outcomes = EXP.run_chunk(opts, configs, "batched")
    return opts, [ConfigResult.of(c, o) for c, o in zip(configs, outcomes, strict=True)]


def test_data_have_the_stated_sparse_truth() -> None:
    data = sparse_linear_data(3, n_train=50, n_test=20, dim=30, n_nonzero=5)
    assert data.X_train.shape == (50, 30) and data.y_train.shape == (50,) and data.X_test.shape == (20, 30)
    assert int(data.support.sum()) == 5 and int((data.true_w == 0).sum()) == 25
    nz = data.true_w[data.support].abs()
    assert bool(((nz >= 1) & (nz <= 3)).all())
    again = sparse_linear_data(3, n_train=50, n_test=500, dim=30, n_nonzero=5)
    assert torch.equal(again.X_train, data.X_train) and torch.equal(again.true_w, data.true_w)  # n_test: no effect
    assert not torch.equal(sparse_linear_data(4, 50, 20, 30, 5).true_w, data.true_w)


@pytest.mark.claim
def test_claim_l1_selects_the_support_l2_keeps_every_coefficient(small_run: Any) -> None:
    opts, results = small_run
    summary = EXP.summarize(results, opts)
    l1, l2 = summary["by_method"]["l1"], summary["by_method"]["l2"]
    d, k = opts["dim"], opts["n_nonzero"]
    assert l1["max_exact_zeros"] >= d - k  # exact float zeros, not small numbers
    assert l1["exact_support_range"] is not None  # for every seed, some λ selects exactly the true support
    assert l1["best_f1"]["precision"] == 1 and l1["best_f1"]["recall"] == 1
    assert l2["max_exact_zeros"] == 0  # L2 shrinks but never reaches zero
    for r in results:
        if r.params["method"] == "l2":
            assert r.metrics["precision"] == pytest.approx(k / d) and r.metrics["recall"] == 1
    assert all(summary["claims"].values())


@pytest.mark.claim
def test_l1_and_enet_paths_equal_sklearn(small_run: Any) -> None:
    """Tolerance 1e-8: both sides certify their own error (‖G‖/μ, see the module docstring) and the two
    bounds must cover the difference; 1e-8 is far below any coefficient or λ step and far above the
    ~1e-11 reached, so the test is stable yet fails if the conventions were off (alpha = λ/2 moves w by ~λ)."""
    _, results = small_run
    for r in results:
        m = r.metrics
        assert m["sklearn_max_abs_diff"] <= 1e-8, r.params
        assert m["sklearn_max_abs_diff"] <= m["error_bound"] + m["sklearn_error_bound"] + 1e-12, r.params
        assert m["sklearn_same_zeros"] == 1, r.params
        assert m["error_bound"] < 1e-9


def coefficients(results: list[ConfigResult] | list[Any]) -> np.ndarray:
    return np.array([r.curves["coef"] for r in results])


def test_sklearn_comparison_fails_under_a_wrong_convention() -> None:
    """The check can fail: sklearn with alpha = λ/2 (plain MSE's convention) is a different path."""
    opts = small_opts(lambd="0.05,0.2", methods="l1", seed="0")
    configs = EXP.configs(opts)
    W = coefficients(EXP.run_chunk(opts, configs, "batched"))
    data = EXP.task(opts).data(0)
    wrong, _ = sklearn_solutions("l1", data.X_train, data.y_train, [c["lambd"] / 2 for c in configs], 0.5)
    assert np.abs(W - wrong).max() > 1e-2


def test_sequential_engine_equals_batched() -> None:
    """--engine sequential (nn.Linear + torch.optim.SGD, one at a time) == --engine batched, to float64 rounding."""
    opts = small_opts(lambd="0.03,0.3", epochs="150", n_train="60", n_test="20", dim="12", n_nonzero="3", seed="2")
    configs = EXP.configs(opts)
    batched = EXP.run_chunk(opts, configs, "batched")
    sequential = EXP.run_chunk(opts, configs, "sequential")
    np.testing.assert_allclose(coefficients(sequential), coefficients(batched), rtol=0, atol=1e-12)
    assert (coefficients(sequential) == 0).tolist() == (coefficients(batched) == 0).tolist()
    for a, b in zip(sequential, batched, strict=True):
        assert a.metrics["train_loss"] == pytest.approx(b.metrics["train_loss"], rel=1e-12)


def test_library_path_reaches_the_engines_iterate() -> None:
    """A user's loop — SGD(weight_decay=l2) + decaylab.attach(L1Prox(l1)), float64 — ends where the engine does."""
    from torch import nn

    from decaylab.steps import L1Prox, attach

    opts = small_opts(lambd="0.1", epochs="150", n_train="60", n_test="20", dim="12", n_nonzero="3", seed="2")
    configs = EXP.configs(opts)
    engine = EXP.run_chunk(opts, configs, "batched")
    data = EXP.task(opts).data(2)
    X, y = data.X_train, data.y_train.reshape(-1, 1)
    L = hessian_eigs(X)[1]
    for c, out in zip(configs, engine, strict=True):
        l1, l2 = strengths(c["method"], c["lambd"], opts["l1_ratio"])
        model = nn.Linear(X.shape[1], 1, dtype=torch.float64)
        with torch.no_grad():
            model.weight.zero_()
            model.bias.zero_()
        opt = torch.optim.SGD(
            [{"params": [model.weight], "weight_decay": l2}, {"params": [model.bias], "weight_decay": 0.0}],
            lr=1.0 / (L + l2),
        )
        with attach(opt, L1Prox(l1), model=model):  # the default policy: the weight, not the bias
            for _ in range(opts["epochs"]):
                opt.zero_grad(set_to_none=True)
                ((model(X) - y) ** 2 / 2).mean().backward()
                opt.step()
        w = model.weight.detach().reshape(-1).numpy()
        np.testing.assert_allclose(w, out.curves["coef"], rtol=0, atol=1e-12)
        assert ((w == 0) == (np.array(out.curves["coef"]) == 0)).all()


@pytest.mark.claim
def test_float32_engine_reaches_the_same_solution() -> None:
    """The same Task in the engine's default float32 ends where float64 does, to float32 accuracy."""
    from decaylab.engine import Hyper, run_chunk

    opts = small_opts(lambd="0.15", methods="l1", epochs="1500", n_train="80", n_test="10", dim="16",
                      n_nonzero="3", seed="0")
    (exact,) = EXP.run_chunk(opts, EXP.configs(opts), "batched")
    task = EXP.task(opts)
    task32 = type(task)(**{**task.__dict__, "dtype": "float32"})
    lr = 1.0 / hessian_eigs(task.data(0).X_train)[1]
    (out,) = run_chunk(task32, [Hyper(seed=0, lr=lr, l1=0.15)], "batched")
    assert out.metrics["train_loss"] == pytest.approx(exact.metrics["train_loss"], rel=1e-4)
    assert out.metrics["w_norm"] == pytest.approx(exact.metrics["w_norm"], rel=1e-4)
    assert exact.metrics["error_bound"] < 1e-9


def test_cli_json(cli_json: Any, tmp_path: Path) -> None:
    doc = cli_json("run", "sparsity", "--lambd", "log:0.02:2:6", "--dim", "20", "--n-train", "60",
                   "--n-test", "50", "--n-nonzero", "3", "--epochs", "800", "--out", str(tmp_path / "run"))
    assert doc["experiment"] == "sparsity" and doc["status"] == "finished"
    assert len(doc["configs"]) == 3 * 6
    first = doc["configs"][0]
    assert set(first["params"]) == {"method", "lambd", "seed"}
    assert len(first["curves"]["coef"]) == 20 and len(first["curves"]["coef_sklearn"]) == 20
    assert doc["summary"]["claims"]["l2_has_no_exact_zeros"] is True
    assert doc["summary"]["claims"]["matches_sklearn_paths"] is True
    for name in ("paths.png", "support.png", "results.json"):
        assert (tmp_path / "run" / name).stat().st_size > 0


@pytest.mark.parametrize(
    "args,message",
    [
        (["--l1-ratio", "1"], "The '--l1-ratio' parameter of sparsity must be a float in (0, 1). Got '1'."),
        (["--methods", "l1,l3"], "The '--methods' parameter of sparsity must be a comma list of"),
        (["--dim", "5", "--n-nonzero", "6"], "The '--n-nonzero' parameter of sparsity must be an int in [1, dim=5]"),
        (["--lambd", "0,1"], "The '--lambd' parameter of sparsity must be a float in (0, 1e+18]"),
    ],
)
def test_bad_values_are_one_line_and_exit_2(cli: Any, args: list[str], message: str) -> None:
    code, out, err = cli("run", "sparsity", "--no-figures", *args)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert message in err
