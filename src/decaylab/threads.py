"""How many threads the numerical libraries may use while a piece of work runs.

The models of the experiments are small: their matrix products take microseconds, and a pool of
threads costs more to wake than it saves — on a shared 2-core machine a contended pool is up to
~10x slower than one thread. :func:`limited_threads` caps PyTorch's intra-op pool and, when
``threadpoolctl`` is installed (scikit-learn depends on it), NumPy's BLAS, and restores both after.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from decaylab.validation import check_int

__all__ = ["limited_threads"]


@contextmanager
def limited_threads(n: int = 1, *, flush_denormal: bool = False) -> Iterator[None]:
    """Run the ``with`` block with at most ``n`` PyTorch threads (and ``n`` BLAS threads).

    ``flush_denormal=True`` also flushes denormal floats to zero on the CPU (many small weights decayed
    towards 0 otherwise run into slow denormal arithmetic); it is switched off again afterwards.
    """
    import torch

    n = check_int(n, "n", "limited_threads", low=1)
    before = torch.get_num_threads()
    flushed = False
    with ExitStack() as stack:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:  # BLAS keeps its own setting
            pass
        else:
            stack.enter_context(threadpool_limits(limits=n))
        torch.set_num_threads(min(n, before))
        try:
            if flush_denormal:
                flushed = torch.set_flush_denormal(True)
            yield
        finally:
            if flushed:
                torch.set_flush_denormal(False)
            torch.set_num_threads(before)
