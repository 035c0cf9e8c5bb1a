"""Where a run ran: the versions, CPU and math libraries that decide its last digits.

Float32 results drift between CPUs (AVX2 vs AVX-512 kernels), thread counts and BLAS builds, so every
run records, next to its numbers, what produced them::

    decaylab, torch, numpy and Python versions; the OS; the CPU model (/proc/cpuinfo "model name",
    else platform.processor()); the kernels torch dispatches to (torch.backends.cpu.get_cpu_capability());
    $ATEN_CPU_CAPABILITY if set; torch's intra-op thread count; torch's BLAS (BLAS_INFO in
    torch.__config__.show()) and numpy's (numpy.show_config(mode="dicts")).

:func:`collect` takes a few milliseconds once torch is imported (it is, by the time a run trains).
This module imports torch only inside :func:`collect`: ``decaylab runs list`` and ``runs show`` never load it.
"""

from __future__ import annotations

import os
import platform
import re
from typing import Any

__all__ = ["collect", "describe"]


def _cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo (Linux), else what :mod:`platform` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _torch_blas(torch: Any) -> str:
    """torch's BLAS, e.g. ``"mkl 2024.2"`` (the version when torch names one)."""
    config = torch.__config__.show()
    match = re.search(r"BLAS_INFO=([^,\s]+)", config)
    name = match.group(1) if match else "unknown"
    if name == "mkl":
        version = re.search(r"Math Kernel Library Version ([\w.]+)", config)
        return f"mkl {version.group(1)}" if version else name
    return name


def _numpy_blas(numpy: Any) -> str:
    """numpy's BLAS name and version from its build configuration."""
    try:
        info = numpy.show_config(mode="dicts")["Build Dependencies"]["blas"]
    except Exception:  # older numpy without mode="dicts", or a build without the section
        return "unknown"
    return " ".join(str(info[k]) for k in ("name", "version") if info.get(k)) or "unknown"


def collect() -> dict[str, Any]:
    """The environment of this process, as a JSON-ready dict (keys listed in the module docstring)."""
    import numpy
    import torch

    from decaylab import __version__

    return {
        "decaylab": __version__,
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
        "os": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "aten_cpu_capability": os.environ.get("ATEN_CPU_CAPABILITY"),
        "torch_threads": torch.get_num_threads(),
        "torch_blas": _torch_blas(torch),
        "numpy_blas": _numpy_blas(numpy),
    }


def describe(env: dict[str, Any] | None) -> list[str]:
    """Two lines for ``decaylab runs show``: versions and OS; CPU, kernels, threads and BLAS."""
    if not env:
        return ["environment: not recorded (a run stored before decaylab recorded it)"]
    forced = f", ATEN_CPU_CAPABILITY={env['aten_cpu_capability']}" if env.get("aten_cpu_capability") else ""
    lines = [
        f"environment: decaylab {env.get('decaylab')}, torch {env.get('torch')}, numpy {env.get('numpy')},"
        f" Python {env.get('python')}, {env.get('os')}",
        f"cpu: {env.get('cpu')}; torch kernels {env.get('cpu_capability')}{forced}, {env.get('torch_threads')} threads;"
        f" BLAS torch {env.get('torch_blas')}, numpy {env.get('numpy_blas')}",
    ]
    for i, later in enumerate(env.get("resumed_in") or [], 1):
        lines.append(
            f"resumed ({i}) with: torch {later.get('torch')}, {later.get('cpu')}, kernels {later.get('cpu_capability')},"
            f" {later.get('torch_threads')} threads"
        )
    return lines
