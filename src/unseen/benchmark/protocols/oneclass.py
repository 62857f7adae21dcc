"""One-class novelty detection: fit on one class, flag every other class as novel.

Protocol (one-vs-rest, as in Deep SVDD, Ruff et al. ICML 2018, and DN2, Bergman, Cohen and
Hoshen, "Deep Nearest Neighbor Anomaly Detection", arXiv:2002.10445, 2020): for each class
``c`` a detector is fitted on the frozen-backbone features of the *training* images of ``c``
only and scores the whole test set; test images of ``c`` are normal (label 0), all others novel
(-1). The figure per detector is the mean AUROC over the tasks (and its sample std).

Only detectors that read features alone apply (no classifier exists with one class).
Class-relative scores are excluded with a reason (:data:`EXCLUDED`): with one class they are
constant. No novel data may inform a task, so detectors run at default hyperparameters, with
per-preset overrides (e.g. DN2's k = 2 for ``knn``).
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from unseen import detectors, metrics
from unseen._io import atomic_path, write_text
from unseen.benchmark.protocols import chosen_detectors
from unseen.benchmark.protocols.osr import Loader, mean_std
from unseen.benchmark.protocols.probe import FeatureTable
from unseen.representation import Representation

#: detectors that read only features, but whose score compares a class with the whole
#: training set, which is the same set when there is one class
EXCLUDED = {"rmds": "relative Mahalanobis: class and background Gaussians coincide with one class, "
                    "so every score is 0"}
#: per-task metric keys
METRICS = ("auroc", "aupr_in", "aupr_out", "fpr95_id")


def applicable(names: Iterable[str] | None = None) -> list[str]:
    """Registered detectors (or ``names``) that score from features alone and are not excluded."""
    pool = detectors.names() if names is None else list(names)
    return [n for n in pool if detectors.get(n).requires <= {"features"}
            and detectors.get(n).fit_requires <= {"features", "labels"} and n not in EXCLUDED]


def task_reps(train: FeatureTable, test: FeatureTable, c: int) -> tuple[Representation, Representation]:
    """Training features of class ``c`` (label 0) and the test set (0 for ``c``, -1 otherwise)."""
    rows = np.flatnonzero(train.labels == c)
    if rows.size == 0:
        raise ValueError(f"class {c} has no training rows")
    fit = Representation(features=train.features[rows], labels=np.zeros(rows.size, np.int64))
    labels = np.where(test.labels == c, 0, -1).astype(np.int64)
    if labels.min() == 0 or labels.max() == -1:
        raise ValueError(f"class {c}: the test set needs both normal and novel images")
    return fit, Representation(features=test.features, labels=labels)


@dataclass
class OneClassSpec:
    """A one-vs-rest benchmark: a dataset's features and its class names."""

    name: str
    load: Loader
    class_names: Sequence[str]
    hparams: dict[str, dict[str, Any]] = field(default_factory=dict)
    anchors: Sequence[str] = ()
    meta: dict[str, Any] = field(default_factory=dict)

    def run(
        self,
        detector_names: Sequence[str] | None = None,
        *,
        cache: bool | str | os.PathLike[str] = True,
        seed: int = 0,
        keep_going: bool = False,
        console: Console | None = None,
        device: str = "cpu",
    ) -> OneClassResult:
        """Every class's task for ``detector_names`` (default: every applicable detector)."""
        from unseen.benchmark.protocols.ood import DetectorFailedError, _cache_dir, seed_everything

        names = chosen_detectors(detector_names, applicable, "do not apply to one-class tasks "
                                 "(they need a classifier or are class-relative)")
        start = time.perf_counter()
        train, test = self.load(_cache_dir(cache), device, console is not None)
        result = OneClassResult(self.name, list(self.class_names), anchors=list(self.anchors))
        result.meta.update({"extract_seconds": time.perf_counter() - start, "seed": seed,
                            "train_size": len(train), "test_size": len(test), **self.meta})
        for c in range(len(self.class_names)):
            fit, full = task_reps(train, test, c)
            normal = full.labels == 0
            for name in names:
                seed_everything(seed)
                t0 = time.perf_counter()
                det = detectors.create(name, **self.hparams.get(name, {}))
                try:
                    s = det.fit(fit).score(full)
                except Exception as exc:
                    if not keep_going:
                        raise DetectorFailedError(
                            f"detector {name!r} failed on class {c}: {type(exc).__name__}: {exc} "
                            "(keep_going=True, or `--keep-going`, skips it)") from exc
                    result.failures.setdefault(name, f"class {c}: {type(exc).__name__}: {exc}")
                    continue
                ev = metrics.evaluate(s[normal], s[~normal])
                result.records.append({"detector": name, "class": c,
                                       "class_name": self.class_names[c], "hparams": det.get_params(),
                                       **{k: ev[k] for k in METRICS},
                                       "seconds": time.perf_counter() - t0})
                result.scores.setdefault(name, {})[str(c)] = s
        result.test_labels = np.asarray(test.labels)
        result.meta["wall_time_s"] = time.perf_counter() - start
        return result


COLUMNS = ("detector", "class", "class_name", "hparams", *METRICS, "seconds")


@dataclass
class OneClassResult:
    """One record per (detector, normal class); scores of the whole test set per task."""

    preset: str
    class_names: list[str]
    anchors: list[str] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)
    scores: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    test_labels: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def summary_rows(self) -> list[dict[str, Any]]:
        """Per detector: (mean, std) over classes of each metric, total seconds; best AUROC first."""
        by: dict[str, list[dict[str, Any]]] = {}
        for r in self.records:
            by.setdefault(r["detector"], []).append(r)
        rows = [{"detector": d, "tasks": len(rs), "hparams": rs[0]["hparams"],
                 **{k: mean_std([r[k] for r in rs]) for k in METRICS},
                 "seconds": sum(r["seconds"] for r in rs)} for d, rs in by.items()]
        return sorted(rows, key=lambda r: -r["auroc"][0])

    def to_json(self) -> dict[str, Any]:
        return {"preset": self.preset, "class_names": self.class_names, "records": self.records,
                "summary": self.summary_rows(), "failures": self.failures, "anchors": self.anchors,
                "meta": self.meta}

    def to_csv(self) -> str:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n", extrasaction="ignore")
        writer.writeheader()
        for r in self.records:
            writer.writerow({**r, "hparams": json.dumps(r["hparams"], sort_keys=True)})
        return buf.getvalue()

    def write_outputs(self, out_dir: str | os.PathLike[str]) -> dict[str, Path]:
        from unseen.benchmark.report.openset import write_oneclass_report

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_text(out / "results.json", json.dumps(self.to_json(), indent=2) + "\n")
        write_text(out / "results.csv", self.to_csv())
        arrays = {f"{d}/{k}": v for d, by in self.scores.items() for k, v in by.items()}
        if self.test_labels is not None:
            arrays["test_labels"] = self.test_labels
        with atomic_path(out / "scores.npz") as tmp, tmp.open("wb") as fh:
            np.savez(fh, allow_pickle=False, **arrays)
        files = {n: out / n for n in ("results.json", "results.csv", "scores.npz")}
        files["report.html"] = write_oneclass_report(self, out)
        return files

    def summary(self) -> Iterable[Any]:
        table = Table(title=f"unseen benchmark: {self.preset} (one-vs-rest; mean AUROC over "
                      f"{len(self.class_names)} classes)")
        for col in ("detector", "hparams", "AUROC", "worst class", "best class", "time (s)"):
            table.add_column(col, justify="left" if col in ("detector", "hparams") else "right")
        for row in self.summary_rows():
            per = [r for r in self.records if r["detector"] == row["detector"]]
            lo, hi = min(per, key=lambda r: r["auroc"]), max(per, key=lambda r: r["auroc"])
            table.add_row(row["detector"], json.dumps(row["hparams"]),
                          f"{100 * row['auroc'][0]:.2f} ± {100 * row['auroc'][1]:.2f}",
                          f"{lo['class_name']} {100 * lo['auroc']:.1f}",
                          f"{hi['class_name']} {100 * hi['auroc']:.1f}", f"{row['seconds']:.1f}")
        yield table
        yield (f"wall time {self.meta.get('wall_time_s', 0):.1f} s (features: "
               f"{self.meta.get('extract_seconds', 0):.1f} s); AUROC in %, mean ± sample std")
        yield from (f"anchor (other backbone): {a}" for a in self.anchors)
        yield from (f"[red]failed[/red] {d}: {e}" for d, e in self.failures.items())
