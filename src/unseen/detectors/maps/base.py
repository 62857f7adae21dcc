"""What every anomaly-map detector shares: the input check, chunked maps, map post-processing.

A map detector scores each patch of ``rep.layers["patches"]`` (N, h, w, D), giving an
(N, h, w) patch map; its image score defaults to the map's maximum. :func:`anomaly_maps` turns
patch maps into pixel maps as PatchCore does (Roth et al. 2022, sec. 3.3): bilinear upsampling to
the network input, then Gaussian smoothing with sigma = 4 pixels; :func:`resize_map` brings a
map to an image's original size for the pixel metrics.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter

from unseen.detectors.base import Detector, MissingInputError, NotFittedError
from unseen.representation import PATCHES, Representation

SIGMA = 4.0


def patches_of(rep: Representation, who: str) -> np.ndarray:
    """The (N, h, w, D) patch features of ``rep`` or a clear error."""
    patches = rep.layers.get(PATCHES)
    if patches is None or patches.ndim != 4:
        raise MissingInputError(
            f"{who} needs patch features rep.layers['patches'] (N, h, w, D): extract them with "
            "unseen.extraction.patches.extract_patches"
        )
    return patches


def flat_patches(rep: Representation, who: str) -> np.ndarray:
    """All patches of ``rep`` as one (N * h * w, D) float32 matrix."""
    patches = patches_of(rep, who)
    return np.ascontiguousarray(patches.reshape(-1, patches.shape[-1]), dtype=np.float32)


class MapDetector(Detector):
    """Base of the patch-map detectors: ``maps(rep)`` (N, h, w) and ``score(rep)`` (N,).

    Subclasses implement ``_maps``; those without a map (image-level Gaussian) set
    ``has_maps = False`` and implement ``_score``. ``chunk_size`` counts images here.
    """

    has_maps: ClassVar[bool] = True
    chunk_size: ClassVar[int] = 32

    def fit(self, train: Representation, val: Representation | None = None) -> Detector:
        if self.has_maps:
            patches = patches_of(train, self.name)
            self.grid_ = [int(patches.shape[1]), int(patches.shape[2])]
            self.n_patch_features_ = int(patches.shape[3])
        return super().fit(train, val)

    def maps(self, rep: Representation) -> np.ndarray:
        """(N, h, w) float64 patch anomaly scores; higher = more anomalous."""
        return self.maps_and_scores(rep)[0]

    def maps_and_scores(self, rep: Representation) -> tuple[np.ndarray, np.ndarray]:
        """Patch maps (N, h, w) and image scores (N,), from one pass over ``rep``'s patches."""
        if not getattr(self, "fitted_", False):
            raise NotFittedError(f"{self.name} is not fitted: call fit(train) first")
        if not self.has_maps:
            raise TypeError(f"{self.name} scores whole images only: it has no anomaly map")
        patches = patches_of(rep, self.name)
        if list(patches.shape[1:3]) != self.grid_ or patches.shape[3] != self.n_patch_features_:
            raise ValueError(
                f"{self.name} was fitted on {self.grid_} grids of {self.n_patch_features_}-d patches, "
                f"got {list(patches.shape[1:])}: extract with the same backbone, layers and resolution"
            )
        parts = [
            self._maps_scores(rep.subset(slice(i, i + self.chunk_size)))
            for i in range(0, len(rep), self.chunk_size)
        ]
        maps = np.concatenate([m for m, _ in parts]).astype(np.float64)
        return maps, np.concatenate([s for _, s in parts]).astype(np.float64)

    def _maps(self, rep: Representation) -> np.ndarray:
        raise NotImplementedError

    def _maps_scores(self, rep: Representation) -> tuple[np.ndarray, np.ndarray]:
        maps = self._maps(rep)
        return maps, maps.reshape(len(rep), -1).max(axis=1)

    def _score(self, rep: Representation) -> np.ndarray:
        return self._maps_scores(rep)[1]


def anomaly_maps(patch_maps: np.ndarray, input_size: tuple[int, int], sigma: float = SIGMA) -> np.ndarray:
    """(N, H, W) float32 pixel maps at the network input size (H, W): bilinear upsampling of the
    (N, h, w) patch maps, then a Gaussian blur of ``sigma`` pixels (truncated at 4 sigma)."""
    up = F.interpolate(
        torch.from_numpy(np.asarray(patch_maps, dtype=np.float32))[:, None],
        size=input_size,
        mode="bilinear",
        align_corners=False,
    )[:, 0].numpy()
    if sigma > 0:
        up = np.stack([gaussian_filter(m, sigma, mode="nearest", truncate=4.0) for m in up])
    return up


def resize_map(pixel_map: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """One (H, W) map resized (bilinear) to ``size`` = (height, width) of the original image."""
    t = torch.from_numpy(np.ascontiguousarray(pixel_map, dtype=np.float32))[None, None]
    return F.interpolate(t, size=size, mode="bilinear", align_corners=False)[0, 0].numpy()
