"""Issue #11 defects 4 and 5 for the network-outcome cache: a damaged ``.npz`` or ``.json`` (a
flipped byte, a truncation, a directory in the way) is a named miss, deleted, and saving again
works; an intact entry comes back exactly."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from unseen import cache
from unseen.benchmark import outcomes

KEY = "abc123"
SCORES = {"digits6-9": np.linspace(0.0, 1.0, 400), "id": np.arange(50, dtype=np.float64)}
HPARAMS = {"k": 50}


def _save(root: Path) -> tuple[Path, Path]:
    outcomes.save(root, KEY, HPARAMS, [{"k": 50, "auroc": 0.9}], 1.5, SCORES)
    return root / "outcomes" / f"{KEY}.npz", root / "outcomes" / f"{KEY}.json"


def _gone(root: Path, *paths: Path) -> bool:
    return all(not p.exists() and not cache.digest_path(root, p).exists() for p in paths)


def test_an_intact_entry_round_trips(tmp_path, recwarn) -> None:
    _save(tmp_path)
    got = outcomes.load(tmp_path, KEY)
    assert got is not None and got["hparams"] == HPARAMS and got["seconds"] == 1.5
    for name, values in SCORES.items():
        np.testing.assert_array_equal(got["scores"][name], values)
    assert not recwarn.list


def test_a_flipped_byte_in_the_scores_is_a_named_miss(tmp_path) -> None:
    # Before: zipfile.BadZipFile "Bad CRC-32 for file 'digits6-9.npy'" on every later run.
    npz, meta = _save(tmp_path)
    raw = bytearray(npz.read_bytes())
    raw[raw.index(b"NUMPY") + 200] ^= 0xFF  # inside the first member's data
    npz.write_bytes(bytes(raw))
    with pytest.warns(UserWarning, match=re.escape(str(npz))):
        assert outcomes.load(tmp_path, KEY) is None
    assert _gone(tmp_path, npz, meta)
    _save(tmp_path)  # rebuilt
    assert outcomes.load(tmp_path, KEY) is not None


def test_a_truncated_scores_file_is_a_named_miss(tmp_path) -> None:
    # Before: "File is not a zip file".
    npz, meta = _save(tmp_path)
    npz.write_bytes(npz.read_bytes()[:100])
    with pytest.warns(UserWarning, match=re.escape(str(npz))):
        assert outcomes.load(tmp_path, KEY) is None
    assert _gone(tmp_path, npz, meta)


def test_a_changed_hyperparameter_in_the_record_is_noticed(tmp_path) -> None:
    # Valid JSON with another value: silently a different outcome before.
    _, meta = _save(tmp_path)
    meta.write_text(meta.read_text().replace('"k": 50', '"k": 60', 1))
    with pytest.warns(UserWarning, match=re.escape(str(meta)) + ".*stored digest"):
        assert outcomes.load(tmp_path, KEY) is None
    assert not meta.exists()


@pytest.mark.parametrize("which", ["npz", "json"])
def test_a_directory_in_the_way_is_removed_and_the_entry_saved(tmp_path, which) -> None:
    # Before: saving raised IsADirectoryError on every run.
    path = tmp_path / "outcomes" / f"{KEY}.{which}"
    (path / "inner").mkdir(parents=True)
    if which == "json":
        with pytest.warns(UserWarning, match=re.escape(str(path)) + ".*not a regular file"):
            assert outcomes.load(tmp_path, KEY) is None
    _save(tmp_path)
    got = outcomes.load(tmp_path, KEY)
    assert got is not None
    np.testing.assert_array_equal(got["scores"]["digits6-9"], SCORES["digits6-9"])


def test_scores_missing_under_a_record_drop_the_record(tmp_path) -> None:
    npz, meta = _save(tmp_path)
    npz.unlink()
    with pytest.warns(UserWarning, match=re.escape(str(meta)) + ".*lost its scores"):
        assert outcomes.load(tmp_path, KEY) is None
    assert _gone(tmp_path, npz, meta)
