"""The OpenOOD v1.5 protocol (:mod:`unseen.benchmark.protocols.ood`) on frozen features + a linear probe.

For an in-distribution set that no bundled network was trained on (EuroSAT, CLINC150), a frozen
encoder's features of every split are computed once (and cached: images by the extraction
cache, text by :func:`unseen.extraction.text.cached_embeddings`),
a :class:`~unseen.benchmark.protocols.probe.LinearHead` is trained on ID ``fit`` (its ``C`` by
accuracy on ID ``val``), and the detectors are searched and scored exactly as in
:func:`unseen.benchmark.protocols.ood.search` / ``evaluate_detector``: fit on ID fit, grid search
on ID val vs ``ood_val``, test on ID test vs the near / far OOD sets. The result is an ordinary
:class:`~unseen.benchmark.result.BenchmarkResult` with the usual files and report. Detectors that
run the network again do not apply (the head is not part of a network); a detector that refuses
the features by a declared requirement (:class:`~unseen.detectors.base.NotApplicableError`) is
listed in ``not_applicable`` with its reason and the run goes on.
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from unseen import detectors, metrics
from unseen.benchmark.protocols import chosen_detectors
from unseen.benchmark.protocols.osr import applicable
from unseen.benchmark.protocols.probe import DEFAULT_C, FeatureTable, LinearHead
from unseen.benchmark.result import BenchmarkResult
from unseen.detectors.base import NotApplicableError
from unseen.representation import Representation

#: the split names a loader returns: ``id/fit``, ``id/val``, ``id/test``, ``ood_val`` and
#: ``near/<name>`` / ``far/<name>``
ProbeLoader = Callable[[Path | None, str, bool], dict[str, FeatureTable]]


def representations(tables: dict[str, FeatureTable], head: LinearHead) -> dict[str, Representation]:
    """Every split with the head attached; OOD splits (not ``id/...``) are labelled -1."""
    reps = {}
    for name, table in tables.items():
        labels = table.labels if name.startswith("id/") else np.full(len(table), -1, np.int64)
        reps[name] = head.representation(table, labels, {"split": name})
    return reps


@dataclass
class ProbeOODSpec:
    """An OOD benchmark whose classifier is a linear probe on frozen features."""

    name: str
    load: ProbeLoader
    description: str
    Cs: tuple[float, ...] = DEFAULT_C
    meta: dict[str, Any] = field(default_factory=dict)

    def run(
        self,
        detector_names: Sequence[str] | None = None,
        *,
        cache: bool | str | os.PathLike[str] = True,
        seed: int = 0,
        keep_going: bool = False,
        console: Console | None = None,
        device: str = "cpu",
    ) -> ProbeOODResult:
        from unseen.benchmark.protocols.ood import (
            DetectorFailedError,
            _cache_dir,
            evaluate_detector,
            search,
            seed_everything,
        )

        names = chosen_detectors(detector_names, applicable, "need the network; a probe on "
                                 "cached features has none")
        seed_everything(seed)
        start = time.perf_counter()
        tables = self.load(_cache_dir(cache), device, console is not None)
        extract_seconds = time.perf_counter() - start
        head = LinearHead(Cs=self.Cs).fit(tables["id/fit"], tables["id/val"])
        reps = representations(tables, head)
        groups: dict[str, list[str]] = {}
        for split in reps:
            group, _, dataset = split.partition("/")
            if group in ("near", "far"):
                groups.setdefault(group, []).append(dataset)
        ood = {g: {n: reps[f"{g}/{n}"] for n in sets} for g, sets in groups.items()}
        records: list[dict[str, Any]] = []
        scores, logs, timings, failures, not_applicable = {}, {}, {}, {}, {}
        for name in names:
            seed_everything(seed)
            t0 = time.perf_counter()
            try:
                det, hparams, logs[name] = search(detectors.get(name), reps["id/fit"],
                                                  reps["id/val"], reps["ood_val"])
                recs, scores[name] = evaluate_detector(det, hparams, reps["id/test"], ood)
            except NotApplicableError as exc:
                # a declared refusal (e.g. SCALE on features that can be negative): listed, not ranked
                not_applicable[name] = str(exc)
                logs.pop(name, None)
                continue
            except Exception as exc:
                if not keep_going:
                    raise DetectorFailedError(f"detector {name!r} failed: {type(exc).__name__}: "
                                              f"{exc} (`--keep-going` skips it)") from exc
                failures[name] = f"{type(exc).__name__}: {exc}"
                logs.pop(name, None)
                continue
            timings[name] = time.perf_counter() - t0
            records.extend(recs)
        test = reps["id/test"]
        assert test.logits is not None and test.labels is not None  # set by the head
        meta = {"seed": seed, "model": self.description, "head": head.describe(),
                "sizes": {k: len(r) for k, r in reps.items()}, "extract_seconds": extract_seconds,
                "wall_time_s": time.perf_counter() - start, "failures": failures,
                **copy.deepcopy(self.meta)}  # a copy: a loader may update the spec's meta
        return ProbeOODResult(BenchmarkResult(
            preset=self.name, id_accuracy=metrics.id_accuracy(test.logits, test.labels),
            records=records, groups=groups, scores=scores, search=logs, timings=timings, meta=meta,
            not_applicable=not_applicable))


@dataclass
class ProbeOODResult:
    """A :class:`BenchmarkResult` dressed as a :class:`~unseen.benchmark.protocols.TaskResult`."""

    result: BenchmarkResult

    def write_outputs(self, out_dir: str | os.PathLike[str]) -> dict[str, Path]:
        from unseen.benchmark.outputs import write_outputs

        return write_outputs(self.result, out_dir)

    def summary(self) -> Iterable[Any]:
        from unseen.benchmark.outputs import leaderboard

        r = self.result
        sort = "near" if "near" in r.groups else "far"
        table = Table(title=f"unseen benchmark: {r.preset} (sorted by {sort}-OOD AUROC)")
        cols = ["detector", "hparams"]
        for g in r.groups:
            cols += [f"{g} AUROC", f"{g} FPR95 ID+", f"{g} FPR95 OOD+"]
        for col in (*cols, "time (s)"):
            table.add_column(col, justify="left" if col in ("detector", "hparams") else "right")
        for row in leaderboard(r):
            cells = [row["detector"], ", ".join(f"{k}={v}" for k, v in row["hparams"].items())]
            for g in r.groups:
                cells += [f"{100 * (r.mean(row['detector'], g, m) or 0):.2f}"
                          for m in ("auroc", "fpr95_id", "fpr95_ood")]
            table.add_row(*cells, f"{row['seconds']:.1f}")
        yield table
        yield (f"ID accuracy (ID test): {100 * (r.id_accuracy or 0):.2f} %; AUROC / FPR95 in %; "
               "FPR95 ID+ = FPR on OOD at 95 % TPR on ID, OOD+ = OpenOOD v1.5's (OOD positive)")
        yield (f"wall time {r.meta['wall_time_s']:.1f} s (features: "
               f"{r.meta['extract_seconds']:.1f} s)")
        yield from (f"[red]failed[/red] {d}: {e}" for d, e in r.meta["failures"].items())
        yield from (f"not applicable {d}: {e}" for d, e in r.not_applicable.items())
