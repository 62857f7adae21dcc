"""Outlier detection on tables: ADBench's unsupervised protocol, and a semi-supervised novelty
protocol whose thresholds come with a stated false-alarm or false-discovery guarantee.

**Unsupervised** (Han et al., "ADBench: Anomaly Detection Benchmark", NeurIPS 2022, the setting
of PyOD's benchmark): each detector is fitted on *all* rows of a set, anomalies included and
unlabelled, and scores the same rows (``fit_score``: a row is not its own neighbour). Features
are min–max scaled to [0, 1] first, as ADBench's data generator does. Metrics: AUROC and AUPR
(average precision, anomalies positive). Detectors with a ``seed`` run with ``seeds`` seeds and
report the mean. The summary is ADBench's: mean AUROC and the average rank over the sets.

**Novelty** (semi-supervised): the normal rows are shuffled (seeded) into fit (50 %),
calibration (25 %) and the rest; the test set is the rest plus every anomaly. A detector fitted
on the fit rows scores calibration and test rows; the split-conformal threshold at α = 0.05
(:mod:`unseen.guard.conformal`) flags test rows, and Benjamini–Hochberg on the conformal p-values
selects at FDR 0.1. Reported: the realised false-alarm rate on test normals (guaranteed ≤ α in
expectation over splits), the realised FDR of the BH selection (≤ 0.1 in expectation) and the
recall of each, next to PyOD's contamination threshold on the same split, the
100·(1 − 0.1)-th percentile of the *training* scores, which promises nothing.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import Progress
from rich.table import Table as RichTable
from scipy.stats import rankdata

from unseen import detectors
from unseen.data.tables import Table
from unseen.detectors.tabular import NAMES, TabularDetector
from unseen.guard.conformal import benjamini_hochberg, conformal_threshold, p_values
from unseen.metrics import aupr_out, auroc
from unseen.representation import Representation

ALPHA = 0.05
FDR = 0.1
CONTAMINATION = 0.1
FIT_FRACTION = 0.5
CAL_FRACTION = 0.25


# -- preprocessing and scoring --------------------------------------------------------------
def minmax(fit_rows: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """x ↦ (x − min) / (max − min) with min and max of ``fit_rows``; a constant column maps to 0."""
    lo = fit_rows.min(axis=0)
    span = fit_rows.max(axis=0) - lo
    span = np.where(span > 0, span, 1.0)
    return lambda x: (x - lo) / span


def _rep(x: np.ndarray) -> Representation:
    # label 0 for every fit row: the detectors see one unlabelled "normal" class
    return Representation(features=x, labels=np.zeros(x.shape[0], dtype=np.int64))


def make_detector(name: str, seed: int) -> detectors.Detector:
    det = detectors.create(name)
    return det.set_params(seed=seed) if "seed" in det.get_params() else det


def fit_scores(det: detectors.Detector, rows: np.ndarray) -> np.ndarray:
    """Fit ``det`` on ``rows`` and score them (``fit_score`` where the detector has it)."""
    rep = _rep(rows)
    if isinstance(det, TabularDetector):
        return det.fit_score(rep)
    return det.fit(rep).score(rep)


def is_randomised(name: str) -> bool:
    return "seed" in detectors.get(name)().get_params()


# -- the two protocols on one table ----------------------------------------------------------
def unsupervised(table: Table, name: str, seeds: Sequence[int]) -> dict[str, Any]:
    """ADBench's setting on ``table`` for detector ``name``: one record."""
    x = minmax(table.features)(table.features)
    runs = seeds if is_randomised(name) else seeds[:1]
    aurocs, auprs, seconds = [], [], []
    for s in runs:
        start = time.perf_counter()
        scores = fit_scores(make_detector(name, s), x)
        seconds.append(time.perf_counter() - start)
        normal, anomalous = scores[~table.anomaly], scores[table.anomaly]
        aurocs.append(auroc(normal, anomalous))
        auprs.append(aupr_out(normal, anomalous))
    return {
        "dataset": table.name, "detector": name, "auroc": float(np.mean(aurocs)),
        "aupr": float(np.mean(auprs)), "auroc_std": float(np.std(aurocs)), "seeds": list(runs),
        "seconds": float(np.mean(seconds)),
    }


@dataclass(frozen=True)
class NoveltySplit:
    """Row indices of one seeded fit / calibration / test split of a table."""

    fit: np.ndarray
    cal: np.ndarray
    test: np.ndarray

    @classmethod
    def draw(cls, anomaly: np.ndarray, seed: int, fit_fraction: float = FIT_FRACTION,
             cal_fraction: float = CAL_FRACTION) -> NoveltySplit:
        normal = np.flatnonzero(~anomaly)
        order = np.random.default_rng(seed).permutation(normal)
        n_fit = round(fit_fraction * normal.size)
        n_cal = round(cal_fraction * normal.size)
        test = np.concatenate([order[n_fit + n_cal:], np.flatnonzero(anomaly)])
        return cls(np.sort(order[:n_fit]), np.sort(order[n_fit:n_fit + n_cal]), np.sort(test))


def thresholded(cal: np.ndarray, test: np.ndarray, is_anomaly: np.ndarray, train: np.ndarray,
                alpha: float = ALPHA, fdr: float = FDR,
                contamination: float = CONTAMINATION) -> dict[str, float]:
    """False alarms, discoveries and recall of the three thresholds on one split's scores."""
    normal = ~is_anomaly
    out: dict[str, float] = {}
    flags = {
        "conformal": test > conformal_threshold(cal, alpha),
        "bh": benjamini_hochberg(p_values(np.sort(cal), test), fdr),
        "contamination": test > np.percentile(train, 100 * (1 - contamination)),
    }
    for rule, flagged in flags.items():
        out[f"{rule}_fa_rate"] = float(flagged[normal].mean()) if normal.any() else math.nan
        out[f"{rule}_recall"] = float(flagged[is_anomaly].mean()) if is_anomaly.any() else math.nan
        out[f"{rule}_fdr"] = float((flagged & normal).sum() / max(int(flagged.sum()), 1))
        out[f"{rule}_flagged"] = int(flagged.sum())
    return out


def novelty(table: Table, name: str, seed: int) -> dict[str, Any]:
    """The semi-supervised novelty setting on ``table`` for detector ``name``: one record."""
    split = NoveltySplit.draw(table.anomaly, seed)
    scale = minmax(table.features[split.fit])
    det = make_detector(name, seed)
    start = time.perf_counter()
    train = fit_scores(det, scale(table.features[split.fit]))
    cal = det.score(_rep(scale(table.features[split.cal])))
    test = det.score(_rep(scale(table.features[split.test])))
    seconds = time.perf_counter() - start
    is_anomaly = table.anomaly[split.test]
    return {
        "dataset": table.name, "detector": name, "seed": seed, "seconds": seconds,
        "n_fit": int(split.fit.size), "n_cal": int(split.cal.size),
        "n_test_normal": int((~is_anomaly).sum()), "n_test_anomaly": int(is_anomaly.sum()),
        "auroc": auroc(test[~is_anomaly], test[is_anomaly]),
        **thresholded(cal, test, is_anomaly, train),
    }


# -- the benchmark over many tables ------------------------------------------------------------
@dataclass
class TabularSpec:
    """A tabular benchmark (satisfies :class:`unseen.benchmark.protocols.TaskSpec`).

    ``tables`` loads the sets (called once per run, so building the spec reads nothing).
    """

    name: str
    tables: Callable[[], list[Table]]
    description: str = ""
    seeds: int = 3
    novelty: bool = True

    def run(
        self,
        detector_names: Sequence[str] | None = None,
        *,
        cache: bool | str | os.PathLike[str] = True,
        seed: int = 0,
        keep_going: bool = False,
        console: Console | None = None,
        device: str = "cpu",
    ) -> TabularResult:
        """Both protocols for every detector on every table. ``cache`` and ``device`` are
        accepted for the CLI and unused: nothing here runs a model."""
        names = list(NAMES if detector_names is None else detector_names)
        for n in names:
            detectors.get(n)  # unknown names fail before any work
        tables = self.tables()
        seeds = [seed + i for i in range(self.seeds)]
        result = TabularResult(self.name, names, [t.name for t in tables], meta={
            "description": self.description, "seed": seed, "seeds": seeds,
            "alpha": ALPHA, "fdr": FDR, "contamination": CONTAMINATION,
            "datasets": {t.name: {"n": len(t), "d": int(t.features.shape[1]),
                                  "anomalies": t.n_anomalies} for t in tables},
        })
        start = time.perf_counter()
        jobs = [(t, n) for t in tables for n in names]
        with Progress(console=console or Console(stderr=True), transient=True) as progress:
            task = progress.add_task(f"{self.name}", total=len(jobs))
            for table, name in jobs:
                progress.update(task, description=f"{table.name}: {name}")
                self._one(result, table, name, seeds, keep_going)
                progress.advance(task)
        result.meta["wall_time_s"] = time.perf_counter() - start
        return result

    def _one(self, result: TabularResult, table: Table, name: str, seeds: list[int],
             keep_going: bool) -> None:
        try:
            result.records.append(unsupervised(table, name, seeds))
            if self.novelty:
                result.novelty.append(novelty(table, name, seeds[0]))
        except Exception as exc:
            if not keep_going:
                raise RuntimeError(f"{name} failed on {table.name}: {exc}") from exc
            result.failures[f"{name}@{table.name}"] = f"{type(exc).__name__}: {exc}"


@dataclass
class TabularResult:
    """Records of a tabular run (satisfies :class:`unseen.benchmark.protocols.TaskResult`)."""

    name: str
    detectors: list[str]
    datasets: list[str]
    records: list[dict[str, Any]] = field(default_factory=list)
    novelty: list[dict[str, Any]] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def matrix(self, metric: str = "auroc") -> np.ndarray:
        """(datasets × detectors) of ``metric``; NaN where a detector failed."""
        out = np.full((len(self.datasets), len(self.detectors)), np.nan)
        for r in self.records:
            out[self.datasets.index(r["dataset"]), self.detectors.index(r["detector"])] = r[metric]
        return out

    def leaderboard(self) -> list[dict[str, Any]]:
        """Per detector: mean AUROC / AUPR and ADBench's average AUROC rank (1 = best, ties
        share the mean rank) over the sets every detector completed, best rank first."""
        auc, ap = self.matrix("auroc"), self.matrix("aupr")
        complete = ~np.isnan(auc).any(axis=1)
        ranks = np.array([rankdata(-row) for row in auc[complete]]).reshape(-1, auc.shape[1])
        nov = self.novelty_summary()
        rows = []
        for j, det in enumerate(self.detectors):
            rows.append({
                "detector": det,
                "mean_auroc": _nanmean(auc[:, j]), "mean_aupr": _nanmean(ap[:, j]),
                "avg_rank": float(ranks[:, j].mean()) if ranks.size else math.nan,
                "datasets": int((~np.isnan(auc[:, j])).sum()), **nov.get(det, {}),
            })
        return sorted(rows, key=lambda r: (math.isnan(r["avg_rank"]), r["avg_rank"]))

    def novelty_summary(self) -> dict[str, dict[str, float]]:
        """Per detector, the mean over sets of each novelty figure (false alarms, FDR, recall)."""
        keys = [f"{rule}_{what}" for rule in ("conformal", "bh", "contamination")
                for what in ("fa_rate", "fdr", "recall")]
        out: dict[str, dict[str, float]] = {}
        for det in self.detectors:
            recs = [r for r in self.novelty if r["detector"] == det]
            if recs:
                out[det] = {f"novelty_{k}": _nanmean(np.array([r[k] for r in recs])) for k in keys}
        return out

    def write_outputs(self, out_dir: str | os.PathLike[str]) -> dict[str, Path]:
        from unseen.benchmark.report.tabular import write_files

        return write_files(self, out_dir)

    def summary(self) -> Iterable[Any]:
        board = RichTable(title=f"unseen benchmark: {self.name} (unsupervised, sorted by average rank)")
        for col in ("detector", "mean AUROC", "mean AUPR", "avg rank", "conformal FA", "BH FDR",
                    "BH recall", "contam. FA", "contam. recall"):
            board.add_column(col, justify="left" if col == "detector" else "right")
        for r in self.leaderboard():
            board.add_row(r["detector"], _pct(r["mean_auroc"]), _pct(r["mean_aupr"]),
                          f"{r['avg_rank']:.2f}", *(_pct(r.get(f"novelty_{k}")) for k in (
                              "conformal_fa_rate", "bh_fdr", "bh_recall",
                              "contamination_fa_rate", "contamination_recall")))
        notes = [
            board,
            f"AUROC, AUPR in % over {len(self.datasets)} sets (fit on all rows, score the same rows; "
            f"seeded detectors: mean of {len(self.meta.get('seeds', []))} seeds); rank 1 = best.",
            f"Novelty split (fit 50 % / calibrate 25 % of normals, test the rest + all anomalies), "
            f"means over sets: conformal FA = false-alarm rate on test normals at α = {ALPHA} "
            f"(bound {100 * ALPHA:.0f} %); BH at FDR {FDR}; contam. = PyOD's threshold, the "
            f"{100 * (1 - CONTAMINATION):.0f}th percentile of training scores.",
            f"wall time: {self.meta.get('wall_time_s', 0.0):.1f} s",
        ]
        notes += [f"[red]failed[/red] {k}: {v}" for k, v in self.failures.items()]
        return notes


def _nanmean(values: np.ndarray) -> float:
    values = np.asarray(values, dtype=np.float64)
    return float(np.nanmean(values)) if (~np.isnan(values)).any() else math.nan


def _pct(value: float | None) -> str:
    return "–" if value is None or math.isnan(value) else f"{100 * value:.2f}"
