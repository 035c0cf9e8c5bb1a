"""Run the ``decaylab`` command with one phase held, for the signal tests (a script, not a test module).

    python tests/slow_phase.py PHASE decaylab-arguments...

When the command reaches PHASE it prints ``PHASE <name>`` on stdout and sleeps for ever, so that a
test can send a signal in exactly that phase instead of guessing a time:

* ``startup``  — before the run is stored (the CLI makes the run id);
* ``planning`` — the experiment's ``chunk_size`` (the chunk-size probe);
* ``training`` — the first chunk's training (local backend);
* ``figures``  — drawing the figures, in the forked figure worker (the parent waits in ``collect``);
* ``ray``      — in the driver after the first Ray chunk has come back, with Ray running.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any


def _hold(name: str) -> None:
    os.write(1, f"PHASE {name}\n".encode())  # one write: the figure worker and its helper both get here
    while True:
        time.sleep(0.5)


def _held(name: str, original: Any) -> Any:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _hold(name)
        return original(*args, **kwargs)

    return wrapper


def main() -> None:
    phase, argv = sys.argv[1], sys.argv[2:]
    if phase == "startup":
        import decaylab.lab.runner

        decaylab.lab.runner.new_run_id = _held(phase, decaylab.lab.runner.new_run_id)
    elif phase == "planning":
        from decaylab.lab.experiments import get_experiment

        cls = type(get_experiment(argv[1]))
        cls.chunk_size = _held(phase, cls.chunk_size)
    elif phase == "training":
        import decaylab.lab.backends

        decaylab.lab.backends.run_chunk = _held(phase, decaylab.lab.backends.run_chunk)
    elif phase == "figures":
        import decaylab.lab.plots.worker

        decaylab.lab.plots.worker._draw = _held(phase, decaylab.lab.plots.worker._draw)
    elif phase == "ray":
        import decaylab.lab.runner

        decaylab.lab.runner._store_chunk = _held(phase, decaylab.lab.runner._store_chunk)
    else:
        raise SystemExit(f"unknown phase {phase!r}")
    from decaylab.lab.cli import console

    sys.argv = ["decaylab", *argv]
    console()


if __name__ == "__main__":
    main()
