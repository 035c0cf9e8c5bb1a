import pytest
import torch

from decaylab.threads import limited_threads
from decaylab.validation import InvalidParameterError


def test_caps_torch_threads_and_restores_them_even_on_error():
    before = torch.get_num_threads()
    with pytest.raises(RuntimeError):
        with limited_threads(1):
            assert torch.get_num_threads() == 1
            raise RuntimeError("boom")
    assert torch.get_num_threads() == before


def test_caps_blas_threads():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    with limited_threads(1):
        infos = threadpoolctl.threadpool_info()
        assert all(info["num_threads"] == 1 for info in infos)


def test_never_raises_the_thread_count():
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        with limited_threads(8):
            assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_rejects_a_non_positive_count():
    with pytest.raises(InvalidParameterError, match="'n' parameter of limited_threads"):
        with limited_threads(0):
            pass
