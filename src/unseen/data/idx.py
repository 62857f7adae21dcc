"""MNIST-style IDX files (LeCun et al., http://yann.lecun.com/exdb/mnist/).

Header: two zero bytes, a type byte (0x08 = unsigned byte, the only one used by MNIST,
Fashion-MNIST and notMNIST and the only one read here), the number of dimensions, then one
big-endian uint32 per dimension; the row-major data follow. Images files have magic
0x00000803 (N, rows, cols), label files 0x00000801 (N).
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .base import ImageDataset, hash_file

IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801


class IDXFormatError(ValueError):
    """An IDX file is truncated, corrupt or of an unexpected kind."""


def read_idx(path: str | os.PathLike[str], magic: int) -> np.ndarray:
    """Read an unsigned-byte IDX file (``.gz`` is decompressed in memory) into a uint8 array.

    ``magic`` is the expected magic number (:data:`IMAGES_MAGIC` or :data:`LABELS_MAGIC`).
    Uncompressed files are memory-mapped. Raises :class:`IDXFormatError` naming the file when
    the magic, the header or the data length is wrong.
    """
    path = Path(path)
    ndim = magic & 0xFF
    header_len = 4 + 4 * ndim
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(path.read_bytes())
        except (OSError, EOFError, zlib.error) as err:
            raise IDXFormatError(f"{path}: not a valid gzip file ({err})") from err
        head = raw[:header_len]
    else:
        with open(path, "rb") as f:
            head = f.read(header_len)
        raw = None
    if len(head) < 4:
        raise IDXFormatError(f"{path}: file too short for an IDX header")
    (found,) = struct.unpack(">I", head[:4])
    if found != magic:
        raise IDXFormatError(
            f"{path}: magic number 0x{found:08x}, expected 0x{magic:08x} "
            f"({'images' if magic == IMAGES_MAGIC else 'labels'} file)"
        )
    if len(head) < header_len:
        raise IDXFormatError(f"{path}: truncated IDX header")
    dims = struct.unpack(f">{ndim}I", head[4:])
    expected = int(np.prod(dims, dtype=np.int64))
    size = len(raw) - header_len if raw is not None else path.stat().st_size - header_len
    if size != expected:
        raise IDXFormatError(
            f"{path}: header announces {'x'.join(map(str, dims))} = {expected} bytes of data, "
            f"file holds {size}; the file is truncated or corrupt"
        )
    if raw is not None:
        return np.frombuffer(raw, dtype=np.uint8, offset=header_len).reshape(dims)
    return np.memmap(path, dtype=np.uint8, mode="r", offset=header_len, shape=dims)


class IDXDataset(ImageDataset):
    """Images (mode ``"L"``) and labels from a pair of IDX files, e.g. MNIST ``t10k-*``.

    Without ``labels_path`` every label is -1 (unlabelled / OOD use). ``identity()`` is the
    SHA-256 of the bytes of both files as stored (MNIST test: 1.6 MB gzipped).
    """

    def __init__(
        self,
        images_path: str | os.PathLike[str],
        labels_path: str | os.PathLike[str] | None = None,
        transform: Callable[[Image.Image], Any] | None = None,
    ) -> None:
        super().__init__(transform)
        self.images_path = Path(images_path)
        self.labels_path = None if labels_path is None else Path(labels_path)
        self.images = read_idx(self.images_path, IMAGES_MAGIC)
        if self.labels_path is None:
            self.targets = np.full(len(self.images), -1, dtype=np.int64)
        else:
            self.targets = read_idx(self.labels_path, LABELS_MAGIC).astype(np.int64)
            if len(self.targets) != len(self.images):
                raise IDXFormatError(
                    f"{self.labels_path} holds {len(self.targets)} labels but "
                    f"{self.images_path} holds {len(self.images)} images"
                )
        # e.g. "mnist/t10k": the folder tells MNIST from Fashion-MNIST, whose file names match
        self.name = f"{self.images_path.parent.name}/{self.images_path.name.split('-')[0]}"

    def __len__(self) -> int:
        return len(self.images)

    def _load(self, index: int) -> tuple[Image.Image, int]:
        return Image.fromarray(np.array(self.images[index])), int(self.targets[index])

    def identity(self) -> str:
        parts = [hash_file(self.images_path)]
        if self.labels_path is not None:
            parts.append(hash_file(self.labels_path))
        return "IDXDataset:" + ":".join(parts)
