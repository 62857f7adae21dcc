"""Watch the flag rate of a deployed guard over a sliding window of recent inputs.

Two questions, answered from the last ``window`` inputs:

* How much of the traffic is OOD? The flag rate r mixes true detections and false alarms:
  E[r] = π·TPR + (1 − π)·α̂, so with a TPR estimate (e.g. the flag rate on known OOD data) the
  OOD fraction is estimated by the method of moments, π̂ = (r − α̂) / (TPR − α̂). The raw value can
  leave [0, 1] by sampling noise; it is reported as ``ood_fraction_raw`` and clipped to [0, 1]
  in ``ood_fraction`` (``ood_fraction_clipped`` says when that happened). Its interval maps the
  flag rate's exact (Clopper–Pearson) interval through the same monotone map, ignoring the
  uncertainty of TPR and α̂. Without a TPR, only the flag rate and its interval are reported.
* Is the flag rate higher than a healthy guard's? An exact one-sided binomial test of
  H0: P(flag) ≤ α (``scipy.stats.binomtest``, alternative "greater") raises ``alarm`` when its
  p-value is below ``level``. The test treats the window as independent draws at the
  calibrated rate; a guard calibrated on few samples has a realised false-alarm rate that
  varies around α by about sqrt(α(1 − α)/n_cal), so keep n_cal large relative to the window.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class MonitorEstimate:
    """A snapshot of the monitor: counts, rates, the OOD-fraction estimate and the alarm."""

    window_size: int
    n: int
    flagged: int
    flag_rate: float | None
    flag_rate_ci: tuple[float, float] | None
    alpha: float
    alpha_hat: float
    tpr: float | None
    ood_fraction: float | None
    ood_fraction_raw: float | None
    ood_fraction_clipped: bool
    ood_fraction_ci: tuple[float, float] | None
    alarm: bool
    alarm_p_value: float | None
    level: float
    confidence: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_rate(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise TypeError(f"monitor {name} must be a number in (0, 1), got {value!r}")
    if not 0.0 < float(value) < 1.0:
        raise ValueError(f"monitor {name} must lie in (0, 1), got {value!r}")


def check_settings(*, window: Any = 1000, level: Any = 0.01, confidence: Any = 0.95) -> None:
    """Raise unless ``window`` is a positive integer and ``level``, ``confidence`` lie in (0, 1).

    The one check of monitor settings: :class:`Monitor` runs it, and a guard runs it before it
    keeps new settings, so that a refused setting never stays behind.
    """
    if isinstance(window, bool) or not isinstance(window, int | np.integer) or window < 1:
        raise ValueError(f"monitor window must be a positive integer, got {window!r}")
    _check_rate("level", level)
    _check_rate("confidence", confidence)


class Monitor:
    """Sliding-window flag statistics with a binomial alarm. Thread-safe.

    Args:
        alpha: the guard's nominal false-alarm level (the null rate of the alarm test).
        alpha_hat: the expected false-alarm rate of the threshold used in π̂; defaults to
            ``alpha``. A conformal guard passes (n − k + 1)/(n + 1), its exact marginal rate
            for continuous scores.
        tpr: estimated P(flag | OOD), e.g. the flag rate on held-out OOD data; None disables π̂.
        window: how many recent inputs to keep.
        level: significance level of the alarm test.
        confidence: coverage of the reported intervals.
    """

    def __init__(
        self,
        alpha: float,
        *,
        alpha_hat: float | None = None,
        tpr: float | None = None,
        window: int = 1000,
        level: float = 0.01,
        confidence: float = 0.95,
    ) -> None:
        check_settings(window=window, level=level, confidence=confidence)
        _check_rate("alpha", alpha)
        self.alpha = float(alpha)
        self.alpha_hat = self.alpha if alpha_hat is None else float(alpha_hat)
        if not 0.0 <= self.alpha_hat < 1.0:
            raise ValueError(f"alpha_hat must lie in [0, 1), got {alpha_hat}")
        if tpr is not None and not self.alpha_hat < float(tpr) <= 1.0:
            raise ValueError(
                f"tpr must lie in (alpha_hat, 1] = ({self.alpha_hat:.4g}, 1] for the OOD-fraction "
                f"estimate, got {tpr}; a detector that flags OOD data no more often than ID data "
                "cannot estimate the OOD fraction"
            )
        self.tpr = None if tpr is None else float(tpr)
        self.window = int(window)
        self.level = float(level)
        self.confidence = float(confidence)
        self._lock = threading.Lock()
        self._ring = np.zeros(self.window, dtype=bool)
        self._pos = 0
        self._filled = 0
        self._flagged = 0
        self.total_seen = 0
        self.total_flagged = 0

    def update(self, flags: np.ndarray) -> None:
        """Record the ``is_ood`` flags of a batch of inputs, in arrival order."""
        flags = np.asarray(flags, dtype=bool).ravel()
        with self._lock:
            self.total_seen += int(flags.size)
            self.total_flagged += int(flags.sum())
            if flags.size >= self.window:
                flags = flags[-self.window :]
                self._ring[:] = flags
                self._pos, self._filled, self._flagged = 0, self.window, int(flags.sum())
                return
            idx = (self._pos + np.arange(flags.size)) % self.window
            # Slots not yet filled hold False, so subtracting the old contents is always right.
            self._flagged += int(flags.sum()) - int(self._ring[idx].sum())
            self._ring[idx] = flags
            self._pos = int((self._pos + flags.size) % self.window)
            self._filled = min(self.window, self._filled + int(flags.size))

    def reset(self) -> None:
        """Forget the window (the lifetime totals are kept)."""
        with self._lock:
            self._ring[:] = False
            self._pos = self._filled = self._flagged = 0

    def counts(self) -> tuple[int, int]:
        """(inputs, flagged) in the current window."""
        with self._lock:
            return self._filled, self._flagged

    def estimate(self) -> MonitorEstimate:
        """The current window's statistics."""
        n, k = self.counts()
        empty = MonitorEstimate(
            self.window, 0, 0, None, None, self.alpha, self.alpha_hat, self.tpr, None, None,
            False, None, False, None, self.level, self.confidence,
        )
        if n == 0:
            return empty
        rate = k / n
        test = stats.binomtest(k, n, self.alpha, alternative="greater")
        rate_ci = clopper_pearson(k, n, self.confidence)
        raw = clipped_est = None
        pi_ci = None
        clipped = False
        if self.tpr is not None:
            raw = (rate - self.alpha_hat) / (self.tpr - self.alpha_hat)
            clipped_est = float(np.clip(raw, 0.0, 1.0))
            clipped = clipped_est != raw
            lo, hi = ((np.asarray(rate_ci) - self.alpha_hat) / (self.tpr - self.alpha_hat))
            pi_ci = (float(np.clip(lo, 0.0, 1.0)), float(np.clip(hi, 0.0, 1.0)))
        return MonitorEstimate(
            window_size=self.window,
            n=n,
            flagged=k,
            flag_rate=rate,
            flag_rate_ci=rate_ci,
            alpha=self.alpha,
            alpha_hat=self.alpha_hat,
            tpr=self.tpr,
            ood_fraction=clipped_est,
            ood_fraction_raw=None if raw is None else float(raw),
            ood_fraction_clipped=clipped,
            ood_fraction_ci=pi_ci,
            alarm=bool(test.pvalue < self.level),
            alarm_p_value=float(test.pvalue),
            level=self.level,
            confidence=self.confidence,
        )


def clopper_pearson(k: int, n: int, confidence: float) -> tuple[float, float]:
    """Exact (Clopper–Pearson) interval for a binomial proportion k/n, via beta quantiles."""
    tail = (1.0 - confidence) / 2.0
    low = 0.0 if k == 0 else float(stats.beta.ppf(tail, k, n - k + 1))
    high = 1.0 if k == n else float(stats.beta.ppf(1.0 - tail, k + 1, n - k))
    return low, high
