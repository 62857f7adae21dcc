"""The calibrate/serve subcommands (unseen.cli.calibrate, unseen.cli.serve), run through the
`unseen` command line."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from guard_data import make_rep

from unseen import Representation, detectors
from unseen.benchmark.deploy import run_choice
from unseen.cli import build_parser, main
from unseen.cli._common import UsageError
from unseen.cli.calibrate import parse_params
from unseen.guard import Guard


def test_parse_params() -> None:
    assert parse_params(["k=5", "temperature=0.5", "name=abc", "flag=true"]) == {
        "k": 5, "temperature": 0.5, "name": "abc", "flag": True,
    }
    with pytest.raises(UsageError, match="NAME=VALUE"):
        parse_params(["k"])


def test_calibrate_from_representation_files(tmp_path: Path, capsys) -> None:
    train, calib, ood = make_rep(300, 0), make_rep(101, 1), make_rep(50, 2)
    ood = Representation(features=-ood.features)  # opposite directions: far OOD for knn
    for name, rep in (("train", train), ("calib", calib), ("ood", ood)):
        rep.save(tmp_path / f"{name}.safetensors")
    code = main([
        "calibrate", "--train", str(tmp_path / "train.safetensors"),
        "--calib", str(tmp_path / "calib.safetensors"), "--ood", str(tmp_path / "ood.safetensors"),
        "--detector", "knn", "--param", "k=7", "--alpha", "0.1", "--out", str(tmp_path / "g"),
    ])
    assert code == 0 and "wrote" in capsys.readouterr().out
    guard = Guard.load(tmp_path / "g")
    # independent: fit the same detector, score the calibration set, take the ⌈(n+1)(1−α)⌉-th
    scores = np.sort(detectors.create("knn", k=7).fit(train).score(calib))
    k = math.ceil(102 * 0.9)  # = 92
    assert guard.threshold == scores[k - 1] and guard.detector.k == 7
    assert guard.tpr == 1.0
    code = main(["calibrate", "--train", str(tmp_path / "train.safetensors"), "--out",
                 str(tmp_path / "h")])
    assert code == 2 and "--calib" in capsys.readouterr().err  # wrong usage: exit 2


def test_calibrate_refuses_too_small_calibration_file(tmp_path: Path, capsys) -> None:
    make_rep(100, 0).save(tmp_path / "train.safetensors")
    make_rep(10, 1).save(tmp_path / "calib.safetensors")
    code = main(["calibrate", "--train", str(tmp_path / "train.safetensors"), "--calib",
                 str(tmp_path / "calib.safetensors"), "--detector", "msp", "--out",
                 str(tmp_path / "g")])
    assert code == 1 and "too few" in capsys.readouterr().err
    assert not (tmp_path / "g").exists()


def test_serve_defaults_to_loopback() -> None:
    args = build_parser().parse_args(["serve", "somewhere"])
    assert args.host == "127.0.0.1" and args.port == 8000 and args.max_batch == 64


@pytest.fixture(scope="module")
def model_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.mark.slow
def test_calibrate_digits_preset(tmp_path: Path, model_cache: Path) -> None:
    code = main(["calibrate", "--detector", "mahalanobis", "--out", str(tmp_path / "g"),
                 "--cache-dir", str(model_cache)])
    assert code == 0
    guard = Guard.load(tmp_path / "g")
    assert guard.calibration_scores.shape == (216,) and guard.alpha == 0.05  # the ID val split
    assert guard.input_dim("features") == 128
    assert 0.05 < guard.tpr <= 1.0  # the detector flags OOD validation data more than ID data


def write_run(path: Path) -> Path:
    path.mkdir()
    # knn wins on near-OOD AUROC (the leaderboard's rule) but loses on the mean over groups
    records = [
        {"detector": "msp", "hparams": {}, "group": "near", "dataset": "mean", "auroc": 0.8},
        {"detector": "msp", "hparams": {}, "group": "far", "dataset": "mean", "auroc": 0.9},
        {"detector": "knn", "hparams": {"k": 10}, "group": "near", "dataset": "mean", "auroc": 0.85},
        {"detector": "knn", "hparams": {"k": 10}, "group": "far", "dataset": "mean", "auroc": 0.7},
        {"detector": "knn", "hparams": {"k": 10}, "group": "far", "dataset": "flower", "auroc": 0.99},
    ]
    (path / "results.json").write_text(
        json.dumps({"preset": "digits", "records": records, "meta": {"seed": 0}})
    )
    return path


def test_run_choice_picks_the_best_detector_and_its_hparams(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run")
    # near-OOD AUROC: knn 0.85 > msp 0.8 (the mean over groups would pick msp: 0.85 > 0.775)
    choice = run_choice(run)
    assert (choice.preset, choice.seed, choice.detector, choice.hparams) == (
        "digits", 0, "knn", {"k": 10}
    )
    assert run_choice(run, "msp").hparams == {}
    with pytest.raises(ValueError, match="no results for detector 'energy'"):
        run_choice(run, "energy")
    with pytest.raises(FileNotFoundError, match="results.json"):
        run_choice(tmp_path)


@pytest.mark.slow
def test_calibrate_from_a_benchmark_run(tmp_path: Path, model_cache: Path) -> None:
    run = write_run(tmp_path / "run")
    code = main(["calibrate", "--from-run", str(run), "--alpha", "0.1", "--out",
                 str(tmp_path / "g"), "--cache-dir", str(model_cache)])
    assert code == 0
    guard = Guard.load(tmp_path / "g")
    assert guard.detector.name == "knn" and guard.detector.k == 10 and guard.alpha == 0.1
