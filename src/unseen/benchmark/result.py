"""What a benchmark run produces, and its files: results.json and results.csv."""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from unseen._io import write_text

#: metric columns of every record, in report order
METRICS = ("auroc", "aupr_in", "aupr_out", "fpr95_id", "fpr95_ood")
#: record columns, in file order
COLUMNS = ("detector", "hparams", "group", "dataset", *METRICS)


@dataclass
class BenchmarkResult:
    """One benchmark run.

    ``records`` follow the README's schema: one per (detector, OOD dataset) plus one per
    (detector, group) with ``"dataset": "mean"`` (the unweighted mean over the group's datasets).
    ``scores[detector]`` maps ``"id"`` (ID test) and each OOD test set to that detector's OOD
    scores with the selected hyperparameters; the report plots them. ``not_applicable`` maps
    each detector that refused this model or data by a declared requirement to its reason; such
    a detector has no records, scores or timings.
    """

    preset: str
    id_accuracy: float | None
    records: list[dict[str, Any]]
    groups: dict[str, list[str]]
    scores: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    search: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    not_applicable: dict[str, str] = field(default_factory=dict)

    def mean(self, detector: str, group: str, metric: str = "auroc") -> float | None:
        for r in self.records:
            if r["detector"] == detector and r["group"] == group and r["dataset"] == "mean":
                return r[metric]
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "preset": self.preset,
            "id_accuracy": self.id_accuracy,
            "groups": self.groups,
            "records": self.records,
            "search": self.search,
            "timings": self.timings,
            "meta": self.meta,
            "not_applicable": self.not_applicable,
        }

    def to_csv(self) -> str:
        """The records as a table. When detectors were not applicable, a last column
        ``not_applicable`` gives each of them one row with its reason and empty metrics."""
        columns = (*COLUMNS, "not_applicable") if self.not_applicable else COLUMNS
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for r in self.records:
            writer.writerow({**r, "hparams": json.dumps(r["hparams"], sort_keys=True)})
        for detector, reason in self.not_applicable.items():
            writer.writerow({"detector": detector, "not_applicable": reason})
        return buf.getvalue()

    def write(self, out_dir: str | os.PathLike[str]) -> None:
        """Write results.json and results.csv atomically into ``out_dir``."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_text(out / "results.json", json.dumps(self.to_json(), indent=2) + "\n")
        write_text(out / "results.csv", self.to_csv())
