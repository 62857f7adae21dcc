"""Issue #11 against the HTTP service: each defect reproduced (these tests fail on 1c47978), then
held. Servers run on 127.0.0.1 only; every wait is bounded in count and time."""

from __future__ import annotations

import io
import json
import logging
import struct
import threading
import time
import zlib
from functools import cache

import httpx
import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from guard_data import make_rep, random_digits
from hypothesis import given, settings
from hypothesis import strategies as st
from live_server import live_server, raw_request, read_status
from PIL import Image, ImageFile
from test_guard_service import parse_prometheus

from unseen import detectors, models
from unseen.data import transforms as T
from unseen.guard import Guard
from unseen.guard.http import Limits, create_app

SMALL = dict(max_body_bytes=64 * 1024, max_batch=8, max_image_side=64, max_image_pixels=4096)


@cache
def feature_guard(name: str = "knn") -> Guard:
    det = detectors.create(name, k=5) if name == "knn" else detectors.create(name)
    return Guard(det).fit(make_rep(300, 0)).calibrate(make_rep(120, 1), alpha=0.1)


@cache
def image_guard() -> Guard:
    torch.manual_seed(0)
    guard = Guard(
        detectors.create("knn", k=3), models.create("mnist_convnet", num_classes=10),
        model_name="mnist_convnet", transform=T.mnist_transform(),
    )
    return guard.fit(random_digits(40, 0)).calibrate(random_digits(39, 1), alpha=0.05)


def png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def png_header_claiming(width: int, height: int) -> bytes:
    """A 1x1 grey PNG whose IHDR claims ``width`` x ``height`` (CRC recomputed): a header-only bomb."""
    data = bytearray(png(np.zeros((1, 1), np.uint8)))
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def files(*blobs: bytes, names: list[str] | None = None) -> list:
    names = names or [f"{i}.png" for i in range(len(blobs))]
    return [("files", (n, b, "image/png")) for n, b in zip(names, blobs, strict=True)]


def features_body(n: int, dim: int = 6, value: float = 1.2345678901234567) -> bytes:
    return json.dumps({"features": [[value] * dim] * n}).encode()


@pytest.fixture
def slow_decode(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """Every image decode sleeps 1 s (blocking, as a big decode does); the event says one began."""
    started = threading.Event()
    original = ImageFile.ImageFile.load

    def load(self: ImageFile.ImageFile):  # type: ignore[no-untyped-def]
        started.set()
        time.sleep(1.0)
        return original(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)
    return started


def _post_in_thread(url: str, **kwargs: object) -> tuple[threading.Thread, list[httpx.Response]]:
    out: list[httpx.Response] = []
    thread = threading.Thread(target=lambda: out.append(httpx.post(url, timeout=30, **kwargs)))
    thread.start()
    return thread, out


def _healthz_seconds(base: str) -> float:
    t0 = time.perf_counter()
    r = httpx.get(base + "/healthz", timeout=10)
    assert r.status_code == 200
    return time.perf_counter() - t0


# -- defect 1: bounded memory per request, decoding off the loop, bounded in-flight ---------------
def test_request_pixel_budget_is_checked_from_headers_before_any_decoding(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    decodes: list[int] = []
    original = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: decodes.append(1) or original(self))
    client = TestClient(create_app(image_guard(), Limits(**SMALL, max_request_pixels=5000)))
    img = png(np.full((48, 48), 7, np.uint8))  # 2,304 pixels: within every per-image limit
    truncated = img[: len(img) // 2]  # header intact, pixels undecodable
    r = client.post("/v1/predict", files=files(truncated, truncated, truncated))
    assert r.status_code == 413, r.text
    assert "6912 pixels in all" in r.json()["error"] and "budget of 5000" in r.json()["error"]
    assert decodes == []  # refused from the headers alone
    r = client.post("/v1/predict", files=files(img, img))  # 4,608 pixels: within the budget
    assert r.status_code == 200, r.text
    assert len(decodes) >= 2  # the counter does see decodes (the transform calls load() again)


def test_decoding_runs_off_the_event_loop(slow_decode: threading.Event) -> None:
    with live_server(create_app(image_guard(), Limits(**SMALL))) as (base, _):
        thread, out = _post_in_thread(base + "/v1/predict", files=files(png(random_digits(1, 2)[0])))
        assert slow_decode.wait(10), "the decode never started"
        health = _healthz_seconds(base)
        thread.join(30)
    assert out and out[0].status_code == 200, out
    assert health < 0.5, f"/healthz took {health:.2f} s while an image was decoding"


def test_json_parsing_runs_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    started = threading.Event()
    original = json.loads

    def slow_loads(s, *args, **kwargs):  # type: ignore[no-untyped-def]
        if len(s) > 300:  # the request body, not small replies
            started.set()
            time.sleep(1.0)
        return original(s, *args, **kwargs)

    monkeypatch.setattr(json, "loads", slow_loads)
    with live_server(create_app(feature_guard(), Limits(**SMALL))) as (base, _):
        thread, out = _post_in_thread(base + "/v1/predict-features", content=features_body(8),
                                      headers={"content-type": "application/json"})
        assert started.wait(10), "the parse never started"
        health = _healthz_seconds(base)
        thread.join(30)
    assert out and out[0].status_code == 200, out
    assert health < 0.5, f"/healthz took {health:.2f} s while a JSON body was parsed"


def test_beyond_max_in_flight_the_answer_is_503_with_retry_after(slow_decode: threading.Event) -> None:
    limits = Limits(**SMALL, max_in_flight=1, retry_after_s=3)
    with live_server(create_app(image_guard(), limits)) as (base, _):
        body = files(png(random_digits(1, 2)[0]))
        thread, out = _post_in_thread(base + "/v1/predict", files=body)
        assert slow_decode.wait(10)
        busy = httpx.post(base + "/v1/predict", files=body, timeout=10)
        health = _healthz_seconds(base)  # health checks are not admission-controlled
        thread.join(30)
        after = httpx.post(base + "/v1/predict", files=body, timeout=30)
        metrics = parse_prometheus(httpx.get(base + "/metrics", timeout=10).text)
    assert busy.status_code == 503 and busy.headers["retry-after"] == "3", busy.text
    assert "busy" in busy.json()["error"] and health < 0.5
    assert out[0].status_code == 200 and after.status_code == 200
    codes = {s[1]["code"]: s[2] for s in metrics["unseen_http_requests_total"]
             if s[1]["endpoint"] == "/v1/predict"}
    assert codes == {"200": 2, "503": 1}
    assert metrics["unseen_http_in_flight_requests"][0][2] == 0


def test_the_servers_body_byte_budget_answers_503() -> None:
    client = TestClient(create_app(feature_guard(), Limits(**SMALL, max_buffered_bytes=500)))
    r = client.post("/v1/predict-features", content=features_body(8),
                    headers={"content-type": "application/json"})
    assert r.status_code == 503 and r.headers["retry-after"] == "1", r.text
    r = client.post("/v1/predict-features", content=features_body(1),  # 1 row: 128 bytes
                    headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text


# -- defect 2: finite but huge features ---------------------------------------------------------
@pytest.mark.parametrize("name", ["knn", "msp"])
@pytest.mark.parametrize("value", [3e38, -3e38])
def test_finite_but_huge_features_get_422_not_500(name: str, value: float) -> None:
    client = TestClient(create_app(feature_guard(name), Limits(**SMALL)))
    r = client.post("/v1/predict-features", json={"features": [[value] * 6]})
    assert r.status_code == 422, r.text
    assert "overflow float32" in r.json()["error"] and "features" in r.json()["error"]


NUMBER = (st.floats(allow_nan=False, allow_infinity=False)
          | st.sampled_from([3e38, -3e38, 3.4028234e38, 1e-45, -0.0, 1e19])
          | st.integers(-(10**40), 10**40))
JSON_BODY = st.one_of(
    st.fixed_dictionaries({"features": st.lists(st.lists(NUMBER, min_size=5, max_size=7),
                                                min_size=1, max_size=9)}),
    st.fixed_dictionaries({"logits": st.lists(st.lists(NUMBER, min_size=2, max_size=4), max_size=3)}),
    st.dictionaries(st.sampled_from(["features", "logits", "images"]),
                    st.recursive(NUMBER | st.text(max_size=3) | st.none(),
                                 lambda inner: st.lists(inner, max_size=7), max_leaves=20),
                    max_size=2),
)


@pytest.mark.parametrize("name", ["knn", "msp"])
@settings(max_examples=60, deadline=None)
@given(payload=JSON_BODY)
def test_no_json_body_gets_a_500(name: str, payload: dict) -> None:
    client = TestClient(create_app(feature_guard(name), Limits(**SMALL)))
    r = client.post("/v1/predict-features", content=json.dumps(payload).encode(),
                    headers={"content-type": "application/json"})
    assert r.status_code < 500, r.text
    if r.status_code == 200:
        results = r.json()["results"]
        assert len(results) == len(payload.get("features") or payload["logits"])
        assert all(np.isfinite([x["score"], x["p_value"]]).all() for x in results)
    else:
        assert list(r.json()) == ["error"] and r.json()["error"]


# -- defect 3: big JSON bodies --------------------------------------------------------------------
def test_feature_bodies_are_capped_far_below_the_image_route() -> None:
    limits = Limits(max_batch=8)  # the image route keeps 16 MiB
    cap = limits.features_body_bytes(6)
    assert cap == 8 * 6 * 48 + 64 * 1024 and cap < limits.max_body_bytes // 200
    assert len(features_body(8)) < cap  # a full batch always fits
    client = TestClient(create_app(feature_guard(), limits))
    r = client.post("/v1/predict-features", content=features_body(20_000),
                    headers={"content-type": "application/json"})
    assert r.status_code == 413 and f"limit of {cap}" in r.json()["error"], r.text


def test_a_chunked_feature_body_is_refused_while_streaming() -> None:
    limits = Limits(max_batch=8)
    cap = limits.features_body_bytes(6)
    with live_server(create_app(feature_guard(), limits)) as (_, port):
        head = ("POST /v1/predict-features HTTP/1.1\nHost: x\nContent-Type: application/json\n"
                "Transfer-Encoding: chunked\n")
        chunk = b"[" * 10_000
        body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(10))  # no final chunk
        t0 = time.perf_counter()
        with raw_request(port, head, body) as sock:
            status = read_status(sock)
        seconds = time.perf_counter() - t0
    assert status == 413 and seconds < 3 and 10 * len(chunk) > cap


# -- also fix: disconnects, stalled bodies, bombs, messages, content type, flat lists -------------
def _metrics(base: str) -> dict:
    return parse_prometheus(httpx.get(base + "/metrics", timeout=10).text)


def _disconnect_three_times(caplog: pytest.LogCaptureFixture) -> tuple[list[float], dict]:
    with live_server(create_app(feature_guard(), Limits(**SMALL))) as (base, port):
        # uvicorn's loggers do not reach the root, and its startup reconfigures them: attach now
        logging.getLogger("uvicorn.error").addHandler(caplog.handler)
        head = ("POST /v1/predict-features HTTP/1.1\nHost: x\nContent-Type: application/json\n"
                "Content-Length: 1000\n")
        for _ in range(3):
            raw_request(port, head, b'{"features": [[1').close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            fam = _metrics(base)
            gone = [s[2] for s in fam.get("unseen_http_client_disconnects_total", [])
                    if s[1].get("endpoint") == "/v1/predict-features"]
            if gone == [3]:
                break
            time.sleep(0.05)
    return gone, fam


def test_client_disconnects_are_counted_apart_and_not_as_500(caplog: pytest.LogCaptureFixture) -> None:
    try:
        gone, fam = _disconnect_three_times(caplog)
    finally:
        logging.getLogger("uvicorn.error").removeHandler(caplog.handler)
    assert not [r for r in caplog.records if r.levelname == "ERROR"], caplog.text
    assert not [s for s in fam["unseen_http_requests_total"] if s[1]["code"] == "500"]
    assert gone == [3]


def test_stalled_bodies_get_408_within_the_body_timeout_and_hold_no_work_slot() -> None:
    # 8 stalled uploads each declaring 60 KB, against 2 work slots and a 20 KB byte budget
    limits = Limits(**SMALL, body_timeout_s=1.0, max_in_flight=2, max_buffered_bytes=20_000)
    with live_server(create_app(feature_guard(), limits)) as (base, port):
        head = ("POST /v1/predict-features HTTP/1.1\nHost: x\nContent-Type: application/json\n"
                "Content-Length: 60000\n")
        t0 = time.perf_counter()
        socks = [raw_request(port, head, b'{"features": ') for _ in range(8)]
        health = _healthz_seconds(base)
        normal = httpx.post(base + "/v1/predict-features", content=features_body(2), timeout=10,
                            headers={"content-type": "application/json"})
        assert normal.status_code == 200, normal.text  # served while the 8 stall
        statuses = [read_status(s) for s in socks]
        seconds = time.perf_counter() - t0
        for s in socks:
            s.close()
        codes = {s[1]["code"]: s[2] for s in _metrics(base)["unseen_http_requests_total"]
                 if s[1]["endpoint"] == "/v1/predict-features"}
    assert statuses == [408] * 8 and seconds < 4 and health < 0.5
    assert codes == {"408": 8, "200": 1}


def test_an_image_bomb_gets_413_as_the_readme_promises() -> None:
    client = TestClient(create_app(image_guard(), Limits(**SMALL)))
    r = client.post("/v1/predict", files=files(png_header_claiming(20_000, 10_000)))  # 200 Mpx
    assert r.status_code == 413, r.text
    assert "decompression bomb" in r.json()["error"] and "4096 pixels per image" in r.json()["error"]
    r = client.post("/v1/predict", files=files(png_header_claiming(5000, 5000)))  # within Pillow's
    assert r.status_code == 413 and "5000x5000" in r.json()["error"]


def test_decode_errors_name_the_upload_not_a_python_object() -> None:
    client = TestClient(create_app(image_guard(), Limits(**SMALL)))
    good = png(random_digits(1, 3)[0])
    r = client.post("/v1/predict", files=files(good, b"not an image", names=["ok.png", "cat.png"]))
    assert r.status_code == 400
    msg = r.json()["error"]
    assert "image 1 ('cat.png') could not be decoded" in msg and "BytesIO" not in msg and "0x" not in msg
    r = client.post("/v1/predict", json={"images": ["bm90IGFuIGltYWdl"]})  # base64 of garbage
    assert r.status_code == 400 and r.json()["error"].startswith("images[0] could not be decoded")


@pytest.mark.parametrize("ctype", ["text/plain", "application/x-www-form-urlencoded", None])
def test_predict_features_requires_application_json(ctype: str | None) -> None:
    client = TestClient(create_app(feature_guard(), Limits(**SMALL)))
    headers = {"content-type": ctype} if ctype else {}
    r = client.post("/v1/predict-features", content=features_body(1), headers=headers)
    assert r.status_code == 415 and "application/json" in r.json()["error"], r.text
    r = client.post("/v1/predict-features", content=features_body(1),
                    headers={"content-type": "application/json; charset=utf-8"})
    assert r.status_code == 200, r.text


def test_a_flat_list_is_told_to_send_rows_not_a_batch_size() -> None:
    client = TestClient(create_app(feature_guard(), Limits(**SMALL)))
    r = client.post("/v1/predict-features", json={"features": [0.5] * 128})
    assert r.status_code == 422, r.text
    assert "must be a list of rows" in r.json()["error"] and "batch" not in r.json()["error"]
