"""The evaluation protocol of OpenOOD v1.5 (Zhang et al., 2023), on cached representations.

1. Run the model once over every split (through the representation cache).
2. For each detector, search its grid (the cartesian product of ``search_space(fit)``, in the
   order listed): fit on ID ``fit`` (plus ID ``val`` when ``needs_val``), score ID ``val`` and
   ``ood_val``, keep the hyperparameters with the highest AUROC (the first grid point on ties).
   Grid points that differ only in ``score_params`` share one fit (``Detector.shared_fit``) and
   are scored together (``Detector.score_grid``), once per split.
3. Score ID ``test`` and every OOD test set with the chosen detector: one record per dataset and
   one per group with the *unweighted* mean over its datasets (``"dataset": "mean"``).

A grid point whose fit or score raises ``ValueError`` (an invalid hyperparameter for this data,
e.g. more neighbours than samples) is skipped and listed with its error in ``search``.

A detector that refuses this model or data by its own declared requirements
(:class:`~unseen.detectors.base.NotApplicableError`: a missing array, or every grid point refused,
e.g. SCALE on features that can be negative) is *not applicable*: it is listed with its reason
in ``BenchmarkResult.not_applicable`` and the run goes on. Any other error, or no usable grid
point for another reason, fails the detector: the run stops with :class:`DetectorFailedError`
unless ``keep_going``, which records the error in ``meta["failures"]`` and goes on.
"""

from __future__ import annotations

import itertools
import os
import random
import time
from collections.abc import Sequence, Sized
from pathlib import Path
from typing import Any, NamedTuple, cast

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

import unseen
from unseen import detectors
from unseen.benchmark import outcomes
from unseen.benchmark.result import METRICS, BenchmarkResult
from unseen.benchmark.spec import GROUPS, BenchmarkSpec
from unseen.detectors.base import Detector, MissingInputError, NotApplicableError
from unseen.extraction.runners import Runner
from unseen.representation import Representation, RepresentationError


class DetectorFailedError(RuntimeError):
    """A detector could not be evaluated at all."""


def grid_points(space: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """The cartesian product of ``space``: the last hyperparameter varies fastest."""
    names = list(space)
    return [dict(zip(names, values, strict=True)) for values in itertools.product(*space.values())]


def _jsonable(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _is_invalid_hparam(exc: Exception) -> bool:
    # Missing arrays and malformed representations are ValueErrors too, but no grid point fixes them.
    return isinstance(exc, ValueError) and not isinstance(
        exc, MissingInputError | RepresentationError
    )


def _id_accuracy(rep: Representation) -> float | None:
    """The classifier's closed-set accuracy on ``rep``; None when ``rep`` has no labels."""
    if rep.labels is None or rep.logits is None:
        return None
    return unseen.metrics.id_accuracy(rep.logits, rep.labels)


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _grid_aurocs(
    det: Detector, points: list[dict[str, Any]], val: Representation, ood_val: Representation
) -> list[float | ValueError]:
    """Validation AUROC of the fitted ``det`` at each point of score-only hyperparameters (or
    the error that refuses the point): one :meth:`Detector.score_grid` call per split."""
    try:
        on_val = det.score_grid(val, points)
        on_ood = det.score_grid(ood_val, points)
    except ValueError as exc:
        if not _is_invalid_hparam(exc):
            raise
        return [exc] * len(points)
    out: list[float | ValueError] = []
    for id_scores, ood_scores in zip(on_val, on_ood, strict=True):
        if isinstance(id_scores, np.ndarray) and isinstance(ood_scores, np.ndarray):
            out.append(unseen.metrics.evaluate(id_scores, ood_scores)["auroc"])
            continue
        error = next(s for s in (id_scores, ood_scores) if isinstance(s, ValueError))
        if not _is_invalid_hparam(error):
            raise error
        out.append(error)
    return out


def _no_usable_point(errors: list[Exception]) -> ValueError:
    """The error of a search in which every grid point failed: not applicable when each point
    was refused by a declared requirement (the reasons, deduplicated), else a ValueError."""
    if errors and all(isinstance(e, NotApplicableError) for e in errors):
        return NotApplicableError("; ".join(dict.fromkeys(str(e) for e in errors)))
    return ValueError(f"every grid point failed: {'; '.join(sorted({_error(e) for e in errors}))}")


def search(
    cls: type[Detector],
    fit: Representation,
    val: Representation,
    ood_val: Representation,
) -> tuple[Detector, dict[str, Any], list[dict[str, Any]]]:
    """Grid search on (ID val, OOD val): the fitted best detector, its hyperparameters, the log."""
    space = cls.search_space(fit)
    empty = [k for k, values in space.items() if not list(values)]
    if empty:
        raise ValueError(
            f"no value of {empty} is valid for this training set ({len(fit)} samples): "
            f"grid {cls.grid}"
        )
    points = grid_points(space)
    log: list[dict[str, Any]] = [
        {"hparams": {k: _jsonable(v) for k, v in p.items()}} for p in points
    ]
    fit_groups: dict[tuple[Any, ...], list[int]] = {}
    for i, p in enumerate(points):
        fit_key = tuple((k, repr(v)) for k, v in p.items() if k not in cls.score_params)
        fit_groups.setdefault(fit_key, []).append(i)

    best: tuple[float, int, Detector] | None = None
    errors: list[Exception] = []
    for members in fit_groups.values():
        det = cls(**cls.shared_fit([points[i] for i in members]))
        try:
            det.fit(fit, val if cls.needs_val else None)
        except Exception as exc:
            if not _is_invalid_hparam(exc):
                raise
            errors.append(exc)
            for i in members:
                log[i]["error"] = _error(exc)
            continue
        score_points = [{k: v for k, v in points[i].items() if k in cls.score_params}
                        for i in members]
        for i, auroc in zip(members, _grid_aurocs(det, score_points, val, ood_val), strict=True):
            if isinstance(auroc, Exception):
                errors.append(auroc)
                log[i]["error"] = _error(auroc)
                continue
            log[i]["val_auroc"] = auroc
            if best is None or auroc > best[0] or (auroc == best[0] and i < best[1]):
                best = (auroc, i, det)
    if best is None:
        raise _no_usable_point(errors)
    _, index, det = best
    det.set_params(**{k: v for k, v in points[index].items() if k in cls.score_params})
    for i, entry in enumerate(log):
        entry["selected"] = i == index
    return det, log[index]["hparams"], log


def evaluate_detector(
    det: Detector,
    hparams: dict[str, Any],
    test: Representation,
    ood: dict[str, dict[str, Representation]],
) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
    """Records (per dataset and group means) and scores of a fitted detector on the test sets."""
    scores = {"id": det.score(test)}
    for sets in ood.values():
        for name, rep in sets.items():
            scores[name] = det.score(rep)
    return records_from_scores(det.name, hparams, scores, {g: list(s) for g, s in ood.items()}), scores


def records_from_scores(
    detector: str, hparams: dict[str, Any], scores: dict[str, np.ndarray], ood: dict[str, list[str]]
) -> list[dict[str, Any]]:
    """One record per OOD dataset (ID test ``scores["id"]`` against its scores) and one per group
    with the unweighted mean over the group's datasets."""
    records = []
    for group, names in ood.items():
        rows = []
        for name in names:
            metrics = unseen.metrics.evaluate(scores["id"], scores[name])
            rows.append({k: float(metrics[k]) for k in METRICS})
            records.append({"detector": detector, "hparams": hparams, "group": group,
                            "dataset": name, **rows[-1]})
        mean = {k: float(np.mean([r[k] for r in rows])) for k in METRICS}
        records.append({"detector": detector, "hparams": hparams, "group": group,
                        "dataset": "mean", **mean})
    return records


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002  (legacy global state some third-party code still reads)
    torch.manual_seed(seed)


def _progress(console: Console | None, enabled: bool) -> Progress:
    columns = (TextColumn("{task.description:<32}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    return Progress(*columns, console=console, disable=not enabled, transient=True)


def _cache_dir(cache: bool | str | os.PathLike[str]) -> Path | None:
    from unseen.cache import directory

    return None if cache is False else directory(None if cache is True else Path(cache))


def extract_all(
    spec: BenchmarkSpec,
    cache: bool | str | os.PathLike[str],
    *,
    progress: bool = True,
    console: Console | None = None,
    device: str = "cpu",
    runner: Runner | None = None,
) -> tuple[dict[str, Representation], str]:
    """Every split's representation (keys as :meth:`BenchmarkSpec.splits`) and the model's text.

    ``device`` is where the model runs, here and when network detectors run it again;
    ``runner`` where extraction runs (default: this process; the cache keys do not change)."""
    cache_dir = _cache_dir(cache)
    prepared = spec.model(cache_dir)
    splits = spec.splits()
    reps = {}
    with _progress(console, progress) as bar:
        task = bar.add_task("extract", total=len(splits))
        for name, ds in splits.items():
            bar.update(task, description=f"extract {name} ({len(cast(Sized, ds))})")
            reps[name] = unseen.extract(
                prepared.model,
                ds,
                head=prepared.head,
                penultimate=prepared.penultimate,
                input_std=prepared.input_std,
                cache=False if cache_dir is None else cache_dir,
                progress=False,
                num_workers=spec.num_workers,
                device=device,
                runner=runner,
            )
            bar.advance(task)
    return reps, prepared.description


class _Outcome(NamedTuple):
    records: list[dict[str, Any]]
    search: list[dict[str, Any]]
    scores: dict[str, np.ndarray]
    #: the seconds it first took when restored from the outcome cache, else None
    restored_seconds: float | None


def _score_detector(
    cls: type[Detector],
    reps: dict[str, Representation],
    ood: dict[str, dict[str, Representation]],
    cache_dir: Path | None,
    seed: int,
) -> _Outcome:
    """Search, fit and score one detector, or restore its stored outcome."""
    t0 = time.perf_counter()
    store = cache_dir if cache_dir is not None and outcomes.cacheable(cls) else None
    key = None if store is None else outcomes.key(cls, reps, seed)
    stored = None if store is None or key is None else outcomes.load(store, key)
    if stored is not None:
        recs = records_from_scores(cls.name, stored["hparams"], stored["scores"],
                                   {g: list(sets) for g, sets in ood.items()})
        return _Outcome(recs, stored["search"], stored["scores"], stored["seconds"])
    det, hparams, log = search(cls, reps["id/fit"], reps["id/val"], reps["ood_val"])
    recs, scores = evaluate_detector(det, hparams, reps["id/test"], ood)
    if store is not None and key is not None:
        outcomes.save(store, key, hparams, log, time.perf_counter() - t0, scores)
    return _Outcome(recs, log, scores, None)


def run(
    spec: BenchmarkSpec,
    detector_names: Sequence[str] | None = None,
    *,
    cache: bool | str | os.PathLike[str] = True,
    seed: int = 0,
    keep_going: bool = False,
    progress: bool = True,
    console: Console | None = None,
    device: str = "cpu",
    runner: Runner | None = None,
) -> BenchmarkResult:
    """Run the protocol on ``spec`` for ``detector_names`` (default: every registered detector).

    ``cache``: ``True`` for the default cache directory (``$UNSEEN_CACHE_DIR`` or
    ``~/.cache/unseen``), a directory, or ``False`` to extract (and train) afresh and store
    nothing. With a cache, the outcomes of network-in-the-loop detectors are stored too and
    restored on the next run of the same benchmark (:mod:`unseen.benchmark.outcomes`); they are
    listed with their original seconds in ``meta["restored"]``.
    """
    names = list(detectors.names() if detector_names is None else detector_names)
    classes = {n: detectors.get(n) for n in names}  # unknown names fail before any work
    seed_everything(seed)
    start = time.perf_counter()
    reps, model_text = extract_all(spec, cache, progress=progress, console=console, device=device,
                                   runner=runner)
    extract_seconds = time.perf_counter() - start
    test = reps["id/test"]
    ood = {g: {n: reps[f"{g}/{n}"] for n in getattr(spec, g)} for g in GROUPS if getattr(spec, g)}
    cache_dir = _cache_dir(cache)
    restored: dict[str, float] = {}

    records: list[dict[str, Any]] = []
    scores: dict[str, dict[str, np.ndarray]] = {}
    logs: dict[str, list[dict[str, Any]]] = {}
    timings: dict[str, float] = {}
    failures: dict[str, str] = {}
    not_applicable: dict[str, str] = {}
    with _progress(console, progress) as bar:
        task = bar.add_task("score", total=len(names))
        for name, cls in classes.items():
            bar.update(task, description=f"score {name}")
            seed_everything(seed)
            t0 = time.perf_counter()
            try:
                outcome = _score_detector(cls, reps, ood, cache_dir, seed)
            except NotApplicableError as exc:
                # a declared refusal, not a failure: listed with its reason, never ranked
                not_applicable[name] = str(exc)
                continue
            except Exception as exc:
                if not keep_going:
                    raise DetectorFailedError(
                        f"detector {name!r} failed: {_error(exc)} (keep_going=True, or "
                        "`--keep-going` on the command line, skips it)"
                    ) from exc
                failures[name] = _error(exc)
                continue
            finally:
                bar.advance(task)
            timings[name] = time.perf_counter() - t0
            records.extend(outcome.records)
            logs[name], scores[name] = outcome.search, outcome.scores
            if outcome.restored_seconds is not None:
                restored[name] = outcome.restored_seconds

    meta = {
        "seed": seed,
        "model": model_text,
        "sizes": {k: len(r) for k, r in reps.items()},
        "extract_seconds": extract_seconds,
        "wall_time_s": time.perf_counter() - start,
        "failures": failures,
        "restored": restored,
        "csid_accuracy": {n: _id_accuracy(reps[f"csid/{n}"]) for n in spec.csid},
        "unseen_version": unseen.__version__,
        "torch_version": torch.__version__,
        **spec.meta,
    }
    return BenchmarkResult(
        preset=spec.name,
        id_accuracy=_id_accuracy(test),
        records=records,
        groups=spec.groups,
        scores=scores,
        search=logs,
        timings=timings,
        meta=meta,
        not_applicable=not_applicable,
    )
