"""A run's files (results.json, results.csv, scores.npz, report.html); ``leaderboard`` (the CLI's
table, from :mod:`unseen.benchmark.report.tables`) is re-exported here."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np

from unseen._io import atomic_path
from unseen.benchmark.report.tables import leaderboard
from unseen.benchmark.result import BenchmarkResult

__all__ = ["leaderboard", "load_scores", "save_scores", "write_outputs"]


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
