"""Closed forms against scikit-learn, brute force and explicit matrices."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.linear_model import Ridge

from decaylab.closed_form import decay_timescale, ridge, ridge_gcv, ridge_path, weight_decay_for_timescale
from decaylab.conventions import convert
from decaylab.validation import InvalidParameterError

LAMBDS = [0.0, 1e-3, 0.05, 0.4, 3.0]


def _data(n: int = 30, d: int = 6, k: int | None = None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)) * rng.uniform(0.5, 3.0, size=d) + rng.normal(size=d)
    W = rng.normal(size=(d,) if k is None else (d, k))
    return X, X @ W + 2.0 + 0.5 * rng.normal(size=(n,) if k is None else (n, k))


@pytest.mark.parametrize("fit_intercept", [True, False])
@pytest.mark.parametrize("k", [None, 2])
@pytest.mark.parametrize("lambd", [1e-3, 0.05, 3.0])
def test_ridge_is_sklearn_ridge_with_alpha_n_lambda(fit_intercept: bool, k: int | None, lambd: float) -> None:
    X, y = _data(k=k)
    coef, intercept = ridge(X, y, lambd, fit_intercept=fit_intercept)
    ref = Ridge(alpha=len(y) * lambd, fit_intercept=fit_intercept, solver="cholesky").fit(X, y)
    np.testing.assert_allclose(coef, ref.coef_, rtol=0, atol=1e-6)
    np.testing.assert_allclose(intercept, ref.intercept_, rtol=0, atol=1e-6)
    assert np.shape(coef) == np.shape(ref.coef_)


def test_ridge_accepts_tensors_and_computes_in_float64() -> None:
    X, y = _data()
    coef, intercept = ridge(torch.tensor(X, dtype=torch.float32), torch.tensor(y, dtype=torch.float32), 0.05)
    assert isinstance(coef, torch.Tensor) and coef.dtype == torch.float64
    ref_coef, ref_b = ridge(X.astype(np.float32), y.astype(np.float32), 0.05)
    np.testing.assert_array_equal(coef.numpy(), ref_coef)
    assert float(intercept) == ref_b


def test_ridge_in_other_conventions() -> None:
    X, y = _data()
    n = len(y)
    sk = Ridge(alpha=2.5, solver="cholesky").fit(X, y)
    for convention, value in [("sklearn_ridge", 2.5), ("d2l", 2.5 / n), ("ng", 2.5), ("keras_l2", 2.5 / n),
                              ("torch_sgd", 2 * 2.5 / n)]:
        coef, intercept = ridge(X, y, value, convention=convention)
        np.testing.assert_allclose(coef, sk.coef_, rtol=0, atol=1e-8, err_msg=convention)
    coef, _ = ridge(X, y, 2.5 / n, convention="torch_sgd", loss="half_mse")
    np.testing.assert_allclose(coef, sk.coef_, rtol=0, atol=1e-8)


def test_ridge_path_uses_one_svd_and_matches_sklearn(monkeypatch: pytest.MonkeyPatch) -> None:
    X, y = _data()
    calls = []
    svd = np.linalg.svd
    monkeypatch.setattr(np.linalg, "svd", lambda *a, **kw: calls.append(1) or svd(*a, **kw))
    coefs, intercepts = ridge_path(X, y, LAMBDS)
    assert len(calls) == 1
    monkeypatch.undo()
    assert coefs.shape == (len(LAMBDS), X.shape[1]) and intercepts.shape == (len(LAMBDS),)
    for lam, c, b in zip(LAMBDS, coefs, intercepts, strict=True):
        ref = Ridge(alpha=len(y) * lam, solver="cholesky").fit(X, y) if lam > 0 else None
        if ref is None:  # λ = 0: ordinary least squares
            Z = np.c_[np.ones(len(y)), X]
            sol = np.linalg.lstsq(Z, y, rcond=None)[0]
            np.testing.assert_allclose(c, sol[1:], rtol=0, atol=1e-6)
            assert abs(b - sol[0]) < 1e-6
        else:
            np.testing.assert_allclose(c, ref.coef_, rtol=0, atol=1e-6)
            assert abs(b - ref.intercept_) < 1e-6
    coefs2, intercepts2 = ridge_path(X, np.c_[y, 2 * y], LAMBDS)
    assert coefs2.shape == (len(LAMBDS), 2, X.shape[1])
    np.testing.assert_allclose(coefs2[:, 1], 2 * coefs, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("fit_intercept", [True, False])
def test_loo_gcv_and_degrees_of_freedom(fit_intercept: bool) -> None:
    X, y = _data(n=18)
    n = len(y)
    lambds = [1e-3, 0.05, 0.4]
    result = ridge_gcv(X, y, lambds, fit_intercept=fit_intercept)
    for i, lam in enumerate(lambds):
        alpha = n * lam
        assert result.alphas[i] == pytest.approx(alpha)
        # brute-force leave-one-out with scikit-learn at the same alpha
        errors = []
        for j in range(n):
            mask = np.arange(n) != j
            fit = Ridge(alpha=alpha, fit_intercept=fit_intercept, solver="cholesky").fit(X[mask], y[mask])
            errors.append((y[j] - fit.predict(X[j : j + 1])[0]) ** 2)
        assert result.loo_mse[i] == pytest.approx(np.mean(errors), rel=1e-8)
        # the explicit hat matrix of [1, X] with the intercept unpenalized
        Z = np.c_[np.ones(n), X] if fit_intercept else X
        P = np.diag([0.0] * fit_intercept + [alpha] * X.shape[1])
        H = Z @ np.linalg.solve(Z.T @ Z + P, Z.T)
        assert result.df[i] == pytest.approx(np.trace(H) - fit_intercept, rel=1e-10)
        r = y - H @ y
        assert result.gcv[i] == pytest.approx(np.mean(r**2) / (1 - np.trace(H) / n) ** 2, rel=1e-10)
    assert result.df[0] > result.df[1] > result.df[2]
    assert result.best_lambd_loo in lambds and result.best_lambd_gcv in lambds


def test_decay_timescale_is_the_ema_memory_of_adamw() -> None:
    ts = decay_timescale(lr=1e-3, weight_decay=0.1, iters_per_epoch=500)
    assert ts.tau_iter == pytest.approx(1e4) and ts.tau_epoch == pytest.approx(20.0)
    # after τ_iter steps of θ ← (1 − ηλ)θ the initial weights keep a fraction ≈ e⁻¹
    assert (1 - 1e-3 * 0.1) ** ts.tau_iter == pytest.approx(math.exp(-1), rel=1e-4)
    assert weight_decay_for_timescale(1e-3, ts.tau_epoch, 500) == pytest.approx(0.1)
    assert decay_timescale(1e-3, 0.0, 10).tau_epoch == math.inf
    # Wang & Aitchison: ten times the data (iterations per epoch) at a fixed τ_epoch → λ / 10
    assert weight_decay_for_timescale(1e-3, 20.0, 5000) == pytest.approx(0.01)


def test_bad_arguments_raise_the_template() -> None:
    X, y = _data()
    with pytest.raises(InvalidParameterError) as info:
        ridge(X, y, -1.0)
    assert str(info.value) == "The 'lambd' parameter of ridge must be a float in [0, inf). Got -1.0."
    with pytest.raises(InvalidParameterError, match=r"^The 'convention' parameter of ridge must be one of"):
        ridge(X, y, 0.1, convention="sklearn_lasso")
    with pytest.raises(InvalidParameterError, match=r"^The 'y' parameter of ridge_path must be a 1-D or 2-D array "
                       r"with 30 rows like X\. Got \(29,\)\.$"):
        ridge_path(X, y[:-1], [0.1])
    with pytest.raises(InvalidParameterError) as info:
        decay_timescale(0, 0.1, 10)
    assert str(info.value) == "The 'lr' parameter of decay_timescale must be a float in (0, inf). Got 0."
    assert convert(0.1, "d2l", "sklearn_ridge", n_samples=30) == pytest.approx(3.0)


def test_hessian_eigs_are_those_of_autograds_hessian() -> None:
    from decaylab.closed_form import hessian_eigs

    g = torch.Generator().manual_seed(0)
    X = torch.randn(30, 4, generator=g, dtype=torch.float64) + 0.5
    y = torch.randn(30, generator=g, dtype=torch.float64)

    def loss(theta: torch.Tensor) -> torch.Tensor:
        return ((X @ theta[:4] + theta[4] - y) ** 2 / 2).mean()

    H = torch.autograd.functional.hessian(loss, torch.zeros(5, dtype=torch.float64))
    eig = torch.linalg.eigvalsh(H)
    assert hessian_eigs(X) == pytest.approx((float(eig[0]), float(eig[-1])), rel=1e-12)
