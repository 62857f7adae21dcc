"""Datasets, transforms and downloads for OOD benchmarks.

The function ``download`` is not re-exported here: the name would shadow the submodule
``unseen.data.download``; use ``from unseen.data.download import download``.
"""

from __future__ import annotations

from unseen.data.base import IMAGE_EXTENSIONS, CorruptImageError, ImageDataset, load_image
from unseen.data.cifar import CIFARPickle, RestrictedUnpickler, UnsafePickleError, load_batch
from unseen.data.download import (
    DATASETS,
    ChecksumError,
    IncompleteDownloadError,
    UnsafeArchiveError,
    extract_archive,
    fetch_dataset,
)
from unseen.data.idx import IDXDataset, IDXFormatError, read_idx
from unseen.data.loader import make_loader
from unseen.data.readers import ImageFolder, ImageList, TinyImageNetVal, parse_image_list
from unseen.data.svhn import SVHNMat
from unseen.data.transforms import (
    CenterCrop,
    Compose,
    Grayscale,
    Normalize,
    Resize,
    ToRGB,
    ToTensor,
    Transform,
    cifar_test_transform,
    imagenet_test_transform,
    mnist_transform,
)

__all__ = [
    "DATASETS",
    "IMAGE_EXTENSIONS",
    "CIFARPickle",
    "CenterCrop",
    "ChecksumError",
    "Compose",
    "CorruptImageError",
    "Grayscale",
    "IDXDataset",
    "IDXFormatError",
    "ImageDataset",
    "ImageFolder",
    "ImageList",
    "IncompleteDownloadError",
    "Normalize",
    "Resize",
    "RestrictedUnpickler",
    "SVHNMat",
    "TinyImageNetVal",
    "ToRGB",
    "ToTensor",
    "Transform",
    "UnsafeArchiveError",
    "UnsafePickleError",
    "cifar_test_transform",
    "extract_archive",
    "fetch_dataset",
    "imagenet_test_transform",
    "load_batch",
    "load_image",
    "make_loader",
    "mnist_transform",
    "parse_image_list",
    "read_idx",
]
