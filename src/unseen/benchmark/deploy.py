"""From a benchmark to a deployed guard: calibrate on a preset's splits, or on a run's choice.

:func:`guard_from_preset` fits a detector on a preset's ID fit split and calibrates it on its ID
validation split; :func:`inspection_guard` does the same for a visual-inspection preset (a map
detector on the train good parts, the threshold on the calibration good parts);
:func:`run_choice` reads what a benchmark run selected (its preset, seed, best detector by
:meth:`BenchmarkResult.ranking`, and that detector's hyperparameters). The benchmark
floor imports the guard, never the reverse.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from unseen.benchmark.result import BenchmarkResult
from unseen.detectors.base import Detector
from unseen.guard.core import Guard

if TYPE_CHECKING:
    from unseen.benchmark.protocols.industrial import InspectionTask
    from unseen.guard.inspection import InspectionGuard

#: fraction of the ID validation split used to fit detectors that need validation data; the
#: rest calibrates, so that calibration scores never come from data the detector was fitted on.
VAL_FIT_FRACTION = 0.5


@dataclass(frozen=True)
class RunChoice:
    """What a benchmark run selected: enough to rebuild its detector on its preset."""

    preset: str
    seed: int
    detector: str
    hparams: dict[str, Any]


def run_choice(run: str | os.PathLike[str], detector: str | None = None) -> RunChoice:
    """The preset, seed, detector and selected hyperparameters of a benchmark run.

    Without ``detector`` the run's best one is taken (:meth:`BenchmarkResult.best`: the first
    row of its leaderboard).
    """
    result = BenchmarkResult.read(run)
    name = result.best() if detector is None else detector
    return RunChoice(
        preset=result.preset,
        seed=int(result.meta.get("seed", 0)),
        detector=name,
        hparams=result.hparams(name),
    )


def guard_from_preset(
    detector: Detector,
    preset: str,
    alpha: float,
    *,
    options: dict[str, Any] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    spec: Any = None,
) -> Guard:
    """A guard for a benchmark preset's classifier.

    When the preset names its model in :mod:`unseen.models` and its image preprocessing, the
    guard stores both and serves raw images; otherwise it serves penultimate features only.
    Fits on the preset's ID ``fit`` split, calibrates on its ID ``val`` split (a seeded
    ``VAL_FIT_FRACTION`` of it fits detectors that need validation data, the rest calibrates)
    and estimates the TPR on ``ood_val``. The guard keeps the classifier head, so it takes the
    model's penultimate features at ``/v1/predict-features``. With hyperparameters selected on
    the same ``val`` split (:func:`run_choice`), the calibration data took part in that
    selection: the guarantee then holds only approximately. ``spec``: the preset already built
    by :func:`build_preset` (then ``options`` are not read again).
    """
    from unseen import cache
    from unseen.benchmark.spec import BenchmarkSpec
    from unseen.extraction import extract

    if spec is None:
        spec = build_preset(preset, options)
    if not isinstance(spec, BenchmarkSpec):
        raise ValueError(
            f"preset {preset!r} is not a classifier benchmark (it builds a "
            f"{type(spec).__name__}): a guard deploys a preset with a classifier, such as "
            "digits, mnist or cifar10"
        )
    cache_path = cache.directory(None if cache_dir is None else Path(cache_dir))
    prepared = spec.model(cache_path)

    def rep(data: Any) -> Any:
        return extract(
            prepared.model, data, head=prepared.head, penultimate=prepared.penultimate,
            input_std=prepared.input_std, cache=cache_path, progress=False,
        )

    fit, val = rep(spec.fit), rep(spec.val)
    val_fit = calib = val
    if detector.needs_val:
        order = np.random.default_rng(int((options or {}).get("seed", 0))).permutation(len(val))
        cut = round(VAL_FIT_FRACTION * len(val))
        val_fit, calib = val.subset(np.sort(order[:cut])), val.subset(np.sort(order[cut:]))
    with_model = prepared.model_name is not None and prepared.transform is not None
    guard = Guard(
        detector,
        prepared.model if with_model else None,
        model_name=prepared.model_name if with_model else None,
        transform=prepared.transform if with_model else None,
    ).fit(fit, val_fit if detector.needs_val else None)
    guard.calibrate(calib, alpha)
    guard.estimate_tpr(rep(spec.ood_val))
    return guard


def build_preset(preset: str, options: dict[str, Any] | None = None) -> Any:
    """Preset ``preset`` built with those of ``options`` it takes (a BenchmarkSpec or a TaskSpec)."""
    from unseen.benchmark.presets import get_preset, preset_options

    accepted = set(preset_options(preset))
    return get_preset(preset, **{k: v for k, v in (options or {}).items() if k in accepted})


def inspection_guard(
    task: InspectionTask,
    alpha: float,
    *,
    detector: str = "patchcore",
    params: dict[str, Any] | None = None,
    seed: int = 0,
    cache: bool | str | os.PathLike[str] = True,
) -> InspectionGuard:
    """An inspection guard for a visual-inspection preset, on the benchmark's own seeded split.

    The map detector (the preset's parameters for it, updated by ``params``) is fitted on the
    patch features of the split's train rows (the benchmark's cached extraction) and the
    threshold is calibrated on its calibration rows through the served path itself (each image
    inspected one at a time, as ``POST /inspect`` will), so calibration and served scores are
    exchangeable. No defective image is used.
    """
    from unseen.data.base import load_image
    from unseen.detectors import maps
    from unseen.guard.inspection import InspectionGuard

    split = task.split(seed)
    merged = {**task.detector_params.get(detector, {}), **(params or {})}
    det = maps.create(detector, **merged)
    det.fit(task.extract(cache).subset(split.train))
    guard = InspectionGuard(task.backbone, task.layers, task.resolution, alpha)
    images = [load_image(task.dataset.samples[int(i)].image) for i in split.calibration]
    return guard.fit(det, images)
