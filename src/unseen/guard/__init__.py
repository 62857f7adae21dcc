"""From benchmark to production: a calibrated guard with conformal p-values, FDR selection,
persistence without pickle, monitoring and an HTTP service (``unseen.guard.service``)."""

from __future__ import annotations

from unseen.guard.conformal import (
    CalibrationError,
    benjamini_hochberg,
    conformal_threshold,
    p_values,
    threshold_rank,
)
from unseen.guard.core import Guard, GuardInputError, Predictions
from unseen.guard.monitor import Monitor, MonitorEstimate
from unseen.guard.persist import GuardFileError

__all__ = [
    "CalibrationError",
    "Guard",
    "GuardFileError",
    "GuardInputError",
    "Monitor",
    "MonitorEstimate",
    "Predictions",
    "benjamini_hochberg",
    "conformal_threshold",
    "p_values",
    "threshold_rank",
]
