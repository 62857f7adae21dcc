"""Content-addressed on-disk cache of representations.

A key is the SHA-256 of everything that determines an extraction's result: the model's class
and weights, the dataset's identity (including its preprocessing) and the extraction settings.
Changing any of them gives a new key, so stale entries are never read; they are only left
behind. Delete the cache directory (``$UNSEEN_CACHE_DIR``, default ``~/.cache/unseen``) to
reclaim the space, or extract with ``cache=False`` / ``unseen benchmark --no-cache``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from unseen.representation import Representation, RepresentationError

if TYPE_CHECKING:  # only annotations: the cache itself needs no torch
    from torch import nn

#: bump when the extraction's output changes meaning, to orphan every old entry
CACHE_VERSION = 1


def directory(path: Path | None = None) -> Path:
    if path is None:
        env = os.environ.get("UNSEEN_CACHE_DIR")
        path = Path(env) if env else Path.home() / ".cache" / "unseen"
    return Path(path)


def hash_arrays(arrays: Iterable[np.ndarray]) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.data)
    return h.hexdigest()


def model_fingerprint(model: nn.Module) -> str:
    """SHA-256 of the model's class and every parameter and buffer, by name."""
    h = hashlib.sha256(f"{type(model).__module__}.{type(model).__qualname__}".encode())
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        h.update(hash_arrays([tensor.detach().cpu().numpy()]).encode())
    return h.hexdigest()


def key(model: nn.Module, dataset_identity: str, settings: dict[str, Any]) -> str:
    blob = json.dumps(
        {
            "version": CACHE_VERSION,
            "model": model_fingerprint(model),
            "data": dataset_identity,
            "settings": settings,
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def _path(cache_dir: Path, k: str) -> Path:
    return cache_dir / "representations" / f"{k}.safetensors"


def get(cache_dir: Path, k: str) -> Representation | None:
    """The cached representation for key ``k``, or None (a corrupt entry counts as a miss)."""
    path = _path(cache_dir, k)
    if not path.is_file():
        return None
    try:
        return Representation.load(path)
    except (RepresentationError, OSError, ValueError):
        return None


def put(cache_dir: Path, k: str, rep: Representation) -> Path:
    return rep.save(_path(cache_dir, k))
