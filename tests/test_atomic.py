"""results.json and the figures are written atomically: a full disk leaves the old file or none, never
a truncated one, and the command says so in one line (exit 1) while the run stays stored."""

from __future__ import annotations

import errno
import json
import subprocess
import uuid
from pathlib import Path
from typing import IO, Any

import pytest

import decaylab.lab.atomic
from decaylab.lab.atomic import atomic_write
from decaylab.lab.outputs import write_json
from decaylab.lab.store import Store

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_END = b"IEND\xaeB`\x82"  # the last chunk of every complete PNG
TINY = ["run", "d2l-linear", "--lambd", "0,1", "--epochs", "2", "--quiet"]


class _DiskFullAfter:
    """A file whose ``write`` stores ``room`` bytes in all, then raises ENOSPC as a full disk does."""

    def __init__(self, f: IO[bytes], room: int) -> None:
        self._f, self._room = f, room

    def write(self, data: Any) -> int:
        data = bytes(data)
        self._f.write(data[: self._room])
        if len(data) > self._room:
            self._room = 0
            raise OSError(errno.ENOSPC, "No space left on device")
        self._room -= len(data)
        return len(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)

    def __enter__(self) -> _DiskFullAfter:
        return self

    def __exit__(self, *exc: object) -> None:
        self._f.close()


def disk_full_for(monkeypatch: pytest.MonkeyPatch, names: tuple[str, ...], room: int = 100) -> None:
    """Writes of files named ``names`` get ``room`` bytes, then ENOSPC (in this process and forked ones)."""
    opener = decaylab.lab.atomic._open_temporary

    def full(target: Path) -> tuple[Any, str]:
        f, tmp = opener(target)
        return (_DiskFullAfter(f, room) if target.name in names else f), tmp

    monkeypatch.setattr(decaylab.lab.atomic, "_open_temporary", full)


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "results.json"
    write_json({"old": list(range(100))}, target)
    before = target.read_bytes()
    disk_full_for(monkeypatch, ("results.json",))
    with pytest.raises(OSError) as info:
        write_json({"new": list(range(1000))}, target)
    assert info.value.errno == errno.ENOSPC
    assert target.read_bytes() == before and json.loads(before) == {"old": list(range(100))}
    assert leftovers(tmp_path) == []


def test_a_written_file_is_whole_with_the_usual_mode(tmp_path: Path) -> None:
    target = tmp_path / "a.bin"
    with atomic_write(target) as f:
        f.write(b"x" * 100_000)
    assert target.read_bytes() == b"x" * 100_000 and leftovers(tmp_path) == []
    probe = tmp_path / "probe"
    probe.write_bytes(b"")
    assert target.stat().st_mode & 0o777 == probe.stat().st_mode & 0o777  # not mkstemp's 0600


def test_an_error_inside_the_block_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "a.txt"
    target.write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt), atomic_write(target) as f:
        f.write(b"half of the new")
        raise KeyboardInterrupt
    assert target.read_bytes() == b"old" and leftovers(tmp_path) == []


def test_a_signal_right_after_the_temporary_file_is_created_leaves_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real SIGINT raised the moment ``mkstemp`` has created the file (Python runs its handler at the next
    bytecode, before ``atomic_write`` knows the file's name unless signals are held back there): KeyboardInterrupt
    reaches the caller, the old file stays, no temporary file is left (a CI run once found one after a SIGTERM)."""
    import signal
    import tempfile

    target = tmp_path / "results.json"
    target.write_bytes(b"old")
    mkstemp = tempfile.mkstemp

    def interrupted_mkstemp(*args: Any, **kwargs: Any) -> tuple[int, str]:
        created = mkstemp(*args, **kwargs)
        signal.raise_signal(signal.SIGINT)  # Python's default handler: KeyboardInterrupt at the next bytecode
        return created

    monkeypatch.setattr(tempfile, "mkstemp", interrupted_mkstemp)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt), atomic_write(target) as f:
            f.write(b"new")
    finally:
        signal.signal(signal.SIGINT, previous)
    assert target.read_bytes() == b"old" and leftovers(tmp_path) == []


@pytest.mark.parametrize("full", ["results.json", "curves.png"])
def test_a_full_disk_is_one_line_and_keeps_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli: Any, full: str
) -> None:
    """The figures are written in the forked figure worker: the patch reaches it through the fork."""
    store, out = tmp_path / "s.db", tmp_path / "out"
    code, _, err = cli(*TINY, "--store", str(store), "--out", str(out))
    assert code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert sorted(before) == ["curves.png", "norms.png", "results.json"]

    disk_full_for(monkeypatch, (full,))
    code, outtext, err = cli(*TINY, "--lambd", "0,1,2", "--store", str(store), "--out", str(out))
    runs = Store(store).list_runs()
    assert code == 1 and outtext == ""
    assert err.splitlines() == [
        f"decaylab: error: run {runs[0].run_id} is finished in {store}, but its outputs could not be written:"
        " OSError: [Errno 28] No space left on device"
    ]
    assert [r.status for r in runs] == ["finished", "finished"]  # nothing stored is lost
    assert (out / full).read_bytes() == before[full]  # the old file, whole
    assert leftovers(out) == []


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Any:
    """A 64 KiB tmpfs (needs root and permission to mount; skipped otherwise)."""
    mount = tmp_path / f"tmpfs-{uuid.uuid4().hex[:6]}"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_a_really_full_disk_leaves_only_whole_files(tiny_disk: Path, tmp_path: Path, cli: Any) -> None:
    store = tmp_path / "s.db"
    code, _, err = cli(*TINY, "--lambd", "0:3:8", "--store", str(store), "--out", str(tiny_disk))
    (run,) = Store(store).list_runs()
    assert code == 1 and run.status == "finished"
    assert err.splitlines() == [
        f"decaylab: error: run {run.run_id} is finished in {store}, but its outputs could not be written:"
        " OSError: [Errno 28] No space left on device"
    ]
    assert leftovers(tiny_disk) == []
    for path in tiny_disk.iterdir():
        data = path.read_bytes()
        if path.suffix == ".png":
            assert data.startswith(PNG_SIGNATURE) and data.endswith(PNG_END), path.name
        else:
            assert json.loads(data)["run_id"] == run.run_id
