"""Fit + score time of every tabular detector next to PyOD's implementation of the same detector.

Tables: ADBench's ``shuttle`` (49,097 × 9, from ``--data-root``) and a synthetic 100,000 × 64
Gaussian table (1 % shifted rows), both min–max scaled. What is timed: fitting on all rows and
scoring the same rows (unseen: ``fit_score``; PyOD: ``fit``, which computes
``decision_scores_``), in a fresh subprocess per (implementation, detector, table), with a wall
limit (``--timeout``; a run over it prints "> limit"). Defaults on both sides except: unseen's
``ocsvm`` fits on a 10,000-row subsample above that size (PyOD on all rows), and PyOD's ``PCA``
scores eigenvalue-weighted distances to all components, ours the reconstruction error.

    PYTHONPATH=src python benchmarks/tabular_speed.py --data-root /work/data [--timeout 120]
        [--only iforest,ecod] [--rows 100000]

Timings depend on the machine and its load: say how many cores it had and whether it was shared.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PYOD = {"iforest": ("iforest", "IForest"), "lof": ("lof", "LOF"), "kthnn": ("knn", "KNN"),
        "ecod": ("ecod", "ECOD"), "copod": ("copod", "COPOD"), "hbos": ("hbos", "HBOS"),
        "ocsvm": ("ocsvm", "OCSVM"), "pca": ("pca", "PCA"), "kde": ("kde", "KDE")}


def worker(impl: str, name: str, path: str) -> None:
    """Time one fit + score in this process and print the seconds as JSON."""
    x = np.load(path)
    if impl == "unseen":
        from unseen.detectors import create
        from unseen.representation import Representation

        det = create(name)
        rep = Representation(features=x)
        start = time.perf_counter()
        det.fit_score(rep)  # type: ignore[attr-defined]
    else:
        import importlib

        module, cls = PYOD[name]
        det = getattr(importlib.import_module(f"pyod.models.{module}"), cls)()
        start = time.perf_counter()
        det.fit(x)
    print(json.dumps({"seconds": time.perf_counter() - start}))


def timed(impl: str, name: str, path: Path, timeout: float) -> float | None:
    """Seconds of one run in a subprocess; None when it passes ``timeout``."""
    try:
        done = subprocess.run([sys.executable, __file__, "--worker", impl, name, str(path)],
                              capture_output=True, text=True, timeout=timeout + 60, check=False)
    except subprocess.TimeoutExpired:
        return None
    if done.returncode != 0:
        raise RuntimeError(f"{impl} {name} failed: {done.stderr[-800:]}")
    seconds = float(json.loads(done.stdout.strip().splitlines()[-1])["seconds"])
    return seconds if seconds <= timeout else None


def tables(data_root: Path | None, rows: int, tmp: Path) -> dict[str, Path]:
    from unseen.data.tables import adbench_files, read_adbench

    out = {}
    if data_root is not None:
        shuttle = read_adbench(next(p for p in adbench_files(data_root) if p.stem == "32_shuttle"))
        out["shuttle 49,097×9"] = shuttle.features
    rng = np.random.default_rng(0)
    synthetic = rng.normal(size=(rows, 64))
    synthetic[: rows // 100] += 3.0
    out[f"synthetic {rows:,}×64"] = synthetic
    paths = {}
    for label, x in out.items():
        lo, span = x.min(0), np.ptp(x, axis=0)
        path = tmp / f"{len(paths)}.npy"
        np.save(path, (x - lo) / np.where(span > 0, span, 1.0))
        paths[label] = path
    return paths


def _cell(v: float | None, timeout: float) -> str:
    return f"> {timeout:.0f}" if v is None else f"{v:.2f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", type=Path, help="data root holding adbench_classical19 (shuttle)")
    p.add_argument("--rows", type=int, default=100_000, help="rows of the synthetic table")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per run before giving up")
    p.add_argument("--only", help="comma-separated detectors (default: all nine)")
    p.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(*args.worker)
        return
    names = args.only.split(",") if args.only else list(PYOD)
    with tempfile.TemporaryDirectory() as tmp:
        paths = tables(args.data_root, args.rows, Path(tmp))
        print("| table | detector | unseen (s) | PyOD (s) | PyOD / unseen |\n|---|---|---|---|---|",
              flush=True)
        for label, path in paths.items():
            for name in names:
                ours = timed("unseen", name, path, args.timeout)
                theirs = timed("pyod", name, path, args.timeout)
                ratio = "–" if ours is None or theirs is None else f"{theirs / ours:.2f}"
                if ours is not None and theirs is None:
                    ratio = f"> {args.timeout / ours:.1f}"
                print(f"| {label} | {name} | {_cell(ours, args.timeout)} | "
                      f"{_cell(theirs, args.timeout)} | {ratio} |", flush=True)


if __name__ == "__main__":
    main()
