"""The small MNIST ConvNet of the Outlier Exposure experiments.

Hendrycks, Mazeika, Dietterich, "Deep Anomaly Detection with Outlier Exposure", ICLR 2019
(github hendrycks/outlier-exposure, ``MNIST/``). Two 5x5 convolutions with max-pooling, two
fully connected layers; the activation is the sigmoid approximation of GELU,
``x * sigmoid(1.702 x)``, applied after each pooling and after ``fc1``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def sigmoid_gelu(x: torch.Tensor) -> torch.Tensor:
    """GELU approximated as ``x * sigmoid(1.702 x)`` (Hendrycks and Gimpel 2016)."""
    return x * torch.sigmoid(1.702 * x)


class MnistConvNet(nn.Module):
    """Input 1x28x28 in [0, 1]; penultimate features are the 50-d input of ``fc2``."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 10, kernel_size=5)
        self.conv2 = nn.Conv2d(10, 20, kernel_size=5)
        self.conv2_drop = nn.Dropout2d(p=0.5)
        self.fc1 = nn.Linear(320, 50)
        self.fc2 = nn.Linear(50, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Activations after ``fc1``: (N, 50)."""
        out = sigmoid_gelu(F.max_pool2d(self.conv1(x), 2))
        out = sigmoid_gelu(F.max_pool2d(self.conv2_drop(self.conv2(out)), 2))
        return sigmoid_gelu(self.fc1(out.flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.forward_features(x))
