"""Test-time image transforms matching torchvision's PIL code paths, without torchvision.

Each transform is a callable with ``describe()`` (also its ``repr``): a stable string naming
every parameter, used as part of cache keys. The presets reproduce OpenOOD v1.5's
``TestStandardPreProcessor`` (Zhang et al. 2023, "OpenOOD v1.5", arXiv:2306.09301):
convert to RGB, resize the shorter side (bilinear), centre-crop, to tensor, normalise.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image


def _check_pil(img: Any, who: str) -> Image.Image:
    if not isinstance(img, Image.Image):
        raise TypeError(f"{who} expects a PIL image, got {type(img).__name__}")
    return img


def _size_pair(size: int | Sequence[int], who: str) -> tuple[int, int]:
    pair = (size, size) if isinstance(size, int) else tuple(size)
    if len(pair) != 2 or not all(isinstance(s, int) and s > 0 for s in pair):
        raise ValueError(f"{who}: size must be a positive int or (height, width), got {size!r}")
    return pair


class Transform:
    """Base class: subclasses implement ``__call__`` and ``describe``."""

    def describe(self) -> str:
        raise NotImplementedError

    def __repr__(self) -> str:
        return self.describe()


class Compose(Transform):
    """Apply ``transforms`` in order."""

    def __init__(self, transforms: Sequence[Callable[[Any], Any]]) -> None:
        self.transforms = list(transforms)

    def __call__(self, img: Any) -> Any:
        for t in self.transforms:
            img = t(img)
        return img

    def describe(self) -> str:
        """Raises ``TypeError`` for a step without ``describe()``: its ``repr`` (e.g. a lambda's
        memory address) would make an unstable cache key."""
        parts = []
        for t in self.transforms:
            describe = getattr(t, "describe", None)
            if not callable(describe):
                raise TypeError(f"Compose: cannot describe {t!r}; give it a describe() method")
            parts.append(describe())
        return "Compose(" + ", ".join(parts) + ")"


class ToRGB(Transform):
    """Convert any PIL image to mode ``"RGB"`` (grey values are copied to all channels)."""

    def __call__(self, img: Image.Image) -> Image.Image:
        img = _check_pil(img, "ToRGB")
        return img if img.mode == "RGB" else img.convert("RGB")

    def describe(self) -> str:
        return "ToRGB()"


class Grayscale(Transform):
    """Convert to mode ``"L"`` with PIL's ITU-R 601-2 luma (as torchvision's Grayscale)."""

    def __call__(self, img: Image.Image) -> Image.Image:
        img = _check_pil(img, "Grayscale")
        return img if img.mode == "L" else img.convert("L")

    def describe(self) -> str:
        return "Grayscale()"


class Resize(Transform):
    """Resize the shorter side to ``size`` keeping the aspect ratio, bilinear.

    As torchvision's ``Resize(int)`` on PIL images: the longer side becomes
    ``int(size * long / short)`` (truncated) and PIL's ``resize`` does the work; PIL's bilinear
    filter widens its support when shrinking, i.e. it is antialiased (torchvision's
    ``antialias=True``, the only behaviour for PIL inputs).
    """

    def __init__(self, size: int) -> None:
        if not isinstance(size, int) or size <= 0:
            raise ValueError(f"Resize: size must be a positive int, got {size!r}")
        self.size = size

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        """``(width, height)`` after resizing an image of ``width`` x ``height``."""
        if width <= height:
            return self.size, int(self.size * height / width)
        return int(self.size * width / height), self.size

    def __call__(self, img: Image.Image) -> Image.Image:
        img = _check_pil(img, "Resize")
        size = self.output_size(*img.size)
        if size == img.size:
            return img
        return img.resize(size, Image.Resampling.BILINEAR)

    def describe(self) -> str:
        return f"Resize(size={self.size}, interpolation=bilinear, antialias=True)"


class CenterCrop(Transform):
    """Crop the central ``size`` (int or ``(height, width)``) region.

    Offsets follow torchvision: ``top = round((h - crop_h) / 2.0)`` with Python's
    round-half-to-even, likewise ``left``. Unlike torchvision, a crop larger than the image
    raises ``ValueError`` instead of zero-padding.
    """

    def __init__(self, size: int | Sequence[int]) -> None:
        self.height, self.width = _size_pair(size, "CenterCrop")

    def __call__(self, img: Image.Image) -> Image.Image:
        img = _check_pil(img, "CenterCrop")
        w, h = img.size
        if self.height > h or self.width > w:
            raise ValueError(
                f"CenterCrop: crop {self.height}x{self.width} is larger than the image {h}x{w}; "
                "resize first"
            )
        top = round((h - self.height) / 2.0)
        left = round((w - self.width) / 2.0)
        return img.crop((left, top, left + self.width, top + self.height))

    def describe(self) -> str:
        return f"CenterCrop(height={self.height}, width={self.width})"


class ToTensor(Transform):
    """PIL ``L``/``RGB`` image -> float32 tensor (C, H, W) with values in [0, 1] (x / 255)."""

    def __call__(self, img: Image.Image) -> torch.Tensor:
        img = _check_pil(img, "ToTensor")
        if img.mode not in ("L", "RGB"):
            raise ValueError(f"ToTensor: expects mode L or RGB, got {img.mode!r}; add ToRGB()")
        arr = np.array(img, dtype=np.uint8)  # a writable copy: torch refuses read-only memory
        if arr.ndim == 2:
            arr = arr[:, :, None]
        chw = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))
        return chw.to(torch.float32).div_(255.0)

    def describe(self) -> str:
        return "ToTensor(scale=1/255)"


class Normalize(Transform):
    """``(x - mean[c]) / std[c]`` per channel of a (C, H, W) float tensor."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        if len(self.mean) != len(self.std) or not self.mean:
            raise ValueError(f"Normalize: mean {mean} and std {std} need the same, non-zero length")
        if any(not s > 0 for s in self.std):
            raise ValueError(f"Normalize: every std must be > 0, got {std}")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.ndim != 3 or not x.is_floating_point():
            raise TypeError("Normalize expects a float tensor (C, H, W); apply ToTensor first")
        if x.shape[0] != len(self.mean):
            raise ValueError(
                f"Normalize: {len(self.mean)} channel statistics for a {x.shape[0]}-channel image"
            )
        mean = torch.tensor(self.mean, dtype=x.dtype).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype).view(-1, 1, 1)
        return (x - mean) / std

    def describe(self) -> str:
        return f"Normalize(mean={list(self.mean)}, std={list(self.std)})"


def cifar_test_transform(mean: Sequence[float], std: Sequence[float]) -> Compose:
    """OpenOOD v1.5 test transform for 32x32 benchmarks (CIFAR-10/100)."""
    return Compose([ToRGB(), Resize(32), CenterCrop(32), ToTensor(), Normalize(mean, std)])


def imagenet_test_transform(mean: Sequence[float], std: Sequence[float]) -> Compose:
    """OpenOOD v1.5 test transform for ImageNet benchmarks: resize 256, centre-crop 224."""
    return Compose([ToRGB(), Resize(256), CenterCrop(224), ToTensor(), Normalize(mean, std)])


def mnist_transform() -> Compose:
    """MNIST track: grayscale, 28x28, pixels / 255, no mean/std normalisation."""
    return Compose([Grayscale(), Resize(28), CenterCrop(28), ToTensor()])
