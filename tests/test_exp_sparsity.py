"""``sparsity``: L1 reaches exact zeros and the support, L2 does not; the paths equal scikit-learn's."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from decaylab.data.sparse import sparse_linear_data
from decaylab.experiments import get_experiment
from decaylab.experiments.sparsity import (
    error_bound,
    proximal_gd_batched,
    proximal_gd_sequential,
    sklearn_solutions,
    strengths,
)
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
    return opts, [ConfigResult.of(c, o) for c, o in zip(configs, outcomes)]


def test_data_have_the_stated_sparse_truth() -> None:
    data = sparse_linear_data(3, n_train=50, n_test=20, dim=30, n_nonzero=5)
    assert data.X_train.shape == (50, 30) and data.y_train.shape == (50,) and data.X_test.shape == (20, 30)
    assert int(data.support.sum()) == 5 and int((data.true_w == 0).sum()) == 25
    nz = data.true_w[data.support].abs()
    assert bool(((nz >= 1) & (nz <= 3)).all())
    again = sparse_linear_data(3, n_train=50, n_test=500, dim=30, n_nonzero=5)
    assert torch.equal(again.X_train, data.X_train) and torch.equal(again.true_w, data.true_w)  # n_test: no effect
    assert not torch.equal(sparse_linear_data(4, 50, 20, 30, 5).true_w, data.true_w)


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


def test_sklearn_comparison_fails_under_a_wrong_convention() -> None:
    """The check can fail: sklearn with alpha = λ/2 (plain MSE's convention) is a different path."""
    data = sparse_linear_data(0, 100, 0, 40, 4)
    lams = [0.05, 0.2]
    W, b, _ = proximal_gd_batched(data.X_train, data.y_train, lams, [0.0, 0.0], 1500)
    wrong, _ = sklearn_solutions("l1", data.X_train, data.y_train, [lam / 2 for lam in lams], 0.5)
    assert np.abs(W.numpy() - wrong).max() > 1e-2


def test_sequential_library_path_equals_batched_loop() -> None:
    """SGD + decaylab.attach(L1Prox) one at a time == the stacked loop with the engine's soft-threshold."""
    data = sparse_linear_data(2, 60, 0, 12, 3)
    pairs = [strengths(m, 0.1, 0.5) for m in ("l1", "enet", "l2")]
    W, b, _ = proximal_gd_batched(data.X_train, data.y_train, [p[0] for p in pairs], [p[1] for p in pairs], 150)
    for k, (l1, l2) in enumerate(pairs):
        w, bias, _ = proximal_gd_sequential(data.X_train, data.y_train, l1, l2, 150)
        torch.testing.assert_close(w, W[k], rtol=0, atol=1e-12)
        assert bias == pytest.approx(float(b[k]), abs=1e-12)
        assert torch.equal(w == 0, W[k] == 0)


def test_engine_l1_reaches_the_same_solution() -> None:
    """decaylab.engine's Hyper(l1=λ) (float32) ends where the float64 loop does."""
    from decaylab.engine import Hyper, Task, train
    from decaylab.experiments.sparsity import _hessian_eigs

    n, d, lam, epochs = 80, 16, 0.15, 1500
    fn = partial(sparse_linear_data, n_train=n, n_test=10, dim=d, n_nonzero=3)
    data = fn(0)
    lr = 1.0 / _hessian_eigs(data.X_train)[1]
    task = Task(data=fn, layers=(d, 1), batch_size=None, epochs=epochs, init_std=0.0)
    (out,) = train(task, [Hyper(seed=0, lr=lr, l1=lam)], engine="batched")
    W, b, _ = proximal_gd_batched(data.X_train, data.y_train, [lam], [0.0], epochs)
    train_loss = float(((data.X_train @ W[0] + b[0] - data.y_train) ** 2 / 2).mean())
    assert out.metrics["train_loss"] == pytest.approx(train_loss, rel=1e-4)
    assert out.metrics["w_norm"] == pytest.approx(float(W[0].norm()), rel=1e-4)
    assert error_bound(data.X_train, data.y_train, W[0], float(b[0]), lam, 0.0) < 1e-9


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
        (["--lambd", "0,1"], "The '--lambd' parameter of sparsity must be a float in (0, inf)"),
    ],
)
def test_bad_values_are_one_line_and_exit_2(cli: Any, args: list[str], message: str) -> None:
    code, out, err = cli("run", "sparsity", *args)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert message in err
