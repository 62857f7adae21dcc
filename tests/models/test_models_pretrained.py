"""Pretrained weights from ../shared/data reproduce the accuracies measured in its README."""

from __future__ import annotations

import gzip
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import unseen.models as models

# Every test takes the ``shared_data`` fixture (tests/conftest.py): it skips without the bundle.
pytestmark = pytest.mark.data


def _foolbox(shared: Path, prefix: str, tmp_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Extract ``foolbox_samples/<prefix>_<II>_<label>.png`` and return images and labels."""
    with tarfile.open(shared / "foolbox_samples.tar.gz") as archive:
        members = [
            m
            for m in archive.getmembers()
            if m.isfile() and Path(m.name).name.startswith(f"{prefix}_")
        ]
        for member in members:  # flat copies: no paths from the archive are trusted
            data = archive.extractfile(member).read()  # type: ignore[union-attr]
            (tmp_path / Path(member.name).name).write_bytes(data)
    files = sorted(tmp_path.glob(f"{prefix}_*.png"))
    images = np.stack([np.asarray(Image.open(f)) for f in files])
    labels = np.array([int(f.stem.split("_")[2]) for f in files])
    assert [int(f.stem.split("_")[1]) for f in files] == list(range(20))
    return images, labels


def _idx(path: Path, header: int) -> np.ndarray:
    with gzip.open(path, "rb") as handle:
        raw = handle.read()
    count = int.from_bytes(raw[4:8], "big")
    data = np.frombuffer(raw, dtype=np.uint8, offset=header)
    return data.reshape(count, -1)


def _predict(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x)).argmax(dim=1).numpy()


@pytest.mark.parametrize("preset", ["resnet20_cifar10", "resnet56_cifar10"])
def test_cifar_resnets_classify_lossless_foolbox_samples(
    preset: str, tmp_path: Path, shared_data: Path
) -> None:
    images, labels = _foolbox(shared_data, "cifar10", tmp_path)
    meta = models.info(models.preset(preset).model)
    assert meta.mean == (0.485, 0.456, 0.406) and meta.std == (0.229, 0.224, 0.225)
    mean, std = np.array(meta.mean), np.array(meta.std)
    x = ((images / 255.0 - mean) / std).transpose(0, 3, 1, 2).astype(np.float32)
    assert (_predict(models.pretrained(preset, shared_data), x) == labels).sum() == 20


@pytest.fixture
def mnist_test(shared_data: Path) -> tuple[np.ndarray, np.ndarray]:
    images = _idx(shared_data / "mnist" / "t10k-images-idx3-ubyte.gz", header=16)
    labels = _idx(shared_data / "mnist" / "t10k-labels-idx1-ubyte.gz", header=8)[:, 0]
    assert images.shape == (10_000, 784)
    x = (images.reshape(-1, 1, 28, 28) / 255.0).astype(np.float32)
    return x, labels.astype(np.int64)


@pytest.mark.parametrize(
    ("preset", "accuracy"), [("mnist_convnet_baseline", 99.06), ("mnist_convnet_oe", 99.08)]
)
def test_mnist_convnets_reach_readme_accuracy(
    preset: str, accuracy: float, mnist_test: tuple[np.ndarray, np.ndarray], shared_data: Path
) -> None:
    x, labels = mnist_test
    model = models.pretrained(preset, shared_data)
    hits = (_predict(model, x) == labels).mean() * 100
    assert hits == pytest.approx(accuracy, abs=0.01)


def test_mnist_convnets_classify_foolbox_samples(
    tmp_path: Path, mnist_test: tuple[np.ndarray, np.ndarray], shared_data: Path
) -> None:
    images, labels = _foolbox(shared_data, "mnist", tmp_path)
    x = (images[:, None] / 255.0).astype(np.float32)
    np.testing.assert_array_equal(x, mnist_test[0][:20])  # README: the IDX images 0-19
    np.testing.assert_array_equal(labels, mnist_test[1][:20])
    for preset in ("mnist_convnet_baseline", "mnist_convnet_oe"):
        assert (_predict(models.pretrained(preset, shared_data), x) == labels).sum() == 20


def test_akamaster_checkpoint_layout_is_as_documented(shared_data: Path) -> None:
    path = shared_data / "weights" / "akamaster_resnet_cifar10" / "resnet20-12fca82f.th"
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert set(raw) == {"state_dict", "best_prec1"}
    assert raw["best_prec1"] == pytest.approx(91.78, abs=1e-4)
    assert all(k.startswith("module.") for k in raw["state_dict"])
    assert len(models.read_state_dict(path)) == 97
