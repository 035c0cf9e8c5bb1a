"""Dropout that draws from each configuration's own random stream, for the engines.

The MLP engine's reference builds its models with :class:`StreamDropout` (``draw_at_zero``). For the module
engine, :func:`with_stream_dropout` replaces every elementwise dropout layer of a model (``nn.Dropout``,
:class:`decaylab.Dropout`) by :class:`StreamDropout`, whose uniforms come from a :class:`Draws` source: the
configuration's generator when it trains alone, masks queued by the batched engine (drawn from the same
generators, so a configuration's masks depend only on its seed, not on the stack it trains in), or a recorder
of the shapes the masks need. The stacked forward (:mod:`decaylab.engine.stacked`) applies the same rule
``x·1[u ≥ p]/(1 − p)`` to its queued uniforms.
"""

from __future__ import annotations

import torch
from torch import nn

from decaylab.layers import Dropout

__all__ = ["Draws", "StreamDropout", "dropout_p", "with_stream_dropout"]

DROPOUT_TYPES: tuple[type, ...] = (nn.Dropout,)  # exactly these classes: a subclass may change what dropout does


def dropout_p(module: nn.Module) -> float | None:
    """``p`` of an elementwise dropout module (``nn.Dropout``, :class:`decaylab.Dropout`), else None."""
    if isinstance(module, Dropout) or (isinstance(module, nn.Dropout) and type(module) in DROPOUT_TYPES):
        return float(module.p)
    return None


class Draws:
    """Where dropout layers get their uniforms: a generator (sequential), queued tensors (batched), or a recorder."""

    def __init__(self, gen: torch.Generator | None = None) -> None:
        self.gen = gen
        self.queue: list[torch.Tensor] = []
        self.shapes: list[tuple[tuple[int, ...], torch.dtype]] | None = None

    def next(self, x: torch.Tensor) -> torch.Tensor | None:
        if self.shapes is not None:  # recording the calls' shapes: no mask
            self.shapes.append((tuple(x.shape), x.dtype))
            return None
        if self.gen is not None:
            return torch.rand(x.shape, generator=self.gen, dtype=x.dtype)
        return self.queue.pop(0)


class StreamDropout(nn.Module):
    """Inverted dropout ``x·1[u ≥ p]/(1 − p)`` whose uniforms ``u`` come from a :class:`Draws` source.

    ``draw_at_zero``: draw the uniforms at ``p = 0`` too (the MLP engines, where ``p`` varies between the
    configurations of one stream and every configuration must draw alike); otherwise ``p = 0`` is the identity
    without a draw (the module engine: ``p`` is the model's own, the same for every configuration). With
    ``p = 1`` the output is ``x·0``, not a fresh zero tensor: the layers before it then get a zero gradient rather
    than none, and ``torch.optim`` still applies their weight decay (it skips parameters whose ``.grad`` is None),
    as the batched engines do.
    """

    def __init__(self, p: float, draws: Draws, draw_at_zero: bool = False) -> None:
        super().__init__()
        self.p, self.draws, self.draw_at_zero = p, draws, draw_at_zero

    def extra_repr(self) -> str:
        return f"p={self.p:g}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or (self.p == 0.0 and not self.draw_at_zero):
            return x
        u = self.draws.next(x)
        if u is None:
            return x
        keep = (u >= self.p).to(x.dtype)
        if self.p >= 1.0:
            return x * keep
        return x * keep / (1.0 - self.p)


def with_stream_dropout(model: nn.Module, draws: Draws) -> int:
    """Replace every elementwise dropout module of ``model`` (in place) by :class:`StreamDropout`; return how many."""
    count = 0
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            p = dropout_p(child)
            if p is not None:
                setattr(module, child_name, StreamDropout(p, draws))
                count += 1
    return count
