"""Time of ``decaylab.audit`` on a model of 100 modules (goal: under 1 s).

The model: 24 transformer-like blocks (LayerNorm, two Linear, an embedding-sized Linear) plus an
embedding and a tied head — 100 modules, ~1.7M parameters — with AdamW over ``param_groups``, an
attached step, a OneCycleLR scheduler (simulated by the audit over ``epochs × steps_per_epoch`` steps)
and the timescale check. Prints the median of ``--reps`` runs and the findings.

Run: ``python benchmarks/audit_speed.py [--reps 5]``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

import decaylab


class Block(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.ln = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, 2 * d)
        self.fc2 = nn.Linear(2 * d, d)


class Model(nn.Module):
    def __init__(self, d: int = 128, n_blocks: int = 24, vocab: int = 1000) -> None:
        super().__init__()
        self.wte = nn.Embedding(vocab, d)
        self.blocks = nn.ModuleList(Block(d) for _ in range(n_blocks))
        self.head = nn.Linear(d, vocab, bias=False)
        self.head.weight = self.wte.weight


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args(argv)
    model = Model()
    n_modules = sum(1 for _ in model.modules())
    opt = torch.optim.AdamW(decaylab.param_groups(model, 0.0), lr=3e-4)
    decaylab.attach(opt, decaylab.DecoupledDecay(0.1, "schedule"), model=model)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-4, total_steps=2000)
    times = []
    for _ in range(args.reps):
        start = time.perf_counter()
        report = decaylab.audit(model, opt, sched, epochs=10, steps_per_epoch=200)
        times.append(time.perf_counter() - start)
    print(f"model: {n_modules} modules, {sum(p.numel() for p in model.parameters()):,} parameters; "
          f"scheduler simulated over 2000 steps; torch {torch.__version__}")
    print(f"audit: median {statistics.median(times):.3f} s of {args.reps} (goal < 1 s: "
          f"{'met' if statistics.median(times) < 1 else 'NOT met'}); findings: {report.codes()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
