"""Shared fixtures. Tests that need the real data bundle use `shared_data` (skips without it)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from unseen import Representation

#: ../shared/data beside the repository (CI has it); UNSEEN_SHARED_DATA overrides.
SHARED_DATA = Path(
    os.environ.get("UNSEEN_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)


@pytest.fixture
def shared_data() -> Path:
    if not (SHARED_DATA / "README.md").is_file():
        pytest.skip(f"real data bundle not found at {SHARED_DATA} (set UNSEEN_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real data bundle unpacked (images, OpenOOD lists, weights).

    Uses $UNSEEN_DATA_ROOT when .ci/run has unpacked it already, otherwise runs the bundle's
    `unpack` once per test session into a temporary folder.
    """
    env = os.environ.get("UNSEEN_DATA_ROOT")
    if env and (Path(env) / "benchmark_imglist").is_dir():
        return Path(env)
    if not (SHARED_DATA / "unpack").is_file():
        pytest.skip(f"real data bundle not found at {SHARED_DATA} (set UNSEEN_SHARED_DATA)")
    dest = tmp_path_factory.mktemp("unpacked")
    done = subprocess.run(
        [str(SHARED_DATA / "unpack"), str(dest)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        pytest.fail(f"unpacking {SHARED_DATA} failed: {done.stderr.strip()}")
    return dest


@pytest.fixture
def toy_rep() -> Representation:
    """300 samples, 3 Gaussian classes in 8-D, with a consistent linear head."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 100)
    centres = rng.normal(scale=3.0, size=(3, 8))
    features = (centres[labels] + rng.normal(size=(300, 8))).astype(np.float32)
    weight = rng.normal(size=(3, 8)).astype(np.float32)
    bias = rng.normal(size=3).astype(np.float32)
    logits = features @ weight.T + bias
    return Representation(features, logits, labels, weight, bias, meta={"dataset": "toy"})
