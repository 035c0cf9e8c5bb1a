"""Batched vs one-by-one training of the same configurations, measured in one run.

    python benchmarks/sweep.py                 # all cases, writes benchmarks/README.md
    python benchmarks/sweep.py --threads 2     # torch intra-op threads for both engines (default 1)
    python benchmarks/sweep.py --digits-threads 1,2   # the digits case at each thread count (default)
    python benchmarks/sweep.py --no-write      # print only

One thread by default: the machine this was written on has 2 cores shared with other processes,
and with 2 OpenMP threads every parallel region waits whenever the other core is busy (a 5 µs
matrix product then takes milliseconds), which makes timings meaningless. With one thread the
main columns are this process's CPU seconds (``time.process_time``), which other processes on the
machine barely disturb; wall-clock speed-ups are printed beside them. With more threads, wall clock.
The digits MLP case is also measured with 2 threads (this machine's default): there a plain loop's
small matrix products gain little from the second core while the batched products do.

The one-by-one baseline is :func:`decaylab.engine.train_sequential`: an ``nn.Module``, ``torch.optim``
and autograd, one configuration after another — the plain PyTorch loop. The batched time is
:func:`decaylab.engine.train` with ``engine="batched"`` and the chunk planner, its probe included.
Both run in this process with the same thread count, on the same data, and give the same numbers
(tested in ``tests/test_engine.py``). The process keeps freed memory (``--malloc retain``, the default:
:func:`decaylab.memory.retain_freed_memory`, as the ``decaylab`` command and its Ray workers run), for
both engines alike; ``--malloc default`` leaves glibc as it is, and the minor page faults of each
engine are printed either way.
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import torch

from decaylab.data.synthetic import d2l_linear_data
from decaylab.engine import Hyper, Task, train, train_batched, train_sequential
from decaylab.memory import retain_freed_memory
from decaylab.rng import generator

README = Path(__file__).with_name("README.md")
CLOCK = "cpu"  # the clock of the main columns: "cpu" (this process's CPU time) with one thread, else "wall"
UNIT = {"cpu": "CPU s", "wall": "s"}
REPEATS = 2  # each engine is timed this many times, alternately; the best time counts


# ---------------------------------------------------------------- data
@functools.cache
def _digits_arrays() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    return torch.tensor(X / 16.0, dtype=torch.float32), torch.tensor(y, dtype=torch.int64)


def digits(seed: int, n_train: int = 1000) -> SimpleNamespace:
    """scikit-learn's 8×8 digits (1797 images), shuffled by the seed's data stream; 1000 train, 797 test."""
    X, y = _digits_arrays()
    perm = torch.randperm(len(y), generator=generator(seed, "data"))
    tr, te = perm[:n_train], perm[n_train:]
    return SimpleNamespace(X_train=X[tr], y_train=y[tr], X_test=X[te], y_test=y[te])


# ---------------------------------------------------------------- measurement
@dataclass(frozen=True)
class Seconds:
    """CPU seconds of this process, wall-clock seconds and minor page faults of one measurement."""

    cpu: float
    wall: float
    faults: int = 0

    def __mul__(self, factor: float) -> Seconds:
        return Seconds(self.cpu * factor, self.wall * factor, round(self.faults * factor))


@dataclass
class Row:
    case: str
    configs: int
    sequential: Seconds
    batched: Seconds
    goal: float  # required speed-up
    chunk: str
    notes: list[str] = field(default_factory=list)
    threads: int = 1  # torch intra-op threads of both engines
    clock: str = "cpu"  # which clock the main columns use: "cpu" with one thread, else "wall"

    @property
    def speedup(self) -> float:
        return self.sequential_s / self.batched_s

    @property
    def wall_speedup(self) -> float:
        return self.sequential.wall / self.batched.wall

    @property
    def sequential_s(self) -> float:
        return getattr(self.sequential, self.clock)

    @property
    def batched_s(self) -> float:
        return getattr(self.batched, self.clock)


def _minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def timed(fn: Callable[[], object]) -> Seconds:
    f0, c0, w0 = _minor_faults(), time.process_time(), time.perf_counter()
    fn()
    return Seconds(time.process_time() - c0, time.perf_counter() - w0, _minor_faults() - f0)


def matmul_peak(n: int = 2048, repeats: int = 8) -> float:
    """fp32 FLOP/s of a large ``torch.mm`` (best of ``repeats``): this machine's practical peak."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = min(getattr(timed(lambda: torch.mm(a, b)), CLOCK) for _ in range(repeats))
    return 2 * n**3 / best


def train_flops(task: Task, n_train: int, n_test: int, configs: int) -> float:
    """Matrix-multiply FLOPs of training (forward + backward ≈ 3 × forward) plus the per-epoch evaluation."""
    macs_per_row = sum(i * o for i, o in zip(task.layers[:-1], task.layers[1:], strict=True))
    per_epoch = 3 * 2 * n_train * macs_per_row + 2 * (n_train + n_test) * macs_per_row
    return configs * task.epochs * per_epoch


def compare(
    case: str, task: Task, hypers: list[Hyper], goal: float, sample: int | None = None, autograd: bool = False
) -> Row:
    """Time the batched engine on all ``hypers`` and the sequential one on all (or ``sample`` of them, scaled).

    The two are timed alternately ``REPEATS`` times and the best time of each is kept.
    """
    task.data(hypers[0].seed)  # loads and caches digits outside the timings
    notes = []
    subset, scale = hypers, 1.0
    if sample is not None and sample < len(hypers):
        subset = [hypers[int(i * len(hypers) / sample)] for i in range(sample)]
        scale = len(hypers) / sample
        notes.append(
            f"{len(hypers)} λ: sequential time measured on {sample} of the {len(hypers)} configurations "
            f"(evenly spaced) and scaled ×{scale:g}"
        )
    batched = sequential = None
    sizes: list[int] = []
    for _ in range(REPEATS):
        sizes.clear()
        b = timed(lambda: train(task, hypers, on_chunk_done=lambda idx, _: sizes.append(len(idx))))
        s = timed(lambda: train_sequential(task, subset)) * scale
        batched = b if batched is None or getattr(b, CLOCK) < getattr(batched, CLOCK) else batched
        sequential = s if sequential is None or getattr(s, CLOCK) < getattr(sequential, CLOCK) else sequential
    plan = f"{len(sizes)}×{max(sizes)}" if len(set(sizes)) == 1 else f"{len(sizes)} chunks ≤ {max(sizes)}"
    if autograd:  # the same chunks, gradients by one backward() of the summed losses instead of by hand
        t = timed(lambda: train_batched(task, hypers, chunk=max(sizes), backward="autograd"))
        label = f"{case.split(' (')[0].split(',')[0]}, {len(hypers)} configurations"
        notes.append(
            f"{label}: batched with autograd backward {getattr(t, CLOCK):.3f} s, "
            f"with the hand-written backward {getattr(batched, CLOCK):.3f} s"
        )
    label = f"{case.split(' (')[0].split(',')[0]}, {len(hypers)} configurations, {torch.get_num_threads()} thread(s)"
    notes.append(f"{label}: minor page faults, sequential {sequential.faults:,}, batched {batched.faults:,}")
    return Row(case, len(hypers), sequential, batched, goal, plan, notes, torch.get_num_threads(), CLOCK)


# ---------------------------------------------------------------- the cases
def d2l_task() -> Task:
    data = functools.partial(d2l_linear_data, n_train=20, n_test=100, dim=200)
    return Task(data=data, layers=(200, 1), batch_size=5, epochs=100, loss="half_mse", optimizer="sgd")


def lambdas(n: int) -> list[float]:
    return [10 * i / (n - 1) for i in range(n)]  # --lambd 0:10:n


def case_d2l(n: int, goal: float, sample: int | None) -> Row:
    hypers = [Hyper(seed=0, lr=0.003, l2=lam) for lam in lambdas(n)]
    name = f"D2L linear (200 features, n=20, batch 5, 100 epochs), {n} λ"
    return compare(name, d2l_task(), hypers, goal, sample, autograd=sample is None)


def mlp_task(width: int, epochs: int) -> Task:
    return Task(
        data=digits, layers=(64, width, width, 10), loss="cross_entropy", optimizer="sgd", batch_size=64,
        epochs=epochs, init="torch", dropout=True,
    )


def case_digits(epochs: int) -> tuple[Row, float]:
    """The digits MLP sweep, and the matrix-multiply FLOPs it performs."""
    task = mlp_task(256, epochs)
    lams = [0.0] + [10 ** (-5 + 4 * i / 14) for i in range(15)]  # 0 and 15 log-spaced in [1e-5, 1e-1]
    hypers = [Hyper(seed=0, lr=0.1, l2=lam, dropout=(0.2, 0.5)) for lam in lams]
    name = f"digits MLP 64-256-256-10, dropout 0.2/0.5, SGD, batch 64, {epochs} epochs"
    return compare(name, task, hypers, 4.0, autograd=True), train_flops(task, 1000, 797, len(hypers))


def flop_notes(row: Row, flops: float, peak: float) -> list[str]:
    rate, seq_rate = flops / row.batched_s, flops / row.sequential_s
    at = f"digits, {row.threads} thread(s)"
    return [
        f"{at}: batched {rate / 1e9:.1f} GFLOP/s = {rate / peak:.0%} of the fp32 matmul peak measured at "
        f"{row.threads} thread(s) ({peak / 1e9:.1f} GFLOP/s); sequential {seq_rate / 1e9:.1f} GFLOP/s = "
        f"{seq_rate / peak:.0%} ({flops / 1e9:.0f} GFLOP counted: matrix products, 3× forward for a training "
        "step, 1× for evaluation)",
        f"{at}: the sequential loop runs at {seq_rate / peak:.0%} of peak, so no engine can be more than "
        f"{peak / seq_rate:.1f}× faster here (that would be 100% of peak); the ≥ 4× goal "
        f"{'is' if row.speedup >= 4 else 'is not'} met ({row.speedup:.1f}×); the FLOP-rate goal (≥ 50% of peak) "
        f"{'is' if rate >= 0.5 * peak else 'is not'} met ({rate / peak:.0%})",
    ]


def case_wide(epochs: int, n: int) -> Row:
    task = mlp_task(1024, epochs)
    hypers = [Hyper(seed=0, lr=0.05, l2=lam, dropout=(0.2, 0.5)) for lam in lambdas(n)]
    return compare(f"digits MLP 64-1024-1024-10 (compute-bound), {epochs} epoch(s)", task, hypers, 1.0)


# ---------------------------------------------------------------- output
def machine() -> dict[str, str]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    return {
        "nproc": str(os.cpu_count()),
        "CPU": model,
        "torch": torch.__version__,
        "torch threads": str(torch.get_num_threads()),
        "Python": platform.python_version(),
        "load average (1/5/15 min) at the end": load,
    }


def table(rows: list[Row]) -> str:
    lines = [
        "| case | configs | threads | sequential | batched | speed-up | goal | met | chunks | speed-up, wall clock |",
        "|---|---:|---:|---:|---:|---:|---:|:-:|---|---:|",
    ]
    for r in rows:
        met = "yes" if r.speedup >= r.goal else "**no**"
        unit = UNIT[r.clock]
        lines.append(
            f"| {r.case} | {r.configs} | {r.threads} | {r.sequential_s:.2f} {unit} | {r.batched_s:.3f} {unit} | "
            f"{r.speedup:.1f}× | ≥ {r.goal:g}× | {met} | {r.chunk} | {r.wall_speedup:.1f}× |"
        )
    return "\n".join(lines)


def use_threads(n: int) -> None:
    """Set torch's intra-op threads for both engines, and the clock that suits them."""
    global CLOCK
    torch.set_num_threads(n)
    CLOCK = "cpu" if n == 1 else "wall"


def main(argv: list[str] | None = None) -> int:
    global REPEATS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads for both engines (default 1)")
    parser.add_argument("--digits-epochs", type=int, default=10)
    parser.add_argument(
        "--digits-threads", default="1,2", help="thread counts at which the digits case is measured (default 1,2)"
    )
    parser.add_argument("--wide-epochs", type=int, default=3)
    parser.add_argument("--wide-configs", type=int, default=8)
    parser.add_argument("--sample", type=int, default=64, help="configurations timed sequentially for 1024 λ")
    parser.add_argument("--repeats", type=int, default=REPEATS, help="timings per engine and case; the best counts")
    parser.add_argument("--no-write", action="store_true", help="do not write benchmarks/README.md")
    parser.add_argument(
        "--malloc", choices=("retain", "default"), default="retain",
        help="keep freed memory in the process, as the decaylab command does (default), or leave glibc as it is",
    )
    args = parser.parse_args(argv)
    args.malloc_applied = retain_freed_memory() if args.malloc == "retain" else False
    digits_threads = [int(t) for t in args.digits_threads.split(",")]
    use_threads(args.threads)
    REPEATS = args.repeats
    start = time.perf_counter()

    peak = matmul_peak()
    print(f"fp32 matmul peak ({args.threads} thread(s)): {peak / 1e9:.1f} GFLOP/s", flush=True)
    rows: list[Row] = []
    for make in (
        lambda: case_d2l(64, 30.0, None),
        lambda: case_d2l(1024, 100.0, args.sample),
    ):
        rows.append(make())
        print(table(rows[-1:]), flush=True)
    digits: list[tuple[Row, float, float]] = []  # (row, FLOPs, peak at its thread count)
    for threads in digits_threads:
        use_threads(threads)
        at_peak = matmul_peak()
        row, flops = case_digits(args.digits_epochs)
        digits.append((row, flops, max(at_peak, matmul_peak())))  # a busy neighbour can only lower the peak
        rows.append(row)
        print(table(rows[-1:]), flush=True)
    use_threads(args.threads)
    rows.append(case_wide(args.wide_epochs, args.wide_configs))
    print(table(rows[-1:]), flush=True)
    peak = max(peak, matmul_peak())  # measured again at the end: a busy neighbour can only lower it

    notes = [n for r in rows for n in r.notes] + [n for row, flops, p in digits for n in flop_notes(row, flops, p)]
    total = time.perf_counter() - start
    report = render(rows, notes, peak, args, total)
    print()
    print(report)
    if not args.no_write:
        README.write_text(report)
        print(f"written to {README}")
    return 0


def render(rows: list[Row], notes: list[str], peak: float, args: argparse.Namespace, total: float) -> str:
    info = machine()
    out = [
        "# Sweep benchmark",
        "",
        "`python benchmarks/sweep.py` — batched engine (`decaylab.engine.train`, chunk planner and its probe",
        "included) against a plain PyTorch loop (`train_sequential`: `nn.Module`, `torch.optim`, autograd) training",
        "the same configurations one after another, in the same process, same data, same thread count.",
        "Times are CPU seconds of the process with one thread (other processes on this shared machine barely",
        "disturb them) and wall-clock seconds with more (the `threads` column);",
        f"the last column gives the wall-clock speed-up of the same runs. Each engine is timed {REPEATS}× per case,",
        "alternately with the other, and the best time counts.",
        "",
        "## Machine",
        "",
        *[f"- {k}: {v}" for k, v in info.items()],
        f"- fp32 matmul peak (2048² `torch.mm`, best of 8 at the start and 8 at the end, {args.threads} thread(s)): "
        f"{peak / 1e9:.1f} GFLOP/s",
        f"- total benchmark time: {total:.0f} s",
        "- malloc: " + ("glibc keeps freed memory (`decaylab.memory.retain_freed_memory`, as the `decaylab` command "
                        "and its Ray workers run), for both engines" if args.malloc_applied else "glibc's defaults"),
        "",
        "## Results",
        "",
        table(rows),
        "",
        *[f"- {n}" for n in notes],
        "",
        "## Reading these numbers",
        "",
        "- The machine is shared: other processes run on the second core (possibly an SMT sibling), so even CPU",
        "  times move by 10–20 % between runs. Re-run the script rather than trust one digit.",
        "- D2L linear: a step is a few tiny kernels, so the loop is all Python, autograd and optimizer overhead;",
        "  the batched engine runs one (K·1, 200) @ (200, 5) product per step for all λ (they share the seed,",
        "  hence the minibatch) and writes the backward pass by hand (compared with autograd in the notes above).",
        "- digits MLP, one thread: the sequential loop is not overhead-bound — its matrix products already run at",
        "  a good fraction of peak — so the ceiling on any speed-up is peak / (sequential FLOP rate), printed above.",
        "  With two threads the plain loop's 64-row products barely use the second core (and pay for waking it),",
        "  while the batched (K·256)-wide products do: the ceiling rises, and so does the speed-up.",
        "  The batched engine loses the rest of the peak to 64-row products (bmm of (256×256)·(256×64) per",
        "  configuration), the elementwise work that every configuration needs anyway (dropout masks, the SGD",
        "  update of 84k parameters each) and evaluation.",
        "- width 1024: each configuration's step is ~0.4 GFLOP, so the chunk planner keeps chunks of 1; the batched",
        "  engine then saves autograd and optimizer overhead but its W^T·δ product is a transposed GEMM that MKL",
        "  ran ~20 % slower than `nn.Linear`'s backward at 1024² in a micro-benchmark: the two roughly cancel.",
        "  Computing it as (δᵀW)ᵀ instead was tried: 2 % faster here, 5 % slower at width 256; not kept.",
        "- malloc: the batched engine allocates and frees a few activations of 0.25–4 MB every step; glibc's",
        "  defaults serve such blocks with fresh mmaps or trim them back to the kernel, so they come back as new",
        "  pages. Keeping freed memory in the process (`--malloc retain`, the default, as the `decaylab` command",
        "  runs) measured 45 → 49 GFLOP/s at 1 thread and 76 → 95 GFLOP/s at 2 threads for the digits sweep",
        "  (`--malloc default` vs the default, one run each); the plain loop's 64-row tensors are below the mmap",
        "  threshold either way.",
        "",
    ]
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
