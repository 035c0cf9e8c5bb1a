"""Module-sweep benchmark: ``decaylab.engine.module`` (batched, chunk planner included) against a plain PyTorch loop.

    PYTHONPATH=src python benchmarks/sweep_module.py [--threads 1,2] [--epochs 5] [--no-write]

The plain loop trains the same configurations one after another, in the same process, on the same data,
with the same thread count: the model from its factory, ``torch.optim.SGD(decaylab.param_groups(model, λ),
momentum=0.9)``, minibatches from a permutation per epoch, and after each epoch the same evaluation the
engine does (training and validation loss and accuracy in eval mode). Both are timed by the wall clock
(``--threads`` > 1) or the process's CPU time (1 thread) in ``--repeats`` pairs, the order alternating
within each pair (batched first, then plain first, …): the speed-up is the median of the pairs' ratios
(plain / batched; the lowest and highest are printed beside it), the times are the medians, and of them the
evaluations' (both sides evaluate the same rows each epoch; the rest is training, planner included). A pair's two
runs are seconds apart, so the pair ratio is much steadier than either time on a VM whose speed drifts by
±10–20 % from minute to minute (seen: the plain loop of one case from 7.0 to 8.6 s within an hour). Each case also gives its FLOP rate — FLOPs counted by ``torch.utils.flop_counter`` on one
training step and one evaluation forward of one configuration, times the sweep's steps and rows — as a
fraction of this machine's fp32 matrix-multiply peak (a 2048² ``torch.mm``, best of 8, at the same thread
count, as ``benchmarks/sweep.py`` measures it).

Cases: 16 λ of coupled decay on scikit-learn's 8×8 digits (1200 training, 597 validation images),
SGD with momentum 0.9, batch 64 — a CNN Conv-ReLU-Pool ×2 + Linear; the same with BatchNorm; a small
transformer block (embedding, LayerNorm, MultiheadAttention, MLP) on synthetic token sequences; and a
compute-bound MLP 64-2048-2048-10 (batch 256, 4 λ), where batching cannot help and the planner must
not make it slower. The ``forward`` column says which forward the stacks used: ``stacked`` (the native
stacked forward of ``decaylab.engine.stacked``) or ``vmap`` (its fallback), or that the planner chose to train
the model itself one configuration at a time. The results are printed as
the README section, table rows included, and written into ``benchmarks/README.md`` between the
``<!-- sweep_module -->`` markers (``--no-write``: printed only).

The models repeat ``tests/sweep_models.py``'s on purpose, at the sizes of the goals (the tests' are smaller):
the benchmark is a stand-alone script that must not import from ``tests/``.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import decaylab
from decaylab.engine import module as module_engine
from decaylab.engine.module import (
    ModuleStack,
    ModuleTask,
    check_module_task,
    plan_and_start,
    train_module,
)
from decaylab.engine.task import Hyper
from decaylab.memory import retain_freed_memory
from decaylab.rng import generator, stream_seed

README = Path(__file__).with_name("README.md")
MARK_BEGIN, MARK_END = "<!-- sweep_module -->", "<!-- /sweep_module -->"


# ---------------------------------------------------------------- data and models
def digits(image: bool = True) -> tuple[Any, Any]:
    from sklearn.datasets import load_digits

    d = load_digits()
    X = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    if not image:
        X = X.flatten(1)
    y = torch.tensor(d.target)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    return (X[order[:1200]], y[order[:1200]]), (X[order[1200:]], y[order[1200:]])


def cnn(seed: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64, 10),
    )


def cnn_bn(seed: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64, 10),
    )


class Block(nn.Module):
    def __init__(self, vocab: int = 32, d: int = 32, heads: int = 4, T: int = 16, classes: int = 2) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(torch.randn(T, d) * 0.1)
        self.ln1 = nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.ln2 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))
        self.head = nn.Linear(d, classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.emb(tokens) + self.pos
        h = self.ln1(x)
        a, _ = self.attn(h, h, h, need_weights=False)
        x = x + a
        x = x + self.mlp(self.ln2(x))
        return self.head(x.mean(dim=1))


def block(seed: int) -> nn.Module:
    return Block()


def tokens() -> tuple[Any, Any]:
    g = torch.Generator().manual_seed(0)
    tok = torch.randint(0, 32, (1600, 16), generator=g)
    y = ((tok == 3).sum(dim=1) >= 1).long()
    return (tok[:1200], y[:1200]), (tok[1200:], y[1200:])


def wide(seed: int) -> nn.Module:
    return nn.Sequential(nn.Linear(64, 2048), nn.ReLU(), nn.Linear(2048, 2048), nn.ReLU(), nn.Linear(2048, 10))


def accuracy(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (out.argmax(dim=1) == y).float().mean()


# ---------------------------------------------------------------- the plain loop
def plain_loop(task: ModuleTask, hypers: list[Hyper]) -> list[list[float]]:
    """The configurations one after another, as one writes it by hand; final validation losses."""
    finals = []
    (X, y), (Xv, yv) = task.train, task.val
    for h in hypers:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(stream_seed(h.seed, "init"))
            model = task.model(h.seed)
        opt = torch.optim.SGD(decaylab.param_groups(model, h.l2), lr=h.lr, momentum=task.momentum)
        order = generator(h.seed, "order")
        batch = task.batch_size or len(y)  # None: full batch
        for _ in range(task.epochs):
            model.train()
            perm = torch.randperm(len(y), generator=order)
            for a in range(0, len(y), batch):
                idx = perm[a : a + batch]
                opt.zero_grad(set_to_none=True)
                task.loss(model(X[idx]), y[idx]).backward()
                opt.step()
            model.eval()
            row = []
            start = now()
            with torch.no_grad():
                for A, b in ((X, y), (Xv, yv)):
                    out = model(A)
                    row += [task.loss(out, b).item(), accuracy(out, b).item()]
            EVALUATION[0] += now() - start
        finals.append(row)
    return finals


# ---------------------------------------------------------------- measurement
CLOCK = "cpu"


def now() -> float:
    return time.process_time() if CLOCK == "cpu" else time.perf_counter()


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    """Seconds of ``fn()`` and, of them, its evaluations' (the plain loop's, or the engine's while
    :func:`evaluation_timed` is on)."""
    EVALUATION[0] = 0.0
    t0 = now()
    fn()
    return now() - t0, EVALUATION[0]


EVALUATION = [0.0]  # seconds spent evaluating in the run being timed


@contextlib.contextmanager
def evaluation_timed() -> Iterator[None]:
    """The engine's evaluations timed into ``EVALUATION``: every ``ModuleStack.evaluate`` (its choice between the stacked
    forward and one configuration at a time included) and, where the planner trains one configuration at a time,
    every ``_evaluate_one``."""
    originals = (ModuleStack.evaluate, module_engine._evaluate_one)

    def clocked(fn: Callable[..., Any]) -> Callable[..., Any]:
        def run(*args: Any) -> Any:
            start = now()
            try:
                return fn(*args)
            finally:
                EVALUATION[0] += now() - start
        return run

    ModuleStack.evaluate, module_engine._evaluate_one = (clocked(fn) for fn in originals)  # type: ignore[method-assign]
    try:
        yield
    finally:
        ModuleStack.evaluate, module_engine._evaluate_one = originals  # type: ignore[method-assign]


PEAKS: dict[int, float] = {}  # thread count -> the best matmul_peak of this run (the table divides by it)


def matmul_peak(n: int = 2048, repeats: int = 8) -> float:
    """fp32 FLOP/s of a large ``torch.mm`` (best of ``repeats``) at the current thread count."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    return 2 * n**3 / min(timed(lambda: torch.mm(a, b))[0] for _ in range(repeats))


def sweep_flops(task: ModuleTask, configs: int) -> float:
    """FLOPs of the sweep: per configuration, (training steps × one step's forward+backward) + evaluated rows ×
    one row's forward, per epoch (counted by ``torch.utils.flop_counter`` on one configuration)."""
    from torch.utils.flop_counter import FlopCounterMode

    model = task.model(0)
    X, y = task.train
    B = task.batch_size or len(y)  # None: full batch
    with FlopCounterMode(display=False) as counter:
        task.loss(model(X[:B]), y[:B]).backward()
    step = counter.get_total_flops()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.eval()
        model(X[:B])
    per_row = counter.get_total_flops() / B
    steps = math.ceil(len(y) / B)
    rows = len(y) + len(task.val[1])
    return configs * task.epochs * (steps * step + rows * per_row)


@dataclass
class Row:
    case: str
    configs: int
    threads: int
    sequential: float
    batched: float
    goal: float
    chunks: str
    flops: float
    peak: float
    ratios: list[float]  # plain / batched, one per pair
    clock: str = "cpu"
    forward: str = "stacked"
    evaluation: tuple[float, float] = (0.0, 0.0)  # seconds of the plain loop's and the engine's evaluations (medians)

    @property
    def speedup(self) -> float:
        """The median of the pairs' ratios."""
        return statistics.median(self.ratios)

    @property
    def training_speedup(self) -> float:
        """Plain / batched without the evaluations (the engine's planner and probes count as training)."""
        return (self.sequential - self.evaluation[0]) / (self.batched - self.evaluation[1])


def measure(case: str, task: ModuleTask, hypers: list[Hyper], goal: float, repeats: int) -> Row:
    seqs: list[tuple[float, float]] = []  # (seconds, of which evaluating), one per run
    bats: list[tuple[float, float]] = []
    # the plan train_module makes (plan_and_start); each timed run plans again, and may choose otherwise where two sizes
    # train at nearly the same rate (the block's 16 and 8)
    plan = plan_and_start(task, hypers, check_module_task(task, sorted({h.seed for h in hypers}), probe=False))[0]
    chunks = f"{len(plan)}×{max(len(r) for r in plan)}"
    if max(len(r) for r in plan) == 1:
        forward = "the model, one at a time"  # what train_module runs when the planner finds no gain in stacking
    else:
        forward = "stacked" if ModuleStack(task, hypers[:2]).stacked is not None else "vmap"

    def batched() -> None:
        with evaluation_timed():
            train_module(task, hypers)  # planner included

    for i in range(repeats):
        runs = [(bats, batched), (seqs, lambda: plain_loop(task, hypers))]
        for times, fn in runs if i % 2 == 0 else runs[::-1]:
            times.append(timed(fn))
    seq, bat = (statistics.median(seconds for seconds, _ in times) for times in (seqs, bats))
    evaluation = (statistics.median(e for _, e in seqs), statistics.median(e for _, e in bats))
    peak = PEAKS[torch.get_num_threads()] = max(PEAKS.get(torch.get_num_threads(), 0.0), matmul_peak())
    row = Row(case, len(hypers), torch.get_num_threads(), seq, bat, goal, chunks, sweep_flops(task, len(hypers)), peak,
              [s / b for (s, _), (b, _) in zip(seqs, bats, strict=True)], CLOCK, forward, evaluation)
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"{case}, {row.threads} thread(s): plain loop {seq:.2f} s, batched {bat:.2f} s (medians): {row.speedup:.2f}× "
          f"(median of {repeats} pairs, {min(row.ratios):.2f}–{max(row.ratios):.2f}; goal ≥ {goal:g}×), chunks {chunks}, "
          f"{forward} forward, batched at {row.flops / bat / peak:.1%} of the fp32 matmul peak; evaluations {evaluation[0]:.2f} s "
          f"(plain) and {evaluation[1]:.2f} s (batched), the rest {row.training_speedup:.2f}× faster batched; load average {load}",
          flush=True)
    return row


def table(rows: list[Row]) -> str:
    lines = [
        "| case | configs | threads | plain loop | batched | speed-up | pairs | goal | met | evaluations: plain, batched | "
        "training: speed-up | chunks | forward | GFLOP | batched: % of peak | plain: % of peak |",
        "|---|---:|---:|---:|---:|---:|---|---:|:-:|---:|---:|---|---|---:|---:|---:|",
    ]
    for r in rows:
        unit = "CPU s" if r.clock == "cpu" else "s"
        lines.append(
            f"| {r.case} | {r.configs} | {r.threads} | {r.sequential:.2f} {unit} | {r.batched:.2f} {unit} | {r.speedup:.2f}× | "
            f"{min(r.ratios):.2f}–{max(r.ratios):.2f}× | ≥ {r.goal:g}× | {'yes' if r.speedup >= r.goal else '**no**'} | "
            f"{r.evaluation[0]:.2f}, {r.evaluation[1]:.2f} {unit} | {r.training_speedup:.2f}× | {r.chunks} | {r.forward} | {r.flops / 1e9:.1f} | "
            f"{r.flops / r.batched / r.peak:.1%} | {r.flops / r.sequential / r.peak:.1%} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    global CLOCK
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default="1,2", help="torch thread counts, each case at each (default 1,2)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5, help="timed pairs per case (default 5; the median ratio counts)")
    parser.add_argument("--cases", default="cnn,cnn_bn,block,wide")
    parser.add_argument("--no-write", action="store_true", help="do not write benchmarks/README.md")
    args = parser.parse_args(argv)
    retain_freed_memory()
    torch.optim.SGD([torch.zeros(1, requires_grad=True)])  # a process's first torch.optim optimizer imports torch._dynamo: not in a timed run
    start = time.perf_counter()
    load_start = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    lambdas = [0.0] + torch.logspace(-5, -1, 15).tolist()
    img_train, img_val = digits()
    tok_train, tok_val = tokens()
    flat_train, flat_val = digits(image=False)
    common = {"loss": F.cross_entropy, "metrics": {"acc": accuracy}, "optimizer": "sgd", "momentum": 0.9, "epochs": args.epochs}
    cases = {
        "cnn": ("digits CNN Conv-ReLU-Pool×2 + Linear, 16 λ, SGD momentum, batch 64", cnn, img_train, img_val, 0.05, 64, lambdas, 3.0),
        "cnn_bn": ("digits CNN with BatchNorm, 16 λ, SGD momentum, batch 64", cnn_bn, img_train, img_val, 0.05, 64, lambdas, 2.5),
        "block": ("transformer block (d=32, 4 heads, T=16), 16 λ, SGD momentum, batch 64", block, tok_train, tok_val, 0.05, 64, lambdas, 2.0),
        "wide": ("compute-bound MLP 64-2048-2048-10, 4 λ, batch 256", wide, flat_train, flat_val, 0.01, 256, lambdas[:4], 1.0),
    }
    rows = []
    for threads in (int(t) for t in args.threads.split(",")):
        torch.set_num_threads(threads)
        CLOCK = "cpu" if threads == 1 else "wall"  # CPU time is robust to other processes; with 2 threads, wall
        PEAKS[threads] = matmul_peak()
        for key in args.cases.split(","):
            label, model, train, val, lr, batch, lams, goal = cases[key]
            task = ModuleTask(model=model, train=train, val=val, batch_size=batch, **common)
            rows.append(measure(label, task, [Hyper(seed=0, lr=lr, l2=lam) for lam in lams], goal, args.repeats))
    for r in rows:  # one peak per thread count, the best of the run: a peak measured while the machine was
        r.peak = PEAKS[r.threads]  # busier would put a case above 100 %
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    threads_max = max(int(t) for t in args.threads.split(","))
    quiet = max(float(load_start.split(" / ")[0]), os.getloadavg()[0]) <= threads_max + 0.5
    report = "\n".join([
        MARK_BEGIN,
        "## Module sweeps: `benchmarks/sweep_module.py`" + ("" if quiet else " (provisional)"),
        "",
        (f"`PYTHONPATH=src python benchmarks/sweep_module.py --threads {args.threads} --epochs {args.epochs}` — "
        "`decaylab.engine.module` (batched: the stacked native forward of `decaylab.engine.stacked`, or `vmap` where "
        "it falls back — column `forward`; model checks, chunk planner and its probe included) against a plain "
        "PyTorch loop training the same configurations one after another (`torch.optim.SGD` over "
        "`decaylab.param_groups`, the same per-epoch evaluation), timed in "
        f"{args.repeats} pairs, the order alternating: `speed-up` is the median of the pairs' ratios (`pairs`: the lowest "
        "and highest), the times are medians; `evaluations`: the seconds of both sides' per-epoch evaluations (medians; "
        "the engine's choice between its stacked forward and one configuration at a time included), `training: speed-up` "
        "the ratio of the rest of the two runs (the engine's model checks, planner and probes included). "
        f"torch {torch.__version__}, Python {platform.python_version()}, "
        f"{os.cpu_count()} cores, load average (1 / 5 / 15 min) at the start {load_start}, at the end {load}"
        + ("" if quiet else " — **the machine was shared with other jobs while this ran: the timings are provisional**")
        + ". `% of peak`: FLOPs counted by "
        "`torch.utils.flop_counter` over the measured time, against a 2048² `torch.mm` at the same thread count "
        f"(the best of 8 at the start and after each case, per thread count; {max(r.peak for r in rows) / 1e9:.1f} GFLOP/s at best). One thread: CPU seconds of "
        f"the process; two: wall-clock seconds. Total {time.perf_counter() - start:.0f} s."),
        "",
        table(rows),
        MARK_END,
    ])
    print(report)
    if not args.no_write:
        text = README.read_text() if README.exists() else ""
        pattern = re.compile(re.escape(MARK_BEGIN) + ".*?" + re.escape(MARK_END), re.DOTALL)
        text = pattern.sub(lambda _: report, text) if pattern.search(text) else text.rstrip() + "\n\n" + report + "\n"
        README.write_text(text)
        print(f"written to {README}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
