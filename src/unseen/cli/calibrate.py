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


def _from_preset(args: argparse.Namespace, params: dict[str, Any]) -> Any:
    from unseen import detectors
    from unseen.benchmark.deploy import guard_from_preset, run_choice

    if args.calib is not None or args.val is not None or args.ood is not None:
        raise UsageError("--calib/--val/--ood go with --train")
    preset, seed, name = args.preset, args.seed, args.detector
    if name is not None:
        check_detector(name)
    if args.from_run is not None:
        choice = run_choice(args.from_run, name)
        preset, seed = preset or choice.preset, choice.seed if seed is None else seed
        name, params = choice.detector, {**choice.hparams, **params}
    name = name or "knn"
    check_detector(name, params)
    options: dict[str, Any] = {"seed": 0 if seed is None else seed}
    if args.data_root is not None:
        options["data_root"] = args.data_root
    return guard_from_preset(detectors.create(name, **params), preset or "digits", args.alpha,
                             options=options, cache_dir=args.cache_dir)


def run(args: argparse.Namespace, console: Console) -> int:
    """Write a guard directory and print a summary."""
    from unseen.guard.persist import check_target

    params = parse_params(args.param)
    check_target(args.out, args.overwrite, hint="pass --overwrite")
    guard = _from_files(args, params) if args.train is not None else _from_preset(args, params)
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
