"""Issue #11 defects 4 and 5 for the representation cache: silent damage is noticed (the stored
digest no longer matches), every unreadable entry is a named miss that is deleted and rebuilt."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from unseen import cache, extract
from unseen.representation import Representation


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Linear(6, 5), nn.ReLU())
        self.fc = nn.Linear(5, 3)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.fc(self.body(x))


def _data() -> TensorDataset:
    g = torch.Generator().manual_seed(1)
    return TensorDataset(torch.randn(40, 6, generator=g), torch.arange(40) % 3)


def _rep() -> Representation:
    rng = np.random.default_rng(0)
    return Representation(features=rng.normal(size=(30, 4)).astype(np.float32),
                          labels=np.arange(30) % 3)


def _flip(path: Path, offset: int, mask: int = 0xFF) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset] ^= mask
    path.write_bytes(bytes(raw))


def _offset(path: Path, array: str) -> int:
    """Byte offset of an array's data inside a safetensors file, read from its header."""
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    return 8 + n + int(json.loads(raw[8 : 8 + n])[array]["data_offsets"][0])


def _named(path: Path) -> str:
    return re.escape(str(path))


def test_flipped_feature_bytes_are_a_named_miss_and_the_file_goes(tmp_path) -> None:
    rep = _rep()
    path = cache.put(tmp_path, "k", rep)
    at = _offset(path, "features")
    for i in range(3):  # a few bytes inside the data region
        _flip(path, at + 8 + i)
    assert not np.array_equal(Representation.load(path).features, rep.features)  # damage is real
    with pytest.warns(UserWarning, match=_named(path) + ".*does not match its stored digest"):
        assert cache.get(tmp_path, "k") is None
    assert not path.exists() and not cache.digest_path(tmp_path, path).exists()


def test_one_flipped_label_bit_is_noticed(tmp_path) -> None:
    path = cache.put(tmp_path, "k", _rep())
    _flip(path, _offset(path, "labels"), 0x01)  # label 0 -> 1
    assert Representation.load(path).labels[0] == 1
    with pytest.warns(UserWarning, match=_named(path)):
        assert cache.get(tmp_path, "k") is None


def test_an_intact_entry_is_served_and_warns_nothing(tmp_path, recwarn) -> None:
    rep = _rep()
    cache.put(tmp_path, "k", rep)
    got = cache.get(tmp_path, "k")
    assert got is not None
    np.testing.assert_array_equal(got.features, rep.features)
    np.testing.assert_array_equal(got.labels, rep.labels)
    assert not recwarn.list


def test_extract_rebuilds_a_damaged_entry_with_the_right_values(tmp_path) -> None:
    model, ds = Net(), _data()
    first = extract(model, ds, cache=tmp_path, dataset_id="toy", progress=False)
    path = tmp_path / "representations" / f"{first.meta['cache_key']}.safetensors"
    _flip(path, _offset(path, "features") + 5)
    calls = model.calls
    with pytest.warns(UserWarning, match=_named(path)):
        again = extract(model, ds, cache=tmp_path, dataset_id="toy", progress=False)
    assert model.calls > calls  # rebuilt, not served damaged
    np.testing.assert_array_equal(again.features, first.features)
    calls = model.calls
    third = extract(model, ds, cache=tmp_path, dataset_id="toy", progress=False)
    assert model.calls == calls  # the rebuilt entry is sealed: a hit
    np.testing.assert_array_equal(third.features, first.features)


@pytest.mark.parametrize("damage", ["truncate", "empty"])
def test_truncated_or_empty_entry_is_deleted_and_named(tmp_path, damage) -> None:
    path = cache.put(tmp_path, "k", _rep())
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2] if damage == "truncate" else b"")
    with pytest.warns(UserWarning, match=_named(path)):
        assert cache.get(tmp_path, "k") is None
    assert not path.exists()


def test_a_directory_in_the_way_is_removed_and_the_entry_written(tmp_path) -> None:
    model, ds = Net(), _data()
    rep = extract(model, ds, cache=False, progress=False)
    key = cache.key(model, "toy", {})  # any key: the store itself is under test
    path = tmp_path / "representations" / f"{key}.safetensors"
    (path / "junk").mkdir(parents=True)
    with pytest.warns(UserWarning, match=_named(path) + ".*not a regular file"):
        assert cache.get(tmp_path, key) is None
    cache.put(tmp_path, key, rep)
    digest = cache.digest_path(tmp_path, path)  # and a directory where the digest belongs
    digest.unlink()
    digest.mkdir()
    cache.put(tmp_path, key, rep)
    got = cache.get(tmp_path, key)
    assert got is not None
    np.testing.assert_array_equal(got.features, rep.features)


def test_an_entry_without_a_digest_is_rebuilt_once(tmp_path) -> None:
    # Entries written before digests existed: one miss, then sealed.
    path = _rep().save(tmp_path / "representations" / "k.safetensors")
    with pytest.warns(UserWarning, match=_named(path) + ".*no stored digest"):
        assert cache.get(tmp_path, "k") is None
    cache.put(tmp_path, "k", _rep())
    assert cache.get(tmp_path, "k") is not None


def test_digest_is_sha256_of_the_file_bytes(tmp_path) -> None:
    path = cache.put(tmp_path, "k", _rep())
    assert cache.digest_path(tmp_path, path).read_text().strip() == hashlib.sha256(
        path.read_bytes()).hexdigest()
