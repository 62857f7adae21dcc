"""A run's files (results.json, results.csv, scores.npz, report.html); ``leaderboard`` (the CLI's
table, from :mod:`unseen.benchmark.report.tables`) is re-exported here."""

from __future__ import annotations

import importlib.util
import os
import tempfile
from pathlib import Path

import numpy as np

from unseen._io import atomic_dir, atomic_path
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
        np.savez(fh, allow_pickle=False, **arrays)
    return path


def load_scores(path: str | os.PathLike[str]) -> dict[str, dict[str, np.ndarray]]:
    """Inverse of :func:`save_scores`."""
    out: dict[str, dict[str, np.ndarray]] = {}
    with np.load(path, allow_pickle=False) as data:
        for key in data.files:
            det, name = key.split("/", 1)
            out.setdefault(det, {})[name] = data[key]
    return out


def check_output_dir(out_dir: str | os.PathLike[str]) -> Path:
    """Raise unless a run's outputs can go to ``out_dir``; call it before the run.

    ``out_dir`` must be absent, an empty folder, or the folder of an earlier run (it has a
    results.json; it is replaced whole), and the nearest existing folder above it writable.
    """
    out = Path(out_dir)
    if out.exists() or out.is_symlink():
        if not out.is_dir():
            raise NotADirectoryError(f"--out {out} exists and is not a folder")
        if any(out.iterdir()) and not (out / "results.json").is_file():
            raise FileExistsError(
                f"--out {out} is a folder with other files and no results.json: not an earlier "
                "run, so it is not replaced; choose a new or empty folder"
            )
    parent = out.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise NotADirectoryError(f"cannot create --out {out}: {parent} is not a folder")
    try:
        tempfile.TemporaryDirectory(dir=parent).cleanup()
    except OSError as exc:
        raise PermissionError(f"cannot write the outputs under {parent}: {exc}") from None
    return out


def write_outputs(result: BenchmarkResult, out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Write results.json, results.csv, scores.npz and (when available) report.html.

    The files are written into a temporary folder beside ``out_dir`` that then replaces it, so
    an interrupted write (Ctrl-C, a failing report) leaves no partial run behind.
    """
    out = check_output_dir(out_dir)
    names = ["results.json", "results.csv", "scores.npz"]
    with atomic_dir(out) as tmp:
        result.write(tmp)
        save_scores(result, tmp / "scores.npz")
        if importlib.util.find_spec("unseen.benchmark.report") is not None:
            from unseen.benchmark.report import write_report

            names.append(Path(write_report(result, tmp)).name)
    return {name: out / name for name in names}

