"""The embedded digits benchmark: documented splits, disjoint validation, deterministic model."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits, load_sample_image

from unseen.benchmark import UnknownPresetError, get_preset
from unseen.benchmark import digits_model as dm
from unseen.data.digits import ArrayImages, digits_splits


@pytest.fixture(scope="module")
def splits():
    return digits_splits(0)


@pytest.fixture(scope="module")
def raw():
    bunch = load_digits()
    return bunch.images, bunch.target


def _indices(ds) -> list[int]:
    return [int(o.split(":")[1]) for o in ds.origins if o.startswith("digits:")]


def _hash(img: np.ndarray) -> str:
    return hashlib.sha256(np.asarray(img, dtype=np.uint8).tobytes()).hexdigest()


def test_id_splits_are_stratified_fractions_of_digits_0_to_5(splits, raw) -> None:
    images, target = raw
    counts = np.bincount(target)
    fit_n = sum(round(0.5 * counts[c]) for c in range(6))
    val_n = sum(round(0.2 * counts[c]) for c in range(6))
    assert (len(splits.fit), len(splits.val)) == (fit_n, val_n) == (541, 216)
    assert len(splits.test) == counts[:6].sum() - fit_n - val_n == 326
    idx = {name: _indices(getattr(splits, name)) for name in ("fit", "val", "test")}
    together = sorted(idx["fit"] + idx["val"] + idx["test"])
    assert together == sorted(np.flatnonzero(target < 6).tolist())  # each ID digit exactly once
    for name in ("fit", "val", "test"):
        ds = getattr(splits, name)
        np.testing.assert_array_equal(ds.labels, target[idx[name]])
        np.testing.assert_array_equal(ds.images, images[idx[name]])
        assert set(ds.labels.tolist()) == set(range(6))


def test_near_ood_is_digits_6_to_9_minus_the_held_out_fifth(splits, raw) -> None:
    _, target = raw
    counts = np.bincount(target)
    held = _indices(splits.ood_val)
    near = _indices(splits.near["digits6-9"])
    assert len(held) == sum(round(0.2 * counts[c]) for c in range(6, 10)) == 143
    assert len(near) == counts[6:].sum() - len(held) == 571
    assert sorted(held + near) == sorted(np.flatnonzero(target >= 6).tolist())
    assert (splits.near["digits6-9"].labels == -1).all() and (splits.ood_val.labels == -1).all()


def test_patches_follow_the_documented_recipe(splits) -> None:
    # independent reference: PIL luma, 32x32 grid crops, 4x4 block means, contrast >= 32, stretch
    grey = np.asarray(Image.fromarray(load_sample_image("flower.jpg")).convert("L"), float)
    expected = []
    for y in range(0, grey.shape[0] - 31, 32):
        for x in range(0, grey.shape[1] - 31, 32):
            small = np.array([[grey[y + 4 * i : y + 4 * i + 4, x + 4 * j : x + 4 * j + 4].mean()
                               for j in range(8)] for i in range(8)])
            if small.max() - small.min() >= 32:
                expected.append(np.round(16 * (small - small.min()) / np.ptp(small)))
    flower = splits.far["flower"]
    assert len(flower) == len(expected) == 100
    np.testing.assert_allclose(flower.images, np.stack(expected), atol=1e-4)
    assert (flower.images.min(axis=(1, 2)) == 0).all() and (flower.images.max(axis=(1, 2)) == 16).all()
    china = [o for o in splits.ood_val.origins if o.startswith("china.jpg")]
    assert len(china) == 168 and len(splits.ood_val) == 143 + 168


def test_values_are_integers_0_to_16_and_items_scale_by_16(splits) -> None:
    noise = splits.far["noise"].images
    assert noise.shape == (300, 8, 8)
    assert set(np.unique(noise).tolist()) == set(range(17))
    assert abs(noise.mean() - 8.0) < 0.2  # uniform on 0..16
    for ds in (splits.fit, splits.ood_val, splits.far["flower"], splits.far["noise"]):
        assert ds.images.min() >= 0 and ds.images.max() <= 16
        assert (ds.images == np.round(ds.images)).all()
    x, y = splits.test[3]
    assert x.shape == (1, 8, 8) and x.dtype == torch.float32
    np.testing.assert_allclose(x[0].numpy(), splits.test.images[3] / 16)
    assert y == splits.test.labels[3]


def test_validation_ood_never_overlaps_a_test_set(splits) -> None:
    val_origins = set(splits.ood_val.origins)
    val_hashes = {_hash(img) for img in splits.ood_val.images}
    tests = [splits.test, *splits.near.values(), *splits.far.values()]
    for ds in tests:
        assert val_origins.isdisjoint(ds.origins), ds.name
        assert val_hashes.isdisjoint(_hash(img) for img in ds.images), ds.name
    id_hashes = [{_hash(i) for i in getattr(splits, n).images} for n in ("fit", "val", "test")]
    assert id_hashes[0].isdisjoint(id_hashes[2]) and id_hashes[1].isdisjoint(id_hashes[2])


def test_seed_reshuffles_and_same_seed_repeats(splits) -> None:
    again, other = digits_splits(0), digits_splits(1)
    assert _indices(again.fit) == _indices(splits.fit)
    assert _indices(other.fit) != _indices(splits.fit)
    np.testing.assert_array_equal(again.far["noise"].images, splits.far["noise"].images)


def test_preset_registry() -> None:
    spec = get_preset("digits")
    assert spec.groups == {"near": ["digits6-9"], "far": ["flower", "noise"]}
    with pytest.raises(UnknownPresetError, match="unknown preset 'digts'.*did you mean digits"):
        get_preset("digts")
    with pytest.raises(TypeError, match="takes no option"):
        get_preset("digits", data_root="/nowhere")


@pytest.mark.slow  # torch's first optimiser step takes seconds to warm up on a busy machine
def test_training_is_deterministic_and_cached(splits, tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(dm.RECIPE, "epochs", 1)
    fit = splits.fit
    small = ArrayImages("small", fit.images[:64], fit.labels[:64], fit.origins[:64])
    a = dm.trained_model(small, 6, 0, tmp_path)
    assert len(list((tmp_path / "models").glob("digits-cnn-*.safetensors"))) == 1
    b = dm.train(small, 6, 0)
    for (name, ta), tb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(ta, tb), name

    def no_training(*args, **kwargs):
        raise AssertionError("cached weights should have been loaded")

    monkeypatch.setattr(dm, "train", no_training)
    c = dm.trained_model(small, 6, 0, tmp_path)
    assert all(torch.equal(ta, tc) for ta, tc in zip(a.state_dict().values(),
                                                     c.state_dict().values(), strict=True))
    monkeypatch.setitem(dm.RECIPE, "epochs", 2)  # a new recipe is a new key: trains again
    with pytest.raises(AssertionError, match="cached weights"):
        dm.trained_model(small, 6, 0, tmp_path)
