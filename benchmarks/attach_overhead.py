"""Overhead of ``attach(Adam, DecoupledDecay(λ))`` against ``torch.optim.AdamW(weight_decay=λ)``.

Both optimizers use ``foreach=True`` on a ~10M-parameter MLP (four 1600×1600 linear layers), step with
the same fixed random gradients, and decay every tensor (``DecayPolicy.decay_all()``, because plain
``AdamW`` decays biases too). Timings of the optimizer step alone are interleaved (the order alternates
every repetition) and the median per-step time of each is reported, with their ratio, measured in the
same run. The script also checks that both end with the same parameters. Goal: ratio ≤ 1.10.

Run: ``python benchmarks/attach_overhead.py [--reps 9] [--steps 10]`` (about 20-40 s on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from torch import nn

from decaylab.policy import DecayPolicy
from decaylab.steps import DecoupledDecay, attach

WIDTH, LAYERS, LR, WEIGHT_DECAY = 1600, 4, 1e-3, 0.05


def build() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(*(nn.Linear(WIDTH, WIDTH) for _ in range(LAYERS)))


def timed(optimizer: torch.optim.Optimizer, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        optimizer.step()
    return (time.perf_counter() - start) / steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=9, help="interleaved repetitions (median reported)")
    parser.add_argument("--steps", type=int, default=10, help="optimizer steps per repetition")
    args = parser.parse_args(argv)

    ours_model = build()
    ref_model = copy.deepcopy(ours_model)
    n_params = sum(p.numel() for p in ours_model.parameters())
    gen = torch.Generator().manual_seed(1)
    for p, q in zip(ours_model.parameters(), ref_model.parameters(), strict=True):
        p.grad = torch.randn(p.shape, generator=gen)
        q.grad = p.grad.clone()

    ours = torch.optim.Adam(ours_model.parameters(), lr=LR, foreach=True)
    handle = attach(ours, DecoupledDecay(WEIGHT_DECAY), policy=DecayPolicy.decay_all())
    ref = torch.optim.AdamW(ref_model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY, foreach=True)

    timed(ours, 2)  # warm-up: state allocation
    timed(ref, 2)
    t_ours: list[float] = []
    t_ref: list[float] = []
    for rep in range(args.reps):
        pair = [(ours, t_ours), (ref, t_ref)]
        for opt, sink in pair if rep % 2 == 0 else reversed(pair):
            sink.append(timed(opt, args.steps))

    diff = max((p - q).abs().max().item() for p, q in zip(ours_model.parameters(), ref_model.parameters(), strict=True))
    same = all(torch.equal(p, q) for p, q in zip(ours_model.parameters(), ref_model.parameters(), strict=True))
    handle.detach()

    m_ours, m_ref = statistics.median(t_ours), statistics.median(t_ref)
    ratio = m_ours / m_ref
    steps_done = 2 + args.reps * args.steps
    print(f"model: MLP {LAYERS}x Linear({WIDTH}, {WIDTH}), {n_params:,} parameters, float32, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"median over {args.reps} interleaved repetitions of {args.steps} steps")
    print(f"attach(Adam(foreach=True), DecoupledDecay({WEIGHT_DECAY:g})): {1e3 * m_ours:8.2f} ms/step")
    print(f"AdamW(weight_decay={WEIGHT_DECAY:g}, foreach=True):            {1e3 * m_ref:8.2f} ms/step")
    print(f"ratio: {ratio:.3f}x  (goal <= 1.10x: {'met' if ratio <= 1.10 else 'NOT met'})")
    print(f"same parameters after {steps_done} steps: {'bitwise equal' if same else f'max |diff| = {diff:.3g}'}")
    return 0 if diff <= 1e-6 else 1


if __name__ == "__main__":
    raise SystemExit(main())
