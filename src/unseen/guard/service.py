"""HTTP service for a saved guard (FastAPI; run with uvicorn, by default on 127.0.0.1 only).

Endpoints:

* ``POST /v1/predict``: images, as multipart file fields (any field name, e.g. ``files``) or
  JSON ``{"images": ["<base64>", ...]}`` (a ``data:image/...;base64,`` prefix is accepted).
  Needs a guard with a model and a preprocessing transform.
* ``POST /v1/predict-features``: JSON ``{"features": [[...], ...]}`` (penultimate feature
  vectors, for any detector fitted on features, or on logits when the guard holds the classifier
  head) or ``{"logits": [[...], ...]}`` (only for detectors that read logits alone). ``GET
  /healthz`` says which of the two this guard takes and how many columns.
* ``GET /healthz``, ``GET /metrics`` (Prometheus text format 0.0.4), ``GET /openapi.json``.

Both predict endpoints answer ``{"results": [{"label", "probability", "score", "p_value",
"is_ood"}, ...], "alpha", "threshold"}``. Bad input gets a 4xx ``{"error": "..."}``: 400
malformed (JSON, base64, undecodable image), 413 too large (body, batch, image), 415 wrong
content type, 422 well-formed but unusable (empty batch, wrong shape, NaN, wrong dimension).
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import math
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from PIL import Image
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

import unseen
from unseen.guard.core import Guard, GuardInputError
from unseen.representation import RepresentationError

ENDPOINTS = ("/v1/predict", "/v1/predict-features", "/healthz", "/metrics", "/openapi.json")
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(frozen=True)
class Limits:
    """Request limits; anything beyond them is refused with 413."""

    max_body_bytes: int = 16 * 1024 * 1024
    max_batch: int = 64
    max_image_side: int = 4096
    max_image_pixels: int = 16_777_216

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_batch", "max_image_side", "max_image_pixels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Limits.{name} must be a positive integer, got {value!r}")


class RequestError(Exception):
    """A client error: answered with ``status`` and ``{"error": message}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _NonFinite(ValueError):
    pass


# -- metrics ---------------------------------------------------------------------------------
class Metrics:
    """Request counters and latency histograms, rendered in the Prometheus text format."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, int], int] = defaultdict(int)
        self._buckets: dict[str, list[int]] = {}
        self._sum: dict[str, float] = defaultdict(float)
        self._count: dict[str, int] = defaultdict(int)

    def observe(self, endpoint: str, status: int, seconds: float) -> None:
        with self._lock:
            self._requests[(endpoint, status)] += 1
            counts = self._buckets.setdefault(endpoint, [0] * len(LATENCY_BUCKETS))
            for i, bound in enumerate(LATENCY_BUCKETS):
                if seconds <= bound:
                    counts[i] += 1
            self._sum[endpoint] += seconds
            self._count[endpoint] += 1

    def render(self, guard: Guard) -> str:
        out: list[str] = []

        def family(name: str, kind: str, help_: str, samples: list[tuple[dict[str, str], Any]]):
            out.append(f"# HELP {name} {help_}")
            out.append(f"# TYPE {name} {kind}")
            for labels, value in samples:
                out.append(f"{name}{_labels(labels)} {_number(value)}")

        with self._lock:
            requests = sorted(self._requests.items())
            hist = {k: (list(v), self._sum[k], self._count[k]) for k, v in self._buckets.items()}
        family(
            "unseen_http_requests_total", "counter", "HTTP requests by endpoint and status code.",
            [({"endpoint": e, "code": str(c)}, n) for (e, c), n in requests],
        )
        out.append("# HELP unseen_http_request_duration_seconds Request latency in seconds.")
        out.append("# TYPE unseen_http_request_duration_seconds histogram")
        for endpoint, (counts, total, count) in sorted(hist.items()):
            base = "unseen_http_request_duration_seconds"
            for bound, c in zip(LATENCY_BUCKETS, counts, strict=True):
                out.append(f"{base}_bucket{_labels({'endpoint': endpoint, 'le': _number(bound)})} {c}")
            out.append(f"{base}_bucket{_labels({'endpoint': endpoint, 'le': '+Inf'})} {count}")
            out.append(f"{base}_sum{_labels({'endpoint': endpoint})} {_number(total)}")
            out.append(f"{base}_count{_labels({'endpoint': endpoint})} {count}")
        mon = guard.monitor
        est = mon.estimate()
        family("unseen_inputs_total", "counter", "Inputs scored.", [({}, mon.total_seen)])
        family("unseen_inputs_flagged_total", "counter", "Inputs flagged as OOD.",
               [({}, mon.total_flagged)])
        gauges = [
            ("unseen_alpha", "Nominal false-alarm level of the guard.", est.alpha),
            ("unseen_threshold", "Score threshold (flag when score > threshold).", guard.threshold),
            ("unseen_window_inputs", "Inputs in the monitoring window.", est.n),
            ("unseen_flag_rate", "Fraction flagged in the monitoring window.", est.flag_rate),
            ("unseen_flag_rate_ci_low", "Clopper-Pearson lower bound of the flag rate.",
             None if est.flag_rate_ci is None else est.flag_rate_ci[0]),
            ("unseen_flag_rate_ci_high", "Clopper-Pearson upper bound of the flag rate.",
             None if est.flag_rate_ci is None else est.flag_rate_ci[1]),
            ("unseen_ood_fraction", "Estimated OOD fraction, clipped to [0, 1] (NaN without TPR).",
             est.ood_fraction),
            ("unseen_ood_fraction_raw", "Unclipped OOD fraction estimate.", est.ood_fraction_raw),
            ("unseen_ood_fraction_clipped", "1 when the OOD fraction estimate was clipped.",
             int(est.ood_fraction_clipped)),
            ("unseen_flag_rate_alarm", "1 when the flag rate is significantly above alpha.",
             int(est.alarm)),
            ("unseen_flag_rate_alarm_p_value", "One-sided exact binomial p-value of the alarm test.",
             est.alarm_p_value),
        ]
        for name, help_, value in gauges:
            family(name, "gauge", help_, [({}, value)])
        return "\n".join(out) + "\n"


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    esc = {k: v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") for k, v in labels.items()}
    return "{" + ",".join(f'{k}="{v}"' for k, v in esc.items()) + "}"


def _number(value: Any) -> str:
    if value is None:
        return "NaN"
    if isinstance(value, bool | int | np.integer):
        return str(int(value))
    value = float(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


class _Record:
    """Pure ASGI middleware that times every HTTP request and counts its status code."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        path = scope.get("path", "")
        status = 500  # what the client sees when the app raises before responding

        async def send_and_watch(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_watch)
        finally:
            endpoint = path if path in ENDPOINTS else "other"
            self.metrics.observe(endpoint, status, time.perf_counter() - start)


# -- request parsing -------------------------------------------------------------------------
async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise RequestError(400, f"invalid Content-Length header {declared!r}")
        if int(declared) > limit:
            raise RequestError(413, f"request body of {declared} bytes exceeds the limit of {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(413, f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _reject_constant(token: str) -> Any:
    raise _NonFinite(token)


def _parse_json(body: bytes) -> Any:
    if not body:
        raise RequestError(400, "empty request body; send a JSON object")
    try:
        return json.loads(body, parse_constant=_reject_constant)
    except _NonFinite as exc:
        raise RequestError(422, f"non-finite number {exc} in the JSON body") from None
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError
        raise RequestError(400, f"the body is not valid JSON: {exc}") from None


def _matrix(value: Any, key: str, limits: Limits) -> np.ndarray:
    if not isinstance(value, list):
        raise RequestError(422, f'"{key}" must be a list of rows (lists of numbers)')
    if not value:
        raise RequestError(422, f'"{key}" is an empty batch; send at least one row')
    if len(value) > limits.max_batch:
        raise RequestError(413, f"batch of {len(value)} exceeds the limit of {limits.max_batch}")
    width = None
    for i, row in enumerate(value):
        if not isinstance(row, list):
            raise RequestError(422, f'"{key}"[{i}] must be a list of numbers')
        if width is None:
            width = len(row)
        if len(row) != width:
            raise RequestError(422, f'"{key}" rows differ in length ({width} vs {len(row)} at {i})')
        for x in row:
            if isinstance(x, bool) or not isinstance(x, int | float):
                raise RequestError(422, f'"{key}"[{i}] contains a non-number: {x!r:.40}')
    if width == 0:
        raise RequestError(422, f'"{key}" rows are empty')
    try:
        arr = np.asarray(value, dtype=np.float64)
    except OverflowError:
        raise RequestError(422, f'"{key}" contains a number too large for float64') from None
    if not np.isfinite(arr).all():
        raise RequestError(422, f'"{key}" contains non-finite values (NaN or infinity)')
    if np.abs(arr).max() > np.finfo(np.float32).max:
        raise RequestError(422, f'"{key}" contains values beyond the float32 range')
    return arr


def _b64_images(payload: Any, limits: Limits) -> list[bytes]:
    if not isinstance(payload, dict) or set(payload) != {"images"}:
        raise RequestError(422, 'JSON body must be an object {"images": ["<base64>", ...]}')
    images = payload["images"]
    if not isinstance(images, list) or not all(isinstance(s, str) for s in images):
        raise RequestError(422, '"images" must be a list of base64 strings')
    _check_batch(len(images), limits)
    out = []
    for i, s in enumerate(images):
        if s.startswith("data:") and "," in s:
            s = s.split(",", 1)[1]
        try:
            out.append(base64.b64decode(s, validate=True))
        except (binascii.Error, ValueError):
            raise RequestError(400, f"images[{i}] is not valid base64") from None
    return out


def _check_batch(n: int, limits: Limits) -> None:
    if n == 0:
        raise RequestError(422, "empty batch: send at least one image")
    if n > limits.max_batch:
        raise RequestError(413, f"batch of {n} exceeds the limit of {limits.max_batch}")


async def _multipart_images(request: Request, body: bytes, limits: Limits) -> list[bytes]:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, receive).form(
            max_files=limits.max_batch + 1, max_fields=limits.max_batch + 16
        )
    except StarletteHTTPException as exc:
        status = 413 if "Too many" in str(exc.detail) else 400
        raise RequestError(status, f"invalid multipart body: {exc.detail}") from None
    try:
        files = [v for _, v in form.multi_items() if not isinstance(v, str)]
        _check_batch(len(files), limits)
        return [await f.read() for f in files]
    finally:
        await form.close()


def _decode_image(data: bytes, i: int, limits: Limits) -> Image.Image:
    if not data:
        raise RequestError(422, f"image {i} is empty")
    try:
        img = Image.open(io.BytesIO(data))
    except Exception as exc:  # any decoder failure means the bytes are not a usable image
        raise RequestError(400, f"image {i} could not be decoded: {exc}") from None
    w, h = img.size
    if max(w, h) > limits.max_image_side or w * h > limits.max_image_pixels:
        raise RequestError(
            413,
            f"image {i} is {w}x{h}; the limits are {limits.max_image_side} pixels per side and "
            f"{limits.max_image_pixels} pixels in all",
        )
    try:
        img.load()
    except Exception as exc:
        raise RequestError(400, f"image {i} could not be decoded: {exc}") from None
    return img


# -- the app ---------------------------------------------------------------------------------
_PREDICT_OPENAPI = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "files": {"type": "array", "items": {"type": "string", "format": "binary"}}
                    },
                }
            },
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["images"],
                    "properties": {
                        "images": {"type": "array", "items": {"type": "string", "format": "byte"}}
                    },
                }
            },
        },
    }
}
_FEATURES_OPENAPI = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        key: {
                            "type": "array",
                            "items": {"type": "array", "items": {"type": "number"}},
                        }
                        for key in ("features", "logits")
                    },
                    "description": "exactly one of features or logits",
                }
            }
        },
    }
}


def create_app(guard: Guard, limits: Limits | None = None) -> FastAPI:
    """The FastAPI application serving ``guard`` (calibrated) under ``limits``."""
    if guard.threshold is None:
        raise ValueError("the guard is not calibrated: call guard.calibrate(...) first")
    limits = limits or Limits()
    metrics = Metrics()
    app = FastAPI(
        title="unseen guard",
        version=unseen.__version__,
        description="Conformal out-of-distribution guard: per-input p-values and OOD flags.",
    )
    app.state.guard, app.state.limits, app.state.metrics = guard, limits, metrics

    app.add_middleware(_Record, metrics=metrics)

    @app.exception_handler(RequestError)
    async def request_error(_: Request, exc: RequestError) -> JSONResponse:
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": f"invalid request: {exc.errors()}"}, status_code=422)

    @app.exception_handler(Exception)
    async def internal_error(_: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"error": f"internal error: {type(exc).__name__}"}, status_code=500)

    def run(inputs: Any) -> dict[str, Any]:
        try:
            preds = guard.predict(inputs)
        except (GuardInputError, RepresentationError) as exc:
            raise RequestError(422, str(exc)) from None
        return {"results": preds.records(), "alpha": guard.alpha, "threshold": guard.threshold}

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        accepts = {}
        for kind in ("features", "logits"):
            try:
                accepts[kind] = guard.input_dim(kind)
            except GuardInputError:
                pass
        return {
            "status": "ok",
            "detector": guard.detector.name,
            "alpha": guard.alpha,
            "n_calibration": int(guard.calibration_scores.shape[0]),
            "images": guard.model is not None and guard.transform is not None,
            "predict_features_accepts": accepts,
            "version": unseen.__version__,
        }

    @app.get("/metrics", response_class=PlainTextResponse)
    def prometheus() -> PlainTextResponse:
        return PlainTextResponse(
            metrics.render(guard), media_type="text/plain; version=0.0.4; charset=utf-8"
        )

    @app.post("/v1/predict-features", openapi_extra=_FEATURES_OPENAPI)
    async def predict_features(request: Request) -> dict[str, Any]:
        body = await _read_body(request, limits.max_body_bytes)
        payload = _parse_json(body)
        keys = set(payload) & {"features", "logits"} if isinstance(payload, dict) else set()
        if not isinstance(payload, dict) or len(keys) != 1 or len(payload) != 1:
            raise RequestError(
                422, 'JSON body must be an object with exactly one key, "features" or "logits"'
            )
        key = keys.pop()
        arr = _matrix(payload[key], key, limits)
        try:
            rep = guard.from_arrays(**{key: arr})
        except GuardInputError as exc:
            raise RequestError(422, str(exc)) from None
        return await run_in_threadpool(run, rep)

    @app.post("/v1/predict", openapi_extra=_PREDICT_OPENAPI)
    async def predict(request: Request) -> dict[str, Any]:
        if guard.model is None or guard.transform is None:
            raise RequestError(
                400, "this guard has no model and preprocessing; use /v1/predict-features"
            )
        body = await _read_body(request, limits.max_body_bytes)
        ctype = request.headers.get("content-type", "").lower()
        if ctype.startswith("multipart/form-data"):
            raw = await _multipart_images(request, body, limits)
        elif ctype.startswith("application/json"):
            raw = _b64_images(_parse_json(body), limits)
        else:
            raise RequestError(
                415, "send images as multipart/form-data files or JSON {\"images\": [base64...]}"
            )
        images = [_decode_image(data, i, limits) for i, data in enumerate(raw)]
        return await run_in_threadpool(run, images)

    return app


def serve(
    guard_dir: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    limits: Limits | None = None,
    monitor: dict[str, Any] | None = None,
    log_level: str = "info",
) -> None:
    """Load the guard in ``guard_dir`` and serve it with uvicorn (blocks).

    ``monitor``: settings for :meth:`Guard.set_monitor` (window, level, confidence) that
    override those saved with the guard.
    """
    import uvicorn

    guard = Guard.load(guard_dir)
    if monitor:
        guard.set_monitor(**{**guard.monitor_settings, **monitor})
    app = create_app(guard, limits)
    uvicorn.run(app, host=host, port=port, log_level=log_level)
