"""SVHN cropped digits, ``*_32x32.mat`` (Netzer et al. 2011,
http://ufldl.stanford.edu/housenumbers/).

The MATLAB file holds ``X`` of shape 32 x 32 x 3 x N (uint8, RGB) and ``y`` of shape N x 1
with labels 1..10, where 10 stands for the digit 0; labels are mapped to the digit (10 -> 0).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io
from PIL import Image

from .base import ImageDataset, hash_file


class SVHNMat(ImageDataset):
    """SVHN digits from a ``.mat`` file; RGB 32x32 images, labels 0..9.

    ``identity()`` is the SHA-256 of the file's bytes (test set: 64 MB, about 0.2 s).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        transform: Callable[[Image.Image], Any] | None = None,
    ) -> None:
        super().__init__(transform)
        self.path = Path(path)
        try:
            mat = scipy.io.loadmat(self.path)
        except (ValueError, OSError, TypeError, scipy.io.matlab.MatReadError) as err:
            raise ValueError(f"{self.path}: not a readable MATLAB file ({err})") from err
        if "X" not in mat or "y" not in mat:
            raise ValueError(f"{self.path}: expected variables 'X' and 'y' (SVHN format)")
        x, y = mat["X"], np.asarray(mat["y"]).reshape(-1)
        if x.dtype != np.uint8 or x.ndim != 4 or x.shape[:3] != (32, 32, 3):
            raise ValueError(f"{self.path}: 'X' must be 32x32x3xN uint8, got {x.dtype} {x.shape}")
        if len(y) != x.shape[3]:
            raise ValueError(f"{self.path}: {len(y)} labels for {x.shape[3]} images")
        if y.size and (y.min() < 1 or y.max() > 10):
            raise ValueError(
                f"{self.path}: SVHN labels must lie in 1..10, found {y.min()}..{y.max()}"
            )
        self.images = x
        self.targets = (y % 10).astype(np.int64)
        self.name = self.path.stem

    def __len__(self) -> int:
        return len(self.targets)

    def _load(self, index: int) -> tuple[Image.Image, int]:
        return Image.fromarray(np.ascontiguousarray(self.images[..., index])), int(
            self.targets[index]
        )

    def identity(self) -> str:
        return f"SVHNMat:{hash_file(self.path)}"
