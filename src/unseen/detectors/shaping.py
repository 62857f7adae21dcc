"""Detectors that reshape the penultimate activations (or the head's weights) and then score the
energy −log Σ_c exp z_c of the classifier head's logits on the result.

All of them read the head (weight W, bias b) from the training representation in ``fit``, so a
representation scored later needs only features. Percentile conventions: a *training* threshold
at percentile p is ``np.percentile`` of all training activations pooled (linear
interpolation); a *per-sample* or *per-weight* "prune below the p-th percentile" keeps the
k = n − round(n·p/100) largest of the n values, as the official ASH code does, and keeps every
value tied with the k-th largest so the result never depends on the order of tied units (the
official code's ``torch.topk`` keeps exactly k and breaks ties arbitrarily).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from unseen.detectors.base import Detector, NotApplicableError, Paper, logsumexp
from unseen.detectors.params import Number, OneOf
from unseen.detectors.registry import register
from unseen.representation import Representation


def _kept_count(n: int, percentile: float) -> int:
    return n - int(np.round(n * percentile / 100.0))


def keep_top(values: np.ndarray, percentile: float, axis: int | None) -> np.ndarray:
    """Boolean mask of the k = n − round(n·p/100) largest values along ``axis`` (all values if
    ``axis`` is None), ties with the k-th largest included."""
    n = values.size if axis is None else values.shape[axis]
    k = _kept_count(n, percentile)
    if k < 1:
        raise ValueError(
            f"percentile {percentile} keeps none of {n} values; use a smaller percentile"
        )
    flat = values.reshape(-1) if axis is None else values
    kth = np.partition(flat, n - k, axis=-1 if axis is None else axis)
    kth = kth[n - k] if axis is None else np.take(kth, [n - k], axis=axis)
    return values >= kth


#: a percentile that may prune everything but must keep something: [0, 100)
_PRUNING = Number(0, 100, high_open=True)


def _pooled(train: Representation) -> np.ndarray:
    """All training activations as one float64 vector (percentiles in float64 precision)."""
    return np.asarray(train.features, dtype=np.float64).reshape(-1)


class _ShapedEnergy(Detector):
    """Stores the head at fit time; scores the energy of the head on shaped features."""

    requires = frozenset({"features"})
    fit_requires = frozenset({"head"})

    def _fit(self, train: Representation, val: Representation | None) -> None:
        self._keep_head(train)

    def _energy(self, features: np.ndarray, weight: np.ndarray | None = None) -> np.ndarray:
        w = self.weight_ if weight is None else weight
        return -logsumexp(features @ w.T + self.bias_)


@register
class ReAct(_ShapedEnergy):
    """Rectified activations: score(x) = −log Σ_c exp(W min(x, c) + b)_c, with the clip value c
    the ``percentile``-th percentile of all training activations pooled.

    Sun, Guo, Li, NeurIPS 2021. Default percentile 90; grid {85, 90, 95, 99} (OpenOOD v1.5).
    OpenOOD estimates c on the ID validation split; we use the training representation.
    With percentile 100, c is the largest training activation, so features within the training
    range are unchanged and the score is the plain energy.
    """

    name = "react"
    paper = Paper(
        "ReAct: Out-of-distribution Detection With Rectified Activations",
        "Sun, Guo, Li",
        "NeurIPS",
        2021,
        "https://arxiv.org/abs/2111.12797",
    )
    grid: ClassVar[dict[str, list[Any]]] = {"percentile": [85, 90, 95, 99]}
    constraints = {"percentile": Number(0, 100)}

    def __init__(self, percentile: float = 90) -> None:
        self.percentile = percentile

    def _fit(self, train: Representation, val: Representation | None) -> None:
        super()._fit(train, val)
        self.threshold_ = float(np.percentile(_pooled(train), self.percentile))

    def _score(self, rep: Representation) -> np.ndarray:
        x = np.asarray(rep.features, dtype=np.float64)
        return self._energy(np.minimum(x, self.threshold_))


@register
class DICE(_ShapedEnergy):
    """Directed sparsification: score(x) = −log Σ_c exp((W ⊙ M) x + b)_c.

    The contribution of unit j to class c is V_cj = W_cj · x̄_j (x̄ the mean training feature);
    the mask M keeps the k = n − round(n·p/100) largest of the n = C·D contributions (sparsity p
    percent) and zeroes the other weights. Sun & Li, ECCV 2022. Default p = 90 (OpenOOD v1.5,
    whose search fixes p = 90); grid p ∈ {10, 30, 50, 70, 90} (our choice, around it). The
    official code and OpenOOD keep contributions strictly above ``np.percentile(V, p)``, which
    can keep one weight fewer and, at p = 0, drops the smallest; ours keeps all at p = 0.
    """

    name = "dice"
    paper = Paper(
        "DICE: Leveraging Sparsification for Out-of-Distribution Detection",
        "Sun, Li",
        "ECCV",
        2022,
        "https://arxiv.org/abs/2111.09805",
    )
    grid: ClassVar[dict[str, list[Any]]] = {"p": [10, 30, 50, 70, 90]}
    constraints = {"p": Number(0, 100, high_open=True, text="a sparsity percentile in [0, 100)")}

    def __init__(self, p: float = 90) -> None:
        self.p = p

    def _fit(self, train: Representation, val: Representation | None) -> None:
        super()._fit(train, val)
        mean = np.asarray(train.features, dtype=np.float64).mean(axis=0)
        contribution = self.weight_ * mean
        self.masked_weight_ = np.where(keep_top(contribution, self.p, None), self.weight_, 0.0)

    def _score(self, rep: Representation) -> np.ndarray:
        return self._energy(np.asarray(rep.features, dtype=np.float64), self.masked_weight_)


class _PerSampleShaping(_ShapedEnergy):
    """ASH and SCALE: shaping driven by each sample's own ``percentile``-th percentile."""

    @classmethod
    def search_space(cls, train: Representation) -> dict[str, list[Any]]:
        # Drop percentiles that would prune every unit of a narrow feature vector.
        space = dict(cls.grid)
        if train.features is None:  # fit will refuse it: it requires features
            return space
        d = train.features.shape[1]
        space["percentile"] = [p for p in cls.grid["percentile"] if _kept_count(d, p) >= 1]
        return space


def _sharpening(x: np.ndarray, kept: np.ndarray, name: str) -> np.ndarray:
    """exp(s1/s2) per row: s1 the sum of all activations, s2 the sum of the kept ones."""
    if (x < 0).any():
        raise NotApplicableError(
            f"{name} needs non-negative (post-ReLU) features: exp(s1/s2) is meaningless when "
            "activations can cancel; use ash with variant 'p' or 'b' instead"
        )
    s1 = x.sum(axis=1)
    s2 = np.where(kept, x, 0.0).sum(axis=1)
    # s2 = 0 only for an all-zero row, whose shaped features are zero whatever the factor.
    return np.exp(np.divide(s1, s2, out=np.ones_like(s1), where=s2 > 0))


@register
class ASH(_PerSampleShaping):
    """Activation shaping: score(x) = −log Σ_c exp(W a(x) + b)_c, where per sample the
    activations below its own ``percentile``-th percentile are zeroed (the k = n − round(n·p/100)
    largest are kept, see the module docstring) and the kept ones are

    * ``variant="p"`` (ASH-P): left unchanged;
    * ``variant="b"`` (ASH-B): all set to s1/K, s1 the sum of all activations, K the number kept;
    * ``variant="s"`` (ASH-S): multiplied by exp(s1/s2), s2 the sum of the kept activations
      (needs non-negative features).

    Djurisic, Bozanic, Ashok, Liu, ICLR 2023. Defaults variant "s", percentile 90 (OpenOOD v1.5's
    default percentile); grid variant ∈ {p, b, s} and percentile ∈ {65, 70, ..., 95} (OpenOOD
    v1.5). At percentile 0 everything is kept: ASH-P is the plain energy, ASH-B the energy of the
    constant vector mean(x)·1, ASH-S the energy of e·x. OpenOOD's ``ash`` postprocessor passes the
    percentile to ``forward_threshold``, which on networks not wrapped for ASH is ReAct's clip at
    the *value* 90, leaving typical features unchanged: there it is plain energy.
    """

    name = "ash"
    paper = Paper(
        "Extremely Simple Activation Shaping for Out-of-Distribution Detection",
        "Djurisic, Bozanic, Ashok, Liu",
        "ICLR",
        2023,
        "https://arxiv.org/abs/2209.09858",
    )
    grid: ClassVar[dict[str, list[Any]]] = {
        "variant": ["p", "b", "s"],
        "percentile": [65, 70, 75, 80, 85, 90, 95],
    }
    score_params = frozenset({"variant", "percentile"})
    constraints = {"variant": OneOf(("p", "b", "s"), "'p', 'b' or 's'"), "percentile": _PRUNING}

    def __init__(self, variant: str = "s", percentile: float = 90) -> None:
        self.variant = variant
        self.percentile = percentile

    def _score(self, rep: Representation) -> np.ndarray:
        x = np.asarray(rep.features, dtype=np.float64)
        kept = keep_top(x, self.percentile, axis=1)
        if self.variant == "p":
            shaped = np.where(kept, x, 0.0)
        elif self.variant == "b":
            fill = x.sum(axis=1) / kept.sum(axis=1)
            shaped = np.where(kept, fill[:, None], 0.0)
        else:
            shaped = np.where(kept, x, 0.0) * _sharpening(x, kept, "ash-s")[:, None]
        return self._energy(shaped)


@register
class SCALE(_PerSampleShaping):
    """Activation scaling: score(x) = −log Σ_c exp(W (exp(s1/s2) · x) + b)_c, with s1 the sum of
    the sample's activations and s2 the sum of those at or above its own ``percentile``-th
    percentile (as ASH-S, but nothing is pruned: only the factor uses the pruned sum).

    Xu, Chen, Franchi, Yao, ICLR 2024. Needs non-negative features. Default percentile 85 (OpenOOD
    v1.5); grid {65, 70, ..., 95} (OpenOOD v1.5). At percentile 0, s1 = s2 and the score is the
    energy of e·x. OpenOOD's ``scale`` postprocessor shares ASH's defect (it calls
    ``forward_threshold`` with the percentile, a ReAct clip at the value 85 on most networks, so
    it scores plain energy).
    """

    name = "scale"
    paper = Paper(
        "Scaling for Training Time and Post-hoc Out-of-distribution Detection Enhancement",
        "Xu, Chen, Franchi, Yao",
        "ICLR",
        2024,
        "https://arxiv.org/abs/2310.00227",
    )
    grid: ClassVar[dict[str, list[Any]]] = {"percentile": [65, 70, 75, 80, 85, 90, 95]}
    score_params = frozenset({"percentile"})
    constraints = {"percentile": _PRUNING}

    def __init__(self, percentile: float = 85) -> None:
        self.percentile = percentile

    def _score(self, rep: Representation) -> np.ndarray:
        x = np.asarray(rep.features, dtype=np.float64)
        kept = keep_top(x, self.percentile, axis=1)
        return self._energy(x * _sharpening(x, kept, "scale")[:, None])


@register
class VRA(_ShapedEnergy):
    """Variational rectified activation: score(x) = −log Σ_c exp(W g(x) + b)_c, with g applied
    to each activation z:

        g(z) = 0 if z < α,   z + γ if α ≤ z ≤ β,   β if z > β,

    α and β the ``low``-th and ``high``-th percentiles of all training activations pooled.
    Xu, Lian, Liu, Tao, NeurIPS 2023 (the "VRA" variant, as in the official code). Defaults
    low 60, high 95, γ 0.5, one point of the paper's grid; grid low ∈ {50, 60, 65, 70},
    high ∈ {80, 85, 90, 95, 99}, gamma ∈ {0.2, ..., 0.7} (the paper's search). OpenOOD v1.5's
    ``vra`` instead clips to [α, β] (raising low activations to α, no γ) with
    low ∈ {1, 5, 10, 15}, high ∈ {85, 90, 95, 99}: that is not the paper's g. The official
    code's quick path takes per-unit quantiles; we pool all units, as ReAct and OpenOOD do.
    With low 0 and γ 0, features at or above the smallest training activation get ReAct's
    score at percentile ``high``.
    """

    name = "vra"
    paper = Paper(
        "VRA: Variational Rectified Activation for Out-of-distribution Detection",
        "Xu, Lian, Liu, Tao",
        "NeurIPS",
        2023,
        "https://arxiv.org/abs/2302.11716",
    )
    grid: ClassVar[dict[str, list[Any]]] = {
        "low": [50, 60, 65, 70],
        "high": [80, 85, 90, 95, 99],
        "gamma": [0.2, 0.3, 0.4, 0.5, 0.6, 0.7],
    }
    score_params = frozenset({"gamma"})
    constraints = {"low": Number(0, 100), "high": Number(0, 100), "gamma": Number(0)}

    def __init__(self, low: float = 60, high: float = 95, gamma: float = 0.5) -> None:
        self.low = low
        self.high = high
        self.gamma = gamma

    def _check_joint(self, params: Mapping[str, Any]) -> None:
        if params["high"] < params["low"]:
            raise ValueError(f"vra high must be in [low={params['low']}, 100], got {params['high']}")

    def _fit(self, train: Representation, val: Representation | None) -> None:
        super()._fit(train, val)
        alpha, beta = np.percentile(_pooled(train), [self.low, self.high])
        self.alpha_, self.beta_ = float(alpha), float(beta)

    def _score(self, rep: Representation) -> np.ndarray:
        x = np.asarray(rep.features, dtype=np.float64)
        clipped = np.where(x > self.beta_, self.beta_, x + self.gamma)
        shaped = np.where(x < self.alpha_, 0.0, clipped)
        return self._energy(shaped)
