"""Tabular outlier-detection presets (protocols in :mod:`unseen.benchmark.protocols.tabular`).

``adbench``: the 19 ADBench "Classical" sets of the data bundle (``adbench_classical19``;
Han et al., NeurIPS 2022, taken from ODDS and DAMI), ``--data-root DIR``.

``tabular``: the embedded default, three sets built from data that ships with scikit-learn, so
it runs offline in seconds, in the way ODDS built its sets (one class down-sampled to a few
anomalies, with the fixed seed :data:`SET_SEED`):

* ``wdbc``: breast cancer Wisconsin (diagnostic), ``load_breast_cancer``: the 357 benign rows and
  10 of the 212 malignant ones (367 × 30; ODDS/ADBench ``WDBC`` has the same make-up, not the
  same 10 rows).
* ``wine``: ``load_wine``: classes 1 and 2 (119 rows) and 10 rows of class 0 (129 × 13, as
  ODDS/ADBench ``wine``).
* ``optdigits``: ``load_digits`` (the UCI optdigits test set, 8 × 8): digits 1–9 (1,619 rows) and
  50 zeros (1,669 × 64; ODDS ``optdigits`` uses 150 zeros of the full set).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from unseen.benchmark.presets.registry import register_preset
from unseen.benchmark.protocols.tabular import TabularSpec
from unseen.data.tables import ADBENCH_SUBDIR, Table, adbench_files, from_arrays, read_adbench

#: seed of the anomaly down-sampling of the embedded sets (fixed: it defines the sets)
SET_SEED = 0
ADBENCH_COUNT = 19


class DataRootError(FileNotFoundError):
    """The adbench preset's data root is missing or incomplete."""


def adbench_root(data_root: str | os.PathLike[str] | None) -> Path:
    if data_root is None:
        raise DataRootError(
            "preset 'adbench' needs the data bundle: pass --data-root DIR (Python: data_root=DIR), "
            f"a folder holding {ADBENCH_SUBDIR} (from adbench_classical19.tar.gz); preset 'tabular' "
            "runs without it"
        )
    root = Path(data_root)
    if not root.is_dir():
        raise DataRootError(f"preset 'adbench': data root {root} is not a directory")
    found = adbench_files(root)
    if len(found) != ADBENCH_COUNT:
        raise DataRootError(
            f"preset 'adbench': expected the {ADBENCH_COUNT} ADBench Classical .npz files below "
            f"{root}, found {len(found)}; unpack adbench_classical19.tar.gz again"
        )
    return root


@register_preset("adbench")
def adbench(data_root: str | os.PathLike[str] | None = None) -> TabularSpec:
    """ADBench Classical: 19 tabular sets, unsupervised AUROC/AUPR + conformal novelty thresholds."""
    root = adbench_root(data_root)
    return TabularSpec(
        name="adbench",
        tables=lambda: [read_adbench(p) for p in adbench_files(root)],
        description=(
            "The 19 ADBench 'Classical' sets of the data bundle (ADBench's .npz files, unchanged; "
            "ODDS / DAMI originals). Compare with ADBench's Table of unsupervised results "
            "(Han et al., NeurIPS 2022), which used a 70/30 split, not fit-on-all."
        ),
    )


def _downsampled(name: str, x: np.ndarray, anomaly: np.ndarray, keep: int) -> Table:
    """All normal rows plus ``keep`` anomalies drawn with :data:`SET_SEED`, in the original order."""
    rng = np.random.default_rng(SET_SEED)
    chosen = rng.choice(np.flatnonzero(anomaly), size=keep, replace=False)
    rows = np.sort(np.concatenate([np.flatnonzero(~anomaly), chosen]))
    return from_arrays(x[rows], anomaly[rows], name=name)


def embedded_tables() -> list[Table]:
    """The three sets of the ``tabular`` preset, from scikit-learn's bundled data."""
    from sklearn.datasets import load_breast_cancer, load_digits, load_wine

    cancer: Any = load_breast_cancer()
    wine: Any = load_wine()
    digits: Any = load_digits()
    return [
        _downsampled("wdbc", cancer.data, cancer.target == 0, 10),
        _downsampled("wine", wine.data, wine.target == 0, 10),
        _downsampled("optdigits", digits.data, digits.target == 0, 50),
    ]


@register_preset("tabular")
def tabular() -> TabularSpec:
    """Embedded tabular default: 3 outlier sets built from scikit-learn's bundled data, offline."""
    return TabularSpec(
        name="tabular",
        tables=embedded_tables,
        description=(
            "Three small outlier sets built from data shipped with scikit-learn, ODDS-style (one "
            "class down-sampled to a few anomalies, seed 0): wdbc (breast cancer: benign + 10 "
            "malignant), wine (classes 1, 2 + 10 of class 0), optdigits (digits 1-9 + 50 zeros)."
        ),
    )
