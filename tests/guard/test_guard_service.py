"""The HTTP service: the real app through a test client, and once through a uvicorn process."""

from __future__ import annotations

import base64
import io
import json
import math
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from guard_data import make_rep, random_digits
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from unseen import Representation, detectors, models
from unseen.data import transforms as T
from unseen.guard import Guard
from unseen.guard.http import Limits, create_app

LIMITS = Limits(max_body_bytes=64 * 1024, max_batch=8, max_image_side=64, max_image_pixels=4096)




def png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def feature_guard() -> Guard:
    guard = Guard(detectors.create("knn", k=5)).fit(make_rep(300, 0))
    return guard.calibrate(make_rep(120, 1), alpha=0.1)


@pytest.fixture(scope="module")
def image_guard() -> Guard:
    torch.manual_seed(0)
    guard = Guard(
        detectors.create("knn", k=3), models.create("mnist_convnet", num_classes=10),
        model_name="mnist_convnet", transform=T.mnist_transform(),
    )
    return guard.fit(random_digits(40, 0)).calibrate(random_digits(39, 1), alpha=0.05)


@pytest.fixture
def client(feature_guard: Guard) -> TestClient:
    return TestClient(create_app(feature_guard, LIMITS))


@pytest.fixture
def image_client(image_guard: Guard) -> TestClient:
    return TestClient(create_app(image_guard, LIMITS))


# -- happy paths agree with the library -------------------------------------------------------
def test_predict_features_matches_the_library(client: TestClient, feature_guard: Guard) -> None:
    feats = make_rep(5, 7).features.astype(np.float64)
    feats[4] *= -1.0  # opposite direction (knn compares directions): flagged
    r = client.post("/v1/predict-features", json={"features": feats.tolist()})
    assert r.status_code == 200, r.text
    body = r.json()
    expected = feature_guard.predict(Representation(features=feats.astype(np.float32)), record=False)
    assert [x["score"] for x in body["results"]] == expected.score.tolist()
    assert [x["p_value"] for x in body["results"]] == expected.p_value.tolist()
    assert [x["is_ood"] for x in body["results"]] == expected.is_ood.tolist()
    assert [x["label"] for x in body["results"]] == expected.label.tolist()
    assert body["results"][4]["is_ood"] and body["threshold"] == feature_guard.threshold
    # the class and probability come from softmax(features @ W.T + b)
    logits = feats.astype(np.float32) @ feature_guard.head[0].T.astype(np.float64)
    logits += feature_guard.head[1]
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    np.testing.assert_allclose([x["probability"] for x in body["results"]], probs.max(1), rtol=1e-5)


def test_predict_images_multipart_and_base64_match_the_library(
    image_client: TestClient, image_guard: Guard
) -> None:
    imgs = random_digits(3, 5)
    expected = image_guard.predict(imgs, record=False)
    files = [("files", (f"{i}.png", png(a), "image/png")) for i, a in enumerate(imgs)]
    r1 = image_client.post("/v1/predict", files=files)
    r2 = image_client.post(
        "/v1/predict", json={"images": [base64.b64encode(png(a)).decode() for a in imgs]}
    )
    for r in (r1, r2):
        assert r.status_code == 200, r.text
        res = r.json()["results"]
        assert [x["score"] for x in res] == expected.score.tolist()
        assert [x["label"] for x in res] == expected.label.tolist()
        assert [x["is_ood"] for x in res] == expected.is_ood.tolist()


# -- every bad-input class gets its 4xx ----------------------------------------------------------
GOOD_ROW = [1.0] * 6
BAD_FEATURES = [
    ("invalid json", b"{not json", 400, "not valid JSON"),
    ("empty body", b"", 400, "empty request body"),
    ("not utf-8", b"\xff\xfe\x00{", 400, "not valid JSON"),
    ("deep nesting", b"[" * 30_000 + b"]" * 30_000, 400, "not valid JSON"),
    ("not an object", b"[[1, 2]]", 422, "exactly one key"),
    ("wrong key", b'{"feats": [[1]]}', 422, "exactly one key"),
    ("two keys", json.dumps({"features": [GOOD_ROW], "logits": [[1, 2, 3]]}).encode(), 422,
     "exactly one key"),
    ("empty batch", b'{"features": []}', 422, "empty batch"),
    ("not rows", b'{"features": [1, 2, 3]}', 422, "must be a list of numbers"),
    ("ragged", json.dumps({"features": [GOOD_ROW, [1.0]]}).encode(), 422, "differ in length"),
    ("strings", json.dumps({"features": [["1"] * 6]}).encode(), 422, "non-number"),
    ("booleans", json.dumps({"features": [[True] * 6]}).encode(), 422, "non-number"),
    ("NaN", b'{"features": [[NaN, 1, 1, 1, 1, 1]]}', 422, "non-finite"),
    ("Infinity", b'{"features": [[Infinity, 1, 1, 1, 1, 1]]}', 422, "non-finite"),
    ("overflow", b'{"features": [[1e999, 1, 1, 1, 1, 1]]}', 422, "non-finite"),
    ("beyond float32", b'{"features": [[1e300, 1, 1, 1, 1, 1]]}', 422, "float32"),
    ("wrong dimension", json.dumps({"features": [[1.0] * 5]}).encode(), 422, "6 columns"),
    ("empty rows", b'{"features": [[]]}', 422, "rows are empty"),
    ("logits to a feature detector", b'{"logits": [[1, 2, 3]]}', 422, "needs features"),
    ("batch too large", json.dumps({"features": [GOOD_ROW] * 9}).encode(), 413, "limit of 8"),
    ("body too large", b" " * (64 * 1024 + 1), 413, "exceeds the limit"),
]


@pytest.mark.parametrize(("case", "body", "status", "message"), BAD_FEATURES,
                         ids=[c[0] for c in BAD_FEATURES])
def test_bad_feature_requests_get_a_clear_4xx(
    client: TestClient, case: str, body: bytes, status: int, message: str
) -> None:
    r = client.post("/v1/predict-features", content=body,
                    headers={"content-type": "application/json"})
    assert r.status_code == status, (case, r.text)
    assert list(r.json()) == ["error"] and message in r.json()["error"]


def _truncated_png() -> bytes:
    data = png(random_digits(1, 9)[0])
    return data[: len(data) // 2]


BAD_IMAGES = [
    ("undecodable", {"files": [("files", ("a.png", b"not an image", "image/png"))]}, 400,
     "could not be decoded"),
    ("truncated", {"files": [("files", ("a.png", _truncated_png(), "image/png"))]}, 400,
     "could not be decoded"),
    ("empty file", {"files": [("files", ("a.png", b"", "image/png"))]}, 422, "is empty"),
    ("no files", {"content": b'--xx\r\nContent-Disposition: form-data; name="note"\r\n\r\n'
                  b"hello\r\n--xx--\r\n",
                  "headers": {"content-type": "multipart/form-data; boundary=xx"}}, 422,
     "empty batch"),
    ("too wide", {"files": [("files", ("a.png", png(np.zeros((10, 100), np.uint8)),
                                       "image/png"))]}, 413, "per side"),
    ("at the pixel limit", {"files": [("files", ("a.png", png(np.zeros((64, 64), np.uint8)),
                                                 "image/png"))]}, 200, ""),
    ("too many images", {"files": [("files", (f"{i}.png", png(a), "image/png"))
                                   for i, a in enumerate(random_digits(9, 3))]}, 413, "limit of 8"),
    ("bad base64", {"json": {"images": ["###"]}}, 400, "not valid base64"),
    ("base64 of garbage", {"json": {"images": [base64.b64encode(b"xyz").decode()]}}, 400,
     "could not be decoded"),
    ("empty image list", {"json": {"images": []}}, 422, "empty batch"),
    ("images not strings", {"json": {"images": [1, 2]}}, 422, "base64 strings"),
    ("wrong json", {"json": {"pictures": []}}, 422, '{"images"'),
    ("wrong content type", {"content": b"abc", "headers": {"content-type": "text/plain"}}, 415,
     "multipart/form-data"),
    ("broken multipart", {"content": b"--xx\r\nnonsense",
                          "headers": {"content-type": "multipart/form-data; boundary=xx"}}, 422,
     "empty batch"),
]


@pytest.mark.parametrize(("case", "kwargs", "status", "message"), BAD_IMAGES,
                         ids=[c[0] for c in BAD_IMAGES])
def test_bad_image_requests_get_a_clear_4xx(
    image_client: TestClient, case: str, kwargs: dict, status: int, message: str
) -> None:
    r = image_client.post("/v1/predict", **kwargs)
    assert r.status_code == status, (case, r.text)
    if status != 200:
        assert list(r.json()) == ["error"] and message in r.json()["error"]


def test_any_image_mode_is_preprocessed(image_client: TestClient, image_guard: Guard) -> None:
    grey = random_digits(1, 4)[0]
    files = []
    for mode in ("L", "RGBA", "I;16", "P", "1"):
        buf = io.BytesIO()
        Image.fromarray(grey).convert(mode).save(buf, format="PNG")
        files.append(("files", (f"{mode}.png", buf.getvalue(), "image/png")))
    r = image_client.post("/v1/predict", files=files)
    assert r.status_code == 200, r.text
    scores = [x["score"] for x in r.json()["results"]]
    expected = image_guard.predict([grey], record=False).score[0]
    assert scores[0] == pytest.approx(expected, rel=1e-6)  # mode L is the array itself
    assert scores[1] == pytest.approx(expected, rel=1e-6)  # RGBA of a grey image: same luma


def test_image_pixel_limit(image_guard: Guard) -> None:
    strict = TestClient(create_app(image_guard, Limits(max_image_side=64, max_image_pixels=1000)))
    r = strict.post("/v1/predict", files=[("files", ("a.png", png(np.zeros((40, 40), np.uint8)),
                                                     "image/png"))])
    assert r.status_code == 413 and "1000 pixels in all" in r.json()["error"]


def test_images_to_a_guard_without_model_and_unknown_routes(client: TestClient) -> None:
    r = client.post("/v1/predict", json={"images": []})
    assert r.status_code == 400 and "/v1/predict-features" in r.json()["error"]
    assert client.get("/v1/predict-features").status_code == 405
    r = client.get("/nope")
    assert r.status_code == 404 and list(r.json()) == ["error"]


@pytest.mark.slow
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    payload=st.one_of(
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
            lambda inner: st.lists(inner, max_size=4)
            | st.dictionaries(st.sampled_from(["features", "logits", "x"]) | st.text(max_size=3),
                              inner, max_size=3),
            max_leaves=30,
        ),
        st.fixed_dictionaries({
            "features": st.lists(
                st.lists(st.floats() | st.integers(-10**30, 10**30), min_size=0, max_size=7),
                max_size=10,
            )
        }),
    )
)
def test_random_json_never_gets_a_500(client: TestClient, payload: object) -> None:
    r = client.post("/v1/predict-features", content=json.dumps(payload).encode(),
                    headers={"content-type": "application/json"})
    assert r.status_code < 500, r.text
    if r.status_code >= 400:
        assert list(r.json()) == ["error"] and r.json()["error"]
    else:
        assert len(r.json()["results"]) == len(payload["features"])


# -- health, OpenAPI, metrics ---------------------------------------------------------------------
def test_healthz_and_openapi(client: TestClient, feature_guard: Guard) -> None:
    h = client.get("/healthz").json()
    assert h["status"] == "ok" and h["detector"] == "knn" and h["n_calibration"] == 120
    assert h["predict_features_accepts"] == {"features": 6} and h["images"] is False
    spec = client.get("/openapi.json").json()
    assert set(spec["paths"]) >= {"/v1/predict", "/v1/predict-features", "/healthz", "/metrics"}
    content = spec["paths"]["/v1/predict"]["post"]["requestBody"]["content"]
    assert set(content) == {"multipart/form-data", "application/json"}


def test_openapi_is_generated_from_the_pydantic_models(client: TestClient) -> None:
    from unseen.guard.http.schemas import FeaturesRequest, ImagesRequest

    spec = client.get("/openapi.json").json()
    post = spec["paths"]["/v1/predict-features"]["post"]
    schema = post["requestBody"]["content"]["application/json"]["schema"]
    assert schema["title"] == "FeaturesRequest" == FeaturesRequest.__name__
    rows = {"type": "array", "items": {"type": "array", "items": {"type": "number"}}}
    assert schema["properties"]["features"]["anyOf"][0] == rows
    assert set(schema["properties"]) == {"features", "logits"} and not schema["additionalProperties"]
    images = spec["paths"]["/v1/predict"]["post"]["requestBody"]["content"]
    assert images["application/json"]["schema"]["title"] == ImagesRequest.__name__
    assert images["application/json"]["schema"]["required"] == ["images"]
    assert images["multipart/form-data"]["schema"]["properties"]["files"]["items"]["format"] == "binary"
    ok = post["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    assert ok == "#/components/schemas/PredictResponse"
    pred = spec["components"]["schemas"]["Prediction"]["properties"]
    assert set(pred) == {"label", "probability", "score", "p_value", "is_ood"}
    for status in ("400", "408", "413", "415", "422", "503"):
        ref = post["responses"][status]["content"]["application/json"]["schema"]["$ref"]
        assert ref == "#/components/schemas/ErrorResponse"


def test_each_app_has_its_own_metrics_registry(feature_guard: Guard) -> None:
    a, b = TestClient(create_app(feature_guard, LIMITS)), TestClient(create_app(feature_guard, LIMITS))
    for _ in range(3):
        a.post("/v1/predict-features", json={"features": []})
    b.post("/v1/predict-features", json={"features": [[1.0] * 6]})

    def counts(c: TestClient) -> dict[tuple[str, str], float]:
        fam = parse_prometheus(c.get("/metrics").text)
        return {(s[1]["endpoint"], s[1]["code"]): s[2] for s in fam["unseen_http_requests_total"]}

    assert counts(a) == {("/v1/predict-features", "422"): 3}
    assert counts(b) == {("/v1/predict-features", "200"): 1}


SAMPLE = re.compile(
    r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)'
    r'(?:\{(?P<labels>[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
    r'(?:,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*")*)\})?'
    r' (?P<value>[-+]?(?:\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|Inf)|NaN)$'
)
META = re.compile(r"^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.+)$")


def parse_prometheus(text: str) -> dict[str, list[tuple[str, dict[str, str], float]]]:
    """A strict reader of the text exposition format 0.0.4: family -> samples."""
    assert text.endswith("\n")
    families: dict[str, str] = {}
    samples: dict[str, list[tuple[str, dict[str, str], float]]] = {}
    for line in text.splitlines():
        meta = META.match(line)
        if meta:
            kind, name, rest = meta.groups()
            if kind == "TYPE":
                assert rest in {"counter", "gauge", "histogram", "summary", "untyped"}, line
                assert name not in families, f"duplicate TYPE for {name}"
                families[name] = rest
                samples[name] = []
            continue
        m = SAMPLE.match(line)
        assert m, f"not a valid sample line: {line!r}"
        name = m["name"]
        family = next((f for f in families if name == f or (
            families[f] == "histogram" and name in (f + "_bucket", f + "_sum", f + "_count"))),
            None)
        assert family is not None, f"sample {name} before/without its TYPE line"
        labels = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m["labels"] or ""))
        samples[family].append((name, labels, float(m["value"])))
    return samples


def test_metrics_are_valid_prometheus_text_with_the_right_counts(
    client: TestClient, feature_guard: Guard
) -> None:
    feats = make_rep(7, 8).features.astype(np.float64)
    feats[:2] *= -1.0
    flagged = 0
    for batch in (feats[:3], feats[3:]):
        r = client.post("/v1/predict-features", json={"features": batch.tolist()})
        flagged += sum(x["is_ood"] for x in r.json()["results"])
    client.post("/v1/predict-features", json={"features": []})  # a 422
    r = client.get("/metrics")
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    fam = parse_prometheus(r.text)
    req = {(s[1]["endpoint"], s[1]["code"]): s[2] for s in fam["unseen_http_requests_total"]}
    assert req[("/v1/predict-features", "200")] == 2 and req[("/v1/predict-features", "422")] == 1
    assert fam["unseen_inputs_total"][0][2] == 7 + feature_guard.monitor.total_seen - 7
    assert fam["unseen_inputs_flagged_total"][0][2] == feature_guard.monitor.total_flagged
    assert flagged >= 2
    hist = [s for s in fam["unseen_http_request_duration_seconds"]
            if s[1].get("endpoint") == "/v1/predict-features"]
    buckets = [s for s in hist if s[0].endswith("_bucket")]
    counts = [s[2] for s in buckets]
    assert counts == sorted(counts) and buckets[-1][1]["le"] == "+Inf" and counts[-1] == 3
    assert next(s[2] for s in hist if s[0].endswith("_count")) == 3
    est = feature_guard.monitor.estimate()
    assert fam["unseen_flag_rate"][0][2] == pytest.approx(est.flag_rate)
    assert fam["unseen_alpha"][0][2] == 0.1
    assert math.isnan(fam["unseen_ood_fraction"][0][2])  # no TPR estimate in this guard


def test_prometheus_parser_rejects_malformed_lines() -> None:
    for bad in ("# TYPE x counter\nx{a=1} 3\n", "# TYPE x counter\nx 3 4 5\n", "y 1\n",
                "# TYPE x counter\nx{a=\"1\"} one\n"):
        with pytest.raises(AssertionError):
            parse_prometheus(bad)


# -- a real uvicorn process on 127.0.0.1 ---------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_real_uvicorn_process(feature_guard: Guard, tmp_path: Path) -> None:
    guard_dir = feature_guard.save(tmp_path / "guard")
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "unseen", "serve", str(guard_dir), "--port", str(port),
         "--log-level", "warning", "--max-batch", "8", "--window", "3"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, proc.stdout.read().decode()
            try:
                if httpx.get(base + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not start within 90 s"
            time.sleep(0.2)
        feats = make_rep(4, 11).features
        r = httpx.post(base + "/v1/predict-features", json={"features": feats.tolist()}, timeout=30)
        assert r.status_code == 200
        expected = feature_guard.predict(Representation(features=feats), record=False)
        assert [x["score"] for x in r.json()["results"]] == expected.score.tolist()
        r = httpx.post(base + "/v1/predict-features", content=b"{", timeout=30,
                       headers={"content-type": "application/json"})
        assert r.status_code == 400
        fam = parse_prometheus(httpx.get(base + "/metrics", timeout=30).text)
        # prometheus_client writes samples as floats ("4.0")
        assert fam["unseen_inputs_total"][0][2] == 4 and fam["unseen_window_inputs"][0][2] == 3
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
