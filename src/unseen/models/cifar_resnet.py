"""CIFAR ResNets (ResNet-20/32/44/56/110) with parameter-free option-A shortcuts.

He, Zhang, Ren, Sun, "Deep Residual Learning for Image Recognition", CVPR 2016, section 4.2:
a 3x3 stem with 16 channels, three stages of ``n`` basic blocks with 16, 32 and 64 channels
(depth = 6n + 2), global average pooling and a linear classifier. Module names follow the
widely used akamaster/pytorch_resnet_cifar10 checkpoints (``conv1``, ``bn1``, ``layer1..3``,
``linear``), so those load without renaming once the ``module.`` prefix is stripped.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

DEPTHS = (20, 32, 44, 56, 110)


def option_a_shortcut(x: torch.Tensor, out_channels: int) -> torch.Tensor:
    """Subsample ``x`` by 2 spatially and zero-pad ``out_channels // 4`` channels on each side.

    This is the "option A" identity shortcut of He et al. for blocks that halve the resolution
    and double the width (16 -> 8+16+8 = 32). The zeros go before *and* after the input
    channels; the pretrained weights depend on this placement.
    """
    pad = out_channels // 4
    return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, pad, pad))


class OptionAShortcut(nn.Module):
    """Parameter-free downsampling shortcut, see :func:`option_a_shortcut`."""

    def __init__(self, out_channels: int) -> None:
        super().__init__()
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return option_a_shortcut(x, self.out_channels)


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers plus a shortcut; the stride sits in ``conv1``."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        needs_projection = stride != 1 or in_planes != planes
        self.shortcut: nn.Module = OptionAShortcut(planes) if needs_projection else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-``depth`` for 3x32x32 inputs; penultimate features: the 64-d input of ``linear``."""

    def __init__(self, depth: int = 20, num_classes: int = 10) -> None:
        super().__init__()
        if depth not in DEPTHS:
            raise ValueError(f"CIFAR ResNet depth must be one of {DEPTHS}, got {depth}")
        n = (depth - 2) // 6
        self.depth = depth
        self.conv1 = nn.Conv2d(3, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = _stage(16, 16, n, stride=1)
        self.layer2 = _stage(16, 32, n, stride=2)
        self.layer3 = _stage(32, 64, n, stride=2)
        self.linear = nn.Linear(64, num_classes)
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Globally average-pooled output of ``layer3``: (N, 64)."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return out.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.forward_features(x))


def _stage(in_planes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
    layers = [BasicBlock(in_planes, planes, stride)]
    layers += [BasicBlock(planes, planes) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)
