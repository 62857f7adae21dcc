"""Name → detector class. Modules register their detectors with :func:`register`."""

from __future__ import annotations

import difflib
from typing import Any, TypeVar

from unseen.detectors.base import Detector

_REGISTRY: dict[str, type[Detector]] = {}
D = TypeVar("D", bound=type[Detector])


class UnknownDetectorError(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


def register(cls: D) -> D:
    """Class decorator: make ``cls`` available as ``create(cls.name)``."""
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"two detectors are registered as {cls.name!r}")
    _REGISTRY[cls.name] = cls
    return cls


def names() -> list[str]:
    """Names of all registered detectors, sorted."""
    return sorted(_REGISTRY)


def get(name: str) -> type[Detector]:
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, _REGISTRY, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UnknownDetectorError(
            f"unknown detector {name!r}{hint} (see `unseen list detectors`)"
        ) from None


def create(name: str, **hparams: Any) -> Detector:
    """An unfitted detector ``name`` with hyperparameters ``hparams`` (defaults otherwise)."""
    return get(name)(**hparams)
