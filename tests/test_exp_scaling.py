"""scaling: the best λ across training-set sizes under λ/2·‖W‖² and λ/(2m)·‖W‖² (seed 004).

What a small, fast run can assert is what holds robustly: regularization helps at the smallest m, the
best penalty on the mean loss falls as m grows, and the two conventions' slopes differ by −1 (they
are one objective family, l2 = λ and l2 = λ/m). The exponent itself (claimed −1 for λ/2) is noisy
at this size; the full run reports it with its seed-to-seed scatter and a verdict.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from decaylab.data.moons import moons_data
from decaylab.lab.experiments.scaling import Scaling, _verdict, fit_slope, l2_coefficient
from decaylab.results import ConfigResult
from experiment_helpers import options, train

EXP = Scaling()


def _opts(**kw: Any) -> dict[str, Any]:
    small = {
        "epochs": 300,
        "m": [16, 128],
        "seed": [0, 1],
        "n_val": 200,
        "lambd_half": [2.0**k for k in range(-12, -2)],
        "lambd_mean": [2.0**k for k in range(-4, 2)],
    }
    return options(EXP) | small | kw


@pytest.fixture(scope="module")
def small_run() -> tuple[dict[str, Any], list[ConfigResult], dict[str, Any]]:
    opts = _opts()
    results = train(EXP, opts)
    return opts, results, EXP.summarize(results, opts)


@pytest.mark.claim
def test_regularization_helps_at_small_m_and_less_so_at_large_m(small_run: Any) -> None:
    _, _, summary = small_run
    # the λ/2 grid starts at 2^-12, next to no regularization (the λ/(2m) grid's first point is not)
    small, large = summary["conventions"]["half"]["by_m"]
    assert small["m"] == 16 and large["m"] == 128
    # at m = 16 the barely regularized MLP over-fits: the best λ cuts the validation loss by > 15 %
    assert small["best_val_loss"] < 0.85 * small["val_loss_at_smallest_lambd"]
    gain_small = small["val_loss_at_smallest_lambd"] - small["best_val_loss"]
    gain_large = large["val_loss_at_smallest_lambd"] - large["best_val_loss"]
    assert gain_large < gain_small / 2


@pytest.mark.claim
def test_best_penalty_on_the_mean_loss_falls_with_m(small_run: Any) -> None:
    _, _, summary = small_run
    small, large = summary["conventions"]["half"]["by_m"]
    assert large["best_l2"] < small["best_l2"] / 2


@pytest.mark.claim
def test_the_two_conventions_differ_by_exactly_one_power_of_m(small_run: Any) -> None:
    """λ_half = λ_mean/m: both conventions pick the same objective, so the slopes differ by −1 (up to the grid)."""
    _, _, summary = small_run
    rows = {c: summary["conventions"][c]["by_m"] for c in ("half", "mean")}
    for half, mean in zip(rows["half"], rows["mean"], strict=True):
        assert 0.5 <= half["best_l2"] / mean["best_l2"] <= 2.0  # the same l2, up to one grid step (×2)
    slopes = {c: fit_slope([r["m"] for r in rows[c]], [r["best_lambd"] for r in rows[c]]) for c in rows}
    # log2(128/16) = 3 doublings of m; one grid step (×2) of disagreement moves the difference by 1/3
    assert slopes["half"] - slopes["mean"] == pytest.approx(-1.0, abs=0.34)


def test_both_conventions_are_the_engine_l2_on_the_mean_loss() -> None:
    """An independent loop: nn.Sequential, torch.optim.SGD, and decaylab.l2_penalty added to the mean BCE."""
    import torch.nn.functional as F
    from torch import nn

    from decaylab import l2_penalty
    from decaylab.engine.semantics import initial_parameters

    m, seed, lambd, epochs = 16, 0, 0.5, 40
    opts = _opts(epochs=epochs, m=[m], seed=[seed], lambd_half=[lambd], lambd_mean=[lambd])
    configs = EXP.configs(opts)
    outs = {c["convention"]: o for c, o in zip(configs, EXP.run_chunk(opts, configs, "batched"), strict=True)}
    data = moons_data(seed, m, n_val=opts["n_val"])
    task = EXP._task(opts, m)
    for convention, penalty in (("half", "half"), ("mean", "half_mean")):
        layers: list[nn.Module] = []
        for i, (W, b) in enumerate(initial_parameters(task, seed)):
            linear = nn.Linear(*W.shape)
            with torch.no_grad():
                linear.weight.copy_(W.T)
                linear.bias.copy_(b)
            layers += [linear] + ([nn.ReLU()] if i < len(task.layers) - 2 else [])
        net = nn.Sequential(*layers)
        opt = torch.optim.SGD(net.parameters(), lr=opts["lr"])
        val = []
        for _ in range(epochs):
            opt.zero_grad()
            loss = F.binary_cross_entropy_with_logits(net(data.X_train), data.y_train)
            kwargs = {"n_samples": m} if penalty == "half_mean" else {}
            (loss + l2_penalty(net, lambd, convention=penalty, **kwargs)).backward()
            opt.step()
            with torch.no_grad():
                val.append(F.binary_cross_entropy_with_logits(net(data.X_test), data.y_test).item())
        curve = outs[convention].curves["test_loss"]
        epochs_kept = [int(e) - 1 for e in outs[convention].curves["epoch"]]
        np.testing.assert_allclose(curve, [val[e] for e in epochs_kept], rtol=1e-4)
    assert l2_coefficient("mean", lambd, m) == lambd / m
    assert outs["half"].metrics["test_loss"] != pytest.approx(outs["mean"].metrics["test_loss"], rel=1e-3)


def test_moons_validation_set_is_shared_across_m_and_training_sets_follow_the_seed() -> None:
    a, b = moons_data(0, 16), moons_data(0, 64)
    assert torch.equal(a.X_test, b.X_test)
    assert a.X_train.shape == (16, 2) and b.X_train.shape == (64, 2)
    assert torch.equal(moons_data(0, 16).X_train, a.X_train)
    assert not torch.equal(moons_data(1, 16).X_test, a.X_test)
    assert set(a.y_train.unique().tolist()) == {0.0, 1.0}


def test_fit_slope_and_verdicts() -> None:
    ms = [16, 64, 256, 1024]
    assert fit_slope(ms, [1 / m for m in ms]) == pytest.approx(-1.0)
    assert math.isnan(fit_slope([16], [0.1]))

    def conv(slope: float, se: float) -> dict[str, Any]:
        return {"slope": slope, "slope_se": se, "slope_per_seed_se": se / 2, "fitted_m": ms}

    text, holds = _verdict(conv(-0.95, 0.1), conv(0.05, 0.1))
    assert holds and text.startswith("borne out")
    text, holds = _verdict(conv(-0.9, 0.3), conv(0.1, 0.3))
    assert not holds and text.startswith("consistent with the claim but not pinned down")
    text, holds = _verdict(conv(-0.5, 0.05), conv(0.5, 0.05))
    assert not holds and text.startswith("not borne out") and "more slowly than 1/m" in text
    text, holds = _verdict(conv(-0.5, 0.4), conv(0.5, 0.4), flat=[1024])
    assert not holds and text.startswith("inconclusive") and "m = 1024" in text
    text, holds = _verdict(conv(math.nan, math.nan), conv(math.nan, math.nan))
    assert not holds and text.startswith("undetermined")


def test_cli_json_document(cli_json: Any, tmp_path: Path) -> None:
    doc = cli_json(
        "run", "scaling", "--m", "16,64", "--seed", "0", "--epochs", "30", "--n-val", "100",
        "--lambd-half", "0.001,0.01", "--lambd-mean", "0.16,0.64", "--out", "sc", "--quiet",
    )
    assert doc["experiment"] == "scaling" and len(doc["configs"]) == 2 * 2 * 2  # conventions × m × λ (one seed)
    for config in doc["configs"]:
        p = config["params"]
        assert p["l2"] == pytest.approx(p["lambd"] / (p["m"] if p["convention"] == "mean" else 1))
        assert config["curves"]["epoch"][-1] == 30 and config["metrics"]["test_loss"] > 0
    # λ_mean = 0.16 at m = 16 is l2 = 0.01, the same objective as λ_half = 0.01: the same numbers
    by = {(c["params"]["convention"], c["params"]["m"], c["params"]["lambd"]): c for c in doc["configs"]}
    assert by[("mean", 16, 0.16)]["metrics"] == by[("half", 16, 0.01)]["metrics"]
    summary = doc["summary"]
    assert set(summary["conventions"]) == {"half", "mean"}
    assert isinstance(summary["verdict"], str) and isinstance(summary["claim_holds"], bool)
    assert {"slope_half", "slope_mean", "slope_difference", "fitted_m", "flat_at_m"} <= set(summary)
    for convention in ("half", "mean"):
        assert [row["m"] for row in summary["conventions"][convention]["by_m"]] == [16, 64]
    for name in ("curves.png", "best_lambda.png", "results.json"):
        assert (tmp_path / "sc" / name).stat().st_size > 0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--m", "1,16"], "'--m' parameter of scaling must be a list of whole numbers >= 2"),
        (["--m", "2:999999999"], "'--m' parameter of scaling must be a list of whole numbers >= 2 and <= 1000000000"
                                 " ('0,1,2') or a range 'start:stop' ('0:4'), at most 100000 values"),
        (["--lr", "3"], "'--lr' parameter of scaling must be a float with lr·l2 < 2"),
        (["--lambd-mean", "-1"], "'--lambd-mean' parameter of scaling must be a float in [0, 1e+18]"),
    ],
)
def test_bad_values_are_one_line_and_exit_2(cli: Any, argv: list[str], message: str) -> None:
    code, out, err = cli("run", "scaling", "--no-figures", *argv)
    assert code == 2 and out == ""
    assert message in err and len(err.strip().splitlines()) == 1
