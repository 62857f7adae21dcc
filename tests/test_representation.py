from __future__ import annotations

import re

import numpy as np
import pytest

import unseen.detectors
from unseen import Representation
from unseen.representation import RepresentationError, concat


def test_features_only_representation_serves_anomaly_detection() -> None:
    x = np.arange(12, dtype=np.float64).reshape(4, 3)
    rep = Representation(features=x)
    assert len(rep) == 4 and rep.logits is None and rep.labels is None and not rep.has_head
    assert rep.num_classes is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"features": np.zeros((3, 2)), "logits": np.zeros((4, 5))}, "features has 3, logits has 4"),
        ({"features": np.array([[0.0, np.nan]])}, "features contains 1 NaN"),
        ({"logits": np.array([[np.inf, 0.0]])}, "logits contains 1 NaN or infinite"),
        ({"features": np.zeros(3)}, "features must be 2-D"),
        ({"features": np.zeros((2, 4)), "weight": np.zeros((3, 5)), "bias": np.zeros(3)}, "dimension 4"),
        ({"logits": np.zeros((2, 4)), "weight": np.zeros((3, 5)), "bias": np.zeros(3)}, "4 classes"),
        ({"weight": np.zeros((3, 5)), "bias": np.zeros(2)}, "bias has shape (2,)"),
        ({"weight": np.zeros((3, 5))}, "given together"),
        ({"labels": np.array([0.5, 1.0])}, "integer"),
        ({"labels": np.array([0, -2])}, "-1 for OOD"),
        ({"logits": np.zeros((2, 3)), "labels": np.array([0, 3])}, "labels reach 3"),
        ({"features": np.array([["a", "b"]])}, "numeric"),
        ({"features": np.zeros((2, 2)), "layers": {"l1": np.zeros((3, 4))}}, "layers['l1'] has 3"),
        ({"features": np.zeros((2, 2)), "meta": {"bad": object()}}, "JSON"),
    ],
)
def test_invalid_input_is_refused_with_a_message_naming_the_array(kwargs, message) -> None:
    with pytest.raises(RepresentationError, match=re.escape(message)):
        Representation(**kwargs)


def test_subset_keeps_head_and_rows(toy_rep: Representation) -> None:
    idx = np.array([5, 0, 299])
    sub = toy_rep.subset(idx)
    np.testing.assert_array_equal(sub.features, toy_rep.features[idx])
    np.testing.assert_array_equal(sub.labels, [0, 0, 2])
    assert sub.weight is toy_rep.weight and sub.meta == toy_rep.meta


def test_save_load_roundtrip_is_exact_and_memory_mapped(tmp_path, toy_rep) -> None:
    toy_rep.layers["block3"] = np.random.default_rng(1).normal(size=(300, 2, 2)).astype(np.float32)
    path = toy_rep.save(tmp_path / "rep.safetensors")
    loaded = Representation.load(path)
    for name in ("features", "logits", "labels", "weight", "bias"):
        a, b = getattr(toy_rep, name), getattr(loaded, name)
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(loaded.layers["block3"], toy_rep.layers["block3"])
    assert loaded.meta == {"dataset": "toy"}
    assert isinstance(loaded.features, np.memmap)
    assert not loaded.features.flags.writeable
    eager = Representation.load(path, mmap=False)
    assert not isinstance(eager.features, np.memmap)
    np.testing.assert_array_equal(eager.logits, toy_rep.logits)


def test_save_is_atomic_and_leaves_no_temporary_files(tmp_path, toy_rep, monkeypatch) -> None:
    target = tmp_path / "rep.safetensors"
    toy_rep.save(target)
    before = target.read_bytes()

    def boom(*_args, **_kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("unseen.representation._write_safetensors", boom)
    with pytest.raises(OSError, match="disk full"):
        toy_rep.subset(slice(0, 10)).save(target)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["rep.safetensors"]


def test_truncated_or_foreign_file_is_refused(tmp_path, toy_rep) -> None:
    path = toy_rep.save(tmp_path / "rep.safetensors")
    data = path.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) - 100])
    with pytest.raises(RepresentationError, match="truncated"):
        Representation.load(tmp_path / "cut.safetensors")
    (tmp_path / "short").write_bytes(b"\x01\x02")
    with pytest.raises(RepresentationError, match="truncated"):
        Representation.load(tmp_path / "short")
    from safetensors.numpy import save_file

    save_file({"x": np.zeros(3, np.float32)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(RepresentationError, match="not an unseen representation"):
        Representation.load(tmp_path / "other.safetensors")
    with pytest.raises(FileNotFoundError):
        Representation.load(tmp_path / "missing.safetensors")


def test_concat_stacks_rows(toy_rep) -> None:
    parts = [toy_rep.subset(slice(0, 100)), toy_rep.subset(slice(100, 300))]
    joined = concat(parts)
    np.testing.assert_array_equal(joined.features, toy_rep.features)
    np.testing.assert_array_equal(joined.labels, toy_rep.labels)
    with pytest.raises(RepresentationError, match="empty"):
        concat([])
    with pytest.raises(RepresentationError, match="some parts have logits"):
        concat([toy_rep, Representation(features=toy_rep.features)])


def test_head_logits_applies_the_head(toy_rep) -> None:
    np.testing.assert_allclose(toy_rep.head_logits(), toy_rep.logits, rtol=1e-5, atol=1e-5)
    with pytest.raises(RepresentationError, match="no classifier head"):
        Representation(features=np.zeros((1, 2))).head_logits()


def test_assigning_an_array_later_is_validated_like_construction(toy_rep) -> None:
    # Before, `rep.features = x` skipped every check and knn passed inf through as 1.8e19.
    bank = unseen.detectors.create("knn", k=3).fit(toy_rep)
    rep = toy_rep.subset(slice(0, 10))
    good = rep.features
    with pytest.raises(RepresentationError, match="features contains 10 NaN or infinite"):
        rep.features = np.where(np.arange(8) == 2, np.inf, good)
    assert rep.features is good  # the old value is kept
    with pytest.raises(RepresentationError, match="features have dimension 4 but weight expects 8"):
        rep.features = np.zeros((10, 4))
    with pytest.raises(RepresentationError, match="features has 3, logits has 10"):
        rep.features = np.zeros((3, 8))
    with pytest.raises(RepresentationError, match="-1 for OOD"):
        rep.labels = np.full(10, -2)
    with pytest.raises(RepresentationError, match="labels reach 3"):
        rep.labels = np.full(10, 3)
    rep.features = good[::-1] * 2.0  # a consistent replacement is taken, as float
    np.testing.assert_array_equal(rep.features, good[::-1] * 2.0)
    expected = np.sort(np.linalg.norm(
        (rep.features / np.linalg.norm(rep.features, axis=1, keepdims=True))[:, None]
        - bank.bank_[None], axis=2), axis=1)[:, 2]
    np.testing.assert_allclose(bank.score(rep), expected, atol=2e-6)


def test_subset_keeps_the_source_row_for_row() -> None:
    # A DataLoader has no rows to index: its batches are picked from as they stream past.
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from unseen.extraction import NetworkSource

    x = torch.arange(20.0).reshape(10, 2)
    for data in (x, TensorDataset(x), DataLoader(TensorDataset(x), batch_size=3)):
        source = NetworkSource(model=torch.nn.Identity(), data=data, head=None, batch_size=4)
        rep = Representation(features=x.numpy(), source=source)
        for index, rows in ((slice(2, 9, 3), [2, 5, 8]), (np.array([7, 1, 4]), [7, 1, 4]),
                            (np.arange(10) % 4 == 0, [0, 4, 8])):
            sub = rep.subset(index)
            got = torch.cat([b[0] for b in sub.source.batches()])
            np.testing.assert_array_equal(got.numpy(), x.numpy()[rows])
            np.testing.assert_array_equal(sub.features, x.numpy()[rows])
