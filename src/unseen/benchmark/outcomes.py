"""On-disk cache of network-in-the-loop detectors' benchmark outcomes.

A detector that runs the network again (``"network"`` in ``requires``) costs a pass of the
model over every split for every fit, which is the benchmark's extraction cost all over again.
Its outcome (search log, chosen hyperparameters, test scores) is a function of the splits'
representations, the detector's code (its own module and the shared helper modules it uses,
:func:`code_files`) and grid, and the seed, so it is stored under a key made of exactly those
and restored on the next run; the cache-based detectors are always scored afresh. An entry is
two files under ``<cache>/outcomes/``: ``<key>.npz`` (scores, written first) and
``<key>.json`` (the rest, written last, so its presence marks a complete entry). Both are sealed
with their digests (:func:`unseen.cache.write_entry`); a damaged entry (bytes that do not match,
an unreadable archive, a directory in the way) counts as a miss: it is deleted with a warning
that names the file, and the outcome is computed again.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

import unseen
from unseen._io import atomic_path, write_text
from unseen.cache import discard, read_entry, write_entry
from unseen.detectors.base import Detector
from unseen.representation import Representation

#: bump when what an entry holds changes meaning
FORMAT = 1

_OWN = "unseen.detectors."
#: modules every detector uses that do not compute its scores
_GENERIC = {"unseen.detectors.base", "unseen.detectors.registry", "unseen.detectors.params"}


def cacheable(cls: type[Detector]) -> bool:
    return "network" in cls.requires


def code_files(cls: type[Detector]) -> list[Path]:
    """The source files a detector's outcome depends on: the modules of its class and of its
    detector base classes, and the detector-package modules those import names from (shared
    helpers), sorted. The generic base class and the registry are left out, as before: they do
    not compute scores."""
    modules = {c.__module__ for c in cls.__mro__ if c.__module__.startswith(_OWN)}
    for name in list(modules):
        for value in vars(sys.modules[name]).values():
            home = getattr(value, "__module__", None) if not inspect.ismodule(value) else (
                value.__name__
            )
            if isinstance(home, str) and home.startswith(_OWN):
                modules.add(home)
    modules -= _GENERIC
    return sorted(Path(inspect.getfile(sys.modules[m])) for m in modules)


def _code_digest(cls: type[Detector]) -> str:
    digest = hashlib.sha256()
    for path in code_files(cls):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def key(cls: type[Detector], reps: dict[str, Representation], seed: int) -> str | None:
    """The entry's key, or None when a split has no extraction-cache key (extracted uncached)."""
    splits = {name: rep.meta.get("cache_key") for name, rep in reps.items()}
    if not all(isinstance(v, str) for v in splits.values()):
        return None
    blob = json.dumps(
        {
            "format": FORMAT,
            "unseen": unseen.__version__,
            "detector": f"{cls.__module__}.{cls.__qualname__}",
            "code": _code_digest(cls),
            "grid": cls.grid,
            "splits": splits,
            "seed": seed,
        },
        sort_keys=True,
        default=repr,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def load(cache_dir: Path, k: str) -> dict[str, Any] | None:
    """The stored outcome (``hparams``, ``search``, ``seconds``, ``scores``), or None on a miss
    (a damaged entry counts as one)."""
    cache_dir = Path(cache_dir)
    meta_path, scores_path = cache_dir / "outcomes" / f"{k}.json", cache_dir / "outcomes" / f"{k}.npz"
    outcome = read_entry(cache_dir, meta_path, _read_meta)
    if outcome is None:
        return None

    names: list[str] = outcome["score_names"]

    def read_scores(p: Path) -> dict[str, np.ndarray]:
        with np.load(p, allow_pickle=False) as data:  # a bad member CRC raises on access
            return {name: data[name] for name in names}

    scores = read_entry(cache_dir, scores_path, read_scores)
    if scores is None:  # the entry is the pair: without its scores the rest goes too
        discard(cache_dir, meta_path, f"has lost its scores file {scores_path.name}")
        return None
    outcome["scores"] = scores
    return outcome


def _read_meta(path: Path) -> dict[str, Any]:
    outcome = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(outcome, dict) or not isinstance(outcome.get("score_names"), list):
        raise ValueError("not an outcome record (no score_names list)")
    return outcome


def save(cache_dir: Path, k: str, hparams: dict[str, Any], search: list[dict[str, Any]],
         seconds: float, scores: dict[str, np.ndarray]) -> None:
    cache_dir = Path(cache_dir)
    folder = cache_dir / "outcomes"

    def write_scores(p: Path) -> None:
        with atomic_path(p) as tmp, tmp.open("wb") as fh:
            np.savez(fh, allow_pickle=False, **scores)

    write_entry(cache_dir, folder / f"{k}.npz", write_scores)
    record = {"hparams": hparams, "search": search, "seconds": seconds, "score_names": list(scores)}
    write_entry(cache_dir, folder / f"{k}.json", lambda p: write_text(p, json.dumps(record)))
