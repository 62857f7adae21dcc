"""What a model produced for one dataset: the cache every detector reads.

A :class:`Representation` holds optional arrays (features, logits, labels, the classifier
head, named intermediate layers) plus JSON metadata. It validates itself on construction and
on every later assignment of an array, so a detector never sees inconsistent input, and it
persists as one safetensors file that loads through a memory map.

:class:`NetworkSource` is the contract of what produced a Representation (the model and its
input data), for detectors that run the network again. It is defined here, on the lowest floor,
so that those detectors use it without importing :mod:`unseen.extraction`, which implements it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from unseen._io import atomic_path

_FORMAT = "unseen.representation/1"
_ARRAYS = ("features", "logits", "labels", "weight", "bias")
_LAYER_PREFIX = "layers."
_SAFETENSORS_DTYPES = {
    "F16": np.float16,
    "F32": np.float32,
    "F64": np.float64,
    "I8": np.int8,
    "I16": np.int16,
    "I32": np.int32,
    "I64": np.int64,
    "U8": np.uint8,
    "BOOL": np.bool_,
}


#: the ``layers`` entry of a patch representation: (N, h, w, D) locally aware patch features
PATCHES = "patches"


class RepresentationError(ValueError):
    """A Representation's arrays are missing, malformed or inconsistent."""


#: A forward hook, ``hook(module, inputs, output) -> replacement output or None`` (torch's
#: signature; typed loosely so that this floor needs no torch).
Hook = Callable[[Any, Any, Any], Any]


class NetworkSource(Protocol):
    """The model and input data behind a Representation (``rep.source``), row for row.

    ``model`` is the ``torch.nn.Module``; ``input_std`` the per-channel normalisation std of the
    preprocessing (or None); tensors are torch tensors. Implemented by
    :class:`unseen.extraction.NetworkSource`.
    """

    model: Any
    input_std: tuple[float, ...] | None
    batch_size: int

    def batches(self) -> Iterable[tuple[Any, Any]]:
        """``(inputs, labels_or_None)`` batches in the order of the representation's rows."""
        ...

    def subset(self, rows: slice | np.ndarray) -> NetworkSource:
        """The same model over rows ``rows`` (a slice or integer indices) of the data."""
        ...

    def running(
        self, hooks: Mapping[str, Hook] | None = None, features: dict[str, Any] | None = None
    ) -> AbstractContextManager[None]:
        """For the duration of the block: the model in eval mode, ``hooks`` registered as forward
        hooks on the modules they name, and (when ``features`` is given) each forward pass's
        penultimate feature, flattened, kept in ``features["features"]``."""
        ...

    def block_output_shapes(self) -> dict[str, tuple[int, ...]]:
        """Output shape, on the first batch, of each direct child of the model except the head,
        in registration order (children that return no tensor left out)."""
        ...


def _all_finite(arr: np.ndarray, rows: int = 65536) -> bool:
    # Row chunks keep the temporary mask small when `arr` is a memory map of a large file.
    if arr.ndim == 0:
        return bool(np.isfinite(arr))
    return all(np.isfinite(arr[i : i + rows]).all() for i in range(0, arr.shape[0], rows))


def _as_float(name: str, value: Any, ndim: int) -> np.ndarray:
    arr = np.asanyarray(value)  # keeps np.memmap, so loaded files stay memory-mapped
    if arr.dtype.kind not in "fiub":
        raise RepresentationError(f"{name} must be numeric, got dtype {arr.dtype}")
    if arr.ndim != ndim:
        raise RepresentationError(f"{name} must be {ndim}-D, got shape {arr.shape}")
    if arr.dtype.kind != "f":
        arr = arr.astype(np.float32)
    if not _all_finite(arr):
        bad = int((~np.isfinite(arr)).sum())
        raise RepresentationError(
            f"{name} contains {bad} NaN or infinite values; clean or drop those samples first"
        )
    return arr


def _as_labels(value: Any) -> np.ndarray:
    labels = np.asarray(value)
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise RepresentationError(
            f"labels must be a 1-D integer array, got shape {labels.shape} dtype {labels.dtype}"
        )
    if labels.size and labels.min() < -1:
        raise RepresentationError("labels must be class indices >= 0, or -1 for OOD")
    return labels.astype(np.int64, copy=False)


def _as_layers(value: Any) -> dict[str, np.ndarray]:
    return {str(k): _as_float(f"layers[{k!r}]", v, np.asarray(v).ndim) for k, v in value.items()}


#: How each array attribute is checked, on construction and on every later assignment.
_CHECKS: dict[str, Callable[[Any], Any]] = {
    "features": lambda v: _as_float("features", v, 2),
    "logits": lambda v: _as_float("logits", v, 2),
    "weight": lambda v: _as_float("weight", v, 2),
    "bias": lambda v: _as_float("bias", v, 1),
    "labels": _as_labels,
    "layers": _as_layers,
}


@dataclass(eq=False)
class Representation:
    """Cached model outputs for one dataset.

    Attributes:
        features: (N, D) penultimate features, or any feature matrix (tabular data, embeddings).
        logits: (N, C) classifier outputs.
        labels: (N,) integer labels: class index >= 0 for in-distribution, -1 for OOD.
        weight: (C, D) weight of the final linear layer (logits = features @ weight.T + bias).
        bias: (C,) bias of the final linear layer.
        layers: named intermediate activations, each with N rows.
        meta: free-form JSON-serialisable metadata (dataset name, model id, ...).
        source: not persisted. What produced the arrays (a :class:`NetworkSource`, set by
            :func:`unseen.extract`): only detectors that run the network again need it.

    Assigning an array later (``rep.features = x``) runs the same checks as construction; one
    that would make the arrays disagree is refused and the old value kept (to change the number
    of rows, build a new Representation).
    """

    features: np.ndarray | None = None
    logits: np.ndarray | None = None
    labels: np.ndarray | None = None
    weight: np.ndarray | None = None
    bias: np.ndarray | None = None
    layers: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    source: NetworkSource | None = field(default=None, repr=False, compare=False)

    def __setattr__(self, name: str, value: Any) -> None:
        check = _CHECKS.get(name)
        if check is None:
            object.__setattr__(self, name, value)
            return
        if value is not None:
            value = check(value)
        if not self.__dict__.get("_checked", False):  # still in __init__: __post_init__ checks
            object.__setattr__(self, name, value)
            return
        old = self.__dict__[name]
        object.__setattr__(self, name, value)
        try:
            self._check_consistency()
        except RepresentationError:
            object.__setattr__(self, name, old)
            raise

    def __post_init__(self) -> None:
        self._check_consistency()
        try:
            json.dumps(self.meta)
        except TypeError as exc:
            raise RepresentationError(f"meta must be JSON-serialisable: {exc}") from None
        object.__setattr__(self, "_checked", True)

    def _check_consistency(self) -> None:
        rows = {
            name: arr.shape[0]
            for name, arr in (
                ("features", self.features),
                ("logits", self.logits),
                ("labels", self.labels),
                *((f"layers[{k!r}]", v) for k, v in self.layers.items()),
            )
            if arr is not None
        }
        if len(set(rows.values())) > 1:
            detail = ", ".join(f"{k} has {v}" for k, v in rows.items())
            raise RepresentationError(f"arrays disagree on the number of samples: {detail}")
        if (self.weight is None) != (self.bias is None):
            raise RepresentationError("weight and bias must be given together (the classifier head)")
        if self.weight is not None and self.bias is not None:
            c, d = self.weight.shape
            if self.bias.shape != (c,):
                raise RepresentationError(
                    f"bias has shape {self.bias.shape} but weight has {c} classes (expected ({c},))"
                )
            if self.features is not None and self.features.shape[1] != d:
                raise RepresentationError(
                    f"features have dimension {self.features.shape[1]} but weight expects {d}"
                )
            if self.logits is not None and self.logits.shape[1] != c:
                raise RepresentationError(
                    f"logits have {self.logits.shape[1]} classes but weight has {c}"
                )
        if self.labels is not None and self.logits is not None and self.labels.size:
            if self.labels.max() >= self.logits.shape[1]:
                raise RepresentationError(
                    f"labels reach {self.labels.max()} but logits have only "
                    f"{self.logits.shape[1]} classes"
                )

    # -- shape ---------------------------------------------------------------------------
    def __len__(self) -> int:
        for arr in (self.features, self.logits, self.labels, *self.layers.values()):
            if arr is not None:
                return int(arr.shape[0])
        return 0

    @property
    def has_head(self) -> bool:
        return self.weight is not None

    @property
    def num_classes(self) -> int | None:
        if self.logits is not None:
            return int(self.logits.shape[1])
        return None if self.weight is None else int(self.weight.shape[0])

    def subset(self, index: slice | np.ndarray | list[int]) -> Representation:
        """Rows `index` of every per-sample array and of the source; the head and metadata are
        shared."""

        def take(arr: np.ndarray | None) -> np.ndarray | None:
            return None if arr is None else arr[index]

        if not isinstance(index, slice):
            index = np.asarray(index)
            if index.dtype == bool:
                index = np.flatnonzero(index)
            elif index.size == 0:
                index = index.astype(np.int64)
        return Representation(
            features=take(self.features),
            logits=take(self.logits),
            labels=take(self.labels),
            weight=self.weight,
            bias=self.bias,
            layers={k: v[index] for k, v in self.layers.items()},
            meta=dict(self.meta),
            source=None if self.source is None else self.source.subset(index),
        )

    def head_logits(self, features: np.ndarray | None = None) -> np.ndarray:
        """Apply the classifier head to `features` (default: this representation's features)."""
        if self.weight is None:
            raise RepresentationError("this Representation has no classifier head (weight, bias)")
        x = self.features if features is None else features
        if x is None:
            raise RepresentationError("this Representation has no features")
        return x @ self.weight.T + self.bias

    # -- persistence ---------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write all arrays and the metadata to one safetensors file, atomically."""
        path = Path(path)
        tensors: dict[str, np.ndarray] = {}
        for name in _ARRAYS:
            arr = getattr(self, name)
            if arr is not None:
                tensors[name] = np.ascontiguousarray(arr)
        for k, v in self.layers.items():
            tensors[_LAYER_PREFIX + k] = np.ascontiguousarray(v)
        header = {"format": _FORMAT, "meta": json.dumps(self.meta)}
        with atomic_path(path) as tmp:
            _write_safetensors(tmp, tensors, header)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, mmap: bool = True) -> Representation:
        """Read a file written by :meth:`save`.

        With ``mmap=True`` (the default) arrays are read-only memory maps of the file, so a large
        representation costs no more RAM than the pages actually touched.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no representation file at {path}")
        header, data_start = _read_safetensors_header(path)
        meta_block = header.pop("__metadata__", {}) or {}
        if meta_block.get("format") != _FORMAT:
            raise RepresentationError(
                f"{path} is not an unseen representation (format={meta_block.get('format')!r})"
            )
        size = path.stat().st_size
        arrays: dict[str, np.ndarray] = {}
        for name, info in header.items():
            dtype = _SAFETENSORS_DTYPES.get(info["dtype"])
            if dtype is None:
                raise RepresentationError(f"{path}: unsupported dtype {info['dtype']} for {name}")
            begin, end = info["data_offsets"]
            shape = tuple(info["shape"])
            if data_start + end > size or end - begin != int(np.prod(shape)) * np.dtype(dtype).itemsize:
                raise RepresentationError(f"{path} is truncated or corrupt (array {name!r})")
            arr: np.ndarray
            if mmap and end > begin:
                arr = np.memmap(path, dtype=dtype, mode="r", offset=data_start + begin, shape=shape)
            else:
                with path.open("rb") as fh:
                    fh.seek(data_start + begin)
                    arr = np.frombuffer(fh.read(end - begin), dtype=dtype).reshape(shape)
            arrays[name] = arr
        layers = {
            k[len(_LAYER_PREFIX) :]: v for k, v in arrays.items() if k.startswith(_LAYER_PREFIX)
        }
        return cls(
            features=arrays.get("features"),
            logits=arrays.get("logits"),
            labels=arrays.get("labels"),
            weight=arrays.get("weight"),
            bias=arrays.get("bias"),
            layers=layers,
            meta=json.loads(meta_block.get("meta", "{}")),
        )


_DTYPE_NAMES = {np.dtype(v).str: k for k, v in _SAFETENSORS_DTYPES.items()}
#: rows copied per write: a memory-mapped array (a distributed extraction's output) is streamed
#: to the file in pieces of about this many bytes instead of being copied into RAM whole
_WRITE_BYTES = 64 << 20


def _write_safetensors(path: Path, tensors: Mapping[str, np.ndarray], meta: dict[str, str]) -> None:
    """Write ``tensors`` in the safetensors format (what ``safetensors.numpy.save_file`` writes:
    little-endian u64 header length, JSON header padded to 8 bytes, raw C-order data), streaming
    each array in row chunks so a memory-mapped array is never copied into memory whole."""
    header: dict[str, Any] = {"__metadata__": meta}
    offset = 0
    for name, arr in tensors.items():
        dtype = np.dtype(arr.dtype).newbyteorder("<") if arr.dtype.byteorder == ">" else arr.dtype
        if dtype.str not in _DTYPE_NAMES:
            raise RepresentationError(f"cannot store {name!r}: unsupported dtype {arr.dtype}")
        header[name] = {"dtype": _DTYPE_NAMES[dtype.str], "shape": list(arr.shape),
                        "data_offsets": [offset, offset + arr.nbytes]}
        offset += arr.nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as fh:
        fh.write(len(blob).to_bytes(8, "little"))
        fh.write(blob)
        for arr in tensors.values():
            rows = arr.reshape(-1) if arr.ndim == 0 else arr
            step = max(1, _WRITE_BYTES // max(1, rows[:1].nbytes))
            for i in range(0, len(rows), step):
                fh.write(np.ascontiguousarray(rows[i : i + step], rows.dtype.newbyteorder("<")).tobytes())


def _read_safetensors_header(path: Path) -> tuple[dict[str, Any], int]:
    with path.open("rb") as fh:
        raw = fh.read(8)
        if len(raw) != 8:
            raise RepresentationError(f"{path} is truncated (no safetensors header)")
        n = int.from_bytes(raw, "little")
        if n > 100_000_000:
            raise RepresentationError(f"{path} is not a safetensors file (header size {n})")
        blob = fh.read(n)
    if len(blob) != n:
        raise RepresentationError(f"{path} is truncated (incomplete safetensors header)")
    try:
        header = json.loads(blob)
    except json.JSONDecodeError as exc:
        raise RepresentationError(f"{path} has a corrupt safetensors header: {exc}") from None
    return header, 8 + n


def concat(parts: list[Representation], meta: Mapping[str, Any] | None = None) -> Representation:
    """Stack representations of the same model row-wise (e.g. extraction batches)."""
    if not parts:
        raise RepresentationError("cannot concatenate an empty list of representations")
    first = parts[0]

    def cat(name: str) -> np.ndarray | None:
        arrs = [getattr(p, name) for p in parts]
        if all(a is None for a in arrs):
            return None
        if any(a is None for a in arrs):
            raise RepresentationError(f"some parts have {name} and others do not")
        return np.concatenate(arrs)

    return Representation(
        features=cat("features"),
        logits=cat("logits"),
        labels=cat("labels"),
        weight=first.weight,
        bias=first.bias,
        layers={k: np.concatenate([p.layers[k] for p in parts]) for k in first.layers},
        meta=dict(meta if meta is not None else first.meta),
    )
