"""What the tabular detectors share: ``fit_score``, the float64 view of the features, and
bounded-memory blocks for (rows × training rows) products."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from unseen.detectors.base import Detector
from unseen.representation import Representation

#: at most this many entries in one (query block × training rows) matrix (128 MiB as float64)
BLOCK_ENTRIES = 1 << 24


class TabularDetector(Detector):
    """A detector of feature rows, with :meth:`fit_score` for the fit-on-X-score-X setting."""

    requires = frozenset({"features"})

    def fit_score(self, rep: Representation) -> np.ndarray:
        """Fit on ``rep`` and return its rows' scores (PyOD's ``decision_scores_``).

        The default scores the rows with :meth:`score`; detectors whose scores would count a
        row as its own evidence override :meth:`_fit_scores`.
        """
        self.fit(rep)
        scores = self._fit_scores(rep)
        if scores is None:
            return self.score(rep)
        scores = np.asarray(scores, dtype=np.float64)
        if not np.isfinite(scores).all():
            raise FloatingPointError(f"{self.name} produced non-finite scores on its fit rows")
        return scores

    def _fit_scores(self, rep: Representation) -> np.ndarray | None:
        return None


def as64(features: np.ndarray | None) -> np.ndarray:
    """The features as float64 (``Detector.fit`` / ``score`` have checked they are present)."""
    if features is None:
        raise ValueError("this detector needs features, which this Representation lacks")
    return np.asarray(features, dtype=np.float64)


def row_blocks(n_rows: int, n_train: int) -> Iterator[slice]:
    """Slices of at most ``BLOCK_ENTRIES // n_train`` rows covering ``range(n_rows)``."""
    step = max(1, BLOCK_ENTRIES // max(1, n_train))
    for start in range(0, n_rows, step):
        yield slice(start, min(start + step, n_rows))


def sq_distances(x: np.ndarray, y: np.ndarray, y_sq: np.ndarray) -> np.ndarray:
    """‖x_i − y_j‖² via |x|² − 2x·y + |y|², clipped at 0 (``y_sq`` = row norms² of ``y``)."""
    d = (x * x).sum(1)[:, None] - 2.0 * (x @ y.T) + y_sq[None, :]
    return np.maximum(d, 0.0)
