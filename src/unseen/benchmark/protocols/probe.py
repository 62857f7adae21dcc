"""Frozen features and a linear probe: what the open-set, one-class and feature-OOD protocols share.

A frozen backbone runs once over a dataset (through :func:`unseen.extract`'s cache); the
protocols then only select rows of the cached features. :class:`LinearHead` is the classifier of
a trial: a deterministic multinomial logistic regression whose input standardisation is folded
into its weights, so ``logits = features @ weight.T + bias`` on the *raw* features and every
head-based detector reads it like the last layer of a network.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from unseen.benchmark.spec import PreparedModel
from unseen.representation import Representation

#: the inverse-regularisation values a head tries; the best closed-set accuracy on known-class
#: validation rows wins (the first on ties)
DEFAULT_C = (0.1, 1.0)
#: lbfgs iterations; the fit is deterministic (lbfgs has no random step)
MAX_ITER = 1000


@dataclass(frozen=True)
class FeatureTable:
    """Features (N, D) float32 and integer labels (N,) of one dataset, in dataset order."""

    features: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        if self.features.ndim != 2 or self.labels.shape != (self.features.shape[0],):
            raise ValueError(
                f"FeatureTable needs (N, D) features and (N,) labels, got {self.features.shape} "
                f"and {self.labels.shape}"
            )

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def take(self, rows: np.ndarray) -> FeatureTable:
        return FeatureTable(self.features[rows], self.labels[rows])


class IndexedSubset(Dataset):
    """Items ``indices`` (in that order) of a dataset that has ``identity()``.

    ``identity()`` extends the inner dataset's with a hash of the indices, so the extraction
    cache tells two subsets apart; ``transform`` is the inner dataset's (part of the cache key).
    """

    def __init__(self, inner: Any, indices: Sequence[int] | np.ndarray) -> None:
        idx = np.asarray(indices, dtype=np.int64)
        if idx.ndim != 1 or (idx.size and (idx.min() < 0 or idx.max() >= len(inner))):
            raise IndexError(f"IndexedSubset: indices must be 1-D and lie in [0, {len(inner)})")
        if not callable(getattr(inner, "identity", None)):
            raise TypeError(f"{type(inner).__name__} has no identity() to cache a subset by")
        self.inner = inner
        self.indices = idx

    @property
    def transform(self) -> Any:
        return getattr(self.inner, "transform", None)

    @property
    def samples(self) -> list[Any] | None:
        samples = getattr(self.inner, "samples", None)
        return None if samples is None else [samples[i] for i in self.indices]

    def __len__(self) -> int:
        return int(self.indices.size)

    def __getitem__(self, index: int) -> Any:
        return self.inner[int(self.indices[index])]

    def identity(self) -> str:
        digest = hashlib.sha256(self.indices.astype("<i8").tobytes()).hexdigest()
        return f"{self.inner.identity()}[{self.indices.size} items:{digest}]"


def per_class_rows(labels: np.ndarray, counts: Sequence[int], seed: int) -> list[np.ndarray]:
    """Disjoint random rows of every class: ``counts[j]`` per class for part ``j`` (seeded).

    Returns one sorted index array per part. A class with fewer rows than ``sum(counts)``
    raises ValueError.
    """
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in counts]
    for c in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == c))
        if rows.size < sum(counts):
            raise ValueError(f"class {c} has {rows.size} rows, fewer than {sum(counts)} requested")
        cuts = np.cumsum(counts)[:-1]
        for part, chunk in zip(parts, np.split(rows[: sum(counts)], cuts), strict=True):
            part.append(chunk)
    return [np.sort(np.concatenate(p)) for p in parts]


def holdout(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split row positions per class into (kept, held out), ``fraction`` of each class held out."""
    rng = np.random.default_rng(seed)
    held = []
    for c in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == c))
        held.append(rows[: max(1, round(fraction * rows.size))])
    out = np.sort(np.concatenate(held))
    return np.setdiff1d(np.arange(labels.size), out), out


def extract_features(
    prepared: PreparedModel,
    data: Dataset,
    cache_dir: Path | None,
    *,
    device: str = "cpu",
    num_workers: int = 0,
    progress: bool = True,
) -> FeatureTable:
    """The backbone's features of ``data``: extracted once, then read from the cache."""
    import unseen

    rep = unseen.extract(
        prepared.model,
        data,
        head=prepared.head,
        penultimate=prepared.penultimate,
        input_std=prepared.input_std,
        cache=False if cache_dir is None else cache_dir,
        progress=progress,
        num_workers=num_workers,
        device=device,
    )
    if rep.features is None or rep.labels is None:
        raise ValueError("the backbone produced no features or the data no labels")
    return FeatureTable(np.asarray(rep.features, dtype=np.float32), np.asarray(rep.labels))


@dataclass
class LinearHead:
    """Multinomial logistic regression on standardised features, folded into (weight, bias).

    scikit-learn's ``LogisticRegression(solver="lbfgs", C=C, max_iter=MAX_ITER)``; ``C`` is
    chosen from ``Cs`` by closed-set accuracy on ``val`` (first on ties). Standardisation
    z = (x − μ) / σ (σ of constant columns set to 1) is folded in: W = A / σ, b = c − W μ, so
    ``logits = x @ W.T + b`` on raw features equals the classifier's decision function.
    """

    Cs: tuple[float, ...] = DEFAULT_C
    max_iter: int = MAX_ITER

    def fit(self, train: FeatureTable, val: FeatureTable | None = None) -> LinearHead:
        from sklearn.linear_model import LogisticRegression

        x = train.features.astype(np.float64)
        self.mean_ = x.mean(axis=0)
        std = x.std(axis=0)
        self.scale_ = np.where(std > 0, std, 1.0)
        z = (x - self.mean_) / self.scale_
        self.classes_ = np.unique(train.labels)
        if self.classes_.size < 2 or not np.array_equal(self.classes_, np.arange(self.classes_.size)):
            raise ValueError(
                f"a head needs labels 0..C-1 with C >= 2, got classes {self.classes_.tolist()}"
            )
        best: tuple[float, float, Any] | None = None
        for c in self.Cs:
            model = LogisticRegression(C=c, solver="lbfgs", max_iter=self.max_iter)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # non-convergence is recorded in n_iter_ below
                model.fit(z, train.labels)
            acc = 1.0 if val is None else float(np.mean(self._predict(model, val) == val.labels))
            if best is None or acc > best[0]:
                best = (acc, c, model)
        assert best is not None
        self.val_accuracy_, self.C_, model = best
        self.n_iter_ = int(np.max(model.n_iter_))
        self.weight_ = (model.coef_ / self.scale_).astype(np.float32)
        self.bias_ = (model.intercept_ - (model.coef_ / self.scale_) @ self.mean_).astype(np.float32)
        self._model = model
        return self

    def _predict(self, model: Any, table: FeatureTable) -> np.ndarray:
        return np.asarray(model.predict((table.features.astype(np.float64) - self.mean_) / self.scale_))

    def decision_function(self, features: np.ndarray) -> np.ndarray:
        """scikit-learn's decision function on standardised ``features`` (the reference)."""
        z = (features.astype(np.float64) - self.mean_) / self.scale_
        return np.asarray(self._model.decision_function(z))

    def representation(
        self, table: FeatureTable, labels: np.ndarray, meta: dict[str, Any] | None = None
    ) -> Representation:
        """``table``'s features with this head, its logits and ``labels`` (-1 = unknown / OOD)."""
        logits = table.features @ self.weight_.T + self.bias_
        return Representation(
            features=table.features,
            logits=logits,
            labels=labels,
            weight=self.weight_,
            bias=self.bias_,
            meta=dict(meta or {}),
        )

    def describe(self) -> dict[str, Any]:
        return {"C": self.C_, "val_accuracy": self.val_accuracy_, "n_iter": self.n_iter_,
                "max_iter": self.max_iter, "Cs": list(self.Cs)}


#: features of a dataset given the cache directory: what a preset hands its protocol
FeatureFn = Callable[[Path | None], FeatureTable]
