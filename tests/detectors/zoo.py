"""Inputs on which every registered detector can be fitted: a toy representation for the
cache-based detectors and a tiny CNN's representations (with their source) for the network ones.
Shared by the registry-wide tests."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.utils.data import TensorDataset

from unseen import Representation, extract

#: per split: (rows, seed) of the toy and of the network representations
SPLITS = {"train": (150, 0), "val": (60, 1), "ood_val": (40, 2), "test": (30, 3)}
NETWORK_SPLITS = {"train": (40, 0), "val": (20, 1), "ood_val": (15, 4), "test": (9, 2)}


def toy_split(n: int, seed: int, ood: bool = False) -> Representation:
    """3 well-separated classes in 8-D, non-negative (post-ReLU-like) features, a head that
    classifies every ID sample correctly, labels = the true class (-1 for OOD)."""
    rng = np.random.default_rng(100 + seed)
    centres = np.abs(np.random.default_rng(7).normal(scale=4.0, size=(3, 8)))
    y = np.arange(n) % 3
    x = np.abs(centres[y] + rng.normal(scale=0.7, size=(n, 8)))
    if ood:
        x = np.abs(rng.normal(loc=2.0, scale=2.0, size=(n, 8)))
    # nearest centre: logits x·c − |c|²/2
    weight = centres.astype(np.float32)
    bias = (-0.5 * (centres * centres).sum(axis=1)).astype(np.float32)
    logits = x.astype(np.float32) @ weight.T + bias
    labels = np.full(n, -1) if ood else logits.argmax(axis=1)
    return Representation(x.astype(np.float32), logits, labels, weight, bias)


def toy_reps() -> dict[str, Representation]:
    return {name: toy_split(n, seed, ood=name == "ood_val") for name, (n, seed) in SPLITS.items()}


class TinyCNN(nn.Module):
    """Two conv blocks (feature maps for gram and rankfeat), ReLU then pooling (non-negative
    penultimate features), a linear head that predicts every class on :func:`images`."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 5, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flat = nn.Flatten()
        self.fc = nn.Linear(5, 3)
        with torch.no_grad():
            self.fc.weight.copy_(torch.randn(3, 5, generator=torch.Generator().manual_seed(2)) * 4)
            self.fc.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flat(self.pool(self.relu2(self.conv2(self.relu1(self.conv1(x)))))))


def images(n: int, seed: int, shift: float = 0.0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 6, 6, generator=g) + 2.0 * torch.randn(n, 3, 1, 1, generator=g) + shift
    return TensorDataset(x, torch.arange(n) % 3)


def network_reps() -> dict[str, Representation]:
    model = TinyCNN()
    out = {}
    for name, (n, seed) in NETWORK_SPLITS.items():
        data = images(n, seed, shift=3.0 if name == "ood_val" else 0.0)
        out[name] = extract(model, data, batch_size=16, progress=False, input_std=(0.5, 0.25, 2.0))
    return out
