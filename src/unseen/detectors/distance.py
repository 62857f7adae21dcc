"""Detectors that measure distances in feature space.

faiss (for the exact neighbour searches of knn and nnguide) is imported where it is used, so
importing this module costs no faiss.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np

from unseen.detectors import _threads
from unseen.detectors._threads import map_threads
from unseen.detectors.base import Detector, Paper, logsumexp
from unseen.detectors.params import Number
from unseen.detectors.registry import register
from unseen.representation import Representation

if TYPE_CHECKING:
    import faiss


def class_means(features: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-class means (float64) and the sorted class ids they belong to."""
    classes = np.unique(labels)
    x = np.asarray(features, dtype=np.float64)
    means = np.stack([x[labels == c].mean(axis=0) for c in classes])
    return means, classes


def whitening(centred: np.ndarray) -> np.ndarray:
    """The (D, r) map W = V Λ^{-1/2} of the covariance Σ = V Λ Vᵀ of ``centred`` rows, so that
    ‖(x − μ) W‖² = (x − μ)ᵀ Σ⁺ (x − μ), the Mahalanobis distance.

    A singular Σ (dead ReLU units, fewer samples than dimensions) is handled as the
    Moore–Penrose pseudo-inverse: eigenvalues ≤ λ_max · D · ε_float64 (NumPy's
    ``matrix_rank`` tolerance) are dropped, i.e. distances are measured in the span of the data.
    """
    centred = np.asarray(centred, dtype=np.float64)
    cov = centred.T @ centred / centred.shape[0]
    eigval, eigvec = np.linalg.eigh(cov)
    tol = max(eigval.max(), 0.0) * cov.shape[0] * np.finfo(np.float64).eps
    keep = eigval > tol
    if not keep.any():
        raise ValueError("the training features have zero variance; nothing to measure")
    return eigvec[:, keep] / np.sqrt(eigval[keep])


def min_sq_distance(x: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """min_c ‖x_i − centre_c‖² for each row, via the expansion |x|² − 2x·m + |m|²."""
    d = (x * x).sum(1)[:, None] - 2.0 * x @ centres.T + (centres * centres).sum(1)[None, :]
    return np.maximum(d.min(axis=1), 0.0)


@register
class Mahalanobis(Detector):
    """Minimum Mahalanobis distance to the class means with one shared covariance:

        score(x) = min_c (x − μ_c)ᵀ Σ⁺ (x − μ_c),
        Σ = 1/N Σ_c Σ_{i: y_i = c} (x_i − μ_c)(x_i − μ_c)ᵀ.

    Lee, Lee, Lee, Shin, NeurIPS 2018, on the penultimate features, without the paper's input
    perturbation and multi-layer ensemble (which need OOD data to weight the layers); this is
    OpenOOD v1.5's ``mds``. Computed in float64. No hyperparameters.
    """

    name = "mahalanobis"
    paper = Paper(
        "A Simple Unified Framework for Detecting Out-of-Distribution Samples and Adversarial "
        "Attacks",
        "Lee, Lee, Lee, Shin",
        "NeurIPS",
        2018,
        "https://arxiv.org/abs/1807.03888",
    )
    requires = frozenset({"features"})
    fit_requires = frozenset({"labels"})

    def _features(self, features: np.ndarray) -> np.ndarray:
        return np.asarray(features, dtype=np.float64)

    def _fit(self, train: Representation, val: Representation | None) -> None:
        x, labels = self._features(self._array(train, "features")), self._array(train, "labels")
        self.means_, self.classes_ = class_means(x, labels)
        centred = x - self.means_[np.searchsorted(self.classes_, labels)]
        self.whitening_ = whitening(centred)
        self.white_means_ = self.means_ @ self.whitening_

    def _score(self, rep: Representation) -> np.ndarray:
        x = self._features(self._array(rep, "features"))
        return min_sq_distance(x @ self.whitening_, self.white_means_)


class _BankOwner(Protocol):
    """A fitted detector that searches its bank of training rows (knn, nnguide)."""

    bank_: np.ndarray


def flat_index(det: _BankOwner, kind: str) -> faiss.Index:
    """An exact faiss index over ``det.bank_``, built on first use and kept in ``det._faiss``.

    ``kind`` names the faiss index class (``"IndexFlatL2"``). The fitted state stays a plain
    array (persistable without pickle); the index is rebuilt whenever the bank object changes
    (a refit or a load).
    """
    import faiss

    cached = det.__dict__.get("_faiss")
    if cached is None or cached[0] is not det.bank_:
        index = getattr(faiss, kind)(det.bank_.shape[1])
        index.add(np.ascontiguousarray(det.bank_, dtype=np.float32))
        det.__dict__["_faiss"] = cached = (det.bank_, index)
    return cached[1]


def l2_normalise(x: np.ndarray, eps: float = 1e-12, dtype: type = np.float32) -> np.ndarray:
    """Rows of ``x`` divided by their L2 norm (all-zero rows stay zero), as ``dtype``."""
    x = np.asarray(x, dtype=dtype)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), eps)


@register
class KNN(Detector):
    """Distance to the k-th nearest training feature, after L2 normalisation:

        score(x) = ‖z − z_(k)‖₂,   z = x / ‖x‖₂,

    where z_(k) is the k-th nearest normalised training feature. Sun, Ming, Zhu, Li, ICML 2022.
    Exact search with faiss (``IndexFlatL2``, float32), the queries shared among one thread per
    core. Default k = 50 (OpenOOD v1.5's CIFAR config); grid k ∈ {1, 10, 20, 50, 100, 200, 500,
    1000} (values above the training-set size are dropped from the search). OpenOOD returns the
    *squared* distance; the ranking is the same. :meth:`score_grid` runs one search with the
    largest k asked for and reads every smaller k > 1 from it (faiss's heap search computes each
    distance the same way whatever k, so the k-th value does not change; k = 1 has a kernel of
    its own and is searched on its own).
    """

    name = "knn"
    paper = Paper(
        "Out-of-Distribution Detection with Deep Nearest Neighbors",
        "Sun, Ming, Zhu, Li",
        "ICML",
        2022,
        "https://arxiv.org/abs/2204.06507",
    )
    requires = frozenset({"features"})
    grid: ClassVar[dict[str, list[Any]]] = {"k": [1, 10, 20, 50, 100, 200, 500, 1000]}
    score_params = frozenset({"k"})
    constraints = {"k": Number(1, integer=True)}
    chunk_size = 4096

    def __init__(self, k: int = 50) -> None:
        self.k = k

    @classmethod
    def search_space(cls, train: Representation) -> dict[str, list[Any]]:
        return {"k": [k for k in cls.grid["k"] if k <= len(train)]}

    def _fit(self, train: Representation, val: Representation | None) -> None:
        self._check_k(len(train))
        self.bank_ = l2_normalise(self._array(train, "features"))

    def _check_k(self, n_train: int) -> None:
        if not (isinstance(self.k, int | np.integer) and 1 <= self.k <= n_train):
            raise ValueError(
                f"knn needs an integer 1 <= k <= {n_train} (training size), got {self.k}"
            )

    def _score(self, rep: Representation) -> np.ndarray:
        self._check_k(self.bank_.shape[0])
        k = int(self.k)
        return self._kth(self._search(l2_normalise(self._array(rep, "features")), k), k)

    @staticmethod
    def _kth(sq_distances: np.ndarray, k: int) -> np.ndarray:
        return np.sqrt(np.maximum(sq_distances[:, k - 1].astype(np.float64), 0.0))

    def _score_grid(
        self, rep: Representation, points: Sequence[Mapping[str, Any]]
    ) -> list[np.ndarray | ValueError]:
        ks: list[int | ValueError] = []
        for point in points:
            self.k = point.get("k", self.k)
            try:
                self._check_k(self.bank_.shape[0])
                ks.append(int(self.k))
            except ValueError as exc:
                ks.append(exc)
        queries = l2_normalise(self._array(rep, "features"))
        # faiss has its own kernel for k = 1, whose distances may differ in the last bits from
        # the heap search's: k = 1 gets its own search, every larger k shares the widest.
        wider = [k for k in ks if isinstance(k, int) and k > 1]
        searched = {1: self._search(queries, 1)} if 1 in ks else {}
        if wider:
            searched[2] = self._search(queries, max(wider))
        return [k if isinstance(k, ValueError) else self._kth(searched[min(k, 2)], k) for k in ks]

    def _search(self, queries: np.ndarray, k: int) -> np.ndarray:
        """Squared distances to the k nearest bank rows, ascending, (N, k) float32."""
        import faiss

        index = flat_index(self, "IndexFlatL2")
        n, dim = queries.shape
        # Recent faiss (1.15 here) uses BLAS only from rows · dim >= this threshold (2000 rows
        # at dim 64) and is ~3× slower per row below it. So the rows are split among threads
        # only in slices above that size, and a smaller set is padded up to it with zero rows
        # when that costs less than the row-by-row kernel.
        blas_rows = -(-int(faiss.cvar.distance_compute_blas_threshold) // dim)
        step = -(-n // max(1, min(_threads.worker_count(), n // blas_rows)))

        def search(start: int) -> np.ndarray:
            rows = queries[start : start + step]
            if blas_rows > len(rows) >= blas_rows // 3:
                rows = np.concatenate([rows, np.zeros((blas_rows - len(rows), dim), rows.dtype)])
            # One OpenMP thread per worker (see map_threads); the setting is per calling thread,
            # and restored because a single slice runs in the caller's own thread.
            threads = faiss.omp_get_max_threads()
            faiss.omp_set_num_threads(1)
            try:
                return index.search(rows, k)[0][: min(step, n - start)]
            finally:
                faiss.omp_set_num_threads(threads)

        return np.concatenate(map_threads(search, range(0, n, step)))


@register
class RMDS(Mahalanobis):
    """Relative Mahalanobis distance: the class-conditional distance minus the distance under one
    Gaussian fitted to all training features (the "background"):

        score(x) = min_c [MD_c(x) − MD_0(x)],
        MD_c(x) = (x − μ_c)ᵀ Σ⁺ (x − μ_c),   MD_0(x) = (x − μ_0)ᵀ Σ_0⁺ (x − μ_0),

    with μ_c, Σ as in ``mahalanobis`` (class means, shared within-class covariance) and μ_0, Σ_0
    the mean and covariance of all training features. Ren, Fort, Liu, Roy, Padhy,
    Lakshminarayanan, 2021; the paper's confidence is −min_c RMD_c, OpenOOD v1.5's ``rmds``
    returns max_c(−RMD_c): the same value with our sign. Float64, pseudo-inverses as in
    :func:`whitening`. No hyperparameters.
    """

    name = "rmds"
    paper = Paper(
        "A Simple Fix to Mahalanobis Distance for Improving Near-OOD Detection",
        "Ren, Fort, Liu, Roy, Padhy, Lakshminarayanan",
        "arXiv",
        2021,
        "https://arxiv.org/abs/2106.09022",
    )

    def _fit(self, train: Representation, val: Representation | None) -> None:
        super()._fit(train, val)
        x = self._features(self._array(train, "features"))
        self.global_mean_ = x.mean(axis=0)
        self.global_whitening_ = whitening(x - self.global_mean_)

    def _score(self, rep: Representation) -> np.ndarray:
        x = self._features(self._array(rep, "features"))
        background = (x - self.global_mean_) @ self.global_whitening_
        return super()._score(rep) - (background**2).sum(axis=1)


@register
class MahalanobisPP(Mahalanobis):
    """Mahalanobis++: ``mahalanobis`` on L2-normalised features, z = x / ‖x‖₂, for fitting and
    scoring alike:

        score(x) = min_c (z − μ_c)ᵀ Σ⁺ (z − μ_c),

    with class means μ_c and shared covariance Σ of the normalised training features. Mueller &
    Hein, ICML 2025. Float64. No hyperparameters. OpenOOD v1.5 has no such postprocessor.
    """

    name = "mahalanobis_pp"
    paper = Paper(
        "Mahalanobis++: Improving OOD Detection via Feature Normalization",
        "Mueller, Hein",
        "ICML",
        2025,
        "https://arxiv.org/abs/2505.18032",
    )

    def _features(self, features: np.ndarray) -> np.ndarray:
        return l2_normalise(features, dtype=np.float64)


@register
class SHE(Detector):
    """Simplified Hopfield Energy: score(x) = −⟨x, s_ŷ⟩,

    where ŷ = argmax of the logits and the stored pattern s_c is the mean feature of the training
    samples of class c that the classifier classifies correctly. Zhang et al., ICLR 2023; their
    Hopfield energy with one stored pattern per class reduces to this negative inner product
    (logsumexp of a single term), and OpenOOD v1.5's ``she`` (metric ``inner_product``) computes
    the same. The paper's optional input perturbation is not included. No hyperparameters.
    """

    name = "she"
    paper = Paper(
        "Out-of-distribution Detection based on In-distribution Data Patterns Memorization with "
        "Modern Hopfield Energy",
        "Zhang, Fu, Chen, Du, Li, Wang, Liu, Han, Zhang",
        "ICLR",
        2023,
        "https://openreview.net/forum?id=KkazG4lgKL",
    )
    requires = frozenset({"features", "logits"})
    fit_requires = frozenset({"labels"})

    def _fit(self, train: Representation, val: Representation | None) -> None:
        labels, logits = self._array(train, "labels"), self._array(train, "logits")
        correct = logits.argmax(axis=1) == labels
        n_classes = logits.shape[1]
        missing = [c for c in range(n_classes) if not np.any(correct & (labels == c))]
        if missing:
            raise ValueError(
                f"she needs at least one correctly classified training sample per class; classes "
                f"{missing[:10]} have none"
            )
        x = np.asarray(self._array(train, "features"), dtype=np.float64)
        self.patterns_ = np.stack(
            [x[correct & (labels == c)].mean(axis=0) for c in range(n_classes)]
        )

    def _score(self, rep: Representation) -> np.ndarray:
        pattern = self.patterns_[self._array(rep, "logits").argmax(axis=1)]
        return -(np.asarray(self._array(rep, "features"), dtype=np.float64) * pattern).sum(axis=1)


@register
class NNGuide(Detector):
    """Nearest-neighbour guidance of the energy confidence:

        score(x) = −E(x) · G(x),   E(x) = log Σ_c exp z_c(x),
        G(x) = (1/k) Σ_{b ∈ top-k} ⟨u(x), b⟩,   bank = {E(x_i) · u(x_i)},   u(x) = x / ‖x‖₂,

    the top-k being the bank entries with the largest inner product with u(x) (exact search,
    faiss ``IndexFlatIP``). The bank holds a seeded random fraction ``alpha`` of the training set
    (at least one sample). Park, Jung, Teoh, ICCV 2023. Defaults k = 100, alpha = 0.01 (OpenOOD
    v1.5's ``nnguide.yml``, whose sweep is that single point; the authors' code uses k = 10 with a
    1% ImageNet bank); grid k ∈ {10, 100}, alpha ∈ {0.01, 1}. We add alpha = 1 (the whole
    training set as the bank) so that small training sets, where 1% holds fewer than k samples,
    still have valid grid points; such (k, alpha) pairs fail at fit and the search skips them.
    OpenOOD fills the bank with the first batches of its shuffled loader instead of a seeded
    subset.
    """

    name = "nnguide"
    paper = Paper(
        "Nearest Neighbor Guidance for Out-of-Distribution Detection",
        "Park, Jung, Teoh",
        "ICCV",
        2023,
        "https://arxiv.org/abs/2309.14888",
    )
    requires = frozenset({"features", "logits"})
    grid: ClassVar[dict[str, list[Any]]] = {"k": [10, 100], "alpha": [0.01, 1.0]}
    score_params = frozenset({"k"})
    constraints = {
        "k": Number(1, integer=True),
        "alpha": Number(0, 1, low_open=True, text="a bank fraction in (0, 1]"),
    }
    chunk_size = 4096

    def __init__(self, k: int = 100, alpha: float = 0.01, seed: int = 0) -> None:
        self.k = k
        self.alpha = alpha
        self.seed = seed

    @staticmethod
    def _bank_size(n_train: int, alpha: float) -> int:
        return max(1, int(np.ceil(alpha * n_train)))

    @classmethod
    def search_space(cls, train: Representation) -> dict[str, list[Any]]:
        largest = max(cls._bank_size(len(train), a) for a in cls.grid["alpha"])
        return {"k": [k for k in cls.grid["k"] if k <= largest], "alpha": list(cls.grid["alpha"])}

    def _fit(self, train: Representation, val: Representation | None) -> None:
        n = len(train)
        size = self._bank_size(n, self.alpha)
        idx = np.sort(np.random.default_rng(self.seed).choice(n, size, replace=False))
        confidence = logsumexp(self._array(train, "logits")[idx])
        bank = l2_normalise(self._array(train, "features")[idx]) * confidence[:, None]
        self.bank_ = bank.astype(np.float32)
        self._check_k(size)

    def _check_k(self, bank_size: int) -> None:
        if not (isinstance(self.k, int | np.integer) and 1 <= self.k <= bank_size):
            raise ValueError(
                f"nnguide needs an integer 1 <= k <= {bank_size} (bank size), got {self.k}"
            )

    def _score(self, rep: Representation) -> np.ndarray:
        self._check_k(self.bank_.shape[0])
        queries = l2_normalise(self._array(rep, "features"))
        sims, _ = flat_index(self, "IndexFlatIP").search(queries, int(self.k))
        guidance = sims.astype(np.float64).mean(axis=1)
        return -guidance * logsumexp(self._array(rep, "logits"))
