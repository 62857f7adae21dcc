"""Neighbour and density detectors of feature rows: k-th-neighbour distance, LOF and a Gaussian
KDE. The fitted state is the training rows (plus LOF's k-distances and densities); the
neighbour search is a scikit-learn ``NearestNeighbors`` rebuilt from those rows on first use."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
from scipy.special import logsumexp
from sklearn.neighbors import NearestNeighbors

from unseen.detectors.base import Detector, Paper
from unseen.detectors.registry import register
from unseen.detectors.tabular._base import TabularDetector, as64, row_blocks, sq_distances
from unseen.representation import Representation

#: LOF's guard against a zero mean reachability distance (duplicate rows), as scikit-learn's
LRD_EPS = 1e-10


def _check_k(det: Detector, k: Any, n_train: int, extra: int = 0) -> int:
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 1 <= k <= n_train - extra:
        raise ValueError(
            f"{det.name} needs an integer 1 <= n_neighbors <= {n_train - extra} "
            f"(training rows{' − 1' if extra else ''}), got {k!r}"
        )
    return int(k)


def neighbour_search(det: Any) -> NearestNeighbors:
    """An exact ``NearestNeighbors`` over ``det.points_``, rebuilt when the array changes."""
    cached = det.__dict__.get("_nn")
    if cached is None or cached[0] is not det.points_:
        det._nn = cached = (det.points_, NearestNeighbors().fit(det.points_))
    return cached[1]


def _k_search_space(train: Representation, grid: list[int], extra: int) -> dict[str, list[Any]]:
    return {"n_neighbors": [k for k in grid if k <= len(train) - extra]}


@register
class KthNN(TabularDetector):
    """Distance to the k-th nearest training row:

        score(x) = ‖x − x_(k)‖₂.

    Ramaswamy, Rastogi, Shim, SIGMOD 2000; PyOD's ``KNN`` (``method="largest"``), the "KNN" of
    ADBench. Unlike ``knn`` (Sun et al. 2022) the rows are not L2-normalised and the search
    uses scikit-learn, not faiss. In :meth:`fit_score` a row is not its own neighbour. Default
    k = 5 (PyOD); grid k ∈ {1, 5, 10, 20, 50, 100}.
    """

    name = "kthnn"
    paper = Paper("Efficient Algorithms for Mining Outliers from Large Data Sets",
                  "Ramaswamy, Rastogi, Shim", "SIGMOD", 2000,
                  "https://doi.org/10.1145/342009.335437")
    grid: ClassVar[dict[str, list[Any]]] = {"n_neighbors": [1, 5, 10, 20, 50, 100]}
    score_params = frozenset({"n_neighbors"})

    def __init__(self, n_neighbors: int = 5) -> None:
        self.n_neighbors = n_neighbors

    @classmethod
    def search_space(cls, train: Representation) -> dict[str, list[Any]]:
        return _k_search_space(train, cls.grid["n_neighbors"], 1)

    def _fit(self, train: Representation, val: Representation | None) -> None:
        _check_k(self, self.n_neighbors, len(train))
        self.points_ = as64(train.features)

    def _score(self, rep: Representation) -> np.ndarray:
        k = _check_k(self, self.n_neighbors, len(self.points_))
        dist, _ = neighbour_search(self).kneighbors(as64(rep.features), n_neighbors=k)
        return dist[:, -1]

    def _fit_scores(self, rep: Representation) -> np.ndarray:
        k = _check_k(self, self.n_neighbors, len(self.points_), extra=1)
        dist, _ = neighbour_search(self).kneighbors(n_neighbors=k)  # each row without itself
        return dist[:, -1]


@register
class LOF(TabularDetector):
    """Local Outlier Factor: how much sparser x's neighbourhood is than its neighbours':

        reach_k(x, o) = max(‖x − o‖, k-dist(o)),
        lrd(x) = 1 / (mean_{o ∈ N_k(x)} reach_k(x, o) + 10⁻¹⁰),
        score(x) = mean_{o ∈ N_k(x)} lrd(o) / lrd(x).

    Breunig, Kriegel, Ng, Sander, SIGMOD 2000. The neighbourhoods come from scikit-learn's
    ``NearestNeighbors`` (what its ``LocalOutlierFactor`` searches with; training neighbourhoods
    exclude the row itself), searched once per fit; the state is the training rows, their
    k-distances and lrd. ``score`` equals −``score_samples`` of
    ``LocalOutlierFactor(novelty=True)``; :meth:`fit_score` is −``negative_outlier_factor_``. Default
    k = 20 (scikit-learn; PyOD: 20); grid k ∈ {5, 10, 20, 50, 100}.
    """

    name = "lof"
    paper = Paper("LOF: Identifying Density-Based Local Outliers",
                  "Breunig, Kriegel, Ng, Sander", "SIGMOD", 2000,
                  "https://doi.org/10.1145/342009.335388")
    grid: ClassVar[dict[str, list[Any]]] = {"n_neighbors": [5, 10, 20, 50, 100]}

    def __init__(self, n_neighbors: int = 20) -> None:
        self.n_neighbors = n_neighbors

    @classmethod
    def search_space(cls, train: Representation) -> dict[str, list[Any]]:
        return _k_search_space(train, cls.grid["n_neighbors"], 1)

    def _fit(self, train: Representation, val: Representation | None) -> None:
        self.n_neighbors_ = _check_k(self, self.n_neighbors, len(train), extra=1)
        self.points_ = as64(train.features)
        # the training neighbourhoods, each row without itself; kept for fit_score
        dist, idx = neighbour_search(self).kneighbors(n_neighbors=self.n_neighbors_)
        self._own = (self.points_, dist, idx)
        self.k_distance_ = dist[:, -1].copy()
        reach = np.maximum(dist, self.k_distance_[idx])
        self.lrd_ = 1.0 / (reach.mean(axis=1) + LRD_EPS)

    def _lof(self, dist: np.ndarray, idx: np.ndarray, lrd_own: np.ndarray | None = None) -> np.ndarray:
        reach = np.maximum(dist, self.k_distance_[idx])
        lrd = 1.0 / (reach.mean(axis=1) + LRD_EPS) if lrd_own is None else lrd_own
        return (self.lrd_[idx] / lrd[:, None]).mean(axis=1)

    def _score(self, rep: Representation) -> np.ndarray:
        dist, idx = neighbour_search(self).kneighbors(as64(rep.features),
                                                      n_neighbors=self.n_neighbors_)
        return self._lof(dist, idx)

    def _fit_scores(self, rep: Representation) -> np.ndarray:
        _, dist, idx = self._own  # fit_score has just fitted on these rows
        return self._lof(dist, idx, lrd_own=self.lrd_)


def _bandwidth(rule: float | str, n: int, d: int) -> float:
    """The bandwidth for ``rule``: a positive number, or scikit-learn's "scott" / "silverman"."""
    if rule == "scott":
        return float(n ** (-1.0 / (d + 4)))
    if rule == "silverman":
        return float((n * (d + 2) / 4.0) ** (-1.0 / (d + 4)))
    if isinstance(rule, bool) or not isinstance(rule, int | float) or not rule > 0:
        raise ValueError(f"kde bandwidth must be a positive number, 'scott' or 'silverman', got {rule!r}")
    return float(rule)


@register
class KDE(TabularDetector):
    """Negative log density under a Gaussian kernel density estimate of the training rows:

        score(x) = −log [ 1/n Σ_i N(x; x_i, h² I) ]
                 = log n + (d/2) log(2π h²) − logsumexp_i(−‖x − x_i‖² / (2h²)).

    Latecki, Lazarevic, Pokrajac, MLDM 2007 (kernel densities for outlier detection; the
    estimator is Parzen's, 1962); this is PyOD's ``KDE`` (the "KDE" of ADBench), which wraps
    scikit-learn's ``KernelDensity``; our scores equal
    −``KernelDensity(bandwidth=h).score_samples``. Exact, in float64, in blocks of bounded
    memory. Default h = 1.0 (PyOD's, meant for features scaled to [0, 1]); grid h ∈ {0.05, 0.1,
    0.2, 0.5, 1.0, "scott", "silverman"} (the two rules as scikit-learn defines them).
    """

    name = "kde"
    paper = Paper("Outlier Detection with Kernel Density Functions",
                  "Latecki, Lazarevic, Pokrajac", "MLDM", 2007,
                  "https://doi.org/10.1007/978-3-540-73499-4_6")
    grid: ClassVar[dict[str, list[Any]]] = {
        "bandwidth": [0.05, 0.1, 0.2, 0.5, 1.0, "scott", "silverman"]
    }

    # the bandwidth only enters the score: a grid search fits once and, per block of rows,
    # computes the distances once for every bandwidth (what costs; the logsumexp is per point)
    score_params = frozenset({"bandwidth"})

    def __init__(self, bandwidth: float | str = 1.0) -> None:
        self.bandwidth = bandwidth

    def _fit(self, train: Representation, val: Representation | None) -> None:
        self.points_ = as64(train.features)
        n, d = self.points_.shape
        self.bandwidth_ = _bandwidth(self.bandwidth, n, d)

    def _score(self, rep: Representation) -> np.ndarray:
        return self._scores(rep, [self.bandwidth])[0]

    def _score_grid(
        self, rep: Representation, points: Sequence[Mapping[str, Any]]
    ) -> list[np.ndarray | ValueError]:
        out: list[np.ndarray | ValueError] = []
        valid: list[int] = []
        for point in points:
            try:
                _bandwidth(point["bandwidth"], *self.points_.shape)
                valid.append(len(out))
                out.append(np.empty(0))
            except ValueError as exc:
                out.append(exc)
        scores = self._scores(rep, [points[i]["bandwidth"] for i in valid])
        for i, s in zip(valid, scores, strict=True):
            out[i] = s
        return out

    def _scores(self, rep: Representation, rules: Sequence[float | str]) -> list[np.ndarray]:
        """The scores of ``rep`` at each bandwidth rule, from one pass of distance blocks."""
        x = as64(rep.features)
        n, d = self.points_.shape
        h2s = [_bandwidth(rule, n, d) ** 2 for rule in rules]
        points_sq = (self.points_ * self.points_).sum(1)
        out = [np.empty(x.shape[0]) for _ in h2s]
        for block in row_blocks(x.shape[0], n):
            dist = sq_distances(x[block], self.points_, points_sq)
            for o, h2 in zip(out, h2s, strict=True):
                o[block] = -logsumexp(-dist / (2 * h2), axis=1)
        return [o + np.log(n) + 0.5 * d * np.log(2 * np.pi * h2) for o, h2 in zip(out, h2s,
                                                                                 strict=True)]
