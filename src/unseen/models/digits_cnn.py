"""The small CNN of the embedded ``digits`` benchmark (8×8 grayscale digits, values in [0, 1])."""

from __future__ import annotations

import torch
from torch import nn


class DigitsCNN(nn.Module):
    """Two 3×3 convolutions (16, 32 channels), a 2×2 max-pool, a 128-unit layer, a linear head.

    The head's input (128 units after ReLU) is the penultimate feature. The blocks are direct
    children, so detectors that read intermediate feature maps (Gram, RankFeat) find them.
    """

    def __init__(self, num_classes: int = 6) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU())
        self.conv2 = nn.Sequential(nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(32 * 4 * 4, 128), nn.ReLU())
        self.head = nn.Linear(128, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv2(self.conv1(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))
