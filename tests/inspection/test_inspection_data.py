"""Inspection readers on format-exact fixtures written here: MVTec AD, plain folders, MTD."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from unseen.data.inspection import (
    InspectionSet,
    SquashResize,
    pixel_evaluable,
    read_folders,
    read_mtd,
    read_mvtec,
    split_good,
)


def _png(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def _mask(h: int, w: int, box: tuple[int, int, int, int], edge: int = 128) -> np.ndarray:
    m = np.zeros((h, w), dtype=np.uint8)
    top, left, bottom, right = box
    m[top:bottom, left:right] = 255
    m[top - 1, left:right] = edge  # a soft edge (value 128 > 127 counts, 127 would not)
    return m


def test_mvtec_layout(tmp_path: Path) -> None:
    cat = tmp_path / "bottle"
    img = np.full((10, 12, 3), 90, dtype=np.uint8)
    for name in ("000", "001"):
        _png(cat / "train" / "good" / f"{name}.png", img)
    _png(cat / "test" / "good" / "000.png", img)
    _png(cat / "test" / "broken_large" / "000.png", img)
    _png(cat / "ground_truth" / "broken_large" / "000_mask.png", _mask(10, 12, (2, 3, 5, 6)))
    train, test = read_mvtec(tmp_path, "bottle")
    assert len(train) == 2 and set(train.labels) == {0}
    assert test.defects == ["broken_large", "good"]
    assert list(test.labels) == [-1, 0]
    mask = test.mask(0)
    assert mask.shape == (10, 12) and mask.sum() == 3 * 3 + 3  # block + its soft top edge
    assert not test.mask(1).any()
    (cat / "ground_truth" / "broken_large" / "000_mask.png").unlink()
    with pytest.raises(FileNotFoundError, match="has no mask"):
        read_mvtec(tmp_path, "bottle")
    with pytest.raises(FileNotFoundError, match="MVTec category 'cable'"):
        read_mvtec(tmp_path, "cable")


def test_plain_folders_match_masks_by_stem(tmp_path: Path) -> None:
    img = np.full((8, 8), 50, dtype=np.uint8)
    for i in range(3):
        _png(tmp_path / "ok" / f"n{i}.png", img)
    _png(tmp_path / "ng" / "a.png", img)
    _png(tmp_path / "ng" / "b.png", img)
    _png(tmp_path / "masks" / "a_mask.png", _mask(8, 8, (2, 2, 4, 4), edge=127))
    good, bad = read_folders(tmp_path / "ok", tmp_path / "ng", tmp_path / "masks")
    assert len(good) == 3 and [s.image.name for s in bad] == ["a.png", "b.png"]
    assert bad[0].mask == tmp_path / "masks" / "a_mask.png" and bad[1].mask is None
    test = InspectionSet(good + bad, tmp_path, "folders")
    assert test.mask(3).sum() == 4  # the 127 edge does not count
    assert list(pixel_evaluable(test)) == [0, 1, 2, 3]  # b has no mask: left out of pixel metrics


def _mtd(root: Path) -> None:
    base = root / "magnetic_tile_defects"
    (base / "MT_Free" / "Imgs").mkdir(parents=True)
    for i in range(20):
        free = base / "MT_Free" / "Imgs"
        Image.fromarray(np.full((30, 40), 100, np.uint8)).save(free / f"exp0_num_{i}.jpg")
        _png(base / "MT_Free" / "Imgs" / f"exp0_num_{i}.png", np.zeros((30, 40), np.uint8))
    for kind in ("Blowhole", "Break", "Crack", "Fray", "Uneven"):
        (base / f"MT_{kind}" / "Imgs").mkdir(parents=True)
        Image.fromarray(np.full((30, 40), 60, np.uint8)).save(base / f"MT_{kind}" / "Imgs" / "d1.jpg")
        empty = kind == "Uneven"
        mask = np.zeros((30, 40), np.uint8) if empty else _mask(30, 40, (5, 5, 9, 9))
        _png(base / f"MT_{kind}" / "Imgs" / "d1.png", mask)


def test_mtd_reader_and_seeded_split(tmp_path: Path) -> None:
    _mtd(tmp_path)
    good, bad = read_mtd(tmp_path)
    assert len(good) == 20 and [s.defect for s in bad] == ["Blowhole", "Break", "Crack", "Fray", "Uneven"]
    assert all(s.mask is None for s in good)
    split = split_good(good, bad, tmp_path, "mtd", train=0.6, calibration=0.15, seed=3)
    assert (len(split.train), len(split.calibration), len(split.test)) == (12, 3, 5 + 5)
    names = [s.image.name for s in split.train.samples + split.calibration.samples + split.test.samples]
    assert len(set(names[:15] + names[15:20])) == 20  # the good parts are partitioned
    order = np.random.default_rng(3).permutation(20)
    assert [s.image.name for s in split.train.samples] == [good[i].image.name for i in order[:12]]
    again = split_good(good, bad, tmp_path, "mtd", seed=3)
    assert again.train.identity() == split.train.identity()
    # The empty MT_Uneven mask: defective at image level, out of the pixel metrics.
    uneven = len(split.test) - 1
    assert split.test.labels[uneven] == -1 and not split.test.mask(uneven).any()
    assert uneven not in pixel_evaluable(split.test) and len(pixel_evaluable(split.test)) == 9


def test_squash_resize_keeps_the_whole_image() -> None:
    arr = np.zeros((20, 40), dtype=np.uint8)
    arr[:, -2:] = 255  # a bright stripe at the right border survives (a crop would drop it)
    out = np.asarray(SquashResize(16)(Image.fromarray(arr)))
    assert out.shape == (16, 16) and out[:, -1].min() > 150
