"""Transforms checked against hand-computed values and PIL's own resize (which is what
torchvision calls for PIL inputs), plus the deterministic loader."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from unseen.data import (
    CenterCrop,
    Compose,
    Grayscale,
    IDXDataset,
    Normalize,
    Resize,
    ToRGB,
    ToTensor,
    cifar_test_transform,
    imagenet_test_transform,
    make_loader,
    mnist_transform,
)

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def _coords(width: int, height: int) -> Image.Image:
    """RGB image whose red channel is the column and green channel the row index."""
    x, y = np.meshgrid(np.arange(width), np.arange(height))
    return Image.fromarray(np.dstack([x, y, np.zeros_like(x)]).astype(np.uint8))


@pytest.mark.parametrize(
    ("w", "h", "size", "expected"),
    [(50, 30, 32, (53, 32)), (30, 50, 32, (32, 53)), (64, 64, 32, (32, 32)),
     (300, 199, 256, (385, 256)), (17, 10, 32, (54, 32))],
)
def test_resize_output_size(w: int, h: int, size: int, expected: tuple[int, int]) -> None:
    # long side = int(size * long / short): 32*50/30 = 53.3 -> 53; 256*300/199 = 385.9 -> 385
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (h, w, 3), np.uint8))
    out = Resize(size)(img)
    assert out.size == expected
    np.testing.assert_array_equal(
        np.asarray(out), np.asarray(img.resize(expected, Image.Resampling.BILINEAR))
    )


def test_resize_is_antialiased() -> None:
    # a one-pixel checkerboard halved: an antialiased filter averages it to mid-grey, plain
    # bilinear sampling (no antialias) would return the 0/255 pattern
    board = ((np.indices((64, 64)).sum(0) % 2) * 255).astype(np.uint8)
    out = np.asarray(Resize(32)(Image.fromarray(board))).astype(int)
    assert np.all(np.abs(out[2:-2, 2:-2] - 127.5) <= 2)


def test_resize_same_size_is_identity() -> None:
    img = _coords(32, 40)
    np.testing.assert_array_equal(np.asarray(Resize(32)(img)), np.asarray(img))


@pytest.mark.parametrize(
    ("w", "h", "crop", "left", "top"),
    # (35-32)/2 = 1.5 -> 2; (33-32)/2 = 0.5 -> 0; (37-32)/2 = 2.5 -> 2 (round half to even)
    [(35, 33, 32, 2, 0), (37, 37, 32, 2, 2), (40, 34, 32, 4, 1), (32, 32, 32, 0, 0)],
)
def test_center_crop_offsets(w: int, h: int, crop: int, left: int, top: int) -> None:
    out = np.asarray(CenterCrop(crop)(_coords(w, h)))
    assert out.shape == (crop, crop, 3)
    assert (out[0, 0, 0], out[0, 0, 1]) == (left, top)
    assert (out[-1, -1, 0], out[-1, -1, 1]) == (left + crop - 1, top + crop - 1)


def test_center_crop_rectangular_and_too_large() -> None:
    out = np.asarray(CenterCrop((2, 5))(_coords(10, 7)))  # (height, width)
    assert out.shape == (2, 5, 3)
    assert (out[0, 0, 0], out[0, 0, 1]) == (round(2.5), round(2.5))
    with pytest.raises(ValueError, match="larger than the image"):
        CenterCrop(33)(_coords(40, 32))
    with pytest.raises(ValueError, match="positive int"):
        CenterCrop(0)


def test_to_tensor_values_and_layout() -> None:
    arr = np.array([[[0, 128, 255], [1, 2, 3]]], dtype=np.uint8)  # 1x2 RGB
    x = ToTensor()(Image.fromarray(arr))
    assert x.dtype == torch.float32 and x.shape == (3, 1, 2)
    np.testing.assert_allclose(x[:, 0, 0].numpy(), [0.0, 128 / 255, 1.0], rtol=1e-7)
    np.testing.assert_allclose(x[:, 0, 1].numpy(), [1 / 255, 2 / 255, 3 / 255], rtol=1e-7)
    grey = ToTensor()(Image.fromarray(np.array([[51, 204]], dtype=np.uint8)))
    np.testing.assert_allclose(grey.numpy(), [[[0.2, 0.8]]], rtol=1e-6)
    with pytest.raises(ValueError, match="mode L or RGB"):
        ToTensor()(Image.new("RGBA", (2, 2)))
    with pytest.raises(TypeError, match="PIL image"):
        ToTensor()(arr)


def test_normalize_hand_values() -> None:
    x = torch.tensor([[[0.0, 1.0]], [[0.5, 0.25]]])
    out = Normalize((0.5, 0.25), (0.5, 0.125))(x)
    np.testing.assert_allclose(out.numpy(), [[[-1.0, 1.0]], [[2.0, 0.0]]])
    with pytest.raises(ValueError, match="2 channel statistics for a 3-channel"):
        Normalize((0.5, 0.5), (1, 1))(torch.zeros(3, 1, 1))
    with pytest.raises(ValueError, match="std must be > 0"):
        Normalize((0.5,), (0.0,))
    with pytest.raises(TypeError, match="ToTensor first"):
        Normalize((0.5,), (1.0,))(Image.new("L", (1, 1)))


def test_grayscale_and_rgb_conversions() -> None:
    rgb = Image.fromarray(np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255]]], dtype=np.uint8))
    # ITU-R 601-2 luma with PIL's fixed-point rounding: 0.299*255 -> 76, 0.587*255 -> 150,
    # 0.114*255 -> 29
    assert np.asarray(Grayscale()(rgb)).tolist() == [[76, 150, 29]]
    grey = Image.fromarray(np.array([[7, 200]], dtype=np.uint8))
    assert np.asarray(ToRGB()(grey)).tolist() == [[[7, 7, 7], [200, 200, 200]]]


def test_cifar_preset_matches_numpy_reference() -> None:
    rng = np.random.default_rng(3)
    arr = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    x = cifar_test_transform(MEAN, STD)(Image.fromarray(arr))
    ref = (arr.transpose(2, 0, 1) / 255.0 - np.array(MEAN)[:, None, None]) / np.array(STD)[
        :, None, None
    ]
    np.testing.assert_allclose(x.numpy(), ref, atol=1e-5)
    # a 64x48 grayscale image: RGB copies, resized (shorter side 48 -> 32: 64 -> 42), crop 5 left
    grey = Image.fromarray(rng.integers(0, 256, (48, 64), dtype=np.uint8))
    small = np.asarray(grey.resize((42, 32), Image.Resampling.BILINEAR))[:, 5:37] / 255.0
    x = cifar_test_transform(MEAN, STD)(grey)
    assert x.shape == (3, 32, 32)
    for c in range(3):
        np.testing.assert_allclose(x[c].numpy(), (small - MEAN[c]) / STD[c], atol=1e-5)


def test_imagenet_and_mnist_presets() -> None:
    img = _coords(300, 256)
    x = imagenet_test_transform((0, 0, 0), (1, 1, 1))(img)
    assert x.shape == (3, 224, 224)
    # shorter side already 256 -> no resize; crop offset left = (300-224)/2 = 38, top = 16
    assert (round(float(x[0, 0, 0]) * 255), round(float(x[1, 0, 0]) * 255)) == (38, 16)
    digit = np.random.default_rng(4).integers(0, 256, (28, 28), dtype=np.uint8)
    y = mnist_transform()(Image.fromarray(digit))
    np.testing.assert_allclose(y.numpy(), digit[None] / 255.0, rtol=1e-6)


def test_describe_is_stable_and_parameter_sensitive() -> None:
    t = cifar_test_transform(MEAN, STD)
    assert t.describe() == (
        "Compose(ToRGB(), Resize(size=32, interpolation=bilinear, antialias=True), "
        "CenterCrop(height=32, width=32), ToTensor(scale=1/255), "
        "Normalize(mean=[0.4914, 0.4822, 0.4465], std=[0.247, 0.2435, 0.2616]))"
    )
    assert repr(t) == t.describe() == cifar_test_transform(list(MEAN), list(STD)).describe()
    assert cifar_test_transform(MEAN, (0.2, 0.2, 0.2)).describe() != t.describe()
    assert Compose([Resize(33)]).describe() != Compose([Resize(32)]).describe()
    with pytest.raises(TypeError, match="cannot describe"):
        Compose([Resize(32), lambda x: x]).describe()


def _idx_dataset(tmp_path: Path, n: int) -> tuple[IDXDataset, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(5)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    (tmp_path / "i.gz").write_bytes(
        gzip.compress(struct.pack(">IIII", 0x803, n, 28, 28) + images.tobytes())
    )
    (tmp_path / "l").write_bytes(struct.pack(">II", 0x801, n) + labels.tobytes())
    ds = IDXDataset(tmp_path / "i.gz", tmp_path / "l", transform=mnist_transform())
    return ds, images, labels


@pytest.mark.parametrize("workers", [0, 2])
def test_make_loader_keeps_order(tmp_path: Path, workers: int) -> None:
    ds, images, labels = _idx_dataset(tmp_path, 23)
    batches = list(make_loader(ds, batch_size=5, num_workers=workers))
    assert [len(b[1]) for b in batches] == [5, 5, 5, 5, 3]  # last partial batch kept
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    np.testing.assert_allclose(x.numpy(), images[:, None] / 255.0, rtol=1e-6)
    assert y.dtype == torch.int64 and y.tolist() == labels.tolist()


def test_make_loader_needs_tensor_transform(tmp_path: Path) -> None:
    ds, _, _ = _idx_dataset(tmp_path, 3)
    ds.transform = None
    with pytest.raises(ValueError, match="no transform"):
        make_loader(ds)
