"""Benchmark config files: a tiny ImageFolder benchmark described in TOML and JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from unseen.benchmark import SpecError, run
from unseen.benchmark.config import ConfigError, load_config
from unseen.benchmark.protocols.ood import extract_all

FACTORY = '''
import torch
from torch import nn

def build():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 3))
'''


def _folder(root: Path, classes: dict[str, int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    for name, n in classes.items():
        (root / name).mkdir(parents=True)
        for i in range(n):
            pixels = rng.integers(0, 256, size=(28, 28), dtype=np.uint8)
            Image.fromarray(pixels, mode="L").save(root / name / f"{i}.png")


@pytest.fixture
def bench(tmp_path, monkeypatch) -> Path:
    (tmp_path / "tinynet.py").write_text(FACTORY)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("tinynet", None)
    data = tmp_path / "data"
    for i, split in enumerate(("fit", "val", "test")):
        _folder(data / split, {"a": 4, "b": 4, "c": 4}, seed=i)
    _folder(data / "oodval", {"x": 5}, seed=10)
    _folder(data / "near1", {"x": 3, "y": 4}, seed=11)
    _folder(data / "far1", {"z": 6}, seed=12)
    return data


TOML = """
name = "tiny"
[model]
factory = "tinynet:build"
transform = "mnist"
[data]
root = "data"
[id]
fit = "fit"
val = "val"
test = "test"
[ood]
val = "oodval"
near = { near1 = "near1" }
far = { far1 = "far1" }
"""


def test_toml_config_builds_a_runnable_benchmark(bench: Path) -> None:
    path = bench.parent / "tiny.toml"
    path.write_text(TOML)
    spec = load_config(path)
    assert spec.name == "tiny" and spec.groups == {"near": ["near1"], "far": ["far1"]}
    reps, _ = extract_all(spec, False, progress=False)
    assert sorted(set(reps["id/test"].labels.tolist())) == [0, 1, 2]
    for name in ("ood_val", "near/near1", "far/far1"):  # class folders of OOD sets become -1
        assert (reps[name].labels == -1).all()
    assert len(reps["near/near1"]) == 7
    result = run(spec, ["msp"], cache=False, progress=False)
    assert {r["dataset"] for r in result.records} == {"near1", "far1", "mean"}


def test_json_config_is_equivalent(bench: Path) -> None:
    cfg = {"name": "tiny", "model": {"factory": "tinynet:build", "transform": "mnist"},
           "data": {"root": "data"}, "id": {"fit": "fit", "val": "val", "test": "test"},
           "ood": {"val": "oodval", "far": {"far1": "far1"}}}
    path = bench.parent / "tiny.json"
    path.write_text(json.dumps(cfg))
    assert load_config(path).groups == {"far": ["far1"]}


def test_config_errors_say_what_is_wrong(bench: Path) -> None:
    path = bench.parent / "tiny.toml"
    path.write_text(TOML.replace('val = "oodval"', 'val = "near1"'))
    with pytest.raises(SpecError, match="ood_val and near/near1 share 7 sample"):
        load_config(path)
    path.write_text(TOML.replace('factory = "tinynet:build"', 'factory = "tinynet"'))
    with pytest.raises(ConfigError, match="package.module:function"):
        load_config(path)
    path.write_text("extra = 1\n" + TOML)
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['extra'\];"):
        load_config(path)
    path.write_text(TOML + "\nfar_away = 1\n")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['far_away'\] in \[ood\]"):
        load_config(path)
    path.write_text(TOML.replace('transform = "mnist"', 'transform = "cifar"'))
    with pytest.raises(ConfigError, match="needs model.mean and model.std"):
        load_config(path)
