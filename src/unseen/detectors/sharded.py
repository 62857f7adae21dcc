"""Score a large test representation in row shards on a runner (this process or a Ray pool).

The detector is fitted once, by the caller. What the workers get is its class, ``get_params()``
and ``fitted_state()`` (arrays, numbers and strings: the pickle-free state a guard directory
holds), sent once through the runner's ``map_shards`` (for Ray: one object-store copy every
task reads); each worker rebuilds the detector with ``from_state`` and scores its rows. Only
row-wise, cache-based detectors qualify: a network detector needs the model and its inputs, and
a detector whose score of one row depends on the other rows cannot be split.

kNN-type detectors keep their whole training bank in the state, so every worker holds a copy;
for banks that do not fit one process see ``docs/scale-out.md`` (faiss IVF / IVF-PQ, measured by
``benchmarks/knn_ivf.py``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from unseen.detectors.base import Detector, NotFittedError
from unseen.extraction.runners import LocalRunner, Runner
from unseen.representation import Representation

#: rows per shard by default: big enough that rebuilding a detector's helpers (a faiss index)
#: per shard is cheap next to scoring it
SHARD_ROWS = 65536


def score_sharded(
    detector: Detector,
    rep: Representation,
    *,
    runner: Runner | None = None,
    shard_rows: int = SHARD_ROWS,
) -> np.ndarray:
    """``detector.score(rep)`` computed shard by shard on ``runner`` (default: this process).

    Returns the (N,) float64 scores in ``rep``'s row order. Raises ``NotFittedError`` for an
    unfitted detector and ``ValueError`` for a detector that cannot be split by rows.
    """
    if not getattr(detector, "fitted_", False):
        raise NotFittedError(f"{detector.name} is not fitted: call fit(train) before scoring")
    if "network" in detector.requires:
        raise ValueError(
            f"{detector.name} runs the network again and cannot be scored from shards of a "
            "representation; score it with detector.score(rep)"
        )
    if not detector.row_wise:
        raise ValueError(
            f"{detector.name} scores a row using the other rows (row_wise = False): score the "
            "whole representation with detector.score(rep)"
        )
    if shard_rows < 1:
        raise ValueError(f"shard_rows must be >= 1, got {shard_rows}")
    n = len(rep)
    if n == 0:
        raise ValueError(f"{detector.name}: cannot score an empty representation")
    state = (type(detector), detector.get_params(), detector.fitted_state())
    shards = [rep.subset(slice(i, min(i + shard_rows, n))) for i in range(0, n, shard_rows)]
    parts = (runner or LocalRunner()).map_shards(_score_shard, state, shards)
    return np.concatenate(parts)


def _score_shard(state: tuple[type[Detector], dict[str, Any], dict[str, Any]],
                 shard: Representation) -> np.ndarray:
    cls, params, fitted = state
    return cls.from_state(params, fitted).score(shard)
