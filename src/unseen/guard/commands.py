"""The ``calibrate`` and ``serve`` subcommands: argument parsing and calls into the library.

``configure_calibrate``/``configure_serve`` add the arguments to a parser;
``calibrate_command``/``serve_command`` run with the parsed namespace and return an exit code
(an optional second argument, e.g. a rich Console, is accepted and unused).
Heavy imports happen inside the commands, so configuring a parser stays cheap.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

#: fraction of the ID validation split used to fit detectors that need validation data; the
#: rest calibrates, so that calibration scores never come from data the detector was fitted on.
VAL_FIT_FRACTION = 0.5


def configure_calibrate(cal: argparse.ArgumentParser) -> None:
    """Arguments of ``calibrate``."""
    cal.description = (
        "Build a guard directory for `unseen serve`, from saved Representation files "
        "(--train/--calib), from a benchmark run (--from-run: its preset and the selected "
        "hyperparameters), or from a benchmark preset (--preset, default digits)."
    )
    cal.add_argument("--out", required=True, type=Path, help="guard directory to write")
    cal.add_argument("--detector", help="detector name (default: knn, or with --from-run the "
                     "run's best detector by mean AUROC)")
    cal.add_argument(
        "--param", action="append", default=[], metavar="NAME=VALUE",
        help="detector hyperparameter (VALUE parsed as JSON, else a string); repeatable",
    )
    cal.add_argument("--alpha", type=float, default=0.05, help="false-alarm level (0.05)")
    cal.add_argument("--train", type=Path, help="Representation file to fit the detector on")
    cal.add_argument("--calib", type=Path, help="held-out in-distribution Representation")
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
    cal.add_argument("--overwrite", action="store_true", help="replace an existing --out")


def configure_serve(srv: argparse.ArgumentParser) -> None:
    """Arguments of ``serve``."""
    srv.description = (
        "Serve POST /v1/predict, POST /v1/predict-features, GET /healthz, GET /metrics and "
        "/openapi.json. Binds 127.0.0.1 unless --host says otherwise."
    )
    srv.add_argument("guard_dir", type=Path, help="directory written by `unseen calibrate`")
    srv.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    srv.add_argument("--port", type=int, default=8000)
    srv.add_argument("--max-body-bytes", type=int, default=16 * 1024 * 1024)
    srv.add_argument("--max-batch", type=int, default=64)
    srv.add_argument("--max-image-side", type=int, default=4096)
    srv.add_argument("--max-image-pixels", type=int, default=16_777_216)
    srv.add_argument("--window", type=int, help="monitoring window in inputs (default: "
                     "the guard's setting, else 1000)")
    srv.add_argument("--alarm-level", type=float, help="significance level of the flag-rate "
                     "alarm (default: the guard's setting, else 0.01)")
    srv.add_argument("--log-level", default="info")
    srv.add_argument("--ray", nargs="?", const="", metavar="ADDRESS",
                     help="serve on Ray Serve: join the cluster at ADDRESS (default: $RAY_ADDRESS, "
                     "a cluster of this machine, else a new local one)")
    srv.add_argument("--replicas", type=int, default=2, help="Ray Serve replicas (--ray; 2)")
    srv.add_argument("--replica-cpus", type=float, default=1.0, help="CPUs per replica (--ray; 1)")


def parse_params(items: list[str]) -> dict[str, Any]:
    """``["k=10", "name=foo"]`` -> ``{"k": 10, "name": "foo"}`` (values as JSON when possible)."""
    params: dict[str, Any] = {}
    for item in items:
        name, sep, raw = item.partition("=")
        if not sep or not name:
            raise ValueError(f"--param expects NAME=VALUE, got {item!r}")
        try:
            params[name] = json.loads(raw)
        except json.JSONDecodeError:
            params[name] = raw
    return params


def calibrate_command(args: argparse.Namespace, _console: Any = None) -> int:
    """``unseen calibrate``: write a guard directory and print a summary."""
    from unseen import detectors

    params = parse_params(args.param)
    if args.train is not None:
        if args.calib is None:
            raise ValueError("--train needs --calib (held-out in-distribution data)")
        if args.from_run is not None or args.preset is not None:
            raise ValueError("--train/--calib exclude --from-run and --preset")
        detector = detectors.create(args.detector or "knn", **params)
        guard = calibrate_from_files(
            detector, args.train, args.calib, args.alpha, val=args.val, ood=args.ood
        )
    else:
        if args.calib is not None or args.val is not None or args.ood is not None:
            raise ValueError("--calib/--val/--ood go with --train")
        preset, seed, name = args.preset, args.seed, args.detector
        if args.from_run is not None:
            run = read_run(args.from_run, name)
            preset, seed = preset or run["preset"], run["seed"] if seed is None else seed
            name, params = run["detector"], {**run["hparams"], **params}
        options: dict[str, Any] = {"seed": 0 if seed is None else seed}
        if args.data_root is not None:
            options["data_root"] = args.data_root
        detector = detectors.create(name or "knn", **params)
        guard = calibrate_preset(
            detector, preset or "digits", args.alpha, options=options, cache_dir=args.cache_dir
        )
    path = guard.save(args.out, overwrite=args.overwrite)
    tpr = "" if guard.tpr is None else f", TPR on OOD validation {guard.tpr:.3f}"
    print(
        f"wrote {path}: {guard.detector!r}, alpha={guard.alpha}, "
        f"n_calibration={guard.calibration_scores.shape[0]}, threshold={guard.threshold:.6g}{tpr}"
    )
    return 0


def read_run(run_dir: Path, detector: str | None = None) -> dict[str, Any]:
    """Preset, seed, detector and selected hyperparameters of a benchmark run folder.

    Without ``detector`` the run's best detector is taken: the highest AUROC averaged over the
    per-group means.
    """
    path = Path(run_dir) / "results.json"
    if not path.is_file():
        raise FileNotFoundError(f"no results.json in {run_dir}: not a benchmark run folder")
    result = json.loads(path.read_text())
    means = [r for r in result.get("records", []) if r.get("dataset") == "mean"]
    if not means:
        raise ValueError(f"{path} has no per-group mean records")
    if detector is None:
        by_det: dict[str, list[float]] = {}
        for r in means:
            if r.get("auroc") is not None:
                by_det.setdefault(r["detector"], []).append(float(r["auroc"]))
        detector = max(by_det, key=lambda d: sum(by_det[d]) / len(by_det[d]))
    chosen = [r for r in means if r["detector"] == detector]
    if not chosen:
        ran = sorted({r["detector"] for r in means})
        raise ValueError(f"{path} has no results for detector {detector!r}; it has {ran}")
    return {
        "preset": result["preset"],
        "seed": int(result.get("meta", {}).get("seed", 0)),
        "detector": detector,
        "hparams": dict(chosen[0]["hparams"]),
    }


def calibrate_from_files(
    detector: Any,
    train: Path,
    calib: Path,
    alpha: float,
    *,
    val: Path | None = None,
    ood: Path | None = None,
) -> Any:
    """A guard fitted on the Representation file ``train`` and calibrated on ``calib``."""
    from unseen.guard.core import Guard
    from unseen.representation import Representation

    guard = Guard(detector).fit(
        Representation.load(train), None if val is None else Representation.load(val)
    )
    guard.calibrate(Representation.load(calib), alpha)
    if ood is not None:
        guard.estimate_tpr(Representation.load(ood))
    return guard


def calibrate_preset(
    detector: Any,
    preset: str,
    alpha: float,
    *,
    options: dict[str, Any] | None = None,
    cache_dir: Path | None = None,
) -> Any:
    """A guard for a benchmark preset's classifier.

    When the preset names its model in :mod:`unseen.models` and its image preprocessing, the
    guard stores both and serves raw images; otherwise it serves penultimate features only.
    Fits on the preset's ID ``fit`` split, calibrates on its ID ``val`` split (a seeded
    ``VAL_FIT_FRACTION`` of it fits detectors that need validation data, the rest calibrates)
    and estimates the TPR on ``ood_val``. The guard keeps the classifier head, so it takes the
    model's penultimate features at ``/v1/predict-features``. With hyperparameters selected on
    the same ``val`` split (``--from-run``), the calibration data took part in that selection:
    the guarantee then holds only approximately.
    """
    import numpy as np

    import unseen
    from unseen import cache
    from unseen.benchmark import get_preset
    from unseen.benchmark.presets import preset_options
    from unseen.guard.core import Guard

    accepted = set(preset_options(preset))
    spec = get_preset(preset, **{k: v for k, v in (options or {}).items() if k in accepted})
    cache_path = cache.directory(cache_dir)
    prepared = spec.model(cache_path)

    def rep(data: Any) -> Any:
        return unseen.extract(
            prepared.model, data, head=prepared.head, penultimate=prepared.penultimate,
            input_std=prepared.input_std, cache=cache_path, progress=False,
        )

    fit, val = rep(spec.fit), rep(spec.val)
    val_fit = calib = val
    if detector.needs_val:
        seed = int((options or {}).get("seed", 0))
        order = np.random.default_rng(seed).permutation(len(val))
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


def serve_command(args: argparse.Namespace, _console: Any = None) -> int:
    """``unseen serve DIR``: serve a guard directory until interrupted."""
    from unseen.guard.service import Limits, serve

    limits = Limits(
        max_body_bytes=args.max_body_bytes,
        max_batch=args.max_batch,
        max_image_side=args.max_image_side,
        max_image_pixels=args.max_image_pixels,
    )
    monitor = {k: v for k, v in (("window", args.window), ("level", args.alarm_level))
               if v is not None}
    if args.ray is not None:
        from unseen.guard.ray_serve import serve_on_ray

        serve_on_ray(args.guard_dir, address=args.ray or None, host=args.host, port=args.port,
                     replicas=args.replicas, num_cpus=args.replica_cpus, limits=limits,
                     monitor=monitor)
        return 0
    serve(str(args.guard_dir), host=args.host, port=args.port, limits=limits, monitor=monitor,
          log_level=args.log_level)
    return 0
