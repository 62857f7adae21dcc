"""Split-conformal thresholds, conformal p-values and Benjamini–Hochberg selection.

Bates, Candès, Lei, Romano, Sesia, "Testing for outliers with conformal p-values", Ann.
Statist. 51(1), 2023. With calibration scores s_1..s_n of in-distribution data (higher = more
OOD) and a test score s, the marginal conformal p-value is

    p(s) = (1 + #{i : s_i >= s}) / (n + 1),

which is super-uniform, P(p ≤ t) ≤ t, whenever the test point is exchangeable with the
calibration points. Flagging ``p ≤ α`` is the same as flagging ``s > s_(k)`` with
k = ⌈(n + 1)(1 − α)⌉ (the k-th smallest calibration score), so the in-distribution false-alarm
rate is at most α in finite samples, and at least α − 1/(n + 1) for continuous scores.
"""

from __future__ import annotations

import numpy as np


class CalibrationError(ValueError):
    """The calibration data cannot support the requested error level."""


def _check_alpha(alpha: float, what: str = "alpha") -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, int | float | np.floating):
        raise TypeError(f"{what} must be a number in (0, 1), got {alpha!r}")
    alpha = float(alpha)
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"{what} must lie in (0, 1), got {alpha}")
    return alpha


def max_exceedances(n: int, alpha: float) -> int:
    """The largest m in {-1, 0, …, n} with (1 + m) / (n + 1) ≤ α.

    A test score is flagged exactly when at most m calibration scores are ≥ it. The comparison
    is evaluated with the same floating-point expression as :func:`p_values`, which makes
    ``p ≤ α`` and ``score > threshold`` agree bit for bit (see :func:`threshold_rank`).
    """
    m = np.arange(n + 1)
    ok = (1.0 + m) / (n + 1.0) <= alpha
    return int(m[ok].max()) if ok.any() else -1


def threshold_rank(n: int, alpha: float) -> int:
    """k = ⌈(n + 1)(1 − α)⌉: the rank (1-based) of the calibration score used as threshold.

    Raises :class:`CalibrationError` when k > n, i.e. when n < 1/α − 1: then even the largest
    calibration score cannot keep the false-alarm rate below α.

    Why the flags agree with the p-values: s > s_(k) holds iff at most n − k calibration scores
    are ≥ s (the n − k + 1 scores s_(k) ≤ … ≤ s_(n) are all ≥ s otherwise), and p(s) ≤ α holds
    iff at most m* = max{m : (1 + m)/(n + 1) ≤ α} are; k = n − m* = ⌈(n + 1)(1 − α)⌉.
    """
    alpha = _check_alpha(alpha)
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise CalibrationError(f"need at least one calibration score, got n = {n!r}")
    m = max_exceedances(int(n), alpha)
    if m < 0:
        need = int(np.ceil(1.0 / alpha - 1.0 - 1e-9))
        raise CalibrationError(
            f"{n} calibration samples are too few for alpha = {alpha}: the conformal threshold "
            f"is the ⌈(n + 1)(1 − alpha)⌉-th smallest score, which needs n >= {need}; use more "
            "in-distribution calibration data or a larger alpha"
        )
    return int(n) - m


def conformal_threshold(calibration_scores: np.ndarray, alpha: float) -> np.ndarray:
    """The k-th smallest calibration score along the last axis, k = :func:`threshold_rank`.

    Accepts (n,) or (..., n) arrays so that simulations can calibrate many draws at once.
    """
    s = np.asarray(calibration_scores, dtype=np.float64)
    if s.ndim == 0 or not np.isfinite(s).all():
        raise ValueError("calibration scores must be a finite array of shape (..., n)")
    k = threshold_rank(s.shape[-1], alpha)
    return np.partition(s, k - 1, axis=-1)[..., k - 1]


def p_values(sorted_calibration: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Marginal conformal p-values (1 + #{i : s_i ≥ s}) / (n + 1) of ``scores``.

    ``sorted_calibration`` must be sorted ascending (a binary search counts the exceedances;
    ties count as exceedances, which keeps the p-value valid for discrete scores).
    """
    cal = np.asarray(sorted_calibration, dtype=np.float64)
    n = cal.shape[0]
    at_least = n - np.searchsorted(cal, np.asarray(scores, dtype=np.float64), side="left")
    return (1.0 + at_least) / (n + 1.0)


def benjamini_hochberg(p: np.ndarray, fdr: float) -> np.ndarray:
    """Benjamini–Hochberg step-up selection at level ``fdr``: a boolean mask of rejections.

    Rejects the hypotheses with the k* smallest p-values, k* = max{k : p_(k) ≤ k·fdr / m}.
    Conformal p-values sharing one calibration set are PRDS, so BH controls the FDR at
    ``fdr`` (the fraction of in-distribution inputs among those flagged; Bates et al. 2023,
    Theorem 3, where the bound is ``fdr`` times the fraction of in-distribution inputs).
    """
    fdr = _check_alpha(fdr, "fdr")
    p = np.asarray(p, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError(f"p-values must be a 1-D array, got shape {p.shape}")
    m = p.shape[0]
    mask = np.zeros(m, dtype=bool)
    if m == 0:
        return mask
    order = np.argsort(p, kind="stable")
    below = p[order] <= fdr * np.arange(1, m + 1) / m
    if below.any():
        k = int(np.nonzero(below)[0].max()) + 1
        mask[order[:k]] = True
    return mask
