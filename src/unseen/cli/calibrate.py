"""``unseen calibrate``: arguments for building a guard directory; the work is in the library.

From Representation files (:func:`unseen.guard.splits.guard_from_files`), from a benchmark
preset or a run folder (:mod:`unseen.benchmark.deploy`). The output location is checked first.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rich.console import Console

from unseen.cli._common import Subcommand, UsageError, check_detector


def configure(cal: argparse.ArgumentParser) -> None:
    cal.description = (
        "Build a guard directory for `unseen serve`, from saved Representation files "
        "(--train/--calib), from a benchmark run (--from-run: its preset and the selected "
        "hyperparameters), or from a benchmark preset (--preset, default digits)."
    )
    cal.add_argument("--out", required=True, type=Path, help="guard directory to write")
    cal.add_argument("--detector", help="detector name (default: knn, or with --from-run the "
                     "run's best detector: the first row of its leaderboard)")
    cal.add_argument(
        "--param", action="append", default=[], metavar="NAME=VALUE",
        help="detector hyperparameter (VALUE parsed as JSON, else a string); repeatable",
    )
    cal.add_argument("--alpha", type=float, default=0.05, help="false-alarm level (0.05)")
    cal.add_argument("--train", type=Path, help="Representation file to fit the detector on")
    cal.add_argument("--calib", type=Path, help="held-out in-distribution Representation; must "
                     "not overlap --train or --val")
    cal.add_argument("--val", type=Path, help="ID validation Representation (detectors that "
                     "need one); must not overlap --calib")
    cal.add_argument("--ood", type=Path, help="OOD Representation to estimate the TPR that the "
                     "monitor's OOD-fraction estimate needs")
    cal.add_argument("--from-run", type=Path, help="benchmark run folder (with results.json)")
    cal.add_argument("--preset", help="benchmark preset when --train is not given "
                     "(default: digits, or the run's preset)")
    cal.add_argument("--seed", type=int, help="preset seed (default: 0, or the run's seed)")
    cal.add_argument("--data-root", type=Path, help="data folder of real-data presets")
    cal.add_argument("--model", help="model option of the preset (inspection presets: the backbone)")
    cal.add_argument("--category", help="category of the mvtec preset (a folder under --data-root)")
    cal.add_argument("--cache-dir", type=Path, help="cache of trained models and extractions "
                     "(default: $UNSEEN_CACHE_DIR or ~/.cache/unseen)")
    cal.add_argument("--overwrite", action="store_true",
                     help="replace an existing guard directory at --out (nothing else)")


def parse_params(items: list[str]) -> dict[str, Any]:
    """``["k=10", "name=foo"]`` -> ``{"k": 10, "name": "foo"}`` (values as JSON when possible)."""
    params: dict[str, Any] = {}
    for item in items:
        name, sep, raw = item.partition("=")
        if not sep or not name:
            raise UsageError(f"--param expects NAME=VALUE, got {item!r}")
        try:
            params[name] = json.loads(raw)
        except json.JSONDecodeError:
            params[name] = raw
    return params


def _from_files(args: argparse.Namespace, params: dict[str, Any]) -> Any:
    from unseen import detectors
    from unseen.guard.splits import guard_from_files, same_file

    if args.calib is None:
        raise UsageError("--train needs --calib (held-out in-distribution data)")
    if args.from_run is not None or args.preset is not None:
        raise UsageError("--train/--calib exclude --from-run and --preset")
    for flag, path in (("--train", args.train), ("--val", args.val)):
        if path is not None and same_file(path, args.calib):
            raise UsageError(f"--calib and {flag} are the same file ({args.calib}); the "
                             "calibration data must be held out from fitting")
    name = args.detector or "knn"
    check_detector(name, params)
    return guard_from_files(detectors.create(name, **params), args.train, args.calib,
                            args.alpha, val=args.val, ood=args.ood)


def _preset(args: argparse.Namespace, preset: str, seed: int | None) -> Any:
    """The preset built with the options given on the command line (UsageError for one it lacks)."""
    from unseen.benchmark import UnknownPresetError
    from unseen.benchmark.deploy import build_preset
    from unseen.benchmark.presets import preset_options

    try:
        accepted = preset_options(preset)
    except UnknownPresetError as exc:
        raise UsageError(str(exc)) from None
    options: dict[str, Any] = {"seed": 0 if seed is None else seed}
    for opt in ("data_root", "model", "category"):
        value = getattr(args, opt)
        if value is not None and opt not in accepted:
            raise UsageError(f"preset {preset!r} does not take --{opt.replace('_', '-')}")
        options[opt] = value
    return build_preset(preset, {k: v for k, v in options.items() if v is not None})


def _inspection(args: argparse.Namespace, params: dict[str, Any], task: Any) -> Any:
    from unseen.benchmark.deploy import inspection_guard
    from unseen.guard.inspection import map_detector_names

    name = args.detector or "patchcore"
    if name not in map_detector_names():
        raise UsageError(f"an inspection guard takes a map detector ({', '.join(map_detector_names())}), "
                         f"got {name!r}")
    if args.from_run is not None:
        raise UsageError("--from-run reads OOD benchmark runs; for an inspection preset give "
                         "--detector and --param instead")
    try:
        from unseen.detectors import maps

        maps.create(name, **params)
    except TypeError as exc:
        raise UsageError(f"--param: {exc}") from None
    cache = args.cache_dir or True
    return inspection_guard(task, args.alpha, detector=name, params=params,
                            seed=0 if args.seed is None else args.seed, cache=cache)


def _from_preset(args: argparse.Namespace, params: dict[str, Any]) -> Any:
    from unseen import detectors
    from unseen.benchmark.deploy import guard_from_preset, run_choice
    from unseen.benchmark.protocols.industrial import InspectionTask
    from unseen.guard.persist import INSPECTION_FORMAT, check_target

    if args.calib is not None or args.val is not None or args.ood is not None:
        raise UsageError("--calib/--val/--ood go with --train")
    preset, seed, name = args.preset, args.seed, args.detector
    if args.from_run is None:
        spec = _preset(args, preset or "digits", seed)
        if isinstance(spec, InspectionTask):  # the output is checked before the work, by its kind
            check_target(args.out, args.overwrite, INSPECTION_FORMAT, hint="pass --overwrite")
            return _inspection(args, params, spec)
    check_target(args.out, args.overwrite, hint="pass --overwrite")
    if name is not None:
        check_detector(name)
    if args.from_run is not None:
        choice = run_choice(args.from_run, name)
        preset, seed = preset or choice.preset, choice.seed if seed is None else seed
        name, params = choice.detector, {**choice.hparams, **params}
        spec = _preset(args, preset, seed)
    name = name or "knn"
    check_detector(name, params)
    return guard_from_preset(detectors.create(name, **params), preset or "digits", args.alpha,
                             cache_dir=args.cache_dir, spec=spec)


def run(args: argparse.Namespace, console: Console) -> int:
    """Write a guard directory and print a summary."""
    from unseen.guard.inspection import InspectionGuard
    from unseen.guard.persist import check_target

    params = parse_params(args.param)
    if args.train is not None:
        check_target(args.out, args.overwrite, hint="pass --overwrite")
    guard = _from_files(args, params) if args.train is not None else _from_preset(args, params)
    if isinstance(guard, InspectionGuard):
        path = guard.save(args.out, overwrite=args.overwrite)
        print(f"wrote {path}: inspection guard, {guard.detector_!r} on {guard.backbone} at "
              f"{guard.resolution} px, alpha={guard.alpha}, n_calibration="
              f"{len(guard.calibration_)}, threshold={guard.threshold_:.6g}")
        return 0
    path = guard.save(args.out, overwrite=args.overwrite)
    tpr = "" if guard.tpr is None else f", TPR on OOD validation {guard.tpr:.3f}"
    print(
        f"wrote {path}: {guard.detector!r}, alpha={guard.alpha}, "
        f"n_calibration={guard.calibration_scores.shape[0]}, threshold={guard.threshold:.6g}{tpr}"
    )
    return 0


COMMAND = Subcommand(
    "calibrate", "fit a detector, calibrate a conformal threshold, write a guard directory",
    configure, run,
)
