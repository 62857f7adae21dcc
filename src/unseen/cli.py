"""The ``unseen`` command line: ``benchmark``, ``list``, ``calibrate``, ``serve``.

Each subcommand is a :class:`Subcommand` (a function adding its arguments and a function running
it) listed in :data:`SUBCOMMANDS`; add new ones there. The CLI only parses arguments, calls the
library and prints. Errors print one line ``unseen: error: ...`` and exit with 2 (usage) or 1
(runtime); ``--debug`` or ``UNSEEN_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from rich.console import Console
from rich.table import Table

from unseen.guard.commands import (
    calibrate_command,
    configure_calibrate,
    configure_serve,
    serve_command,
)

if TYPE_CHECKING:
    from unseen.benchmark import BenchmarkSpec


class UsageError(Exception):
    """Wrong arguments: exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


@dataclass(frozen=True)
class Subcommand:
    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace, Console], int]


# ----------------------------------------------------------------------------- benchmark


def _benchmark_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="digits", help="registered benchmark (default: digits)")
    p.add_argument("--config", type=Path, help="benchmark config file (.toml or .json)")
    p.add_argument("--detectors", help="comma-separated detector names (default: all)")
    p.add_argument("--out", type=Path, help="output folder (default: runs/<preset>-<time>)")
    p.add_argument("--no-cache", action="store_true", help="extract and train afresh, store nothing")
    p.add_argument("--cache-dir", type=Path, help="cache folder (default: $UNSEEN_CACHE_DIR "
                   "or ~/.cache/unseen)")
    p.add_argument("--data-root", type=Path, help="data folder of real-data presets")
    p.add_argument("--model", help="model option of the preset")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--device", default="cpu", help="torch device for the model (default: cpu)")
    p.add_argument("--limit", type=int, metavar="N",
                   help="at most N samples of every split, evenly spaced: a quick end-to-end check "
                   "(its numbers are not comparable with the full benchmark's)")
    p.add_argument("--keep-going", action="store_true",
                   help="report a failing detector and continue with the others")


def _detector_names(arg: str | None) -> list[str] | None:
    from unseen import detectors

    if arg is None:
        return None
    names = list(dict.fromkeys(n.strip() for n in arg.split(",") if n.strip()))
    if not names:
        raise UsageError("--detectors is empty; name at least one (see `unseen list detectors`)")
    for n in names:
        try:
            detectors.get(n)
        except KeyError as exc:
            raise UsageError(str(exc)) from None
    return names


def _spec(args: argparse.Namespace) -> BenchmarkSpec:
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
    options = {"seed": args.seed, "data_root": args.data_root, "model": args.model}
    for opt in ("data_root", "model"):
        if options[opt] is not None and opt not in accepted:
            raise UsageError(f"preset {args.preset!r} does not take --{opt.replace('_', '-')}")
    return get_preset(args.preset, **{k: v for k, v in options.items()
                                      if v is not None and k in accepted})


def _out_dir(args: argparse.Namespace, name: str) -> Path:
    if args.out is not None:
        return args.out
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


def _benchmark(args: argparse.Namespace, console: Console) -> int:
    from unseen.benchmark import BenchmarkSpec, leaderboard, run, write_outputs

    names = _detector_names(args.detectors)
    spec = _spec(args)
    cache = False if args.no_cache else (args.cache_dir or True)
    out = _out_dir(args, spec.name)
    if not isinstance(spec, BenchmarkSpec):  # another sub-task's protocol (see benchmark.protocols)
        if args.limit is not None:
            raise UsageError(f"--limit applies to OOD-detection presets; {spec.name!r} is not one")
        task = spec.run(names, cache=cache, seed=args.seed, keep_going=args.keep_going,
                        console=console, device=args.device)
        task_files = task.write_outputs(out)
        for renderable in task.summary():
            console.print(renderable)
        console.print(f"wrote {', '.join(task_files)} to {out}")
        return 0
    if args.limit is not None:
        spec = _limited(spec, args.limit)
    result = run(spec, names, cache=cache, seed=args.seed, keep_going=args.keep_going,
                 console=console, device=args.device)
    files = write_outputs(result, out)

    table = Table(title=f"unseen benchmark: {spec.name} (sorted by near-OOD AUROC)")
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
    console.print(f"wrote {', '.join(files)} to {out}")
    return 1 if result.meta.get("failures") else 0


# ----------------------------------------------------------------------------- list


def _list_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("what", choices=("detectors", "presets", "models"))


def paper_short(authors: str, venue: str, year: int) -> str:
    """``"Liu, Wang, Owens, Li"`` → ``"Liu et al., NeurIPS 2020"``."""
    names = [a.strip() for a in authors.split(",") if a.strip()]
    if len(names) > 2:
        who = f"{names[0]} et al."
    else:
        who = " and ".join(names)
    return f"{who}, {venue} {year}"


def _list(args: argparse.Namespace, console: Console) -> int:
    table = Table(show_header=True)
    if args.what == "detectors":
        from unseen import detectors

        for col in ("detector", "consumes", "paper"):
            table.add_column(col)
        for name in detectors.names():
            cls = detectors.get(name)
            consumes = ", ".join(sorted(cls.requires)) or "–"
            if cls.fit_requires:
                consumes += f" (fit: {', '.join(sorted(cls.fit_requires))})"
            table.add_row(name, consumes, paper_short(cls.paper.authors, cls.paper.venue,
                                                      cls.paper.year))
    elif args.what == "presets":
        from unseen.benchmark import describe_preset, preset_names

        table.add_column("preset")
        table.add_column("description")
        for name in preset_names():
            table.add_row(name, describe_preset(name))
    else:
        try:
            from unseen import models
        except ImportError as exc:
            raise RuntimeError(f"the model registry is not available: {exc}") from None
        table.add_column("model")
        table.add_column("description")
        for name in models.names():
            table.add_row(name, models.info(name).description)
    console.print(table)
    return 0


# ----------------------------------------------------------------------------- main

SUBCOMMANDS: list[Subcommand] = [
    Subcommand("benchmark", "run a benchmark and write its results", _benchmark_args, _benchmark),
    Subcommand("list", "list detectors, presets or models", _list_args, _list),
    Subcommand(
        "calibrate",
        "fit a detector, calibrate a conformal threshold, write a guard directory",
        configure_calibrate,
        calibrate_command,
    ),
    Subcommand(
        "serve",
        "serve a guard directory over HTTP (127.0.0.1 by default)",
        configure_serve,
        serve_command,
    ),
]


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    parser = _Parser(prog="unseen", description="Out-of-distribution detection toolbox.",
                     parents=[common])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for cmd in SUBCOMMANDS:
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help, parents=[common])
        cmd.configure(p)
        p.set_defaults(handler=cmd.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = os.environ.get("UNSEEN_DEBUG") == "1" or "--debug" in argv
    # Piped output (CI logs, `| tee`) gets a width that fits the leaderboard, not rich's 80.
    console = Console(width=None if sys.stdout.isatty() else 140)
    try:
        args = build_parser().parse_args(argv)
        return args.handler(args, console)
    except UsageError as exc:
        if debug:
            raise
        print(f"unseen: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("unseen: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if debug:
            raise
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"unseen: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
