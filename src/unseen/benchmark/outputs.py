"""A run's files (results.json, results.csv, scores.npz, report.html) and its leaderboard."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import numpy as np

from unseen._io import atomic_path
from unseen.benchmark.result import BenchmarkResult


def save_scores(result: BenchmarkResult, path: Path) -> Path:
    """Every detector's scores as ``<detector>/<dataset>`` arrays in one .npz (no pickle)."""
    arrays = {
        f"{det}/{name}": np.asarray(s, dtype=np.float64)
        for det, by_set in result.scores.items()
        for name, s in by_set.items()
    }
    with atomic_path(path) as tmp, tmp.open("wb") as fh:
        np.savez(fh, **arrays)
    return path


def load_scores(path: str | os.PathLike[str]) -> dict[str, dict[str, np.ndarray]]:
    """Inverse of :func:`save_scores`."""
    out: dict[str, dict[str, np.ndarray]] = {}
    with np.load(path, allow_pickle=False) as data:
        for key in data.files:
            det, name = key.split("/", 1)
            out.setdefault(det, {})[name] = data[key]
    return out


def write_outputs(result: BenchmarkResult, out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Write results.json, results.csv, scores.npz and (when available) report.html."""
    out = Path(out_dir)
    result.write(out)
    files = {
        "results.json": out / "results.json",
        "results.csv": out / "results.csv",
        "scores.npz": save_scores(result, out / "scores.npz"),
    }
    if importlib.util.find_spec("unseen.benchmark.report") is not None:
        from unseen.benchmark.report import write_report

        files["report.html"] = Path(write_report(result, out))
    return files


def leaderboard(result: BenchmarkResult) -> list[dict[str, Any]]:
    """One row per detector: hparams, group-mean AUROC and FPR95 (ID positive), time.

    Sorted by near-OOD AUROC, best first (far AUROC when there is no near group; missing
    values last; ties keep the detectors' run order).
    """
    rows = []
    for det, seconds in result.timings.items():
        hparams = next(r["hparams"] for r in result.records if r["detector"] == det)
        row: dict[str, Any] = {"detector": det, "hparams": hparams, "seconds": seconds}
        for group in ("near", "far"):
            row[f"{group}_auroc"] = result.mean(det, group, "auroc")
            row[f"{group}_fpr95"] = result.mean(det, group, "fpr95_id")
        rows.append(row)
    key = "near_auroc" if "near" in result.groups else "far_auroc"
    return sorted(rows, key=lambda r: -r[key] if r[key] is not None else float("inf"))
