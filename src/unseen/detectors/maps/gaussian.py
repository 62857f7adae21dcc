"""Image-level Gaussian of Rippel et al.: one shrunk Gaussian per backbone stage."""

from __future__ import annotations

import numpy as np
from sklearn.covariance import LedoitWolf

from unseen.detectors.base import Paper
from unseen.detectors.maps.base import MapDetector
from unseen.representation import Representation


class GaussianAD(MapDetector):
    """Rippel, Mertens, Merhof, "Modeling the Distribution of Normal Data in Pre-Trained Deep
    Features for Anomaly Detection", ICPR 2020. For each stage l, a multivariate Gaussian of the
    spatially averaged features f_l with the Ledoit-Wolf shrinkage covariance; the score sums the
    Mahalanobis distances over the stages:

        s(x) = Σ_l sqrt((f_l(x) − μ_l)ᵀ Σ_l⁻¹ (f_l(x) − μ_l)).

    The stages are the column blocks of ``rep.features`` given by ``rep.meta["dims"]`` (the
    patch extractor's layers); the paper uses all nine EfficientNet stages. No anomaly map.
    """

    name = "gaussian_ad"
    paper = Paper(
        "Modeling the Distribution of Normal Data in Pre-Trained Deep Features for Anomaly Detection",
        "Rippel, Mertens, Merhof",
        "ICPR",
        2020,
        "https://arxiv.org/abs/2005.14140",
    )
    requires = frozenset({"features"})
    has_maps = False

    def _fit(self, train: Representation, val: Representation | None) -> None:
        features = np.asarray(train.features)
        dims = [int(d) for d in train.meta.get("dims", [features.shape[1]])]
        if sum(dims) != features.shape[1]:
            raise ValueError(f"gaussian_ad: meta['dims'] {dims} does not add up to {features.shape[1]}")
        self.bounds_ = np.cumsum([0, *dims])
        self.means_: list[np.ndarray] = []
        self.precisions_: list[np.ndarray] = []
        for lo, hi in zip(self.bounds_[:-1], self.bounds_[1:], strict=True):
            block = features[:, lo:hi].astype(np.float64)
            fitted = LedoitWolf().fit(block)
            self.means_.append(fitted.location_)
            self.precisions_.append(fitted.precision_)

    def _score(self, rep: Representation) -> np.ndarray:
        total = np.zeros(len(rep))
        for l, (lo, hi) in enumerate(zip(self.bounds_[:-1], self.bounds_[1:], strict=True)):
            diff = np.asarray(rep.features)[:, lo:hi].astype(np.float64) - self.means_[l]
            total += np.sqrt(np.maximum(np.einsum("nc,cd,nd->n", diff, self.precisions_[l], diff), 0.0))
        return total
