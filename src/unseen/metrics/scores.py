"""Score metrics for out-of-distribution detection: AUROC, AUPR, FPR at a TPR, detection error.

One convention throughout: a detector gives every sample an *OOD score*, and a higher
score means "more likely out-of-distribution". Each function takes the scores of the
in-distribution (ID) samples and of the OOD samples as two separate 1-D arrays.

All curve-based metrics are computed exactly, by sorting (O(n log n)) with integer counts,
so there is no threshold grid and no sampling error. Tied scores are always kept together:
a threshold never separates two samples with equal score.

Definitions (n_id ID samples, n_ood OOD samples):

* ``auroc``: area under the ROC curve with OOD as the positive class; equals
  P(s_ood > s_id) + 0.5 P(s_ood == s_id), i.e. scikit-learn's ``roc_auc_score``.
* ``aupr_out`` / ``aupr_in``: average precision (the step-wise sum
  sum_k (R_k - R_{k-1}) P_k over distinct thresholds, not the trapezoid) with OOD positive
  and score s, resp. ID positive and score -s; scikit-learn's ``average_precision_score``.
* ``fpr_at_tpr``: two conventions, see that function.
* ``detection_error``: min over thresholds of 0.5 (1 - TPR) + 0.5 FPR.
* ``ccr_at_fpr`` and ``oscr``: open-set recognition metrics of Dhamija, Günther and Boult,
  "Reducing Network Agnostophobia", NeurIPS 2018.

This module depends on numpy only.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["aupr_in", "aupr_out", "auroc", "detection_error", "evaluate", "fpr_at_tpr", "roc_curve"]


# --------------------------------------------------------------------------- validation


def _scores(values: ArrayLike, name: str) -> np.ndarray:
    """Return ``values`` as a finite, non-empty 1-D float64 array or raise ValueError."""
    arr = np.asarray(values)
    if arr.dtype == np.bool_ or not (
        np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)
    ):
        raise ValueError(
            f"{name} must hold real numbers (int or float), got dtype {arr.dtype}; "
            "pass the detector's OOD scores"
        )
    if arr.ndim != 1:
        raise ValueError(
            f"{name} must be 1-D with one score per sample, got shape {arr.shape}; "
            "use .ravel() if each row holds a single score"
        )
    if arr.size == 0:
        raise ValueError(f"{name} is empty; at least one sample is needed")
    arr = arr.astype(np.float64, copy=False)
    bad = ~np.isfinite(arr)
    if bad.any():
        raise ValueError(
            f"{name} contains {int(bad.sum())} non-finite value(s) (NaN or inf) out of "
            f"{arr.size}; fix the detector or drop those samples explicitly"
        )
    return arr


def _correct(values: ArrayLike, n_id: int) -> np.ndarray:
    """Return ``values`` as a boolean array of length ``n_id`` or raise ValueError."""
    arr = np.asarray(values)
    if arr.dtype != np.bool_:
        raise ValueError(
            f"id_correct must be a boolean array, got dtype {arr.dtype}; "
            "build it as predictions == labels (or with correct_mask)"
        )
    if arr.ndim != 1 or arr.size != n_id:
        raise ValueError(
            f"id_correct must be 1-D with one entry per ID sample ({n_id}), "
            f"got shape {arr.shape}"
        )
    return arr


def _rate(value: float, name: str, *, allow_zero: bool) -> float:
    """Check that a target rate lies in [0, 1] (or (0, 1] without ``allow_zero``)."""
    try:
        rate = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}") from None
    low_ok = rate >= 0.0 if allow_zero else rate > 0.0
    if not (low_ok and rate <= 1.0):
        interval = "[0, 1]" if allow_zero else "(0, 1]"
        raise ValueError(f"{name} must lie in {interval} (a fraction, not a percentage), "
                         f"got {value!r}")
    return rate


def _integers(values: ArrayLike, name: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(
            f"{name} must hold integer class indices, got dtype {arr.dtype}; "
            "cast with .astype(np.int64) if the values are whole numbers"
        )
    return arr


# --------------------------------------------------------------------------- counting core


class _Counts(NamedTuple):
    """Cumulative counts at every distinct score, OOD positive (predict OOD iff s >= t)."""

    thresholds: np.ndarray  # distinct scores of both sets, descending
    ood_ge: np.ndarray  # OOD samples with score >= threshold (true positives)
    id_ge: np.ndarray  # ID samples with score >= threshold (false positives)
    n_id: int
    n_ood: int


def _counts(id_scores: np.ndarray, ood_scores: np.ndarray) -> _Counts:
    id_sorted = np.sort(id_scores)
    ood_sorted = np.sort(ood_scores)
    # A stable sort of two concatenated sorted runs is a cheap merge.
    merged = np.sort(np.concatenate([id_sorted, ood_sorted]), kind="stable")
    distinct = merged[np.r_[merged[1:] != merged[:-1], True]]
    thresholds = distinct[::-1]
    ood_ge = ood_sorted.size - np.searchsorted(ood_sorted, thresholds, side="left")
    id_ge = id_sorted.size - np.searchsorted(id_sorted, thresholds, side="left")
    return _Counts(thresholds, ood_ge, id_ge, id_sorted.size, ood_sorted.size)


def _id_le(c: _Counts) -> tuple[np.ndarray, np.ndarray]:
    """ID and OOD counts with score <= t at every distinct t, in ascending t order.

    s <= t_j holds exactly when s is not >= t_{j-1}, the next larger distinct score.
    """
    id_le = c.n_id - np.r_[0, c.id_ge[:-1]]
    ood_le = c.n_ood - np.r_[0, c.ood_ge[:-1]]
    return id_le[::-1], ood_le[::-1]


def _trapezoid_auc(fps: np.ndarray, tps: np.ndarray, n_neg: int, n_pos: int) -> float:
    """Exact trapezoid area under (fps/n_neg, tps/n_pos), starting from the origin."""
    fps = np.r_[0, fps].astype(np.int64)
    tps = np.r_[0, tps].astype(np.int64)
    twice_area = int(np.sum(np.diff(fps) * (tps[1:] + tps[:-1])))
    return twice_area / (2.0 * n_neg * n_pos)


def _average_precision(tps: np.ndarray, fps: np.ndarray, n_pos: int) -> float:
    """Step-wise average precision sum_k (R_k - R_{k-1}) P_k over descending thresholds."""
    precision = tps / (tps + fps).astype(np.float64)
    recall_gain = np.diff(np.r_[0, tps])
    return float(np.sum(recall_gain * precision) / n_pos)


def _roc_from_counts(
    c: _Counts, drop_intermediate: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    fps, tps, thresholds = c.id_ge, c.ood_ge, c.thresholds
    if drop_intermediate and fps.size > 2:
        # scikit-learn's rule, applied before the origin is prepended: keep the first and
        # last points and every point where either count's increment changes.
        keep = np.r_[True, (np.diff(fps, 2) != 0) | (np.diff(tps, 2) != 0), True]
        fps, tps, thresholds = fps[keep], tps[keep], thresholds[keep]
    fpr = np.r_[0, fps] / c.n_id
    tpr = np.r_[0, tps] / c.n_ood
    return fpr, tpr, np.r_[np.inf, thresholds]


def _fpr_id_positive(c: _Counts, tpr: float) -> float:
    id_le, ood_le = _id_le(c)
    j = int(np.argmax(id_le / c.n_id >= tpr))
    return float(ood_le[j] / c.n_ood)


def _fpr_ood_positive(c: _Counts, tpr: float) -> float:
    fpr_list, tpr_list, _ = _roc_from_counts(c, drop_intermediate=True)
    return float(fpr_list[np.argmax(tpr_list >= tpr)])


def _detection_error(c: _Counts) -> float:
    fnr = 1.0 - c.ood_ge / c.n_ood
    fpr = c.id_ge / c.n_id
    # No need to add "reject nothing": the lowest threshold ("reject all") also scores 0.5.
    return float(np.min(0.5 * fnr + 0.5 * fpr))


# --------------------------------------------------------------------------- public API


def roc_curve(
    id_scores: ArrayLike, ood_scores: ArrayLike, *, drop_intermediate: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC curve with OOD as the positive class, for plotting.

    A sample is predicted OOD when its score is >= the threshold. Returns ``(fpr, tpr,
    thresholds)``: ``thresholds`` are the distinct scores in decreasing order preceded by
    ``inf`` (the point (0, 0)); ``fpr[i]`` is the fraction of ID samples and ``tpr[i]`` the
    fraction of OOD samples with score >= ``thresholds[i]``. Identical to
    ``sklearn.metrics.roc_curve(y_ood, scores, drop_intermediate=...)``, including its rule
    for dropping collinear intermediate points (on by default, as in scikit-learn).
    """
    c = _counts(_scores(id_scores, "id_scores"), _scores(ood_scores, "ood_scores"))
    return _roc_from_counts(c, drop_intermediate)


def auroc(id_scores: ArrayLike, ood_scores: ArrayLike) -> float:
    """Area under the ROC curve, OOD positive: P(s_ood > s_id) + 0.5 P(s_ood == s_id).

    Equals ``sklearn.metrics.roc_auc_score(y_ood, scores)``; constant scores give 0.5.
    """
    c = _counts(_scores(id_scores, "id_scores"), _scores(ood_scores, "ood_scores"))
    return _trapezoid_auc(c.id_ge, c.ood_ge, c.n_id, c.n_ood)


def aupr_out(id_scores: ArrayLike, ood_scores: ArrayLike) -> float:
    """Average precision with OOD positive and the OOD score as ranking.

    AP = sum_k (R_k - R_{k-1}) P_k over the distinct thresholds t_k in decreasing order,
    where P_k, R_k are the precision and recall of "OOD iff s >= t_k". This is the step-wise
    ``sklearn.metrics.average_precision_score(y_ood, scores)``, not the trapezoid area under
    the PR curve that OpenOOD v1.5 reports (``auc(recall, precision)``); the two differ
    slightly, linear interpolation of a PR curve tending to be optimistic.
    """
    c = _counts(_scores(id_scores, "id_scores"), _scores(ood_scores, "ood_scores"))
    return _average_precision(c.ood_ge, c.id_ge, c.n_ood)


def aupr_in(id_scores: ArrayLike, ood_scores: ArrayLike) -> float:
    """Average precision with ID positive, ranked by the negated score.

    Same step-wise definition as :func:`aupr_out` with the roles swapped ("ID iff s <= t");
    equals ``sklearn.metrics.average_precision_score(y_id, -scores)``.
    """
    c = _counts(_scores(id_scores, "id_scores"), _scores(ood_scores, "ood_scores"))
    id_le, ood_le = _id_le(c)
    return _average_precision(id_le, ood_le, c.n_id)


def fpr_at_tpr(
    id_scores: ArrayLike,
    ood_scores: ArrayLike,
    tpr: float = 0.95,
    positive: Literal["id", "ood"] = "id",
) -> float:
    """False-positive rate at the first threshold that reaches a true-positive rate.

    Fractions such as ``k / n >= tpr`` are compared in float64, exactly as written.

    ``positive="id"`` (the classic FPR@95TPR of Hendrycks & Gimpel / Liang et al.): a sample
    is accepted as ID iff ``score <= t``, where ``t`` is the smallest threshold such that at
    least a fraction ``tpr`` of the ID scores are ``<= t`` (so ``t`` is an ID score). The
    result is the fraction of OOD samples accepted, i.e. with score ``<= t``. OOD samples
    tied with ``t`` count as accepted.

    ``positive="ood"`` (OpenOOD v1.5, ``openood/evaluators/metrics.py``): OpenOOD calls
    ``sklearn.metrics.roc_curve(ood_indicator, -conf)`` with its default
    ``drop_intermediate=True`` and returns ``fpr_list[np.argmax(tpr_list >= tpr)]``. With
    our scores (``-conf``) that is: on the ROC curve of :func:`roc_curve` (OOD positive,
    predict OOD iff ``score >= t``, collinear points dropped), take the first point whose
    TPR is ``>= tpr`` and return its FPR, the fraction of ID samples rejected. Without ties
    this is the fraction of ID scores ``>= t`` for the largest ``t`` that catches ``tpr`` of
    the OOD samples; with ties, dropping collinear points can move it to a later point,
    which we reproduce on purpose so that numbers match OpenOOD.
    """
    rate = _rate(tpr, "tpr", allow_zero=False)
    c = _counts(_scores(id_scores, "id_scores"), _scores(ood_scores, "ood_scores"))
    if positive == "id":
        return _fpr_id_positive(c, rate)
    if positive == "ood":
        return _fpr_ood_positive(c, rate)
    raise ValueError(f"positive must be 'id' or 'ood', got {positive!r}")


def detection_error(id_scores: ArrayLike, ood_scores: ArrayLike) -> float:
    """Minimum equal-prior detection error, min_t 0.5 (1 - TPR(t)) + 0.5 FPR(t).

    TPR/FPR are those of "OOD iff score >= t" (the value is the same with ID as the
    positive class). The minimum runs over every threshold between distinct scores,
    including "accept all" and "reject all" (error 0.5), so the result is at most 0.5.
    This is the exact version of the grid search in Liang et al. (ODIN, ICLR 2018) and
    OpenOOD's ``detection()``.
    """
    c = _counts(_scores(id_scores, "id_scores"), _scores(ood_scores, "ood_scores"))
    return _detection_error(c)


def evaluate(id_scores: ArrayLike, ood_scores: ArrayLike) -> dict[str, float]:
    """All OOD-detection metrics at once (one sort), as fractions in [0, 1].

    Keys: ``auroc``, ``aupr_in``, ``aupr_out``, ``fpr95_id`` (:func:`fpr_at_tpr` with
    ``positive="id"``), ``fpr95_ood`` (``positive="ood"``, OpenOOD v1.5) and
    ``detection_error``; see the individual functions for the exact definitions.
    """
    c = _counts(_scores(id_scores, "id_scores"), _scores(ood_scores, "ood_scores"))
    id_le, ood_le = _id_le(c)
    return {
        "auroc": _trapezoid_auc(c.id_ge, c.ood_ge, c.n_id, c.n_ood),
        "aupr_in": _average_precision(id_le, ood_le, c.n_id),
        "aupr_out": _average_precision(c.ood_ge, c.id_ge, c.n_ood),
        "fpr95_id": _fpr_id_positive(c, 0.95),
        "fpr95_ood": _fpr_ood_positive(c, 0.95),
        "detection_error": _detection_error(c),
    }
