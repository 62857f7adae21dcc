"""Guard directories: bit-identical round trips, checksums, atomic writes, model persistence."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from guard_data import make_rep

from unseen import Representation, detectors, models
from unseen.data import transforms as T
from unseen.guard import Guard, GuardFileError, persist

#: hyperparameters that fit the small training set (defaults assume thousands of samples)
SMALL = {"knn": {"k": 5}, "nnguide": {"k": 5, "alpha": 0.1}}
OFFLINE = [n for n in detectors.names() if "network" not in detectors.get(n).requires]


@pytest.fixture(scope="module")
def reps() -> dict[str, Representation]:
    return {"train": make_rep(300, 0), "val": make_rep(90, 1), "cal": make_rep(120, 2),
            "test": make_rep(60, 3)}


def fitted_guard(name: str, reps: dict[str, Representation]) -> Guard:
    det = detectors.create(name, **SMALL.get(name, {}))
    val = reps["val"] if det.needs_val else None
    return Guard(det).fit(reps["train"], val).calibrate(reps["cal"], alpha=0.1)


@pytest.mark.parametrize("name", OFFLINE)
def test_every_registered_detector_round_trips_bit_identically(
    name: str, reps: dict[str, Representation], tmp_path: Path
) -> None:
    guard = fitted_guard(name, reps)
    guard.save(tmp_path / "g")
    loaded = Guard.load(tmp_path / "g")
    assert loaded.detector is not guard.detector
    assert loaded.detector.get_params() == guard.detector.get_params()
    before, after = guard.predict(reps["test"]), loaded.predict(reps["test"])
    assert before.score.dtype == after.score.dtype == np.float64
    np.testing.assert_array_equal(after.score, before.score)  # bit-identical, no tolerance
    np.testing.assert_array_equal(after.p_value, before.p_value)
    np.testing.assert_array_equal(after.is_ood, before.is_ood)
    np.testing.assert_array_equal(after.label, before.label)
    np.testing.assert_array_equal(loaded.calibration_scores, guard.calibration_scores)
    assert (loaded.threshold, loaded.alpha) == (guard.threshold, guard.alpha)
    # features alone (no logits) are completed with the stored head, identically
    feats = Representation(features=reps["test"].features)
    if guard.detector.requires <= {"features", "logits"}:
        np.testing.assert_array_equal(loaded.scores(feats), guard.scores(feats))


def test_all_offline_detectors_are_covered() -> None:
    assert len(OFFLINE) >= 20 and {"knn", "msp", "mahalanobis", "vim"} <= set(OFFLINE)


def test_config_records_versions_and_no_pickle(reps: dict[str, Representation], tmp_path: Path) -> None:
    path = fitted_guard("knn", reps).save(tmp_path / "g")
    config = json.loads((path / persist.CONFIG).read_text())
    assert set(config["versions"]) >= {"unseen", "numpy", "torch"}
    assert config["detector"] == {
        "name": "knn", "params": {"k": 5},
        "state": {"bank_": {"__array__": "detector.bank_", "scalar": False}, "fitted_": True,
                  "n_classes_in_": 3, "n_features_in_": 6},
    }
    manifest = json.loads((path / persist.MANIFEST).read_text())
    assert sorted(manifest["files"]) == [persist.ARRAYS, persist.CONFIG]
    assert sorted(p.name for p in path.iterdir()) == sorted(
        [persist.ARRAYS, persist.CONFIG, persist.MANIFEST]
    )


# -- integrity ---------------------------------------------------------------------------------
@pytest.fixture
def saved(reps: dict[str, Representation], tmp_path: Path) -> Path:
    return fitted_guard("mahalanobis", reps).save(tmp_path / "g")


@pytest.mark.parametrize("name", [persist.ARRAYS, persist.CONFIG])
def test_modified_file_is_refused(saved: Path, name: str) -> None:
    data = bytearray((saved / name).read_bytes())
    data[len(data) // 2] ^= 0x01  # flip one bit, same size
    (saved / name).write_bytes(bytes(data))
    with pytest.raises(GuardFileError, match=f"{name}.*modified"):
        Guard.load(saved)


@pytest.mark.parametrize("name", [persist.ARRAYS, persist.CONFIG])
def test_truncated_file_is_refused(saved: Path, name: str) -> None:
    data = (saved / name).read_bytes()
    (saved / name).write_bytes(data[: len(data) - 7])
    with pytest.raises(GuardFileError, match=f"{name}.*truncated"):
        Guard.load(saved)


@pytest.mark.parametrize("name", [persist.ARRAYS, persist.CONFIG, persist.MANIFEST])
def test_missing_file_is_refused(saved: Path, name: str) -> None:
    (saved / name).unlink()
    with pytest.raises(FileNotFoundError, match=name):
        Guard.load(saved)


def test_edited_threshold_with_rewritten_checksum_is_still_refused(saved: Path) -> None:
    config = json.loads((saved / persist.CONFIG).read_text())
    config["threshold"] += 1.0
    persist.write_json(saved / persist.CONFIG, config)
    manifest = json.loads((saved / persist.MANIFEST).read_text())
    manifest["files"][persist.CONFIG] = {
        "sha256": persist.sha256(saved / persist.CONFIG),
        "size": (saved / persist.CONFIG).stat().st_size,
    }
    persist.write_json(saved / persist.MANIFEST, manifest)
    with pytest.raises(GuardFileError, match="threshold disagrees"):
        Guard.load(saved)


# -- atomic writes -------------------------------------------------------------------------------
def _fail_on_manifest(real):
    def write_json(path: Path, obj: object) -> None:
        if path.name == persist.MANIFEST:
            raise OSError("disk full (simulated)")
        real(path, obj)

    return write_json


def test_interrupted_save_leaves_nothing(reps, tmp_path: Path, monkeypatch) -> None:
    guard = fitted_guard("knn", reps)
    monkeypatch.setattr(persist, "write_json", _fail_on_manifest(persist.write_json))
    with pytest.raises(OSError, match="simulated"):
        guard.save(tmp_path / "g")
    assert list(tmp_path.iterdir()) == []  # no target, no temporary sibling
    with pytest.raises(FileNotFoundError):
        Guard.load(tmp_path / "g")


def test_killed_save_leaves_no_loadable_directory(reps, tmp_path: Path, monkeypatch) -> None:
    # A hard kill skips the clean-up: simulate by failing mid-way and keeping the leftovers.
    guard = fitted_guard("knn", reps)
    monkeypatch.setattr(persist, "write_json", _fail_on_manifest(persist.write_json))
    monkeypatch.setattr(shutil, "rmtree", lambda *a, **k: None)  # as a hard kill would
    with pytest.raises(OSError, match="simulated"):
        guard.save(tmp_path / "g")
    assert not (tmp_path / "g").exists()
    leftovers = list(tmp_path.iterdir())
    assert len(leftovers) == 1 and leftovers[0].name.startswith(".g.")
    with pytest.raises(FileNotFoundError, match="MANIFEST.json"):
        Guard.load(leftovers[0])


def test_interrupted_overwrite_keeps_the_old_guard(reps, tmp_path: Path, monkeypatch) -> None:
    old = fitted_guard("knn", reps)
    old.save(tmp_path / "g")
    new = fitted_guard("msp", reps)
    monkeypatch.setattr(persist, "write_json", _fail_on_manifest(persist.write_json))
    with pytest.raises(OSError, match="simulated"):
        new.save(tmp_path / "g", overwrite=True)
    monkeypatch.undo()
    assert Guard.load(tmp_path / "g").detector.name == "knn"
    assert [p.name for p in tmp_path.iterdir()] == ["g"]
    with pytest.raises(FileExistsError, match="overwrite=True"):
        new.save(tmp_path / "g")
    new.save(tmp_path / "g", overwrite=True)
    assert Guard.load(tmp_path / "g").detector.name == "msp"
    assert [p.name for p in tmp_path.iterdir()] == ["g"]


# -- a model from the registry, with preprocessing ------------------------------------------------
def random_digits(n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, size=(28, 28), dtype=np.uint8) for _ in range(n)]


@pytest.fixture(scope="module")
def model_guard() -> Guard:
    torch.manual_seed(0)
    model = models.create("mnist_convnet", num_classes=10)
    guard = Guard(
        detectors.create("knn", k=3), model, model_name="mnist_convnet",
        transform=T.mnist_transform(),
    )
    return guard.fit(random_digits(40, 0)).calibrate(random_digits(39, 1), alpha=0.05)


def test_model_and_preprocessing_round_trip(model_guard: Guard, tmp_path: Path) -> None:
    path = model_guard.save(tmp_path / "g")
    assert (path / persist.MODEL).is_file()
    loaded = Guard.load(path)
    images = random_digits(5, 2)
    before, after = model_guard.predict(images), loaded.predict(images)
    np.testing.assert_array_equal(after.score, before.score)
    np.testing.assert_array_equal(after.label, before.label)
    np.testing.assert_array_equal(after.probability, before.probability)
    assert loaded.transform.describe() == model_guard.transform.describe()
    for k, v in model_guard.model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[k], v)


def test_tampered_model_weights_are_refused(model_guard: Guard, tmp_path: Path) -> None:
    path = model_guard.save(tmp_path / "g")
    data = bytearray((path / persist.MODEL).read_bytes())
    data[-3] ^= 0xFF
    (path / persist.MODEL).write_bytes(bytes(data))
    with pytest.raises(GuardFileError, match=persist.MODEL):
        Guard.load(path)


def test_model_outside_the_registry_is_refused(model_guard: Guard, tmp_path: Path) -> None:
    custom = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    guard = Guard(model_guard.detector, custom, transform=T.mnist_transform())
    guard.alpha, guard.threshold = model_guard.alpha, model_guard.threshold
    guard.calibration_scores = model_guard.calibration_scores
    with pytest.raises(ValueError, match="not a registered unseen.models architecture"):
        guard.save(tmp_path / "a")
    guard.model_name = "mnist_convnet"
    with pytest.raises(ValueError, match="does not match the registered architecture"):
        guard.save(tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_custom_preprocessing_is_refused(model_guard: Guard, tmp_path: Path) -> None:
    guard = Guard(model_guard.detector, model_guard.model, model_name="mnist_convnet",
                  transform=lambda img: img)
    guard.alpha, guard.threshold = model_guard.alpha, model_guard.threshold
    guard.calibration_scores = model_guard.calibration_scores
    with pytest.raises(TypeError, match="cannot save the preprocessing"):
        guard.save(tmp_path / "g")
    assert list(tmp_path.iterdir()) == []


def test_unknown_detector_name_in_config_is_refused(saved: Path) -> None:
    config = json.loads((saved / persist.CONFIG).read_text())
    config["detector"]["name"] = "no_such_detector"
    persist.write_json(saved / persist.CONFIG, config)
    manifest = json.loads((saved / persist.MANIFEST).read_text())
    manifest["files"][persist.CONFIG]["sha256"] = persist.sha256(saved / persist.CONFIG)
    manifest["files"][persist.CONFIG]["size"] = (saved / persist.CONFIG).stat().st_size
    persist.write_json(saved / persist.MANIFEST, manifest)
    with pytest.raises(GuardFileError, match="unknown detector 'no_such_detector'"):
        Guard.load(saved)



@pytest.mark.parametrize(("text", "message"), [("[1, 2]", "manifest"), ("{oops", "not valid JSON")])
def test_garbage_manifest_is_refused(saved: Path, text: str, message: str) -> None:
    (saved / persist.MANIFEST).write_text(text)
    with pytest.raises(GuardFileError, match=message):
        Guard.load(saved)
