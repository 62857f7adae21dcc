"""Guard and detector directories: safetensors for arrays, JSON for everything else, a manifest.

A guard directory (format ``unseen.guard/1``)::

    guard.json          detector name + hyperparameters, non-array fitted state, threshold,
                        alpha, model registry name, preprocessing, library versions
    arrays.safetensors  detector arrays, sorted calibration scores, classifier head
    model.safetensors   the model's state dict (only when a model is attached)
    MANIFEST.json       sha256 and size of every file above; written last

A bare fitted detector (format ``unseen.detector/1``) has ``detector.json``,
``arrays.safetensors`` and ``MANIFEST.json``.

Nothing is unpickled. Loading trusts nothing it reads: the manifest is bounded in size and
depth, every file's checksum is verified, and every parameter and array is checked again as
``fit`` would (the detector's own parameter checks through ``set_params``, finite arrays, a
probe score). A directory is written under a temporary sibling name, loaded back, and renamed
into place, so an interrupted save never leaves a loadable half at the target and a saved
directory always loads. ``overwrite`` replaces only a directory of the same format.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from safetensors.numpy import load_file, save_file

from unseen import detectors
from unseen._io import atomic_dir
from unseen.detectors.base import Detector, NotFittedError

if TYPE_CHECKING:
    from unseen.guard.core import Guard

FORMAT = "unseen.guard/1"
DETECTOR_FORMAT = "unseen.detector/1"
#: an inspection guard (``unseen.guard.inspection``): same files, its own configuration schema
INSPECTION_FORMAT = "unseen.inspection-guard/1"
CONFIG = "guard.json"
DETECTOR_CONFIG = "detector.json"
ARRAYS = "arrays.safetensors"
MODEL = "model.safetensors"
MANIFEST = "MANIFEST.json"
_ARRAY = "__array__"
#: a manifest lists three files in a few hundred bytes; anything far larger is not one
MAX_MANIFEST_BYTES = 64 * 1024
#: non-array fitted state is small: arrays go to the safetensors file
MAX_CONFIG_BYTES = 16 * 1024 * 1024
#: nesting depth of any JSON file read here (a guard.json needs about 6)
MAX_JSON_DEPTH = 32
_CONFIG_OF = {FORMAT: CONFIG, DETECTOR_FORMAT: DETECTOR_CONFIG, INSPECTION_FORMAT: CONFIG}


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


# -- a detector <-> JSON + arrays, checked on the way back ----------------------------------
def encode_detector(
    detector: Detector, prefix: str = "detector."
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """``{"name", "params", "state"}`` and the state's arrays for a fitted detector."""
    state, arrays = encode_state(detector.fitted_state(), prefix)
    return {"name": detector.name, "params": detector.get_params(), "state": state}, arrays


def decode_detector(
    config: Any, arrays: Mapping[str, np.ndarray], head: tuple[np.ndarray, np.ndarray] | None = None
) -> Detector:
    """Rebuild a fitted detector from :func:`encode_detector`'s output and check it.

    Raises ValueError (or KeyError/TypeError) naming what is wrong: an unknown name, a refused
    hyperparameter, a non-finite array, dimensions that disagree, or a state that cannot score.
    """
    if not isinstance(config, dict) or not isinstance(config.get("params"), dict) or not (
        isinstance(config.get("state"), dict)
    ):
        raise ValueError("the detector entry must hold name, params and state")
    cls = detectors.get(config["name"])
    state = decode_state(config["state"], arrays)
    detector = cls.from_state(config["params"], state)
    # The detector's own checks of its hyperparameters (declared constraints, where it has them).
    detector.set_params(**detector.get_params())
    _check_state(detector, state)
    _probe(detector, head)
    return detector


def _check_state(detector: Detector, state: Mapping[str, Any]) -> None:
    if state.get("fitted_") is not True:
        raise ValueError(f"{detector.name}: the state is not that of a fitted detector")
    for key in ("n_features_in_", "n_classes_in_"):
        value = state.get(key)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1
        ):
            raise ValueError(f"{detector.name}: {key} must be a positive integer or None, got {value!r}")
    for key, value in state.items():
        for arr in value if isinstance(value, list) else [value]:
            if isinstance(arr, np.ndarray | np.generic) and arr.dtype.kind == "f" and not (
                np.isfinite(arr).all()
            ):
                raise ValueError(f"{detector.name}: the fitted array {key!r} contains NaN or infinity")


def _probe(detector: Detector, head: tuple[np.ndarray, np.ndarray] | None) -> None:
    """Score two synthetic inputs of the fitted widths: the state must produce finite scores.

    This catches arrays of the wrong shape for the recorded dimensions and hyperparameters that
    the detector checks only when scoring. Detectors that need the model in the loop are not
    probed (a guard has no inputs for them here).
    """
    if "network" in detector.requires or ("head" in detector.requires and head is None):
        return
    n_feat, n_cls = detector.n_features_in_, detector.n_classes_in_
    features = None if n_feat is None else np.ones((2, int(n_feat)), np.float32)
    weight = bias = logits = None
    if head is not None:
        weight, bias = head
    if features is not None and weight is not None and weight.shape[1] == features.shape[1]:
        logits = (features @ weight.T + bias).astype(np.float32)
    elif n_cls is not None:
        logits = np.tile(np.linspace(1.0, 0.0, int(n_cls), dtype=np.float32), (2, 1))
    from unseen.representation import Representation

    rep = Representation(features=features, logits=logits, weight=weight, bias=bias)
    try:
        detector.score(rep)
    except Exception as exc:  # any failure means the stored state is unusable
        raise ValueError(
            f"{detector.name}: the stored state cannot score inputs of its recorded width "
            f"({type(exc).__name__}: {exc})"
        ) from None


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
    if not isinstance(spec, list):
        raise GuardFileError(f"{CONFIG}: preprocessing must be a list of steps, got {spec!r}")
    steps = []
    for step in spec:
        kind = step.get("type") if isinstance(step, dict) else None
        if kind not in builders:
            raise GuardFileError(f"{CONFIG}: unknown preprocessing step {step!r}")
        steps.append(builders[kind](step))
    return T.Compose(steps)


# -- guards ---------------------------------------------------------------------------------
def save_guard(guard: Guard, path: Path, *, overwrite: bool = False) -> Path:
    """Write a calibrated guard to directory ``path`` (see the module docstring)."""
    scores = guard.calibration_scores
    if scores is None:
        raise NotFittedError("the guard is not calibrated: call guard.calibrate(id_data, alpha)")
    det_cfg, arrays = encode_detector(guard.detector)
    arrays["calibration.scores"] = np.ascontiguousarray(scores)
    if guard.head is not None:
        arrays["head.weight"], arrays["head.bias"] = guard.head
    write_model = None
    model_cfg = None
    if guard.model is not None:
        model_cfg = guard.inputs.model_config()
        model = guard.model

        def write_model(p: Path) -> None:
            _write_model(model, p)

    config = {
        "format": FORMAT,
        "detector": det_cfg,
        "alpha": guard.alpha,
        "threshold": guard.threshold,
        "n_calibration": int(scores.shape[0]),
        "tpr": guard.tpr,
        "monitor": guard.monitor_settings,
        "model": model_cfg,
        "preprocessing": transform_spec(guard.transform),
        "versions": _versions(),
    }
    cls = type(guard)
    return write_dir(path, config, arrays, write_model, overwrite,
                     verify=lambda p: load_guard(p, guard_class=cls))


def load_guard(path: Path, *, device: str = "cpu", guard_class: type[Guard] | None = None) -> Guard:
    """Read a guard directory written by :func:`save_guard`, checking everything it reads."""
    if guard_class is None:
        from unseen.guard.core import Guard

        guard_class = Guard
    config, arrays, model_file = read_dir(Path(path), FORMAT)
    try:
        return _guard_from_config(guard_class, config, arrays, model_file, device)
    except GuardFileError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise GuardFileError(f"{path}: invalid guard configuration: {exc}") from None


def _guard_from_config(
    guard_class: type[Guard], config: dict[str, Any], arrays: dict[str, np.ndarray],
    model_file: Path | None, device: str,
) -> Guard:
    from unseen.guard.inputs import check_head

    head = None
    if "head.weight" in arrays or "head.bias" in arrays:
        head = check_head(arrays["head.weight"], arrays["head.bias"])
    detector = decode_detector(config["detector"], arrays, head)
    model = model_name = None
    if config.get("model") is not None:
        if model_file is None:
            raise GuardFileError(
                f"{CONFIG} names the model {config['model']!r} but {MODEL} is missing from the "
                "directory and its manifest: the guard is incomplete"
            )
        model_name, model = _load_model(config["model"], model_file, device)
    elif model_file is not None:
        raise GuardFileError(f"{MODEL} is present but {CONFIG} names no model")
    guard = guard_class(
        detector, model, model_name=model_name,
        transform=build_transform(config.get("preprocessing")), head=head, device=device,
    )
    return guard.restore_calibration(
        alpha=config["alpha"], calibration_scores=arrays["calibration.scores"],
        threshold=config["threshold"], tpr=config.get("tpr"), monitor=config.get("monitor") or {},
    )


def _write_model(model: Any, path: Path) -> None:
    from safetensors.torch import save_file as save_torch

    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    save_torch(state, str(path), metadata={"format": FORMAT})


def _load_model(cfg: Any, model_file: Path, device: str) -> tuple[str, Any]:
    from safetensors.torch import load_file as load_torch

    from unseen import models

    if not isinstance(cfg, dict) or not isinstance(cfg.get("name"), str) or isinstance(
        cfg.get("num_classes"), bool
    ) or not isinstance(cfg.get("num_classes"), int):
        raise ValueError(f"the model entry must be {{name: str, num_classes: int}}, got {cfg!r}")
    model = models.create(cfg["name"], num_classes=cfg["num_classes"])
    model.load_state_dict(load_torch(str(model_file)), strict=True)
    model.to(device)
    return cfg["name"], model


def _versions() -> dict[str, str]:
    import torch

    import unseen

    return {
        "unseen": unseen.__version__,
        "numpy": np.__version__,
        "torch": torch.__version__,
        "python": ".".join(map(str, sys.version_info[:3])),
    }


# -- bare detectors -------------------------------------------------------------------------
def save_detector(detector: Detector, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Write a fitted detector (no guard, no calibration) to directory ``path``."""
    det_cfg, arrays = encode_detector(detector)
    config = {"format": DETECTOR_FORMAT, "detector": det_cfg, "versions": _versions()}
    return write_dir(Path(path), config, arrays, None, overwrite, verify=load_detector)


def load_detector(path: str | os.PathLike[str]) -> Detector:
    """Read a directory written by :func:`save_detector`, checking everything it reads."""
    config, arrays, _ = read_dir(Path(path), DETECTOR_FORMAT)
    try:
        return decode_detector(config["detector"], arrays)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        if isinstance(exc, GuardFileError):
            raise
        raise GuardFileError(f"{path}: invalid detector configuration: {exc}") from None


# -- files, checksums, atomic directories ---------------------------------------------------
def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True, allow_nan=True) + "\n")


def check_target(target: Path, overwrite: bool, fmt: str = FORMAT, *,
                 hint: str = "pass overwrite=True") -> None:
    """Raise unless ``target`` may be written: absent, or (with ``overwrite``) replaceable.

    Replaceable means an empty directory, or a directory of format ``fmt`` (a valid manifest)
    holding nothing but the files its manifest lists. Anything else (user files, another
    kind of directory, a plain file) is refused with the reason. ``hint`` says how to ask
    for replacing (the command line passes its flag).
    """
    target = Path(target)
    if not target.exists() and not target.is_symlink():
        return
    if not overwrite:
        raise FileExistsError(f"{target} already exists; {hint} to replace it")
    if not target.is_dir() or target.is_symlink():
        raise FileExistsError(f"{target} exists and is not a directory; refusing to replace it")
    entries = {p.name for p in target.iterdir()}
    if not entries:
        return
    try:
        files = _read_manifest(target / MANIFEST, fmt)
    except (OSError, GuardFileError) as exc:
        raise FileExistsError(
            f"{target} exists and is not a {fmt} directory ({exc}); refusing to replace it: "
            "choose another path or remove it yourself"
        ) from None
    extra = sorted(entries - set(files) - {MANIFEST})
    if extra:
        raise FileExistsError(
            f"{target} holds files that are not part of the saved directory ({', '.join(extra)}); "
            "refusing to replace it: move them away or choose another path"
        )


def write_dir(
    target: Path,
    config: dict[str, Any],
    arrays: dict[str, np.ndarray],
    write_model: Callable[[Path], None] | None,
    overwrite: bool,
    *,
    verify: Callable[[Path], Any] | None = None,
) -> Path:
    """Write a directory at ``target`` atomically (temporary sibling, ``verify``, rename)."""
    target = Path(target)
    fmt = config["format"]
    check_target(target, overwrite, fmt)
    with atomic_dir(target) as tmp:
        save_file(arrays, str(tmp / ARRAYS), metadata={"format": fmt})
        names = [ARRAYS]
        if write_model is not None:
            write_model(tmp / MODEL)
            names.append(MODEL)
        write_json(tmp / _CONFIG_OF[fmt], config)
        names.append(_CONFIG_OF[fmt])
        files = {n: {"sha256": sha256(tmp / n), "size": (tmp / n).stat().st_size} for n in names}
        write_json(tmp / MANIFEST, {"format": fmt, "files": files})
        _fsync_dir(tmp)
        if verify is not None:
            try:
                verify(tmp)
            except (GuardFileError, OSError) as exc:
                raise GuardFileError(f"refusing to save {target}: it would not load ({exc})") from None
    return target


def _fsync_dir(path: Path) -> None:
    for f in path.iterdir():
        with f.open("rb") as fh:
            os.fsync(fh.fileno())


def _manifest_of(manifest_path: Path, writer: str) -> Any:
    """The parsed JSON of a manifest (size-bounded), or a clear error when it is missing."""
    if not manifest_path.is_file():
        raise FileNotFoundError(
            f"{manifest_path} is missing: {manifest_path.parent} is not a complete directory "
            f"written by {writer}"
        )
    return _read_json(manifest_path, MAX_MANIFEST_BYTES)


def _read_manifest(manifest_path: Path, fmt: str) -> dict[str, dict[str, Any]]:
    """The ``files`` of a manifest, checked: bounded size, format ``fmt``, known names."""
    manifest = _manifest_of(manifest_path, "Guard.save")
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if (
        not isinstance(files, dict)
        or manifest.get("format") != fmt
        or not all(isinstance(e, dict) for e in files.values())
    ):
        raise GuardFileError(f"{manifest_path} is not an {fmt} manifest")
    config_name = _CONFIG_OF[fmt]
    allowed = (config_name, ARRAYS, MODEL) if fmt == FORMAT else (config_name, ARRAYS)
    for required in (config_name, ARRAYS):
        if required not in files:
            raise GuardFileError(f"{manifest_path} does not list {required}")
    for name in files:
        if name not in allowed:
            raise GuardFileError(f"{manifest_path} lists an unexpected file {name!r}")
    return files


def saved_format(path: str | os.PathLike[str]) -> str:
    """The format its manifest declares for the directory ``path`` (one of :data:`_CONFIG_OF`),
    read without trusting anything else; how ``unseen serve`` tells guard kinds apart."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"no guard directory at {path}")
    manifest_path = path / MANIFEST
    manifest = _manifest_of(manifest_path, "Guard.save or InspectionGuard.save")
    fmt = manifest.get("format") if isinstance(manifest, dict) else None
    if fmt not in _CONFIG_OF:
        raise GuardFileError(
            f"{manifest_path} declares format {fmt!r}; known formats: {', '.join(_CONFIG_OF)}"
        )
    return str(fmt)


def _verify_file(f: Path, entry: Mapping[str, Any]) -> None:
    if not f.is_file():
        raise FileNotFoundError(f"{f} is missing (listed in {MANIFEST})")
    size = f.stat().st_size
    if size != entry.get("size"):
        raise GuardFileError(
            f"{f} has {size} bytes but {MANIFEST} records {entry.get('size')}: the file is "
            "truncated or modified"
        )
    if f.name in (CONFIG, DETECTOR_CONFIG) and size > MAX_CONFIG_BYTES:
        raise GuardFileError(f"{f} has {size} bytes, more than a configuration file may have")
    if sha256(f) != entry.get("sha256"):
        raise GuardFileError(f"{f} does not match its sha256 in {MANIFEST}: it was modified")


def read_dir(path: Path, fmt: str = FORMAT) -> tuple[dict[str, Any], dict[str, np.ndarray], Path | None]:
    """Verify the manifest of a directory of format ``fmt``; return (config, arrays, model file)."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"no guard directory at {path}")
    files = _read_manifest(path / MANIFEST, fmt)
    for name, entry in files.items():
        _verify_file(path / name, entry)
    config_path = path / _CONFIG_OF[fmt]
    config = _read_json(config_path, MAX_CONFIG_BYTES)
    if not isinstance(config, dict) or config.get("format") != fmt:
        raise GuardFileError(f"{config_path} is not an {fmt} configuration")
    try:
        arrays = load_file(str(path / ARRAYS))
    except Exception as exc:  # safetensors raises its own error types for malformed headers
        raise GuardFileError(f"{path / ARRAYS} is not a valid safetensors file: {exc}") from None
    return config, arrays, (path / MODEL) if MODEL in files else None


def _json_depth_ok(text: str, limit: int) -> bool:
    """Whether brackets nest at most ``limit`` deep (strings skipped), without recursion."""
    depth = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > limit:
                return False
        elif ch in "]}":
            depth -= 1
    return True


def _read_json(path: Path, max_bytes: int) -> Any:
    size = path.stat().st_size
    if size > max_bytes:
        raise GuardFileError(f"{path} has {size} bytes, more than the {max_bytes} such a file may have")
    try:
        text = path.read_text()
    except UnicodeDecodeError as exc:
        raise GuardFileError(f"{path} is not valid JSON: {exc}") from None
    if not _json_depth_ok(text, MAX_JSON_DEPTH):
        raise GuardFileError(f"{path} nests deeper than {MAX_JSON_DEPTH} levels: not a guard file")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise GuardFileError(f"{path} is not valid JSON: {exc}") from None
