"""l2-vs-decay: (a) = (b) to rounding; momentum and Adam part; Adam+L2 barely decays large-gradient weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import decaylab
from decaylab.engine import Hyper, run_chunk
from decaylab.engine.semantics import epoch_batches, load_data
from decaylab.engine.sequential import build_model
from decaylab.lab.experiments import get_experiment
from decaylab.lab.experiments.dropout_mlp import train_epoch
from decaylab.lab.experiments.l2_vs_decay import HIST_EDGES, adam_l2_effective_decay, effective_decay_stats
from decaylab.results import ConfigResult
from decaylab.rng import generator
from experiment_helpers import options, train

EXP = get_experiment("l2-vs-decay")
SMALL = dict(hidden="64,64", epochs="15", n_test="200", seed="0,1")


pytestmark = pytest.mark.usefixtures("one_thread")  # small matrices: see decaylab.threads


@pytest.fixture(scope="module")
def small() -> tuple[dict[str, Any], list[ConfigResult], dict[str, Any]]:
    opts = options(EXP, **SMALL)
    results = train(EXP, opts)
    return opts, results, EXP.summarize(results, opts)


@pytest.mark.claim
def test_claims(small: Any) -> None:
    _, _, summary = small
    row = summary["by_wd"][0]
    assert row["claims"]["holds"] and summary["holds"], row["claims"]
    assert row["sgd"]["max_rel_diff"] < 1e-4  # (a) = (b): rounding only
    assert row["momentum"]["max_rel_diff"] > 0.03 and row["adam"]["max_rel_diff"] > 0.1  # they part
    # momentum: coupled L2 accumulates in the buffer (decay ηλ per step), decoupled gives η(1−μ)λ
    assert row["momentum"]["w_norm_momentum-l2"] < 0.97 * row["momentum"]["w_norm_momentum-decoupled"]
    # with the same λ, Adam+L2 decays far harder than AdamW (√v̂ ≪ 1 for every weight)
    assert row["adam"]["w_norm_adam-l2"] < 0.9 * row["adam"]["w_norm_adamw"]
    eff = row["adam_l2_effective_decay"]
    assert eff["top_bottom_ratio"] < 0.01 and eff["eff_decay_decades"] > 2


@pytest.mark.claim
def test_effective_decay_falls_with_the_second_moment(small: Any) -> None:
    _, results, _ = small
    for r in (r for r in results if r.params["variant"] == "adam-l2"):
        sq, eff = r.curves["decile_sqrt_vhat"], r.curves["decile_eff_decay"]
        assert all(a < b for a, b in zip(sq, sq[1:], strict=False)) and all(a > b for a, b in zip(eff, eff[1:], strict=False))
        assert sum(r.curves["eff_decay_counts"]) == 64 * 64 + 64 * 64 + 64 * 10
        layers = [r.curves[f"eff_decay_counts_layer{k}"] for k in (1, 2, 3)]
        np.testing.assert_array_equal(np.sum(layers, axis=0), r.curves["eff_decay_counts"])


def test_effective_decay_stats_on_known_moments() -> None:
    v_hat = torch.logspace(-10, -2, 1000, dtype=torch.float64)  # √v̂ from 1e-5 to 0.1
    stats = effective_decay_stats([v_hat[:600], v_hat[600:]], [torch.ones(600), torch.ones(400)], lr=1e-3, wd=0.01)
    assert sum(stats["counts"]) == 1000 and len(stats["counts"]) == len(HIST_EDGES) - 1
    assert stats["decile_eff_decay"][0] == pytest.approx(1e-5 / np.sqrt(float(v_hat[49:51].mean())), rel=0.05)
    assert stats["top_bottom_ratio"] == pytest.approx(10 ** (-4 * 0.9), rel=0.05)  # deciles 0.8 decades apart in v̂
    assert stats["frac_below_adamw"] == 0.0  # √v̂ < 1 everywhere: each weight decays more than lr·wd
    assert stats["eff_decay_decades"] == pytest.approx(4 * 0.98, rel=0.02)


def _torch_adam(task: Any, l2: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """A plain ``torch.optim.Adam`` loop over ``decaylab.param_groups`` (coupled ``weight_decay`` on the weights):
    all weights, their v̂ (from Adam's own state), and both per weight matrix."""
    model = build_model(task, Hyper(seed=seed, lr=1e-3))
    opt = torch.optim.Adam(decaylab.param_groups(model, l2), lr=1e-3, betas=task.betas, eps=task.eps)
    data, order = load_data(task, seed), generator(seed, "order")
    for _ in range(task.epochs):
        train_epoch(model, opt, data, task.batch_size, order)
    weights = [m.weight for m in model.modules() if isinstance(m, torch.nn.Linear)]
    v_hats = [opt.state[w]["exp_avg_sq"] / (1 - task.betas[1] ** float(opt.state[w]["step"])) for w in weights]
    matrices = [w.detach() for w in weights]
    return torch.cat([w.reshape(-1) for w in matrices]), torch.cat([v.reshape(-1) for v in v_hats]), matrices, v_hats


@pytest.mark.parametrize("engine", ["batched", "sequential"])
def test_effective_decay_from_the_engine_state_equals_torch_adams(engine: str) -> None:
    """The statistics the experiment reads from the engine's optimizer state, against torch.optim.Adam's own."""
    opts = options(EXP, **SMALL)
    task = EXP.task(opts, "adam", effective_decay=True)
    hyper = Hyper(seed=1, lr=1e-3, l2=0.005)
    (outcome,) = run_chunk(task, [hyper], engine)
    got = adam_l2_effective_decay(task, hyper, outcome)
    _, _, matrices, v_hats = _torch_adam(task, 0.005, seed=1)
    want = effective_decay_stats(v_hats, matrices, 1e-3, 0.005, task.eps)
    for key in ("eff_decay_median", "eff_decay_p01", "eff_decay_p99", "top_bottom_ratio", "frac_below_adamw"):
        assert got[key] == pytest.approx(want[key], rel=1e-3, abs=1e-6), key
    np.testing.assert_allclose(got["decile_sqrt_vhat"], want["decile_sqrt_vhat"], rtol=1e-3)
    np.testing.assert_allclose(got["decile_abs_w"], want["decile_abs_w"], rtol=1e-3)
    # a histogram bin may gain or lose a weight sitting on its edge; no more than a handful
    assert np.abs(np.subtract(got["counts"], want["counts"])).sum() <= 8


@pytest.mark.claim
def test_large_gradient_weights_keep_their_size_under_adam_l2() -> None:
    """The consequence, measured: Adam+L2 against plain Adam from the same start and batches.

    Weights in the bottom v̂ decile end far smaller than without L2; weights in the top decile barely change.
    """
    opts = options(EXP, **SMALL)
    task = EXP.task(opts, "adam", effective_decay=True)
    lam = 0.005
    hyper = Hyper(seed=0, lr=1e-3, l2=lam)
    stats = adam_l2_effective_decay(task, hyper, run_chunk(task, [hyper])[0])
    w_l2, v_hat, _, _ = _torch_adam(task, lam)
    w_plain, _, _, _ = _torch_adam(task, 0.0)
    order = torch.argsort(v_hat)
    deciles = torch.tensor_split(order, 10)
    kept = [float(w_l2[d].abs().median() / w_plain[d].abs().median()) for d in deciles]
    assert kept[0] < 0.3  # small-gradient weights: decayed hard
    assert kept[-1] > 0.8  # large-gradient weights: barely decayed
    assert kept[-1] > 3 * kept[0]
    # the experiment's own statistics agree: the same ordering of decay by v̂
    assert stats["decile_eff_decay"][0] > 10 * stats["decile_eff_decay"][-1]


def _library_run(coupled: bool, dtype: torch.dtype, momentum: float = 0.0, steps: int = 60) -> torch.Tensor:
    """SGD on the experiment's MLP through the library: weight_decay in the optimizer, or DecoupledDecay attached."""
    opts = options(EXP, **SMALL)
    task = EXP.task(opts, "sgd")
    model = build_model(task, Hyper(seed=0, lr=0.1)).to(dtype)
    lam, lr = 0.005, 0.1 * (1 - momentum)
    opt = torch.optim.SGD(decaylab.param_groups(model, lam if coupled else 0.0), lr=lr, momentum=momentum)
    if not coupled:
        decaylab.attach(opt, decaylab.DecoupledDecay(lam), model=model)
    data, order = load_data(task, 0), generator(0, "order")
    done = 0
    while done < steps:
        for idx in epoch_batches(data.n_train, task.batch_size, order):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(data.X_train[idx].to(dtype)), data.y_train[idx]).backward()
            opt.step()
            done += 1
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


@pytest.mark.claim
def test_sgd_l2_and_decoupled_differ_only_by_rounding() -> None:
    """In float64 the trajectories agree to 1e-12; in float32 they differ at the level of its rounding."""
    a64, b64 = _library_run(True, torch.float64), _library_run(False, torch.float64)
    assert (a64 - b64).abs().max().item() < 1e-12
    a32, b32 = _library_run(True, torch.float32), _library_run(False, torch.float32)
    gap32 = (a32 - b32).abs().max().item()
    assert 0 < gap32 < 1e-4
    # with momentum the two are different algorithms: the difference is not rounding
    m_a, m_b = _library_run(True, torch.float64, 0.9), _library_run(False, torch.float64, 0.9)
    assert (m_a - m_b).abs().max().item() > 1000 * gap32


def test_only_adam_l2_keeps_weights_and_state_and_hands_neither_on() -> None:
    opts = options(EXP, hidden="16,16", epochs="2", n_train="40", n_test="30", seed="0")
    assert EXP.task(opts, "adam").keep_optimizer_state is False  # AdamW's stack keeps nothing
    assert EXP.task(opts, "adam", effective_decay=True).keep_optimizer_state is True
    outcomes = EXP.run_chunk(opts, EXP.configs(opts), "batched")
    assert all(o.weights is None and o.optimizer_state is None for o in outcomes)
    (adam_l2,) = [o for o, c in zip(outcomes, EXP.configs(opts), strict=True) if c["variant"] == "adam-l2"]
    assert "eff_decay_counts" in adam_l2.curves and "eff_decay_median" in adam_l2.metrics


def test_cli_json_document(cli_json: Any, tmp_path: Path) -> None:
    doc = cli_json("run", "l2-vs-decay", "--hidden", "16,16", "--epochs", "2", "--n-train", "40", "--n-test", "30",
                   "--seed", "0", "--out", str(tmp_path / "o"))
    assert [c["params"]["variant"] for c in doc["configs"]] == [
        "sgd-l2", "sgd-decoupled", "momentum-l2", "momentum-decoupled", "adam-l2", "adamw"]
    row = doc["summary"]["by_wd"][0]
    assert row["wd"] == 0.005 and set(row) >= {"sgd", "momentum", "adam", "adam_l2_effective_decay", "claims"}
    assert row["adam_l2_effective_decay"]["adamw_decay"] == pytest.approx(5e-6)
    adam_l2 = doc["configs"][4]
    assert len(adam_l2["curves"]["eff_decay_counts"]) == len(HIST_EDGES) - 1
    for name in ("norms.png", "effective_decay.png", "results.json"):
        assert (tmp_path / "o" / name).stat().st_size > 0


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--momentum", "1"), "The '--momentum' parameter of l2-vs-decay must be a float in [0, 1). Got '1'."),
        (("--wd", "0"), "The '--wd' parameter of l2-vs-decay must be a float in (0, 1e+18]. Got 0.0."),
        (("--variants", "adamw,sgdw"), "The '--variants' parameter of l2-vs-decay must be one of {"),
    ],
)
def test_cli_rejects_bad_values(cli: Any, args: tuple[str, ...], expected: str) -> None:
    code, out, err = cli("run", "l2-vs-decay", "--no-figures", *args)
    assert code == 2 and out == ""
    assert err.startswith("decaylab: error: " + expected) and err.count("\n") == 1
