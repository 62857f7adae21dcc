"""Shared pieces of the dataset readers: image decoding, the dataset base class, cache keys.

Every reader is a map-style ``torch.utils.data.Dataset`` returning ``(image, label)`` where
``image`` is a PIL image in mode ``"L"`` or ``"RGB"`` (or the output of ``transform``) and
``label`` is an ``int`` (ID class >= 0, OOD / unlabelled = -1). Readers build an index up front
but decode images only in ``__getitem__``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")

# Modes that hold more than 8 bits per channel: converting them to L/RGB would clip values.
_DEEP_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}


class CorruptImageError(ValueError):
    """An image file could not be decoded (truncated, corrupt or not an image)."""


def as_l_or_rgb(img: Image.Image, source: str) -> Image.Image:
    """Return ``img`` in mode ``"L"`` or ``"RGB"``.

    ``L`` and ``RGB`` pass unchanged; 1-bit and grey+alpha images become ``L``; palette,
    RGBA, CMYK and YCbCr images become ``RGB`` (alpha is dropped, as torchvision's loader does).
    Images with more than 8 bits per channel raise instead of being clipped.
    """
    if img.mode in ("L", "RGB"):
        return img
    if img.mode in _DEEP_MODES:
        raise ValueError(
            f"{source}: image mode {img.mode!r} has more than 8 bits per channel; "
            "convert it to an 8-bit L or RGB image first"
        )
    if img.mode in ("1", "LA", "La"):
        return img.convert("L")
    return img.convert("RGB")


def load_image(path: str | os.PathLike[str]) -> Image.Image:
    """Decode the image file at ``path`` fully into memory, in mode ``"L"`` or ``"RGB"``.

    Raises ``FileNotFoundError`` when it is missing and :class:`CorruptImageError` (naming the
    file) when it cannot be decoded, including truncated files.
    """
    try:
        with Image.open(path) as img:
            img.load()
    except FileNotFoundError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise CorruptImageError(f"cannot decode image file {path}: {err}") from err
    return as_l_or_rgb(img, str(path))


def hash_file(path: Path, algorithm: str = "sha256") -> str:
    """Hex digest of the file's bytes, read in chunks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def hash_file_list(kind: str, root: Path, items: Iterable[tuple[Path, int]]) -> str:
    """Cache key of a list of ``(path, label)`` pairs.

    Hashes, for each item in order, its path relative to ``root``, its label, its size in bytes
    and its modification time in whole seconds. Contents are not read (too slow for 50,000
    files): an in-place edit that keeps both size and mtime goes unnoticed. The absolute root is
    left out on purpose, so a copy of the same files elsewhere (tar keeps mtimes) keeps its key.
    """
    digest = hashlib.sha256(kind.encode())
    for path, label in items:
        st = path.stat()
        rel = os.path.relpath(path, root)
        digest.update(f"\n{rel}\t{label}\t{st.st_size}\t{int(st.st_mtime)}".encode())
    return f"{kind}:{digest.hexdigest()}"


class ImageDataset(Dataset):
    """Base class: subclasses implement ``__len__``, ``_load(index) -> (PIL image, label)``
    and ``identity()``; this class applies ``transform``."""

    name: str = "dataset"

    def __init__(self, transform: Callable[[Image.Image], Any] | None = None) -> None:
        self.transform = transform

    def __len__(self) -> int:
        raise NotImplementedError

    def _load(self, index: int) -> tuple[Image.Image, int]:
        raise NotImplementedError

    def identity(self) -> str:
        """Stable string that changes when the underlying data change (a cache key)."""
        raise NotImplementedError

    def __getitem__(self, index: int) -> tuple[Any, int]:
        n = len(self)
        if not isinstance(index, int | np.integer):
            raise TypeError(f"{self.name}: index must be an int, got {type(index).__name__}")
        if not -n <= index < n:
            raise IndexError(f"{self.name}: index {index} out of range for {n} items")
        img, label = self._load(int(index) % n)
        if self.transform is not None:
            img = self.transform(img)
        return img, label

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, n={len(self)})"
