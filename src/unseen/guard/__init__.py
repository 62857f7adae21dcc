"""From benchmark to production: a calibrated guard with conformal p-values, FDR selection,
persistence without pickle, monitoring and an HTTP service (``unseen.guard.http``).

``core``: calibration and prediction; ``inputs``: what a guard accepts; ``persist``: guard and
detector directories; ``conformal``: thresholds, p-values, BH; ``monitor``: the flag-rate watch;
``splits``: guards built from Representation files, with the splits checked apart.
"""

from __future__ import annotations

from unseen.guard.conformal import (
    CalibrationError,
    benjamini_hochberg,
    conformal_threshold,
    p_values,
    threshold_rank,
)
from unseen.guard.core import Guard, Predictions
from unseen.guard.inputs import GuardInputError
from unseen.guard.monitor import Monitor, MonitorEstimate
from unseen.guard.persist import GuardFileError, load_detector, save_detector

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
    "load_detector",
    "p_values",
    "save_detector",
    "threshold_rank",
]
