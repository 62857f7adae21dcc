"""An inspection guard: backbone + an anomaly-map detector + a conformal threshold from good parts.

``InspectionGuard.fit(detector, images)`` takes a map detector (PatchCore by default in the CLI;
PaDiM, SPADE and DFM work the same) fitted on patch features of the same backbone, and
calibrates on defect-free images (guard score = max of the smoothed anomaly map).
``inspect(image)`` returns the score, the conformal p-value, the decision (p <= alpha, i.e. score
above the threshold), the anomaly map and the binary defect mask (map > the same threshold) at the
image's original size.

``save(dir)`` writes a directory of format ``unseen.inspection-guard/1`` through the guard
directory writer of :mod:`unseen.guard.persist`: ``arrays.safetensors`` (the detector's fitted
arrays, the sorted calibration scores), ``guard.json`` (backbone, layers, resolution, detector
name, parameters and non-array state, alpha, threshold) and ``MANIFEST.json`` (checksums; its
``format`` is how ``unseen serve`` recognises the kind of guard). Nothing is pickled; ``load``
verifies the checksums, checks every value, rebuilds the backbone from its installed weights and
inspects one synthetic image before it returns.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
from PIL import Image

from unseen import models
from unseen.data.inspection import SquashResize
from unseen.data.transforms import Compose, Normalize, ToRGB, ToTensor
from unseen.detectors import maps
from unseen.detectors.maps import MapDetector, anomaly_maps, resize_map
from unseen.extraction.patches import extract_patches
from unseen.guard import persist
from unseen.guard.conformal import conformal_threshold, p_values
from unseen.models.efficientnet import VARIANTS

FORMAT = persist.INSPECTION_FORMAT
#: network input sides a saved guard may declare (the backbones' strides need at least 32)
RESOLUTIONS = range(32, 2049)


@dataclass
class Inspection:
    score: float
    p_value: float
    defective: bool
    anomaly_map: np.ndarray  # (H, W) float32, original image size
    mask: np.ndarray  # (H, W) bool: anomaly_map > threshold


class InspectionGuard:
    """A map detector on a named backbone with a split-conformal threshold at level ``alpha``."""

    def __init__(
        self, backbone: str, layers: tuple[str, ...], resolution: int, alpha: float = 0.05
    ) -> None:
        self.backbone = backbone
        self.layers = tuple(layers)
        self.resolution = resolution
        self.alpha = alpha
        self._model: Any = None
        # The patch hooks sit on the shared backbone's modules, so concurrent forwards (the HTTP
        # worker pool) would capture each other's features: one backbone pass at a time.
        self._model_lock = threading.Lock()

    def transform(self) -> Compose:
        arch = models.info(self.backbone)
        assert arch.mean is not None and arch.std is not None
        return Compose([ToRGB(), SquashResize(self.resolution), ToTensor(), Normalize(arch.mean, arch.std)])

    def model(self) -> Any:
        if self._model is None:
            self._model = models.pretrained(self.backbone, "")
        return self._model

    def fit(self, detector: MapDetector, calibration: Sequence[Image.Image]) -> InspectionGuard:
        """Take a fitted map detector and calibrate on defect-free images ``calibration``."""
        if not detector.has_maps:
            raise TypeError(f"{detector.name} scores whole images only; an inspection guard needs "
                            f"a detector with anomaly maps ({', '.join(map_detector_names())})")
        self.detector_ = detector
        return self.calibrate([self.score_map(img)[0] for img in calibration])

    def calibrate(self, scores: Sequence[float] | np.ndarray) -> InspectionGuard:
        """Set the threshold from the guard scores of defect-free calibration images."""
        self.calibration_ = np.sort(np.asarray(scores, dtype=np.float64))
        self.threshold_ = float(conformal_threshold(self.calibration_, self.alpha))
        return self

    def score_map(self, image: Image.Image) -> tuple[float, np.ndarray]:
        """Guard score (max of the smoothed map) and the map at the image's original size."""
        if not isinstance(image, Image.Image):
            raise TypeError(f"expected a PIL image, got {type(image).__name__}")
        x = self.transform()(image)[None]
        with self._model_lock:
            rep = extract_patches(self.model(), x, self.layers, batch_size=1, progress=False)
        patch_maps, _ = self.detector_.maps_and_scores(rep)
        pixel = anomaly_maps(patch_maps, (self.resolution, self.resolution))[0]
        return float(pixel.max()), resize_map(pixel, (image.height, image.width))

    def inspect(self, image: Image.Image) -> Inspection:
        score, full = self.score_map(image)
        p = float(p_values(self.calibration_, np.array([score]))[0])
        return Inspection(score, p, score > self.threshold_, full, full > self.threshold_)

    def save(self, folder: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write the guard directory atomically; it is loaded back before it is renamed into place."""
        det_cfg, arrays = persist.encode_state(self.detector_.fitted_state(), "detector.")
        arrays["calibration"] = self.calibration_
        config = {
            "format": FORMAT,
            "backbone": self.backbone,
            "layers": list(self.layers),
            "resolution": self.resolution,
            "alpha": self.alpha,
            "threshold": self.threshold_,
            "detector": {"name": self.detector_.name, "params": self.detector_.get_params(),
                         "state": det_cfg},
        }
        return persist.write_dir(Path(folder), config, arrays, None, overwrite, verify=_verify)

    @classmethod
    def load(cls, folder: str | os.PathLike[str]) -> InspectionGuard:
        """Load and check a directory written by :meth:`save` (``GuardFileError`` naming what is wrong)."""
        base = Path(folder)
        config, arrays, _ = persist.read_dir(base, FORMAT)
        try:
            guard = _from_config(config, arrays)
        except (KeyError, TypeError, ValueError) as exc:  # GuardFileError is a ValueError
            raise persist.GuardFileError(f"{base} is not a usable inspection guard: {exc}") from None
        try:  # the stored state must fit the backbone's patches: inspect one grey image
            guard.inspect(Image.new("RGB", (guard.resolution, guard.resolution), (128, 128, 128)))
        except Exception as exc:  # any failure means the stored state is unusable
            raise persist.GuardFileError(
                f"{base}: the stored detector cannot inspect an image with backbone "
                f"{guard.backbone} ({type(exc).__name__}: {exc})"
            ) from None
        return guard


def map_detector_names() -> list[str]:
    """The registered map detectors that produce anomaly maps (those an inspection guard takes)."""
    return [n for n in maps.names() if maps.create(n).has_maps]


def _verify(path: Path) -> None:
    InspectionGuard.load(path)


def _check_config(config: dict[str, Any]) -> None:
    if config.get("backbone") not in VARIANTS:
        raise ValueError(f"backbone must be one of {', '.join(VARIANTS)}, got {config.get('backbone')!r}")
    layers = config.get("layers")
    if not isinstance(layers, list) or not layers or not all(isinstance(x, str) and x for x in layers):
        raise ValueError(f"layers must be a non-empty list of layer names, got {layers!r}")
    res = config.get("resolution")
    if isinstance(res, bool) or not isinstance(res, int) or res not in RESOLUTIONS:
        raise ValueError(f"resolution must be an integer in [32, 2048], got {res!r}")
    if not isinstance(config.get("threshold"), int | float):
        raise ValueError(f"threshold must be a number, got {config.get('threshold')!r}")
    entry = config.get("detector")
    if not isinstance(entry, dict) or entry.get("name") not in map_detector_names():
        raise ValueError(f"the detector entry must name one of {', '.join(map_detector_names())}")
    if not isinstance(entry.get("params"), dict) or not isinstance(entry.get("state"), dict):
        raise ValueError("the detector entry must hold params and state objects")


def _from_config(config: dict[str, Any], arrays: dict[str, np.ndarray]) -> InspectionGuard:
    _check_config(config)
    entry = config["detector"]
    state = persist.decode_state(entry["state"], arrays)
    if state.get("fitted_") is not True:
        raise ValueError("the detector state is not that of a fitted detector")
    for key, value in state.items():
        if isinstance(value, np.ndarray) and value.dtype.kind == "f" and not np.isfinite(value).all():
            raise ValueError(f"the detector's fitted array {key!r} contains NaN or infinity")
    detector = type(maps.create(entry["name"])).from_state(entry["params"], state)
    # alpha is checked by calibrate below
    guard = InspectionGuard(config["backbone"], tuple(config["layers"]), config["resolution"],
                            config["alpha"])
    guard.detector_ = cast(MapDetector, detector)
    calibration = arrays.get("calibration")
    if calibration is None or calibration.ndim != 1:
        raise ValueError("arrays.safetensors lacks the 1-d array 'calibration'")
    guard.calibrate(calibration)
    if not np.array_equal(guard.calibration_, calibration):
        raise ValueError("the calibration scores are not sorted: the file was not written by save")
    saved = float(config["threshold"])
    if abs(guard.threshold_ - saved) > 1e-12 * max(1.0, abs(saved)):
        raise ValueError("the saved threshold does not match its calibration scores")
    return guard
