"""Protocols: how a benchmark turns representations into records, one module per sub-task.

``ood``: OpenOOD v1.5 (ID fit/val/test, OOD-val for the search, near/far OOD test groups); its
presets return a :class:`~unseen.benchmark.spec.BenchmarkSpec`.

Every other sub-task's preset returns its own spec object satisfying :class:`TaskSpec`; its
``run`` returns a :class:`TaskResult`. ``unseen benchmark --preset NAME`` calls exactly these.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

from rich.console import Console


class TaskResult(Protocol):
    """What a sub-task's run produced."""

    def write_outputs(self, out_dir: str | os.PathLike[str]) -> dict[str, Path]:
        """Write results.json, results.csv, report.html (and any arrays) into ``out_dir``."""
        ...

    def summary(self) -> Iterable[Any]:
        """Rich renderables (the leaderboard table, then notes) the CLI prints."""
        ...


class TaskSpec(Protocol):
    """A benchmark of a sub-task other than classifier OOD detection."""

    name: str

    def run(
        self,
        detector_names: Sequence[str] | None = None,
        *,
        cache: bool | str | os.PathLike[str] = True,
        seed: int = 0,
        keep_going: bool = False,
        console: Console | None = None,
        device: str = "cpu",
    ) -> TaskResult:
        """``detector_names=None``: every registered detector that applies to this sub-task."""
        ...


def chosen_detectors(
    detector_names: Sequence[str] | None, applicable: Callable[..., list[str]], why: str
) -> list[str]:
    """``detector_names`` (default: every applicable one), refusing any that ``applicable``
    drops with ``why`` and the list of those that apply."""
    names = applicable() if detector_names is None else list(detector_names)
    bad = sorted(set(names) - set(applicable(names)))
    if bad:
        raise ValueError(f"detectors {bad} {why} (applicable: {applicable()})")
    return names
