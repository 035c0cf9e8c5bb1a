"""Small models and data for the module-sweep tests (not a test module)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import decaylab
from decaylab.rng import generator, stream_seed


def digits(n_train: int = 192, n_val: int = 96, image: bool = False) -> tuple[Any, Any]:
    from sklearn.datasets import load_digits

    d = load_digits()
    X = torch.tensor(d.data, dtype=torch.float32) / 16.0
    if image:
        X = X.view(-1, 1, 8, 8)
    y = torch.tensor(d.target)
    return (X[:n_train], y[:n_train]), (X[n_train : n_train + n_val], y[n_train : n_train + n_val])


def mlp(seed: int) -> nn.Module:
    return nn.Sequential(nn.Linear(64, 24), nn.ReLU(), nn.Linear(24, 10))


def cnn_bn(seed: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64, 10),
    )


class Block(nn.Module):
    """A pre-norm transformer block on token ids: embedding, LayerNorm, MultiheadAttention, MLP, mean-pool head."""

    def __init__(self, vocab: int = 12, d: int = 16, heads: int = 2, T: int = 6, classes: int = 2) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(torch.randn(T, d) * 0.1)
        self.ln1 = nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.ln2 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))
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


def tokens(n_train: int = 96, n_val: int = 48) -> tuple[Any, Any]:
    g = torch.Generator().manual_seed(0)
    tok = torch.randint(0, 12, (n_train + n_val, 6), generator=g)
    y = (tok == 3).any(dim=1).long()
    return (tok[:n_train], y[:n_train]), (tok[n_train:], y[n_train:])


def accuracy(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (out.argmax(dim=1) == y).float().mean()


def setup(kind: str) -> dict[str, Any]:
    if kind == "block":
        train, val = tokens()
        return {"model": block, "train": train, "val": val, "loss": F.cross_entropy}
    train, val = digits(image=kind == "cnn_bn")
    return {"model": {"mlp": mlp, "cnn_bn": cnn_bn}[kind], "train": train, "val": val, "loss": F.cross_entropy,
            "metrics": {"acc": accuracy}}


def train_alone(task: Any, h: Any) -> tuple[list[tuple[float, float]], nn.Module]:
    """(train loss, val loss) after each epoch and the final model of ``h`` (a Hyper) trained alone: the factory
    under the seed's ``init`` stream, torch.optim.SGD / Adam / AdamW over decaylab.param_groups (decoupled decay
    and the L1 step for SGD/Adam through decaylab.attach), minibatches from the seed's ``order`` stream, full-set
    losses in eval mode. Written independently of decaylab's engine: the module-sweep tests' reference."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(stream_seed(h.seed, "init"))
        model = task.model(h.seed)
    policy = task.policy
    if task.optimizer == "adamw":
        opt = torch.optim.AdamW(decaylab.param_groups(model, h.decoupled, policy), lr=h.lr)
    elif task.optimizer == "adam":
        opt = torch.optim.Adam(decaylab.param_groups(model, h.l2, policy), lr=h.lr)
    else:
        opt = torch.optim.SGD(decaylab.param_groups(model, h.l2, policy), lr=h.lr, momentum=task.momentum, nesterov=task.nesterov)
    if h.decoupled and task.optimizer != "adamw":
        decaylab.attach(opt, decaylab.DecoupledDecay(h.decoupled), model=model, policy=policy)
    if h.l1:
        decaylab.attach(opt, decaylab.L1Prox(h.l1), model=model, policy=policy)
    order = generator(h.seed, "order")
    (X, y), (Xv, yv) = task.train, task.val
    curves = []
    for _ in range(task.epochs):
        model.train()
        perm = torch.randperm(len(y), generator=order)
        for a in range(0, len(y), task.batch_size):
            idx = perm[a : a + task.batch_size]
            opt.zero_grad()
            task.loss(model(X[idx]), y[idx]).backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            curves.append((task.loss(model(X), y).item(), task.loss(model(Xv), yv).item()))
    return curves, model


# A `decaylab sweep FILE.py:setup` file (digits MLP 64-16-10), written by the CLI and report tests.
SWEEP_FILE = '''
import torch
import torch.nn.functional as F
from torch import nn
from sklearn.datasets import load_digits

def model(seed):
    return nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))

def setup():
    d = load_digits()
    X = torch.tensor(d.data, dtype=torch.float32) / 16.0
    y = torch.tensor(d.target)
    acc = lambda out, t: (out.argmax(dim=1) == t).float().mean()
    return {"model": model, "train": (X[:160], y[:160]), "val": (X[160:240], y[160:240]),
            "loss": F.cross_entropy, "metrics": {"acc": acc}}
'''
