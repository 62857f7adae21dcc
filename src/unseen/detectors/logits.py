"""Detectors that read only the logits."""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

import numpy as np
from scipy import optimize, special

from unseen.detectors.base import Detector, NotApplicableError, Paper, logsumexp, softmax
from unseen.detectors.params import Number
from unseen.detectors.registry import register
from unseen.representation import Representation


@register
class MSP(Detector):
    """Maximum softmax probability: score = −max_c softmax(z)_c.

    Hendrycks & Gimpel, ICLR 2017. No hyperparameters.
    """

    name = "msp"
    paper = Paper(
        "A Baseline for Detecting Misclassified and Out-of-Distribution Examples in Neural "
        "Networks",
        "Hendrycks, Gimpel",
        "ICLR",
        2017,
        "https://arxiv.org/abs/1610.02136",
    )
    requires = frozenset({"logits"})

    def _score(self, rep: Representation) -> np.ndarray:
        return -softmax(self._array(rep, "logits")).max(axis=1)


@register
class MLS(Detector):
    """Maximum logit score: score = −max_c z_c.

    Hendrycks et al., "Scaling Out-of-Distribution Detection for Real-World Settings", ICML
    2022. No hyperparameters.
    """

    name = "mls"
    paper = Paper(
        "Scaling Out-of-Distribution Detection for Real-World Settings",
        "Hendrycks, Basart, Mazeika, Zou, Kwon, Mostajabi, Steinhardt, Song",
        "ICML",
        2022,
        "https://arxiv.org/abs/1911.11132",
    )
    requires = frozenset({"logits"})

    def _score(self, rep: Representation) -> np.ndarray:
        return -np.asarray(rep.logits, dtype=np.float64).max(axis=1)


@register
class Energy(Detector):
    """Free energy: score = E(x) = −T · log Σ_c exp(z_c / T).

    Liu, Wang, Owens, Li, NeurIPS 2020. Default T = 1 (the paper's choice); grid
    T ∈ {0.5, 1, 2, 5, 10} (the paper reports T = 1 as best; OpenOOD v1.5 fixes T = 1).
    """

    name = "energy"
    paper = Paper(
        "Energy-based Out-of-distribution Detection",
        "Liu, Wang, Owens, Li",
        "NeurIPS",
        2020,
        "https://arxiv.org/abs/2010.03759",
    )
    requires = frozenset({"logits"})
    grid: ClassVar[dict[str, list[Any]]] = {"temperature": [0.5, 1.0, 2.0, 5.0, 10.0]}
    score_params = frozenset({"temperature"})
    constraints = {"temperature": Number(0, low_open=True)}

    def __init__(self, temperature: float = 1.0) -> None:
        self.temperature = temperature

    def _score(self, rep: Representation) -> np.ndarray:
        return -logsumexp(self._array(rep, "logits"), self.temperature)


def _nll(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    """Mean negative log-likelihood of ``labels`` under softmax(logits / T), in float64.

    Written as softplus(logsumexp_{j≠y} (z_j − z_y) / T) so that NLLs far below machine epsilon
    (confident, correct predictions at small T) stay resolvable instead of rounding to zero.
    """
    z = np.asarray(logits, dtype=np.float64)
    rows = np.arange(z.shape[0])
    d = (z - z[rows, labels][:, None]) / temperature
    d[rows, labels] = -np.inf
    m = d.max(axis=1, keepdims=True)
    others = m[:, 0] + np.log(np.exp(d - m).sum(axis=1))
    return float(np.mean(np.logaddexp(0.0, others)))


@register
class TempScale(Detector):
    """Temperature-scaled maximum softmax probability: score = −max_c softmax(z / T)_c.

    Guo, Pleiss, Sun, Weinberger, ICML 2017. T is fitted on in-distribution validation logits
    and labels by minimising the negative log-likelihood, a 1-D problem solved in log T by
    bounded Brent search over T ∈ [0.01, 100] in float64; when the NLL is smallest at a bound
    (e.g. a separable validation set) that bound is used and a UserWarning says so. No
    hyperparameters to search. OpenOOD v1.5 (``temp_scaling``) fits T with
    L-BFGS from T = 1.5; the minimiser is the same up to solver tolerance.
    """

    name = "tempscale"
    paper = Paper(
        "On Calibration of Modern Neural Networks",
        "Guo, Pleiss, Sun, Weinberger",
        "ICML",
        2017,
        "https://arxiv.org/abs/1706.04599",
    )
    requires = frozenset({"logits"})
    fit_requires = frozenset({"labels"})
    needs_val = True
    log_t_bounds: ClassVar[tuple[float, float]] = (float(np.log(1e-2)), float(np.log(1e2)))

    def _fit(self, train: Representation, val: Representation | None) -> None:
        logits, labels = self._array(val, "logits"), self._array(val, "labels")
        if logits.shape[1] < 2:
            raise NotApplicableError("tempscale needs at least 2 classes")

        def nll(log_t: float) -> float:
            return _nll(logits, labels, float(np.exp(log_t)))

        lo, hi = self.log_t_bounds
        res = optimize.minimize_scalar(
            nll, bounds=(lo, hi), method="bounded", options={"xatol": 1e-10}
        )
        log_t, best = float(res.x), float(res.fun)
        for bound in (lo, hi):
            if nll(bound) <= best:
                log_t, best = bound, nll(bound)
                warnings.warn(
                    f"tempscale: the validation NLL is smallest at the search bound "
                    f"T = {np.exp(bound):.3g}; the validation set may be (nearly) separable",
                    UserWarning,
                    stacklevel=3,
                )
        self.temperature_ = float(np.exp(log_t))

    def _score(self, rep: Representation) -> np.ndarray:
        return -softmax(self._array(rep, "logits"), self.temperature_).max(axis=1)


@register
class GEN(Detector):
    """Generalized entropy of the top-M softmax probabilities:

        score(x) = G_γ(p) = Σ_{j=1..M} p_(j)^γ (1 − p_(j))^γ,

    where p_(1) ≥ p_(2) ≥ … are the sorted softmax probabilities. Liu, Lochman, Zach, CVPR 2023;
    the paper uses −G as the in-distribution score, so higher G = more OOD. Defaults γ = 0.1,
    M = 100 and grid γ ∈ {0.01, 0.1, 0.5, 1, 2, 5, 10} × M ∈ {10, 50, 100, 200, 500, 1000} are
    OpenOOD v1.5's ``gen.yml``. M larger than the number of classes C means all C classes (as
    OpenOOD's top-M slice does); :meth:`search_space` caps M at C and drops duplicates.
    """

    name = "gen"
    paper = Paper(
        "GEN: Pushing the Limits of Softmax-Based Out-of-Distribution Detection",
        "Liu, Lochman, Zach",
        "CVPR",
        2023,
        "https://openaccess.thecvf.com/content/CVPR2023/html/Liu_GEN_Pushing_the_Limits_of_"
        "Softmax-Based_Out-of-Distribution_Detection_CVPR_2023_paper.html",
    )
    requires = frozenset({"logits"})
    grid: ClassVar[dict[str, list[Any]]] = {
        "gamma": [0.01, 0.1, 0.5, 1.0, 2.0, 5.0, 10.0],
        "M": [10, 50, 100, 200, 500, 1000],
    }
    score_params = frozenset({"gamma", "M"})
    constraints = {"gamma": Number(0, low_open=True), "M": Number(1, integer=True)}

    def __init__(self, gamma: float = 0.1, M: int = 100) -> None:
        self.gamma = gamma
        self.M = M

    @classmethod
    def search_space(cls, train: Representation) -> dict[str, list[Any]]:
        c = train.num_classes
        return {"gamma": list(cls.grid["gamma"]), "M": sorted({min(m, c) for m in cls.grid["M"]})}

    def _score(self, rep: Representation) -> np.ndarray:
        p = softmax(self._array(rep, "logits"))
        m = min(int(self.M), p.shape[1])
        top = -np.partition(-p, m - 1, axis=1)[:, :m]
        return (top**self.gamma * (1.0 - top) ** self.gamma).sum(axis=1)


@register
class KLMatching(Detector):
    """KL matching: score(x) = min_c KL(p(x) ‖ d_c),

    where p(x) = softmax(z(x)) and the template d_c is the mean softmax vector of the
    in-distribution validation samples the classifier *predicts* as class c (no labels needed).
    Hendrycks et al., "Scaling Out-of-Distribution Detection for Real-World Settings", ICML 2022.
    No hyperparameters. Classes that no validation sample is predicted as get no template; they
    drop out of the minimum (as if their KL were +∞). OpenOOD v1.5 (``klm``) computes the same
    minimum over all classes, but averages an empty set (a NaN template) for such classes.
    """

    name = "klm"
    paper = Paper(
        "Scaling Out-of-Distribution Detection for Real-World Settings",
        "Hendrycks, Basart, Mazeika, Zou, Kwon, Mostajabi, Steinhardt, Song",
        "ICML",
        2022,
        "https://arxiv.org/abs/1911.11132",
    )
    requires = frozenset({"logits"})
    needs_val = True

    def _fit(self, train: Representation, val: Representation | None) -> None:
        p = softmax(self._array(val, "logits"))
        pred = p.argmax(axis=1)
        self.classes_ = np.unique(pred)
        self.templates_ = np.stack([p[pred == c].mean(axis=0) for c in self.classes_])

    def _score(self, rep: Representation) -> np.ndarray:
        p = softmax(self._array(rep, "logits"))
        d = self.templates_
        # KL(p ‖ d) = Σ p log p − Σ p log d, with 0 log 0 = 0; a template entry that is exactly
        # zero where p > 0 makes that KL infinite.
        neg_entropy = special.xlogy(p, p).sum(axis=1)
        zero = d <= 0
        log_d = np.log(np.where(zero, 1.0, d))
        kl = neg_entropy[:, None] - p @ log_d.T
        kl[((p > 0).astype(np.float64) @ zero.T.astype(np.float64)) > 0] = np.inf
        return kl.min(axis=1)


@register
class Entropy(Detector):
    """Shannon entropy of the softmax: score = H(p) = −Σ_c p_c log p_c.

    The predictive entropy has long been used as an uncertainty/OOD baseline; we cite
    Lakshminarayanan, Pritzel, Blundell, NeurIPS 2017, who evaluate it on unseen classes (our
    choice of reference: the score predates any single paper). No hyperparameters. OpenOOD v1.5
    has no plain entropy postprocessor.
    """

    name = "entropy"
    paper = Paper(
        "Simple and Scalable Predictive Uncertainty Estimation using Deep Ensembles",
        "Lakshminarayanan, Pritzel, Blundell",
        "NeurIPS",
        2017,
        "https://arxiv.org/abs/1612.01474",
    )
    requires = frozenset({"logits"})

    def _score(self, rep: Representation) -> np.ndarray:
        z = np.asarray(rep.logits, dtype=np.float64)
        log_p = z - logsumexp(z)[:, None]
        return -(np.exp(log_p) * log_p).sum(axis=1)
