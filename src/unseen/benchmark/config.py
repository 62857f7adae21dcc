"""A benchmark described by a small TOML (Python 3.11+) or JSON file.

Example (TOML; the JSON form has the same keys)::

    name = "cifar10-resnet20"

    [model]
    name = "resnet20"                # a model registered in unseen.models ...
    checkpoint = "weights/akamaster_resnet_cifar10/resnet20-12fca82f.th"
    # factory = "mypackage.nets:build"  # ... or a function returning a trained nn.Module
    # transform = "cifar"            # cifar | imagenet | mnist (default: from the model)

    [data]
    root = "/data/ood"               # relative paths below resolve here (default: the file's folder)

    [id]
    fit = "benchmark_imglist/cifar10/train_cifar10.txt"  # *.txt: an OpenOOD image list
    val = "benchmark_imglist/cifar10/val_cifar10.txt"
    test = "cifar10/test"                                  # a folder: an ImageFolder

    [ood]
    val = "benchmark_imglist/cifar10/val_tin.txt"
    near = { tin = "benchmark_imglist/cifar10/test_tin.txt" }
    far = { texture = "benchmark_imglist/cifar10/test_texture.txt" }

Image-list paths are relative to ``data.root``, as in OpenOOD. OOD sets are relabelled -1.
"""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn
from torch.utils.data import Dataset

from unseen.benchmark.spec import AsOOD, BenchmarkSpec, PreparedModel

TRANSFORMS = ("cifar", "imagenet", "mnist")
_KEYS = {
    "": {"name", "model", "data", "id", "ood"},
    "model": {"name", "checkpoint", "num_classes", "factory", "transform", "mean", "std", "head"},
    "data": {"root"},
    "id": {"fit", "val", "test"},
    "ood": {"val", "near", "far"},
}


class ConfigError(ValueError):
    """The benchmark config file is malformed."""


def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"benchmark config {path} does not exist")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: invalid JSON: {exc}") from None
    if path.suffix != ".toml":
        raise ConfigError(f"{path}: a benchmark config must end in .toml or .json")
    if sys.version_info < (3, 11):
        raise ConfigError(f"{path}: TOML configs need Python 3.11+ (tomllib); write it as JSON")
    import tomllib

    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None


def _table(cfg: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = cfg.get(key)
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: missing table [{key}]")
    return value


def _str(table: dict[str, Any], key: str, where: str) -> str:
    value = table.get(key)
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: {key} must be a non-empty string")
    return value


def _dataset(ref: str, root: Path, transform: Callable[..., Any], where: str) -> Dataset:
    from unseen.data import ImageFolder, ImageList

    path = Path(ref) if Path(ref).is_absolute() else root / ref
    if path.suffix == ".txt":
        if not path.is_file():
            raise FileNotFoundError(f"{where}: image list {path} does not exist")
        return ImageList(path, root, transform)
    if not path.is_dir():
        raise FileNotFoundError(f"{where}: data folder {path} does not exist")
    return ImageFolder(path, transform)


def _transform(kind: str, mean: Any, std: Any, where: str) -> Callable[..., Any]:
    from unseen.data import cifar_test_transform, imagenet_test_transform, mnist_transform

    if kind == "mnist":
        return mnist_transform()
    if kind not in TRANSFORMS:
        raise ConfigError(f"{where}: transform must be one of {TRANSFORMS}, got {kind!r}")
    if mean is None or std is None:
        raise ConfigError(f"{where}: transform {kind!r} needs model.mean and model.std")
    make = cifar_test_transform if kind == "cifar" else imagenet_test_transform
    return make(tuple(mean), tuple(std))


def _load_factory(ref: str, where: str) -> Callable[[], Any]:
    module, _, func = ref.partition(":")
    if not module or not func:
        raise ConfigError(f"{where}: factory must look like 'package.module:function', got {ref!r}")
    try:
        return getattr(importlib.import_module(module), func)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"{where}: cannot import factory {ref!r}: {exc}") from None


def _check_keys(cfg: dict[str, Any], where: str) -> None:
    for table, allowed in _KEYS.items():
        section = cfg.get(table, {}) if table else cfg
        unknown = sorted(set(section) - allowed) if isinstance(section, dict) else []
        if unknown:
            place = f" in [{table}]" if table else ""
            raise ConfigError(f"{where}: unknown key(s) {unknown}{place}; expected {sorted(allowed)}")


def _data_root(cfg: dict[str, Any], path: Path, data_root: str | Path | None, where: str) -> Path:
    root_ref = data_root or cfg.get("data", {}).get("root")
    root = path.parent if root_ref is None else Path(root_ref)
    if not root.is_absolute() and data_root is None:
        root = path.parent / root
    if not root.is_dir():
        raise FileNotFoundError(f"{where}: data root {root} does not exist")
    return root


def _model_builder(
    model_cfg: dict[str, Any], root: Path, where: str
) -> tuple[Callable[[], Any], str, Any, Any, Any]:
    """``(build, transform kind, head, mean, std)`` of the config's [model] table."""
    mean, std = model_cfg.get("mean"), model_cfg.get("std")
    if "factory" in model_cfg:
        factory = _load_factory(_str(model_cfg, "factory", where), where)
        kind = _str(model_cfg, "transform", f"{where} [model] (needed with factory)")
        return factory, kind, model_cfg.get("head"), mean, std
    from unseen import models

    name = _str(model_cfg, "name", f"{where} [model]")
    try:
        info = models.info(name)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    checkpoint = Path(_str(model_cfg, "checkpoint", f"{where} [model]"))
    checkpoint = checkpoint if checkpoint.is_absolute() else root / checkpoint
    if not checkpoint.is_file():
        raise FileNotFoundError(f"{where}: checkpoint {checkpoint} does not exist")
    kind = model_cfg.get("transform") or _default_transform(info.input_shape)
    num_classes = model_cfg.get("num_classes", info.num_classes)

    def build() -> nn.Module:
        net = models.create(name, num_classes=num_classes)
        models.load_checkpoint(net, checkpoint, strict=True)
        return net

    return build, kind, info.head, mean or info.mean, std or info.std


def load_config(
    path: str | Path, *, seed: int = 0, data_root: str | Path | None = None
) -> BenchmarkSpec:
    """The :class:`BenchmarkSpec` a config file describes (``data_root`` overrides data.root)."""
    path = Path(path)
    cfg = _read(path)
    where = str(path)
    _check_keys(cfg, where)
    model_cfg = _table(cfg, "model", where)
    id_cfg, ood_cfg = _table(cfg, "id", where), _table(cfg, "ood", where)
    root = _data_root(cfg, path, data_root, where)
    build, kind, head, mean, std = _model_builder(model_cfg, root, where)
    transform = _transform(kind, mean, std, f"{where} [model]")
    input_std = tuple(std) if std is not None else None

    def model(cache_dir: Path | None) -> PreparedModel:
        net = build()
        if isinstance(net, PreparedModel):
            return net
        return PreparedModel(net.eval(), head=head, input_std=input_std, description=str(
            model_cfg.get("name") or model_cfg.get("factory")))

    def ds(ref: Any, key: str, ood: bool) -> Dataset:
        if not isinstance(ref, str):
            raise ConfigError(f"{where}: {key} must be a path string")
        d = _dataset(ref, root, transform, f"{where} {key}")
        return AsOOD(d) if ood else d

    def group(key: str) -> dict[str, Dataset]:
        entries = ood_cfg.get(key, {})
        if not isinstance(entries, dict):
            raise ConfigError(f"{where}: ood.{key} must map names to paths")
        return {n: ds(ref, f"ood.{key}.{n}", True) for n, ref in entries.items()}

    return BenchmarkSpec(
        name=str(cfg.get("name") or path.stem),
        model=model,
        fit=ds(id_cfg.get("fit"), "id.fit", False),
        val=ds(id_cfg.get("val"), "id.val", False),
        test=ds(id_cfg.get("test"), "id.test", False),
        ood_val=ds(ood_cfg.get("val"), "ood.val", True),
        near=group("near"),
        far=group("far"),
        meta={"config": str(path.resolve()), "seed": seed},
    )


def _default_transform(input_shape: tuple[int, int, int]) -> str:
    channels, height, _ = input_shape
    if channels == 1:
        return "mnist"
    return "cifar" if height <= 64 else "imagenet"
