"""Time a whole ``decaylab run d2l-linear`` (lambda in {0, 3}, and 64 values of lambda) against the seed's
code as a plain PyTorch loop.

All are timed as whole processes (Python start-up and ``import torch`` included), interleaved, several
repetitions, median. The 64-lambda run has a goal (fast sweeps issue): under 3 s, start-up included.
Run: ``.venv/bin/python benchmarks/d2l_linear.py [--repeats 5]``.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PLAIN_LOOP = r'''
import torch
torch.manual_seed(0)
n_train, n_test, num_inputs, batch_size = 20, 100, 200, 5
true_w, true_b = torch.ones(num_inputs, 1) * 0.01, 0.05

def synthetic_data(w, b, n):
    X = torch.normal(0, 1, (n, len(w)))
    y = X @ w + b
    return X, y + torch.normal(0, 0.01, y.shape)

train, test = synthetic_data(true_w, true_b, n_train), synthetic_data(true_w, true_b, n_test)
loss = lambda y_hat, y: (y_hat - y.reshape(y_hat.shape)) ** 2 / 2

def evaluate(w, b, data):
    with torch.no_grad():
        return loss(data[0] @ w + b, data[1]).mean().item()

for lambd in (0, 3):
    w = torch.normal(0, 1, size=(num_inputs, 1), requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    for epoch in range(100):
        for idx in torch.randperm(n_train).split(batch_size):
            X, y = train[0][idx], train[1][idx]
            l = loss(X @ w + b, y) + lambd * torch.sum(w.pow(2)) / 2
            l.sum().backward()
            with torch.no_grad():
                for p in (w, b):
                    p -= 0.003 * p.grad / batch_size
                    p.grad.zero_()
        evaluate(w, b, train), evaluate(w, b, test)
    print(lambd, torch.norm(w).item())
'''


SWEEP = "decaylab run d2l-linear --lambd 0:10:64"
SWEEP_GOAL_S = 3.0


def timed(cmd: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    decaylab = str(Path(sys.executable).with_name("decaylab"))
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        (cwd / "plain.py").write_text(PLAIN_LOOP)
        commands = {
            "decaylab run d2l-linear": [decaylab, "run", "d2l-linear", "--quiet"],
            SWEEP: [decaylab, "run", "d2l-linear", "--lambd", "0:10:64", "--quiet"],
            "plain PyTorch loop (seed's code)": [sys.executable, "plain.py"],
            "python -c 'import torch'": [sys.executable, "-c", "import torch"],
        }
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.repeats):
            for name, cmd in commands.items():
                times[name].append(timed(cmd, cwd))
    medians = {name: statistics.median(t) for name, t in times.items()}
    base = medians["plain PyTorch loop (seed's code)"]
    print(f"whole-process wall time, median of {args.repeats} interleaved runs")
    print(f"{'command':<36} {'median s':>9} {'min s':>7} {'ratio':>6}")
    for name, t in times.items():
        print(f"{name:<36} {medians[name]:>9.2f} {min(t):>7.2f} {medians[name] / base:>6.2f}")
    extra = medians["decaylab run d2l-linear"] - base
    print(f"decaylab does the store, three files and two figures in {extra:+.2f} s beyond the plain loop")
    sweep = medians[SWEEP]
    verdict = "met" if sweep < SWEEP_GOAL_S else "NOT met"
    print(f"64 λ: median {sweep:.2f} s (min {min(times[SWEEP]):.2f} s, max {max(times[SWEEP]):.2f} s); "
          f"goal < {SWEEP_GOAL_S:g} s start-up included: {verdict}")


if __name__ == "__main__":
    main()
