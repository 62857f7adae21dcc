"""KDE's grid search computes the distances once for every bandwidth, with unchanged scores."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.neighbors import KernelDensity

from unseen.detectors import create
from unseen.detectors.tabular import neighbours
from unseen.representation import Representation


def test_kde_score_grid_shares_distances_and_matches_scikit_learn(monkeypatch) -> None:
    rng = np.random.default_rng(0)
    train = Representation(features=rng.normal(size=(60, 4)))
    test = Representation(features=rng.normal(size=(25, 4)))
    calls: list[int] = []
    real = neighbours.sq_distances

    def counting(x, y, y_sq):
        calls.append(len(x))
        return real(x, y, y_sq)

    monkeypatch.setattr(neighbours, "sq_distances", counting)
    det = create("kde").fit(train)
    points = [{"bandwidth": h} for h in (0.5, 1.0, "scott", -1.0)]
    grid = det.score_grid(test, points)
    assert sum(calls) == 25  # one pass over the rows for the three valid bandwidths
    assert isinstance(grid[3], ValueError) and "positive" in str(grid[3])
    for point, scores in zip(points[:3], grid[:3], strict=True):
        h = point["bandwidth"]
        ref = KernelDensity(bandwidth=h).fit(train.features).score_samples(test.features)
        np.testing.assert_allclose(scores, -ref, rtol=1e-10)
        single = create("kde", bandwidth=h).fit(train).score(test)
        np.testing.assert_array_equal(scores, single)
    assert det.bandwidth == 1.0  # score_grid left the detector's own value
    with pytest.raises(ValueError, match="positive"):
        create("kde", bandwidth=0).fit(train)
