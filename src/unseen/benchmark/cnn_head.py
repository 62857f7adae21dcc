"""A small CNN trained per open-set trial on the known classes only: the trial's "head".

For MNIST the open-set protocol (:mod:`unseen.benchmark.protocols.osr`) can train a network per
split instead of a linear probe on frozen ImageNet features, as Neal et al. (ECCV 2018) and Vaze
et al. (ICLR 2022) do. The rows of the trial's tables are raw pixels (N, 784) in [0, 1];
:class:`CNNHead` trains :class:`SmallCNN` on the fit rows (their labels are the trial's known
class indices; the protocol has already refused any unknown class), and its
:meth:`CNNHead.representation` is the network's penultimate features with its last linear layer
as ``weight``/``bias``, so every head- and feature-based detector runs unchanged.

Deterministic: the initial weights and the minibatch order come from ``seed``; CPU kernels.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from unseen.representation import Representation

if TYPE_CHECKING:
    from unseen.benchmark.protocols.probe import FeatureTable

#: MNIST pixel mean and std (of the training set, the usual constants)
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
#: rows per forward pass when embedding a table (memory bound)
EMBED_BATCH = 1024


class SmallCNN(nn.Module):
    """Two 5x5 conv (16, 32 channels) + ReLU + 2x2 max-pool, FC 512 → ``width`` + ReLU, FC →
    classes. Input 1x28x28 standardised; penultimate = the ``width``-d ReLU output (≥ 0)."""

    def __init__(self, num_classes: int, width: int = 128) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, kernel_size=5)
        self.conv2 = nn.Conv2d(16, 32, kernel_size=5)
        self.fc1 = nn.Linear(32 * 4 * 4, width)
        self.fc = nn.Linear(width, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        out = F.max_pool2d(F.relu(self.conv1(x)), 2)
        out = F.max_pool2d(F.relu(self.conv2(out)), 2)
        return F.relu(self.fc1(out.flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.forward_features(x))


def _images(features: np.ndarray) -> torch.Tensor:
    if features.ndim != 2 or features.shape[1] != 28 * 28:
        raise ValueError(f"CNNHead needs (N, 784) pixel rows in [0, 1], got shape {features.shape}")
    x = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32)).view(-1, 1, 28, 28)
    return (x - MNIST_MEAN) / MNIST_STD


@dataclass
class CNNHead:
    """Train :class:`SmallCNN` on a trial's fit rows (Adam, cross-entropy, ``epochs`` passes of
    shuffled minibatches), then embed tables with it. Defaults: 5 epochs, batch 64, lr 1e-3,
    width 128, seed 0 (measured on this 2-core CPU: a few seconds per MNIST split)."""

    epochs: int = 5
    batch_size: int = 64
    lr: float = 1e-3
    width: int = 128
    seed: int = 0

    def fit(self, train: FeatureTable, val: FeatureTable | None = None) -> CNNHead:
        classes = np.unique(train.labels)
        if classes.size < 2 or not np.array_equal(classes, np.arange(classes.size)):
            raise ValueError(f"a head needs labels 0..C-1 with C >= 2, got {classes.tolist()}")
        start = time.perf_counter()
        torch.manual_seed(self.seed)
        self.model_ = SmallCNN(int(classes.size), self.width)
        x, y = _images(train.features), torch.from_numpy(np.asarray(train.labels, np.int64))
        opt = torch.optim.Adam(self.model_.parameters(), lr=self.lr)
        order = torch.Generator().manual_seed(self.seed)
        self.model_.train()
        for _ in range(self.epochs):
            for rows in torch.randperm(len(y), generator=order).split(self.batch_size):
                opt.zero_grad()
                F.cross_entropy(self.model_(x[rows]), y[rows]).backward()
                opt.step()
        self.model_.eval()
        self.train_seconds_ = time.perf_counter() - start
        self.weight_ = self.model_.fc.weight.detach().numpy().astype(np.float32).copy()
        self.bias_ = self.model_.fc.bias.detach().numpy().astype(np.float32).copy()
        self.val_accuracy_ = None if val is None else float(
            np.mean(self.embed(val.features)[1].argmax(1) == val.labels))
        return self

    def embed(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Penultimate features (N, width) and logits (N, C) of pixel rows."""
        x = _images(features)
        with torch.no_grad():
            feats = np.concatenate([self.model_.forward_features(b).numpy()
                                    for b in x.split(EMBED_BATCH)]) if len(x) else np.zeros(
                                        (0, self.width), np.float32)
        feats = feats.astype(np.float32)
        return feats, feats @ self.weight_.T + self.bias_

    def representation(
        self, table: FeatureTable, labels: np.ndarray, meta: dict[str, Any] | None = None
    ) -> Representation:
        """The network's penultimate features of ``table``, its logits, its last layer, ``labels``."""
        feats, logits = self.embed(table.features)
        return Representation(features=feats, logits=logits, labels=labels, weight=self.weight_,
                              bias=self.bias_, meta=dict(meta or {}))

    def describe(self) -> dict[str, Any]:
        return {"model": f"SmallCNN(width={self.width})", "epochs": self.epochs,
                "batch_size": self.batch_size, "lr": self.lr, "seed": self.seed,
                "val_accuracy": self.val_accuracy_, "train_seconds": self.train_seconds_}
