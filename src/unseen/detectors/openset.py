"""Open-set recognition on the logits: OpenMax, with libMR's Weibull fitting of the distances
to each class's mean activation vector."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from scipy.optimize import brentq

from unseen.detectors.base import Detector, Paper, logsumexp
from unseen.detectors.params import Number, OneOf
from unseen.detectors.registry import register
from unseen.representation import Representation

#: libMR shifts the tail so its smallest value sits at this amount before fitting (its default).
LIBMR_TRANSLATE = 10000.0


def weibull_mle(values: np.ndarray) -> tuple[float, float]:
    """Two-parameter Weibull maximum-likelihood fit (shape k, scale λ), as libMR's
    ``weibull_fit``: the root of the profile-likelihood equation

        Σ xᵢᵏ ln xᵢ / Σ xᵢᵏ − 1/k − mean(ln xᵢ) = 0,    λ = (mean xᵢᵏ)^{1/k}.

    libMR's translated tails sit near 10000 with a spread of ~1, so k reaches 10⁴–10⁶ and the
    fit must be solved to full precision: we work with uᵢ = ln(xᵢ / max x) ≤ 0 (computed with
    log1p) and bracket the root with brentq rather than use a generic optimiser.
    """
    top = float(values.max())
    u = np.log1p((values - top) / top)

    def profile(k: float) -> float:
        e = np.exp(k * u)
        return float((e * u).sum() / e.sum() - 1.0 / k - u.mean())

    high = 1.0
    while profile(high) <= 0.0:
        high *= 2.0
        if high > 1e300:
            raise ValueError("cannot fit a Weibull to these values (no likelihood maximum)")
    shape = brentq(profile, 1e-12, high, xtol=1e-300, rtol=4 * np.finfo(float).eps, maxiter=500)
    scale = top * np.exp(np.log(np.mean(np.exp(shape * u))) / shape)
    return float(shape), float(scale)


def fit_high(values: np.ndarray, tailsize: int) -> tuple[float, float, float]:
    """libMR's ``FitHigh``: a two-parameter Weibull fitted by maximum likelihood to the
    ``tailsize`` largest values after translating them by ``LIBMR_TRANSLATE − min(tail)``.

    Returns (shape, scale, small_score) where small_score = min(tail).
    """
    tail = np.sort(np.asarray(values, dtype=np.float64))[-tailsize:]
    small = float(tail[0])
    if np.ptp(tail) == 0:
        raise ValueError("cannot fit a Weibull to a tail of identical distances")
    shape, scale = weibull_mle(tail + LIBMR_TRANSLATE - small)
    return shape, scale, small


def w_score(
    distances: np.ndarray, shape: np.ndarray, scale: np.ndarray, small: np.ndarray
) -> np.ndarray:
    """libMR's ``W_score`` (the CDF of the fitted Weibull at the translated distance)."""
    shifted = np.maximum(distances + LIBMR_TRANSLATE - small, 0.0)
    return -np.expm1(-((shifted / scale) ** shape))


def _mav_distances(av: np.ndarray, mav: np.ndarray, kind: str) -> np.ndarray:
    """(N, K) distances between activation vectors and mean activation vectors.

    The reference OpenMax code (OSDN) defines euclidean as ‖a − m‖₂ / 200 and eucos as that
    plus the cosine distance 1 − cos(a, m).
    """
    dot = av @ mav.T
    sq_a = (av * av).sum(1)[:, None]
    sq_m = (mav * mav).sum(1)[None, :]
    euclid = np.sqrt(np.maximum(sq_a - 2.0 * dot + sq_m, 0.0)) / 200.0
    if kind == "euclidean":
        return euclid
    cosine = 1.0 - dot / np.maximum(np.sqrt(sq_a * sq_m), 1e-300)
    return cosine if kind == "cosine" else euclid + cosine


def _correct_per_class(logits: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    correct = logits.argmax(axis=1) == labels
    return np.bincount(labels[correct], minlength=n_classes)


@register
class OpenMax(Detector):
    """OpenMax: extreme-value recalibration of the logits with an explicit unknown class.

    Fit: for each class c, the mean activation vector (MAV) μ_c of the logits of correctly
    classified training samples, their distances d to μ_c, and a Weibull fitted to the
    ``tailsize`` largest distances with libMR's FitHigh procedure (sort, keep the tail,
    translate by 10000 − min(tail), two-parameter maximum-likelihood fit; see
    :func:`weibull_mle`). Score: rank the classes by logit v; for the top α,
    ω_c = (α + 1 − rank_c)/α · CDF_c(d(v, μ_c)) (rank 1 = largest logit), ω_c = 0 otherwise;

        v̂_c = v_c (1 − ω_c),   v̂_0 = Σ_c v_c ω_c,   score(x) = exp(v̂_0) / Σ_{k=0..C} exp(v̂_k),

    the OpenMax probability of the unknown class. Bendale & Boult, CVPR 2016; the activation
    vector is the logit layer, as in the paper.

    Defaults tailsize = 20, α = 3, distance "eucos" (euclidean/200 + cosine, as in the
    authors' OSDN code; also "euclidean" (÷200) and "cosine"). OpenOOD v1.5 hard-codes
    tailsize 20, α 3 and has no sweep, so the grid tailsize ∈ {10, 20, 50, 100},
    α ∈ {1, 2, 3, 5, 10} is ours; values above the smallest per-class count of correctly
    classified training samples, or above C, are dropped from the search.

    Differences: the rank weight (α + 1 − i)/α is that of the authors' OSDN code and OpenOOD
    (the top class gets full weight); the paper's Algorithm 2 prints (α − i)/α, as far as we
    can tell a typo, since it leaves the α-th class untouched. OpenOOD uses the
    unscaled euclidean distance and returns the largest of the C + 1 OpenMax probabilities as
    its confidence; we return the unknown-class probability (the paper's rejection score).
    """

    name = "openmax"
    paper = Paper(
        "Towards Open Set Deep Networks",
        "Bendale, Boult",
        "CVPR",
        2016,
        "https://arxiv.org/abs/1511.06233",
    )
    requires = frozenset({"logits"})
    fit_requires = frozenset({"labels"})
    grid: ClassVar[dict[str, list[Any]]] = {"tailsize": [10, 20, 50, 100], "alpha": [1, 2, 3, 5, 10]}
    score_params = frozenset({"alpha"})
    _DISTANCES = ("eucos", "euclidean", "cosine")
    constraints = {
        "tailsize": Number(2, integer=True),
        "alpha": Number(1, integer=True),
        "distance": OneOf(_DISTANCES),
    }

    def __init__(self, tailsize: int = 20, alpha: int = 3, distance: str = "eucos") -> None:
        self.tailsize = tailsize
        self.alpha = alpha
        self.distance = distance

    @classmethod
    def search_space(cls, train: Representation) -> dict[str, list[Any]]:
        grid = dict(cls.grid)
        if train.logits is None or train.labels is None:
            return grid
        n_classes = train.logits.shape[1]
        fewest = _correct_per_class(np.asarray(train.logits), train.labels, n_classes).min()
        grid["tailsize"] = [t for t in grid["tailsize"] if 2 <= t <= fewest]
        grid["alpha"] = [a for a in grid["alpha"] if a <= n_classes]
        return grid

    def _fit(self, train: Representation, val: Representation | None) -> None:
        logits = np.asarray(self._array(train, "logits"), dtype=np.float64)
        labels = self._array(train, "labels")
        self._check_alpha(logits.shape[1])
        n_classes = logits.shape[1]
        counts = _correct_per_class(logits, labels, n_classes)
        if counts.min() < self.tailsize:
            short = np.flatnonzero(counts < self.tailsize).tolist()
            raise ValueError(
                f"openmax tailsize={self.tailsize} needs that many correctly classified training "
                f"samples in every class; classes {short[:10]} have fewer (smallest count "
                f"{counts.min()}): lower tailsize"
            )
        correct = logits.argmax(axis=1) == labels
        members = [logits[correct & (labels == c)] for c in range(n_classes)]
        self.mav_ = np.stack([av.mean(axis=0) for av in members])
        fits = [
            fit_high(_mav_distances(av, self.mav_[c : c + 1], self.distance)[:, 0], self.tailsize)
            for c, av in enumerate(members)
        ]
        self.weibull_shape_, self.weibull_scale_, self.weibull_small_ = (
            np.array(col) for col in zip(*fits, strict=True)
        )

    def _check_alpha(self, n_classes: int) -> None:
        if self.alpha > n_classes:
            raise ValueError(
                f"openmax alpha={self.alpha} exceeds the number of classes {n_classes}"
            )

    def _score(self, rep: Representation) -> np.ndarray:
        v = np.asarray(rep.logits, dtype=np.float64)
        n, n_classes = v.shape
        self._check_alpha(n_classes)
        top = np.argsort(-v, axis=1, kind="stable")[:, : self.alpha]
        rank_weight = np.zeros_like(v)
        rank_weight[np.arange(n)[:, None], top] = (self.alpha - np.arange(self.alpha)) / self.alpha
        cdf = w_score(
            _mav_distances(v, self.mav_, self.distance),
            self.weibull_shape_,
            self.weibull_scale_,
            self.weibull_small_,
        )
        omega = rank_weight * cdf
        revised = np.concatenate([(v * omega).sum(axis=1, keepdims=True), v * (1.0 - omega)], 1)
        return np.exp(revised[:, 0] - logsumexp(revised))
