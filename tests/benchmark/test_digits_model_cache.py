"""Issue #11 defects 4 and 5 for the cached digits model: a flipped bit, a truncated or empty
file, or a directory where the weights belong is a named miss; the model is trained again and
the entry rewritten. Training is replaced by a seeded initialisation (the cache is under test)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from unseen import cache
from unseen.benchmark import digits_model as dm
from unseen.data.digits import ArrayImages
from unseen.models.digits_cnn import DigitsCNN


@pytest.fixture
def counted(monkeypatch) -> list[int]:
    calls: list[int] = []

    def fake_train(data: ArrayImages, num_classes: int, seed: int) -> DigitsCNN:
        calls.append(seed)
        torch.manual_seed(seed)
        return DigitsCNN(num_classes).eval()

    monkeypatch.setattr(dm, "train", fake_train)
    return calls


@pytest.fixture
def small() -> ArrayImages:
    rng = np.random.default_rng(0)
    n = 12
    return ArrayImages("tiny", rng.integers(0, 17, (n, 8, 8)).astype(np.float32),
                       np.arange(n) % 6, [f"x:{i}" for i in range(n)])


def _path(root: Path, data: ArrayImages) -> Path:
    return root / "models" / f"digits-cnn-{dm.recipe_key(data, 6, 0)}.safetensors"


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(),
                                                 b.state_dict().values(), strict=True))


def test_a_cached_model_is_loaded_without_training(tmp_path, small, counted) -> None:
    a = dm.trained_model(small, 6, 0, tmp_path)
    b = dm.trained_model(small, 6, 0, tmp_path)
    assert counted == [0] and _same(a, b)


def test_one_flipped_bit_in_the_weights_retrains(tmp_path, small, counted) -> None:
    a = dm.trained_model(small, 6, 0, tmp_path)
    path = _path(tmp_path, small)
    raw = bytearray(path.read_bytes())
    raw[-3] ^= 0x40  # one exponent bit of the last float: a wildly different weight
    path.write_bytes(bytes(raw))
    with pytest.warns(UserWarning, match=re.escape(str(path)) + ".*stored digest"):
        b = dm.trained_model(small, 6, 0, tmp_path)
    assert counted == [0, 0] and _same(a, b)
    c = dm.trained_model(small, 6, 0, tmp_path)  # the rewritten entry is a hit again
    assert counted == [0, 0] and _same(a, c)


@pytest.mark.parametrize("damage", ["truncate", "empty"])
def test_a_truncated_or_empty_model_retrains_and_names_the_file(tmp_path, small, counted,
                                                                damage) -> None:
    # Before: safetensors' "incomplete metadata" / "header too small", without the file name.
    a = dm.trained_model(small, 6, 0, tmp_path)
    path = _path(tmp_path, small)
    raw = path.read_bytes()
    path.write_bytes(raw[:40] if damage == "truncate" else b"")
    with pytest.warns(UserWarning, match=re.escape(str(path))):
        b = dm.trained_model(small, 6, 0, tmp_path)
    assert counted == [0, 0] and _same(a, b)


def test_a_decode_failure_with_a_matching_digest_is_a_named_miss(tmp_path, small,
                                                                 counted) -> None:
    # Bytes that were written that way (matching digest) but do not decode: still a miss.
    path = _path(tmp_path, small)
    path.parent.mkdir(parents=True)
    cache.write_entry(tmp_path, path, lambda p: p.write_bytes(b"\x00" * 16))
    with pytest.warns(UserWarning, match=re.escape(str(path)) + ".*cannot be read"):
        dm.trained_model(small, 6, 0, tmp_path)
    assert counted == [0] and path.stat().st_size > 1000


def test_a_directory_where_the_weights_belong_is_replaced(tmp_path, small, counted) -> None:
    # Before: training ran, then saving failed with "Is a directory" on every run.
    path = _path(tmp_path, small)
    (path / "junk").mkdir(parents=True)
    with pytest.warns(UserWarning, match=re.escape(str(path)) + ".*not a regular file"):
        a = dm.trained_model(small, 6, 0, tmp_path)
    assert path.is_file()
    assert _same(a, dm.trained_model(small, 6, 0, tmp_path)) and counted == [0]
