"""Visual-inspection data: images of parts with optional defect masks, in three layouts.

* MVTec AD (Bergmann et al., CVPR 2019), also used by BTAD, MPDD and MVTec-style VisA:
  ``<cat>/train/good/*``, ``<cat>/test/<type>/*`` (``good`` = defect-free) and
  ``<cat>/ground_truth/<type>/<name>_mask.png``.
* A plain folder layout: a folder of normal images, a folder of abnormal ones and, optionally, a
  folder of masks named like the image (``<stem>.png`` or ``<stem>_mask.png``).
* Magnetic Tile Defects (Huang, Qiu, Yuan, The Visual Computer 2020):
  ``MT_<Type>/Imgs/<name>.jpg`` with a same-name ``.png`` mask; ``MT_Free`` holds the good parts.

Every sample has a label (0 = good, -1 = defective: the project's ID/OOD convention), a defect
type (``"good"`` for good parts) and a mask path or ``None``. Masks are 8-bit images thresholded
at ``> 127`` (soft edges are common); a missing mask means "no defect pixels".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from unseen.data.base import IMAGE_EXTENSIONS, ImageDataset, hash_file_list, load_image
from unseen.data.transforms import Transform, _check_pil, _size_pair

GOOD = "good"
MASK_THRESHOLD = 127


@dataclass(frozen=True)
class Sample:
    """One image of a part: where it is, whether it is good, and where its defect mask is."""

    image: Path
    defect: str
    mask: Path | None = None

    @property
    def label(self) -> int:
        return 0 if self.defect == GOOD else -1


def read_mask(path: Path | None, size: tuple[int, int]) -> np.ndarray:
    """Boolean (H, W) mask of ``path`` (pixels > 127), all False when ``path`` is None.

    ``size`` is the image's (width, height); a mask of another size is an error, not resized.
    """
    if path is None:
        return np.zeros((size[1], size[0]), dtype=bool)
    with Image.open(path) as img:
        if img.size != size:
            raise ValueError(
                f"mask {path} is {img.size[0]}x{img.size[1]} but its image is {size[0]}x{size[1]}"
            )
        return np.asarray(img.convert("L")) > MASK_THRESHOLD


class InspectionSet(ImageDataset):
    """A list of :class:`Sample`; ``dataset[i]`` is ``(image, label)``, ``mask(i)`` its mask."""

    def __init__(
        self,
        samples: Sequence[Sample],
        root: Path,
        name: str,
        transform: Callable[[Image.Image], Any] | None = None,
    ) -> None:
        super().__init__(transform)
        if not samples:
            raise ValueError(f"{name}: no images found under {root}")
        self.samples = list(samples)
        self.root = Path(root)
        self.name = name

    def __len__(self) -> int:
        return len(self.samples)

    def _load(self, index: int) -> tuple[Image.Image, int]:
        sample = self.samples[index]
        return load_image(sample.image), sample.label

    def mask(self, index: int) -> np.ndarray:
        sample = self.samples[index]
        with Image.open(sample.image) as img:
            size = img.size
        return read_mask(sample.mask, size)

    @property
    def labels(self) -> np.ndarray:
        return np.array([s.label for s in self.samples], dtype=np.int64)

    @property
    def defects(self) -> list[str]:
        return [s.defect for s in self.samples]

    def subset(self, rows: Sequence[int], name: str) -> InspectionSet:
        return InspectionSet([self.samples[int(r)] for r in rows], self.root, name, self.transform)

    def identity(self) -> str:
        items = [(s.image, s.label) for s in self.samples]
        masks = [(s.mask, 0) for s in self.samples if s.mask is not None]
        return hash_file_list(f"inspection:{self.name}", self.root, items + masks)


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise FileNotFoundError(f"{what} not found: expected the folder {path}")
    return path


def mvtec_categories(root: str | Path) -> list[str]:
    """The category folders under ``root`` (those with a ``train/good`` folder), sorted."""
    base = Path(root)
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir() if (p / "train" / GOOD).is_dir())


def read_mvtec(root: str | Path, category: str) -> tuple[InspectionSet, InspectionSet]:
    """(train, test) of one MVTec-AD-layout category. Train is ``train/good``; every test image
    of a defect type must have its ``ground_truth/<type>/<stem>_mask.png``."""
    base = Path(root) / category
    if not base.is_dir():
        found = mvtec_categories(root)
        listing = f"found: {', '.join(found)}" if found else "it holds none (no <cat>/train/good)"
        raise FileNotFoundError(
            f"MVTec category {category!r} not found: expected the folder {base}; the categories "
            f"under {root} are those with a train/good folder, {listing}"
        )
    train = [Sample(p, GOOD) for p in _images(_require_dir(base / "train" / GOOD, "train/good"))]
    test: list[Sample] = []
    for folder in sorted(p for p in _require_dir(base / "test", "test").iterdir() if p.is_dir()):
        for image in _images(folder):
            mask = None
            if folder.name != GOOD:
                mask = base / "ground_truth" / folder.name / f"{image.stem}_mask.png"
                if not mask.is_file():
                    raise FileNotFoundError(f"defect image {image} has no mask: expected {mask}")
            test.append(Sample(image, folder.name, mask))
    return (
        InspectionSet(train, base, f"mvtec/{category}/train"),
        InspectionSet(test, base, f"mvtec/{category}/test"),
    )


def read_folders(
    normal: str | Path, abnormal: str | Path, masks: str | Path | None = None, defect: str = "defect"
) -> tuple[list[Sample], list[Sample]]:
    """(normal, abnormal) samples of a plain folder layout; masks are matched by file stem
    (``<stem>.png`` or ``<stem>_mask.png``); an abnormal image without a mask gets none."""
    good = [Sample(p, GOOD) for p in _images(_require_dir(Path(normal), "normal folder"))]
    mask_dir = None if masks is None else _require_dir(Path(masks), "mask folder")
    bad = []
    for image in _images(_require_dir(Path(abnormal), "abnormal folder")):
        mask = None
        if mask_dir is not None:
            found = [mask_dir / f"{image.stem}{s}.png" for s in ("", "_mask")]
            mask = next((m for m in found if m.is_file()), None)
        bad.append(Sample(image, defect, mask))
    if not good or not bad:
        raise ValueError(f"need images in both folders; found {len(good)} normal and {len(bad)} abnormal")
    return good, bad


MTD_TYPES = ("Blowhole", "Break", "Crack", "Fray", "Uneven")


def read_mtd(root: str | Path) -> tuple[list[Sample], list[Sample]]:
    """(good, defective) samples of Magnetic Tile Defects under ``root`` (the folder holding
    ``MT_Free``, ``MT_Blowhole`` ...). Good parts carry no mask (all 952 ``MT_Free`` masks are
    empty). Four ``MT_Uneven`` masks are empty too: those images stay defective; see
    :func:`pixel_evaluable`."""
    base = Path(root)
    if (base / "magnetic_tile_defects").is_dir():
        base = base / "magnetic_tile_defects"
    good = [Sample(p, GOOD) for p in _jpgs(base / "MT_Free" / "Imgs")]
    bad = []
    for kind in MTD_TYPES:
        for image in _jpgs(base / f"MT_{kind}" / "Imgs"):
            mask = image.with_suffix(".png")
            if not mask.is_file():
                raise FileNotFoundError(f"Magnetic Tile Defects image {image} has no mask {mask}")
            bad.append(Sample(image, kind, mask))
    return good, bad


def _jpgs(folder: Path) -> list[Path]:
    _require_dir(folder, "Magnetic Tile Defects folder")
    return sorted(folder.glob("*.jpg"))


@dataclass(frozen=True)
class InspectionSplit:
    """Train and calibration images are good parts only; test holds the rest of them and
    every defective image."""

    train: InspectionSet
    calibration: InspectionSet
    test: InspectionSet
    seed: int


def split_good(
    good: Sequence[Sample],
    bad: Sequence[Sample],
    root: Path,
    name: str,
    *,
    train: float = 0.6,
    calibration: float = 0.15,
    seed: int = 0,
) -> InspectionSplit:
    """Seeded random split of the good parts into train / calibration / test fractions
    (test = the rest) and a test set of those plus every defective sample.

    The default 60/15/25 % of Magnetic Tile Defects' 952 ``MT_Free`` images gives 571 train,
    142 calibration and 239 good test images, plus 392 defective ones.
    """
    if not (0 < train and 0 <= calibration and train + calibration < 1):
        raise ValueError(
            f"need 0 < train, 0 <= calibration, train + calibration < 1; got {train}, {calibration}"
        )
    order = np.random.default_rng(seed).permutation(len(good))
    n_train = round(train * len(good))
    n_cal = round(calibration * len(good))
    pick = [good[i] for i in order]
    parts = pick[:n_train], pick[n_train : n_train + n_cal], pick[n_train + n_cal :] + list(bad)
    kinds = ("train", "cal", "test")
    sets = [InspectionSet(p, root, f"{name}/{k}") for p, k in zip(parts, kinds, strict=True)]
    return InspectionSplit(sets[0], sets[1], sets[2], seed)


def pixel_evaluable(dataset: InspectionSet) -> np.ndarray:
    """Rows that count in pixel metrics: good parts, and defective parts whose mask marks at
    least one pixel. A defective image with an empty mask (4 of MTD's ``MT_Uneven``) has an
    unlabelled defect: its pixels are neither known defect nor known good, so it is left out of
    pixel metrics (it still counts as defective at image level)."""
    keep = [i for i, s in enumerate(dataset.samples) if s.label == 0 or dataset.mask(i).any()]
    return np.array(keep, dtype=np.int64)


class SquashResize(Transform):
    """Resize to exactly ``size`` (int or (height, width)), ignoring the aspect ratio, bicubic.

    Inspection images are squashed rather than cropped so that a defect at the border is kept."""

    def __init__(self, size: int | Sequence[int]) -> None:
        self.height, self.width = _size_pair(size, "SquashResize")

    def __call__(self, img: Image.Image) -> Image.Image:
        img = _check_pil(img, "SquashResize")
        return img.resize((self.width, self.height), Image.Resampling.BICUBIC)

    def describe(self) -> str:
        return f"SquashResize(height={self.height}, width={self.width}, interpolation=bicubic)"
