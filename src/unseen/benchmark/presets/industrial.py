"""Visual-inspection presets: ``mtd`` (Magnetic Tile Defects, in the data bundle) and ``mvtec``.

``mtd``: Huang, Qiu, Yuan, "Surface defect saliency of magnetic tile", The Visual Computer 2020.
The 952 ``MT_Free`` images are split with seed 0 (``split_good``) into 60 % train (571), 15 %
calibration (143) and 25 % good test (238); the test set adds all 392 defective images
(Blowhole 115, Break 85, Crack 57, Fray 32, Uneven 103). Masks count at > 127. The four
``MT_Uneven`` images with empty masks stay defective at image level and are left out of the pixel
metrics (their defect pixels are unlabelled). Images are squashed to 256 x 256 (no crop: defects
reach the border); EfficientNet-Lite0 blocks 10 and 14 (strides 16 and 32; 112 + 192 channels)
give a 16 x 16 grid of 304-d patches. PatchCore keeps the paper's 10 % coreset. IM-IAD's MTD
numbers use their own split and a Wide-ResNet-50.

``mvtec``: one category of an MVTec-AD-layout folder (MVTec AD, BTAD, MPDD, VisA converted):
``train/good`` is split 80 % train / 20 % calibration (seed 0); the test set is ``test/`` as given.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from unseen.benchmark.presets.registry import register_preset
from unseen.benchmark.protocols.industrial import InspectionTask
from unseen.data.inspection import InspectionSet, read_mtd, read_mvtec
from unseen.models.efficientnet import VARIANTS

#: backbone -> patch layers: the last blocks of the stride-16 and stride-32 stages. Measured with
#: PatchCore on MTD (seed-0 split, image AUROC): Lite0 blocks 10 + 14 0.948 (10 % coreset) against
#: 0.898 for blocks 4 + 10 (strides 8 and 16, what PatchCore takes from a Wide-ResNet); the
#: shallower stride-8 block drowns the distances in texture noise of the tiles.
LAYERS = {
    "efficientnet_lite0": ("_blocks.10", "_blocks.14"),
    "efficientnet_lite1": ("_blocks.14", "_blocks.19"),
    "efficientnet_lite2": ("_blocks.14", "_blocks.19"),
}


def _backbone(model: str | None) -> str:
    name = model or "efficientnet_lite0"
    if name not in VARIANTS:
        raise ValueError(f"inspection presets take --model {', '.join(VARIANTS)}; got {name!r}")
    return name


def _root(data_root: str | Path | None, preset: str) -> Path:
    if data_root is None:
        raise FileNotFoundError(f"preset {preset!r} needs --data-root DIR (the unpacked data bundle)")
    return Path(data_root)


# The registry is typed for BenchmarkSpec factories; a TaskSpec factory is what the CLI expects here.
@register_preset("mtd")
def mtd(data_root: str | Path | None = None, model: str | None = None) -> InspectionTask:
    """Magnetic Tile Defects: PatchCore, PaDiM, SPADE, DFM, Gaussian + pooled-feature detectors.

    Options: ``data_root`` (required; the unpacked bundle or the ``magnetic_tile_defects``
    folder) and ``model`` (``efficientnet_lite0``, default, ``_lite1`` or ``_lite2``).
    """
    backbone = _backbone(model)
    good, bad = read_mtd(_root(data_root, "mtd"))
    base = good[0].image.parents[2]
    dataset = InspectionSet(good + bad, base, "mtd/all")
    return InspectionTask(
        name="mtd",
        description="Magnetic Tile Defects (952 good, 392 defective); seeded 60/15/25 % split of MT_Free",
        dataset=dataset,
        pool=np.arange(len(good)),
        fixed_test=np.arange(len(good), len(good) + len(bad)),
        train_fraction=0.6,
        calibration_fraction=0.15,
        backbone=backbone,
        layers=LAYERS[backbone],
    )


@register_preset("mvtec")
def mvtec(
    data_root: str | Path | None = None, model: str | None = None, category: str | None = None
) -> InspectionTask:
    """One MVTec-AD-layout category; ``--data-root`` may also be the category folder itself.

    Options: ``data_root`` (required), ``category`` (default: the last part of ``data_root``) and
    ``model`` as for ``mtd``.
    """
    root = _root(data_root, "mvtec")
    if category is None:
        root, category = root.parent, root.name
    train, test = read_mvtec(root, category)
    dataset = InspectionSet(train.samples + test.samples, train.root, f"mvtec/{category}/all")
    backbone = _backbone(model)
    return InspectionTask(
        name=f"mvtec-{category}",
        description=f"MVTec-AD layout, category {category}: train/good split 80/20 into train/calibration",
        dataset=dataset,
        pool=np.arange(len(train)),
        fixed_test=np.arange(len(train), len(dataset)),
        train_fraction=0.8,
        calibration_fraction=0.2,
        backbone=backbone,
        layers=LAYERS[backbone],
    )
