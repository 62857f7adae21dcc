"""Detectors of feature rows that fit a boundary or a subspace with scikit-learn (one-class SVM,
PCA) and keep it as arrays (support vectors and dual coefficients; mean and components)."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from sklearn.decomposition import PCA as SkPCA
from sklearn.svm import OneClassSVM

from unseen.detectors.base import Paper
from unseen.detectors.registry import register
from unseen.detectors.tabular._base import TabularDetector, as64, row_blocks, sq_distances
from unseen.representation import Representation


@register
class OCSVM(TabularDetector):
    """One-class SVM with an RBF kernel: minus the kernel expansion of the learnt boundary,

        score(x) = −Σ_i α_i exp(−γ ‖x − s_i‖²),

    over the support vectors s_i with dual coefficients α_i (= −``OneClassSVM.score_samples``;
    the offset ρ only moves the threshold). Schölkopf, Platt, Shawe-Taylor, Smola, Williamson,
    Neural Computation 2001. Fitted by scikit-learn (libsvm); state: ``support_vectors_``,
    ``dual_coef_``, ``intercept_`` and the resolved ``gamma_``. Defaults as PyOD's ``OCSVM``
    (the one ADBench ran): ν = 0.5, γ = "auto" = 1/d; "scale" = 1/(d · Var(X)) is
    scikit-learn's. Grid: ν ∈ {0.01, 0.1, 0.5}, γ ∈ {"auto", "scale", 0.1, 1.0}. Fitting costs
    O(n²) kernel evaluations, so above ``max_samples`` (10,000) training rows it fits on a random
    subsample of that many (drawn with ``seed``); PyOD always fits on all rows.
    """

    name = "ocsvm"
    paper = Paper("Estimating the Support of a High-Dimensional Distribution",
                  "Schölkopf, Platt, Shawe-Taylor, Smola, Williamson", "Neural Computation", 2001,
                  "https://doi.org/10.1162/089976601750264965")
    grid: ClassVar[dict[str, list[Any]]] = {"nu": [0.01, 0.1, 0.5],
                                            "gamma": ["auto", "scale", 0.1, 1.0]}

    def __init__(self, nu: float = 0.5, gamma: float | str = "auto", max_samples: int = 10000,
                 seed: int = 0) -> None:
        self.nu = nu
        self.gamma = gamma
        self.max_samples = max_samples
        self.seed = seed

    def _fit(self, train: Representation, val: Representation | None) -> None:
        if not (isinstance(self.nu, int | float) and 0 < self.nu <= 1):
            raise ValueError(f"ocsvm needs 0 < nu <= 1, got {self.nu!r}")
        x = as64(train.features)
        if x.shape[0] > self.max_samples:
            keep = np.random.default_rng(self.seed).choice(x.shape[0], self.max_samples, replace=False)
            x = x[np.sort(keep)]
        svm = OneClassSVM(kernel="rbf", nu=self.nu, gamma=self.gamma).fit(x)
        self.support_vectors_ = np.asarray(svm.support_vectors_, dtype=np.float64)
        self.dual_coef_ = np.asarray(svm.dual_coef_[0], dtype=np.float64)
        self.intercept_ = float(svm.intercept_[0])
        self.gamma_ = float(svm._gamma)

    def _score(self, rep: Representation) -> np.ndarray:
        x = as64(rep.features)
        sv = self.support_vectors_
        sv_sq = (sv * sv).sum(1)
        out = np.empty(x.shape[0])
        for block in row_blocks(x.shape[0], sv.shape[0]):
            out[block] = np.exp(-self.gamma_ * sq_distances(x[block], sv, sv_sq)) @ self.dual_coef_
        return -out


@register
class PCA(TabularDetector):
    """PCA reconstruction error (the squared prediction error, SPE or Q statistic):

        score(x) = ‖(x − μ) − V_kᵀ V_k (x − μ)‖²,

    with μ the training mean and V_k the top k principal directions: the residual-subspace
    detector of Lakhina, Crovella, Diot, SIGCOMM 2004 (the statistic is Jackson and Mudholkar's
    Q, Technometrics 1979). Fitted by scikit-learn's ``PCA`` (state: ``mean_``, ``components_``).
    ``n_components`` is a count or, in (0, 1), the fraction of variance to keep (scikit-learn's
    rule); at most d − 1 directions are kept, so that a residual is left. Default 0.9 of the
    variance; grid {0.5, 0.8, 0.9, 0.95, 0.99}. PyOD's ``PCA`` (the
    one ADBench ran) scores differently: the eigenvalue-weighted distances to *all* components
    of the standardised data, a Mahalanobis-type distance; this one leaves the scaling to the
    caller (the ADBench protocol min–max scales the features).
    """

    name = "pca"
    paper = Paper("Diagnosing Network-Wide Traffic Anomalies", "Lakhina, Crovella, Diot",
                  "SIGCOMM", 2004, "https://doi.org/10.1145/1015467.1015492")
    grid: ClassVar[dict[str, list[Any]]] = {"n_components": [0.5, 0.8, 0.9, 0.95, 0.99]}

    def __init__(self, n_components: float | int = 0.9) -> None:
        self.n_components = n_components

    def _fit(self, train: Representation, val: Representation | None) -> None:
        x = as64(train.features)
        pca = SkPCA().fit(x)  # svd_solver "auto": the covariance eigh when rows ≫ features
        self.mean_ = np.asarray(pca.mean_, dtype=np.float64)
        self.components_ = np.asarray(pca.components_[: self._kept(pca)], dtype=np.float64)

    def _kept(self, pca: SkPCA) -> int:
        """How many directions to keep: at least 1, and at most rank − 1 so a residual is left."""
        k, rank = self.n_components, int(pca.components_.shape[0])
        if isinstance(k, bool) or not isinstance(k, int | float) or not 0 < k < max(rank, 2):
            raise ValueError(
                f"pca n_components must be a fraction in (0, 1) or an integer in [1, {rank - 1}] "
                f"(the training data have rank <= {rank}), got {k!r}"
            )
        if isinstance(k, float) and k < 1:
            # scikit-learn's rule: the fewest components whose explained variance exceeds k
            k = int(np.searchsorted(np.cumsum(pca.explained_variance_ratio_), k, side="right")) + 1
        return max(1, min(int(k), rank - 1))

    def _score(self, rep: Representation) -> np.ndarray:
        centred = as64(rep.features) - self.mean_
        residual = centred - (centred @ self.components_.T) @ self.components_
        return (residual * residual).sum(1)
