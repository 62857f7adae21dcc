"""What a benchmark is: a model, in-distribution splits, OOD test groups and an OOD validation set.

The split roles follow OpenOOD v1.5 (Zhang et al., 2023): detectors fit on ID ``fit`` (and ID
``val`` when they need it), hyperparameters are chosen on ID ``val`` against ``ood_val``, and
only then are ID ``test`` and the OOD test sets scored. ``ood_val`` must share no sample with any
test set; :class:`BenchmarkSpec` checks this on construction wherever the datasets can name their
samples (a ``sample_keys()`` method, or a ``samples`` list of ``(path, label)`` as the image
readers have).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Hashable, Sized
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import numpy as np
from torch import nn
from torch.utils.data import Dataset

#: names the result files use for other things
RESERVED_NAMES = frozenset({"id", "mean"})
GROUPS = ("near", "far")


class SpecError(ValueError):
    """A benchmark description is inconsistent (overlapping splits, clashing names, ...)."""


@dataclass
class PreparedModel:
    """A trained classifier and how to read it (see :func:`unseen.extract`).

    ``model_name`` (its :mod:`unseen.models` name) and ``transform`` (the preprocessing of one
    raw image, from :mod:`unseen.data.transforms`) let a guard store the model and serve images.
    """

    model: nn.Module
    head: str | None = None
    penultimate: str | None = None
    input_std: tuple[float, ...] | None = None
    description: str = ""
    model_name: str | None = None
    transform: Any = None


#: called with the weights cache directory (None: do not cache) when the benchmark runs
ModelFactory = Callable[[Path | None], PreparedModel]


@dataclass
class BenchmarkSpec:
    """One benchmark. Datasets yield ``(input tensor, label)``; OOD sets label every item -1.

    Attributes:
        name: the preset or config name, written into the results.
        model: factory of the trained model, called once per run (it may train and cache).
        fit, val, test: in-distribution splits.
        ood_val: OOD validation set for the hyperparameter search.
        near, far: OOD test sets by name.
        csid: covariate-shifted ID test sets by name (labels are ID classes); only the ID
            accuracy is reported on them.
        num_workers: DataLoader worker processes that decode inputs during extraction (and
            when network detectors run the model again); 0 decodes in the main process.
    """

    name: str
    model: ModelFactory
    fit: Dataset
    val: Dataset
    test: Dataset
    ood_val: Dataset
    near: dict[str, Dataset] = field(default_factory=dict)
    far: dict[str, Dataset] = field(default_factory=dict)
    csid: dict[str, Dataset] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    num_workers: int = 0

    def __post_init__(self) -> None:
        if not self.near and not self.far:
            raise SpecError(f"benchmark {self.name!r} has no OOD test set (near or far)")
        names = [n for group in (self.near, self.far, self.csid) for n in group]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise SpecError(f"benchmark {self.name!r}: dataset names used twice: {dupes}")
        bad = sorted(RESERVED_NAMES.intersection(names))
        if bad:
            raise SpecError(f"benchmark {self.name!r}: dataset names {bad} are reserved")
        for split, ds in self.splits().items():
            if len(cast(Sized, ds)) == 0:
                raise SpecError(f"benchmark {self.name!r}: split {split!r} is empty")
        self._check_disjoint()

    def splits(self) -> dict[str, Dataset]:
        """Every dataset by a unique split name: ``id/fit``, ``near/<name>``, ``ood_val`` ..."""
        out = {"id/fit": self.fit, "id/val": self.val, "id/test": self.test, "ood_val": self.ood_val}
        for group in ("near", "far", "csid"):
            out.update({f"{group}/{n}": ds for n, ds in getattr(self, group).items()})
        return out

    def limited(self, n: int) -> BenchmarkSpec:
        """The same benchmark on at most ``n`` samples of every split (:class:`Subsample`): a
        quick check that a benchmark runs end to end. Its numbers are not comparable with the
        full benchmark's; ``meta["limit"]`` records ``n``."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise SpecError(f"the sample limit must be a positive integer, got {n!r}")

        def cut(group: dict[str, Dataset]) -> dict[str, Dataset]:
            return {name: Subsample(ds, n) for name, ds in group.items()}

        return replace(
            self,
            fit=Subsample(self.fit, n), val=Subsample(self.val, n), test=Subsample(self.test, n),
            ood_val=Subsample(self.ood_val, n),
            near=cut(self.near), far=cut(self.far), csid=cut(self.csid),
            meta={**self.meta, "limit": n},
        )

    @property
    def groups(self) -> dict[str, list[str]]:
        return {g: list(getattr(self, g)) for g in GROUPS if getattr(self, g)}

    def _check_disjoint(self) -> None:
        tests = {"id/test": self.test} | {
            f"{g}/{n}": ds for g in GROUPS for n, ds in getattr(self, g).items()
        }
        pairs = [("ood_val", self.ood_val, t, ds) for t, ds in tests.items()]
        pairs += [("id/fit", self.fit, "id/test", self.test), ("id/val", self.val, "id/test", self.test)]
        for a_name, a, b_name, b in pairs:
            a_keys, b_keys = sample_keys(a), sample_keys(b)
            if a_keys is None or b_keys is None:
                continue
            shared = a_keys & b_keys
            if shared:
                example = next(iter(shared))
                raise SpecError(
                    f"benchmark {self.name!r}: {a_name} and {b_name} share {len(shared)} "
                    f"sample(s), e.g. {example}; validation and test data must be disjoint"
                )


def sample_keys(ds: Any) -> set[Hashable] | None:
    """Identifiers of a dataset's samples (content hashes or absolute file paths), if it has any."""
    if isinstance(ds, AsOOD):
        return sample_keys(ds.inner)
    keys = getattr(ds, "sample_keys", None)
    if callable(keys):
        return set(keys())
    samples = getattr(ds, "samples", None)
    if isinstance(samples, list) and all(isinstance(s, tuple) and s for s in samples):
        return {os.path.abspath(s[0]) for s in samples}
    return None


class AsOOD(Dataset):
    """A dataset whose items are relabelled -1 (OOD), keeping its samples and identity."""

    transform = None

    def __init__(self, inner: Dataset) -> None:
        self.inner = inner

    def __len__(self) -> int:
        return len(cast(Sized, self.inner))

    def __getitem__(self, index: int) -> tuple[Any, int]:
        return self.inner[index][0], -1

    def identity(self) -> str:
        return f"ood({_inner_identity(self.inner)})"


class Subsample(Dataset):
    """At most ``n`` items of a dataset, evenly spaced over its index range (deterministic, and
    every class of a class-sorted dataset keeps its share), keeping its labels.

    It names no samples: the full datasets' disjointness was checked already, and subsets of
    disjoint sets are disjoint. Its identity extends the inner one, so it is cached apart.
    """

    transform = None

    def __init__(self, inner: Dataset, n: int) -> None:
        self.inner = inner
        self.n = n
        size = len(cast(Sized, inner))
        self.indices = np.unique(np.linspace(0, size - 1, min(n, size)).round().astype(np.int64))

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> Any:
        return self.inner[int(self.indices[index])]

    def identity(self) -> str:
        return f"subsample({len(self)} evenly of {_inner_identity(self.inner)})"


def _inner_identity(inner: Dataset) -> str:
    """A wrapped dataset's identity with its transform, as the extraction cache keys it."""
    inner_ident = getattr(inner, "identity", None)
    if not callable(inner_ident):
        raise TypeError(f"{type(inner).__name__} has no identity() to cache it by")
    transform = getattr(inner, "transform", None)
    describe = getattr(transform, "describe", None)
    described = describe() if callable(describe) else repr(transform)
    return f"{inner_ident()}|transform={described}"
