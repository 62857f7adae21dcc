"""Content-addressed on-disk cache of representations.

A key is the SHA-256 of everything that determines an extraction's result: the model's class
and weights, the dataset's identity (including its preprocessing) and the extraction settings.
Changing any of them gives a new key, so stale entries are never read; they are only left
behind. Delete the cache directory (``$UNSEEN_CACHE_DIR``, default ``~/.cache/unseen``) to
reclaim the space, or extract with ``cache=False`` / ``unseen benchmark --no-cache``.

Every entry's file (here and in the other caches: the digits model, network outcomes) is sealed
with the SHA-256 of its bytes, stored beside the cache's folders under ``<cache>/digests/``, and
checked on every read. An entry whose bytes no longer match, that cannot be decoded, or that is
in the way (a directory where a file belongs) is a miss: a warning names the file, the entry is
deleted and the caller rebuilds it. Entries written before digests existed have none and are
rebuilt once.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from unseen._io import write_text
from unseen.representation import Representation, RepresentationError

if TYPE_CHECKING:  # only annotations: the cache itself needs no torch
    from torch import nn

#: bump when the extraction's output changes meaning, to orphan every old entry
CACHE_VERSION = 1
#: bytes read per hashing step: large enough to keep the per-call cost negligible, small
#: enough that hashing a large entry costs no memory to speak of
DIGEST_CHUNK = 1 << 22
#: what decoding a damaged file may raise; callers add their decoder's own error types
READ_ERRORS: tuple[type[BaseException], ...] = (
    OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile, RepresentationError,
)

T = TypeVar("T")


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


# -- sealed entries: every cache's files, checked against their stored digest -------------------
def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes, read in chunks (hashlib releases the GIL on large updates)."""
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        while chunk := fh.read(DIGEST_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def digest_path(cache_dir: Path, path: Path) -> Path:
    """Where the digest of the entry file ``path`` (inside ``cache_dir``) is stored."""
    rel = Path(path).relative_to(cache_dir)
    return Path(cache_dir) / "digests" / rel.parent / f"{rel.name}.sha256"


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def discard(cache_dir: Path, path: Path, why: str) -> None:
    """Warn that the entry ``path`` is unusable (saying why), then delete it and its digest."""
    warnings.warn(f"cache entry {path} {why}; deleted, it will be rebuilt", stacklevel=3)
    _remove(Path(path))
    _remove(digest_path(cache_dir, path))


def _stored_digest(cache_dir: Path, path: Path) -> str | None:
    try:
        return digest_path(cache_dir, path).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None


def intact(cache_dir: Path, path: Path) -> bool:
    """Whether ``path`` is a regular file whose bytes match its stored digest.

    An absent entry is a plain miss; anything else that fails (a directory in the way, no or an
    unreadable digest, different bytes) is discarded with a warning first.
    """
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        _remove(digest_path(cache_dir, path))  # a digest without its entry is litter
        return False
    if not path.is_file():
        discard(cache_dir, path, "is not a regular file")
        return False
    stored = _stored_digest(cache_dir, path)
    if stored is None:
        discard(cache_dir, path, "has no stored digest (written by an older unseen or damaged)")
        return False
    try:
        actual = file_digest(path)
    except OSError as exc:
        discard(cache_dir, path, f"cannot be read ({exc})")
        return False
    if actual != stored:
        discard(cache_dir, path, "does not match its stored digest (damaged on disk)")
        return False
    return True


def read_entry(cache_dir: Path, path: Path, reader: Callable[[Path], T],
               errors: tuple[type[BaseException], ...] = ()) -> T | None:
    """``reader(path)`` for an intact entry; None on a miss. A read that fails (one of
    :data:`READ_ERRORS` or ``errors``) discards the entry and is a miss too."""
    if not intact(cache_dir, path):
        return None
    try:
        return reader(path)
    except READ_ERRORS + errors as exc:
        discard(cache_dir, path, f"cannot be read ({type(exc).__name__}: {exc})")
        return None


def write_entry(cache_dir: Path, path: Path, writer: Callable[[Path], object]) -> Path:
    """Write an entry with ``writer(path)`` (which writes atomically), then store its digest.

    Whatever is in the way (a directory at the entry's or its digest's place) is removed first.
    """
    path, sealed = Path(path), digest_path(cache_dir, path)
    for p in (path, sealed):
        if p.exists() and not p.is_file():
            _remove(p)
    writer(path)
    write_text(sealed, file_digest(path) + "\n")
    return path


# -- representations ----------------------------------------------------------------------------
def _path(cache_dir: Path, k: str) -> Path:
    return cache_dir / "representations" / f"{k}.safetensors"


def get(cache_dir: Path, k: str) -> Representation | None:
    """The cached representation for key ``k``, or None (a damaged entry counts as a miss, is
    deleted and named in a warning)."""
    return read_entry(Path(cache_dir), _path(Path(cache_dir), k), Representation.load)


def put(cache_dir: Path, k: str, rep: Representation) -> Path:
    return write_entry(Path(cache_dir), _path(Path(cache_dir), k), rep.save)
