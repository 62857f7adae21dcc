"""The command line: listings, one-line errors with exit codes, and an end-to-end digits run."""

from __future__ import annotations

import json

import numpy as np
import pytest

from unseen import detectors
from unseen.benchmark import load_scores
from unseen.benchmark.result import COLUMNS, METRICS
from unseen.cli import main, paper_short


@pytest.fixture(autouse=True)
def _wide_terminal(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("COLUMNS", "250")
    monkeypatch.setenv("UNSEEN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("UNSEEN_DEBUG", raising=False)


def _error_line(capsys, argv: list[str], code: int, starts: str) -> str:
    assert main(argv) == code
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"unseen: error: {starts}"), lines[0]
    return lines[0]


def test_list_detectors_lists_every_registered_detector(capsys) -> None:
    assert main(["list", "detectors"]) == 0
    out = capsys.readouterr().out
    listed = {line.split("│")[1].strip() for line in out.splitlines() if line.count("│") >= 3}
    assert listed == set(detectors.names())
    assert "Liu et al., NeurIPS 2020" in out  # energy
    assert paper_short("Liu, Wang, Owens, Li", "NeurIPS", 2020) == "Liu et al., NeurIPS 2020"
    assert paper_short("Sun, Li", "ECCV", 2022) == "Sun and Li, ECCV 2022"


def test_list_presets(capsys) -> None:
    assert main(["list", "presets"]) == 0
    assert "digits" in capsys.readouterr().out


def test_usage_errors_exit_2_with_one_line(capsys) -> None:
    _error_line(capsys, ["benchmark", "--preset", "nope"], 2, "unknown preset 'nope'")
    _error_line(capsys, ["benchmark", "--detectors", "msp,nope"], 2, "unknown detector 'nope'")
    _error_line(capsys, ["benchmark", "--data-root", "/x"], 2,
                "preset 'digits' does not take --data-root")
    _error_line(capsys, ["benchmark", "--seed", "x"], 2, "argument --seed")
    _error_line(capsys, ["frobnicate"], 2, "argument command")


def test_config_errors(capsys, tmp_path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("name = [unclosed\n")
    _error_line(capsys, ["benchmark", "--config", str(bad)], 2, f"{bad}: invalid TOML")
    missing = tmp_path / "bench.toml"
    missing.write_text(
        '[model]\nfactory = "torch.nn:Identity"\ntransform = "mnist"\n'
        f'[data]\nroot = "{tmp_path}"\n'
        '[id]\nfit = "nowhere/train"\nval = "v"\ntest = "t"\n[ood]\nval = "o"\n'
    )
    line = _error_line(capsys, ["benchmark", "--config", str(missing)], 1, "")
    assert f"data folder {tmp_path / 'nowhere/train'} does not exist" in line


def test_debug_lets_the_exception_through(capsys, tmp_path, monkeypatch) -> None:
    argv = ["benchmark", "--config", str(tmp_path / "x.toml")]
    _error_line(capsys, argv, 1, f"benchmark config {tmp_path / 'x.toml'} does not exist")
    with pytest.raises(FileNotFoundError):
        main([*argv, "--debug"])
    monkeypatch.setenv("UNSEEN_DEBUG", "1")
    with pytest.raises(FileNotFoundError):
        main(argv)


@pytest.mark.slow
def test_benchmark_end_to_end_writes_the_schema_and_is_deterministic(tmp_path, capsys) -> None:
    names = ["msp", "energy", "knn", "odin"]
    out1, out2 = tmp_path / "run1", tmp_path / "run2"
    base = ["benchmark", "--detectors", ",".join(names), "--seed", "0"]
    assert main([*base, "--out", str(out1)]) == 0
    stdout = capsys.readouterr().out
    assert "ID accuracy" in stdout and str(out1) in stdout.replace("\n", "")
    # retrain and re-extract from scratch; two detectors suffice to compare
    again = ["benchmark", "--detectors", "msp,knn", "--out", str(out2), "--no-cache"]
    assert main(again) == 0

    r1 = json.loads((out1 / "results.json").read_text())
    r2 = json.loads((out2 / "results.json").read_text())
    assert r2["records"] and r2["records"] == [
        r for r in r1["records"] if r["detector"] in ("msp", "knn")
    ]
    assert r1["preset"] == "digits" and r1["id_accuracy"] > 0.97
    assert r1["groups"] == {"near": ["digits6-9"], "far": ["flower", "noise"]}
    rows = {(r["detector"], r["group"], r["dataset"]) for r in r1["records"]}
    expected_sets = [("near", "digits6-9"), ("near", "mean"), ("far", "flower"),
                     ("far", "noise"), ("far", "mean")]
    assert rows == {(d, g, s) for d in names for g, s in expected_sets}
    for rec in r1["records"]:
        assert set(rec) == set(COLUMNS)
        assert all(0.0 <= rec[m] <= 1.0 for m in METRICS)
    assert set(r1["timings"]) == set(names) and set(r1["search"]) == set(names)
    header = (out1 / "results.csv").read_text().splitlines()[0]
    assert header == ",".join(COLUMNS)

    scores = load_scores(out1 / "scores.npz")
    assert set(scores) == set(names)
    assert scores["msp"]["id"].shape == (326,) and scores["msp"]["noise"].shape == (300,)
    # the saved scores reproduce the recorded metric
    from sklearn.metrics import roc_auc_score

    s = scores["energy"]
    y = np.r_[np.zeros(326), np.ones(300)]
    auroc = roc_auc_score(y, np.r_[s["id"], s["noise"]])
    rec = next(r for r in r1["records"] if r["detector"] == "energy" and r["dataset"] == "noise")
    assert rec["auroc"] == pytest.approx(auroc, abs=1e-12)


def test_list_models_shows_the_model_registry(capsys) -> None:
    from unseen import models

    assert main(["list", "models"]) == 0
    out = capsys.readouterr().out
    for name in models.names():
        assert name in out
        assert models.info(name).description[:40] in out


def test_missing_data_folder_is_a_one_line_runtime_error(capsys, tmp_path) -> None:
    missing = tmp_path / "nowhere"
    line = _error_line(capsys, ["benchmark", "--preset", "cifar10", "--data-root", str(missing)],
                       1, "preset 'cifar10'")
    assert str(missing) in line and "unpack" in line
    line = _error_line(capsys, ["benchmark", "--preset", "cifar10"], 1, "preset 'cifar10' needs")
    assert "--data-root" in line
    _error_line(capsys, ["benchmark", "--preset", "digits", "--model", "resnet20"], 2,
                "preset 'digits' does not take --model")
