"""The detector zoo. ``create(name, **hparams)`` builds one; ``names()`` lists them all.

Families load on first use (see :mod:`unseen.detectors.registry`): importing this package
imports neither torch nor faiss.
"""

from unseen.detectors.base import Detector, MissingInputError, NotApplicableError, NotFittedError, Paper
from unseen.detectors.registry import UnknownDetectorError, create, get, names, register

__all__ = [
    "Detector",
    "MissingInputError",
    "NotApplicableError",
    "NotFittedError",
    "Paper",
    "UnknownDetectorError",
    "create",
    "get",
    "names",
    "register",
]
