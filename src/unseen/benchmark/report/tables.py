"""The tables of a benchmark run as pure data: no HTML, no matplotlib.

The HTML page (:mod:`.page`) renders these tables and the CLI prints :func:`leaderboard`, so the
two always agree on the numbers, the highlighted best values and the order of the detectors.
That order is decided in exactly one place, :func:`detector_order`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from unseen.benchmark.result import BenchmarkResult

__all__ = [
    "COLUMNS",
    "Cell",
    "MetricTable",
    "SearchTable",
    "best_value",
    "chosen_hparams",
    "dataset_table",
    "detector_order",
    "group_means",
    "group_means_table",
    "heat_table",
    "leaderboard",
    "search_table",
    "sort_group",
]

#: (record key, column title, higher is better): the metric columns of every table
COLUMNS: tuple[tuple[str, str, bool], ...] = (
    ("auroc", "AUROC", True),
    ("fpr95_id", "FPR95 ID+", False),
    ("fpr95_ood", "FPR95 OOD+", False),
    ("aupr_in", "AUPR-In", True),
    ("aupr_out", "AUPR-Out", True),
)

_Key = tuple[str, str, str]


def sort_group(result: BenchmarkResult) -> str | None:
    """The group whose mean AUROC ranks the detectors (:attr:`BenchmarkResult.ranking_group`)."""
    return result.ranking_group if result.groups else None


def _index(result: BenchmarkResult) -> dict[_Key, dict[str, Any]]:
    return {(rec["detector"], rec["group"], rec["dataset"]): rec for rec in result.records}


def _value(index: dict[_Key, dict[str, Any]], key: _Key, metric: str) -> float | None:
    rec = index.get(key)
    return None if rec is None else rec.get(metric)


def group_means(result: BenchmarkResult, metric: str = "auroc") -> dict[tuple[str, str], float]:
    """``{(detector, group): the group's mean of metric}`` for every mean record."""
    return {(d, g): rec[metric] for (d, g, ds), rec in _index(result).items()
            if ds == "mean" and rec.get(metric) is not None}


def detector_order(result: BenchmarkResult) -> list[str]:
    """The detectors of ``result``'s records, best first: :meth:`BenchmarkResult.ranking`.

    Every table here, the report and the CLI leaderboard take their order from this function.
    """
    return result.ranking()


def chosen_hparams(result: BenchmarkResult) -> dict[str, dict[str, Any]]:
    """Each detector's selected hyperparameters (from its first record)."""
    out: dict[str, dict[str, Any]] = {}
    for rec in result.records:
        out.setdefault(rec["detector"], rec.get("hparams") or {})
    return out


def best_value(values: Sequence[float | None], higher: bool) -> float | None:
    """The best of the values that exist (None when none does)."""
    finite = [v for v in values if v is not None]
    if not finite:
        return None
    return max(finite) if higher else min(finite)


@dataclass(frozen=True)
class Cell:
    value: float | None
    #: the value equals (to rounding) the best of its column
    best: bool = False


@dataclass(frozen=True)
class MetricTable:
    """One row per detector (in :func:`detector_order`), one cell per column.

    ``columns`` are ``(group, dataset, metric, higher is better)``; ``dataset`` is ``"mean"``
    for a group's unweighted mean.
    """

    columns: tuple[tuple[str, str, str, bool], ...]
    rows: tuple[tuple[str, tuple[Cell, ...]], ...]


def _metric_table(
    result: BenchmarkResult, columns: Sequence[tuple[str, str, str, bool]]
) -> MetricTable:
    index = _index(result)
    order = detector_order(result)
    values = {
        d: [_value(index, (d, group, dataset), metric) for group, dataset, metric, _ in columns]
        for d in order
    }
    best = [best_value([values[d][j] for d in order], hi) for j, (*_, hi) in enumerate(columns)]
    rows = tuple(
        (d, tuple(
            Cell(v, v is not None and math.isclose(v, best[j] or 0.0)) for j, v in enumerate(values[d])
        ))
        for d in order
    )
    return MetricTable(tuple(columns), rows)


def group_means_table(result: BenchmarkResult) -> MetricTable:
    """The leaderboard: every metric's group mean, group by group."""
    return _metric_table(
        result, [(g, "mean", key, hi) for g in result.groups for key, _, hi in COLUMNS]
    )


def dataset_table(result: BenchmarkResult, group: str, dataset: str) -> MetricTable:
    """Every metric on one OOD dataset."""
    return _metric_table(result, [(group, dataset, key, hi) for key, _, hi in COLUMNS])


def heat_table(result: BenchmarkResult) -> MetricTable:
    """AUROC on every OOD dataset, each group followed by its mean."""
    return _metric_table(
        result,
        [(g, ds, "auroc", True) for g, dss in result.groups.items() for ds in [*dss, "mean"]],
    )


@dataclass(frozen=True)
class SearchTable:
    """A detector's grid search: one row per grid point, flattened into ``columns``."""

    columns: tuple[str, ...]
    #: (is this the chosen point, the row's values by column; a missing column is absent)
    rows: tuple[tuple[bool, dict[str, Any]], ...]


def _flatten(point: dict[str, Any]) -> dict[str, Any]:
    """A search entry with a nested ``hparams`` (or any dict) spread into top-level columns."""
    flat: dict[str, Any] = {}
    for k, v in point.items():
        if isinstance(v, dict):
            flat.update({str(kk): vv for kk, vv in v.items()})
        else:
            flat[str(k)] = v
    return flat


def search_table(points: list[dict[str, Any]], chosen: dict[str, Any]) -> SearchTable:
    """The chosen row is the entry marked ``selected`` or, without such marks (older logs), the
    one whose hyperparameters match ``chosen`` (the leaderboard's)."""
    rows = [_flatten(p) for p in points]
    marked = any("selected" in row for row in rows)
    columns = tuple(c for c in dict.fromkeys(k for row in rows for k in row) if c != "selected")
    wanted = {str(k): v for k, v in chosen.items()}
    out = []
    for row in rows:
        if marked:
            hit = row.get("selected") is True
        else:
            hit = bool(wanted) and all(k in row and row[k] == v for k, v in wanted.items())
        out.append((hit, {c: row[c] for c in columns if c in row}))
    return SearchTable(columns, tuple(out))


def leaderboard(result: BenchmarkResult) -> list[dict[str, Any]]:
    """The CLI's leaderboard: one row per timed detector, in :func:`detector_order`, with its
    hyperparameters, near/far mean AUROC and FPR95 (ID positive) and seconds."""
    index = _index(result)
    hparams = chosen_hparams(result)
    rows = []
    for det in detector_order(result):
        if det not in result.timings:
            continue
        row: dict[str, Any] = {"detector": det, "hparams": hparams[det], "seconds": result.timings[det]}
        for group in ("near", "far"):
            row[f"{group}_auroc"] = _value(index, (det, group, "mean"), "auroc")
            row[f"{group}_fpr95"] = _value(index, (det, group, "mean"), "fpr95_id")
        rows.append(row)
    return rows
