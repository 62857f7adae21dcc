"""Data of the embedded ``digits`` benchmark: scikit-learn's 8×8 digits and natural-image patches.

Everything here installs with the dependencies (scikit-learn ships the images), so the default
benchmark runs offline in seconds. Pixels keep the digits' scale, integers 0..16; the datasets
hand the network ``pixel / 16`` as a (1, 8, 8) float32 tensor.

Splits (``seed`` shuffles within each class; sizes below are for the 1,797 bundled digits):

* ID = digits 0–5 (1,083 images), split per class into fit 50 %, val 20 %, test 30 %
  (fit 541, val 216, test 326).
* near-OOD test ``digits6-9``: digits 6–9 (714) minus a stratified 20 % held out for
  validation (571 images).
* far-OOD test ``flower``: the 100 patches of ``flower.jpg``; ``noise``: 300 images of
  independent uniform integers 0..16.
* OOD validation ``ood_val`` (311 images): the held-out 20 % of digits 6–9 (143) plus the 168
  patches of ``china.jpg``. As in OpenOOD v1.5, which validates CIFAR detectors on held-out Tiny ImageNet
  images (also a near-OOD test source), validation samples come from test *sources* but are never
  test *samples*: the digits by index, the patches by image.

Patches imitate how the digits were made (32×32 bitmaps counted in 4×4 blocks): the image is
converted to grayscale (ITU-R 601 luma, PIL mode ``"L"``), cut into non-overlapping 32×32
crops, block-averaged 4×4 to 8×8, and each patch is stretched to 0..16 and rounded, since every
digit spans the full range (all have minimum 0, 98 % maximum 16). Crops whose 8×8 range is below
:data:`MIN_CONTRAST` grey levels (flat sky, blur) are not used: stretching them would only
amplify JPEG noise.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from unseen.cache import hash_arrays

ID_CLASSES = (0, 1, 2, 3, 4, 5)
NEAR_CLASSES = (6, 7, 8, 9)
#: fractions of each ID class for fit and val (test gets the rest)
ID_FIT, ID_VAL = 0.5, 0.2
#: fraction of each near-OOD class held out for validation
NEAR_VAL = 0.2
#: side of a source crop in image pixels (block-averaged 4×4 to 8×8, like the digits)
CROP = 32
#: smallest grey-level range (0..255) of a block-averaged crop kept as a patch
MIN_CONTRAST = 32.0
NOISE_SIZE = 300
MAX_PIXEL = 16


class ArrayImages(Dataset):
    """Small in-memory 8×8 images with values 0..16; items are ``(pixels / 16, label)``.

    ``origins[i]`` says where image ``i`` came from (``"digits:<index>"``,
    ``"flower.jpg:y=<row>,x=<col>"``, ``"noise:<index>"``); :meth:`sample_keys` identifies
    images by pixel content, so the benchmark can check that no image sits in two splits.
    """

    transform = None

    def __init__(
        self, name: str, images: np.ndarray, labels: np.ndarray, origins: list[str]
    ) -> None:
        images = np.asarray(images, dtype=np.float32)
        labels = np.asarray(labels, dtype=np.int64)
        if images.ndim != 3 or images.shape[1:] != (8, 8):
            raise ValueError(f"{name}: images must have shape (N, 8, 8), got {images.shape}")
        if not len(images) == len(labels) == len(origins):
            raise ValueError(f"{name}: images, labels and origins differ in length")
        if images.size and (images.min() < 0 or images.max() > MAX_PIXEL):
            raise ValueError(f"{name}: pixel values must lie in 0..{MAX_PIXEL}")
        self.name = name
        self.images = images
        self.labels = labels
        self.origins = list(origins)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        x = torch.from_numpy(self.images[index] / MAX_PIXEL).unsqueeze(0)
        return x, int(self.labels[index])

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All inputs (N, 1, 8, 8) and labels (N,) at once, e.g. for training."""
        x = torch.from_numpy(self.images / MAX_PIXEL).unsqueeze(1)
        return x, torch.from_numpy(self.labels)

    def identity(self) -> str:
        return f"unseen.digits:{self.name}:{hash_arrays([self.images, self.labels])}"

    def sample_keys(self) -> list[str]:
        return [pixel_hash(img) for img in self.images]

    def __repr__(self) -> str:
        return f"ArrayImages({self.name!r}, n={len(self)})"


def pixel_hash(image: np.ndarray) -> str:
    """Content hash of one 8×8 image with integer values 0..16."""
    return hashlib.sha256(np.asarray(image, dtype=np.uint8).tobytes()).hexdigest()


@dataclass(frozen=True)
class DigitsSplits:
    fit: ArrayImages
    val: ArrayImages
    test: ArrayImages
    ood_val: ArrayImages
    near: dict[str, ArrayImages]
    far: dict[str, ArrayImages]


def _stratified(
    labels: np.ndarray, classes: tuple[int, ...], fractions: tuple[float, ...], rng: np.random.Generator
) -> list[np.ndarray]:
    """Indices of each class shuffled and cut by ``fractions`` (the last part takes the rest)."""
    parts: list[list[np.ndarray]] = [[] for _ in range(len(fractions) + 1)]
    for c in classes:
        idx = rng.permutation(np.flatnonzero(labels == c))
        cuts = np.cumsum([round(f * len(idx)) for f in fractions])
        for part, chunk in zip(parts, np.split(idx, cuts), strict=True):
            part.append(chunk)
    return [np.sort(np.concatenate(p)) for p in parts]


def natural_patches(image: str) -> tuple[np.ndarray, list[str]]:
    """8×8 patches (values 0..16) of scikit-learn's sample image ``image`` and their origins."""
    from sklearn.datasets import load_sample_image

    grey = np.asarray(Image.fromarray(load_sample_image(image)).convert("L"), dtype=np.float64)
    patches, origins = [], []
    for y in range(0, grey.shape[0] - CROP + 1, CROP):
        for x in range(0, grey.shape[1] - CROP + 1, CROP):
            crop = grey[y : y + CROP, x : x + CROP]
            small = crop.reshape(8, CROP // 8, 8, CROP // 8).mean(axis=(1, 3))
            lo, hi = small.min(), small.max()
            if hi - lo < MIN_CONTRAST:
                continue
            patches.append(np.round((small - lo) / (hi - lo) * MAX_PIXEL))
            origins.append(f"{image}:y={y},x={x}")
    return np.stack(patches).astype(np.float32), origins


def uniform_noise(n: int, seed: int) -> np.ndarray:
    """``n`` 8×8 images of independent uniform integers 0..16."""
    rng = np.random.default_rng([seed, 7])
    return rng.integers(0, MAX_PIXEL + 1, size=(n, 8, 8)).astype(np.float32)


def digits_splits(seed: int = 0) -> DigitsSplits:
    """The ``digits`` benchmark's datasets (see the module docstring for the design)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images, targets = bunch.images.astype(np.float32), bunch.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    fit, val, test = _stratified(targets, ID_CLASSES, (ID_FIT, ID_VAL), rng)
    near_val, near_test = _stratified(targets, NEAR_CLASSES, (NEAR_VAL,), rng)

    def digits(name: str, idx: np.ndarray, ood: bool) -> ArrayImages:
        labels = np.full(len(idx), -1) if ood else targets[idx]
        return ArrayImages(name, images[idx], labels, [f"digits:{i}" for i in idx])

    def ood(name: str, imgs: np.ndarray, origins: list[str]) -> ArrayImages:
        return ArrayImages(name, imgs, np.full(len(imgs), -1), origins)

    china, china_origins = natural_patches("china.jpg")
    flower, flower_origins = natural_patches("flower.jpg")
    held_out = digits("ood_val", near_val, ood=True)
    noise = uniform_noise(NOISE_SIZE, seed)
    return DigitsSplits(
        fit=digits("id_fit", fit, ood=False),
        val=digits("id_val", val, ood=False),
        test=digits("id_test", test, ood=False),
        ood_val=ood(
            "ood_val",
            np.concatenate([held_out.images, china]),
            held_out.origins + china_origins,
        ),
        near={"digits6-9": digits("digits6-9", near_test, ood=True)},
        far={
            "flower": ood("flower", flower, flower_origins),
            "noise": ood("noise", noise, [f"noise:{i}" for i in range(NOISE_SIZE)]),
        },
    )
