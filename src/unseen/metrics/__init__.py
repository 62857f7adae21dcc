"""Metrics, one convention throughout: higher score = more likely OOD / unknown / anomalous.

``scores``: AUROC, AUPR, both FPR@95 conventions, detection error (OOD detection).
``openset``: closed-set accuracy, CCR at FPR, OSCR (open-set recognition).
Depends on numpy only.
"""

from unseen.metrics.openset import ccr_at_fpr, correct_mask, id_accuracy, oscr
from unseen.metrics.scores import (
    aupr_in,
    aupr_out,
    auroc,
    detection_error,
    evaluate,
    fpr_at_tpr,
    roc_curve,
)

__all__ = [
    "aupr_in",
    "aupr_out",
    "auroc",
    "ccr_at_fpr",
    "correct_mask",
    "detection_error",
    "evaluate",
    "fpr_at_tpr",
    "id_accuracy",
    "oscr",
    "roc_curve",
]
