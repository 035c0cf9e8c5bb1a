"""Write a file so that readers see the old file or the whole new one, never a part.

The content goes to a temporary file in the target's own directory (same file system, so the rename
is atomic), is flushed and ``fsync``-ed, and the temporary file is renamed over the target with
:func:`os.replace` (POSIX ``rename(2)``; on Windows ``MoveFileEx`` with replace). The directory is
then synced so that the rename itself survives a power cut. If anything fails on the way (a full disk,
``ENOSPC``, a Ctrl-C), the temporary file is removed and the target is left as it was: no truncated
``results.json``, no 0-byte PNG. Ctrl-C and SIGTERM are held back while the temporary file is created, so
that none comes between its creation and the clean-up that would remove it.

This is the recipe of SQLite's and git's lock files and of the ``atomicwrites`` package (now
unmaintained, hence these few lines here).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO

from decaylab.lab.interrupts import signals_deferred

__all__ = ["atomic_write"]


@contextmanager
def atomic_write(path: str | os.PathLike[str]) -> Iterator[IO[bytes]]:
    """``with atomic_write(path) as f: f.write(data)``: ``path`` holds ``data`` after the block, or is
    unchanged if the block raises.

    Raises whatever writing, syncing or renaming raises (``OSError`` with ``errno.ENOSPC`` on a full
    disk), after removing the temporary file.
    """
    target = Path(path)
    tmp: str | None = None
    try:
        # a Ctrl-C or SIGTERM between the file's creation and ``tmp`` naming it would leave it behind: held back
        # until ``tmp`` is set, then delivered here, inside the try that removes the file
        with signals_deferred():
            f, tmp = _open_temporary(target)
        with f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a written file gets the usual mode
        os.replace(tmp, target)
    except BaseException:
        if tmp is not None:
            with suppress(OSError):
                os.unlink(tmp)
        raise
    _sync_directory(target.parent)


def _open_temporary(target: Path) -> tuple[IO[bytes], str]:
    """A new file beside ``target`` (``.NAME.XXXXXXXX.tmp``), open for binary writing, and its path."""
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    return os.fdopen(fd, "wb"), tmp


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _sync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable; a no-op where directories cannot be opened (Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        with suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)
