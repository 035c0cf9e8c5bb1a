"""Keep freed tensor memory in the process, so that training does not pay page faults every step.

PyTorch's CPU allocator takes every tensor from ``malloc`` and gives it back on ``free``. glibc serves
blocks above its mmap threshold (128 KiB at first) with a fresh ``mmap`` and unmaps them when freed,
and trims the heap top back to the kernel; the next tensor of that size then touches new pages, one
page fault per 4 KiB. A batched training step allocates and frees its activations (a few hundred KiB
to a few MiB each) every step: measured on the digits MLP sweep, 142,000 page faults and ~10 % of the
run in the kernel. PyTorch's CPU tuning guide recommends jemalloc or tcmalloc for the same reason; this
module gets the same effect from glibc itself, with ``mallopt``:

* ``M_MMAP_THRESHOLD`` = 32 MiB (glibc's largest): blocks below it come from the heap, and are reused;
* ``M_TRIM_THRESHOLD`` = 1 GiB: the heap top is given back to the kernel only when that much is free.

The price is that freed memory stays with the process until it ends: up to about 1 GiB at the top of
each malloc arena, and (as always with malloc) freed blocks below live ones. It is meant for
processes that train (the ``decaylab`` command and its Ray workers), not for a library import: the
engine never calls it by itself.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

__all__ = ["retain_freed_memory"]

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
MMAP_THRESHOLD_BYTES = 32 << 20  # glibc's maximum (HEAP_MAX_SIZE / 2 on 64-bit)
TRIM_THRESHOLD_BYTES = 1 << 30

_applied: bool | None = None


def retain_freed_memory() -> bool:
    """Tune glibc's ``malloc`` as the module says; return whether it applied (False off glibc, e.g. macOS).

    Idempotent: later calls return the first call's answer without calling ``mallopt`` again.
    """
    global _applied
    if _applied is None:
        _applied = _mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) and _mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    return _applied


def _mallopt(param: int, value: int) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(param, value))
