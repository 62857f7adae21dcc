"""``unseen benchmark``: run a preset or config file and print its leaderboard.

The output folder is checked before the run (a run of minutes should not fail at its last
step); the library writes the files into a temporary folder and renames it into place.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from unseen.cli._common import Subcommand, UsageError, check_detector

if TYPE_CHECKING:
    from unseen.benchmark import BenchmarkResult
    from unseen.benchmark.protocols import TaskSpec
    from unseen.benchmark.spec import BenchmarkSpec


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="digits", help="registered benchmark (default: digits)")
    p.add_argument("--config", type=Path, help="benchmark config file (.toml or .json)")
    p.add_argument("--detectors", help="comma-separated detector names (default: all)")
    p.add_argument("--out", type=Path, help="output folder (default: runs/<preset>-<time>); "
                   "absent, empty, or an earlier run's folder (replaced)")
    p.add_argument("--no-cache", action="store_true", help="extract and train afresh, store nothing")
    p.add_argument("--cache-dir", type=Path, help="cache folder (default: $UNSEEN_CACHE_DIR "
                   "or ~/.cache/unseen)")
    p.add_argument("--data-root", type=Path, help="data folder of real-data presets")
    p.add_argument("--model", help="model option of the preset")
    p.add_argument("--category", help="category of the mvtec preset: a folder under --data-root "
                   "(default: --data-root is the category folder itself)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--device", default="cpu", help="torch device for the model (default: cpu)")
    p.add_argument("--limit", type=int, metavar="N",
                   help="at most N samples of every split, evenly spaced: a quick end-to-end check "
                   "(its numbers are not comparable with the full benchmark's)")
    p.add_argument("--keep-going", action="store_true",
                   help="report a failing detector and continue with the others")
    p.add_argument("--ray", nargs="?", const="", metavar="ADDRESS",
                   help="extract on a Ray cluster (pip install 'unseen[ray]'): join ADDRESS, "
                   "default $RAY_ADDRESS, a cluster of this machine, else a new local one")
    p.add_argument("--ray-actors", type=int, default=2, help="extraction actors with --ray (2)")


def detector_names(arg: str | None) -> list[str] | None:
    """``"msp, knn"`` → ``["msp", "knn"]``, each checked (UsageError for an unknown one)."""
    if arg is None:
        return None
    names = list(dict.fromkeys(n.strip() for n in arg.split(",") if n.strip()))
    if not names:
        raise UsageError("--detectors is empty; name at least one (see `unseen list detectors`)")
    from unseen.detectors import maps

    for n in names:
        if n not in maps.names():  # anomaly-map detectors of the inspection presets
            check_detector(n)
    return names


def _spec(args: argparse.Namespace) -> BenchmarkSpec | TaskSpec:
    from unseen.benchmark import SpecError, UnknownPresetError, get_preset
    from unseen.benchmark.presets import preset_options

    if args.config is not None:
        from unseen.benchmark.config import ConfigError, load_config

        try:
            return load_config(args.config, seed=args.seed, data_root=args.data_root)
        except (ConfigError, SpecError) as exc:
            raise UsageError(str(exc)) from None
    try:
        accepted = preset_options(args.preset)
    except UnknownPresetError as exc:
        raise UsageError(str(exc)) from None
    options = {"seed": args.seed, "data_root": args.data_root, "model": args.model,
               "category": args.category}
    for opt in ("data_root", "model", "category"):
        if options[opt] is not None and opt not in accepted:
            raise UsageError(f"preset {args.preset!r} does not take --{opt.replace('_', '-')}")
    return get_preset(args.preset, **{k: v for k, v in options.items()
                                      if v is not None and k in accepted})


def _out_dir(args: argparse.Namespace, name: str) -> Path:
    if args.out is not None:
        return Path(args.out)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path("runs") / f"{name}-{stamp}"
    n = 1
    while out.exists():
        n += 1
        out = Path("runs") / f"{name}-{stamp}-{n}"
    return out


def _fmt(value: float | None, pct: bool = True) -> str:
    if value is None:
        return "–"
    return f"{100 * value:.2f}" if pct else f"{value:.2f}"


def _limited(spec: BenchmarkSpec, n: int) -> BenchmarkSpec:
    from unseen.benchmark import SpecError

    try:
        return spec.limited(n)
    except SpecError as exc:
        raise UsageError(f"--limit: {exc}") from None


def print_leaderboard(result: BenchmarkResult, console: Console) -> None:
    """The leaderboard table (rows in :meth:`BenchmarkResult.ranking` order) and its notes."""
    from unseen.benchmark import leaderboard

    table = Table(title=f"unseen benchmark: {result.preset} (sorted by "
                        f"{result.ranking_group}-OOD AUROC)")
    for col in ("detector", "hparams", "near AUROC", "far AUROC", "near FPR95", "far FPR95",
                "time (s)"):
        table.add_column(col, justify="left" if col in ("detector", "hparams") else "right",
                         no_wrap=col == "detector")
    for row in leaderboard(result):
        table.add_row(
            row["detector"],
            " ".join(f"{k}={json.dumps(v, separators=(',', ':'))}" for k, v in row["hparams"].items()),
            _fmt(row["near_auroc"]),
            _fmt(row["far_auroc"]),
            _fmt(row["near_fpr95"]),
            _fmt(row["far_fpr95"]),
            _fmt(row["seconds"], pct=False),
        )
    console.print(table)
    for det, reason in result.not_applicable.items():
        console.print(f"not applicable: {det}: {reason}", highlight=False, markup=False)
    console.print("AUROC and FPR95 in %; FPR95 = FPR on OOD at 95 % TPR on ID (ID positive); "
                  "group values are unweighted means over the group's datasets.")
    if result.id_accuracy is not None:
        console.print(f"ID accuracy (ID test): {100 * result.id_accuracy:.2f} %")
    console.print(f"wall time: {result.meta['wall_time_s']:.1f} s (extraction, model preparation "
                  f"included: {result.meta['extract_seconds']:.1f} s)")
    for det, err in result.meta.get("failures", {}).items():
        console.print(f"[red]failed[/red] {det}: {err}", highlight=False)


def run(args: argparse.Namespace, console: Console) -> int:
    from unseen._io import atomic_dir
    from unseen.benchmark import run as run_benchmark
    from unseen.benchmark import write_outputs
    from unseen.benchmark.outputs import check_output_dir
    from unseen.benchmark.spec import BenchmarkSpec

    names = detector_names(args.detectors)
    spec = _spec(args)
    cache = False if args.no_cache else (args.cache_dir or True)
    out = check_output_dir(_out_dir(args, spec.name))
    if not isinstance(spec, BenchmarkSpec):  # another sub-task's protocol (see benchmark.protocols)
        if args.ray is not None:
            raise UsageError(f"--ray extracts for the OOD protocol only; preset {spec.name!r} "
                             "runs another protocol")
        if args.limit is not None:
            raise UsageError(f"--limit applies to OOD-detection presets; {spec.name!r} is not one")
        task = spec.run(names, cache=cache, seed=args.seed, keep_going=args.keep_going,
                        console=console, device=args.device)
        with atomic_dir(out) as tmp:
            task_files = task.write_outputs(tmp)
        for renderable in task.summary():
            console.print(renderable)
        console.print(f"wrote {', '.join(task_files)} to {out}")
        return 0
    if args.limit is not None:
        spec = _limited(spec, args.limit)
    runner = None
    if args.ray is not None:
        from unseen.extraction.ray import RayRunner

        runner = RayRunner(address=args.ray or None, num_actors=args.ray_actors)
    result = run_benchmark(spec, names, cache=cache, seed=args.seed, keep_going=args.keep_going,
                           console=console, device=args.device, runner=runner)
    files = write_outputs(result, out)
    print_leaderboard(result, console)
    console.print(f"wrote {', '.join(files)} to {out}")
    return 1 if result.meta.get("failures") else 0


COMMAND = Subcommand("benchmark", "run a benchmark and write its results", configure, run)
