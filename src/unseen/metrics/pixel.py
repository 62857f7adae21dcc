"""Inspection metrics: image AUROC / AUPR / F1-max and pixel AUROC / AP / AUPRO.

Higher score = more anomalous; the positive class is "defective" (images) and "defect pixel"
(pixels). AUPRO follows Bergmann, Batzner, Fauser, Sattlegger, Steger, "The MVTec Anomaly
Detection Dataset", IJCV 2021: at each threshold, the per-region overlap (PRO) is the mean, over
every connected ground-truth region of every image (8-connectivity), of the fraction of the
region's pixels above the threshold; the PRO curve against the false-positive rate of the
defect-free pixels is integrated up to FPR 0.3 and divided by 0.3. All pixel metrics come from one
descending sort of all pixels (exact, ties handled as one threshold). Depends on numpy and
scipy.ndimage only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from unseen.metrics.scores import aupr_out, auroc

#: 8-connectivity, as the MVTec AD evaluation code labels regions
_CONNECTIVITY = np.ones((3, 3), dtype=int)


def f1_max(scores: np.ndarray, anomalous: np.ndarray) -> tuple[float, float]:
    """The best F1 of "anomalous iff score >= t" over all thresholds t, and that t."""
    scores = np.asarray(scores, dtype=np.float64)
    positive = _bool(anomalous, scores.shape, "anomalous")
    if not positive.any():
        raise ValueError("f1_max needs at least one anomalous sample")
    order = np.argsort(-scores, kind="stable")
    s, p = scores[order], positive[order]
    last = np.r_[s[1:] != s[:-1], True]  # the last position of each run of equal scores
    tp = np.cumsum(p)[last]
    predicted = np.flatnonzero(last) + 1
    f1 = 2 * tp / (predicted + positive.sum())
    best = int(np.argmax(f1))
    return float(f1[best]), float(s[last][best])


def image_metrics(scores: np.ndarray, anomalous: np.ndarray) -> dict[str, float]:
    """Image AUROC, AUPR (average precision, defective positive) and F1-max."""
    scores = np.asarray(scores, dtype=np.float64)
    positive = _bool(anomalous, scores.shape, "anomalous")
    if positive.all() or not positive.any():
        raise ValueError("image metrics need both good and defective images")
    return {
        "image_auroc": auroc(scores[~positive], scores[positive]),
        "image_aupr": aupr_out(scores[~positive], scores[positive]),
        "image_f1_max": f1_max(scores, positive)[0],
    }


def _bool(values: np.ndarray, shape: tuple[int, ...], name: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.shape != shape:
        raise ValueError(f"{name} has shape {arr.shape}, expected {shape} (one per score)")
    if arr.dtype != np.bool_:
        raise ValueError(f"{name} must be a boolean array, got dtype {arr.dtype}")
    return arr


@dataclass(frozen=True)
class PixelCurves:
    """Cumulative counts at each distinct threshold, thresholds in decreasing order."""

    thresholds: np.ndarray
    tpr: np.ndarray
    fpr: np.ndarray
    precision: np.ndarray
    pro: np.ndarray


def pixel_curves(maps: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> PixelCurves:
    """ROC, precision and PRO of all pixels of ``maps`` against boolean ``masks`` (same shapes)."""
    if len(maps) != len(masks) or not maps:
        raise ValueError(f"need as many masks as maps (got {len(maps)} maps, {len(masks)} masks), at least 1")
    scores: list[np.ndarray] = []
    positive: list[np.ndarray] = []
    regions = 0
    weights: list[np.ndarray] = []
    for i, (m, g) in enumerate(zip(maps, masks, strict=True)):
        if m.shape != g.shape or g.dtype != np.bool_:
            raise ValueError(f"map {i} has shape {m.shape}; its mask must be boolean of that shape, got "
                             f"{g.dtype} {g.shape}")
        labelled, n = ndimage.label(g, structure=_CONNECTIVITY)
        sizes = np.bincount(labelled.ravel(), minlength=n + 1).astype(np.float64)
        inverse = np.zeros(n + 1)
        inverse[1:] = 1.0 / sizes[1:]
        weights.append(inverse[labelled.ravel()])  # each region sums to 1
        regions += n
        scores.append(m.ravel().astype(np.float32))
        positive.append(g.ravel())
    pos = np.concatenate(positive)
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("pixel metrics need both defect and defect-free pixels")
    pro_weight = np.concatenate(weights) / regions
    flat = np.concatenate(scores)
    order = np.argsort(-flat, kind="stable")
    s = flat[order]
    last = np.r_[s[1:] != s[:-1], True]
    tp = np.cumsum(pos[order])[last]
    fp = (np.flatnonzero(last) + 1) - tp
    pro = np.cumsum(pro_weight[order])[last]
    return PixelCurves(s[last], tp / n_pos, fp / n_neg, tp / (tp + fp), pro)


def _area(x: np.ndarray, y: np.ndarray, x_max: float) -> float:
    """Trapezoid area under (x, y) from the origin to ``x_max``, interpolating at ``x_max``."""
    x, y = np.r_[0.0, x], np.r_[0.0, y]
    cut = int(np.searchsorted(x, x_max, side="right"))
    if cut < len(x) and x[cut - 1] < x_max:
        frac = (x_max - x[cut - 1]) / (x[cut] - x[cut - 1])
        x = np.r_[x[:cut], x_max]
        y = np.r_[y[:cut], y[cut - 1] + frac * (y[cut] - y[cut - 1])]
    else:
        x, y = x[:cut], y[:cut]
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2))


def pixel_metrics(
    maps: Sequence[np.ndarray], masks: Sequence[np.ndarray], max_fpr: float = 0.3
) -> dict[str, float]:
    """Pixel AUROC, pixel AP and AUPRO (normalised area up to ``max_fpr``) of all pixels."""
    return curve_metrics(pixel_curves(maps, masks), max_fpr)


def curve_metrics(c: PixelCurves, max_fpr: float = 0.3) -> dict[str, float]:
    """:func:`pixel_metrics` from curves already computed by :func:`pixel_curves`."""
    if not 0 < max_fpr <= 1:
        raise ValueError(f"max_fpr must lie in (0, 1], got {max_fpr}")
    recall_steps = np.diff(np.r_[0.0, c.tpr])
    return {
        "pixel_auroc": _area(c.fpr, c.tpr, 1.0),
        "pixel_ap": float(np.sum(recall_steps * c.precision)),
        "aupro": _area(c.fpr, c.pro, max_fpr) / max_fpr,
    }
