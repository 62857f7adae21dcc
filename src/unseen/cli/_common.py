"""What the subcommands share: the usage error, the subcommand record, detector-name checks."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rich.console import Console


class UsageError(Exception):
    """Wrong arguments: exit status 2."""


@dataclass(frozen=True)
class Subcommand:
    """A subcommand: its name and help, a function adding its arguments, one running it."""

    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace, Console], int]


def check_detector(name: str, params: dict[str, Any] | None = None) -> None:
    """Raise :class:`UsageError` for an unknown detector or hyperparameter name."""
    from unseen import detectors

    try:
        cls = detectors.get(name)
    except KeyError as exc:
        raise UsageError(str(exc.args[0]) if exc.args else str(exc)) from None
    unknown = sorted(set(params or {}) - set(cls().get_params()))
    if unknown:
        raise UsageError(
            f"detector {name!r} has no hyperparameter(s) {unknown}; it has "
            f"{sorted(cls().get_params())} (see `unseen list detectors`)"
        )
