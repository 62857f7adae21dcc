"""Anomaly-map detectors for visual inspection: patch features in, (N, h, w) maps and image
scores out. A registry of their own (``create``, ``names``) keeps them apart from the
image-level OOD detectors, which cannot consume patch maps."""

from __future__ import annotations

from typing import Any

from unseen.detectors.maps.base import MapDetector, anomaly_maps, resize_map
from unseen.detectors.maps.dfm import DFM
from unseen.detectors.maps.gaussian import GaussianAD
from unseen.detectors.maps.padim import PaDiM
from unseen.detectors.maps.patchcore import PatchCore
from unseen.detectors.maps.spade import SPADE

_REGISTRY: dict[str, type[MapDetector]] = {c.name: c for c in (PatchCore, PaDiM, SPADE, DFM, GaussianAD)}


def names() -> list[str]:
    return sorted(_REGISTRY)


def create(name: str, **hparams: Any) -> MapDetector:
    if name not in _REGISTRY:
        raise ValueError(f"unknown map detector {name!r}; choose one of: {', '.join(names())}")
    return _REGISTRY[name](**hparams)


__all__ = ["DFM", "SPADE", "GaussianAD", "MapDetector", "PaDiM", "PatchCore", "anomaly_maps", "create",
           "names", "resize_map"]
