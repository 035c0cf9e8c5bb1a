"""Per-configuration random streams.

A configuration's numbers may depend only on its own seed, never on which configurations ran beside
it, in which chunk, or on which backend. So every source of randomness draws from its own
``torch.Generator``, derived from the seed and the name of the stream:

=========  ===========================================================
stream     draws
=========  ===========================================================
``data``   the synthetic data set (features, targets, noise)
``init``   the initial parameters
``order``  the minibatch order, one permutation per epoch
``dropout`` dropout masks, one draw per layer and step
``noise``  input noise, one draw per step
=========  ===========================================================

Adding dropout to a configuration therefore leaves its batch order and its initial weights unchanged,
and two configurations with the same seed see the same data, the same start and the same batches.
"""

from __future__ import annotations

import hashlib

import torch

__all__ = ["STREAMS", "generator", "stream_seed"]

STREAMS = ("data", "init", "order", "dropout", "noise")


def stream_seed(seed: int, stream: str) -> int:
    """A 63-bit seed for ``stream``, a fixed function of ``(seed, stream)`` (BLAKE2b, not Python's hash)."""
    if stream not in STREAMS:
        raise ValueError(f"The 'stream' parameter of stream_seed must be one of {STREAMS}. Got {stream!r}.")
    digest = hashlib.blake2b(f"decaylab/{int(seed)}/{stream}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def generator(seed: int, stream: str) -> torch.Generator:
    """A fresh CPU ``torch.Generator`` for ``stream`` of configuration seed ``seed``."""
    g = torch.Generator()
    g.manual_seed(stream_seed(seed, stream))
    return g
