"""Ctrl-C and SIGTERM end a command the same way: as one exception in the main thread.

Python turns SIGINT (Ctrl-C) into :class:`KeyboardInterrupt`; SIGTERM (``kill``, a scheduler, a
container stop) would end the process without running any ``finally`` block, or, once Ray is loaded,
raise ``SystemExit`` from Ray's own handler. Inside :func:`signals_as_interrupt` both raise
:class:`Interrupted` (a ``KeyboardInterrupt``), so one ``except KeyboardInterrupt`` path marks the run
``interrupted``, stops Ray and prints one line, whichever signal came.

:func:`interrupt_received` remembers that a signal came even if the exception it raised was swallowed
on its way up (an interrupted ``import`` of a C extension fails again on every later import with an
unrelated ``ImportError``): the backends ask it before they record an error as a failed chunk.

:func:`signals_deferred` holds both signals back for a few statements that must not be cut in half
(writing a run's status) and delivers a signal that came meanwhile right after them.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

__all__ = [
    "Interrupted",
    "interrupt_received",
    "reinstall",
    "signals_as_interrupt",
    "signals_deferred",
]

SIGNALS = (signal.SIGINT, signal.SIGTERM)

_state: dict[str, Any] = {"received": None, "installed": False}


class Interrupted(KeyboardInterrupt):
    """Raised in the main thread by SIGINT or SIGTERM inside :func:`signals_as_interrupt`."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_interrupted(signum: int, frame: FrameType | None) -> None:
    _state["received"] = signum
    raise Interrupted(signum)


def interrupt_received() -> int | None:
    """The signal number of the last SIGINT/SIGTERM seen inside :func:`signals_as_interrupt`, else ``None``."""
    return _state["received"]


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def signals_as_interrupt() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM raise :class:`Interrupted` in the main thread.

    A signal that was ignored when the block starts (SIGINT in a background job started by a shell)
    stays ignored. Outside the main thread the block changes nothing. The previous handlers are put
    back at the end.
    """
    if not _in_main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in SIGNALS}
    _state.update(received=None, installed=True)
    try:
        reinstall()
        yield
    finally:
        _state["installed"] = False
        for s, handler in previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)


def reinstall() -> None:
    """Put :func:`signals_as_interrupt`'s handlers back after a library replaced them (``ray.init``
    installs its own SIGTERM handler). Does nothing outside that block or outside the main thread."""
    if not _state["installed"] or not _in_main_thread():
        return
    for s in SIGNALS:
        if signal.getsignal(s) is not signal.SIG_IGN:
            signal.signal(s, _raise_interrupted)


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back during the block; a signal that came meanwhile is delivered at its
    end (to the handler in place before the block), so a short critical write is never cut in half.

    Outside the main thread the block changes nothing (signals are delivered to the main thread only).
    """
    if not _in_main_thread():
        yield
        return
    came: list[int] = []
    previous = {s: signal.getsignal(s) for s in SIGNALS}
    for s, handler in previous.items():
        if handler is not signal.SIG_IGN:
            signal.signal(s, lambda signum, frame: came.append(signum))
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)
        if came:
            signal.raise_signal(came[0])
