"""Isolation Forest: scikit-learn grows the trees; their node arrays are kept and scored in numpy."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from sklearn.ensemble import IsolationForest

from unseen.detectors.base import Paper
from unseen.detectors.registry import register
from unseen.detectors.tabular._base import TabularDetector
from unseen.representation import Representation


def average_path_length(n: np.ndarray) -> np.ndarray:
    """c(n) = 2 H(n − 1) − 2 (n − 1)/n with H(i) ≈ ln i + γ: the mean path length of an
    unsuccessful search in a binary search tree of n points; c(1) = 0, c(2) = 1."""
    n = np.asarray(n, dtype=np.float64)
    out = np.where(n == 2, 1.0, 0.0)
    big = n > 2
    out[big] = 2.0 * (np.log(n[big] - 1.0) + np.euler_gamma) - 2.0 * (n[big] - 1.0) / n[big]
    return out


@register
class IForest(TabularDetector):
    """Isolation Forest: anomalies are isolated by few random splits.

        score(x) = 2^(−E_t[h_t(x)] / c(ψ)),

    where h_t(x) is the depth of the leaf of tree t that x reaches plus c(size of that leaf),
    ψ the subsample size per tree and c the average path length above (higher = more
    anomalous; this is −``IsolationForest.score_samples``). Liu, Ting, Zhou, ICDM 2008.

    The trees are grown by scikit-learn (``max_features=1.0``, no bootstrap); the fitted state
    is their node arrays, concatenated: ``feature_``, ``threshold_``, ``left_``/``right_``
    (global node ids; a leaf points to itself on both sides, so its threshold, 0, never matters;
    every array stays finite, as a guard requires of a fitted state) and ``leaf_value_``
    (depth + c(n_leaf) − 1, as scikit-learn adds it), plus ``roots_``. Scoring walks all trees
    at once in numpy, comparing the features rounded to float32 as scikit-learn's trees do, and
    adds the trees in their order, so scores equal scikit-learn's bit for bit. Defaults as the
    paper and scikit-learn: 100 trees, ψ = min(256, n); ``seed`` sets the randomness. Grid:
    ``n_estimators`` ∈ {50, 100, 200}, ``max_samples`` ∈ {64, 256, 1024} (capped at n).
    """

    name = "iforest"
    paper = Paper("Isolation Forest", "Liu, Ting, Zhou", "ICDM", 2008,
                  "https://doi.org/10.1109/ICDM.2008.17")
    grid: ClassVar[dict[str, list[Any]]] = {"n_estimators": [50, 100, 200],
                                            "max_samples": [64, 256, 1024]}

    def __init__(self, n_estimators: int = 100, max_samples: int | str = "auto",
                 seed: int = 0) -> None:
        self.n_estimators = n_estimators
        self.max_samples = max_samples
        self.seed = seed

    def _fit(self, train: Representation, val: Representation | None) -> None:
        samples: int | str = self.max_samples
        if isinstance(samples, int) and not isinstance(samples, bool):
            samples = min(samples, len(train))
        forest = IsolationForest(n_estimators=self.n_estimators, max_samples=samples,
                                 random_state=self.seed).fit(np.asarray(train.features))
        offsets = np.cumsum([0] + [e.tree_.node_count for e in forest.estimators_])
        parts: dict[str, list[np.ndarray]] = {k: [] for k in ("f", "t", "l", "r", "v")}
        for tree, start in zip(forest.estimators_, offsets[:-1], strict=False):
            t = tree.tree_
            leaf = t.children_left < 0
            own = np.arange(t.node_count) + start
            parts["f"].append(np.where(leaf, 0, t.feature))
            parts["t"].append(np.where(leaf, 0.0, t.threshold))
            parts["l"].append(np.where(leaf, own, t.children_left + start))
            parts["r"].append(np.where(leaf, own, t.children_right + start))
            parts["v"].append(t.compute_node_depths() + average_path_length(t.n_node_samples) - 1.0)
        self.feature_ = np.concatenate(parts["f"]).astype(np.int64)
        self.threshold_ = np.concatenate(parts["t"]).astype(np.float64)
        self.left_ = np.concatenate(parts["l"]).astype(np.int64)
        self.right_ = np.concatenate(parts["r"]).astype(np.int64)
        self.leaf_value_ = np.concatenate(parts["v"]).astype(np.float64)
        self.roots_ = offsets[:-1].astype(np.int64)
        self.depth_ = int(max(e.tree_.max_depth for e in forest.estimators_))
        self.max_samples_ = int(forest.max_samples_)

    def _score(self, rep: Representation) -> np.ndarray:
        # scikit-learn's trees compare float32 features with float64 thresholds
        x = np.asarray(rep.features, dtype=np.float32).astype(np.float64)
        n, dim = x.shape
        flat, row_start = x.ravel(), (np.arange(n) * dim)[:, None]
        children = np.stack([self.right_, self.left_])  # children[go_left, node]
        nodes = np.broadcast_to(self.roots_, (n, self.roots_.size))
        for _ in range(self.depth_):
            go_left = flat[row_start + self.feature_[nodes]] <= self.threshold_[nodes]
            nodes = children[go_left.view(np.int8), nodes]
        values = self.leaf_value_[nodes]
        depths = np.zeros(x.shape[0])
        for t in range(values.shape[1]):  # tree by tree, the order scikit-learn adds them in
            depths += values[:, t]
        denominator = values.shape[1] * average_path_length(np.array([self.max_samples_]))[0]
        return 2.0 ** (-(depths / denominator)) if denominator > 0 else np.ones(x.shape[0])
