"""Where the batches of one :func:`unseen.extract` call run: the runner seam and the local runner.

:func:`unseen.extract` resolves the head, the hooks' targets and the cache key itself and hands
a runner an :class:`ExtractionJob`; the runner only turns the job into a Representation's
per-row arrays. So the cache key and ``meta`` never depend on the runner, and a
Representation extracted on a cluster is a cache hit for a local run and back.

* :class:`LocalRunner` (the default): this process, the batching loop of
  :mod:`unseen.extraction.core`.
* :class:`unseen.extraction.ray.RayRunner`: a pool of Ray actors (the only module that imports
  ray, installed with ``pip install 'unseen[ray]'``).

A runner also maps a function over shards (:meth:`Runner.map_shards`): sharded scoring
(:func:`unseen.detectors.sharded.score_sharded`) runs on either runner.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import torch
from torch import nn

if TYPE_CHECKING:
    from unseen.extraction.core import NetworkSource
    from unseen.representation import Representation

S = TypeVar("S")
T = TypeVar("T")
R = TypeVar("R")

#: A reducer turns one layer's batch of activations into a (B, ...) tensor worth caching.
Reducer = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class ExtractionJob:
    """One extraction, fully resolved: what :func:`unseen.extract` asks a runner to compute.

    ``source.head`` is the classifier head (or None), ``penultimate`` the feature module's name
    (None: the head's input), ``reducers`` the extra layers to keep. The runner returns the
    per-row arrays (features, logits, labels, layers) plus the head's weight and bias, in the
    data's row order, with empty ``meta``. ``channels_last``: send 4-D batches in
    ``torch.channels_last`` memory format (``extract`` has converted the model already).
    """

    model: nn.Module
    data: Any
    source: NetworkSource
    penultimate: str | None
    reducers: Mapping[str, Reducer | None]
    batch_size: int
    device: str
    progress: bool
    loader_kwargs: Mapping[str, Any] = field(default_factory=dict)
    channels_last: bool = False


class Runner(Protocol):
    """Runs extraction jobs and maps functions over shards."""

    def extract(self, job: ExtractionJob) -> Representation:
        """The job's Representation (rows in the data's order, ``meta`` empty)."""
        ...

    def map_shards(self, fn: Callable[[S, T], R], shared: S, shards: Sequence[T]) -> list[R]:
        """``[fn(shared, s) for s in shards]``; ``shared`` is sent to each worker once."""
        ...


class LocalRunner:
    """Everything in this process: the batching loop of :mod:`unseen.extraction.core`."""

    def extract(self, job: ExtractionJob) -> Representation:
        # core imports this module for the job type; the loop is looked up at call time.
        from unseen.extraction.core import _run

        return _run(job.model, job.data, job.source, job.penultimate, job.reducers,
                    job.batch_size, job.device, job.progress, job.loader_kwargs,
                    job.channels_last)

    def map_shards(self, fn: Callable[[S, T], R], shared: S, shards: Sequence[T]) -> list[R]:
        return [fn(shared, s) for s in shards]

    def __repr__(self) -> str:
        return "LocalRunner()"
