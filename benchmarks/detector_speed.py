"""Time fit and score of every cache-based detector on synthetic features.

    python benchmarks/detector_speed.py                      # 50,000 × 512 train, 10,000 test, C = 10
    python benchmarks/detector_speed.py --grid               # also the whole hyperparameter search
    python benchmarks/detector_speed.py --resnet18           # and one ResNet-18 pass for comparison

Peak memory is the peak of NumPy/Python allocations seen by tracemalloc during fit + score
(faiss's own buffers are not counted). The grid column times what the benchmark protocol does:
one fit per distinct non-score hyperparameter setting, a score of ID-val and OOD-val per grid
point, and the final test scoring.
"""

from __future__ import annotations

import argparse
import itertools
import time
import tracemalloc

import numpy as np
from rich.console import Console
from rich.table import Table

import unseen
from unseen import Representation


def synthetic(n: int, dim: int, classes: int, seed: int, shift: float = 0.0) -> Representation:
    """ReLU features of a Gaussian mixture through a fixed random head (like a penultimate layer)."""
    rng = np.random.default_rng(seed)
    head_rng = np.random.default_rng(12345)
    centres = np.abs(head_rng.normal(size=(classes, dim)))
    weight = (centres - centres.mean(0)).astype(np.float32) / np.sqrt(dim)
    bias = head_rng.normal(scale=0.1, size=classes).astype(np.float32)
    labels = rng.integers(0, classes, n)
    feats = np.maximum(centres[labels] + shift + rng.normal(size=(n, dim)), 0).astype(np.float32)
    return Representation(feats, feats @ weight.T + bias, labels, weight, bias)


def grid_points(det_cls: type, train: Representation) -> list[dict]:
    space = det_cls.search_space(train)
    keys = list(space)
    return [dict(zip(keys, vals, strict=True)) for vals in itertools.product(*space.values())]


def time_grid(name: str, train: Representation, val: Representation, ood_val: Representation,
              test: Representation) -> float:
    cls = unseen.detectors.get(name)
    start = time.perf_counter()
    fitted: dict[str, unseen.detectors.Detector] = {}
    best, best_score = None, -np.inf
    for hp in grid_points(cls, train) or [{}]:
        fit_key = repr(sorted((k, v) for k, v in hp.items() if k not in cls.score_params))
        if fit_key not in fitted:
            fitted[fit_key] = cls(**hp).fit(train, val)
        det = fitted[fit_key].set_params(**hp)
        s_id, s_ood = det.score(val), det.score(ood_val)
        auroc = unseen.metrics.auroc(s_id, s_ood)
        if auroc > best_score:
            best, best_score = hp, auroc
    final = cls(**best).fit(train, val) if best else fitted[next(iter(fitted))]
    final.score(test)
    return time.perf_counter() - start


def resnet18_pass(n: int) -> float:
    import torch

    from unseen.models import create

    model = create("resnet18_32x32", num_classes=10).eval()
    x = torch.randn(256, 3, 32, 32)
    start = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, n, 256):
            model(x[: min(256, n - i)])
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=50_000)
    parser.add_argument("--test", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--detectors", default="", help="comma-separated (default: all cache-based)")
    parser.add_argument("--grid", action="store_true", help="also time the whole grid search")
    parser.add_argument("--resnet18", action="store_true", help="time one ResNet-18 pass over --test")
    args = parser.parse_args()

    train = synthetic(args.train, args.dim, args.classes, seed=0)
    val = synthetic(1000, args.dim, args.classes, seed=1)
    ood_val = synthetic(1000, args.dim, args.classes, seed=2, shift=0.5)
    test = synthetic(args.test, args.dim, args.classes, seed=3)
    names = args.detectors.split(",") if args.detectors else [
        n for n in unseen.detectors.names() if "network" not in unseen.detectors.get(n).requires
    ]
    table = Table(title=f"train {args.train}×{args.dim}, test {args.test}, C={args.classes}")
    for col in ("detector", "fit s", "score s", "score samples/s", "peak MiB"):
        table.add_column(col, justify="left" if col == "detector" else "right")
    if args.grid:
        table.add_column("grid search s", justify="right")
    total_grid = 0.0
    for name in names:
        det = unseen.detectors.create(name)
        tracemalloc.start()
        t0 = time.perf_counter()
        det.fit(train, val)
        t1 = time.perf_counter()
        det.score(test)
        t2 = time.perf_counter()
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        row = [name, f"{t1 - t0:.3f}", f"{t2 - t1:.3f}", f"{args.test / (t2 - t1):,.0f}", f"{peak:.0f}"]
        if args.grid:
            g = time_grid(name, train, val, ood_val, test)
            total_grid += g
            row.append(f"{g:.2f}")
        table.add_row(*row)
    console = Console()
    console.print(table)
    if args.grid:
        console.print(f"whole grid search of {len(names)} detectors: {total_grid:.1f} s")
    if args.resnet18:
        console.print(f"one ResNet-18 (32×32) pass over {args.test} images: "
                      f"{resnet18_pass(args.test):.1f} s on this CPU")


if __name__ == "__main__":
    main()
