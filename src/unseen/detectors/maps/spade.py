"""SPADE: k nearest normal images, then each patch's distance to their patches."""

from __future__ import annotations

from typing import Any, ClassVar

import faiss
import numpy as np
import torch

from unseen.detectors.base import Paper
from unseen.detectors.maps.base import MapDetector, patches_of
from unseen.representation import Representation


class SPADE(MapDetector):
    """Cohen & Hoshen, "Sub-Image Anomaly Detection with Deep Pyramid Correspondences", 2020.
    Image score: mean L2 distance of the pooled feature f(x) to its K nearest training images

        s(x) = (1/K) Σ_{k ≤ K} ‖f(x) − f(x_k)‖₂;

    patch score: distance of each patch to its nearest patch (κ = 1) among all positions of the
    ``gallery`` nearest training images. The paper uses K = 50 for both; here K = ``k`` = 50 for
    the image score and ``gallery`` = 10 images for the patch search (a 5x cheaper search on a
    CPU). The map's image score is the mean-kNN score above, as in the paper.
    """

    name = "spade"
    paper = Paper(
        "Sub-Image Anomaly Detection with Deep Pyramid Correspondences",
        "Cohen, Hoshen",
        "arXiv:2005.02357",
        2020,
        "https://arxiv.org/abs/2005.02357",
    )
    requires = frozenset({"features"})
    grid: ClassVar[dict[str, list[Any]]] = {"k": [10, 50]}

    def __init__(self, k: int = 50, gallery: int = 10) -> None:
        self.k = k
        self.gallery = gallery

    def _fit(self, train: Representation, val: Representation | None) -> None:
        if not (1 <= self.k <= len(train) and 1 <= self.gallery <= len(train)):
            raise ValueError(f"spade needs 1 <= k, gallery <= {len(train)} (training images)")
        self.bank_ = np.ascontiguousarray(train.features, dtype=np.float32)
        self.bank_patches_ = np.asarray(patches_of(train, self.name))

    def _neighbours(self, rep: Representation) -> tuple[np.ndarray, np.ndarray]:
        index = faiss.IndexFlatL2(self.bank_.shape[1])
        index.add(self.bank_)
        queries = np.ascontiguousarray(rep.features, dtype=np.float32)
        d2, idx = index.search(queries, max(self.k, self.gallery))
        return np.sqrt(np.maximum(d2, 0.0)), idx

    def _maps_scores(self, rep: Representation) -> tuple[np.ndarray, np.ndarray]:
        dist, idx = self._neighbours(rep)
        patches = patches_of(rep, self.name)
        maps = np.empty(patches.shape[:3], dtype=np.float32)
        for i in range(len(rep)):
            gallery = torch.from_numpy(
                self.bank_patches_[idx[i, : self.gallery]].reshape(-1, patches.shape[-1]).astype(np.float32)
            )
            query = torch.from_numpy(patches[i].reshape(-1, patches.shape[-1]).astype(np.float32))
            maps[i] = torch.cdist(query, gallery).min(dim=1).values.reshape(patches.shape[1:3]).numpy()
        return maps, dist[:, : self.k].mean(axis=1)
