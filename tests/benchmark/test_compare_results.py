"""benchmarks/compare_results.py: the largest difference per metric and the records that differ."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "compare_results.py"


@pytest.fixture(scope="module")
def cmp():
    spec = importlib.util.spec_from_file_location("compare_results", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def rec(det: str, ds: str, auroc: float, hp: dict | None = None) -> dict:
    return {"detector": det, "hparams": hp or {}, "group": "near", "dataset": ds, "auroc": auroc,
            "aupr_in": 0.5, "aupr_out": 0.5, "fpr95_id": 0.25, "fpr95_ood": 0.25}


def write(tmp: Path, name: str, records: list[dict], **extra) -> Path:
    path = tmp / f"{name}.json"
    path.write_text(json.dumps({"records": records, **extra}))
    return path


def test_identical_files_exit_0(cmp, tmp_path, capsys):
    a = write(tmp_path, "a", [rec("msp", "x", 0.9)])
    assert cmp.main([str(a), str(a)]) == 0
    assert "identical" in capsys.readouterr().out


def test_largest_difference_and_differing_records(cmp, tmp_path, capsys):
    a = write(tmp_path, "a", [rec("msp", "x", 0.9), rec("knn", "x", 0.8, {"k": 1}), rec("vim", "x", 0.7)])
    b = write(tmp_path, "b", [rec("msp", "x", 0.875), rec("knn", "x", 0.8, {"k": 5}), rec("odin", "x", 0.6)],
              not_applicable={"scale": "needs non-negative features"})
    largest, lines = cmp.compare(cmp.load(a), cmp.load(b), tol=0.0)
    assert largest["auroc"] == (pytest.approx(0.025), ("msp", "near", "x"))
    assert largest["fpr95_id"] == (0.0, None)
    assert lines == [
        "differs  knn/near/x: hparams {'k': 1} -> {'k': 5}",
        "differs  msp/near/x: auroc 0.9 -> 0.875",
        "only in A vim/near/x",
        "only in B odin/near/x",
        "not applicable in B only: scale",
    ]
    # a tolerance above the gap keeps only the other differences
    assert len(cmp.compare(cmp.load(a), cmp.load(b), tol=0.03)[1]) == 4
    assert cmp.main([str(a), str(b)]) == 1
    assert "auroc" in capsys.readouterr().out
