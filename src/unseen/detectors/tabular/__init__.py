"""Detectors for features-only data: table rows or embeddings (``Representation(features=X)``).

They import numpy, scipy and scikit-learn only (no torch, no faiss), and keep every fitted state
as arrays, so a guard persists them without pickle. Modules: ``forest`` (iforest), ``neighbours``
(kthnn, lof, kde), ``marginal`` (ecod, copod, hbos), ``boundary`` (ocsvm, pca).

Besides ``fit`` and ``score`` each detector has ``fit_score(rep)``: fit on ``rep`` and return
the scores of its own rows, where a row is not its own evidence (a row is not its own nearest
neighbour; an ECDF counts the row once). This is PyOD's ``decision_scores_`` and what the
unsupervised ADBench protocol (fit on X, score the same X) needs.
"""

from unseen.detectors.tabular import boundary, forest, marginal, neighbours  # noqa: F401
from unseen.detectors.tabular._base import TabularDetector

#: the registered names of this family, in the order the ADBench preset lists them
NAMES = ("iforest", "lof", "kthnn", "ecod", "copod", "hbos", "ocsvm", "pca", "kde")

__all__ = ["NAMES", "TabularDetector"]
