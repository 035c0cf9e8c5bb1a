"""Render a run's figures in a forked process, so that matplotlib loads while the parent trains.

``import torch`` (~2 s) and ``import matplotlib`` with its first figure (~1 s) are both mostly
single-threaded start-up work. Forked before either is imported, a worker does the matplotlib half on
the other core; the parent sends it the results when training ends and collects the file names.
The worker then renders the figures on both cores (the parent has little left to do): it forks a
helper that writes every other figure, see :func:`decaylab.lab.plots.rendering_share`.
Where ``fork`` is not available (Windows, macOS' default), figures are drawn in-process.

Signals: Ctrl-C reaches the whole process group, but only the parent decides what it means (it ends
the run ``interrupted`` and stops the worker with :meth:`FigureWorker.terminate`), so the worker and
its helper ignore SIGINT. SIGTERM ends the worker at once and quietly, its helper with it. Both
signals are blocked from the fork until the worker's own handlers are in place, so no handler
inherited from the parent ever runs in the worker.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import signal
import sys
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from decaylab.results import ConfigResult

__all__ = ["FigureWorker"]

CLOSE_TIMEOUT_S = 5.0  # close() waits this long for the worker to end, then terminates it
_SIGNALS = {signal.SIGINT, signal.SIGTERM}
_helper: dict[str, int] = {}  # in the worker: the pid of the helper drawing beside it


class _Unpicklable(RuntimeError):
    """An error of the worker that could not be sent as it was; its text starts with the original type."""


def _portable(exc: BaseException) -> BaseException:
    """``exc`` if it can be pickled (an ``OSError`` keeps its errno), else :class:`_Unpicklable` with its text."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return _Unpicklable(f"{type(exc).__name__}: {exc}")
    return exc


def _end_quietly(signum: int, frame: Any) -> None:
    """SIGTERM in the worker or its helper: stop the helper (from the worker), then leave through
    ``SystemExit``, so that a figure being written removes its temporary file on the way
    (:func:`decaylab.lab.atomic.atomic_write`) and nothing prints a traceback."""
    pid = _helper.get("pid")
    if pid:
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            pass
    raise SystemExit(128 + signum)


def _warm_up(
    experiment: str | None = None, opts: dict[str, Any] | None = None, stop: Callable[[], bool] | None = None
) -> None:
    """Import pyplot and draw one throw-away figure: loads fonts and the Agg renderer. With
    ``experiment``, also import its figures' module (``decaylab.lab.plots.NAME``), so that drawing,
    once the results come, starts at once; with ``opts`` too, build and lay out ahead the figures of
    those options (:func:`decaylab.lab.plots.prepare`), so that only their data is left to draw — until
    ``stop()`` says the results have come."""
    import importlib

    from decaylab.lab.plots import new_figure, prepare

    if experiment is not None:
        importlib.import_module(f"decaylab.lab.plots.{experiment.replace('-', '_')}")
        if opts is not None:
            from decaylab.lab.experiments import get_experiment

            if prepare(get_experiment(experiment), opts, stop):  # the figures themselves were the warm-up
                return
    fig, axes = new_figure(1, 1)
    axes[0, 0].plot([1, 2], [1, 10], label="x")
    axes[0, 0].set_yscale("log")
    axes[0, 0].legend()
    axes[0, 0].set_title("λ ‖w‖₂")
    fig.canvas.draw()
    import matplotlib.pyplot as plt

    plt.close(fig)


def _own_fonts() -> None:
    """In a process forked after fonts were opened: forget every font object of the parent, so that this
    process reads its own.

    matplotlib's font objects read the font file through a Python file object, seek then read; after
    a fork parent and child share that file's offset, so two processes drawing at once read each other's
    glyphs (seen: ``FT_Load_Glyph ... too many hints``). matplotlib empties its font cache in a forked child
    itself; the parsed mathtext (tick labels such as 10⁻³ on log axes) keeps its fonts in a cache of its
    own, emptied here.
    """
    from matplotlib.mathtext import MathTextParser

    parser: Any = MathTextParser  # its cache is a functools.lru_cache on a method
    parser._parse_cached.cache_clear()


def _draw(experiment: str, results: list[ConfigResult], opts: dict[str, Any], out: str) -> list[str]:
    from decaylab.lab.experiments import get_experiment
    from decaylab.lab.plots import figures

    return [str(p) for p in figures(get_experiment(experiment), results, opts, Path(out))]


def _draw_on_two_cores(experiment: str, results: list[ConfigResult], opts: dict[str, Any], out: str) -> list[str]:
    """:func:`_draw`, the figures shared with a forked helper (even ones here, odd ones there).

    Every figure is built in both processes (cheap) and written by one (layout and rasterizing are
    nearly all of the cost), so a run with two figures takes the time of one.
    """
    from decaylab.lab.plots import rendering_share

    read_end, write_end = os.pipe()
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    pid = os.fork()
    if pid == 0:  # the helper: write the odd figures, report an error on the pipe, never return
        _helper.clear()
        _own_fonts()
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides what Ctrl-C means
        signal.signal(signal.SIGTERM, _end_quietly)  # the worker's clean-up ends the helper
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        os.close(read_end)
        code, message = 0, b""
        try:
            with rendering_share(1, 2):
                _draw(experiment, results, opts, out)
        except BaseException as exc:
            code, message = 1, pickle.dumps(_portable(exc))
        finally:
            try:
                os.write(write_end, message)
            finally:  # whatever happens, the helper never returns into the worker's code
                os._exit(code)
    _helper["pid"] = pid
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    os.close(write_end)
    try:
        with rendering_share(0, 2):
            paths = _draw(experiment, results, opts, out)
    finally:
        with os.fdopen(read_end, "rb") as pipe:
            message = pipe.read()
        _, status = os.waitpid(pid, 0)
        _helper.clear()
    if status != 0:
        try:
            error = pickle.loads(message)
        except Exception:
            error = _Unpicklable(f"the figure helper failed (wait status {status})")
        raise error
    return paths


def _serve(
    conn: Connection, parent_end: Connection, experiment: str | None = None, opts: dict[str, Any] | None = None
) -> None:
    # Ctrl-C reaches the whole process group; the parent decides what it means (see the module's doc).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _end_quietly)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)  # blocked by the parent around the fork
    # The parent's end came along with the fork: close it, so that the parent's death reads as EOF.
    parent_end.close()
    try:
        _warm_up(experiment, opts, conn.poll)  # a short run's results may come first: then draw them
    except Exception:  # drawing for real will report the problem (a figure not prepared is drawn afresh)
        pass
    try:
        message = conn.recv()
    except EOFError:
        return
    if message is None:
        return
    try:
        conn.send(("ok", _draw_on_two_cores(*message)))
    except SystemExit:  # SIGTERM: the parent stopped waiting; multiprocessing exits with its code, quietly
        raise
    except BaseException as exc:  # sent back, raised in the parent
        try:
            conn.send(("error", _portable(exc)))
        except OSError:  # the parent is gone
            pass
    finally:
        conn.close()


class FigureWorker:
    """``worker = FigureWorker(name, opts)`` early; later ``worker.submit(name, results, opts, out)``, other
    work, and ``worker.collect()`` returns the paths. ``name`` (optional) is the experiment whose
    figures the worker will draw: it imports their module while it waits; with its ``opts`` (optional)
    it also builds and lays out those figures ahead (:func:`decaylab.lab.plots.prepare`)."""

    def __init__(self, experiment: str | None = None, opts: dict[str, Any] | None = None) -> None:
        self._conn: Connection | None = None
        self._proc: Any = None
        self._job: tuple[str, list[ConfigResult], dict[str, Any], str] | None = None
        if "fork" in multiprocessing.get_all_start_methods() and sys.platform != "darwin":
            ctx = multiprocessing.get_context("fork")
            self._conn, child = ctx.Pipe()
            self._proc = ctx.Process(
                target=_serve, args=(child, self._conn, experiment, opts), daemon=True, name="decaylab-figures"
            )
            mask = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)  # until the worker's handlers are set
            try:
                self._proc.start()
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            child.close()

    def submit(self, experiment: str, results: Sequence[ConfigResult], opts: dict[str, Any], out: Path) -> None:
        """Start drawing the figures of ``experiment`` into ``out``; :meth:`collect` waits for them.

        The results go to the worker pickled as they are (lists of floats pickle in C), not as JSON
        documents: no per-float Python work on either side.
        """
        self._job = (experiment, list(results), opts, str(out))
        if self._conn is None:
            return
        try:
            self._conn.send(self._job)
        except (BrokenPipeError, OSError):  # the worker died: collect() draws here instead
            self.close()

    def collect(self) -> list[Path]:
        """The paths of the submitted figures.

        Raises the worker's error if drawing failed: an ``OSError`` as it was (a full disk is
        ``ENOSPC``), anything else as ``RuntimeError("drawing the figures failed: ...")``.
        """
        if self._job is None:
            raise RuntimeError("collect() before submit()")
        job, self._job = self._job, None
        if self._conn is None:  # no worker, or it died before the job reached it
            return [Path(p) for p in _draw(*job)]
        try:
            status, payload = self._conn.recv()
        except (EOFError, BrokenPipeError, OSError):  # the worker died: draw here instead
            return [Path(p) for p in _draw(*job)]
        finally:
            self.close()
        if status != "ok":
            if isinstance(payload, OSError):
                raise payload
            detail = str(payload) if isinstance(payload, _Unpicklable) else f"{type(payload).__name__}: {payload}"
            raise RuntimeError(f"drawing the figures failed: {detail}")
        return [Path(p) for p in payload]

    def terminate(self) -> None:
        """Stop the worker now, whatever it is doing (SIGTERM; it stops its helper too)."""
        if self._proc is not None and self._proc.is_alive():
            self._proc.terminate()
        self.close()

    def close(self) -> None:
        """Stop the worker (it exits at once if it was never asked to draw)."""
        if self._conn is not None:
            try:
                self._conn.send(None)
            except (BrokenPipeError, OSError):
                pass
            self._conn.close()
            self._conn = None
        if self._proc is not None:
            self._proc.join(timeout=CLOSE_TIMEOUT_S)
            if self._proc.is_alive():  # still warming up (a first font-cache build): nobody will read it
                self._proc.terminate()
                self._proc.join(timeout=CLOSE_TIMEOUT_S)
            self._proc = None
