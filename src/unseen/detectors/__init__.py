"""The detector zoo. ``create(name, **hparams)`` builds one; ``names()`` lists them all."""

from unseen.detectors import boundary, distance, logits, network, shaping, subspace, tabular  # noqa: F401
from unseen.detectors.base import Detector, MissingInputError, NotFittedError, Paper
from unseen.detectors.registry import UnknownDetectorError, create, get, names, register

__all__ = [
    "Detector",
    "MissingInputError",
    "NotFittedError",
    "Paper",
    "UnknownDetectorError",
    "create",
    "get",
    "names",
    "register",
]
