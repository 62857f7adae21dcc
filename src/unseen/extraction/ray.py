"""Extraction and sharded work on a Ray cluster: :class:`RayRunner`.

The one module of unseen that imports ``ray`` for extraction (lazily, inside the calls:
``import unseen`` never needs it); install with ``pip install 'unseen[ray]'``.

How an extraction runs (see ``docs/scale-out.md``):

1. The driver puts the model, its head and the dataset object (for image readers: file paths
   and the transform, not pixels) into the object store once.
2. ``ray.data.range(N)`` is the index column; ``map_batches`` sends batches of row indices to a
   fixed pool of actors (:class:`_Extractor`): each actor loads the model once, decodes its rows
   with the dataset's own ``__getitem__``, runs the batching loop of
   :mod:`unseen.extraction.core` (the same hooks as a local run) and returns the arrays with the
   indices beside them.
3. The driver streams the output blocks as they finish, in whatever order, and writes each
   block's rows at their indices into memory-mapped scratch files. Row order is the index
   column's, not arrival order; the driver holds one block at a time, never the whole output
   twice; a missing row is an error, a row delivered twice (a retried task) is written again
   with the same values.

Actors are restarted when they die and their batches retried (Ray Data's defaults for actor
pools: ``max_restarts=-1``, ``max_task_retries=-1``), so a killed worker costs time, not rows.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping, Sequence, Sized
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import numpy as np
import torch
from torch.utils.data import Dataset
from torch.utils.data._utils.collate import default_collate

from unseen.extraction.core import NetworkSource, _run, _split_batch, to_channels_last
from unseen.extraction.runners import ExtractionJob, Reducer
from unseen.representation import Representation

S = TypeVar("S")
T = TypeVar("T")
R = TypeVar("R")

#: column names of the arrays an actor returns beside ``id``; layers go under ``layer:<name>``
_LAYER = "layer:"
#: how to get ray (pyproject's ``ray`` extra pins the tested 2.60 series)
RAY_HINT = "install the optional dependency with `pip install 'unseen[ray]'` (ray 2.60)"


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ImportError(f"the Ray runner needs ray: {RAY_HINT}") from None
    return ray


@dataclass
class RayRunner:
    """Run extraction batches on a pool of Ray actors.

    Args:
        address: the cluster to join when Ray is not initialised in this process yet:
            ``None`` joins ``$RAY_ADDRESS`` or a cluster started on this machine with
            ``ray start``, else starts a local one; ``"ray://host:10001"`` for Ray Client;
            ``"local"`` always starts a new local one. Ignored when ``ray.init`` already ran.
        num_actors: actors in the pool (one model copy each).
        num_cpus: CPUs reserved per actor; also its torch thread count (at least 1).
        num_gpus: GPUs per actor (e.g. 1, or 0.5 to pack two actors on a GPU); the job's
            ``device`` becomes ``"cuda"`` on the actors when this is > 0.
        batch_size: rows per actor call (default: the job's ``batch_size``).
        scratch_dir: where the memory-mapped outputs live (default: the system temp folder).
            The files are anonymous: they vanish when the arrays are released.
        init_kwargs: extra ``ray.init`` arguments when this runner starts Ray.
    """

    address: str | None = None
    num_actors: int = 2
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    batch_size: int | None = None
    scratch_dir: str | None = None
    init_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.num_actors < 1:
            raise ValueError(f"num_actors must be >= 1, got {self.num_actors}")
        if self.num_cpus <= 0 and self.num_gpus <= 0:
            raise ValueError("give each actor some resources: num_cpus > 0 or num_gpus > 0")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")

    # -- session ------------------------------------------------------------------------------
    def connect(self) -> Any:
        """The ``ray`` module, initialised (joining or starting a cluster as ``address`` says)."""
        ray = _ray()
        if not ray.is_initialized():
            address = None if self.address == "local" else self.address
            kwargs = {"include_dashboard": False, "log_to_driver": False, **self.init_kwargs}
            ray.init(address=address, **kwargs)
        return ray

    # -- extraction ---------------------------------------------------------------------------
    def extract(self, job: ExtractionJob) -> Representation:
        data = job.data
        if not isinstance(data, Dataset | torch.Tensor):
            raise TypeError(
                f"the Ray runner needs a map-style Dataset or a tensor to shard, got "
                f"{type(data).__name__}; pass the Dataset instead of a DataLoader or iterable"
            )
        n = len(cast(Sized, data))  # map-style Datasets define __len__; torch does not declare it
        if n == 0:
            raise ValueError("the data is empty: extraction produced no samples")
        ray = self.connect()
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = job.progress
        ctx.print_on_execution_start = False
        batch = self.batch_size or job.batch_size
        device = "cuda" if self.num_gpus > 0 else job.device
        payload = ray.put((job.model, job.source.head, data))
        settings = _ActorSettings(job.penultimate, dict(job.reducers), device,
                                  max(1, int(self.num_cpus)), job.channels_last)
        # The index column is built here, not by a read task: with every CPU held by an actor
        # a read task could never be scheduled (and would hang the pipeline).
        ids = np.arange(n, dtype=np.int64)
        ds = ray.data.from_numpy(np.array_split(ids, max(self.num_actors, -(-n // batch))))
        out = ds.map_batches(
            _Extractor,
            batch_size=batch,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=self.num_actors),
            fn_constructor_args=(payload, settings),
            num_cpus=self.num_cpus or None,
            num_gpus=self.num_gpus or None,
        )
        writer = RowWriter(n, self.scratch_dir)
        for block in out.iter_batches(batch_size=None, batch_format="numpy"):
            writer.write(block)
        self.arrival_ = writer.arrival
        return writer.representation(job.source.head)

    # -- sharded work -------------------------------------------------------------------------
    def map_shards(self, fn: Callable[[S, T], R], shared: S, shards: Sequence[T]) -> list[R]:
        """``[fn(shared, s) for s in shards]`` as Ray tasks; ``shared`` goes into the object
        store once (every task reads the same copy; on one node, zero-copy for arrays)."""
        ray = self.connect()
        shared_ref = ray.put(shared)
        task = ray.remote(num_cpus=self.num_cpus or None, num_gpus=self.num_gpus or None)(_apply)
        return list(ray.get([task.remote(fn, shared_ref, s) for s in shards]))


def _apply(fn: Callable[[S, T], R], shared: S, shard: T) -> R:
    return fn(shared, shard)


@dataclass(frozen=True)
class _ActorSettings:
    penultimate: str | None
    reducers: Mapping[str, Reducer | None]
    device: str
    threads: int
    channels_last: bool = False


class _Extractor:
    """One actor of the pool: holds the model, decodes its rows and runs the batching loop."""

    def __init__(self, payload: Any, settings: _ActorSettings) -> None:
        torch.set_num_threads(settings.threads)
        # Ray Data hands constructor arguments over as given: the object ref is read here, once
        # per actor (a restarted actor reads it again).
        model, head, self.data = _ray().get(payload)
        self.settings = settings
        self.model = model.to(settings.device)
        # extract converted the model already; converting here does not rely on the serializer
        # keeping its strides.
        if settings.channels_last:
            to_channels_last(self.model)
        self.source = NetworkSource(model=self.model, data=None, head=head, device=settings.device)

    def _inputs(self, ids: np.ndarray) -> list[Any]:
        if isinstance(self.data, torch.Tensor):
            return [self.data[torch.as_tensor(ids, dtype=torch.int64)]]
        x, y = _split_batch(default_collate([self.data[int(i)] for i in ids]))
        return [(x, y) if y is not None else x]

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ids = np.asarray(batch["data"], dtype=np.int64)
        s = self.settings
        rep = _run(self.model, self._inputs(ids), self.source, s.penultimate, s.reducers,
                   len(ids), s.device, False, {}, s.channels_last)
        out: dict[str, np.ndarray] = {"id": ids, "logits": np.asarray(rep.logits)}
        if rep.features is not None:
            out["features"] = rep.features
        if rep.labels is not None:
            out["labels"] = rep.labels
        out.update({_LAYER + k: v for k, v in rep.layers.items()})
        return out


class RowWriter:
    """Per-row arrays of ``n`` rows, filled block by block at the blocks' ``id`` rows.

    Each column becomes an anonymous memory-mapped file (in ``scratch_dir``) on its first
    block, so the arrays never need to fit in RAM twice and blocks may arrive in any order.
    ``arrival`` lists each block's first row in the order the blocks came.
    """

    def __init__(self, n: int, scratch_dir: str | None = None) -> None:
        self.n = n
        self.scratch_dir = scratch_dir
        self.columns: dict[str, np.ndarray] = {}
        self.seen = np.zeros(n, dtype=bool)
        self.arrival: list[int] = []

    def _column(self, name: str, like: np.ndarray) -> np.ndarray:
        if name not in self.columns:
            shape = (self.n, *like.shape[1:])
            fh = tempfile.TemporaryFile(dir=self.scratch_dir, prefix="unseen-rows-")
            self.columns[name] = np.memmap(fh, dtype=like.dtype, mode="w+", shape=shape)
            fh.close()  # the mapping keeps the (already unlinked) file alive
        col = self.columns[name]
        if col.shape[1:] != like.shape[1:] or col.dtype != like.dtype:
            raise RuntimeError(
                f"column {name!r}: a block has rows of shape {like.shape[1:]} {like.dtype}, "
                f"earlier blocks {col.shape[1:]} {col.dtype}; the model's outputs must not "
                "change shape between batches"
            )
        return col

    def write(self, block: Mapping[str, np.ndarray]) -> None:
        ids = np.asarray(block["id"], dtype=np.int64)
        if ids.size == 0:
            return
        if ids.min() < 0 or ids.max() >= self.n:
            raise RuntimeError(f"a block holds rows outside [0, {self.n})")
        for name, values in block.items():
            if name != "id":
                self._column(name, np.asarray(values))[ids] = values
        self.seen[ids] = True
        self.arrival.append(int(ids[0]))

    def representation(self, head: torch.nn.Linear | None) -> Representation:
        """The filled arrays as a Representation (after checking every row arrived)."""
        missing = int((~self.seen).sum())
        if missing:
            raise RuntimeError(f"{missing} of {self.n} rows never came back from the workers")
        cols = self.columns
        weight = bias = None
        if head is not None:
            weight = head.weight.detach().float().cpu().numpy()
            bias = (head.bias.detach().float().cpu().numpy() if head.bias is not None
                    else np.zeros(head.out_features, np.float32))
        return Representation(
            features=cols.get("features"),
            logits=cols["logits"],
            labels=cols.get("labels"),
            weight=weight,
            bias=bias,
            layers={k[len(_LAYER):]: v for k, v in cols.items() if k.startswith(_LAYER)},
        )

