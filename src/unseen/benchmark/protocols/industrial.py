"""The visual-inspection protocol: anomaly maps, image and pixel metrics, good-parts-only thresholds.

One backbone pass extracts patch features of every image (cached). A seeded split of the good
parts gives train, calibration and test rows; the test set also holds every defective image.
Each map detector is fitted on the train rows and produces anomaly maps (upsampled to the input,
Gaussian sigma = 4, resized to each image's original size) and image scores; image-level feature
detectors (knn, mahalanobis, ...) score the spatially pooled patch features.

Thresholds use good parts only: the split-conformal threshold (``unseen.guard.conformal``) of the
calibration rows' guard scores (image score = max of the anomaly map; a detector without a map
uses its own score) at alpha = 0.05 and 0.01 gives the false-alarm rate on the test's good parts,
the recall per defect type and a binary pixel mask (map > threshold). For comparison only, the
F1-optimal threshold chosen *on the test set* (what anomalib reports by default) is shown,
labelled as such. Many random re-splits of the non-train good parts into calibration and test
show the false-alarm rate against the conformal bound alpha (and the lower bound
alpha - 1/(n+1)).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from unseen import detectors as feature_detectors
from unseen import models
from unseen._io import atomic_path, write_text
from unseen.benchmark.report.industrial import render_report, summary_tables
from unseen.data.inspection import InspectionSet, SquashResize, pixel_evaluable
from unseen.data.transforms import Compose, Normalize, ToRGB, ToTensor
from unseen.detectors import maps as map_detectors
from unseen.detectors.maps.base import anomaly_maps, resize_map
from unseen.extraction.patches import extract_patches
from unseen.guard.conformal import conformal_threshold, max_exceedances
from unseen.metrics.pixel import PixelCurves, curve_metrics, f1_max, image_metrics, pixel_curves
from unseen.representation import Representation

MAP_DETECTORS = ("patchcore", "padim", "spade", "dfm", "gaussian_ad")
#: image-level detectors of ``unseen.detectors`` that need only features (rmds is left out: with
#: one class its class and background Gaussians coincide and every score is 0)
FEATURE_DETECTORS = ("knn", "mahalanobis", "mahalanobis_pp")
ALPHAS = (0.05, 0.01)
#: side of the anomaly maps kept for the report's overlays
OVERLAY = 128


@dataclass(frozen=True)
class Split:
    train: np.ndarray
    calibration: np.ndarray
    test: np.ndarray


@dataclass
class InspectionTask:
    """A visual-inspection benchmark (satisfies ``unseen.benchmark.protocols.TaskSpec``).

    ``dataset`` holds every image once; ``pool`` are the rows of good parts that the split
    divides into train / calibration / test by ``train_fraction`` and ``calibration_fraction``;
    ``fixed_test`` rows are always test rows (every defect, and e.g. MVTec's ``test/good``).
    """

    name: str
    description: str
    dataset: InspectionSet
    pool: np.ndarray
    fixed_test: np.ndarray
    train_fraction: float
    calibration_fraction: float
    backbone: str = "efficientnet_lite0"
    layers: tuple[str, ...] = ("_blocks.10", "_blocks.14")
    resolution: int = 256
    storage: str = "float32"
    batch_size: int = 16
    simulations: int = 2000
    detector_params: dict[str, dict[str, Any]] = field(default_factory=dict)

    def split(self, seed: int) -> Split:
        order = self.pool[np.random.default_rng(seed).permutation(len(self.pool))]
        n_train = round(self.train_fraction * len(order))
        n_cal = round(self.calibration_fraction * len(order))
        test = np.concatenate([order[n_train + n_cal :], self.fixed_test])
        return Split(np.sort(order[:n_train]), np.sort(order[n_train : n_train + n_cal]), test)

    def transform(self) -> Compose:
        arch = models.info(self.backbone)
        if arch.mean is None or arch.std is None:
            raise ValueError(f"backbone {self.backbone!r} has no input normalisation to follow")
        return Compose([ToRGB(), SquashResize(self.resolution), ToTensor(), Normalize(arch.mean, arch.std)])

    def extract(self, cache: bool | str | os.PathLike[str]) -> Representation:
        data = InspectionSet(self.dataset.samples, self.dataset.root, self.dataset.name, self.transform())
        model = models.pretrained(self.backbone, "")
        meta = {"backbone": self.backbone, "resolution": self.resolution}
        return extract_patches(
            model, data, self.layers, batch_size=self.batch_size, storage=self.storage, cache=cache, meta=meta
        )

    def run(
        self,
        detector_names: Sequence[str] | None = None,
        *,
        cache: bool | str | os.PathLike[str] = True,
        seed: int = 0,
        keep_going: bool = False,
        console: Console | None = None,
        device: str = "cpu",
    ) -> InspectionResult:
        console = console or Console(stderr=True)
        if device != "cpu":
            raise ValueError("the inspection protocol runs on the CPU only (pass --device cpu)")
        names = list(detector_names) if detector_names else [*MAP_DETECTORS, *FEATURE_DETECTORS]
        started = time.perf_counter()
        with console.status(f"{self.name}: patch features ({self.backbone}, {self.resolution} px)"):
            rep = self.extract(cache)
        extract_s = time.perf_counter() - started
        split = self.split(seed)
        truth = Truth.of(self.dataset, split)
        outcomes: dict[str, Outcome] = {}
        failures: dict[str, str] = {}
        for name in names:
            with console.status(f"{self.name}: {name}"):
                try:
                    outcomes[name] = evaluate(
                        name,
                        self.detector_params.get(name, {}),
                        rep,
                        split,
                        truth,
                        self.resolution,
                        self.simulations,
                        seed,
                    )
                except Exception as err:  # a failing detector is reported, the others still run
                    if not keep_going:
                        raise
                    failures[name] = f"{type(err).__name__}: {err}"
        meta = {
            "task": self.name,
            "description": self.description,
            "backbone": self.backbone,
            "layers": list(self.layers),
            "resolution": self.resolution,
            "storage": self.storage,
            "grid": rep.meta.get("grid"),
            "seed": seed,
            "sizes": {
                "train": len(split.train),
                "calibration": len(split.calibration),
                "test_good": int((truth.labels == 0).sum()),
                "test_defective": int((truth.labels != 0).sum()),
            },
            "extract_seconds": extract_s,
            "wall_time_s": time.perf_counter() - started,
            "failures": failures,
        }
        return InspectionResult(meta, outcomes, truth)


@dataclass
class Truth:
    """Ground truth of the test rows: labels, defect types, original-size masks (evaluable rows)."""

    rows: np.ndarray
    labels: np.ndarray
    defects: list[str]
    pixel_rows: np.ndarray  # positions into ``rows`` that count in pixel metrics
    masks: list[np.ndarray]  # one per ``pixel_rows`` entry, original size
    images: list[str]
    good_pool: np.ndarray  # calibration rows then the test's good rows: the simulation's pool
    n_calibration: int
    dataset: InspectionSet

    @classmethod
    def of(cls, dataset: InspectionSet, split: Split) -> Truth:
        test = dataset.subset(split.test.tolist(), f"{dataset.name}/test")
        evaluable = pixel_evaluable(test)
        labels = test.labels
        return cls(
            rows=split.test,
            labels=labels,
            defects=test.defects,
            pixel_rows=evaluable,
            masks=[test.mask(int(i)) for i in evaluable],
            images=[str(s.image) for s in test.samples],
            good_pool=np.concatenate([split.calibration, split.test[labels == 0]]),
            n_calibration=len(split.calibration),
            dataset=dataset,
        )

    def size(self, position: int) -> tuple[int, int]:
        return self.masks[position].shape


@dataclass
class Outcome:
    """What one detector produced on the split."""

    detector: str
    params: dict[str, Any]
    metrics: dict[str, float | None]
    per_type: dict[str, float]
    guard: dict[str, Any]
    simulation: dict[str, Any]
    test_scores: np.ndarray
    overlays: np.ndarray | None  # (N_test, OVERLAY, OVERLAY) float16 maps, or None
    curves: dict[str, np.ndarray]
    fit_s: float
    score_s: float


def _fit_and_score(
    name: str, params: dict[str, Any], rep: Representation, split: Split, resolution: int
) -> tuple[Any, np.ndarray, np.ndarray | None, np.ndarray, np.ndarray, float, float]:
    """(detector, test scores, test pixel maps or None, calibration and test guard scores, fit s,
    score s)."""
    t0 = time.perf_counter()
    if name in map_detectors.names():
        det: Any = map_detectors.create(name, **params).fit(rep.subset(split.train))
    else:
        train = rep.subset(split.train)
        det = feature_detectors.create(name, **params).fit(train)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    if getattr(det, "has_maps", False):
        patch_maps, scores = det.maps_and_scores(rep.subset(split.test))
        cal_maps, _ = det.maps_and_scores(rep.subset(split.calibration))
        pixel = anomaly_maps(patch_maps, (resolution, resolution))
        cal_pixel = anomaly_maps(cal_maps, (resolution, resolution))
        guard_test, guard_cal = (
            pixel.reshape(len(pixel), -1).max(1),
            cal_pixel.reshape(len(cal_pixel), -1).max(1),
        )
    else:
        scores = det.score(rep.subset(split.test))
        pixel, guard_test, guard_cal = None, scores, det.score(rep.subset(split.calibration))
    return det, scores, pixel, np.asarray(guard_cal), np.asarray(guard_test), fit_s, time.perf_counter() - t0


def evaluate(
    name: str,
    params: dict[str, Any],
    rep: Representation,
    split: Split,
    truth: Truth,
    resolution: int,
    simulations: int,
    seed: int,
) -> Outcome:
    det, scores, pixel, guard_cal, guard_test, fit_s, score_s = _fit_and_score(
        name, params, rep, split, resolution
    )
    defective = truth.labels != 0
    metrics: dict[str, float | None] = dict(image_metrics(scores, defective))
    curves: dict[str, np.ndarray] = {}
    full: list[np.ndarray] = []
    if pixel is not None:
        full = [resize_map(pixel[i], truth.size(k)) for k, i in enumerate(truth.pixel_rows)]
        pixel_c = pixel_curves(full, truth.masks)
        metrics.update(curve_metrics(pixel_c))
        curves = _thin(pixel_c)
    else:
        metrics.update({"pixel_auroc": None, "pixel_ap": None, "aupro": None})
    guard = _guard(guard_cal, guard_test, truth, full)
    rest = guard_test[truth.labels == 0]
    simulation = simulate(np.concatenate([guard_cal, rest]), len(guard_cal), simulations, seed)
    overlays = None if pixel is None else _shrink(pixel)
    return Outcome(
        name,
        det.get_params(),
        metrics,
        per_type_auroc(scores, truth),
        guard,
        simulation,
        scores,
        overlays,
        curves,
        fit_s,
        score_s,
    )


def per_type_auroc(scores: np.ndarray, truth: Truth) -> dict[str, float]:
    """Image AUROC of each defect type against the test's good parts."""
    good = truth.labels == 0
    kinds = sorted({d for d, g in zip(truth.defects, good, strict=True) if not g})
    out = {}
    for kind in kinds:
        rows = good | (np.array(truth.defects) == kind)
        out[kind] = image_metrics(scores[rows], ~good[rows])["image_auroc"]
    return out


def _pixel_f1(full: list[np.ndarray], masks: list[np.ndarray], threshold: float) -> float:
    tp = sum(int((m > threshold)[g].sum()) for m, g in zip(full, masks, strict=True))
    predicted = sum(int((m > threshold).sum()) for m in full)
    actual = sum(int(g.sum()) for g in masks)
    return 2 * tp / (predicted + actual) if predicted + actual else 0.0


def _decisions(flagged: np.ndarray, truth: Truth) -> dict[str, Any]:
    good = truth.labels == 0
    defects = np.array(truth.defects)
    recall = {k: float(flagged[defects == k].mean()) for k in sorted(set(defects[~good]))}
    return {
        "false_alarm_rate": float(flagged[good].mean()),
        "recall": float(flagged[~good].mean()),
        "recall_per_type": recall,
    }


def _guard(cal: np.ndarray, test: np.ndarray, truth: Truth, full: list[np.ndarray]) -> dict[str, Any]:
    """Conformal thresholds from the calibration good parts, and the test-set F1-optimal one."""
    out: dict[str, Any] = {"n_calibration": len(cal)}
    for alpha in feasible_alphas(len(cal)):
        threshold = float(conformal_threshold(cal, alpha))
        entry = {"threshold": threshold, **_decisions(test > threshold, truth)}
        if full:
            entry["pixel_f1"] = _pixel_f1(full, truth.masks, threshold)
        out[f"alpha={alpha}"] = entry
    _, best = f1_max(test, truth.labels != 0)
    oracle = {"threshold": best, **_decisions(test >= best, truth)}
    if full:
        oracle["pixel_f1"] = _pixel_f1(full, truth.masks, best)
    out["f1_optimal_on_test"] = oracle
    return out


def feasible_alphas(n: int) -> list[float]:
    """The levels of :data:`ALPHAS` that ``n`` calibration scores support (n >= 1/alpha - 1)."""
    return [a for a in ALPHAS if max_exceedances(n, a) >= 0]


def simulate(good_scores: np.ndarray, n_calibration: int, draws: int, seed: int) -> dict[str, Any]:
    """False-alarm rate over ``draws`` random calibration/test re-splits of the good parts.

    Split conformal guarantees alpha - 1/(n+1) <= E[false-alarm rate] <= alpha (the lower bound
    for continuous scores) for exchangeable good parts; the spread comes from the finite sets.
    """
    rng = np.random.default_rng([seed, 12])
    order = np.argsort(rng.random((draws, len(good_scores))), axis=1)
    shuffled = good_scores[order]
    cal, test = shuffled[:, :n_calibration], shuffled[:, n_calibration:]
    out: dict[str, Any] = {"draws": draws, "n_calibration": n_calibration, "n_test_good": test.shape[1]}
    for alpha in feasible_alphas(n_calibration):
        thresholds = conformal_threshold(cal, alpha)
        rates = (test > thresholds[:, None]).mean(axis=1)
        out[f"alpha={alpha}"] = {
            "mean": float(rates.mean()),
            "sd": float(rates.std(ddof=1)),
            "q05": float(np.quantile(rates, 0.05)),
            "q95": float(np.quantile(rates, 0.95)),
            "upper_bound": alpha,
            "lower_bound": alpha - 1 / (n_calibration + 1),
        }
    return out


def _thin(c: PixelCurves, points: int = 400) -> dict[str, np.ndarray]:
    """The pixel ROC and PRO curves, thinned to about ``points`` points for plotting."""
    keep = np.unique(np.searchsorted(c.fpr, np.linspace(0, 1, points)).clip(0, len(c.fpr) - 1))
    return {"pixel_fpr": c.fpr[keep], "pixel_tpr": c.tpr[keep], "pro": c.pro[keep]}


def _shrink(pixel: np.ndarray) -> np.ndarray:
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(np.ascontiguousarray(pixel, dtype=np.float32))[:, None]
    return F.interpolate(t, size=(OVERLAY, OVERLAY), mode="area")[:, 0].numpy().astype(np.float16)


@dataclass
class InspectionResult:
    """What :meth:`InspectionTask.run` produced (satisfies ``TaskResult``)."""

    meta: dict[str, Any]
    outcomes: dict[str, Outcome]
    truth: Truth

    def leaderboard(self) -> list[dict[str, Any]]:
        """One row per detector, sorted by image AUROC (best first)."""
        rows = [
            {
                "detector": o.detector,
                "params": o.params,
                **o.metrics,
                "per_type_auroc": o.per_type,
                "fit_s": o.fit_s,
                "score_s": o.score_s,
            }
            for o in self.outcomes.values()
        ]
        return sorted(rows, key=lambda r: -float(r["image_auroc"]))

    def write_outputs(self, out_dir: str | os.PathLike[str]) -> dict[str, Path]:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        payload = {
            "meta": self.meta,
            "leaderboard": self.leaderboard(),
            "guard": {n: o.guard for n, o in self.outcomes.items()},
            "simulation": {n: o.simulation for n, o in self.outcomes.items()},
        }
        files = {
            "results.json": out / "results.json",
            "results.csv": out / "results.csv",
            "scores.npz": out / "scores.npz",
            "report.html": out / "report.html",
        }
        write_text(files["results.json"], json.dumps(payload, indent=2, default=float))
        write_text(files["results.csv"], _csv(self.leaderboard()))
        arrays = {f"{n}.test_scores": o.test_scores for n, o in self.outcomes.items()}
        arrays["test_labels"] = self.truth.labels
        with atomic_path(files["scores.npz"]) as tmp, open(tmp, "wb") as handle:
            np.savez(handle, allow_pickle=False, **arrays)
        write_text(files["report.html"], render_report(self))
        return files

    def summary(self) -> list[Any]:
        return summary_tables(self)


def _csv(rows: list[dict[str, Any]]) -> str:
    columns = [
        "detector",
        "image_auroc",
        "image_aupr",
        "image_f1_max",
        "pixel_auroc",
        "pixel_ap",
        "aupro",
        "fit_s",
        "score_s",
    ]
    kinds = sorted({k for r in rows for k in r["per_type_auroc"]})
    lines = [",".join(columns + [f"auroc_{k}" for k in kinds])]
    for r in rows:
        values = [r["detector"], *("" if r[c] is None else f"{r[c]:.6f}" for c in columns[1:])]
        values += [f"{r['per_type_auroc'].get(k, float('nan')):.6f}" for k in kinds]
        lines.append(",".join(values))
    return "\n".join(lines) + "\n"
