"""ResNet-50 and Wide-ResNet-50-2 with torchvision's module names, without torchvision.

He, Zhang, Ren, Sun, "Deep Residual Learning for Image Recognition", CVPR 2016 (bottleneck
blocks, 3-4-6-3). As in torchvision (the "v1.5" variant), the stride of a downsampling block sits
in its 3x3 ``conv2``. Wide-ResNet-50-2 (Zagoruyko & Komodakis, BMVC 2016, torchvision's variant)
doubles the inner width of every bottleneck; it is anomalib's default backbone. The state-dict keys
equal those of ``torchvision.models.resnet50`` / ``wide_resnet50_2``, so their ImageNet checkpoints
load as they are.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Bottleneck(nn.Module):
    """1x1 reduce to ``planes * width``, 3x3 (strided), 1x1 expand to ``planes * 4``;
    projection ``downsample`` where needed."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1, width: int = 1) -> None:
        super().__init__()
        out_planes = planes * self.expansion
        inner = planes * width
        self.conv1 = nn.Conv2d(in_planes, inner, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(inner)
        self.conv2 = nn.Conv2d(inner, inner, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(inner)
        self.conv3 = nn.Conv2d(inner, out_planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_planes != out_planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_planes),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity)


class ResNet50(nn.Module):
    """ImageNet ResNet-50 (``width=2``: Wide-ResNet-50-2); penultimate features are the 2048-d
    input of ``fc``."""

    def __init__(self, num_classes: int = 1000, width: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = _stage(64, 64, 3, 1, width)
        self.layer2 = _stage(256, 128, 4, 2, width)
        self.layer3 = _stage(512, 256, 6, 2, width)
        self.layer4 = _stage(1024, 512, 3, 2, width)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2048, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Globally average-pooled output of ``layer4``: (N, 2048)."""
        out = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.avgpool(out).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.forward_features(x))


class WideResNet50_2(ResNet50):
    """torchvision's ``wide_resnet50_2``: ResNet-50 with bottlenecks twice as wide inside."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__(num_classes, width=2)


def _stage(in_planes: int, planes: int, blocks: int, stride: int, width: int) -> nn.Sequential:
    layers = [Bottleneck(in_planes, planes, stride, width)]
    out = planes * Bottleneck.expansion
    layers += [Bottleneck(out, planes, 1, width) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)
