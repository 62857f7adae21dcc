"""Unit tests of the image-file readers on small fixtures written in the real formats."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from unseen.data import (
    CorruptImageError,
    ImageFolder,
    ImageList,
    TinyImageNetVal,
    ToTensor,
    load_image,
    parse_image_list,
)


def _rgb(seed: int, size: tuple[int, int] = (5, 4)) -> np.ndarray:
    """Random HxWx3 uint8 image; size is (height, width)."""
    return np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)


def _save_png(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, format="PNG")
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    _save_png(root / "zebra" / "b.png", _rgb(1))
    _save_png(root / "zebra" / "a.PNG", _rgb(2))
    _save_png(root / "ant" / "sub" / "x.png", _rgb(3))
    Image.fromarray(_rgb(4)).save(root / "ant" / "y.JpEg", format="JPEG")
    (root / "ant" / "notes.txt").write_text("not an image")
    _save_png(root / ".hidden" / "h.png", _rgb(5))
    return root


def test_image_folder_classes_labels_and_pixels(folder: Path) -> None:
    ds = ImageFolder(folder)
    assert ds.classes == ["ant", "zebra"]
    rel = [(p.relative_to(folder).as_posix(), y) for p, y in ds.samples]
    # sorted classes, files sorted by path inside each class, txt and hidden folder ignored
    assert rel == [("ant/sub/x.png", 0), ("ant/y.JpEg", 0), ("zebra/a.PNG", 1), ("zebra/b.png", 1)]
    img, label = ds[0]
    assert (img.mode, label) == ("RGB", 0)
    np.testing.assert_array_equal(np.asarray(img), _rgb(3))
    img, label = ds[-1]
    np.testing.assert_array_equal(np.asarray(img), _rgb(1))
    assert label == 1
    assert repr(ds) == "ImageFolder('root', n=4)"


def test_image_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not a directory"):
        ImageFolder(tmp_path / "missing")
    (tmp_path / "empty_cls").mkdir()
    with pytest.raises(FileNotFoundError, match="empty_cls holds no image files"):
        ImageFolder(tmp_path)


def test_index_errors(folder: Path) -> None:
    ds = ImageFolder(folder)
    with pytest.raises(IndexError, match="out of range for 4"):
        ds[4]
    with pytest.raises(TypeError):
        ds["0"]


def test_transform_is_applied(folder: Path) -> None:
    x, label = ImageFolder(folder, transform=ToTensor())[2]
    assert x.dtype == torch.float32
    np.testing.assert_allclose(x.numpy(), _rgb(2).transpose(2, 0, 1) / 255.0, rtol=0, atol=1e-7)
    assert label == 1


def test_identity_tracks_files_not_location(folder: Path, tmp_path: Path) -> None:
    key = ImageFolder(folder).identity()
    assert key == ImageFolder(folder).identity()
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)  # copy2 keeps mtimes
    assert ImageFolder(copy).identity() == key
    _save_png(folder / "zebra" / "b.png", _rgb(9, (6, 4)))  # different size on disk
    assert ImageFolder(folder).identity() != key
    _save_png(copy / "zebra" / "c.png", _rgb(10))
    assert ImageFolder(copy).identity() != key


def test_modes_are_normalised_to_l_or_rgb(tmp_path: Path) -> None:
    rgba = np.dstack([_rgb(1), np.full((5, 4), 7, np.uint8)])
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    np.testing.assert_array_equal(np.asarray(load_image(tmp_path / "a.png")), _rgb(1))
    pal = Image.fromarray(_rgb(2)).quantize(colors=8)
    pal.save(tmp_path / "p.png")
    expected = np.asarray(pal.convert("RGB"))
    out = load_image(tmp_path / "p.png")
    assert out.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(out), expected)
    bits = np.array([[0, 1], [1, 0]], dtype=bool)
    Image.fromarray(bits).save(tmp_path / "b.png")
    out = load_image(tmp_path / "b.png")
    assert out.mode == "L"
    np.testing.assert_array_equal(np.asarray(out), [[0, 255], [255, 0]])
    Image.fromarray(np.array([[1000, 2]], dtype=np.uint16)).save(tmp_path / "deep.png")
    with pytest.raises(ValueError, match="more than 8 bits"):
        load_image(tmp_path / "deep.png")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_image_names_the_file(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"cut.{fmt.lower()}"
    Image.fromarray(_rgb(0, (64, 64))).save(path, format=fmt)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptImageError, match=re.escape(str(path))):
        load_image(path)


def test_not_an_image_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "fake.jpg"
    path.write_bytes(b"<html>404</html>")
    with pytest.raises(CorruptImageError, match=r"fake\.jpg"):
        load_image(path)
    with pytest.raises(FileNotFoundError):
        load_image(tmp_path / "absent.png")


def test_image_list_crlf_spaces_and_labels(tmp_path: Path) -> None:
    _save_png(tmp_path / "imgs" / "a b" / "one two.png", _rgb(1))
    _save_png(tmp_path / "imgs" / "c.png", _rgb(2))
    lst = tmp_path / "list.txt"
    lst.write_bytes(b"imgs/a b/one two.png 3\r\n\r\nimgs/c.png\t-1\r\n")
    ds = ImageList(lst, tmp_path)
    assert ds.labels == [3, -1]
    assert ds.samples[0][0] == tmp_path / "imgs" / "a b" / "one two.png"
    img, label = ds[0]
    np.testing.assert_array_equal(np.asarray(img), _rgb(1))
    assert label == 3
    assert ds.name == "list"


def test_image_list_unlabelled_lines(tmp_path: Path) -> None:
    lst = tmp_path / "fractals.txt"
    lst.write_bytes(b"f/deviantart_1_Let us dance_IMGP.jpg\r\nf/2.png 4\r\n")
    with pytest.raises(ValueError, match=r"fractals.txt:1: .*allow_unlabeled"):
        parse_image_list(lst)
    assert parse_image_list(lst, allow_unlabeled=True) == [
        ("f/deviantart_1_Let us dance_IMGP.jpg", -1),
        ("f/2.png", 4),
    ]


def test_image_list_missing_file_and_empty_list(tmp_path: Path) -> None:
    _save_png(tmp_path / "ok.png", _rgb(0))
    lst = tmp_path / "l.txt"
    lst.write_text("ok.png 0\ngone.png 1\n")
    with pytest.raises(FileNotFoundError, match=r"1 of 2 .*gone.png"):
        ImageList(lst, tmp_path)
    lst.write_text("\n\n")
    with pytest.raises(ValueError, match="empty"):
        ImageList(lst, tmp_path)


def _tin_layout(root: Path) -> None:
    (root / "val" / "images").mkdir(parents=True)
    (root / "wnids.txt").write_text("n02\nn01\nn03\n")
    grey = np.arange(64 * 64, dtype=np.uint32).reshape(64, 64).astype(np.uint8)
    Image.fromarray(grey).save(root / "val" / "images" / "val_0.JPEG", format="JPEG")
    Image.fromarray(_rgb(1, (64, 64))).save(root / "val" / "images" / "val_1.JPEG", format="JPEG")
    (root / "val" / "val_annotations.txt").write_text(
        "val_0.JPEG\tn03\t0\t1\t60\t62\nval_1.JPEG\tn02\t5\t5\t30\t30\n"
    )


def test_tiny_imagenet_val(tmp_path: Path) -> None:
    _tin_layout(tmp_path)
    ds = TinyImageNetVal(tmp_path)
    assert ds.classes == ["n02", "n01", "n03"]
    assert ds.labels == [2, 0]
    img, label = ds[0]
    assert (img.mode, img.size, label) == ("L", (64, 64), 2)  # grayscale returned as decoded
    img, label = ds[1]
    assert (img.mode, label) == ("RGB", 0)
    # JPEG is lossy: the smooth ramp survives within a few grey levels
    ramp = np.arange(64 * 64, dtype=np.uint32).reshape(64, 64).astype(np.uint8).astype(int)
    assert np.abs(np.asarray(ds[0][0]).astype(int) - ramp).mean() < 4


def test_tiny_imagenet_val_errors(tmp_path: Path) -> None:
    _tin_layout(tmp_path)
    ann = tmp_path / "val" / "val_annotations.txt"
    ann.write_text("val_0.JPEG\tn99\t0\t0\t1\t1\n")
    with pytest.raises(ValueError, match=r"val_annotations.txt:1: .*n99"):
        TinyImageNetVal(tmp_path)
    ann.write_text("val_7.JPEG\tn01\t0\t0\t1\t1\n")
    with pytest.raises(FileNotFoundError, match=r"val_7\.JPEG"):
        TinyImageNetVal(tmp_path)
    os.remove(tmp_path / "wnids.txt")
    with pytest.raises(FileNotFoundError, match=r"wnids\.txt"):
        TinyImageNetVal(tmp_path)
