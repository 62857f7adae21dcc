"""Issue #11 defects of guard directories and the calibrate/serve commands, one test each.

Overwriting only guards, set_monitor leaving nothing bad behind, hand-edited contents with a
recomputed manifest, bounded manifests, a model missing from directory and manifest, stale
temporary directories, overlapping splits, and the command line's messages and exit statuses.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from guard_data import make_rep, random_digits
from safetensors.numpy import load_file, save_file

from unseen import Representation, detectors, models
from unseen.cli import main
from unseen.data import transforms as T
from unseen.guard import Guard, GuardFileError, load_detector, persist, save_detector


@pytest.fixture(scope="module")
def knn_guard() -> Guard:
    return Guard(detectors.create("knn", k=5)).fit(make_rep(300, 0)).calibrate(make_rep(120, 1), 0.1)


def rewrite_manifest(path: Path) -> None:
    """Recompute the manifest as someone editing the files by hand would."""
    manifest = json.loads((path / persist.MANIFEST).read_text())
    for name in manifest["files"]:
        manifest["files"][name] = {"sha256": persist.sha256(path / name),
                                   "size": (path / name).stat().st_size}
    persist.write_json(path / persist.MANIFEST, manifest)


# -- #6: overwrite replaces only a guard -----------------------------------------------------------
def test_overwrite_refuses_a_directory_that_is_not_a_guard(knn_guard: Guard, tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    with pytest.raises(FileExistsError, match="not a unseen.guard/1 directory"):
        knn_guard.save(mine, overwrite=True)
    assert (mine / "thesis.tex").read_text() == "years of work"
    # a guard with a user's file put inside is not replaced either
    g = knn_guard.save(tmp_path / "g")
    (g / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match=r"notes\.txt"):
        knn_guard.save(g, overwrite=True)
    assert (g / "notes.txt").read_text() == "keep me"
    (g / "notes.txt").unlink()
    assert knn_guard.save(g, overwrite=True) == g  # a real guard is replaced


def test_overwrite_keeps_the_directory_mode(knn_guard: Guard, tmp_path: Path) -> None:
    g = knn_guard.save(tmp_path / "g")
    os.chmod(g, 0o750)
    knn_guard.save(g, overwrite=True)
    assert stat.S_IMODE(g.stat().st_mode) == 0o750


def test_cli_overwrite_refuses_a_user_directory(tmp_path: Path, capsys) -> None:
    make_rep(300, 0).save(tmp_path / "train.safetensors")
    make_rep(101, 1).save(tmp_path / "calib.safetensors")
    out = tmp_path / "out"
    out.mkdir()
    (out / "data.csv").write_text("1,2,3")
    argv = ["calibrate", "--train", str(tmp_path / "train.safetensors"), "--calib",
            str(tmp_path / "calib.safetensors"), "--detector", "msp", "--out", str(out)]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "--overwrite" in err and "overwrite=True" not in err  # the CLI's own flag
    assert main([*argv, "--overwrite"]) == 1
    assert "refusing to replace" in capsys.readouterr().err
    assert (out / "data.csv").read_text() == "1,2,3"


# -- #7: a refused monitor setting leaves nothing behind -------------------------------------------
def test_failed_set_monitor_keeps_the_old_settings(tmp_path: Path) -> None:
    guard = Guard(detectors.create("knn", k=5)).fit(make_rep(300, 0)).calibrate(make_rep(120, 1), 0.1)
    guard.set_monitor(window=50, level=0.05)
    monitor = guard.monitor
    for bad in ({"level": 2}, {"window": 0}, {"confidence": "0.9"}, {"level": True}):
        with pytest.raises((ValueError, TypeError)):
            guard.set_monitor(**bad)
        assert guard.monitor_settings == {"window": 50, "level": 0.05, "confidence": 0.95}
        assert guard.monitor is monitor
    loaded = Guard.load(guard.save(tmp_path / "g"))
    assert loaded.monitor.window == 50 and loaded.monitor.level == 0.05
    # an uncalibrated guard refuses bad settings too, so calibrate() cannot fail on them later
    fresh = Guard(detectors.create("msp"))
    with pytest.raises(ValueError, match="level"):
        fresh.set_monitor(level=2)
    assert fresh.monitor_settings == {}


def test_save_refuses_what_load_would_refuse(knn_guard: Guard, tmp_path: Path) -> None:
    guard = Guard(detectors.create("knn", k=5)).fit(make_rep(300, 0)).calibrate(make_rep(120, 1), 0.1)
    guard.monitor_settings = {"window": 10, "level": 7.0, "confidence": 0.95}  # set by hand
    with pytest.raises(GuardFileError, match="would not load.*level"):
        guard.save(tmp_path / "g")
    assert list(tmp_path.iterdir()) == []


# -- hand-edited contents with a recomputed manifest -------------------------------------------------
def _edit_config(path: Path, edit) -> None:
    config = json.loads((path / persist.CONFIG).read_text())
    edit(config)
    persist.write_json(path / persist.CONFIG, config)
    rewrite_manifest(path)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c["detector"]["params"].update(k=-5), r"invalid guard configuration: .*\bk\b"),
        (lambda c: c["detector"]["params"].update(k="50"), r"invalid guard configuration: .*\bk\b"),
        (lambda c: c.update(alpha="0.1"), r"alpha must be a number"),
        (lambda c: c.update(tpr=3.0), r"tpr must be"),
        (lambda c: c["detector"]["state"].update(n_features_in_=-1), r"n_features_in_"),
        (lambda c: c.update(monitor={"window": 10, "level": 2}), r"level"),
    ],
    ids=["k-negative", "k-string", "alpha-string", "tpr", "n_features_in_", "monitor"],
)
def test_edited_parameters_are_refused(knn_guard: Guard, tmp_path: Path, edit, message) -> None:
    path = knn_guard.save(tmp_path / "g")
    _edit_config(path, edit)
    with pytest.raises(GuardFileError, match=message):
        Guard.load(path)


def _edit_arrays(path: Path, edit) -> None:
    arrays = dict(load_file(str(path / persist.ARRAYS)))
    edit(arrays)
    save_file(arrays, str(path / persist.ARRAYS), metadata={"format": persist.FORMAT})
    rewrite_manifest(path)


def test_edited_arrays_are_refused(tmp_path: Path) -> None:
    train = make_rep(300, 0, dim=128)
    guard = Guard(detectors.create("knn", k=5)).fit(train).calibrate(make_rep(120, 1, dim=128), 0.1)
    cases = {
        "nan": (lambda a: a["detector.bank_"].__setitem__((3, 7), np.nan), "NaN"),
        "64 columns": (lambda a: a.update({"detector.bank_": a["detector.bank_"][:, :64].copy()}),
                       "cannot score inputs of its recorded width"),
        "unsorted calibration": (
            lambda a: a.update({"calibration.scores": a["calibration.scores"][::-1].copy()}),
            "sorted"),
        "head nan": (lambda a: a["head.weight"].__setitem__((0, 0), np.inf), "head"),
    }
    for name, (edit, message) in cases.items():
        path = guard.save(tmp_path / name.replace(" ", "-"))
        _edit_arrays(path, edit)
        with pytest.raises(GuardFileError, match=message):
            Guard.load(path)


# -- bounded manifests ---------------------------------------------------------------------------
def test_deeply_nested_manifest_is_refused_fast(knn_guard: Guard, tmp_path: Path) -> None:
    path = knn_guard.save(tmp_path / "g")
    (path / persist.MANIFEST).write_text("[" * 20_000 + "]" * 20_000)  # within the size bound
    with pytest.raises(GuardFileError, match="nests deeper"):
        Guard.load(path)


def test_huge_manifest_is_refused_without_reading_it(knn_guard: Guard, tmp_path: Path) -> None:
    path = knn_guard.save(tmp_path / "g")
    with (path / persist.MANIFEST).open("r+b") as fh:
        fh.truncate(1 << 30)  # 1 GiB, sparse
    start = time.perf_counter()
    with pytest.raises(GuardFileError, match="more than"):
        Guard.load(path)
    assert time.perf_counter() - start < 1.0


# -- a model named in guard.json but gone from the directory and the manifest -----------------------
def test_guard_without_the_model_it_names_is_refused(tmp_path: Path) -> None:
    torch.manual_seed(0)
    guard = Guard(detectors.create("knn", k=3), models.create("mnist_convnet", num_classes=10),
                  model_name="mnist_convnet", transform=T.mnist_transform())
    guard.fit(random_digits(40, 0)).calibrate(random_digits(39, 1), alpha=0.05)
    path = guard.save(tmp_path / "g")
    (path / persist.MODEL).unlink()
    manifest = json.loads((path / persist.MANIFEST).read_text())
    del manifest["files"][persist.MODEL]
    persist.write_json(path / persist.MANIFEST, manifest)
    with pytest.raises(GuardFileError, match="names the model.*missing"):
        Guard.load(path)


# -- a killed save's leftovers ---------------------------------------------------------------------
KILLED_SAVE = """
import os, sys
from guard_data import make_rep
from unseen import detectors
from unseen.guard import Guard, persist
guard = Guard(detectors.create("knn", k=5)).fit(make_rep(300, 0)).calibrate(make_rep(120, 1), 0.1)
real = persist.write_json
def die(path, obj):
    if path.name == persist.MANIFEST:
        os._exit(9)  # killed mid-save: no clean-up runs
    real(path, obj)
persist.write_json = die
guard.save(sys.argv[1])
"""


def test_stale_temporary_directories_are_cleaned_on_the_next_save(
    knn_guard: Guard, tmp_path: Path
) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(Path(persist.__file__).parents[2]), str(Path(__file__).parent)])}
    done = subprocess.run([sys.executable, "-c", KILLED_SAVE, str(tmp_path / "g")], env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 9, done.stderr
    leftovers = [p.name for p in tmp_path.iterdir()]
    assert len(leftovers) == 1 and leftovers[0].startswith(".g.") and leftovers[0].endswith(".tmp")
    old_style = tmp_path / ".g.ab12cd34.tmp"  # an earlier version's name, untouched for 2 hours
    old_style.mkdir()
    os.utime(old_style, (time.time() - 7200, time.time() - 7200))
    ours = tmp_path / f".g.{os.getpid()}.live.tmp"  # a save in progress in a live process
    ours.mkdir()
    knn_guard.save(tmp_path / "g")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["g", ours.name])


# -- bare detectors -----------------------------------------------------------------------------------
def test_a_bare_detector_round_trips_and_is_checked(tmp_path: Path) -> None:
    train, test = make_rep(300, 0), make_rep(40, 3)
    det = detectors.create("mahalanobis").fit(train)
    path = save_detector(det, tmp_path / "d")
    assert sorted(p.name for p in path.iterdir()) == sorted(
        [persist.ARRAYS, persist.DETECTOR_CONFIG, persist.MANIFEST]
    )
    loaded = load_detector(path)
    np.testing.assert_array_equal(loaded.score(test), det.score(test))
    with pytest.raises(FileExistsError, match="not a unseen.guard/1 directory"):
        Guard(det).calibrate(make_rep(50, 1), 0.1).save(path, overwrite=True)
    arrays = dict(load_file(str(path / persist.ARRAYS)))
    key = next(k for k, v in arrays.items() if v.dtype.kind == "f" and v.ndim == 2)
    arrays[key][0, 0] = np.nan
    save_file(arrays, str(path / persist.ARRAYS), metadata={"format": persist.DETECTOR_FORMAT})
    rewrite_manifest(path)
    with pytest.raises(GuardFileError, match="NaN"):
        load_detector(path)


# -- overlapping splits ----------------------------------------------------------------------------
def test_calibrate_refuses_overlapping_splits(tmp_path: Path, capsys) -> None:
    train, calib = make_rep(300, 0), make_rep(101, 1)
    train.save(tmp_path / "train.safetensors")
    calib.save(tmp_path / "calib.safetensors")
    mixed = Representation(features=np.r_[calib.features[:90], train.features[:11]])
    mixed.save(tmp_path / "mixed.safetensors")
    (tmp_path / "copy.safetensors").write_bytes((tmp_path / "train.safetensors").read_bytes())
    base = ["calibrate", "--detector", "knn", "--param", "k=1", "--alpha", "0.1"]
    cases = [
        (["--train", "train", "--calib", "train"], 2, "--calib and --train are the same file"),
        (["--train", "train", "--calib", "calib", "--val", "calib"], 2,
         "--calib and --val are the same file"),
        (["--train", "train", "--calib", "copy"], 1, "300 of the 300 calibration rows"),
        (["--train", "train", "--calib", "mixed"], 1, "11 of the 101 calibration rows"),
    ]
    for i, (files, code, message) in enumerate(cases):
        argv = [a if a.startswith("--") else str(tmp_path / f"{a}.safetensors") for a in files]
        assert main([*base, *argv, "--out", str(tmp_path / f"g{i}")]) == code
        assert message in capsys.readouterr().err
        assert not (tmp_path / f"g{i}").exists()


# -- exit statuses -------------------------------------------------------------------------------
def test_unknown_detector_is_a_usage_error_in_calibrate_as_in_benchmark(tmp_path: Path, capsys) -> None:
    make_rep(30, 0).save(tmp_path / "t.safetensors")
    make_rep(30, 1).save(tmp_path / "c.safetensors")
    files = ["--train", str(tmp_path / "t.safetensors"), "--calib", str(tmp_path / "c.safetensors")]
    assert main(["calibrate", *files, "--detector", "nope", "--out", str(tmp_path / "g")]) == 2
    assert "unknown detector 'nope'" in capsys.readouterr().err
    assert main(["benchmark", "--detectors", "nope"]) == 2
    assert "unknown detector 'nope'" in capsys.readouterr().err
    assert main(["calibrate", *files, "--param", "kk=3", "--out", str(tmp_path / "g")]) == 2
    assert "no hyperparameter(s) ['kk']" in capsys.readouterr().err


def test_a_port_in_use_is_a_runtime_error_exit_1(knn_guard: Guard, tmp_path: Path, capsys) -> None:
    path = knn_guard.save(tmp_path / "g")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", str(path), "--port", str(port)]) == 1
    err = capsys.readouterr().err
    assert f"127.0.0.1:{port}" in err and "in use" in err
