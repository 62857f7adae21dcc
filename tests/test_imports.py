"""`import unseen` stays light: no torch, faiss or matplotlib until a name that needs them is used.

Each check runs in a fresh interpreter (this test process has torch loaded already) and reads
``sys.modules`` there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
HEAVY = ("torch", "faiss", "matplotlib")


def loaded_after(statement: str) -> dict[str, bool]:
    code = f"import sys, json\n{statement}\nprint(json.dumps({{m: m in sys.modules for m in {HEAVY!r}}}))"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          check=False, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("statement", [
    "import unseen, unseen.metrics",
    "import unseen.representation, unseen.cache, unseen._io",
    "import unseen; r = unseen.Representation(features=[[0.0, 1.0]]); unseen.metrics.auroc([0.1], [0.9])",
])
def test_light_imports_load_no_torch_faiss_or_matplotlib(statement: str) -> None:
    assert loaded_after(statement) == dict.fromkeys(HEAVY, False)


def test_detectors_load_on_first_use() -> None:
    # the lazy attribute really is the package (and it is the torch-backed family that loads torch)
    loaded = loaded_after("import unseen, unseen.detectors as d\nassert unseen.detectors is d")
    assert loaded["matplotlib"] is False
