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


def test_chunks_and_the_chunk_probe_run_with_the_experiments_thread_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    from decaylab.lab.backends import run_chunk
    from decaylab.lab.experiments import get_experiment
    from decaylab.lab.runner import RunRequest, execute
    from decaylab.lab.store import Store
    from decaylab.results import Outcome

    exp = get_experiment("ridge-path")
    assert exp.threads == 1
    seen: dict[str, int] = {}

    def chunk_size(self: object, opts: object, n: int, engine: str) -> int:
        seen["probe"] = torch.get_num_threads()
        return n

    def train(self: object, opts: object, configs: list, engine: str, progress: object = None) -> list:
        seen["chunk"] = torch.get_num_threads()
        return [Outcome() for _ in configs]

    monkeypatch.setattr(type(exp), "chunk_size", chunk_size)
    monkeypatch.setattr(type(exp), "run_chunk", train)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        run_chunk("ridge-path", {}, [], "sequential")
        assert seen == {"chunk": 1}
        opts = {o.name: o.parse(o.default, o.flag, exp.name) for o in exp.options}
        assert execute(Store("threads.db"), RunRequest(exp, opts)).status == "finished"
        assert seen == {"chunk": 1, "probe": 1}
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
