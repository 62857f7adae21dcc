"""Run a model once over a dataset and keep what it produced as a :class:`Representation`."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping, Sequence, Sized
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset, Subset, TensorDataset

from unseen import cache as cache_mod
from unseen.extraction import hooks as hooks_mod
from unseen.extraction.hooks import module_named
from unseen.extraction.runners import ExtractionJob, LocalRunner, Reducer, Runner
from unseen.representation import Hook, Representation, RepresentationError


class HeadMismatchError(RuntimeError):
    """The captured features do not reproduce the logits through the head: wrong layer."""


@dataclass
class NetworkSource:
    """The model and data behind a Representation, for detectors that run the network again
    (implements :class:`unseen.representation.NetworkSource`).

    ``batches()`` yields ``(inputs, labels_or_None)`` in the same order as the representation's
    rows. ``head`` is the final linear layer, ``feature_module`` the module whose output (or, when
    ``None``, the head's input) is the penultimate feature. ``input_std`` is the per-channel
    normalisation std of the preprocessing (ODIN scales its perturbation by it).
    """

    model: nn.Module
    data: Any
    head: nn.Linear | None
    feature_module: str | None = None
    batch_size: int = 256
    device: str = "cpu"
    input_std: tuple[float, ...] | None = None
    _loader_kwargs: dict[str, Any] = field(default_factory=dict, repr=False)

    def batches(self) -> Iterable[tuple[torch.Tensor, torch.Tensor | None]]:
        for batch in _iter_batches(self.data, self.batch_size, self._loader_kwargs):
            x, y = _split_batch(batch)
            yield x.to(self.device), y

    def subset(self, rows: slice | np.ndarray) -> NetworkSource:
        """The same model over rows ``rows`` (a slice or integer indices) of the data: indexed
        directly for a tensor or a map-style Dataset, picked from the batches otherwise."""
        if isinstance(self.data, torch.Tensor):
            index: Any = rows if isinstance(rows, slice) else torch.as_tensor(
                np.asarray(rows, dtype=np.int64)
            )
            data: Any = self.data[index]
        elif isinstance(self.data, Dataset):
            picked = range(len(cast(Sized, self.data)))[rows] if isinstance(rows, slice) else rows
            data = Subset(self.data, [int(r) for r in picked])
        else:
            data = _PickedRows(self.data, self.batch_size, self._loader_kwargs, rows)
        return replace(self, data=data)

    def running(
        self, hooks: Mapping[str, Hook] | None = None, features: dict[str, Any] | None = None
    ) -> AbstractContextManager[None]:
        return hooks_mod.running(
            self.model, hooks, features, head=self.head, feature_module=self.feature_module
        )

    def block_output_shapes(self) -> dict[str, tuple[int, ...]]:
        x = next(iter(self.batches()))[0]
        return hooks_mod.child_output_shapes(self.model, x, self.head)


@dataclass
class _PickedRows:
    """Rows ``rows`` of data that can only be iterated (a DataLoader, an iterable of batches),
    in the order given: taken from the batches as they stream past when the rows increase,
    otherwise gathered first and re-batched (only the picked rows are held)."""

    data: Any
    batch_size: int
    loader_kwargs: dict[str, Any]
    rows: slice | np.ndarray

    def _positions(self) -> Iterator[tuple[np.ndarray, tuple[torch.Tensor, torch.Tensor | None]]]:
        start = 0
        for batch in _iter_batches(self.data, self.batch_size, self.loader_kwargs):
            x, y = _split_batch(batch)
            yield np.arange(start, start + len(x)), (x, y)
            start += len(x)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        rows = self.rows
        if isinstance(rows, slice):
            if (rows.step or 1) < 0 or (rows.start or 0) < 0 or (rows.stop or 0) < 0:
                raise ValueError("rows of streamed data must be counted from the start")
            keep_of = lambda at: _in_slice(at, rows)  # noqa: E731
        else:
            wanted = np.asarray(rows, dtype=np.int64)
            if wanted.size and wanted.min() < 0:
                raise ValueError("rows of streamed data must be counted from the start")
            if wanted.size > 1 and not (np.diff(wanted) > 0).all():
                yield from self._gathered(wanted)
                return
            keep_of = lambda at: np.isin(at, wanted)  # noqa: E731
        for at, (x, y) in self._positions():
            keep = np.flatnonzero(keep_of(at))
            if keep.size:
                pick = torch.as_tensor(keep)
                yield x[pick], None if y is None else y[pick]

    def _gathered(self, wanted: np.ndarray) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        held: dict[int, tuple[torch.Tensor, torch.Tensor | None]] = {}
        for at, (x, y) in self._positions():
            for j in np.flatnonzero(np.isin(at, wanted)):
                held[int(at[j])] = (x[j], None if y is None else y[j])
        for i in range(0, len(wanted), self.batch_size):
            part = [held[int(r)] for r in wanted[i : i + self.batch_size]]
            ys = [t[1] for t in part if t[1] is not None]
            yield torch.stack([t[0] for t in part]), (
                torch.stack(ys) if len(ys) == len(part) else None
            )


def _in_slice(at: np.ndarray, rows: slice) -> np.ndarray:
    start, stop, step = rows.start or 0, rows.stop, rows.step or 1
    inside = (at >= start) & ((at - start) % step == 0)
    return inside if stop is None else inside & (at < stop)


def find_head(model: nn.Module) -> tuple[str, nn.Linear]:
    """The last ``nn.Linear`` registered in ``model``: the usual classifier head."""
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(
            "found no nn.Linear in the model to use as the classifier head; pass "
            "penultimate='<module name>' to name the feature layer"
        )
    return linears[-1]


def _split_batch(batch: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    if isinstance(batch, torch.Tensor):
        return batch, None
    if isinstance(batch, list | tuple) and len(batch) >= 1:
        x = batch[0]
        y = batch[1] if len(batch) > 1 else None
        if not isinstance(x, torch.Tensor):
            raise TypeError(
                f"batches must hold tensors, got {type(x).__name__}; give the dataset a transform "
                "that returns tensors"
            )
        return x, (torch.as_tensor(y) if y is not None else None)
    raise TypeError(f"cannot read inputs from a batch of type {type(batch).__name__}")


def _iter_batches(data: Any, batch_size: int, loader_kwargs: Mapping[str, Any]) -> Iterable[Any]:
    if isinstance(data, torch.Tensor):
        return (data[i : i + batch_size] for i in range(0, len(data), batch_size))
    if isinstance(data, Dataset):
        return DataLoader(data, batch_size=batch_size, shuffle=False, **loader_kwargs)
    if isinstance(data, DataLoader | Iterable):
        return data
    raise TypeError(
        f"data must be a torch Dataset, DataLoader, tensor or iterable of batches, "
        f"got {type(data).__name__}"
    )


def _num_batches(data: Any, batch_size: int) -> int | None:
    try:
        if isinstance(data, DataLoader):
            return len(data)
        return -(-len(data) // batch_size)
    except TypeError:
        return None


def _dataset_identity(data: Any) -> str | None:
    target = data.dataset if isinstance(data, DataLoader) else data
    ident = getattr(target, "identity", None)
    if callable(ident):
        transform = getattr(target, "transform", None)
        describe = getattr(transform, "describe", None)
        described = repr(transform) if describe is None else describe()
        return f"{ident()}|transform={described}"
    if isinstance(target, torch.Tensor):
        return "tensor:" + cache_mod.hash_arrays([target.detach().cpu().numpy()])
    return None


def auto_workers(data: Any, batch_size: int) -> int:
    """Decoding workers when the caller names none: ``min(2, CPUs)`` for a Dataset of more than
    one batch (OpenOOD's setting; decoding then overlaps the forward pass, measured by
    ``benchmarks/extract_speed.py``), 0 for tensors, TensorDatasets, loaders and sets of one
    batch, where starting processes costs more than it saves. Iterable datasets get none: each
    worker would replay the whole stream."""
    if not isinstance(data, Dataset) or isinstance(data, TensorDataset | IterableDataset):
        return 0
    try:
        many = len(cast(Sized, data)) > batch_size
    except TypeError:
        return 0
    return min(2, os.cpu_count() or 1) if many else 0


def extract(
    model: nn.Module,
    data: Any,
    *,
    penultimate: str | None = None,
    head: nn.Linear | str | None = None,
    layers: Sequence[str] | Mapping[str, Reducer | None] = (),
    batch_size: int = 256,
    device: str = "cpu",
    cache: bool | str | os.PathLike[str] = False,
    dataset_id: str | None = None,
    input_std: Sequence[float] | None = None,
    meta: Mapping[str, Any] | None = None,
    progress: bool = True,
    num_workers: int | None = None,
    check_head: bool = True,
    runner: Runner | None = None,
    channels_last: bool = False,
) -> Representation:
    """Run ``model`` over ``data`` once and return features, logits, labels and the head.

    Args:
        model: a classifier; put in eval mode for the pass (its mode is restored after).
        data: a map-style Dataset of ``(input, label)`` or ``input``, a DataLoader, a tensor of
            inputs, or any iterable of such batches.
        penultimate: name of the module whose (flattened) output is the feature vector. Default:
            the input of the last ``nn.Linear`` (found automatically).
        head: the final linear layer (object or module name). Default: the last ``nn.Linear``.
        layers: intermediate modules to cache as ``rep.layers[name]``, optionally with a reducer
            (e.g. global average pooling) applied to each batch before it is stored.
        cache: ``False`` (default) for no cache, ``True`` for the default cache directory
            (``$UNSEEN_CACHE_DIR`` or ``~/.cache/unseen``), or a directory. The key combines the
            model's class and weights, the dataset identity (``dataset_id``, or the dataset's
            ``identity()`` plus its transform's ``describe()``), and the extraction settings, so
            changing any of them extracts again. Delete the directory to invalidate by hand.
        input_std: the per-channel normalisation std, kept for detectors that perturb inputs.
        num_workers: DataLoader processes that decode a Dataset while the model runs. Default
            (None): :func:`auto_workers`, two for a Dataset of more than one batch, else none.
        check_head: verify that ``features @ weight.T + bias`` reproduces the logits (relative
            tolerance 1e-4); a failure means the feature hook sits on the wrong layer.
        runner: where the batches run: :class:`~unseen.extraction.runners.LocalRunner` (default,
            this process) or :class:`unseen.extraction.ray.RayRunner` (a pool of Ray actors).
            The result, its ``meta`` and its cache key do not depend on the runner.
        channels_last: run the pass in ``torch.channels_last`` memory format: 4-D input batches
            go to ``device`` as channels-last and the model's parameters are converted **in
            place** (as ``model.to(device)`` already moves it in place), so it stays
            channels-last after the call; its forward still accepts ordinary NCHW inputs.
            Measured 1.70 against 2.05 ms/image for ResNet-56's bare forward pass on CPU
            (``benchmarks/extract_speed.py``). The results differ from the default by float
            rounding only, but the flag is part of the cache key, so the two never share an
            entry; ``meta["channels_last"]`` records it.
    """
    if not isinstance(channels_last, bool):
        raise TypeError(
            f"channels_last must be True or False, got {type(channels_last).__name__} "
            f"{channels_last!r}"
        )
    if isinstance(head, str):
        head_name, head_mod = head, module_named(model, head)
        if not isinstance(head_mod, nn.Linear):
            raise TypeError(f"head {head!r} is a {type(head_mod).__name__}, not an nn.Linear")
    elif isinstance(head, nn.Linear):
        head_mod = head
        head_name = next((n for n, m in model.named_modules() if m is head), "<head>")
    elif head is None:
        try:
            head_name, head_mod = find_head(model)
        except ValueError:
            if penultimate is None:
                raise
            head_name, head_mod = None, None  # features only: no head to check against
    else:
        raise TypeError(f"head must be an nn.Linear or a module name, not {type(head).__name__}")
    if num_workers is None:
        num_workers = auto_workers(data, batch_size)
    model.to(device)  # before the cache lookup: network detectors run it on `device` too
    if channels_last:
        to_channels_last(model)
    reducers: dict[str, Reducer | None] = (
        dict(layers) if isinstance(layers, Mapping) else dict.fromkeys(layers)
    )
    source = NetworkSource(
        model=model,
        data=data,
        head=head_mod,
        feature_module=penultimate,
        batch_size=batch_size,
        device=device,
        input_std=None if input_std is None else tuple(float(s) for s in input_std),
        _loader_kwargs={"num_workers": num_workers},
    )

    key = None
    if cache is not False:
        ident = dataset_id or _dataset_identity(data)
        if ident is None:
            raise ValueError(
                "cannot cache: the data has no identity() method; pass dataset_id='<stable name>' "
                "that changes whenever the data or its preprocessing changes, or cache=False"
            )
        key = cache_mod.key(model, ident, _cache_settings(penultimate, head_name, reducers,
                                                          channels_last))
        cache_dir = cache_mod.directory(None if cache is True else Path(cache))
        hit = cache_mod.get(cache_dir, key)
        if hit is not None:
            hit.meta["cache_key"] = key
            hit.meta.setdefault("channels_last", channels_last)  # entries from before the flag
            hit.source = source
            return hit

    job = ExtractionJob(model, data, source, penultimate, reducers, batch_size, device, progress,
                        {"num_workers": num_workers}, channels_last)
    rep = (runner or LocalRunner()).extract(job)
    rep.meta.update({"head": head_name, "penultimate": penultimate,
                     "channels_last": channels_last, **(meta or {})})
    if check_head and rep.weight is not None and rep.features is not None:
        check_head_consistency(rep)
    if key is not None:
        rep.meta["cache_key"] = key
        cache_mod.put(cache_dir, key, rep)
    rep.source = source
    return rep


def to_channels_last(model: nn.Module) -> nn.Module:
    """Convert ``model``'s 4-D parameters and buffers to ``torch.channels_last``, in place."""
    # Module.to takes memory_format at run time; torch's type stubs do not declare it.
    return cast(nn.Module, cast(Any, model).to(memory_format=torch.channels_last))


def _cache_settings(
    penultimate: str | None,
    head_name: str | None,
    reducers: Mapping[str, Reducer | None],
    channels_last: bool,
) -> dict[str, Any]:
    """The extraction settings in the cache key. ``channels_last`` enters only when True, so
    every key computed before the flag existed (all default calls) stays valid."""
    settings: dict[str, Any] = {
        "penultimate": penultimate,
        "head": head_name,
        "layers": {k: getattr(r, "__qualname__", repr(r)) for k, r in reducers.items()},
    }
    if channels_last:
        settings["channels_last"] = True
    return settings


def _run(
    model: nn.Module,
    data: Any,
    source: NetworkSource,
    penultimate: str | None,
    reducers: Mapping[str, Reducer | None],
    batch_size: int,
    device: str,
    progress: bool,
    loader_kwargs: Mapping[str, Any],
    channels_last: bool = False,
) -> Representation:
    captured: dict[str, torch.Tensor] = {}

    def keep(name: str, reducer: Reducer | None) -> Hook:
        def hook(_mod: nn.Module, _inp: Any, out: torch.Tensor) -> None:
            captured[name] = reducer(out) if reducer is not None else out
        return hook

    # Its own store: a layer may well be named "features".
    feature: dict[str, torch.Tensor] | None = (
        {} if penultimate is not None or source.head is not None else None
    )
    capture = hooks_mod.running(
        model,
        {name: keep(name, reducer) for name, reducer in reducers.items()},
        feature,
        head=source.head,
        feature_module=penultimate,
    )

    feats, logits, labels = [], [], []
    layer_parts: dict[str, list[np.ndarray]] = {k: [] for k in reducers}
    columns = (TextColumn("extract"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with capture, torch.inference_mode(), Progress(
        *columns, disable=not progress, transient=True
    ) as bar:
        task = bar.add_task("extract", total=_num_batches(data, batch_size))
        for batch in _iter_batches(data, batch_size, loader_kwargs):
            x, y = _split_batch(batch)
            captured.clear()
            if feature is not None:
                feature.clear()
            x = x.to(device)
            if channels_last and x.ndim == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            out = model(x)
            if not isinstance(out, torch.Tensor) or out.ndim != 2:
                raise TypeError("the model must return a (batch, classes) tensor of logits")
            logits.append(out.float().cpu().numpy())
            if feature:
                feats.append(feature["features"].float().cpu().numpy())
            for name in reducers:
                layer_parts[name].append(captured[name].float().cpu().numpy())
            if y is not None:
                labels.append(y.cpu().numpy().astype(np.int64))
            bar.advance(task)
    if not logits:
        raise ValueError("the data is empty: extraction produced no samples")
    head = source.head
    return Representation(
        features=np.concatenate(feats) if feats else None,
        logits=np.concatenate(logits),
        labels=np.concatenate(labels) if len(labels) == len(logits) else None,
        weight=None if head is None else head.weight.detach().float().cpu().numpy(),
        bias=None
        if head is None
        else (
            head.bias.detach().float().cpu().numpy()
            if head.bias is not None
            else np.zeros(head.out_features, np.float32)
        ),
        layers={k: np.concatenate(v) for k, v in layer_parts.items()},
    )


def check_head_consistency(rep: Representation, rtol: float = 1e-4) -> None:
    """Raise :class:`HeadMismatchError` unless features @ Wᵀ + b reproduces the logits."""
    features, logits, weight = rep.features, rep.logits, rep.weight
    if features is None or logits is None or weight is None:
        raise RepresentationError(
            "check_head_consistency needs features, logits and the classifier head (weight, "
            "bias), and this Representation lacks at least one of them"
        )
    if features.shape[1] != weight.shape[1]:
        raise HeadMismatchError(
            f"features have dimension {features.shape[1]} but the head expects "
            f"{weight.shape[1]}: the feature hook is on the wrong layer"
        )
    recon = rep.head_logits().astype(np.float64)
    err = np.abs(recon - logits).max()
    scale = max(1.0, float(np.abs(logits).max()))
    if err > rtol * scale:
        raise HeadMismatchError(
            f"features @ weight.T + bias differs from the logits by up to {err:.3g} "
            f"(tolerance {rtol * scale:.3g}): the feature hook is not on the head's input, or the "
            "model does something after its last linear layer. Name the feature layer with "
            "penultimate=... and the head with head=..., or pass check_head=False"
        )
