"""Detectors built from per-feature (marginal) distributions: ECOD and COPOD (empirical tail
probabilities) and HBOS (histograms). The fitted state is each column's sorted training values
or its histogram, so a row is scored alone, independently of the other rows scored with it."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from unseen.detectors.base import Paper
from unseen.detectors.registry import register
from unseen.detectors.tabular._base import TabularDetector, as64
from unseen.representation import Representation


def skewness_sign(x: np.ndarray) -> np.ndarray:
    """sign(γ_j) of each column's (biased) sample skewness m₃ / m₂^{3/2}; 0 for a constant column."""
    centred = x - x.mean(axis=0)
    m2 = (centred**2).mean(axis=0)
    m3 = (centred**3).mean(axis=0)
    return np.sign(np.where(m2 > 0, m3, 0.0)).astype(np.int64)


class _Tails(TabularDetector):
    """Negative log empirical tail probabilities of each feature, from the sorted training columns
    (``sorted_``, one row per feature).

    A new row x is scored as if it alone joined the n training rows: F_left(x_j) = (1 + #{i :
    x_ij ≤ x_j}) / (n + 1), F_right likewise with ≥. (PyOD scores a batch *together* with the
    training rows, so its score of a row depends on the other rows of the batch; it equals ours
    for a batch of one row.) In :meth:`fit_score` the rows are the sample: F_left = #{≤}/n, as in
    PyOD's ``decision_scores_``.
    """

    def _fit(self, train: Representation, val: Representation | None) -> None:
        x = as64(train.features)
        # (features, rows): each feature's sorted values contiguous, for fast binary searches
        self.sorted_ = np.sort(np.ascontiguousarray(x.T), axis=1)
        self.skew_sign_ = skewness_sign(x)

    def _tails(self, x: np.ndarray, own: bool) -> tuple[np.ndarray, np.ndarray]:
        n = self.sorted_.shape[1]
        left = np.empty_like(x)
        right = np.empty_like(x)
        for j in range(x.shape[1]):
            # sorted keys make the binary searches walk the column in order (cache-friendly)
            order = np.argsort(x[:, j], kind="stable")
            keys = x[order, j]
            left[order, j] = np.searchsorted(self.sorted_[j], keys, side="right")
            right[order, j] = n - np.searchsorted(self.sorted_[j], keys, side="left")
        if own:  # the rows are the training rows: each is counted once already
            return -np.log(left / n), -np.log(right / n)
        return -np.log((left + 1.0) / (n + 1.0)), -np.log((right + 1.0) / (n + 1.0))

    def _skew_tail(self, u_left: np.ndarray, u_right: np.ndarray) -> np.ndarray:
        # PyOD's skewness-corrected tail: left for γ < 0, right for γ > 0, both for γ = 0
        return u_left * (self.skew_sign_ <= 0) + u_right * (self.skew_sign_ >= 0)

    def _combine(self, u_left: np.ndarray, u_right: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _score(self, rep: Representation) -> np.ndarray:
        return self._combine(*self._tails(as64(rep.features), own=False))

    def _fit_scores(self, rep: Representation) -> np.ndarray:
        return self._combine(*self._tails(as64(rep.features), own=True))


@register
class ECOD(_Tails):
    """Empirical-CDF-based outlier detection: rare values lie in a tail of their feature.

    With U_l = −log F_left(x_j), U_r = −log F_right(x_j) and the skewness γ_j of feature j:

        aggregate="paper":  score(x) = max(Σ_j U_l, Σ_j U_r, Σ_j U_s),
                            U_s = U_l if γ_j < 0 else U_r;
        aggregate="pyod":   score(x) = Σ_j max(U_l, U_r)   (PyOD's ECOD, the one ADBench ran;
                            its per-feature max makes the skewness term vanish except when
                            γ_j = 0, where it adds U_l + U_r, which we reproduce).

    Li, Zhao, Hu, Botta, Ionescu, Chen, IEEE TKDE 2022 (Algorithm 1 is ``"paper"``; PyOD issue
    #453 notes the difference). No hyperparameter besides ``aggregate`` (default "paper"; grid
    both). Empirical CDFs as in :class:`_Tails`; scores equal PyOD's to rounding where PyOD's
    definition applies (``fit_score``, or ``score`` of one row).
    """

    name = "ecod"
    paper = Paper("ECOD: Unsupervised Outlier Detection Using Empirical Cumulative Distribution "
                  "Functions", "Li, Zhao, Hu, Botta, Ionescu, Chen", "IEEE TKDE", 2022,
                  "https://arxiv.org/abs/2201.00382")
    grid: ClassVar[dict[str, list[Any]]] = {"aggregate": ["paper", "pyod"]}
    score_params = frozenset({"aggregate"})

    def __init__(self, aggregate: str = "paper") -> None:
        self.aggregate = aggregate

    def _fit(self, train: Representation, val: Representation | None) -> None:
        if self.aggregate not in ("paper", "pyod"):
            raise ValueError(f"ecod aggregate must be 'paper' or 'pyod', got {self.aggregate!r}")
        super()._fit(train, val)

    def _combine(self, u_left: np.ndarray, u_right: np.ndarray) -> np.ndarray:
        if self.aggregate == "pyod":
            return np.maximum(np.maximum(u_left, u_right), self._skew_tail(u_left, u_right)).sum(1)
        u_skew = np.where(self.skew_sign_ < 0, u_left, u_right)
        return np.maximum(np.maximum(u_left.sum(1), u_right.sum(1)), u_skew.sum(1))


@register
class COPOD(_Tails):
    """Copula-based outlier detection: empirical copula tail probabilities per feature,

        score(x) = Σ_j max(U_s, (U_l + U_r) / 2),

    with U_l, U_r the negative log left/right empirical tail probabilities and U_s the
    skewness-corrected one (left for γ_j < 0, right for γ_j > 0, both for γ_j = 0). Li, Zhao,
    Botta, Ionescu, Hu, ICDM 2020, as implemented by the authors in PyOD (``COPOD``), the one
    ADBench ran. Parameter-free. Empirical CDFs as in :class:`_Tails`.
    """

    name = "copod"
    paper = Paper("COPOD: Copula-Based Outlier Detection", "Li, Zhao, Botta, Ionescu, Hu",
                  "ICDM", 2020, "https://arxiv.org/abs/2009.09463")

    def _combine(self, u_left: np.ndarray, u_right: np.ndarray) -> np.ndarray:
        return np.maximum(self._skew_tail(u_left, u_right), (u_left + u_right) / 2.0).sum(1)


@register
class HBOS(TabularDetector):
    """Histogram-based outlier score: a sum of per-feature negative log histogram densities,

        score(x) = −Σ_j log₂(hist_j(x_j) + α),

    hist_j the density (``np.histogram(density=True)``) of n_bins equal-width bins of training
    feature j. A value outside the bins takes the edge bin when within ``tol`` bin widths of it,
    else the lowest density of the feature. Goldstein, Dengel, KI 2012; this is PyOD's ``HBOS``
    (static bins), the one ADBench ran: the paper normalises each histogram to a maximum of 1
    and uses log(1/hist) without α. Defaults (PyOD): n_bins = 10, α = 0.1, tol = 0.5. Grid:
    n_bins ∈ {5, 10, 20, 50}.
    """

    name = "hbos"
    paper = Paper("Histogram-based Outlier Score (HBOS): A fast Unsupervised Anomaly Detection "
                  "Algorithm", "Goldstein, Dengel", "KI (poster and demo track)", 2012)
    grid: ClassVar[dict[str, list[Any]]] = {"n_bins": [5, 10, 20, 50]}

    def __init__(self, n_bins: int = 10, alpha: float = 0.1, tol: float = 0.5) -> None:
        self.n_bins = n_bins
        self.alpha = alpha
        self.tol = tol

    def _fit(self, train: Representation, val: Representation | None) -> None:
        if isinstance(self.n_bins, bool) or not isinstance(self.n_bins, int) or self.n_bins < 2:
            raise ValueError(f"hbos needs an integer n_bins >= 2, got {self.n_bins!r}")
        if not (self.alpha > 0 and self.tol >= 0):
            raise ValueError(f"hbos needs alpha > 0 and tol >= 0, got {self.alpha!r}, {self.tol!r}")
        x = as64(train.features)
        pairs = [np.histogram(x[:, j], bins=self.n_bins, density=True) for j in range(x.shape[1])]
        self.hist_ = np.stack([h for h, _ in pairs], axis=1)
        self.edges_ = np.stack([e for _, e in pairs], axis=1)

    def _score(self, rep: Representation) -> np.ndarray:
        x = as64(rep.features)
        logs = np.log2(self.hist_ + self.alpha)  # (n_bins, d)
        out = np.zeros(x.shape[0])
        for j in range(x.shape[1]):
            edges = self.edges_[:, j]
            bins = np.digitize(x[:, j], edges, right=True)  # 0: below, n_bins + 1: above
            below, above = bins == 0, bins == self.n_bins + 1
            near_low = edges[0] - x[:, j] <= (edges[1] - edges[0]) * self.tol
            near_high = x[:, j] - edges[-1] <= (edges[-1] - edges[-2]) * self.tol
            inside = np.clip(bins, 1, self.n_bins) - 1
            value = logs[inside, j]
            far = (below & ~near_low) | (above & ~near_high)
            out += np.where(far, logs[:, j].min(), value)
        return -out
