"""Small synthetic inputs shared by the guard tests."""

from __future__ import annotations

import numpy as np

from unseen import Representation


def make_rep(n: int, seed: int, classes: int = 3, dim: int = 6) -> Representation:
    """Non-negative features around class centres, a nearest-centre head, matching labels."""
    rng = np.random.default_rng(seed)
    centres = np.abs(np.random.default_rng(100).normal(size=(classes, dim))) * 2.5
    labels = np.arange(n) % classes
    features = np.abs(centres[labels] + rng.normal(scale=0.8, size=(n, dim))).astype(np.float32)
    weight = (2 * centres).astype(np.float32)
    bias = -(centres**2).sum(axis=1).astype(np.float32)
    return Representation(features, features @ weight.T + bias, labels, weight, bias)


def random_digits(n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, size=(28, 28), dtype=np.uint8) for _ in range(n)]


def scores_rep(scores: np.ndarray) -> Representation:
    """A representation whose `mls` score (−max logit) is exactly ``scores``."""
    return Representation(logits=(-np.asarray(scores, dtype=np.float32))[:, None])
