"""What a benchmark run produces, its files (results.json and results.csv), and the one
definition of its best detector (:meth:`BenchmarkResult.ranking`)."""

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

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> BenchmarkResult:
        """A run read back from its folder or its ``results.json`` (scores are not loaded).

        Raises FileNotFoundError when there is no results.json and ValueError when the file
        is not a benchmark result.
        """
        path = Path(path)
        file = path / "results.json" if path.is_dir() else path
        if not file.is_file():
            raise FileNotFoundError(f"no results.json in {path}: not a benchmark run folder")
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
            raise ValueError(f"{file} is not valid JSON: {exc}") from None
        if not isinstance(data, dict) or not isinstance(data.get("preset"), str) or not (
            isinstance(data.get("records"), list)
            and all(isinstance(r, dict) and {"detector", "group", "dataset"} <= set(r)
                    for r in data["records"])
        ):
            raise ValueError(f"{file} is not a benchmark result (needs preset and records)")
        groups = data.get("groups")
        if not isinstance(groups, dict):  # older files: the groups the records name
            groups = {}
            for r in data["records"]:
                names = groups.setdefault(r["group"], [])
                if r["dataset"] != "mean" and r["dataset"] not in names:
                    names.append(r["dataset"])
        return cls(
            preset=data["preset"],
            id_accuracy=data.get("id_accuracy"),
            records=data["records"],
            groups=groups,
            search=data.get("search") or {},
            not_applicable=data.get("not_applicable") or {},
            timings=data.get("timings") or {},
            meta=data.get("meta") or {},
        )

    @property
    def ranking_group(self) -> str:
        """The group that ranks detectors: near-OOD, or far-OOD when there is no near group."""
        return "near" if "near" in self.groups else "far"

    def ranking(self) -> list[str]:
        """Detectors best first: by mean AUROC over the :attr:`ranking_group`'s datasets.

        The one ordering of detectors: the leaderboard, the report and ``calibrate --from-run``
        all use it. Detectors without a value come last; ties keep the run order.
        """
        group = self.ranking_group
        detectors = list(dict.fromkeys(r["detector"] for r in self.records))
        values = {d: self.mean(d, group) for d in detectors}

        def key(d: str) -> float:
            value = values[d]
            return float("inf") if value is None else -value

        return sorted(detectors, key=key)

    def best(self) -> str:
        """The first detector of :meth:`ranking`; ValueError when no detector has a value."""
        ranked = self.ranking()
        if not ranked or self.mean(ranked[0], self.ranking_group) is None:
            raise ValueError(
                f"no detector of this {self.preset} run has a {self.ranking_group}-OOD AUROC"
            )
        return ranked[0]

    def hparams(self, detector: str) -> dict[str, Any]:
        """The hyperparameters selected for ``detector``; ValueError when it did not run."""
        for r in self.records:
            if r["detector"] == detector:
                return dict(r.get("hparams") or {})
        ran = sorted({r["detector"] for r in self.records})
        raise ValueError(f"this {self.preset} run has no results for detector {detector!r}; it has {ran}")

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
