r"""Closed forms: the ridge solution and path, leave-one-out and GCV along the path, AdamW's timescale.

These are the reference answers the rest of decaylab is checked against, and what experiments plot
next to trained models. Inputs may be NumPy arrays or torch tensors; everything is computed in
float64 and returned as the input's kind (a tensor ``X`` gives float64 tensors, otherwise NumPy).

Ridge, in D2L's convention (the default ``convention="d2l"``), minimizes

.. math::
    \frac{1}{2n}\lVert y - Xw - b\rVert^2 + \frac{\lambda}{2}\lVert w\rVert^2

(the intercept ``b`` is not penalized), which is scikit-learn's ``Ridge`` objective
``‖y − Xw − b‖² + α‖w‖²`` with ``α = n·λ``. Any other L2 convention of :mod:`decaylab.conventions`
may be named; λ is converted to α with :func:`decaylab.convert`. With ``X_c = X − x̄`` (centred when
``fit_intercept``) and its thin SVD ``X_c = U S Vᵀ``,

.. math::
    w(\alpha) = V\,\mathrm{diag}\!\left(\frac{s_j}{s_j^2 + \alpha}\right) U^\top y_c, \qquad
    b = \bar y - \bar x^\top w,

one SVD serving every α of a path. Singular values below ``max(n, d)·ε·s_max`` are dropped, so
``λ = 0`` gives the minimum-norm least-squares solution.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from decaylab.conventions import CONVENTIONS, convert
from decaylab.validation import check_choice, check_float, parameter_error

__all__ = [
    "DecayTimescale",
    "RidgeGCV",
    "RotationalEquilibrium",
    "decay_timescale",
    "hessian_eigs",
    "ridge",
    "ridge_gcv",
    "ridge_path",
    "rotational_equilibrium",
    "weight_decay_for_timescale",
]

Array = np.ndarray | torch.Tensor
_L2 = tuple(name for name, c in CONVENTIONS.items() if c.family == "l2")


def _to_numpy(a: Any, name: str, owner: str) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        return a.detach().to("cpu", torch.float64).numpy()
    try:
        return np.asarray(a, dtype=np.float64)
    except (TypeError, ValueError):
        raise parameter_error(name, owner, "a NumPy array or a torch tensor of numbers", type(a).__name__) from None


def _back(a: np.ndarray | float, like_torch: bool) -> Any:
    if like_torch:
        return torch.as_tensor(np.asarray(a), dtype=torch.float64)
    return a


def _check_finite(a: np.ndarray, name: str, owner: str) -> None:
    """Refuse NaN or infinite entries, naming the first (``X[3, 1] = nan``)."""
    bad = ~np.isfinite(a)
    if bad.any():
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        where = f"{name}[{', '.join(map(str, index))}] = {a[index]}"
        raise parameter_error(name, owner, f"an array of finite numbers ({int(bad.sum())} not finite, first {where})",
                              f"{type(a).__name__} of shape {tuple(a.shape)}")


def _prepare(X: Any, y: Any, owner: str) -> tuple[np.ndarray, np.ndarray, bool]:
    """``X`` (n, d) and ``y`` (n,) or (n, k) as float64 NumPy arrays; whether ``y`` was 1-D.

    Raises:
        InvalidParameterError: not arrays of numbers, wrong dimensions, no rows or no features, rows of ``y``
            unlike ``X``'s, NaN or infinite entries.
    """
    Xn = _to_numpy(X, "X", owner)
    yn = _to_numpy(y, "y", owner)
    if Xn.ndim != 2:
        raise parameter_error("X", owner, "a 2-D array (n_samples, n_features)", tuple(Xn.shape))
    if Xn.shape[0] < 1 or Xn.shape[1] < 1:
        raise parameter_error("X", owner, "a 2-D array with at least 1 sample and 1 feature", tuple(Xn.shape))
    if yn.ndim not in (1, 2) or yn.shape[0] != Xn.shape[0] or yn.size == 0:
        raise parameter_error("y", owner, f"a 1-D or 2-D array with {Xn.shape[0]} rows like X", tuple(yn.shape))
    _check_finite(Xn, "X", owner)
    _check_finite(yn, "y", owner)
    return Xn, yn, yn.ndim == 1


def _alphas(lambds: Any, n: int, convention: str, loss: str | None, owner: str) -> tuple[np.ndarray, np.ndarray]:
    check_choice(convention, "convention", owner, _L2)
    if lambds is None:
        raise parameter_error("lambds", owner, "a non-empty 1-D sequence of floats in [0, inf)", lambds)
    values = np.atleast_1d(_to_numpy(lambds, "lambds", owner))
    if values.ndim != 1 or values.size == 0:
        raise parameter_error("lambds", owner, "a non-empty 1-D sequence of floats in [0, inf)", tuple(values.shape))
    context = {} if loss is None else {"loss": loss}
    alphas = np.empty_like(values)
    for i, lam in enumerate(values):
        lam = check_float(lam, "lambd", owner, low=0.0)
        alphas[i] = convert(lam, convention, "sklearn_ridge", n_samples=n, **context)
    return values, alphas


class _SVDRidge:
    """Centre once, decompose once; then every α costs O(r·(d + n)) per target."""

    def __init__(self, X: np.ndarray, Y: np.ndarray, fit_intercept: bool) -> None:
        self.fit_intercept = fit_intercept
        self.n = X.shape[0]
        if fit_intercept:
            self.x_mean, self.y_mean = X.mean(axis=0), Y.mean(axis=0)
        else:
            self.x_mean, self.y_mean = np.zeros(X.shape[1]), np.zeros(Y.shape[1])
        Xc, self.Yc = X - self.x_mean, Y - self.y_mean
        U, s, Vt = np.linalg.svd(Xc, full_matrices=False)
        keep = s > (s.max() * max(Xc.shape) * np.finfo(np.float64).eps if s.size else 0.0)
        self.U, self.s, self.Vt = U[:, keep], s[keep], Vt[keep]
        self.UtY = self.U.T @ self.Yc  # (r, k)

    def coef(self, alphas: np.ndarray) -> np.ndarray:
        """(L, k, d): ``w(α) = V diag(s/(s² + α)) Uᵀ y_c``."""
        shrink = self.s / (self.s**2 + alphas[:, None])  # (L, r)
        return np.einsum("rd,lr,rk->lkd", self.Vt, shrink, self.UtY)

    def intercept(self, coefs: np.ndarray) -> np.ndarray:
        """(L, k): ``b = ȳ − x̄ᵀw``."""
        return self.y_mean[None, :] - np.einsum("lkd,d->lk", coefs, self.x_mean)


def ridge(
    X: Array,
    y: Array,
    lambd: float,
    fit_intercept: bool = True,
    convention: str = "d2l",
    loss: str | None = None,
) -> tuple[Any, Any]:
    r"""The ridge solution ``(coef, intercept)`` for λ in a named L2 convention (default D2L's).

    Objective (``convention="d2l"``): ``(1/(2n))‖y − Xw − b‖² + λ/2·‖w‖²``, the intercept ``b``
    unpenalized — scikit-learn's ``Ridge(alpha=n·λ)``. ``convention="sklearn_ridge"`` takes α itself;
    other L2 conventions (``"ng"``, ``"keras_l2"``, ``"torch_sgd"``, ...) are converted with
    :func:`decaylab.convert` (``loss=`` overrides their default data loss).

    Returns ``coef`` of shape ``(d,)`` for a 1-D ``y`` and ``(k, d)`` for ``y`` of shape ``(n, k)``
    (scikit-learn's layout), and ``intercept`` (a scalar or ``(k,)``; 0 without ``fit_intercept``).

    Raises:
        InvalidParameterError: ``X`` not 2-D with ≥ 1 row and ≥ 1 column, ``y`` without X's rows, NaN or
            infinite entries in either, λ not a finite float ≥ 0, an unknown or non-L2 ``convention``.
    """
    Xn, yn, flat = _prepare(X, y, "ridge")
    lam = check_float(lambd, "lambd", "ridge", low=0.0)
    _, alphas = _alphas([lam], Xn.shape[0], convention, loss, "ridge")
    solver = _SVDRidge(Xn, yn.reshape(len(yn), -1), bool(fit_intercept))
    coefs = solver.coef(alphas)
    intercepts = solver.intercept(coefs)
    coef, intercept = (coefs[0, 0], intercepts[0, 0]) if flat else (coefs[0], intercepts[0])
    if isinstance(X, torch.Tensor):
        return _back(coef, True), _back(intercept, True)
    return coef, (float(intercept) if flat else intercept)


def ridge_path(
    X: Array,
    y: Array,
    lambds: Sequence[float] | Array,
    fit_intercept: bool = True,
    convention: str = "d2l",
    loss: str | None = None,
) -> tuple[Any, Any]:
    r"""Ridge solutions for every λ of ``lambds`` from ONE SVD of the centred ``X``.

    Same objective and conventions as :func:`ridge`. Returns ``coefs`` of shape ``(L, d)`` (or
    ``(L, k, d)`` for 2-D ``y``) and ``intercepts`` of shape ``(L,)`` (or ``(L, k)``).

    Raises:
        InvalidParameterError: as :func:`ridge`, and ``lambds`` empty or not 1-D.
    """
    Xn, yn, flat = _prepare(X, y, "ridge_path")
    _, alphas = _alphas(lambds, Xn.shape[0], convention, loss, "ridge_path")
    solver = _SVDRidge(Xn, yn.reshape(len(yn), -1), bool(fit_intercept))
    coefs = solver.coef(alphas)
    intercepts = solver.intercept(coefs)
    if flat:
        coefs, intercepts = coefs[:, 0, :], intercepts[:, 0]
    like_torch = isinstance(X, torch.Tensor)
    return _back(coefs, like_torch), _back(intercepts, like_torch)


@dataclass(frozen=True)
class RidgeGCV:
    """Model-selection quantities along a ridge path (NumPy float64 arrays of length ``L``).

    Attributes:
        lambds: λ in the requested convention; ``alphas``: the same as scikit-learn's α = n·λ (d2l).
        df: effective degrees of freedom of the penalized part, ``Σ_j s_j²/(s_j² + α)`` (the intercept
            not counted; ESL eq. 3.50).
        loo_mse: exact leave-one-out mean squared error ``(1/n)Σ_i (r_i/(1 − h_ii))²`` at fixed α.
        gcv: generalized cross-validation ``(1/n)‖r‖² / (1 − tr(H)/n)²``, ``tr(H) = df (+1 with intercept)``.
        coefs, intercepts: the path, as :func:`ridge_path` returns it (NumPy).
    """

    lambds: np.ndarray
    alphas: np.ndarray
    df: np.ndarray
    loo_mse: np.ndarray
    gcv: np.ndarray
    coefs: np.ndarray
    intercepts: np.ndarray

    @property
    def best_lambd_loo(self) -> float:
        """The λ of ``lambds`` with the smallest leave-one-out error."""
        return float(self.lambds[int(np.nanargmin(self.loo_mse))])

    @property
    def best_lambd_gcv(self) -> float:
        """The λ of ``lambds`` with the smallest GCV score."""
        return float(self.lambds[int(np.nanargmin(self.gcv))])


def ridge_gcv(
    X: Array,
    y: Array,
    lambds: Sequence[float] | Array,
    fit_intercept: bool = True,
    convention: str = "d2l",
    loss: str | None = None,
) -> RidgeGCV:
    r"""Leave-one-out error, GCV and effective degrees of freedom along a ridge path (one SVD).

    With the hat matrix ``H(α) = 11ᵀ/n + U diag(s²/(s² + α)) Uᵀ`` (the first term only with an
    intercept) and residuals ``r = y − H y``:

    * ``df(α) = Σ_j s_j²/(s_j² + α)``, α = n·λ for ``d2l`` (Hastie, Tibshirani & Friedman, ESL §3.4.1);
    * ``loo_mse = (1/n) Σ_i (r_i/(1 − h_ii))²`` — exact for penalized least squares, and equal to
      refitting ``Ridge(alpha=α)`` on the n − 1 other samples (α held fixed, not λ; Allen 1974);
    * ``gcv = (1/n)‖r‖² / (1 − tr H/n)²`` (Golub, Heath & Wahba 1979).

    For 2-D ``y`` the errors are averaged over targets.

    Raises:
        InvalidParameterError: as :func:`ridge_path`.
    """
    Xn, yn, flat = _prepare(X, y, "ridge_gcv")
    lams, alphas = _alphas(lambds, Xn.shape[0], convention, loss, "ridge_gcv")
    n = Xn.shape[0]
    solver = _SVDRidge(Xn, yn.reshape(n, -1), bool(fit_intercept))
    s2 = solver.s**2
    fraction = s2 / (s2 + alphas[:, None])  # (L, r)
    df = fraction.sum(axis=1)
    base = 1.0 / n if fit_intercept else 0.0
    hat_diag = base + np.einsum("ir,lr->li", solver.U**2, fraction)  # (L, n)
    fitted = np.einsum("ir,lr,rk->lik", solver.U, fraction, solver.UtY)  # centred fit, (L, n, k)
    resid = solver.Yc[None] - fitted
    with np.errstate(divide="ignore", invalid="ignore"):
        loo = ((resid / (1.0 - hat_diag[:, :, None])) ** 2).mean(axis=(1, 2))
        trace = df + (1.0 if fit_intercept else 0.0)
        gcv = (resid**2).mean(axis=(1, 2)) / (1.0 - trace / n) ** 2
    coefs = solver.coef(alphas)
    intercepts = solver.intercept(coefs)
    if flat:
        coefs, intercepts = coefs[:, 0, :], intercepts[:, 0]
    return RidgeGCV(lams, alphas, df, loo, gcv, coefs, intercepts)


@dataclass(frozen=True)
class DecayTimescale:
    """AdamW's weight-decay timescale: ``tau_iter = 1/(η·λ)`` iterations, ``tau_epoch`` in epochs."""

    lr: float
    weight_decay: float
    iters_per_epoch: float
    tau_iter: float
    tau_epoch: float


def decay_timescale(lr: float, weight_decay: float, iters_per_epoch: float) -> DecayTimescale:
    r"""The timescale of AdamW's weights seen as an exponential moving average of updates.

    With decoupled decay ``θ_t = (1 − ηλ)θ_{t−1} − η·u_t``, θ is an EMA of ``−u/λ`` with rate ``ηλ``,
    i.e. a memory of

    .. math::
        \tau_\text{iter} = \frac{1}{\eta\lambda}\ \text{iterations}, \qquad
        \tau_\text{epoch} = \frac{\tau_\text{iter}}{\text{iters\_per\_epoch}}\ \text{epochs}.

    Wang & Aitchison (2024, "How to set AdamW's weight decay as you scale model and dataset size")
    find the best τ_epoch roughly constant as model and data grow, so λ should scale as
    ``1/(η·τ_epoch·iters_per_epoch)`` (see :func:`weight_decay_for_timescale`). η and λ are PyTorch's
    ``AdamW`` ``lr`` and ``weight_decay`` (the ``torch_adamw`` convention). λ = 0 gives infinite τ.
    """
    eta = check_float(lr, "lr", "decay_timescale", low=0.0, low_open=True)
    lam = check_float(weight_decay, "weight_decay", "decay_timescale", low=0.0)
    iters = check_float(iters_per_epoch, "iters_per_epoch", "decay_timescale", low=0.0, low_open=True)
    tau_iter = math.inf if lam == 0 else 1.0 / (eta * lam)
    return DecayTimescale(eta, lam, iters, tau_iter, tau_iter / iters)


def weight_decay_for_timescale(lr: float, tau_epoch: float, iters_per_epoch: float) -> float:
    """The AdamW ``weight_decay`` λ giving a timescale of ``tau_epoch`` epochs: ``λ = 1/(η·τ_epoch·iters_per_epoch)``."""
    eta = check_float(lr, "lr", "weight_decay_for_timescale", low=0.0, low_open=True)
    tau = check_float(tau_epoch, "tau_epoch", "weight_decay_for_timescale", low=0.0, low_open=True)
    iters = check_float(iters_per_epoch, "iters_per_epoch", "weight_decay_for_timescale", low=0.0, low_open=True)
    return 1.0 / (eta * tau * iters)


def hessian_eigs(X: Array) -> tuple[float, float]:
    r"""``(μ, L)``: the smallest and largest eigenvalue of the Hessian of the mean squared loss in ``(w, b)``.

    The loss :math:`f(w, b) = \frac{1}{n}\sum_i (x_i^\top w + b - y_i)^2/2` has the constant Hessian
    :math:`A^\top A/n` with :math:`A = [X, 1]`. ``1/L`` is the largest safe gradient-descent step, and
    ``μ > 0`` (``n > d`` and X of full rank) makes ``f`` μ-strongly convex, which turns a small gradient
    into a certified distance to the minimizer. Computed in float64.
    """
    X = torch.as_tensor(X).to(torch.float64)
    n = X.shape[0]
    A = torch.cat([X, torch.ones(n, 1, dtype=X.dtype)], dim=1)
    eig = torch.linalg.eigvalsh(A.T @ A / n)
    return float(eig[0]), float(eig[-1])


# -- rotational equilibrium of scale-invariant weights (Kosson, Messmer & Jaggi 2024) ---------------
EQUILIBRIUM_OPTIMIZERS = ("adamw", "sgdm")


@dataclass(frozen=True)
class RotationalEquilibrium:
    r"""The steady state of a scale-invariant weight tensor ``w`` (``C`` elements) under weight decay.

    ``norm`` is the equilibrium ``‖w‖₂`` (NaN for ``"sgdm"`` when the gradient size is not given),
    ``angular_update`` the expected angle (radians) between ``w`` before and after one step,
    ``timescale`` the steps ``τ`` of the decay's memory (the norm relaxes like ``e^{−2t/τ}`` in ‖w‖²
    for AdamW, ``e^{−4t/τ}`` in ‖w‖⁴ for SGD with momentum). See :func:`rotational_equilibrium`.
    """

    optimizer: str
    lr: float
    weight_decay: float
    norm: float
    angular_update: float
    timescale: float


def rotational_equilibrium(
    optimizer: str,
    lr: float,
    weight_decay: float,
    *,
    n_elements: int | None = None,
    grad_norm_sq: float | None = None,
    momentum: float = 0.9,
) -> RotationalEquilibrium:
    r"""Equilibrium norm, angular update per step and timescale of a scale-invariant weight.

    A weight ``w`` followed by a normalization is *scale-invariant*: the loss depends on ``w/‖w‖`` only,
    so its gradient is orthogonal to ``w`` and scales as ``1/‖w‖``: ``∇L(w) = g̃/‖w‖`` with ``g̃`` the
    gradient at the unit sphere. Decay shrinks ``‖w‖``; the orthogonal updates grow it. In the random-walk
    model of Kosson et al. (minibatch gradients uncorrelated from step to step) the two balance at

    ==========  ============================================  =========================================  ==============
    optimizer   ``‖w‖*``                                      angular update per step                     ``τ`` (steps)
    ==========  ============================================  =========================================  ==============
    ``adamw``   :math:`\sqrt{\eta C / (2\lambda)}`            :math:`\sqrt{2\eta\lambda\,(1-\beta_1)/(1+\beta_1)}`  :math:`1/(\eta\lambda)`
    ``sgdm``    :math:`(\eta\,E\lVert\tilde g\rVert^2 / (2\lambda(1-\alpha)))^{1/4}`  :math:`\sqrt{2\eta\lambda/(1+\alpha)}`  :math:`(1-\alpha)/(\eta\lambda)`
    ==========  ============================================  =========================================  ==============

    with ``η`` = ``lr``, ``λ`` = ``weight_decay``, ``C`` = ``n_elements``, ``E‖g̃‖²`` = ``grad_norm_sq`` (the
    mean squared minibatch gradient norm times ``‖w‖²``), and ``momentum`` = β₁ of AdamW or α of SGD.
    Conventions are PyTorch's: ``AdamW(lr=η, weight_decay=λ, betas=(β₁, ·))`` (``w ← (1 − ηλ)w − η·m̂/(√v̂+ε)``)
    and ``SGD(lr=η, momentum=α, weight_decay=λ)`` (coupled: ``b ← αb + g + λw``, ``w ← w − ηb``).

    Derivation (per step, to first order in ηλ): AdamW's update has about one unit of RMS per element,
    and each gradient's total contribution, summed over the steps its momentum lasts, is ``η·g/√v``, so
    ``‖w‖²`` gains ``η²C`` a step while decay removes ``2ηλ‖w‖²``; one step's own displacement is
    ``η‖m̂/√v̂‖`` with ``E m̂² = (1−β₁)/(1+β₁)·E g²`` (an EMA of uncorrelated gradients). SGD with
    momentum: each gradient eventually moves ``w`` by ``η g/(1−α)``, the decay by ``ηλ w/(1−α)``, and one
    step by ``η b`` with ``E‖b‖² = E‖g‖²/(1−α²)``. The angular update ``‖Δw‖/‖w‖`` then follows.

    With ``β₁ = 0`` AdamW's angular update is ``√(2ηλ)`` (the form often quoted); with the default
    β₁ = 0.9 it is ``√(2ηλ/19) ≈ 0.23·√(2ηλ)``. λ = 0 has no equilibrium: ``norm`` is inf, the angular
    update 0 and τ inf (the norm grows without bound and the rotation per step keeps falling).

    Raises :class:`~decaylab.validation.InvalidParameterError` for an unknown optimizer, ``lr ≤ 0``,
    ``weight_decay < 0``, ``momentum`` outside [0, 1), or ``n_elements`` missing for ``"adamw"``.

    Reference: Kosson, Messmer & Jaggi, "Rotational Equilibrium: How Weight Decay Balances Learning
    Across Neural Networks", ICML 2024 (arXiv 2305.17212), Table 1; van Laarhoven 2017 (the effective
    learning rate ``η/‖w‖²`` of scale-invariant weights under SGD).
    """
    owner = "rotational_equilibrium"
    check_choice(optimizer, "optimizer", owner, EQUILIBRIUM_OPTIMIZERS)
    eta = check_float(lr, "lr", owner, low=0.0, low_open=True)
    lam = check_float(weight_decay, "weight_decay", owner, low=0.0)
    beta = check_float(momentum, "momentum", owner, low=0.0, high=1.0, high_open=True)
    if optimizer == "adamw":
        if n_elements is None:
            raise parameter_error("n_elements", owner, "an int >= 1 (the weight's number of elements) for 'adamw'", None)
        C = check_float(n_elements, "n_elements", owner, low=1.0)
        if lam == 0:
            return RotationalEquilibrium(optimizer, eta, lam, math.inf, 0.0, math.inf)
        return RotationalEquilibrium(
            optimizer, eta, lam, math.sqrt(eta * C / (2 * lam)),
            math.sqrt(2 * eta * lam * (1 - beta) / (1 + beta)), 1.0 / (eta * lam),
        )
    g2 = math.nan if grad_norm_sq is None else check_float(grad_norm_sq, "grad_norm_sq", owner, low=0.0)
    if lam == 0:
        return RotationalEquilibrium(optimizer, eta, lam, math.inf, 0.0, math.inf)
    norm = (eta * g2 / (2 * lam * (1 - beta))) ** 0.25
    return RotationalEquilibrium(
        optimizer, eta, lam, norm, math.sqrt(2 * eta * lam / (1 + beta)), (1 - beta) / (eta * lam)
    )
