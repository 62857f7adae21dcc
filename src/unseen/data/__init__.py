"""Datasets, transforms and downloads for OOD benchmarks.

The function ``download`` is not re-exported here: the name would shadow the submodule
``unseen.data.download``; use ``from unseen.data.download import download``.
"""

from __future__ import annotations

from typing import Any

from unseen import _lazy

# Each name loads on first use, so reading a table (unseen.data.tables) imports no torch.
_LAZY: _lazy.Table = {
    **_lazy.table(
        "unseen.data.base",
        "IMAGE_EXTENSIONS", "CorruptImageError", "ImageDataset", "load_image",
    ),
    **_lazy.table(
        "unseen.data.cifar",
        "CIFARPickle", "RestrictedUnpickler", "UnsafePickleError", "load_batch",
    ),
    **_lazy.table(
        "unseen.data.download",
        "DATASETS", "ChecksumError", "IncompleteDownloadError", "UnsafeArchiveError",
        "extract_archive", "fetch_dataset",
    ),
    **_lazy.table(
        "unseen.data.idx",
        "IDXDataset", "IDXFormatError", "read_idx",
    ),
    **_lazy.table(
        "unseen.data.loader",
        "make_loader",
    ),
    **_lazy.table(
        "unseen.data.readers",
        "ImageFolder", "ImageList", "TinyImageNetVal", "parse_image_list",
    ),
    **_lazy.table(
        "unseen.data.svhn",
        "SVHNMat",
    ),
    **_lazy.table(
        "unseen.data.transforms",
        "CenterCrop", "Compose", "Grayscale", "Normalize", "Resize", "ToRGB", "ToTensor",
        "Transform", "cifar_test_transform", "imagenet_test_transform", "mnist_transform",
    ),
}


def __getattr__(name: str) -> Any:
    return _lazy.load("unseen.data", _LAZY, name)


def __dir__() -> list[str]:
    return sorted(_LAZY)


__all__ = sorted(_LAZY)
