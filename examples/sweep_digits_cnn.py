"""A complete setup for ``decaylab sweep``: a small CNN on scikit-learn's 8×8 digits.

    decaylab sweep examples/sweep_digits_cnn.py:setup --lambd 0,1e-4,3e-4,1e-3,3e-3,1e-2,3e-2,1e-1 \
        --seed 0,1 --optimizer sgd --momentum 0.9 --lr 0.05 --batch-size 64 --epochs 10

``setup()`` returns what every configuration shares; the options say what varies. The same file works
from Python: ``decaylab.sweep("examples/sweep_digits_cnn.py:setup", lambd=[0, 1e-3, 1e-2])``.
"""

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn


def model(seed: int) -> nn.Module:
    """Conv-BN-ReLU-Pool ×2 + Linear. decaylab seeds torch's generator from ``seed`` before calling this."""
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),   # 8×4×4
        nn.Conv2d(8, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),  # 16×2×2
        nn.Flatten(), nn.Linear(64, 10),
    )


def accuracy(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (output.argmax(dim=1) == target).float().mean()


def setup() -> dict:
    digits = load_digits()
    X = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0  # (1797, 1, 8, 8)
    y = torch.tensor(digits.target)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))  # a fixed split
    train, val = order[:1200], order[1200:]
    return {
        "model": model,
        "train": (X[train], y[train]),
        "val": (X[val], y[val]),
        "loss": F.cross_entropy,   # a mean over the batch
        "metrics": {"acc": accuracy},
    }
