"""A guard directory: safetensors for arrays, JSON for everything else, a sha256 manifest.

Layout (format ``unseen.guard/1``)::

    guard.json          detector name + hyperparameters, non-array fitted state, threshold,
                        alpha, model registry name, preprocessing, library versions
    arrays.safetensors  detector arrays, sorted calibration scores, classifier head
    model.safetensors   the model's state dict (only when a model is attached)
    MANIFEST.json       sha256 and size of every file above; written last

Nothing is unpickled. A directory is written under a temporary sibling name and renamed into
place, so an interrupted save never leaves a loadable half at the target path.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save_file

FORMAT = "unseen.guard/1"
CONFIG = "guard.json"
ARRAYS = "arrays.safetensors"
MODEL = "model.safetensors"
MANIFEST = "MANIFEST.json"
_ARRAY = "__array__"


class GuardFileError(ValueError):
    """A guard directory is malformed, modified or truncated."""


# -- fitted state <-> JSON + arrays ---------------------------------------------------------
def encode_state(state: Mapping[str, Any], prefix: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Split a fitted state into JSON-able values and named arrays (see the FITTED STATE RULE).

    Arrays and NumPy scalars go to the safetensors file under ``prefix + key``; the JSON keeps a
    ``{"__array__": key, "scalar": bool}`` reference in their place. Other values must be
    numbers, strings, booleans, None or lists of these.
    """
    arrays: dict[str, np.ndarray] = {}

    def enc(value: Any, key: str) -> Any:
        if isinstance(value, np.ndarray | np.generic):
            arr = np.asarray(value)
            if arr.dtype.kind not in "fiub":
                raise TypeError(f"fitted state {key!r} has dtype {arr.dtype}, not storable")
            arrays[key] = np.ascontiguousarray(arr)
            return {_ARRAY: key, "scalar": isinstance(value, np.generic)}
        if value is None or isinstance(value, bool | int | float | str):
            return value
        if isinstance(value, list):
            return [enc(v, f"{key}.{i}") for i, v in enumerate(value)]
        raise TypeError(
            f"fitted state {key!r} is a {type(value).__name__}; detectors must keep fitted state "
            "as arrays, numbers, str, bool, None or lists of those"
        )

    return {k: enc(v, prefix + k) for k, v in state.items()}, arrays


def decode_state(encoded: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Inverse of :func:`encode_state`."""

    def dec(value: Any) -> Any:
        if isinstance(value, dict) and _ARRAY in value:
            key = value[_ARRAY]
            if key not in arrays:
                raise GuardFileError(f"{ARRAYS} lacks the array {key!r} named in {CONFIG}")
            arr = arrays[key]
            return arr[()] if value.get("scalar") else arr
        if isinstance(value, list):
            return [dec(v) for v in value]
        return value

    return {k: dec(v) for k, v in encoded.items()}


# -- preprocessing <-> JSON -----------------------------------------------------------------
def transform_spec(transform: Any) -> list[dict[str, Any]] | None:
    """A JSON description of a transform built from ``unseen.data.transforms`` (or None)."""
    if transform is None:
        return None
    from unseen.data import transforms as T

    steps = transform.transforms if isinstance(transform, T.Compose) else [transform]
    spec = []
    for t in steps:
        if isinstance(t, T.Resize):
            spec.append({"type": "Resize", "size": t.size})
        elif isinstance(t, T.CenterCrop):
            spec.append({"type": "CenterCrop", "size": [t.height, t.width]})
        elif isinstance(t, T.Normalize):
            spec.append({"type": "Normalize", "mean": list(t.mean), "std": list(t.std)})
        elif type(t) in (T.ToRGB, T.Grayscale, T.ToTensor):
            spec.append({"type": type(t).__name__})
        else:
            raise TypeError(
                f"cannot save the preprocessing step {t!r}: only unseen.data.transforms "
                "(Compose of ToRGB, Grayscale, Resize, CenterCrop, ToTensor, Normalize) persist"
            )
    return spec


def build_transform(spec: list[dict[str, Any]] | None) -> Callable[[Any], Any] | None:
    """Inverse of :func:`transform_spec`."""
    if spec is None:
        return None
    from unseen.data import transforms as T

    builders: dict[str, Callable[..., Any]] = {
        "Resize": lambda d: T.Resize(int(d["size"])),
        "CenterCrop": lambda d: T.CenterCrop(tuple(int(v) for v in d["size"])),
        "Normalize": lambda d: T.Normalize(d["mean"], d["std"]),
        "ToRGB": lambda d: T.ToRGB(),
        "Grayscale": lambda d: T.Grayscale(),
        "ToTensor": lambda d: T.ToTensor(),
    }
    steps = []
    for step in spec:
        kind = step.get("type") if isinstance(step, dict) else None
        if kind not in builders:
            raise GuardFileError(f"{CONFIG}: unknown preprocessing step {step!r}")
        steps.append(builders[kind](step))
    return T.Compose(steps)


# -- files, checksums, atomic directories ---------------------------------------------------
def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True, allow_nan=True) + "\n")


def write_dir(
    target: Path,
    config: dict[str, Any],
    arrays: dict[str, np.ndarray],
    write_model: Callable[[Path], None] | None,
    overwrite: bool,
) -> Path:
    """Write a guard directory at ``target`` atomically (temporary sibling, then rename)."""
    target = Path(target)
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} already exists; pass overwrite=True to replace it")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        save_file(arrays, str(tmp / ARRAYS), metadata={"format": FORMAT})
        names = [ARRAYS]
        if write_model is not None:
            write_model(tmp / MODEL)
            names.append(MODEL)
        write_json(tmp / CONFIG, config)
        names.append(CONFIG)
        files = {n: {"sha256": sha256(tmp / n), "size": (tmp / n).stat().st_size} for n in names}
        write_json(tmp / MANIFEST, {"format": FORMAT, "files": files})
        _fsync_dir(tmp)
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
            os.replace(target, old / "guard")
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _fsync_dir(path: Path) -> None:
    for f in path.iterdir():
        with f.open("rb") as fh:
            os.fsync(fh.fileno())


def read_dir(path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray], Path | None]:
    """Verify the manifest of a guard directory and return (config, arrays, model file)."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"no guard directory at {path}")
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise FileNotFoundError(
            f"{manifest_path} is missing: {path} is not a complete guard directory "
            "(written by Guard.save)"
        )
    manifest = _read_json(manifest_path)
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if (
        not isinstance(files, dict)
        or manifest.get("format") != FORMAT
        or not all(isinstance(e, dict) for e in files.values())
    ):
        raise GuardFileError(f"{manifest_path} is not an {FORMAT} manifest")
    for required in (CONFIG, ARRAYS):
        if required not in files:
            raise GuardFileError(f"{manifest_path} does not list {required}")
    for name, entry in files.items():
        if name not in (CONFIG, ARRAYS, MODEL):
            raise GuardFileError(f"{manifest_path} lists an unexpected file {name!r}")
        f = path / name
        if not f.is_file():
            raise FileNotFoundError(f"{f} is missing (listed in {MANIFEST})")
        size = f.stat().st_size
        if size != entry.get("size"):
            raise GuardFileError(
                f"{f} has {size} bytes but {MANIFEST} records {entry.get('size')}: the file is "
                "truncated or modified"
            )
        if sha256(f) != entry.get("sha256"):
            raise GuardFileError(f"{f} does not match its sha256 in {MANIFEST}: it was modified")
    config = _read_json(path / CONFIG)
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise GuardFileError(f"{path / CONFIG} is not an {FORMAT} configuration")
    arrays = load_file(str(path / ARRAYS))
    return config, arrays, (path / MODEL) if MODEL in files else None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise GuardFileError(f"{path} is not valid JSON: {exc}") from None
