"""One definition of the best detector, results read back, and a run's outputs written whole."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from unseen.benchmark import BenchmarkResult, leaderboard, outputs, write_outputs
from unseen.benchmark.deploy import run_choice
from unseen.cli import main


def _rec(det: str, hp: dict, group: str, dataset: str, auroc: float | None) -> dict:
    return {"detector": det, "hparams": hp, "group": group, "dataset": dataset, "auroc": auroc,
            "aupr_in": None, "aupr_out": None, "fpr95_id": 0.5, "fpr95_ood": None}


def disagreeing_result() -> BenchmarkResult:
    """Mean over groups ranks msp > energy > knn; near-OOD AUROC ranks knn > energy > msp."""
    records = []
    for det, hp, near, far in [("msp", {}, 0.70, 0.99), ("knn", {"k": 10}, 0.90, 0.60),
                               ("energy", {"temperature": 1.0}, 0.80, 0.85)]:
        records += [_rec(det, hp, "near", "a", near), _rec(det, hp, "near", "mean", near),
                    _rec(det, hp, "far", "b", far), _rec(det, hp, "far", "mean", far)]
    scores = {d: {"id": np.zeros(3), "a": np.ones(3), "b": np.ones(3)} for d in ("msp", "knn", "energy")}
    return BenchmarkResult(
        preset="digits", id_accuracy=0.9, records=records, groups={"near": ["a"], "far": ["b"]},
        scores=scores, timings={"msp": 1.0, "knn": 2.0, "energy": 3.0},
        meta={"seed": 3, "wall_time_s": 1.0, "extract_seconds": 0.5, "failures": {}},
    )


def test_one_definition_of_best(tmp_path: Path) -> None:
    result = disagreeing_result()
    means = {d: np.mean([result.mean(d, g) for g in ("near", "far")]) for d in ("msp", "knn", "energy")}
    assert max(means, key=means.__getitem__) == "msp"  # the old calibrate rule would pick msp
    assert result.ranking() == ["knn", "energy", "msp"]  # near-OOD AUROC, by hand
    board = leaderboard(result)
    assert [row["detector"] for row in board] == result.ranking()
    run = tmp_path / "run"
    result.write(run)
    choice = run_choice(run)
    assert board[0]["detector"] == result.best() == choice.detector == "knn"
    assert choice.hparams == {"k": 10} and choice.seed == 3 and choice.preset == "digits"
    # without a near group the far group ranks: msp 0.99 > energy 0.85 > knn 0.60
    far_only = BenchmarkResult.read(run)
    far_only.groups = {"far": ["b"]}
    far_only.records = [r for r in far_only.records if r["group"] == "far"]
    assert far_only.ranking() == ["msp", "energy", "knn"] and far_only.best() == "msp"


def test_missing_values_rank_last_and_ties_keep_run_order() -> None:
    result = disagreeing_result()
    for r in result.records:
        if r["detector"] == "knn" and r["group"] == "near":
            r["auroc"] = None
        if r["detector"] == "msp" and r["group"] == "near":
            r["auroc"] = 0.80  # ties with energy; msp ran first
    assert result.ranking() == ["msp", "energy", "knn"]
    for r in result.records:
        r["auroc"] = None
    with pytest.raises(ValueError, match="no detector"):
        result.best()


def test_read_round_trips_and_refuses_what_is_not_a_result(tmp_path: Path) -> None:
    result = disagreeing_result()
    result.write(tmp_path / "run")
    back = BenchmarkResult.read(tmp_path / "run" / "results.json")
    assert back.to_json() == json.loads(json.dumps(result.to_json()))
    with pytest.raises(FileNotFoundError, match="results.json"):
        BenchmarkResult.read(tmp_path)
    (tmp_path / "bad.json").write_text('{"records": 3}')
    with pytest.raises(ValueError, match="not a benchmark result"):
        BenchmarkResult.read(tmp_path / "bad.json")


def test_interrupted_output_writing_leaves_no_partial_run(tmp_path: Path, monkeypatch) -> None:
    result = disagreeing_result()
    out = tmp_path / "run"

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt  # as Ctrl-C while the scores are written

    monkeypatch.setattr(outputs, "save_scores", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_outputs(result, out)
    assert list(tmp_path.iterdir()) == []  # no results.* without the rest, no temporary folder
    monkeypatch.undo()
    files = write_outputs(result, out)
    assert set(files) >= {"results.json", "results.csv", "scores.npz"}
    first = (out / "results.json").read_text()
    result.records[0]["auroc"] = 0.123
    monkeypatch.setattr(outputs, "save_scores", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_outputs(result, out)
    assert (out / "results.json").read_text() == first  # the earlier run is kept whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_output_folder_is_checked_before_the_run(tmp_path: Path, capsys, monkeypatch) -> None:
    import unseen.benchmark

    def never(*args, **kwargs):
        raise AssertionError("the benchmark ran although its outputs cannot be written")

    monkeypatch.setattr(unseen.benchmark, "run", never)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["benchmark", "--detectors", "msp", "--out", str(blocker / "run")]) == 1
    assert f"{blocker} is not a folder" in capsys.readouterr().err
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("keep")
    assert main(["benchmark", "--detectors", "msp", "--out", str(user)]) == 1
    assert "not an earlier run" in capsys.readouterr().err
    assert (user / "notes.txt").read_text() == "keep"
