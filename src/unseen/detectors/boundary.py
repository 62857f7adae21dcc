"""Detectors that read the geometry of the classifier head: distances to its decision
boundaries (fDBD), alignment with its class weights (NCI) and its last-layer gradient
(GradNorm).

They read the head (weight W (C, D), bias b (C,)) from the *training* representation in ``fit``
and store it, so scoring needs only the features. Extreme-value models of the logits (OpenMax)
live in :mod:`.openset`, perturbations of the head's weights (WeiPer) in :mod:`.weiper`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from unseen.detectors.base import Detector, NotApplicableError, Paper, softmax
from unseen.detectors.params import Boolean, Number
from unseen.detectors.registry import register
from unseen.representation import Representation


@register
class FDBD(Detector):
    """Fast decision-boundary detector (fDBD):

        fDBD(x) = 1/(C−1) Σ_{j≠c} |(w_c − w_j)·x + b_c − b_j| / ‖w_c − w_j‖₂  /  ‖x − μ‖₂,
        score(x) = −fDBD(x),

    with c = argmax_k (w_k·x + b_k) the predicted class and μ the mean training feature: the
    average distance of x to the decision boundaries of its predicted class, regularised by its
    distance to the training mean. Liu & Qin, ICML 2024.

    Hyperparameter ``distance_as_normalizer`` (default True, the paper's regulariser); False
    divides by ‖x‖₂ instead, the alternative OpenOOD v1.5 adds; grid {True, False} (OpenOOD's
    sweep). The authors' code (and OpenOOD) sums over j instead of averaging, a constant factor
    C − 1 that does not change the ranking; we average as in the paper.
    """

    name = "fdbd"
    paper = Paper(
        "Fast Decision Boundary based Out-of-Distribution Detector",
        "Liu, Qin",
        "ICML",
        2024,
        "https://arxiv.org/abs/2312.11536",
    )
    requires = frozenset({"features"})
    fit_requires = frozenset({"head"})
    grid: ClassVar[dict[str, list[Any]]] = {"distance_as_normalizer": [True, False]}
    score_params = frozenset({"distance_as_normalizer"})
    constraints = {"distance_as_normalizer": Boolean()}

    def __init__(self, distance_as_normalizer: bool = True) -> None:
        self.distance_as_normalizer = distance_as_normalizer

    def _fit(self, train: Representation, val: Representation | None) -> None:
        self._keep_head(train)
        if self.weight_.shape[0] < 2:
            raise NotApplicableError("fdbd needs a classifier head with at least 2 classes")
        w = self.weight_
        sq = (w * w).sum(1)
        gaps = np.sqrt(np.maximum(sq[:, None] - 2.0 * w @ w.T + sq[None, :], 0.0))
        off_diagonal = ~np.eye(len(w), dtype=bool)
        if not (gaps[off_diagonal] > 0).all():
            raise ValueError("fdbd: two classes have identical weight vectors (no boundary)")
        # The diagonal is never used (its logit gap is 0); 1 keeps the division finite.
        self.weight_gaps_ = np.where(off_diagonal, gaps, 1.0)
        self.train_mean_ = np.asarray(train.features, dtype=np.float64).mean(axis=0)

    def _score(self, rep: Representation) -> np.ndarray:
        x = np.asarray(rep.features, dtype=np.float64)
        z = x @ self.weight_.T + self.bias_
        c = z.argmax(axis=1)
        gap = np.abs(z - z[np.arange(len(z)), c][:, None]) / self.weight_gaps_[c]
        mean_distance = gap.sum(axis=1) / (z.shape[1] - 1)
        centre = self.train_mean_ if self.distance_as_normalizer else 0.0
        return -mean_distance / np.linalg.norm(x - centre, axis=1)


@register
class NCI(Detector):
    """Neural-Collapse-inspired detector (NCI):

        NCI(x) = w_c·(x − μ_G) / ‖x − μ_G‖₂ + α ‖x‖₁,     score(x) = −NCI(x),

    with c the predicted class (argmax logit), w_c its weight vector and μ_G the mean training
    feature: the alignment of the centred feature with the predicted class weight ("pScore")
    plus an L1-norm filter that pushes samples near the origin towards OOD. Liu & Qin, CVPR 2025.

    Default α = 1e-4; grid α ∈ {1e-4, 1e-3, 1e-2, 0.1} (OpenOOD v1.5's config). The formula is
    that of the authors' released implementation, which is the OpenOOD postprocessor: the
    proximity is divided by ‖x − μ_G‖ only, not by ‖w_c‖ (a class-independent constant when the
    class weights have equal norms, Neural Collapse NC2).
    """

    name = "nci"
    paper = Paper(
        "Detecting Out-of-Distribution through the Lens of Neural Collapse",
        "Liu, Qin",
        "CVPR",
        2025,
        "https://arxiv.org/abs/2311.01479",
    )
    requires = frozenset({"features"})
    fit_requires = frozenset({"head"})
    grid: ClassVar[dict[str, list[Any]]] = {"alpha": [1e-4, 1e-3, 1e-2, 1e-1]}
    score_params = frozenset({"alpha"})
    constraints = {"alpha": Number(0)}

    def __init__(self, alpha: float = 1e-4) -> None:
        self.alpha = alpha

    def _fit(self, train: Representation, val: Representation | None) -> None:
        self._keep_head(train)
        self.train_mean_ = np.asarray(train.features, dtype=np.float64).mean(axis=0)

    def _score(self, rep: Representation) -> np.ndarray:
        x = np.asarray(rep.features, dtype=np.float64)
        c = (x @ self.weight_.T + self.bias_).argmax(axis=1)
        centred = x - self.train_mean_
        proximity = (self.weight_[c] * centred).sum(axis=1) / np.linalg.norm(centred, axis=1)
        return -(proximity + self.alpha * np.abs(x).sum(axis=1))


@register
class GradNorm(Detector):
    """GradNorm: the L1 norm of the gradient of KL(u ‖ softmax(z)) with respect to the weight
    W of the last linear layer, u the uniform distribution over the C classes:

        ∂KL/∂W = (p − u) xᵀ,   GradNorm(x) = ‖p − u‖₁ · ‖x‖₁,   score(x) = −GradNorm(x),

    p = softmax(W x + b) (the L1 norm of an outer product factorises). Huang, Geng & Li,
    NeurIPS 2021, with the paper's T = 1 and the weight only (the authors' code and OpenOOD
    take the gradient of ``fc.weight``, not the bias). No hyperparameters.

    The authors' code uses targets of ones instead of 1/C, which multiplies the gradient by C
    and leaves the ranking unchanged; we use the paper's KL divergence.
    """

    name = "gradnorm"
    paper = Paper(
        "On the Importance of Gradients for Detecting Distributional Shifts in the Wild",
        "Huang, Geng, Li",
        "NeurIPS",
        2021,
        "https://arxiv.org/abs/2110.00218",
    )
    requires = frozenset({"features"})
    fit_requires = frozenset({"head"})

    def _fit(self, train: Representation, val: Representation | None) -> None:
        self._keep_head(train)

    def _score(self, rep: Representation) -> np.ndarray:
        x = np.asarray(rep.features, dtype=np.float64)
        p = softmax(x @ self.weight_.T + self.bias_)
        return -np.abs(p - 1.0 / p.shape[1]).sum(axis=1) * np.abs(x).sum(axis=1)
