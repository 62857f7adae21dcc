"""``unseen list detectors | presets | models``: the registries as tables."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from unseen.cli._common import Subcommand


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("what", choices=("detectors", "presets", "models"))


def paper_short(authors: str, venue: str, year: int) -> str:
    """``"Liu, Wang, Owens, Li"`` → ``"Liu et al., NeurIPS 2020"``."""
    names = [a.strip() for a in authors.split(",") if a.strip()]
    who = f"{names[0]} et al." if len(names) > 2 else " and ".join(names)
    return f"{who}, {venue} {year}"


def _detectors(table: Table) -> None:
    from unseen import detectors

    for col in ("detector", "consumes", "paper"):
        table.add_column(col)
    for name in detectors.names():
        cls = detectors.get(name)
        consumes = ", ".join(sorted(cls.requires)) or "–"
        if cls.fit_requires:
            consumes += f" (fit: {', '.join(sorted(cls.fit_requires))})"
        table.add_row(name, consumes, paper_short(cls.paper.authors, cls.paper.venue, cls.paper.year))


def _presets(table: Table) -> None:
    from unseen.benchmark import describe_preset, preset_names

    table.add_column("preset")
    table.add_column("description")
    for name in preset_names():
        table.add_row(name, describe_preset(name))


def _models(table: Table) -> None:
    try:
        from unseen import models
    except ImportError as exc:
        raise RuntimeError(f"the model registry is not available: {exc}") from None
    table.add_column("model")
    table.add_column("description")
    for name in models.names():
        table.add_row(name, models.info(name).description)


def run(args: argparse.Namespace, console: Console) -> int:
    table = Table(show_header=True)
    {"detectors": _detectors, "presets": _presets, "models": _models}[args.what](table)
    console.print(table)
    return 0


COMMAND = Subcommand("list", "list detectors, presets or models", configure, run)
