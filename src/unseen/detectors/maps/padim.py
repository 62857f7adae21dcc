"""PaDiM: a Gaussian per patch position over a random subset of the channels."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from unseen.detectors.base import Paper
from unseen.detectors.maps.base import MapDetector, patches_of
from unseen.representation import Representation


class PaDiM(MapDetector):
    """Defard, Setkov, Loesch, Audigier, ICPR 2021. For each position (i, j) of the patch grid,
    a Gaussian N(μ_ij, Σ_ij) of the training patches there, restricted to ``n_channels`` random
    channels (the paper's dimensionality reduction; 100 of WRN's 1792 by default, all when the
    backbone has fewer), Σ_ij regularised by ``eps`` · I (eps = 0.01, the paper's). Patch score:

        s_ij(x) = sqrt((x_ij − μ_ij)ᵀ Σ_ij⁻¹ (x_ij − μ_ij)).

    The paper's embeddings are concatenated stage maps without 3x3 averaging; here they are the
    shared locally averaged patches, so all map detectors see the same features.
    """

    name = "padim"
    paper = Paper(
        "PaDiM: a Patch Distribution Modeling Framework for Anomaly Detection and Localization",
        "Defard, Setkov, Loesch, Audigier",
        "ICPR",
        2021,
        "https://arxiv.org/abs/2011.08785",
    )
    grid: ClassVar[dict[str, list[Any]]] = {"n_channels": [50, 100]}

    def __init__(self, n_channels: int = 100, eps: float = 0.01, seed: int = 0) -> None:
        self.n_channels = n_channels
        self.eps = eps
        self.seed = seed

    def _fit(self, train: Representation, val: Representation | None) -> None:
        x = patches_of(train, self.name)
        dim = x.shape[-1]
        keep = min(self.n_channels, dim)
        self.channels_ = np.sort(np.random.default_rng(self.seed).choice(dim, keep, replace=False))
        sub = x[..., self.channels_].astype(np.float64)  # (N, h, w, d)
        if len(sub) < 2:
            raise ValueError("padim needs at least 2 training images to estimate covariances")
        self.mean_ = sub.mean(axis=0)
        centred = sub - self.mean_
        cov = np.einsum("nhwc,nhwd->hwcd", centred, centred) / (len(sub) - 1)
        cov += self.eps * np.eye(keep)
        self.precision_ = np.linalg.inv(cov).astype(np.float32)

    def _maps(self, rep: Representation) -> np.ndarray:
        diff = patches_of(rep, self.name)[..., self.channels_].astype(np.float32) - self.mean_
        d2 = np.einsum("nhwc,hwcd,nhwd->nhw", diff, self.precision_, diff, optimize=True)
        return np.sqrt(np.maximum(d2, 0.0))
