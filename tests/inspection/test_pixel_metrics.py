"""Inspection metrics against scikit-learn and a brute-force AUPRO on hand-made masks."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

from unseen.metrics.pixel import f1_max, image_metrics, pixel_metrics


def test_image_metrics_match_sklearn() -> None:
    rng = np.random.default_rng(0)
    scores = np.round(rng.normal(size=200), 1)  # rounding makes ties
    anomalous = rng.random(200) < 0.3
    scores[anomalous] += 0.8
    got = image_metrics(scores, anomalous)
    assert got["image_auroc"] == pytest.approx(roc_auc_score(anomalous, scores), abs=1e-12)
    assert got["image_aupr"] == pytest.approx(average_precision_score(anomalous, scores), abs=1e-12)
    best = max(f1_score(anomalous, scores >= t) for t in np.unique(scores))
    assert got["image_f1_max"] == pytest.approx(best, abs=1e-12)


def test_f1_max_by_hand() -> None:
    # scores 4 3 2 1 with labels 1 0 1 0: t=4 -> P 1, R 1/2, F1 2/3; t=2 -> P 2/3, R 1, F1 0.8.
    f1, threshold = f1_max(np.array([4.0, 3.0, 2.0, 1.0]), np.array([True, False, True, False]))
    assert f1 == pytest.approx(0.8) and threshold == 2.0


def _masks() -> tuple[list[np.ndarray], list[np.ndarray]]:
    a = np.zeros((6, 7), dtype=bool)
    a[0:2, 0:2] = True  # region of 4 pixels
    a[3, 4] = a[4, 5] = True  # diagonal neighbours: one region of 2 under 8-connectivity
    b = np.zeros((5, 5), dtype=bool)
    b[1:4, 1:4] = True  # 9 pixels
    good = np.zeros((4, 4), dtype=bool)
    rng = np.random.default_rng(1)
    maps = [np.round(rng.random(m.shape) + 0.6 * m, 2) for m in (a, b, good)]
    return maps, [a, b, good]


def _brute_aupro(maps: list[np.ndarray], masks: list[np.ndarray], max_fpr: float) -> float:
    regions = []
    for g in masks:
        lab, n = ndimage.label(g, structure=np.ones((3, 3)))
        regions += [lab == k for k in range(1, n + 1)]
    owners = [i for i, g in enumerate(masks) for _ in range(ndimage.label(g, np.ones((3, 3)))[1])]
    negatives = sum(int((~g).sum()) for g in masks)
    points = [(0.0, 0.0)]
    for t in sorted({float(v) for m in maps for v in m.ravel()}, reverse=True):
        fp = sum(int(((m >= t) & ~g).sum()) for m, g in zip(maps, masks, strict=True))
        pro = np.mean([(maps[o][r] >= t).mean() for o, r in zip(owners, regions, strict=True)])
        points.append((fp / negatives, float(pro)))
    x, y = np.array(points).T
    grid = np.linspace(0, max_fpr, 200001)  # fine trapezoid of the piecewise-linear curve
    return float(np.trapezoid(np.interp(grid, x, y), grid) / max_fpr)


def test_pixel_metrics_match_sklearn_and_brute_force() -> None:
    maps, masks = _masks()
    # The two regions of image a are found under 8-connectivity (the diagonal pair is one).
    assert ndimage.label(masks[0], structure=np.ones((3, 3)))[1] == 2
    got = pixel_metrics(maps, masks, max_fpr=0.3)
    y = np.concatenate([g.ravel() for g in masks])
    s = np.concatenate([m.ravel() for m in maps])
    assert got["pixel_auroc"] == pytest.approx(roc_auc_score(y, s), abs=1e-9)
    assert got["pixel_ap"] == pytest.approx(average_precision_score(y, s), abs=1e-9)
    assert got["aupro"] == pytest.approx(_brute_aupro(maps, masks, 0.3), abs=1e-6)
    full = pixel_metrics(maps, masks, max_fpr=1.0)["aupro"]
    assert full == pytest.approx(_brute_aupro(maps, masks, 1.0), abs=1e-6)


def test_perfect_map_has_unit_aupro_and_bad_input_is_refused() -> None:
    _, masks = _masks()
    perfect = [g.astype(float) for g in masks]
    got = pixel_metrics(perfect, masks)
    assert got["aupro"] == pytest.approx(1.0) and got["pixel_auroc"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="boolean"):
        pixel_metrics(perfect, [g.astype(int) for g in masks])
    with pytest.raises(ValueError, match="both good and defective"):
        image_metrics(np.ones(3), np.ones(3, dtype=bool))
