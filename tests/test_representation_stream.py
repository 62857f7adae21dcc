"""Representation.save streams arrays in row chunks: the file must stay what safetensors writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import unseen.representation as rep_mod
from unseen import Representation


@pytest.fixture
def rep() -> Representation:
    rng = np.random.default_rng(0)
    f = rng.normal(size=(257, 7)).astype(np.float32)
    w, b = rng.normal(size=(3, 7)).astype(np.float32), rng.normal(size=3).astype(np.float32)
    return Representation(f, f @ w.T + b, rng.integers(0, 3, 257), w, b,
                          layers={"block": rng.normal(size=(257, 2, 3)).astype(np.float64)},
                          meta={"dataset": "toy"})


def test_the_library_reads_our_file(rep: Representation, tmp_path: Path) -> None:
    path = rep.save(tmp_path / "r.safetensors")
    got = load_file(str(path))
    for name in ("features", "logits", "labels", "weight", "bias"):
        np.testing.assert_array_equal(got[name], getattr(rep, name))
    np.testing.assert_array_equal(got["layers.block"], rep.layers["block"])


def test_chunked_writes_give_the_same_bytes_and_arrays(rep: Representation, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    whole = rep.save(tmp_path / "whole.safetensors").read_bytes()
    monkeypatch.setattr(rep_mod, "_WRITE_BYTES", 40)  # 1 row of 7 float32 per write
    chunked = rep.save(tmp_path / "chunked.safetensors")
    assert chunked.read_bytes() == whole
    back = Representation.load(chunked)
    np.testing.assert_array_equal(back.layers["block"], rep.layers["block"])
    assert back.meta == {"dataset": "toy"}
    # and the library's own writer reads back to the same arrays as ours
    ref = tmp_path / "ref.safetensors"
    save_file({"features": np.ascontiguousarray(rep.features)}, str(ref))
    np.testing.assert_array_equal(load_file(str(ref))["features"], back.features)
