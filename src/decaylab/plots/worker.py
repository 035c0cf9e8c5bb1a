"""Render a run's figures in a forked process, so that matplotlib loads while the parent trains.

``import torch`` (~2 s) and ``import matplotlib`` with its first figure (~1 s) are both mostly
single-threaded start-up work. Forked before either is imported, a worker does the matplotlib half on
the other core; the parent sends it the results when training ends and collects the file names.
Where ``fork`` is not available (Windows, macOS' default), figures are drawn in-process.
"""

from __future__ import annotations

import multiprocessing
import signal
import sys
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Sequence

from decaylab.results import ConfigResult

__all__ = ["FigureWorker"]


def _warm_up() -> None:
    """Import pyplot and draw one throw-away figure: loads fonts and the Agg renderer."""
    from decaylab.plots import new_figure

    fig, axes = new_figure(1, 1)
    axes[0, 0].plot([1, 2], [1, 10], label="x")
    axes[0, 0].set_yscale("log")
    axes[0, 0].legend()
    axes[0, 0].set_title("λ ‖w‖₂")
    fig.canvas.draw()
    import matplotlib.pyplot as plt

    plt.close(fig)


def _draw(experiment: str, docs: list[dict[str, Any]], opts: dict[str, Any], out: str) -> list[str]:
    from decaylab.experiments import get_experiment

    results = [ConfigResult.from_json(d) for d in docs]
    return [str(p) for p in get_experiment(experiment).figures(results, opts, Path(out))]


def _serve(conn: Connection, parent_end: Connection) -> None:
    # The parent's end came along with the fork: close it, so that the parent's death reads as EOF.
    parent_end.close()
    # Ctrl-C reaches the whole process group; the parent decides what it means, the worker just ends.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        _warm_up()
    except Exception:  # drawing for real will report the problem
        pass
    try:
        message = conn.recv()
    except EOFError:
        return
    if message is None:
        return
    try:
        conn.send(("ok", _draw(*message)))
    except BaseException as exc:  # sent back, raised in the parent
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


class FigureWorker:
    """``worker = FigureWorker()`` early; later ``worker.draw(name, results, opts, out)`` returns the paths."""

    def __init__(self) -> None:
        self._conn: Connection | None = None
        self._proc: Any = None
        if "fork" in multiprocessing.get_all_start_methods() and sys.platform != "darwin":
            ctx = multiprocessing.get_context("fork")
            self._conn, child = ctx.Pipe()
            self._proc = ctx.Process(
                target=_serve, args=(child, self._conn), daemon=True, name="decaylab-figures"
            )
            self._proc.start()
            child.close()

    def draw(self, experiment: str, results: Sequence[ConfigResult], opts: dict[str, Any], out: Path) -> list[Path]:
        """Draw the figures of ``experiment`` into ``out``; raises ``RuntimeError`` if drawing failed."""
        docs = [r.to_json() for r in results]
        if self._conn is None:
            return [Path(p) for p in _draw(experiment, docs, opts, str(out))]
        try:
            self._conn.send((experiment, docs, opts, str(out)))
            status, payload = self._conn.recv()
        except (EOFError, BrokenPipeError, OSError):  # the worker died: draw here instead
            return [Path(p) for p in _draw(experiment, docs, opts, str(out))]
        finally:
            self.close()
        if status != "ok":
            raise RuntimeError(f"drawing the figures failed: {payload}")
        return [Path(p) for p in payload]

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
            self._proc.join(timeout=5)
            self._proc = None
