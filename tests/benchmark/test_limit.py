"""`--limit N` / BenchmarkSpec.limited: at most N evenly spaced samples of every split."""

from __future__ import annotations

import numpy as np
import pytest

from unseen.benchmark import SpecError, get_preset
from unseen.benchmark.spec import Subsample
from unseen.data.digits import ArrayImages


def test_subsample_takes_evenly_spaced_items_and_keeps_labels() -> None:
    imgs = (np.arange(10 * 64) % 17).astype(np.float32).reshape(10, 8, 8)
    ds = ArrayImages("ten", imgs, np.arange(10) % 3, [str(i) for i in range(10)])
    sub = Subsample(ds, 4)
    # linspace(0, 9, 4) = 0, 3, 6, 9
    assert sub.indices.tolist() == [0, 3, 6, 9]
    assert [int(sub[i][1]) for i in range(len(sub))] == [0, 0, 0, 0]
    np.testing.assert_array_equal(np.asarray(sub[1][0]), np.asarray(ds[3][0]))
    assert len(Subsample(ds, 50)) == 10  # never more than there is
    assert sub.identity() != Subsample(ds, 5).identity()
    assert ds.identity() in sub.identity()


def test_limited_digits_spec_cuts_every_split() -> None:
    spec = get_preset("digits")
    small = spec.limited(25)
    full, cut = spec.splits(), small.splits()
    assert list(cut) == list(full)
    assert {k: len(v) for k, v in cut.items()} == {k: min(25, len(v)) for k, v in full.items()}
    assert small.meta["limit"] == 25 and "limit" not in spec.meta
    # OOD sets stay OOD
    assert {int(small.near["digits6-9"][i][1]) for i in range(25)} == {-1}
    with pytest.raises(SpecError, match="positive integer"):
        spec.limited(0)
