"""Integration tests of the readers on the real files in ../shared/data (skipped when absent).

Archives are not unpacked in full: each fixture extracts only the few members it needs."""

from __future__ import annotations

import gzip
import hashlib
import os
import tarfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from unseen.data import IDXDataset, ImageFolder, ImageList, TinyImageNetVal, cifar_test_transform

REPO = Path(__file__).resolve().parents[2]
# same rule as tests/conftest.py: ../shared/data beside the repository, or $UNSEEN_SHARED_DATA
SHARED = Path(os.environ.get("UNSEEN_SHARED_DATA", REPO.parent / "shared" / "data"))

pytestmark = [
    pytest.mark.data,
    pytest.mark.skipif(
        not (SHARED / "README.md").is_file(),
        reason=f"real data bundle not found at {SHARED} (set UNSEEN_SHARED_DATA)",
    ),
]


def _extract(archive: Path, dest: Path, wanted: Callable[[str], bool], stop: int | None) -> None:
    """Extract the regular-file members for which ``wanted(name)``; stop after ``stop`` hits."""
    hits = 0
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            if member.isfile() and wanted(member.name):
                tar.extract(member, dest, filter="data")
                hits += 1
                if hits == stop:
                    return


@pytest.mark.parametrize(
    ("folder", "md5_images", "md5_labels", "counts"),
    [
        ("mnist", "2646ac647ad5339dbf082846283269ea", "27ae3e4e09519cfbb04c329615203637",
         [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]),
        ("fashion_mnist", "8181f5470baa50b63fa0f6fddb340f0a", "15d484375f8d13e6eb1aabb0c3f46965",
         [1000] * 10),
    ],
)
def test_idx_test_sets(folder: str, md5_images: str, md5_labels: str, counts: list[int]) -> None:
    ip = SHARED / folder / "t10k-images-idx3-ubyte.gz"
    lp = SHARED / folder / "t10k-labels-idx1-ubyte.gz"
    raw_images, raw_labels = gzip.decompress(ip.read_bytes()), gzip.decompress(lp.read_bytes())
    # published MD5s of the uncompressed official files (README, caveat 6)
    assert hashlib.md5(raw_images).hexdigest() == md5_images
    assert hashlib.md5(raw_labels).hexdigest() == md5_labels
    ds = IDXDataset(ip, lp)
    assert len(ds) == 10_000
    assert np.bincount(ds.targets, minlength=10).tolist() == counts
    pixels = np.frombuffer(raw_images[16:], np.uint8)
    np.testing.assert_array_equal(np.asarray(ds.images).ravel(), pixels)
    np.testing.assert_array_equal(ds.targets, np.frombuffer(raw_labels[8:], np.uint8))


@pytest.fixture(scope="module")
def foolbox(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("foolbox")
    _extract(SHARED / "foolbox_samples.tar.gz", dest,
             lambda n: n.startswith(("foolbox_samples/mnist_0", "foolbox_samples/cifar10_00")),
             None)
    return dest / "foolbox_samples"


def test_mnist_matches_lossless_foolbox_samples(foolbox: Path) -> None:
    ds = IDXDataset(SHARED / "mnist" / "t10k-images-idx3-ubyte.gz",
                    SHARED / "mnist" / "t10k-labels-idx1-ubyte.gz")
    samples = sorted(foolbox.glob("mnist_0*.png"))
    assert len(samples) == 10
    for path in samples:  # mnist_<II>_<label>.png is test image II, pixel-identical
        _, index, label = path.stem.split("_")
        img, y = ds[int(index)]
        assert y == int(label)
        np.testing.assert_array_equal(np.asarray(img), np.asarray(Image.open(path).convert("L")))


@pytest.fixture(scope="module")
def cifar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("cifar")
    keep = {f"cifar10/test/{c}/{i:04d}.jpg" for c in ("airplane", "automobile", "cat")
            for i in range(3)}
    # members are in path order, so the test airplane/automobile/cat files come early
    _extract(SHARED / "cifar10_jpeg_q75.tar.gz", dest, keep.__contains__, len(keep))
    return dest


def test_image_folder_on_real_cifar_jpegs(cifar: Path, foolbox: Path) -> None:
    ds = ImageFolder(cifar / "cifar10" / "test")
    assert ds.classes == ["airplane", "automobile", "cat"]
    assert ds.labels == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    img, _ = ds[6]  # cat/0000.jpg is CIFAR-10 test image 0, a cat (foolbox cifar10_00_3.png)
    assert img.mode == "RGB" and img.size == (32, 32)
    lossless = np.asarray(Image.open(foolbox / "cifar10_00_3.png").convert("RGB"), float)
    mse = np.mean((np.asarray(img, float) - lossless) ** 2)
    assert 10 * np.log10(255**2 / mse) > 25  # README: the matching JPEG has PSNR 27-33 dB
    x, _ = ImageFolder(cifar / "cifar10" / "test", transform=cifar_test_transform(
        (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)))[6]
    np.testing.assert_allclose(x.numpy(), np.asarray(img).transpose(2, 0, 1) / 127.5 - 1, atol=1e-5)


@pytest.fixture(scope="module")
def tin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("tin")
    # OpenOOD's CIFAR-10 test_tin.txt: first 20 lines (CRLF, label -1)
    _extract(SHARED / "openood_imglists.tar.gz", dest,
             lambda n: n == "openood_imglists/cifar10/test_tin.txt", 1)
    lines = (dest / "openood_imglists/cifar10/test_tin.txt").read_bytes().split(b"\n")[:20]
    (dest / "test_tin_head.txt").write_bytes(b"\n".join(lines) + b"\n")
    names = {ln.split()[0].decode().rsplit("/", 1)[1] for ln in lines}
    names |= {f"val_{i}.JPEG" for i in range(20)}
    _extract(SHARED / "tinyimagenet200_val.tar.gz", dest,
             lambda n: n in ("tin/wnids.txt", "tin/val/val_annotations.txt")
             or n.rsplit("/", 1)[-1] in names, None)
    return dest


def test_image_list_on_openood_tin_list(tin: Path) -> None:
    assert b"\r\n" in (tin / "test_tin_head.txt").read_bytes()
    ds = ImageList(tin / "test_tin_head.txt", tin)
    assert len(ds) == 20 and set(ds.labels) == {-1}
    for i in (0, 19):
        img, _ = ds[i]
        assert img.size == (64, 64) and img.mode in ("L", "RGB")


def test_tiny_imagenet_val_on_real_annotations(tin: Path) -> None:
    root = tin / "tin"
    ann = (root / "val" / "val_annotations.txt").read_text().splitlines()
    assert len(ann) == 10_000
    present = [ln for ln in ann if (root / "val" / "images" / ln.split("\t")[0]).exists()]
    (root / "val" / "val_annotations.txt").write_text("\n".join(present) + "\n")
    wnids = (root / "wnids.txt").read_text().split()
    ds = TinyImageNetVal(root)
    assert len(ds.classes) == 200 and len(ds) == len(present) >= 20
    assert ds.labels == [wnids.index(ln.split("\t")[1]) for ln in present]
    img, _ = ds[0]
    assert img.size == (64, 64)


@pytest.mark.slow
def test_unpacked_benchmark_lists(data_root: Path) -> None:
    """The six lists written by `unpack` (README table) read with ImageList, plus ImageFolder
    on the CIFAR-10 test folders; uses the session-wide unpacked copy of tests/conftest.py."""
    lists = data_root / "benchmark_imglist" / "cifar10"
    expected = {"train_cifar10": 50_000, "val_cifar10": 1_000, "test_cifar10": 9_000,
                "val_tin": 1_000, "test_tin": 7_793, "test_texture": 1_200}
    for name, n in expected.items():
        ds = ImageList(lists / f"{name}.txt", data_root)
        assert len(ds) == n, name
        labels = np.array(ds.labels)
        if "cifar10" in name:
            assert np.bincount(labels).tolist() == [n // 10] * 10
        else:
            assert set(labels.tolist()) == {-1}
    folder = ImageFolder(data_root / "cifar10" / "test")
    assert folder.classes == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                              "horse", "ship", "truck"]
    assert np.bincount(folder.labels).tolist() == [1000] * 10
    img, label = folder[3000]
    assert (img.mode, img.size, label) == ("RGB", (32, 32), 3)
