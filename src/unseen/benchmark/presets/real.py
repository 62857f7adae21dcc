"""Presets on the real data bundle (``../shared/data``, unpacked with ``../shared/data/unpack DIR``).

``cifar10``: the OpenOOD v1.5 CIFAR-10 protocol (Zhang et al., 2023, "OpenOOD v1.5: Enhanced
Benchmark for Out-of-Distribution Detection", arXiv:2306.09301) on the bundle's copies. Its
image lists are OpenOOD's, mapped onto the local files by ``unpack``:

* ID: fit = CIFAR-10 train (50,000), val = ``val_cifar10`` (1,000), test = ``test_cifar10``
  (9,000). The images are a **JPEG q75 re-encoding** of CIFAR-10, so results are labelled
  "CIFAR-10 (JPEG q75)" and are not comparable with published OpenOOD tables.
* OOD val: ``val_tin`` (1,000 Tiny ImageNet val images); near: ``test_tin`` (7,793, disjoint).
* far: MNIST, Fashion-MNIST and notMNIST (the 10,000 IDX test images of each; OpenOOD's MNIST
  list names 70,000 JPEG files that cannot be mapped onto the IDX file; Fashion-MNIST and
  notMNIST are not in OpenOOD's CIFAR-10 far set but are here) and Textures (``test_texture``,
  the 1,200 images of the 10 DTD classes in the bundle, of OpenOOD's 5,640).
* Preprocessing: OpenOOD's 32x32 test transform (RGB, resize 32, centre-crop 32, normalise)
  with the *model's* statistics (:func:`unseen.models.info`; the akamaster ResNets use ImageNet
  mean/std). Grey images (IDX digits, 168 Tiny ImageNet files) are copied to 3 channels.

``mnist``: OpenOOD v1.5's MNIST benchmark with the data at hand. Only the MNIST *test* set
exists here, so its 10,000 images are split per class (fixed seed :data:`SPLIT_SEED`) into fit
50 %, val 10 % and test the rest: 5,000 / 1,000 / 4,000. As in OpenOOD, near = notMNIST and
Fashion-MNIST, far = Textures, CIFAR-10 and Tiny ImageNet (Places365 is not available), and the
OOD validation set is held-out notMNIST (OpenOOD: ``val_notmnist``): 100 images per letter
(1,000), the other 9,000 are the near test set. Far sets: the 1,200 textures, all 10,000 CIFAR-10
test images and all 10,000 Tiny ImageNet val images. Preprocessing: grayscale, resize 28,
centre-crop 28, pixels / 255 with no mean/std normalisation (the Outlier Exposure ConvNet was
trained on raw [0, 1] pixels; OpenOOD's own MNIST LeNet normalises). MNIST passes losslessly.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from unseen import models
from unseen.benchmark.presets.registry import register_preset
from unseen.benchmark.spec import AsOOD, BenchmarkSpec, PreparedModel
from unseen.data import (
    IDXDataset,
    ImageFolder,
    ImageList,
    TinyImageNetVal,
    cifar_test_transform,
    mnist_transform,
)
from unseen.data.idx import LABELS_MAGIC, read_idx

CIFAR10_MODELS = ("resnet56_cifar10", "resnet20_cifar10")
MNIST_MODELS = ("mnist_convnet_baseline", "mnist_convnet_oe")
CIFAR10_LABEL = "CIFAR-10 (JPEG q75)"
IMGLIST = "benchmark_imglist/cifar10"
#: seed of the MNIST fit/val/test split and of the notMNIST val/test split
SPLIT_SEED = 0
#: fractions of each MNIST class for fit and val; test gets the rest
MNIST_FIT, MNIST_VAL = 0.5, 0.1
#: notMNIST images per letter held out as OOD validation data
NOTMNIST_VAL_PER_CLASS = 100
UNPACK_HINT = "create it with `../shared/data/unpack DIR` (run from the repository root)"


class DataRootError(FileNotFoundError):
    """The data folder of a real-data preset is not given, or not a complete unpacked bundle."""


def _idx_files(folder: str) -> tuple[str, str]:
    return f"{folder}/t10k-images-idx3-ubyte.gz", f"{folder}/t10k-labels-idx1-ubyte.gz"


def require_data_root(data_root: str | Path | None, preset: str, needed: Sequence[str]) -> Path:
    """``data_root`` as a Path, after checking that every path in ``needed`` exists below it."""
    if data_root is None:
        raise DataRootError(
            f"preset {preset!r} needs the real data bundle: pass --data-root DIR (Python: "
            f"data_root=DIR) naming a folder made by `../shared/data/unpack DIR`"
        )
    root = Path(data_root)
    if not root.is_dir():
        raise DataRootError(f"preset {preset!r}: data root {root} is not a directory; {UNPACK_HINT}")
    missing = [rel for rel in needed if not (root / rel).exists()]
    if missing:
        raise DataRootError(
            f"preset {preset!r}: data root {root} is incomplete, missing {len(missing)} item(s): "
            f"{', '.join(missing[:4])}; (re)create it with `../shared/data/unpack {root}`"
        )
    return root


def _check_model(model: str, allowed: Sequence[str], preset: str) -> None:
    if model not in allowed:
        raise ValueError(f"preset {preset!r}: unknown model {model!r}; choose one of {list(allowed)}")


def _build(root: Path, preset: str, build: Callable[[], BenchmarkSpec]) -> BenchmarkSpec:
    """Run ``build``, turning a missing image file into a :class:`DataRootError` with the fix."""
    try:
        return build()
    except FileNotFoundError as exc:
        if isinstance(exc, DataRootError):
            raise
        raise DataRootError(
            f"preset {preset!r}: data root {root} is incomplete ({exc}); "
            f"(re)create it with `../shared/data/unpack {root}`"
        ) from exc


class IDXSubset(Dataset):
    """Items ``indices`` (in that order) of an :class:`~unseen.data.IDXDataset`.

    ``identity()`` extends the file's identity with a hash of the indices (a cache key), and
    ``sample_keys()`` names each item by its resolved images file and index, so
    :class:`BenchmarkSpec` can check that two subsets of one file share no image.
    """

    def __init__(self, inner: IDXDataset, indices: Sequence[int] | np.ndarray) -> None:
        idx = np.asarray(indices, dtype=np.int64)
        if idx.ndim != 1:
            raise ValueError(f"IDXSubset: indices must be 1-D, got shape {idx.shape}")
        if idx.size and (idx.min() < 0 or idx.max() >= len(inner)):
            raise IndexError(f"IDXSubset: indices must lie in [0, {len(inner)}) for {inner.name}")
        if len(np.unique(idx)) != len(idx):
            raise ValueError("IDXSubset: indices repeat")
        self.inner = inner
        self.indices = idx

    @property
    def transform(self) -> Any:
        return self.inner.transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        return self.inner[int(self.indices[index])]

    def identity(self) -> str:
        digest = hashlib.sha256(self.indices.astype("<i8").tobytes()).hexdigest()
        return f"{self.inner.identity()}[{len(self.indices)} items:{digest}]"

    def sample_keys(self) -> list[str]:
        path = self.inner.images_path.resolve()
        return [f"{path}#{i}" for i in self.indices]

    def __repr__(self) -> str:
        return f"IDXSubset({self.inner.name!r}, n={len(self)})"


def stratified_split(
    labels: np.ndarray, fractions: Sequence[float], seed: int
) -> list[np.ndarray]:
    """Shuffle each class's indices and cut them by ``fractions`` (rounded; the last part gets
    the rest). Returns one sorted index array per part, ``len(fractions) + 1`` in all."""
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in range(len(fractions) + 1)]
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        cuts = np.cumsum([round(f * len(idx)) for f in fractions])
        for part, chunk in zip(parts, np.split(idx, cuts), strict=True):
            part.append(chunk)
    return [np.sort(np.concatenate(p)) for p in parts]


#: decoding workers for extraction: JPEG decoding, not the network, bounds small CIFAR models
DECODE_WORKERS = min(4, max(0, (os.cpu_count() or 1) - 1))


def _model_factory(
    name: str, root: Path, description: str, transform: Any
) -> Callable[[Path | None], PreparedModel]:
    arch = models.info(models.preset(name).model)

    def factory(_cache_dir: Path | None) -> PreparedModel:
        return PreparedModel(
            models.pretrained(name, root),
            head=arch.head,
            input_std=arch.std if arch.std is not None else (1.0,),
            description=description,
            model_name=arch.name,
            transform=transform,
        )

    return factory


def _idx_all(root: Path, folder: str, transform: Any) -> IDXSubset:
    """Every image of an IDX test set, labelled -1 (labels file not read)."""
    ds = IDXDataset(root / _idx_files(folder)[0], None, transform)
    return IDXSubset(ds, np.arange(len(ds)))


@register_preset("cifar10")
def cifar10(data_root: str | Path | None = None, model: str = "resnet56_cifar10") -> BenchmarkSpec:
    """OpenOOD v1.5 CIFAR-10 on the bundle (JPEG q75 copy): near TIN; far MNIST, F-MNIST, notMNIST, DTD.

    Options: ``data_root`` (required; a folder made by ``../shared/data/unpack DIR``) and
    ``model`` (``resnet56_cifar10``, default, or ``resnet20_cifar10``). See the module docstring.
    """
    _check_model(model, CIFAR10_MODELS, "cifar10")
    lists = ("train_cifar10", "val_cifar10", "test_cifar10", "val_tin", "test_tin", "test_texture")
    needed = [f"{IMGLIST}/{n}.txt" for n in lists]
    needed += [_idx_files(f)[0] for f in ("mnist", "fashion_mnist", "notmnist")]
    needed.append(models.preset(model).checkpoint)
    root = require_data_root(data_root, "cifar10", needed)
    arch = models.info(models.preset(model).model)
    if arch.mean is None or arch.std is None:
        raise ValueError(f"model {model!r} declares no input mean/std; cifar10 needs them to normalise")
    transform = cifar_test_transform(arch.mean, arch.std)

    def imglist(name: str) -> ImageList:
        return ImageList(root / IMGLIST / f"{name}.txt", root, transform)

    def build() -> BenchmarkSpec:
        return BenchmarkSpec(
            name="cifar10",
            num_workers=DECODE_WORKERS,
            model=_model_factory(
                model, root, f"{model} ({arch.description}) on {CIFAR10_LABEL}", transform
            ),
            fit=imglist("train_cifar10"),
            val=imglist("val_cifar10"),
            test=imglist("test_cifar10"),
            ood_val=imglist("val_tin"),
            near={"tin": imglist("test_tin")},
            far={
                "mnist": _idx_all(root, "mnist", transform),
                "fashionmnist": _idx_all(root, "fashion_mnist", transform),
                "notmnist": _idx_all(root, "notmnist", transform),
                "texture": imglist("test_texture"),
            },
            meta={
                "id_dataset": CIFAR10_LABEL,
                "model_preset": model,
                "preprocessing": transform.describe(),
                "caveat": "CIFAR-10 re-encoded as JPEG q75: absolute numbers are not comparable "
                "with published OpenOOD tables; Textures = 10 of 47 DTD classes, downscaled; "
                "MNIST = the 10,000 test images (IDX)",
            },
        )

    return _build(root, "cifar10", build)


@register_preset("mnist")
def mnist(data_root: str | Path | None = None, model: str = "mnist_convnet_baseline") -> BenchmarkSpec:
    """OpenOOD v1.5 MNIST on the bundle: MNIST test split 5k/1k/4k; near notMNIST, F-MNIST; far 3 sets.

    Options: ``data_root`` (required; a folder made by ``../shared/data/unpack DIR``) and
    ``model`` (``mnist_convnet_baseline``, default, or ``mnist_convnet_oe``). The splits are
    fixed (seed :data:`SPLIT_SEED`); see the module docstring.
    """
    _check_model(model, MNIST_MODELS, "mnist")
    needed = [*_idx_files("mnist"), *_idx_files("notmnist"), _idx_files("fashion_mnist")[0],
              f"{IMGLIST}/test_texture.txt", "cifar10/test", "tin/wnids.txt",
              "tin/val/val_annotations.txt", models.preset(model).checkpoint]
    root = require_data_root(data_root, "mnist", needed)
    arch = models.info(models.preset(model).model)
    transform = mnist_transform()

    def build() -> BenchmarkSpec:
        images_path, labels_path = (root / f for f in _idx_files("mnist"))
        digits = IDXDataset(images_path, labels_path, transform=transform)
        fit, val, test = stratified_split(digits.targets, (MNIST_FIT, MNIST_VAL), SPLIT_SEED)
        letters_path, letter_labels_path = (root / f for f in _idx_files("notmnist"))
        letters = IDXDataset(letters_path, None, transform)
        letter_labels = read_idx(letter_labels_path, LABELS_MAGIC).astype(np.int64)
        letters_val, letters_test = _per_class_holdout(letter_labels, NOTMNIST_VAL_PER_CLASS)
        return BenchmarkSpec(
            name="mnist",
            num_workers=DECODE_WORKERS,
            model=_model_factory(
                model, root, f"{model} ({arch.description}) on MNIST test", transform
            ),
            fit=IDXSubset(digits, fit),
            val=IDXSubset(digits, val),
            test=IDXSubset(digits, test),
            ood_val=IDXSubset(letters, letters_val),
            near={
                "notmnist": IDXSubset(letters, letters_test),
                "fashionmnist": _idx_all(root, "fashion_mnist", transform),
            },
            far={
                "texture": ImageList(root / IMGLIST / "test_texture.txt", root, transform),
                "cifar10": AsOOD(ImageFolder(root / "cifar10" / "test", transform)),
                "tin": AsOOD(TinyImageNetVal(root / "tin", transform)),
            },
            meta={
                "id_dataset": "MNIST test set (10,000) split per class 50/10/40 % "
                f"(5,000/1,000/4,000), seed {SPLIT_SEED}",
                "ood_val": f"notMNIST, {NOTMNIST_VAL_PER_CLASS} per letter, held out of the near set",
                "model_preset": model,
                "preprocessing": transform.describe(),
            },
        )

    return _build(root, "mnist", build)


def _per_class_holdout(labels: np.ndarray, per_class: int) -> tuple[np.ndarray, np.ndarray]:
    """``per_class`` random indices of each class (seed :data:`SPLIT_SEED`) and the rest."""
    rng = np.random.default_rng(SPLIT_SEED)
    held = [rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in np.unique(labels)]
    val = np.sort(np.concatenate(held))
    return val, np.setdiff1d(np.arange(len(labels)), val)
