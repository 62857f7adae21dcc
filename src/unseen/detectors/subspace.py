"""Detectors that measure how far a feature leaves the principal subspace of the training data.

Both come from Wang, Li, Feng, Zhang, "ViM: Out-Of-Distribution with Virtual-logit Matching",
CVPR 2022. Features are measured from the origin o = −W⁺b (W⁺ the pseudo-inverse of the head's
weight), the point the head maps to all-zero logits. The principal subspace P is spanned by the
top-``dim`` eigenvectors of the *uncentred* second-moment matrix (1/N) Σ (x_i − o)(x_i − o)ᵀ of
the training features, as in the official code (scikit-learn's ``EmpiricalCovariance`` with
``assume_centered=True``); the residual of x is its component (x − o)^{P⊥} orthogonal to P.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from unseen.detectors.base import Detector, Paper, logsumexp
from unseen.detectors.params import Number
from unseen.detectors.registry import register
from unseen.representation import Representation

_VIM_PAPER = Paper(
    "ViM: Out-Of-Distribution with Virtual-logit Matching",
    "Wang, Li, Feng, Zhang",
    "CVPR",
    2022,
    "https://arxiv.org/abs/2203.10807",
)


def default_dim(n_features: int) -> int:
    """The paper's rule for the principal dimension: 1000 if D ≥ 1500, 512 if D = 768, else D/2."""
    if n_features >= 1500:
        return 1000
    if n_features == 768:
        return 512
    return n_features // 2


class _Subspace(Detector):
    """Shared fit of ViM and Residual: origin, residual basis and the training features' norms."""

    paper = _VIM_PAPER
    requires = frozenset({"features"})
    fit_requires = frozenset({"head"})
    # OpenOOD v1.5 (configs/postprocessors/vim.yml): dim ∈ {256, 1000}, default 256.
    grid: ClassVar[dict[str, list[Any]]] = {"dim": [256, 1000]}
    constraints = {"dim": Number(1, integer=True, none=True)}

    def __init__(self, dim: int | None = None) -> None:
        self.dim = dim

    @classmethod
    def search_space(cls, train: Representation) -> dict[str, list[Any]]:
        if train.features is None:  # fit will refuse it: it requires features
            return dict(cls.grid)
        d = train.features.shape[1]
        dims = [k for k in cls.grid["dim"] if k < d]
        return {"dim": dims or [default_dim(d)]}

    def _dim(self, n_features: int) -> int:
        dim = default_dim(n_features) if self.dim is None else self.dim
        if not (isinstance(dim, int | np.integer) and 1 <= dim < n_features):
            raise ValueError(
                f"{self.name} needs an integer principal dimension 1 <= dim < {n_features} "
                f"(the feature dimension), got {self.dim}"
            )
        return int(dim)

    def _fit(self, train: Representation, val: Representation | None) -> None:
        x = np.asarray(train.features, dtype=np.float64)
        self._keep_head(train)
        dim = self._dim(x.shape[1])
        if len(x) <= dim:
            # With N <= dim samples P⊥ lies in the data's null space, where eigh picks the
            # eigenvectors arbitrarily: the residuals would be rounding noise.
            raise ValueError(
                f"{self.name} needs more training samples than the principal dimension "
                f"dim={dim}, got {len(x)}; lower dim or fit on more samples"
            )
        self.origin_ = -np.linalg.pinv(self.weight_) @ self.bias_
        shifted = x - self.origin_
        _, eigvec = np.linalg.eigh(shifted.T @ shifted / x.shape[0])
        # eigh sorts eigenvalues ascending: the first D − dim eigenvectors span P⊥.
        self.residual_basis_ = np.ascontiguousarray(eigvec[:, : x.shape[1] - dim])

    def _residual_norm(self, features: np.ndarray) -> np.ndarray:
        shifted = np.asarray(features, dtype=np.float64) - self.origin_
        return np.linalg.norm(shifted @ self.residual_basis_, axis=1)


@register
class ViM(_Subspace):
    """Virtual-logit matching: score(x) = α‖(x − o)^{P⊥}‖ − log Σ_c exp z_c.

    The paper appends the virtual logit z₀ = α‖(x − o)^{P⊥}‖ to the logits z = Wx + b and scores
    its softmax probability e^{z₀} / (e^{z₀} + Σ_c e^{z_c}) = σ(score(x)); we return score(x), a
    strictly increasing function of it that does not saturate in float64 (the official code and
    OpenOOD return −score(x)). α = Σ_i max_c z_ic / Σ_i ‖(x_i − o)^{P⊥}‖ over the training set
    matches the residual to the logit scale; ``alpha`` overrides the fitted value (with α = 0 the
    score is exactly the energy −log Σ_c exp z_c of the head's logits).

    Hyperparameters: ``dim``, the principal dimension (default ``None``: the paper's rule, 1000 if
    D ≥ 1500, 512 if D = 768, D/2 otherwise); grid dim ∈ {256, 1000} (OpenOOD v1.5), keeping
    values below D, or the paper's rule when none is. OpenOOD before late 2025 fitted the subspace
    once and never refitted it when its search changed ``dim``, so its ViM search returned one
    setting's scores for every grid point; here ``dim`` is a fit parameter and every grid point is
    refitted.
    """

    name = "vim"
    score_params = frozenset({"alpha"})
    constraints = {
        "dim": Number(1, integer=True, none=True),
        "alpha": Number(0, none=True, text="None (fitted) or a finite number >= 0"),
    }

    def __init__(self, dim: int | None = None, alpha: float | None = None) -> None:
        self.dim = dim
        self.alpha = alpha

    def _fit(self, train: Representation, val: Representation | None) -> None:
        super()._fit(train, val)
        x = np.asarray(train.features, dtype=np.float64)
        max_logit = (x @ self.weight_.T + self.bias_).max(axis=1)
        residual = self._residual_norm(x)
        if residual.sum() <= 0:
            raise ValueError(
                "the training features lie entirely in the principal subspace (zero residual); "
                "choose a smaller dim"
            )
        self.fitted_alpha_ = float(max_logit.sum() / residual.sum())

    def _score(self, rep: Representation) -> np.ndarray:
        x = np.asarray(rep.features, dtype=np.float64)
        alpha = self.fitted_alpha_ if self.alpha is None else float(self.alpha)
        logits = x @ self.weight_.T + self.bias_
        return alpha * self._residual_norm(x) - logsumexp(logits)


@register
class Residual(_Subspace):
    """Residual norm: score(x) = ‖(x − o)^{P⊥}‖, the norm of the feature's component outside the
    principal subspace (the ViM paper's "Residual" baseline; OpenOOD's ``residual``, which
    returns its negative).

    Hyperparameter ``dim`` as for :class:`ViM` (same default rule and grid).
    """

    name = "residual"

    def _score(self, rep: Representation) -> np.ndarray:
        return self._residual_norm(self._array(rep, "features"))
