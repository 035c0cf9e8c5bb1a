r"""Weight-decay conventions, and exact conversion of λ between them.

The same word, "weight decay λ", means different numbers in different places: a penalty added to a
mean or an unnormalized loss, with or without a 1/2, on a loss with or without its own 1/2, a term in
the gradient, a shrinkage step multiplied by the learning rate or not. :data:`CONVENTIONS` names
each one; :func:`convert` translates a value between two of them when an exact translation exists.

The data loss matters. Write ``s`` for the scale of the data loss relative to ``(1/n)Σ(ŷ−y)²/2``
(the ``"half_mse"`` loss, ``s = 1``; the plain mean squared error ``"mse"``, as in ``nn.MSELoss`` and
Keras' ``"mse"``, has ``s = 2``). Conventions whose data loss is a free choice take a default
(column "loss") that ``loss=`` (both sides), ``src_loss=`` or ``dst_loss=`` override. The data losses
are ``"half_mse"``, ``"mse"``, ``"cross_entropy"`` (mean negative log-likelihood, ``nn.CrossEntropyLoss``)
and ``"bce"`` (``nn.BCEWithLogitsLoss``, Ng's logistic regression); the two cross-entropies have
``s = 1`` against themselves. Penalties on different data losses (a squared error on one side, a
cross-entropy on the other, or the two cross-entropies) have different minimizers: :func:`convert`
raises for them. Ng's λ/(2m) for logistic regression is ``convert(λ, "ng", "d2l", loss="bce",
n_samples=m)`` = λ/m.

L2 conventions, converted through ``κ``, the ridge strength on the ``half_mse`` data term: the
objective is proportional to ``(1/n)Σ(ŷ−y)²/2 + κ/2·‖w‖²``, so equal κ means the same minimizer (and
gradients equal up to the constant factor ``s``)::

    name            objective / update (L = the data loss)         default loss   κ
    d2l             L + λ/2·Σw²              (D2L §3.7)             half_mse       λ/s
    ng              L + λ/(2m)·Σw²           (Ng; m = n_samples)    half_mse       λ/(m·s)
    keras_l2        L + c·Σw²                (Keras L2(c))          mse            2c/s
    torch_sgd       g ← ∇L + λθ              (SGD(weight_decay))    mse            λ/s
    torch_adam_l2   g ← ∇L + λθ inside Adam  (Adam(weight_decay))   mse            λ/s
    sklearn_ridge   ‖y − Xw‖² + α‖w‖²        (Ridge(alpha))         fixed          α/n

L1 conventions, converted through the lasso ``alpha`` on ``(1/(2n))‖y − Xw‖² + alpha·‖w‖₁``::

    l1              L + λ·Σ|w|      (l1_penalty(λ), L1Prox(λ))      half_mse       λ/s
    keras_l1        L + c·Σ|w|      (Keras L1(c))                   mse            c/s
    sklearn_lasso   (1/(2n))‖y − Xw‖² + α‖w‖₁  (Lasso(alpha))       fixed          α

Decoupled conventions, converted through λ of PyTorch's AdamW (a shrinkage multiplied by the current
learning rate γ_t; the data loss plays no part)::

    torch_adamw                 θ ← θ − γ_t·λ·θ          (AdamW(weight_decay=λ))             λ
    optax_add_decayed_weights   u ← u + λθ; θ ← θ − γ_t·u  (optax.adamw)                     λ
    decoupled_schedule          θ ← θ − (γ_t/γ₀)·λ·θ     (Loshchilov & Hutter's η_t·λ)       λ/γ₀ (lr=γ₀)
    keras_weight_decay          θ ← θ − γ_t·λ·θ          (Keras 3 / TF ≥ 2.11 optimizers'     λ
                                                         weight_decay=λ, e.g. keras.optimizers.AdamW)
    decoupled_fixed             θ ← θ − λ·θ              (DecoupledDecay(scaled_by="none"))    λ/γ (lr=γ)
    decoupled_corrected         θ ← θ − (γ_t²/γ_max)·λ·θ  (timm adamc, scaled_by="corrected")   λ·γ/γ_max (lr=γ,
                                                                                               lr_max=γ_max)

``decoupled_fixed`` and ``decoupled_corrected`` equal AdamW's λ at one learning rate γ only (``lr``):
exact under a constant learning rate, and step by step otherwise (AdamW's λ would have to follow the
schedule). ``cautious`` (:class:`~decaylab.CautiousDecay`: decay only where the update and θ agree in
sign, Chen et al. 2025) converts to nothing but itself: its mask changes with the data at every step.

Between families: plain SGD without momentum makes coupled and decoupled decay the same update,
``θ − γ(∇L + λθ) = θ − γλθ − γ∇L``, so ``torch_sgd`` λ = ``torch_adamw`` λ exactly. No other bridge is
exact: ``torch_adam_l2`` ↔ decoupled (Adam divides the L2 gradient by √v̂, a per-weight,
data-dependent decay; Loshchilov & Hutter 2019), any other L2 convention ↔ decoupled (they coincide
only under plain SGD: convert to ``torch_sgd`` first if that is your optimizer), L1 ↔ L2 (different
solutions for every λ). :func:`convert` raises for those.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from decaylab.validation import check_choice, check_float, check_int, parameter_error

__all__ = ["CONVENTIONS", "LOSSES", "Convention", "convert", "convertible"]

Family = Literal["l2", "l1", "decoupled", "cautious"]

LOSSES: dict[str, float] = {"half_mse": 1.0, "mse": 2.0, "cross_entropy": 1.0, "bce": 1.0}
"""Data losses and their scale ``s`` relative to ``(1/n)Σ(ŷ−y)²/2`` (the cross-entropies: to themselves)."""
_LOSS_KIND: dict[str, str] = {"half_mse": "squared error", "mse": "squared error",
                              "cross_entropy": "cross-entropy", "bce": "binary cross-entropy"}


@dataclass(frozen=True)
class Convention:
    """One named convention: its family, its objective or update, its default data loss, what it needs."""

    name: str
    family: Family
    formula: str
    loss: str | None  # default data loss; None: fixed by the convention or irrelevant (decoupled)
    needs: tuple[str, ...]
    source: str
    # value -> canonical value (κ, lasso alpha, or AdamW λ) is value * factor(context, s)
    _factor: Callable[[dict[str, Any], float], float]


def _n(ctx: dict[str, Any], _: float) -> float:
    return float(ctx["n_samples"])


CONVENTIONS: dict[str, Convention] = {
    c.name: c
    for c in [
        Convention("d2l", "l2", "(1/n)Σ(ŷ−y)²/2 + λ/2·Σw²", "half_mse", (),
                   "D2L §3.7 (weight decay)", lambda ctx, s: 1 / s),
        Convention("ng", "l2", "(1/(2m))Σ(ŷ−y)² + λ/(2m)·Σw²", "half_mse", ("n_samples",),
                   "Andrew Ng, Machine Learning (Coursera); m = n_samples",
                   lambda ctx, s: 1 / (s * _n(ctx, s))),
        Convention("keras_l2", "l2", "(1/n)Σ(ŷ−y)² + c·Σw²", "mse", (),
                   "Keras regularizers.L2(c) with loss='mse'", lambda ctx, s: 2 / s),
        Convention("torch_sgd", "l2", "g ← ∇L + λθ;  θ ← θ − γ·g  (L = nn.MSELoss by default)", "mse", (),
                   "torch.optim.SGD(weight_decay=λ)", lambda ctx, s: 1 / s),
        Convention("torch_adam_l2", "l2", "g ← ∇L + λθ;  θ ← θ − γ·m̂/(√v̂ + ε)  (L2 through Adam)", "mse", (),
                   "torch.optim.Adam(weight_decay=λ)", lambda ctx, s: 1 / s),
        Convention("sklearn_ridge", "l2", "‖y − Xw − b‖² + α·‖w‖²  (unnormalized error)", None, ("n_samples",),
                   "sklearn.linear_model.Ridge(alpha)", lambda ctx, s: 1 / _n(ctx, s)),
        Convention("l1", "l1", "(1/n)Σ(ŷ−y)²/2 + λ·Σ|w|", "half_mse", (),
                   "decaylab.l1_penalty(λ), decaylab.L1Prox(λ)", lambda ctx, s: 1 / s),
        Convention("keras_l1", "l1", "(1/n)Σ(ŷ−y)² + c·Σ|w|", "mse", (),
                   "Keras regularizers.L1(c) with loss='mse'", lambda ctx, s: 1 / s),
        Convention("sklearn_lasso", "l1", "(1/(2n))‖y − Xw − b‖² + α·‖w‖₁", None, (),
                   "sklearn.linear_model.Lasso(alpha)", lambda ctx, s: 1.0),
        Convention("torch_adamw", "decoupled", "θ ← θ − γ_t·λ·θ, then the Adam update", None, (),
                   "torch.optim.AdamW(weight_decay=λ); DecoupledDecay(λ, scaled_by='lr')", lambda ctx, s: 1.0),
        Convention("optax_add_decayed_weights", "decoupled", "u ← u + λθ;  θ ← θ − γ_t·u", None, (),
                   "optax.add_decayed_weights(λ) before scale_by_learning_rate (optax.adamw)",
                   lambda ctx, s: 1.0),
        Convention("decoupled_schedule", "decoupled", "θ ← θ − (γ_t/γ₀)·λ·θ, then the update", None, ("lr",),
                   "Loshchilov & Hutter 2019 (η_t·λ); DecoupledDecay(λ, scaled_by='schedule'); lr = γ₀",
                   lambda ctx, s: 1 / float(ctx["lr"])),
        Convention("keras_weight_decay", "decoupled", "θ ← θ − γ_t·λ·θ, then the update", None, (),
                   "Keras 3 / tf.keras ≥ 2.11 optimizers' weight_decay=λ (e.g. keras.optimizers.AdamW)",
                   lambda ctx, s: 1.0),
        Convention("decoupled_fixed", "decoupled", "θ ← θ − λ·θ, then the update (not × lr)", None, ("lr",),
                   "DecoupledDecay(λ, scaled_by='none'); lr = the learning rate γ", lambda ctx, s: 1 / float(ctx["lr"])),
        Convention("decoupled_corrected", "decoupled", "θ ← θ − (γ_t²/γ_max)·λ·θ, then the update", None,
                   ("lr", "lr_max"),
                   "Defazio et al. 2025; timm adamc (corrected_weight_decay=True); DecoupledDecay(λ, "
                   "scaled_by='corrected'); lr = γ_t, lr_max = γ_max",
                   lambda ctx, s: float(ctx["lr"]) / float(ctx["lr_max"])),
        Convention("cautious", "cautious", "θ ← θ − γ_t·λ·𝟙[u·θ ≥ 0]·θ after the update u", None, (),
                   "Chen et al. 2025 (arXiv 2510.12402); decaylab.CautiousDecay(λ)", lambda ctx, s: 1.0),
    ]
}
"""Every named convention (see the module docstring for the table and the conversion formulas)."""

_CONTEXT = ("n_samples", "lr", "lr_max", "loss", "src_loss", "dst_loss")


def convertible(src: str, dst: str) -> bool:
    """Whether :func:`convert` has an exact conversion from ``src`` to ``dst``."""
    return _refusal(src, dst) is None


def _refusal(src: str, dst: str) -> str | None:
    a, b = CONVENTIONS[src], CONVENTIONS[dst]
    if a.family == b.family:
        return None
    pair = {a.name, b.name}
    families = {a.family, b.family}
    if "cautious" in families:
        return ("cautious decay acts only where the optimizer's update and θ agree in sign, a mask that changes "
                "with the data at every step: no value of another convention gives the same update")
    if "l1" in families:
        l1, other = (a, b) if a.family == "l1" else (b, a)
        kind = "an L2 penalty (Σw²)" if other.family == "l2" else "decoupled decay (θ ← θ − γλθ)"
        return (f"{l1.name!r} penalizes Σ|w| (L1) and {other.name!r} is {kind}: their solutions differ for "
                "every λ")
    # l2 <-> decoupled
    if "torch_sgd" in pair:
        return None
    if "torch_adam_l2" in pair:
        return ("Adam divides the L2 gradient λθ by √v̂, a different, data-dependent decay for every weight, "
                "while decoupled decay shrinks every weight by the same factor; no λ makes Adam(weight_decay) "
                "equal AdamW")
    coupled = a if a.family == "l2" else b
    return (f"{coupled.name!r} is an L2 penalty on the loss, which equals decoupled decay only under plain SGD "
            "without momentum; if that is your optimizer, convert to 'torch_sgd' first")


def _loss(conv: Convention, side: str, ctx: dict[str, Any]) -> str | None:
    """The data loss of one side (``None`` for decoupled conventions; a fixed one is the squared error)."""
    own = ctx.get(f"{side}_loss")
    if conv.family in ("decoupled", "cautious"):
        return None
    if conv.loss is None:  # the convention fixes its data term (a squared error)
        if own is not None:
            raise parameter_error(f"{side}_loss", "convert", f"None for {conv.name!r}, whose data term is fixed", own)
        return "half_mse"
    name = own if own is not None else ctx.get("loss") or conv.loss
    check_choice(name, f"{side}_loss" if own is not None else "loss", "convert", tuple(LOSSES))
    return str(name)


def _loss_scale(conv: Convention, side: str, ctx: dict[str, Any]) -> float:
    name = _loss(conv, side, ctx)
    return 1.0 if name is None else LOSSES[name]


def _check_needs(conv: Convention, ctx: dict[str, Any]) -> None:
    for need in conv.needs:
        if ctx.get(need) is None:
            kind = "an int in [1, inf)" if need == "n_samples" else "a float in (0, inf)"
            raise parameter_error(need, "convert", f"{kind} when converting {conv.name!r}", None)


def convert(value: float, src: str, dst: str, **context: Any) -> float:
    r"""Convert a weight-decay value from convention ``src`` to convention ``dst``, exactly.

    The conventions and formulas are listed in this module's docstring (and in :data:`CONVENTIONS`).
    Within the L2 family the converted value gives the same minimizer; within the decoupled family the
    same update at every step; ``torch_sgd`` ↔ decoupled the same update under plain SGD.

    Args:
        value: λ (or c, α) ≥ 0 in the ``src`` convention.
        src, dst: convention names (keys of :data:`CONVENTIONS`).
        **context: ``n_samples`` (n or m; needed by ``sklearn_ridge`` and ``ng``), ``lr`` (the base
            learning rate γ₀ for ``decoupled_schedule``; the learning rate γ of the step(s) for
            ``decoupled_fixed`` and ``decoupled_corrected``), ``lr_max`` (γ_max of
            ``decoupled_corrected``), ``loss`` (the data loss of both sides: ``"half_mse"`` =
            (1/n)Σ(ŷ−y)²/2, ``"mse"`` = (1/n)Σ(ŷ−y)², ``"cross_entropy"``, ``"bce"``, overriding the
            defaults), ``src_loss`` / ``dst_loss`` (one side only).

    Raises:
        InvalidParameterError: unknown convention or context, missing context, or no exact conversion
            (L1 ↔ L2, ``torch_adam_l2`` ↔ decoupled, other L2 ↔ decoupled, ``cautious`` ↔ any other,
            penalties on different kinds of data loss).

    Examples::

        convert(0.01, "d2l", "sklearn_ridge", n_samples=100)   # 1.0: Ridge's alpha = n·λ
        convert(0.01, "d2l", "keras_l2")                        # 0.01 (Keras with loss="mse")
        convert(0.01, "d2l", "torch_sgd")                       # 0.02 (with nn.MSELoss)
        convert(0.01, "d2l", "torch_sgd", loss="half_mse")      # 0.01 (with D2L's loss)
        convert(0.05, "torch_adamw", "decoupled_schedule", lr=1e-3)   # 5e-05
    """
    number = check_float(value, "value", "convert", low=0.0)
    check_choice(src, "src", "convert", tuple(CONVENTIONS))
    check_choice(dst, "dst", "convert", tuple(CONVENTIONS))
    for key in context:
        if key not in _CONTEXT:
            raise parameter_error(key, "convert", f"one of the context keywords {{{', '.join(_CONTEXT)}}}", context[key])
    ctx = dict(context)
    if ctx.get("n_samples") is not None:
        ctx["n_samples"] = check_int(ctx["n_samples"], "n_samples", "convert", low=1)
    for key in ("lr", "lr_max"):
        if ctx.get(key) is not None:
            ctx[key] = check_float(ctx[key], key, "convert", low=0.0, low_open=True)
    reason = _refusal(src, dst)
    if reason is not None:
        options = [n for n in CONVENTIONS if convertible(src, n)]
        raise parameter_error(
            "dst", "convert",
            f"one of {{{', '.join(map(repr, options))}}} (no exact conversion from {src!r} exists: {reason})",
            dst,
        )
    a, b = CONVENTIONS[src], CONVENTIONS[dst]
    _check_needs(a, ctx)
    _check_needs(b, ctx)
    src_loss, dst_loss = _loss(a, "src", ctx), _loss(b, "dst", ctx)
    if src_loss is not None and dst_loss is not None and _LOSS_KIND[src_loss] != _LOSS_KIND[dst_loss]:
        raise parameter_error(
            "dst_loss", "convert",
            f"a data loss of the kind of the source's ({_LOSS_KIND[src_loss]}, {src_loss!r}): a penalty on a "
            f"{_LOSS_KIND[src_loss]} and one on a {_LOSS_KIND[dst_loss]} have different minimizers, so no exact "
            "conversion exists",
            dst_loss,
        )
    canonical = number * a._factor(ctx, _loss_scale(a, "src", ctx))
    if a.family != b.family:
        # torch_sgd <-> decoupled under plain SGD: SGD's coupled λ equals AdamW's λ (both times γ_t)
        canonical = number if a.name == "torch_sgd" else canonical
        if b.name == "torch_sgd":
            return canonical
        return canonical / b._factor(ctx, 1.0)
    return canonical / b._factor(ctx, _loss_scale(b, "dst", ctx))
