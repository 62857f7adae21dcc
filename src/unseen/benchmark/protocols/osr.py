"""Open-set recognition: classify the known classes of a trial and reject the unknown ones.

Protocol (Neal et al., ECCV 2018; as run by ARPL, Chen et al., TPAMI 2021, and Vaze et al.,
"Open-Set Recognition: a Good Closed-Set Classifier is All You Need?", ICLR 2022):

1. A dataset's features are extracted once with a frozen backbone (cached) for its training
   and test images; every trial only selects rows.
2. A trial names its known classes. Its training rows are the training images of those classes
   only (checked: an unknown class reaching a head's training data raises
   :class:`SplitLeakError`); a seeded ``val_fraction`` of them per class is held out as known-class
   validation data (for the head's ``C`` and for detectors that fit on validation data).
3. A :class:`~unseen.benchmark.protocols.probe.LinearHead` is trained on the known classes; it
   becomes the representation's ``weight``/``bias``, so every head-based detector runs unchanged.
   A spec may name another :class:`TrialHead` (``head``), e.g. a small CNN trained per split on
   pixel rows (:class:`unseen.benchmark.cnn_head.CNNHead`): its representation (penultimate
   features + last layer) then replaces the probe's.
4. Test: known-class test images (label = index of the class in the trial's known list) against
   unknown-class test images (label -1). Metrics: closed-set accuracy on the known classes,
   AUROC known vs unknown, OSCR, CCR at FPR 1/5/10 % (:mod:`unseen.metrics`), FPR95.

No unknown data may inform a trial, so detectors run at their default hyperparameters (the
papers'), with per-preset overrides in ``hparams``; there is no search. Detectors that run the
network again do not apply (there is no network, only a head on cached features).
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from rich.console import Console
from rich.table import Table

from unseen import detectors, metrics
from unseen._io import atomic_path, write_text
from unseen.benchmark.protocols import chosen_detectors
from unseen.benchmark.protocols.probe import DEFAULT_C, FeatureTable, LinearHead, holdout
from unseen.detectors.base import Detector, NotApplicableError

#: detector inputs a head on cached features can provide
HEAD_INPUTS = frozenset({"logits", "features", "head", "labels"})
#: FPRs of the CCR columns
CCR_FPRS = (0.01, 0.05, 0.10)
#: per-trial metric keys, in table order
METRICS = ("auroc", "oscr", "ccr_fpr1", "ccr_fpr5", "ccr_fpr10", "fpr95_id")
#: Neal et al. (ECCV 2018) splits, as released in ARPL's ``split.py`` (``splits_2020``) and in
#: Vaze et al.'s ``data/open_set_splits/osr_splits.py`` (identical lists): the known classes of
#: each of the five trials, CIFAR-10 class indices (airplane 0 ... truck 9). Splits 0 and 1 are
#: the same known set in another order.
CIFAR10_SPLITS: tuple[tuple[int, ...], ...] = (
    (0, 6, 4, 9, 1, 7),
    (7, 6, 4, 9, 0, 1),
    (1, 5, 7, 3, 9, 4),
    (8, 6, 1, 9, 0, 7),
    (2, 4, 1, 7, 9, 6),
)
#: the MNIST splits of the same two files (digits)
MNIST_SPLITS: tuple[tuple[int, ...], ...] = (
    (2, 4, 5, 9, 8, 3),
    (3, 2, 6, 9, 4, 0),
    (5, 8, 3, 2, 4, 6),
    (3, 7, 8, 4, 0, 5),
    (6, 3, 4, 9, 8, 2),
)


class SplitLeakError(RuntimeError):
    """An unknown class reached a trial's training data."""


def seeded_splits(num_classes: int, known: int, trials: int, seed: int) -> tuple[tuple[int, ...], ...]:
    """``trials`` known-class sets of size ``known`` drawn without replacement per trial
    (``numpy.random.default_rng(seed)``, one permutation per trial), each sorted; a set drawn
    twice is drawn again, so the sets are distinct."""
    rng = np.random.default_rng(seed)
    out: list[tuple[int, ...]] = []
    while len(out) < trials:
        draw = tuple(sorted(int(c) for c in rng.permutation(num_classes)[:known]))
        if draw not in out:
            out.append(draw)
    return tuple(out)


def distinct_trials(splits: Sequence[Sequence[int]]) -> list[int]:
    """Indices of the first trial of every distinct known *set* (order ignored)."""
    seen: set[frozenset[int]] = set()
    keep = []
    for i, known in enumerate(splits):
        key = frozenset(known)
        if key not in seen:
            seen.add(key)
            keep.append(i)
    return keep


def applicable(names: Iterable[str] | None = None) -> list[str]:
    """Registered detectors (or ``names``) whose inputs a head on cached features provides."""
    pool = detectors.names() if names is None else list(names)
    return [n for n in pool if (detectors.get(n).requires | detectors.get(n).fit_requires) <= HEAD_INPUTS]


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof = 1; 0 for a single value)."""
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


def aggregate(
    records: Sequence[dict[str, Any]], keys: Sequence[str], trials: Sequence[int] | None = None
) -> dict[str, dict[str, tuple[float, float]]]:
    """Per detector, ``(mean, std)`` over trials of each metric in ``keys``.

    ``trials``: only those trial indices (e.g. :func:`distinct_trials`); default all.
    """
    by_det: dict[str, dict[str, list[float]]] = {}
    for rec in records:
        if trials is not None and rec["trial"] not in trials:
            continue
        slot = by_det.setdefault(rec["detector"], {k: [] for k in keys})
        for k in keys:
            slot[k].append(float(rec[k]))
    return {d: {k: mean_std(v) for k, v in m.items()} for d, m in by_det.items()}


def trial_metrics(known: np.ndarray, correct: np.ndarray, unknown: np.ndarray) -> dict[str, float]:
    """The open-set metrics of one trial's scores (higher = more likely unknown)."""
    ev = metrics.evaluate(known, unknown)
    out = {"auroc": ev["auroc"], "oscr": metrics.oscr(known, correct, unknown),
           "fpr95_id": ev["fpr95_id"]}
    for fpr in CCR_FPRS:
        out[f"ccr_fpr{round(100 * fpr)}"] = metrics.ccr_at_fpr(known, correct, unknown, fpr)
    return out


@dataclass(frozen=True)
class Trial:
    """One trial's rows: positions into the training table (fit, val) and the test table."""

    known: tuple[int, ...]
    fit: np.ndarray
    val: np.ndarray
    test_known: np.ndarray
    test_unknown: np.ndarray


def make_trial(
    train: FeatureTable, test: FeatureTable, known: Sequence[int], val_fraction: float, seed: int
) -> Trial:
    """Rows of a trial; raises :class:`SplitLeakError` if an unknown class reaches fit or val."""
    known_arr = np.asarray(known)
    if len(set(known)) != len(known) or len(known) < 2:
        raise ValueError(f"a trial needs at least 2 distinct known classes, got {list(known)}")
    missing = sorted(set(known) - set(np.unique(train.labels).tolist()))
    if missing:
        raise ValueError(f"known classes {missing} have no training rows")
    rows = np.flatnonzero(np.isin(train.labels, known_arr))
    kept, held = holdout(train.labels[rows], val_fraction, seed)
    trial = Trial(
        known=tuple(int(k) for k in known),
        fit=rows[kept],
        val=rows[held],
        test_known=np.flatnonzero(np.isin(test.labels, known_arr)),
        test_unknown=np.flatnonzero(~np.isin(test.labels, known_arr)),
    )
    for part in (trial.fit, trial.val):
        leaked = np.setdiff1d(train.labels[part], known_arr)
        if leaked.size:
            raise SplitLeakError(f"unknown classes {leaked.tolist()} in a trial's training data")
    if trial.test_unknown.size == 0:
        raise ValueError(f"known classes {list(known)} leave no unknown test images")
    return trial


def remap(labels: np.ndarray, known: Sequence[int]) -> np.ndarray:
    """Class ``known[i]`` → ``i``; any other class → -1 (unknown)."""
    lut = np.full(int(max(labels.max(), max(known))) + 1, -1, dtype=np.int64)
    lut[np.asarray(known)] = np.arange(len(known))
    return lut[labels]


class TrialHead(Protocol):
    """What a trial trains on its known classes: fitted on (fit, val) tables with labels
    0..K-1, it turns any table into a representation with logits and ``weight``/``bias``."""

    def fit(self, train: FeatureTable, val: FeatureTable | None = None) -> Any: ...

    def representation(self, table: FeatureTable, labels: np.ndarray,
                       meta: dict[str, Any] | None = None) -> Any: ...

    def describe(self) -> dict[str, Any]: ...


#: loads the (train, test) feature tables given the cache directory, the device and a flag
#: that turns progress bars on
Loader = Callable[[Path | None, str, bool], tuple[FeatureTable, FeatureTable]]


@dataclass
class OpenSetSpec:
    """An open-set benchmark: a dataset's features, its class names and the trials' known sets."""

    name: str
    load: Loader
    class_names: Sequence[str]
    splits: Sequence[Sequence[int]]
    val_fraction: float = 0.1
    Cs: tuple[float, ...] = DEFAULT_C
    hparams: dict[str, dict[str, Any]] = field(default_factory=dict)
    anchors: Sequence[str] = ()
    meta: dict[str, Any] = field(default_factory=dict)
    #: the trial's head given the run's seed; None = a LinearHead with ``Cs``
    head: Callable[[int], TrialHead] | None = None

    def run(
        self,
        detector_names: Sequence[str] | None = None,
        *,
        cache: bool | str | os.PathLike[str] = True,
        seed: int = 0,
        keep_going: bool = False,
        console: Console | None = None,
        device: str = "cpu",
    ) -> OpenSetResult:
        """Run every trial for ``detector_names`` (default: every applicable detector)."""
        from unseen.benchmark.protocols.ood import _cache_dir, seed_everything

        names = chosen_detectors(detector_names, applicable, "need the network; open-set trials "
                                 "have only a head on cached features")
        seed_everything(seed)
        start = time.perf_counter()
        train, test = self.load(_cache_dir(cache), device, console is not None)
        result = OpenSetResult(preset=self.name, class_names=list(self.class_names),
                               splits=[list(s) for s in self.splits], anchors=list(self.anchors))
        result.meta.update({"extract_seconds": time.perf_counter() - start, "seed": seed,
                            "train_size": len(train), "test_size": len(test), **self.meta})
        for t, known in enumerate(self.splits):
            trial = make_trial(train, test, known, self.val_fraction, seed + t)
            self._run_trial(t, trial, train, test, names, result, seed, keep_going)
        result.meta["wall_time_s"] = time.perf_counter() - start
        return result

    def _run_trial(self, t: int, trial: Trial, train: FeatureTable, test: FeatureTable,
                   names: Sequence[str], result: OpenSetResult, seed: int,
                   keep_going: bool) -> None:
        from unseen.benchmark.protocols.ood import DetectorFailedError, seed_everything

        head = (LinearHead(Cs=self.Cs) if self.head is None else self.head(seed)).fit(
            FeatureTable(train.features[trial.fit], remap(train.labels[trial.fit], trial.known)),
            FeatureTable(train.features[trial.val], remap(train.labels[trial.val], trial.known)),
        )

        def rep(table: FeatureTable, rows: np.ndarray) -> Any:
            return head.representation(table.take(rows), remap(table.labels[rows], trial.known))

        fit, val = rep(train, trial.fit), rep(train, trial.val)
        known, unknown = rep(test, trial.test_known), rep(test, trial.test_unknown)
        correct = metrics.correct_mask(known.logits, known.labels)
        result.trials.append({"trial": t, "known": list(trial.known), "accuracy": float(correct.mean()),
                              "sizes": {"fit": len(fit), "val": len(val), "known": len(known),
                                        "unknown": len(unknown)}, "head": head.describe()})
        result.correct[t] = correct
        for name in names:
            seed_everything(seed)
            t0 = time.perf_counter()
            det: Detector = detectors.create(name, **self.hparams.get(name, {}))
            try:
                det.fit(fit, val)
                s_known, s_unknown = det.score(known), det.score(unknown)
            except NotApplicableError as exc:
                # a declared refusal of these features: listed with its reason, never ranked
                result.not_applicable.setdefault(name, f"trial {t}: {exc}")
                continue
            except Exception as exc:
                if not keep_going:
                    raise DetectorFailedError(
                        f"detector {name!r} failed in trial {t}: {type(exc).__name__}: {exc} "
                        "(keep_going=True, or `--keep-going`, skips it)") from exc
                result.failures.setdefault(name, f"trial {t}: {type(exc).__name__}: {exc}")
                continue
            seconds = time.perf_counter() - t0
            result.scores.setdefault(name, {})[f"{t}/known"] = s_known
            result.scores[name][f"{t}/unknown"] = s_unknown
            result.records.append({"detector": name, "trial": t, "hparams": det.get_params(),
                                   "accuracy": float(correct.mean()),
                                   **trial_metrics(s_known, correct, s_unknown), "seconds": seconds})


#: result-file columns
COLUMNS = ("detector", "trial", "hparams", "accuracy", *METRICS, "seconds")


@dataclass
class OpenSetResult:
    """Per-trial records (one per detector and trial), trial facts, scores and timings."""

    preset: str
    class_names: list[str]
    splits: list[list[int]]
    anchors: list[str] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)
    trials: list[dict[str, Any]] = field(default_factory=list)
    scores: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    correct: dict[int, np.ndarray] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    not_applicable: dict[str, str] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def distinct(self) -> list[int]:
        return distinct_trials(self.splits)

    def summary_rows(self, trials: Sequence[int] | None = None) -> list[dict[str, Any]]:
        """One row per detector, ``(mean, std)`` of every metric, best mean AUROC first."""
        agg = aggregate(self.records, ("accuracy", *METRICS), trials)
        secs: dict[str, float] = {}
        for rec in self.records:
            secs[rec["detector"]] = secs.get(rec["detector"], 0.0) + rec["seconds"]
        rows = [{"detector": d, **m, "seconds": secs[d]} for d, m in agg.items()]
        return sorted(rows, key=lambda r: -r["auroc"][0])

    def to_json(self) -> dict[str, Any]:
        dup = len(self.distinct) < len(self.splits)
        return {
            "preset": self.preset, "class_names": self.class_names, "splits": self.splits,
            "trials": self.trials, "records": self.records, "failures": self.failures,
            "not_applicable": self.not_applicable,
            "summary": self.summary_rows(),
            "summary_distinct": self.summary_rows(self.distinct) if dup else None,
            "distinct_trials": self.distinct, "anchors": self.anchors, "meta": self.meta,
        }

    def to_csv(self) -> str:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n", extrasaction="ignore")
        writer.writeheader()
        for r in self.records:
            writer.writerow({**r, "hparams": json.dumps(r["hparams"], sort_keys=True)})
        return buf.getvalue()

    def write_outputs(self, out_dir: str | os.PathLike[str]) -> dict[str, Path]:
        from unseen.benchmark.report.openset import write_openset_report

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_text(out / "results.json", json.dumps(self.to_json(), indent=2, default=_plain) + "\n")
        write_text(out / "results.csv", self.to_csv())
        arrays = {f"{d}/{k}": v for d, by in self.scores.items() for k, v in by.items()}
        arrays.update({f"correct/{t}": v for t, v in self.correct.items()})
        with atomic_path(out / "scores.npz") as tmp, tmp.open("wb") as fh:
            np.savez(fh, allow_pickle=False, **arrays)
        files = {n: out / n for n in ("results.json", "results.csv", "scores.npz")}
        files["report.html"] = write_openset_report(self, out)
        return files

    def summary(self) -> Iterable[Any]:
        yield summary_table(self.preset, self.summary_rows(), "all trials")
        if len(self.distinct) < len(self.splits):
            yield summary_table(self.preset, self.summary_rows(self.distinct),
                                f"distinct known sets only: trials {self.distinct}")
        acc = mean_std([t["accuracy"] for t in self.trials]) if self.trials else (float("nan"), 0.0)
        yield (f"closed-set accuracy on the known classes: {100 * acc[0]:.2f} ± {100 * acc[1]:.2f} % "
               f"over {len(self.trials)} trials; mean ± sample std (ddof 1); values in %")
        yield (f"wall time {self.meta.get('wall_time_s', 0):.1f} s (features: "
               f"{self.meta.get('extract_seconds', 0):.1f} s)")
        yield from (f"anchor (other backbone): {a}" for a in self.anchors)
        yield from (f"[red]failed[/red] {d}: {e}" for d, e in self.failures.items())
        yield from (f"not applicable {d}: {e}" for d, e in self.not_applicable.items())


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def _pm(value: tuple[float, float]) -> str:
    return f"{100 * value[0]:.2f} ± {100 * value[1]:.2f}"


def summary_table(preset: str, rows: Sequence[dict[str, Any]], caption: str) -> Table:
    table = Table(title=f"unseen benchmark: {preset} ({caption}; sorted by AUROC)")
    for col in ("detector", "AUROC", "OSCR", "CCR@1%", "CCR@5%", "CCR@10%", "FPR95", "time (s)"):
        table.add_column(col, justify="left" if col == "detector" else "right", no_wrap=True)
    for r in rows:
        table.add_row(r["detector"], *(_pm(r[k]) for k in METRICS), f"{r['seconds']:.1f}")
    return table
