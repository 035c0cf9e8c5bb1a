"""decaylab.memory: glibc is asked to keep freed memory (its effect, page faults per step, is measured by
``benchmarks/sweep.py``, which prints the minor page faults of each engine).

``mallopt`` changes the whole process, so the real call runs in a fresh one.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from decaylab import memory


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_glibc_accepts_both_settings() -> None:
    """mallopt returns 0 for a value it rejects (an mmap threshold above its limit, say): both must be taken."""
    code = "from decaylab.memory import retain_freed_memory as r; print(r(), r())"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "True"]


def test_the_settings_are_glibcs_mmap_and_trim_thresholds(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, int]] = []

    class FakeLibc:
        def __init__(self, _: Any) -> None:
            self.mallopt = self

        def __call__(self, param: int, value: int) -> int:
            calls.append((param, value))
            return 1

    monkeypatch.setattr(memory.ctypes, "CDLL", FakeLibc)
    monkeypatch.setattr(memory, "_applied", None)
    monkeypatch.setattr(memory.sys, "platform", "linux")
    assert memory.retain_freed_memory() is True
    assert memory.retain_freed_memory() is True  # idempotent: no second call
    assert calls == [(-3, 32 << 20), (-1, 1 << 30)]  # M_MMAP_THRESHOLD (glibc's maximum), M_TRIM_THRESHOLD


def test_off_linux_nothing_is_called(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory, "_applied", None)
    monkeypatch.setattr(memory.sys, "platform", "darwin")
    monkeypatch.setattr(memory.ctypes, "CDLL", lambda _: pytest.fail("CDLL loaded off Linux"))
    assert memory.retain_freed_memory() is False
