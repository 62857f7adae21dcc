"""Name → detector class, loaded on first use.

:data:`MODULES` lists every built-in detector with the module that defines it, so that
``names()`` needs no import and ``get``/``create`` import only the family they need (the
torch-backed ``network`` family and the faiss-backed neighbour searches load only when asked
for). Modules register their classes with :func:`register`; a test checks the table against
the classes the modules register.
"""

from __future__ import annotations

import difflib
import importlib
from typing import Any, TypeVar

from unseen.detectors.base import Detector

_PACKAGE = "unseen.detectors"

#: detector name -> module (relative to unseen.detectors) that registers it
MODULES: dict[str, str] = {
    **dict.fromkeys(("msp", "mls", "energy", "tempscale", "gen", "klm", "entropy"), "logits"),
    **dict.fromkeys(
        ("mahalanobis", "rmds", "mahalanobis_pp", "knn", "she", "nnguide"), "distance"
    ),
    **dict.fromkeys(("react", "dice", "ash", "scale", "vra"), "shaping"),
    **dict.fromkeys(("vim", "residual"), "subspace"),
    **dict.fromkeys(("fdbd", "nci", "gradnorm"), "boundary"),
    "relation": "relation",
    "openmax": "openset",
    "weiper": "weiper",
    "odin": "network.odin",
    "rankfeat": "network.rankfeat",
    "gram": "network.gram",
    "adascale_a": "network.adascale",
    "adascale_l": "network.adascale",
    "nac": "network.nac",
    "iforest": "tabular.forest",
    **dict.fromkeys(("lof", "kthnn", "kde"), "tabular.neighbours"),
    **dict.fromkeys(("ecod", "copod", "hbos"), "tabular.marginal"),
    **dict.fromkeys(("ocsvm", "pca"), "tabular.boundary"),
}

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
    """Names of all detectors (built-in and registered), sorted; imports nothing."""
    return sorted(set(MODULES) | set(_REGISTRY))


def get(name: str) -> type[Detector]:
    """The class registered as ``name``, importing its module on first use."""
    if name not in _REGISTRY and name in MODULES:
        importlib.import_module(f"{_PACKAGE}.{MODULES[name]}")
    try:
        return _REGISTRY[name]
    except KeyError:
        if name in MODULES:
            raise RuntimeError(
                f"{_PACKAGE}.{MODULES[name]} did not register a detector named {name!r}"
            ) from None
        close = difflib.get_close_matches(name, names(), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UnknownDetectorError(
            f"unknown detector {name!r}{hint} (see `unseen list detectors`)"
        ) from None


def load_all() -> dict[str, type[Detector]]:
    """Every detector class by name (imports every family)."""
    return {name: get(name) for name in names()}


def create(name: str, **hparams: Any) -> Detector:
    """An unfitted detector ``name`` with hyperparameters ``hparams`` (defaults otherwise)."""
    return get(name)(**hparams)
