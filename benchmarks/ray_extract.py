"""The Ray runner's overhead: the cifar10 preset's training images, locally and on a local Ray cluster.

    python benchmarks/ray_extract.py --data-root /work/data                  # all 50,000 images
    python benchmarks/ray_extract.py --data-root /work/data --images 5000    # an even subset

Both runs extract ResNet-56 penultimate features and logits (the preset's model, transform and
batch size 256) from the same images, the local one with the preset's DataLoader decoding
workers, the Ray one with ``RayRunner(num_actors=2, num_cpus=1)`` on a cluster started here
with ``ray.init(num_cpus=2)`` (only this machine). On one 2-core machine Ray cannot be faster:
the ratio is its overhead (actor start, shipping the model and dataset, per-block
serialisation, the driver's writes). The cluster's start-up is timed apart; local and Ray runs
alternate (``--repeats`` rounds) and the table shows medians. The two results
are compared row by row (max |difference| of features and logits).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table
from torch.utils.data import Subset

import unseen
from unseen.benchmark import get_preset
from unseen.benchmark.presets.real import DECODE_WORKERS


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-root", type=Path, required=True)
    ap.add_argument("--images", type=int, default=50_000, help="evenly spaced subset (50,000)")
    ap.add_argument("--actors", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=2, help="interleaved local/Ray rounds (2)")
    args = ap.parse_args()
    spec = get_preset("cifar10", data_root=args.data_root)
    prepared = spec.model(None)
    fit = spec.fit
    rows = np.linspace(0, len(fit) - 1, min(args.images, len(fit))).round().astype(int)
    data = fit if len(rows) == len(fit) else Subset(fit, rows.tolist())
    common = {"head": prepared.head, "penultimate": prepared.penultimate,
              "batch_size": args.batch_size, "progress": False}

    import ray

    from unseen.extraction.ray import RayRunner

    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    t_init = time.perf_counter() - t0
    runner = RayRunner(num_actors=args.actors, num_cpus=1)
    times: dict[str, list[float]] = {"local": [], "ray": []}
    try:
        for _ in range(args.repeats):  # interleaved: a busy minute on the shared machine hits both
            t0 = time.perf_counter()
            local = unseen.extract(prepared.model, data, num_workers=DECODE_WORKERS, **common)
            times["local"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            dist = unseen.extract(prepared.model, data, runner=runner, **common)
            times["ray"].append(time.perf_counter() - t0)
    finally:
        ray.shutdown()
    t_local, t_ray = (statistics.median(times[k]) for k in ("local", "ray"))
    rounds = ", ".join(f"{r / loc:.2f}" for loc, r in zip(times["local"], times["ray"], strict=True))

    diff = max(float(np.abs(local.features - dist.features).max()),
               float(np.abs(local.logits - dist.logits).max()))
    n = len(data)
    table = Table(title=f"ResNet-56 extraction of {n:,} cifar10-preset training images, median "
                  f"of {args.repeats} interleaved rounds (one 2-core machine, shared)")
    for col in ("run", "seconds", "images/s", "× local"):
        table.add_column(col, justify="left" if col == "run" else "right")
    table.add_row(f"local (DataLoader, {DECODE_WORKERS} decode workers)", f"{t_local:.1f}",
                  f"{n / t_local:.0f}", "1.00")
    table.add_row(f"Ray Data, {args.actors} actors × 1 CPU", f"{t_ray:.1f}", f"{n / t_ray:.0f}",
                  f"{t_ray / t_local:.2f}")
    table.add_row("(ray.init of the local cluster, not counted)", f"{t_init:.1f}", "", "")
    Console(width=120).print(table)
    print(f"Ray / local per round: {rounds}")
    print(f"max |local - ray| over features and logits: {diff:.3g}; labels equal: "
          f"{bool(np.array_equal(local.labels, dist.labels))}")


if __name__ == "__main__":
    main()
