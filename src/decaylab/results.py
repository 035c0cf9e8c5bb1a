"""What training a configuration produces, shared by the engine, the experiments, the store and outputs."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from decaylab.codec import json_list

__all__ = ["ConfigResult", "Outcome", "Status", "json_safe"]

Status = Literal["pending", "done", "diverged", "failed"]


@dataclass
class Outcome:
    """The result of training one configuration, before it is tied to its parameters.

    ``curves`` maps a metric name to one value per epoch (``"epoch"`` holds 1..E); ``metrics`` holds
    the final values. A configuration that diverged keeps its curves up to ``diverged_epoch`` and NaN
    after it; JSON output writes NaN and infinity as ``null``. ``weights`` holds parameter vectors
    when the engine was asked to keep them (``Task.keep_weights``; layout there), else ``None``;
    ``averaged_weights`` the average of the iterates, one vector in that layout, when it was asked for
    (``Task.average_from``), else ``None``; ``optimizer_state`` the optimizer's buffers after the last
    step, by ``torch.optim``'s names, when asked for (``Task.keep_optimizer_state``), else ``None``.
    """

    status: Status = "done"
    metrics: dict[str, float] = field(default_factory=dict)
    curves: dict[str, list[float]] = field(default_factory=dict)
    diverged_epoch: int | None = None
    error: str | None = None
    weights: list[list[float]] | None = None  # flat parameter vectors, the last after the final epoch
    averaged_weights: list[float] | None = None  # flat vector: the mean of the iterates (Task.average_from)
    optimizer_state: dict[str, list[float]] | None = None  # name -> flat vector (Task.keep_optimizer_state)


@dataclass
class ConfigResult(Outcome):
    """An :class:`Outcome` together with the parameters of its configuration."""

    params: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, params: dict[str, Any], outcome: Outcome) -> ConfigResult:
        """``outcome`` tied to ``params``; its metrics and curves dicts are copied, the value lists shared."""
        values = {f.name: getattr(outcome, f.name) for f in fields(Outcome)}
        values.update(metrics=dict(outcome.metrics), curves=dict(outcome.curves))
        return cls(params=dict(params), **values)

    def to_json(self, curves: bool = True) -> dict[str, Any]:
        """A JSON-ready dict: ``params``, ``status``, ``metrics``, ``curves`` (left out with
        ``curves=False``), kept ``weights``, ``averaged_weights`` and ``optimizer_state`` when there are any
        (NaN/inf → ``None``, done per list by numpy: :func:`decaylab.codec.json_list`)."""
        doc: dict[str, Any] = {
            "params": _flat_json_safe(self.params),
            "status": self.status,
            "metrics": {k: _finite_or_none(v) for k, v in self.metrics.items()},
        }
        if curves:
            doc["curves"] = {k: json_list(vs) for k, vs in self.curves.items()}
        if self.diverged_epoch is not None:
            doc["diverged_epoch"] = self.diverged_epoch
        if self.error is not None:
            doc["error"] = self.error
        if self.weights is not None:
            doc["weights"] = json_list(self.weights)
        if self.averaged_weights is not None:
            doc["averaged_weights"] = json_list(self.averaged_weights)
        if self.optimizer_state is not None:
            doc["optimizer_state"] = {k: json_list(vs) for k, vs in self.optimizer_state.items()}
        return doc

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> ConfigResult:
        nan = float("nan")
        return cls(
            params=dict(doc["params"]),
            status=doc.get("status", "done"),
            metrics={k: (nan if v is None else v) for k, v in doc.get("metrics", {}).items()},
            curves={k: [nan if v is None else v for v in vs] for k, vs in doc.get("curves", {}).items()},
            diverged_epoch=doc.get("diverged_epoch"),
            error=doc.get("error"),
            weights=doc.get("weights"),
            averaged_weights=doc.get("averaged_weights"),
            optimizer_state=doc.get("optimizer_state"),
        )


def _flat_json_safe(params: dict[str, Any]) -> dict[str, Any]:
    """``params`` itself when it is a flat dict with no non-finite float (the common case, checked
    without a copy), else :func:`json_safe` of it."""
    for v in params.values():
        kind = type(v)
        if kind is float and not math.isfinite(v) or kind in (dict, list, tuple):
            return json_safe(params)
    return params


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float, however deeply nested, replaced by ``None`` (strict JSON).

    A value that strict JSON already takes (checked by the C encoder, no copy made) is returned as it is;
    only one holding a non-finite float (or a type ``json`` does not know) is rebuilt, value by value.
    """
    try:
        json.dumps(value, allow_nan=False)
    except (ValueError, TypeError):
        return _json_safe(value)
    return value


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return _finite_or_none(value)
