"""Speed of the visual-inspection path on Magnetic Tile Defects.

    python benchmarks/industrial_speed.py --data-root DIR            # fit + latency (cached patches)
    python benchmarks/industrial_speed.py --data-root DIR --full     # also the whole `mtd` preset

Prints: patch extraction of all 1,344 images (a cache hit when the preset ran before: say so),
PatchCore fit time (coreset) and memory-bank size, and the per-image inference latency of one
image end to end (decode, squash to 256 px, backbone to block 14, 3x3 aggregation, bank search,
upsampling + Gaussian smoothing, resize to the original size), median over ``--images`` images,
one image at a time. Goals: whole preset <= 5 min with Lite0 at 256 px, inference <= 100 ms/image.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from unseen.benchmark.presets.industrial import mtd
from unseen.benchmark.protocols.industrial import InspectionTask
from unseen.data.base import load_image
from unseen.detectors.maps import MapDetector, anomaly_maps, create, resize_map
from unseen.extraction.patches import extract_patches


def latency(task: InspectionTask, det: MapDetector, model: torch.nn.Module, rows: np.ndarray) -> list[float]:
    transform = task.transform()
    times = []
    for row in rows:
        t0 = time.perf_counter()
        image = load_image(task.dataset.samples[int(row)].image)
        x = transform(image)[None]
        rep = extract_patches(model, x, task.layers, batch_size=1, progress=False)
        maps, _ = det.maps_and_scores(rep)
        pixel = anomaly_maps(maps, (task.resolution, task.resolution))[0]
        resize_map(pixel, (image.height, image.width))
        times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--images", type=int, default=30)
    parser.add_argument("--full", action="store_true", help="also time the whole preset")
    parser.add_argument("--coreset-ratio", type=float, default=0.1, help="PatchCore coreset (preset: 0.1)")
    args = parser.parse_args()
    console = Console()
    table = Table(title="visual inspection speed (Magnetic Tile Defects, EfficientNet-Lite0, 256 px)")
    table.add_column("what")
    table.add_column("value", justify="right")
    task = mtd(args.data_root)
    t0 = time.perf_counter()
    rep = task.extract(args.cache_dir or True)
    table.add_row("patch features of 1,344 images (s; cache hit if fast)", f"{time.perf_counter() - t0:.1f}")
    split = task.split(0)
    t0 = time.perf_counter()
    det = create("patchcore", coreset_ratio=args.coreset_ratio).fit(rep.subset(split.train))
    ratio = f"{100 * args.coreset_ratio:g} %"
    table.add_row(f"PatchCore fit: chunked greedy coreset {ratio} (s)", f"{time.perf_counter() - t0:.1f}")
    table.add_row("memory bank (patches x dims)", f"{det.bank_.shape[0]:,} x {det.bank_.shape[1]}")
    table.add_row("memory bank (MB, float32)", f"{det.bank_.nbytes / 1e6:.1f}")
    from unseen import models

    model = models.pretrained(task.backbone, "")
    times = latency(task, det, model, split.test[: args.images])
    table.add_row(f"latency per image, median of {len(times)} (ms)", f"{1000 * np.median(times):.0f}")
    table.add_row("latency per image, 90th percentile (ms)", f"{1000 * np.quantile(times, 0.9):.0f}")
    if args.full:
        t0 = time.perf_counter()
        task.run(cache=args.cache_dir or True, console=console)
        table.add_row("whole mtd preset, all detectors (s)", f"{time.perf_counter() - t0:.0f}")
    console.print(table)
    console.print(f"threads: torch {torch.get_num_threads()}; the machine's load average at the end: "
                  f"{open('/proc/loadavg').read().split()[0]}")


if __name__ == "__main__":
    main()
