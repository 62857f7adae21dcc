"""An inspection guard: backbone + PatchCore + a conformal threshold from good parts, saved without pickle.

``InspectionGuard.fit(patchcore, images)`` takes a PatchCore fitted on patch features of the same
backbone and calibrates on defect-free images (guard score = max of the smoothed anomaly map).
``inspect(image)`` returns the score, the conformal p-value, the decision (p <= alpha, i.e. score
above the threshold), the anomaly map and the binary defect mask at the image's original size.
``save(dir)`` writes ``arrays.safetensors`` (memory bank, sorted calibration scores) and
``guard.json`` (backbone, layers, resolution, PatchCore parameters, alpha, threshold), each
atomically; ``load`` rebuilds the backbone from its installed weights.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from safetensors.numpy import load_file, save_file

from unseen import models
from unseen._io import atomic_path, write_text
from unseen.data.inspection import SquashResize
from unseen.data.transforms import Compose, Normalize, ToRGB, ToTensor
from unseen.detectors.maps import PatchCore, anomaly_maps, resize_map
from unseen.extraction.patches import extract_patches
from unseen.guard.conformal import conformal_threshold, p_values

FORMAT = "unseen.inspection-guard/1"


@dataclass
class Inspection:
    score: float
    p_value: float
    defective: bool
    anomaly_map: np.ndarray  # (H, W) float32, original image size
    mask: np.ndarray  # (H, W) bool: anomaly_map > threshold


class InspectionGuard:
    """PatchCore on a named backbone with a split-conformal threshold at level ``alpha``."""

    def __init__(
        self, backbone: str, layers: tuple[str, ...], resolution: int, alpha: float = 0.05
    ) -> None:
        self.backbone = backbone
        self.layers = tuple(layers)
        self.resolution = resolution
        self.alpha = alpha
        self._model: Any = None

    def transform(self) -> Compose:
        arch = models.info(self.backbone)
        assert arch.mean is not None and arch.std is not None
        return Compose([ToRGB(), SquashResize(self.resolution), ToTensor(), Normalize(arch.mean, arch.std)])

    def model(self) -> Any:
        if self._model is None:
            self._model = models.pretrained(self.backbone, "")
        return self._model

    def fit(self, detector: PatchCore, calibration: Sequence[Image.Image]) -> InspectionGuard:
        """Take a fitted PatchCore and calibrate on defect-free images ``calibration``."""
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
        rep = extract_patches(self.model(), x, self.layers, batch_size=1, progress=False)
        patch_maps, _ = self.detector_.maps_and_scores(rep)
        pixel = anomaly_maps(patch_maps, (self.resolution, self.resolution))[0]
        return float(pixel.max()), resize_map(pixel, (image.height, image.width))

    def inspect(self, image: Image.Image) -> Inspection:
        score, full = self.score_map(image)
        p = float(p_values(self.calibration_, np.array([score]))[0])
        return Inspection(score, p, score > self.threshold_, full, full > self.threshold_)

    def save(self, folder: str | os.PathLike[str]) -> Path:
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        with atomic_path(out / "arrays.safetensors") as tmp:
            save_file({"bank": self.detector_.bank_, "calibration": self.calibration_}, str(tmp))
        manifest = {
            "format": FORMAT,
            "backbone": self.backbone,
            "layers": list(self.layers),
            "resolution": self.resolution,
            "alpha": self.alpha,
            "threshold": self.threshold_,
            "patchcore": self.detector_.get_params(),
            "grid": self.detector_.grid_,
        }
        write_text(out / "guard.json", json.dumps(manifest, indent=2))
        return out

    @classmethod
    def load(cls, folder: str | os.PathLike[str]) -> InspectionGuard:
        base = Path(folder)
        manifest = json.loads((base / "guard.json").read_text(encoding="utf-8"))
        if manifest.get("format") != FORMAT:
            raise ValueError(f"{base} is not an inspection guard (format {manifest.get('format')!r})")
        arrays = load_file(str(base / "arrays.safetensors"))
        guard = cls(
            manifest["backbone"], tuple(manifest["layers"]), manifest["resolution"], manifest["alpha"]
        )
        det = PatchCore(**manifest["patchcore"])
        bank = arrays["bank"]
        det.bank_, det.grid_, det.n_patch_features_ = bank, list(manifest["grid"]), int(bank.shape[1])
        det.n_features_in_, det.n_classes_in_, det.fitted_ = int(bank.shape[1]), None, True
        guard.detector_ = det
        guard.calibrate(arrays["calibration"])
        if abs(guard.threshold_ - manifest["threshold"]) > 1e-12 * max(1.0, abs(manifest["threshold"])):
            raise ValueError(f"{base}: the saved threshold does not match its calibration scores")
        return guard
