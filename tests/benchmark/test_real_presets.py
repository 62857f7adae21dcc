"""Real-data presets ``cifar10`` and ``mnist`` (data bundle tests skip without ../shared/data)."""

from __future__ import annotations

import dataclasses
import gzip
import inspect
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from unseen.benchmark.presets import real as rp
from unseen.benchmark.spec import SpecError, sample_keys
from unseen.data import IDXDataset, mnist_transform

# The akamaster ResNets' input statistics (data bundle README, "Weights"): ImageNet mean/std.
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406])
IMAGENET_STD = np.array([0.229, 0.224, 0.225])
# MNIST test class counts (README caveat 6) cut 50 % / 10 % / rest with round-half-to-even.
MNIST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
MNIST_FIT = [490, 568, 516, 505, 491, 446, 479, 514, 487, 504]
MNIST_VAL = [98, 114, 103, 101, 98, 89, 96, 103, 97, 101]


@pytest.fixture(scope="module")
def cifar(data_root: Path):
    return rp.cifar10(data_root=data_root, model="resnet20_cifar10")


@pytest.fixture(scope="module")
def mnist(data_root: Path):
    return rp.mnist(data_root=data_root)


def _numpy_normalised(img: Image.Image) -> np.ndarray:
    arr = np.asarray(img.convert("RGB"), dtype=np.float64) / 255.0
    return ((arr - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)


def _write_idx(path: Path, arr: np.ndarray, magic: int) -> None:
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in arr.shape)
    path.write_bytes(gzip.compress(header + arr.astype(np.uint8).tobytes()))


def _raw_idx(path: Path) -> np.ndarray:
    raw = gzip.decompress(path.read_bytes())
    return np.frombuffer(raw[16:], dtype=np.uint8).reshape(-1, 28, 28)


# ------------------------------------------------------------------ no data bundle needed


def test_missing_data_root_names_flag_and_unpack() -> None:
    for factory in (rp.cifar10, rp.mnist):
        with pytest.raises(rp.DataRootError, match="--data-root") as err:
            factory()
        assert "../shared/data/unpack" in str(err.value)
        assert isinstance(err.value, FileNotFoundError)


def test_empty_data_root_lists_missing_items(tmp_path: Path) -> None:
    with pytest.raises(rp.DataRootError, match="incomplete") as err:
        rp.cifar10(data_root=tmp_path)
    assert "benchmark_imglist/cifar10/train_cifar10.txt" in str(err.value)
    assert f"../shared/data/unpack {tmp_path}" in str(err.value)


def test_unknown_model_is_rejected_before_reading_data() -> None:
    with pytest.raises(ValueError, match="resnet20_cifar10"):
        rp.cifar10(data_root="/nonexistent", model="resnet18")
    with pytest.raises(ValueError, match="mnist_convnet_oe"):
        rp.mnist(data_root="/nonexistent", model="resnet20_cifar10")


def test_documented_default_models() -> None:
    assert inspect.signature(rp.cifar10).parameters["model"].default == "resnet56_cifar10"
    assert inspect.signature(rp.mnist).parameters["model"].default == "mnist_convnet_baseline"


def test_idx_subset_items_identity_and_keys(tmp_path: Path) -> None:
    images = (np.arange(5 * 28 * 28).reshape(5, 28, 28) % 251).astype(np.uint8)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images, 0x803)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.array([4, 3, 2, 1, 0]), 0x801)
    ds = IDXDataset(tmp_path / "t10k-images-idx3-ubyte.gz", tmp_path / "t10k-labels-idx1-ubyte.gz",
                    mnist_transform())
    sub = rp.IDXSubset(ds, [3, 0])
    x, y = sub[0]
    assert y == 1
    np.testing.assert_array_equal(x[0].numpy(), images[3] / np.float32(255))
    assert sub[1][1] == 4
    assert sub.transform is ds.transform
    assert sub.sample_keys() == [f"{(tmp_path / 't10k-images-idx3-ubyte.gz').resolve()}#{i}" for i in (3, 0)]
    assert sub.identity() == rp.IDXSubset(ds, [3, 0]).identity()
    assert sub.identity() != rp.IDXSubset(ds, [0, 3]).identity()
    assert sub.identity().startswith(ds.identity())
    with pytest.raises(IndexError):
        rp.IDXSubset(ds, [5])
    with pytest.raises(ValueError, match="repeat"):
        rp.IDXSubset(ds, [1, 1])


def test_stratified_split_by_hand() -> None:
    labels = np.array([0, 1, 0, 1, 1, 0, 1, 0, 1, 1])  # class 0: 4 items, class 1: 6
    fit, val, rest = rp.stratified_split(labels, (0.5, 0.25), seed=3)
    # class 0: round(2.0)=2, round(1.0)=1, rest 1; class 1: round(3.0)=3, round(1.5)=2, rest 1
    assert [np.sum(labels[p] == 0) for p in (fit, val, rest)] == [2, 1, 1]
    assert [np.sum(labels[p] == 1) for p in (fit, val, rest)] == [3, 2, 1]
    np.testing.assert_array_equal(np.sort(np.concatenate([fit, val, rest])), np.arange(10))
    assert all(np.all(np.diff(p) > 0) for p in (fit, val, rest))


# ------------------------------------------------------------------ cifar10 (data bundle)


def test_cifar10_sizes_groups_and_labels(cifar) -> None:
    sizes = {k: len(v) for k, v in cifar.splits().items()}
    assert sizes == {
        "id/fit": 50_000, "id/val": 1_000, "id/test": 9_000, "ood_val": 1_000,
        "near/tin": 7_793, "far/mnist": 10_000, "far/fashionmnist": 10_000,
        "far/notmnist": 10_000, "far/texture": 1_200,
    }
    assert cifar.groups == {"near": ["tin"], "far": ["mnist", "fashionmnist", "notmnist", "texture"]}
    assert cifar.meta["id_dataset"] == "CIFAR-10 (JPEG q75)"
    for name, ds in cifar.splits().items():
        label = ds[len(ds) - 1][1]
        assert (label >= 0) if name.startswith("id/") else (label == -1), name


def test_cifar10_ood_val_disjoint_and_check_applies(cifar) -> None:
    keys = {name: sample_keys(ds) for name, ds in cifar.splits().items()}
    assert all(k is not None for k in keys.values())
    for name, k in keys.items():
        if name != "ood_val":
            assert not keys["ood_val"] & k, name
    with pytest.raises(SpecError, match="ood_val and near/tin share"):
        dataclasses.replace(cifar, ood_val=cifar.near["tin"])


def test_cifar10_preprocessing_matches_numpy(cifar) -> None:
    path, label = cifar.test.samples[0]
    x, y = cifar.test[0]
    assert y == label
    np.testing.assert_allclose(x.numpy(), _numpy_normalised(Image.open(path)), atol=1e-6)
    # a grey 64x64 Tiny ImageNet file: channels copied, then bilinear 64 -> 32
    tin = cifar.near["tin"]
    i = next(i for i, (p, _) in enumerate(tin.samples) if Image.open(p).mode == "L")
    grey = Image.open(tin.samples[i][0])
    expected = _numpy_normalised(grey.convert("RGB").resize((32, 32), Image.Resampling.BILINEAR))
    np.testing.assert_allclose(tin[i][0].numpy(), expected, atol=1e-5)


def test_cifar10_mnist_far_set_is_rgb_32(cifar, data_root: Path) -> None:
    raw = _raw_idx(data_root / "mnist" / "t10k-images-idx3-ubyte.gz")
    x, y = cifar.far["mnist"][7]
    up = Image.fromarray(raw[7]).resize((32, 32), Image.Resampling.BILINEAR)
    np.testing.assert_allclose(x.numpy(), _numpy_normalised(up), atol=1e-5)
    assert y == -1


@pytest.mark.slow
def test_resnet20_on_first_300_test_images(cifar, data_root: Path) -> None:
    n = 300
    lines = (data_root / "benchmark_imglist/cifar10/test_cifar10.txt").read_text().split("\n")[:n]
    paths, labels = zip(*(ln.split() for ln in lines), strict=True)
    reference = np.stack([_numpy_normalised(Image.open(data_root / p)) for p in paths])
    through_preset = torch.stack([cifar.test[i][0] for i in range(n)])
    np.testing.assert_allclose(through_preset.numpy(), reference, atol=1e-6)
    model = cifar.model(None).model
    with torch.inference_mode():
        pred = model(through_preset).argmax(1).numpy()
    acc = np.mean(pred == np.array(labels, dtype=int))
    # README: ResNet-20 81.10 % on all 9,000; 300 images: binomial s.e. ~2.3 points
    assert abs(acc - 0.811) < 0.06


def test_incomplete_image_folder_gives_data_root_error(data_root: Path, tmp_path: Path) -> None:
    for entry in data_root.iterdir():
        if entry.name != "texture":
            (tmp_path / entry.name).symlink_to(entry)
    # the lists and IDX files are there, the Textures images are not
    with pytest.raises(rp.DataRootError, match="incomplete") as err:
        rp.mnist(data_root=tmp_path)
    assert "texture/" in str(err.value)
    assert f"../shared/data/unpack {tmp_path}" in str(err.value)


# ------------------------------------------------------------------ mnist (data bundle)


def test_mnist_split_sizes_stratified_and_deterministic(mnist, data_root: Path) -> None:
    labels = mnist.fit.inner.targets
    assert np.bincount(labels).tolist() == MNIST_COUNTS
    parts = [mnist.fit.indices, mnist.val.indices, mnist.test.indices]
    assert [len(p) for p in parts] == [5_000, 1_000, 4_000]
    assert np.bincount(labels[parts[0]]).tolist() == MNIST_FIT
    assert np.bincount(labels[parts[1]]).tolist() == MNIST_VAL
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(10_000))
    again = rp.mnist(data_root=data_root)
    for a, b in zip(parts, (again.fit, again.val, again.test), strict=True):
        np.testing.assert_array_equal(a, b.indices)
    np.testing.assert_array_equal(mnist.ood_val.indices, again.ood_val.indices)


def test_mnist_groups_and_ood_val(mnist, data_root: Path) -> None:
    sizes = {k: len(v) for k, v in mnist.splits().items()}
    assert sizes == {
        "id/fit": 5_000, "id/val": 1_000, "id/test": 4_000, "ood_val": 1_000,
        "near/notmnist": 9_000, "near/fashionmnist": 10_000,
        "far/texture": 1_200, "far/cifar10": 10_000, "far/tin": 10_000,
    }
    assert mnist.groups == {"near": ["notmnist", "fashionmnist"], "far": ["texture", "cifar10", "tin"]}
    raw_letters = gzip.decompress((data_root / "notmnist/t10k-labels-idx1-ubyte.gz").read_bytes())
    letters = np.frombuffer(raw_letters[8:], dtype=np.uint8)
    assert np.bincount(letters[mnist.ood_val.indices]).tolist() == [100] * 10
    keys = {name: sample_keys(ds) for name, ds in mnist.splits().items()}
    assert all(k is not None for k in keys.values())
    for name in ("id/test", "near/notmnist", "near/fashionmnist", "far/texture", "far/cifar10", "far/tin"):
        assert not keys["ood_val"] & keys[name], name
    assert len(keys["ood_val"] | keys["near/notmnist"]) == 10_000
    for name, ds in mnist.splits().items():
        assert (ds[0][1] >= 0) if name.startswith("id/") else (ds[0][1] == -1), name
    with pytest.raises(SpecError, match="ood_val and near/notmnist share"):
        dataclasses.replace(mnist, ood_val=rp.IDXSubset(mnist.ood_val.inner, [0, 1, 2]))


@pytest.mark.slow
def test_mnist_is_lossless_and_convnet_reaches_readme_accuracy(mnist, data_root: Path) -> None:
    raw = _raw_idx(data_root / "mnist" / "t10k-images-idx3-ubyte.gz")
    for split in (mnist.fit, mnist.val, mnist.test):
        for i in range(0, len(split), 97):  # the preset's items are the IDX bytes / 255
            np.testing.assert_array_equal(split[i][0][0].numpy(), raw[split.indices[i]] / np.float32(255))
    x = torch.from_numpy(raw / np.float32(255)).unsqueeze(1)
    model = mnist.model(None).model
    with torch.inference_mode():
        correct = int((model(x).argmax(1).numpy() == mnist.fit.inner.targets).sum())
    assert correct == 9_906  # README: OE ConvNet baseline, 99.06 % on the 10,000 test images
