"""A guard built from saved Representation files, with its splits checked apart.

The conformal guarantee needs calibration data unused for fitting: :func:`check_disjoint`
refuses a calibration split that is the same file as, or shares rows with, the training or
validation split, and :func:`guard_from_files` fits and calibrates a guard from files after
that check.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from unseen.detectors.base import Detector
from unseen.guard.core import Guard
from unseen.representation import Representation


class SplitOverlapError(ValueError):
    """Two splits that must be disjoint are the same file or share rows."""


def _rows(rep: Representation) -> np.ndarray | None:
    for arr in (rep.features, rep.logits):
        if arr is not None:
            return np.ascontiguousarray(arr).reshape(len(rep), -1)
    return None


def row_digests(rep: Representation) -> set[bytes]:
    """A 16-byte digest of each row (features, else logits): two splits share a row iff a digest."""
    rows = _rows(rep)
    if rows is None:
        return set()
    return {hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in rows}


def same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Whether two paths name one file (links and relative paths included)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return Path(a).resolve() == Path(b).resolve()


def check_disjoint(calib: Representation, **others: Representation | None) -> None:
    """Raise :class:`SplitOverlapError` when ``calib`` shares a row with any of ``others``.

    ``others`` are named splits (``train=..., val=...``); None entries are skipped. Rows are
    compared exactly (features, else logits), so a split that is a copy of another is caught
    as surely as an overlap of a few rows.
    """
    digests = row_digests(calib)
    for name, rep in others.items():
        if rep is None:
            continue
        shared = len(digests & row_digests(rep))
        if shared:
            raise SplitOverlapError(
                f"{shared} of the {len(calib)} calibration rows also appear in the {name} data: "
                "calibration data must be held out from fitting (split the data so they are "
                "disjoint)"
            )


def guard_from_files(
    detector: Detector,
    train: str | os.PathLike[str],
    calib: str | os.PathLike[str],
    alpha: float,
    *,
    val: str | os.PathLike[str] | None = None,
    ood: str | os.PathLike[str] | None = None,
) -> Guard:
    """A guard fitted on the Representation file ``train`` and calibrated on ``calib``.

    ``val`` (ID validation data for detectors that need it) and ``train`` must not be the file
    ``calib`` nor share rows with it; ``ood`` estimates the TPR the monitor uses.
    """
    for name, path in (("train", train), ("val", val)):
        if path is not None and same_file(path, calib):
            raise SplitOverlapError(
                f"the calibration file {calib} is also the {name} file: calibrate on held-out "
                "in-distribution data"
            )
    train_rep = Representation.load(train)
    val_rep = None if val is None else Representation.load(val)
    calib_rep = Representation.load(calib)
    check_disjoint(calib_rep, train=train_rep, val=val_rep)
    guard = Guard(detector).fit(train_rep, val_rep)
    guard.calibrate(calib_rep, alpha)
    if ood is not None:
        guard.estimate_tpr(Representation.load(ood))
    return guard
