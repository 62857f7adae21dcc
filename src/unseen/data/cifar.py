"""CIFAR-10 / CIFAR-100 "python version" batches (Krizhevsky 2009,
https://www.cs.toronto.edu/~kriz/cifar.html).

The batches are pickles of a dict with ``data`` (N x 3072 uint8: 1024 red, 1024 green, 1024
blue values, each a row-major 32x32 plane) and ``labels`` (CIFAR-10) or ``fine_labels`` /
``coarse_labels`` (CIFAR-100). They were written by Python 2, so keys are byte strings unless
decoded; both spellings are accepted.

Why reading them is safe here: a pickle can call any importable function while loading. The
:class:`RestrictedUnpickler` resolves only the three globals a numpy array needs
(``numpy.ndarray``, ``numpy.dtype`` and numpy's ``_reconstruct``) and refuses every other
name, so a tampered batch fails with :class:`UnsafePickleError` instead of running code. The
remaining opcodes only build str/bytes/int/float/list/tuple/dict values.
"""

from __future__ import annotations

import importlib
import io
import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .base import ImageDataset, hash_file


def _numpy_reconstruct() -> Any:
    # numpy >= 2 moved the module; the files name the numpy 1 location
    try:
        module = importlib.import_module("numpy._core.multiarray")
    except ImportError:  # pragma: no cover - numpy 1
        module = importlib.import_module("numpy.core.multiarray")
    return module._reconstruct


_reconstruct = _numpy_reconstruct()

_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle asked for a global outside the whitelist."""


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that only rebuilds numpy arrays and builtin containers (see module doc)."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refusing to load global {module}.{name}: a CIFAR batch holds only numpy "
                "arrays, lists and strings; this file is not an official batch"
            ) from None


def load_batch(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load one CIFAR batch with :class:`RestrictedUnpickler`; keys decoded to ``str``."""
    path = Path(path)
    try:
        # latin1 turns Python 2 byte strings into str without loss (numpy's recommendation)
        obj = RestrictedUnpickler(io.BytesIO(path.read_bytes()), encoding="latin1").load()
    except UnsafePickleError as err:
        raise UnsafePickleError(f"{path}: {err}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as err:
        raise ValueError(f"{path}: not a readable CIFAR batch ({err})") from err
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a dict, got {type(obj).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


class CIFARPickle(ImageDataset):
    """CIFAR-10 or CIFAR-100 from the official python batches in ``root``.

    ``root`` is the extracted folder (``cifar-10-batches-py`` with ``data_batch_1..5`` and
    ``test_batch``, or ``cifar-100-python`` with ``train`` and ``test``). ``fine`` selects
    CIFAR-100's 100 fine labels (default) or its 20 coarse labels; CIFAR-10 has only one kind.
    Images are RGB 32x32. ``identity()`` is the SHA-256 of the batch files' bytes.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        train: bool,
        fine: bool = True,
        transform: Callable[[Image.Image], Any] | None = None,
    ) -> None:
        super().__init__(transform)
        self.root = Path(root)
        if (self.root / "test_batch").is_file():
            names = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
            if not fine:
                raise ValueError("CIFAR-10 has no coarse labels; leave fine=True")
            key = "labels"
        elif (self.root / "test").is_file():
            names = ["train"] if train else ["test"]
            key = "fine_labels" if fine else "coarse_labels"
        else:
            raise FileNotFoundError(
                f"CIFARPickle: {self.root} holds neither CIFAR-10 batches (test_batch) nor "
                "CIFAR-100 ones (test); pass the extracted cifar-*-py* folder"
            )
        self.files = [self.root / n for n in names]
        self.label_key = key
        data, labels = [], []
        for f in self.files:
            if not f.is_file():
                raise FileNotFoundError(f"CIFARPickle: missing batch file {f}")
            batch = load_batch(f)
            if "data" not in batch or key not in batch:
                raise ValueError(f"{f}: batch lacks 'data' or '{key}'")
            arr = np.asarray(batch["data"])
            if arr.dtype != np.uint8 or arr.ndim != 2 or arr.shape[1] != 3072:
                raise ValueError(f"{f}: 'data' must be N x 3072 uint8, got {arr.dtype} "
                                 f"{arr.shape}")
            if len(batch[key]) != len(arr):
                raise ValueError(f"{f}: {len(batch[key])} labels for {len(arr)} images")
            data.append(arr)
            labels.append(np.asarray(batch[key], dtype=np.int64))
        self.data = np.concatenate(data).reshape(-1, 3, 32, 32)
        self.targets = np.concatenate(labels)
        self.name = f"{self.root.name}/{'train' if train else 'test'}"

    def __len__(self) -> int:
        return len(self.data)

    def _load(self, index: int) -> tuple[Image.Image, int]:
        hwc = np.ascontiguousarray(self.data[index].transpose(1, 2, 0))
        return Image.fromarray(hwc), int(self.targets[index])

    def identity(self) -> str:
        return f"CIFARPickle:{self.label_key}:" + ":".join(hash_file(f) for f in self.files)
