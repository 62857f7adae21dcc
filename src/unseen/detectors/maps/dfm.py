"""DFM: PCA of normal deep features; the score is the feature-reconstruction error."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from unseen.detectors.base import Paper
from unseen.detectors.maps.base import MapDetector, flat_patches, patches_of
from unseen.representation import Representation


class DFM(MapDetector):
    """Ahuja, Ndiour, Kalyanpur, Tickoo, "Probabilistic Modeling of Deep Features for
    Out-of-Distribution and Adversarial Detection", 2019 (anomalib's DFM). PCA of the training
    patches keeps the leading components W explaining ``variance`` = 97 % of the variance
    (anomalib's default); the patch score is the feature-reconstruction error

        s(x) = ‖(x − μ) − W Wᵀ (x − μ)‖₂²,

    the image score its maximum over patches. PCA is fitted on at most ``max_patches`` = 200,000
    training patches drawn at random (seeded), which bounds memory and time.
    """

    name = "dfm"
    paper = Paper(
        "Probabilistic Modeling of Deep Features for Out-of-Distribution and Adversarial Detection",
        "Ahuja, Ndiour, Kalyanpur, Tickoo",
        "arXiv:1909.11786",
        2019,
        "https://arxiv.org/abs/1909.11786",
    )
    grid: ClassVar[dict[str, list[Any]]] = {"variance": [0.95, 0.97, 0.99]}

    def __init__(self, variance: float = 0.97, max_patches: int = 200_000, seed: int = 0) -> None:
        self.variance = variance
        self.max_patches = max_patches
        self.seed = seed

    def _fit(self, train: Representation, val: Representation | None) -> None:
        if not 0 < self.variance <= 1:
            raise ValueError(f"dfm: variance must lie in (0, 1], got {self.variance}")
        x = flat_patches(train, self.name)
        if len(x) > self.max_patches:
            x = x[np.random.default_rng(self.seed).choice(len(x), self.max_patches, replace=False)]
        x = x.astype(np.float64)
        self.mean_ = x.mean(axis=0)
        _, sing, vt = np.linalg.svd(x - self.mean_, full_matrices=False)
        explained = np.cumsum(sing**2) / np.sum(sing**2)
        keep = int(np.searchsorted(explained, self.variance - 1e-12) + 1)
        self.components_ = vt[:keep].T.copy()  # (D, k)

    def _maps(self, rep: Representation) -> np.ndarray:
        shape = patches_of(rep, self.name).shape[:3]
        centred = flat_patches(rep, self.name).astype(np.float64) - self.mean_
        residual = centred - (centred @ self.components_) @ self.components_.T
        return (residual**2).sum(axis=1).reshape(shape)
