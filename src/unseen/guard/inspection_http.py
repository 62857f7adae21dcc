"""The FastAPI application of an inspection guard (``create_inspection_app``), as ``unseen serve``
builds it for a directory of format ``unseen.inspection-guard/1``.

``POST /inspect`` takes the raw bytes of one image (``Content-Type: image/png``, ``image/jpeg``,
...) of any size within the limits (the guard squashes every image to its network resolution and
brings the maps back to the input's size) and answers JSON: ``score``, ``p_value``,
``defective``, ``threshold``, ``alpha``, the image ``width``/``height``, and the anomaly map and
the defect mask as base64 PNGs of the input's size (the map scaled so that 128 = the threshold,
clipped to 0..255; the mask 0/255, from the same threshold as the decision). ``GET /healthz``,
``GET /metrics`` (Prometheus; a registry per app, with the flag-rate monitor of the plain
service) and ``/openapi.json`` as for a plain guard.

It shares the plain service's machinery (:mod:`unseen.guard.http`): ``Limits``, admission
control, the streamed body read, header-first image checks, the worker pool, the ``{"error":
...}`` answers. Refused with a message: 400 for bytes that do not decode as an image, 408 for a
body too slow, 413 for a body over ``max_body_bytes`` or an image over ``max_image_side`` /
``max_image_pixels``, 415 for a non-image content type, 422 for an empty body or an image of
more than 8 bits per channel (16-bit, float), 503 when the server is at its in-flight or buffered-bytes limit.
"""

from __future__ import annotations

import asyncio
import base64
import io
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import Response
from PIL import Image
from pydantic import BaseModel, Field

import unseen
from unseen.guard.conformal import threshold_rank
from unseen.guard.http import images as image_io
from unseen.guard.http import parsing
from unseen.guard.http.admission import Admission
from unseen.guard.http.app import JSON, add_error_handlers
from unseen.guard.http.limits import Limits, RequestError
from unseen.guard.http.metrics import CONTENT_TYPE, HttpMetrics, RecordMiddleware
from unseen.guard.http.schemas import ERRORS
from unseen.guard.inspection import InspectionGuard
from unseen.guard.monitor import Monitor

#: Pillow modes of 8 bits per channel. Pillow converts 16-bit and float images to RGB by clipping
#: at 255, which would inspect a bright white image instead of the part: those are refused.
EIGHT_BIT = frozenset({"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr",
                       "LAB", "HSV"})
IMAGE_BODY = {"requestBody": {"required": True, "content": {
    "image/*": {"schema": {"type": "string", "format": "binary"}}}}}


class InspectResponse(BaseModel):
    score: float = Field(description="guard score: maximum of the smoothed anomaly map")
    p_value: float = Field(description="conformal p-value against the defect-free calibration scores")
    defective: bool = Field(description="score > threshold, equivalently p_value <= alpha")
    threshold: float
    alpha: float
    width: int
    height: int
    anomaly_map_png: str = Field(description="base64 8-bit PNG, input size; 128 = the threshold")
    mask_png: str = Field(description="base64 8-bit PNG, input size; 255 where map > threshold")


class InspectionHealth(BaseModel):
    status: str
    kind: str = Field(description='"inspection": this guard serves POST /inspect')
    backbone: str
    detector: str
    resolution: int
    alpha: float
    threshold: float
    n_calibration: int
    version: str


@dataclass
class Served:
    """What the metrics collector reads of the served guard: its threshold and its monitor."""

    threshold: float
    monitor: Monitor


def _png(arr: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def new_monitor(guard: InspectionGuard, settings: dict[str, Any] | None = None) -> Monitor:
    """A flag-rate monitor at the guard's level; alpha_hat = (n - k + 1)/(n + 1), as for a Guard."""
    n = len(guard.calibration_)
    k = threshold_rank(n, guard.alpha)
    return Monitor(guard.alpha, alpha_hat=(n - k + 1) / (n + 1), **(settings or {}))


class InspectionService:
    """One inspection guard behind HTTP: limits, metrics, monitor, admission and worker pool."""

    def __init__(self, guard: InspectionGuard, limits: Limits, monitor: dict[str, Any] | None) -> None:
        self.guard = guard
        self.limits = limits
        self.watched = Served(guard.threshold_, new_monitor(guard, monitor))
        self.metrics = HttpMetrics(self.watched)
        self.admission = Admission(limits, self.metrics)
        self.pool = ThreadPoolExecutor(limits.workers, thread_name_prefix="unseen-inspect")

    def health(self) -> InspectionHealth:
        g = self.guard
        return InspectionHealth(
            status="ok", kind="inspection", backbone=g.backbone, detector=g.detector_.name,
            resolution=g.resolution, alpha=g.alpha, threshold=g.threshold_,
            n_calibration=len(g.calibration_), version=unseen.__version__,
        )

    def inspect_job(self, body: bytes) -> bytes:
        """Decode (header checks first), inspect, answer (worker thread)."""
        (image,) = image_io.decode_images([parsing.Upload("the image", body)], self.limits)
        if image.mode not in EIGHT_BIT:
            raise RequestError(422, f"the image has mode {image.mode!r}; send 8 bits per channel "
                               "(grey, RGB, RGBA, palette or CMYK), as the calibration images were")
        rgb = image.convert("RGB")
        result = self.guard.inspect(rgb)
        self.watched.monitor.update(np.array([result.defective]))
        scaled = np.clip(128 * result.anomaly_map / max(self.guard.threshold_, 1e-12), 0, 255)
        out = InspectResponse(
            score=result.score, p_value=result.p_value, defective=bool(result.defective),
            threshold=self.guard.threshold_, alpha=self.guard.alpha,
            width=image.width, height=image.height,
            anomaly_map_png=_png(scaled.astype(np.uint8)),
            mask_png=_png(result.mask.astype(np.uint8) * 255),
        )
        return out.model_dump_json().encode()


def create_inspection_app(
    guard: InspectionGuard, limits: Limits | None = None, monitor: dict[str, Any] | None = None
) -> FastAPI:
    """The FastAPI application serving a calibrated ``guard`` under ``limits``.

    ``monitor``: settings of the flag-rate monitor (window, level, confidence).
    """
    if getattr(guard, "threshold_", None) is None:
        raise ValueError("the inspection guard is not calibrated: call guard.fit(...) first")
    svc = InspectionService(guard, limits or Limits(), monitor)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        svc.pool.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(
        title="unseen inspection guard", version=unseen.__version__, lifespan=lifespan,
        description="Visual inspection: anomaly maps, defect masks and a conformal threshold "
        "calibrated on defect-free parts only.",
    )
    app.state.service = svc
    app.add_middleware(RecordMiddleware, metrics=svc.metrics)
    add_error_handlers(app)

    @app.get("/healthz", response_model=InspectionHealth)
    async def healthz() -> InspectionHealth:
        return svc.health()

    @app.get("/metrics", response_class=Response,
             responses={200: {"content": {CONTENT_TYPE: {}}, "description": "Prometheus text"}})
    async def prometheus() -> Response:
        return Response(svc.metrics.render(), media_type=CONTENT_TYPE)

    @app.post("/inspect", response_model=InspectResponse, responses=ERRORS, openapi_extra=IMAGE_BODY)
    async def inspect(request: Request) -> Response:
        media = parsing.media_type(request)
        if not media.startswith("image/"):
            raise RequestError(415, f"send the image's bytes with an image/* content type "
                               f"(e.g. image/png), got {media or 'none'!r}")
        limits = svc.limits
        with svc.admission.ticket() as ticket:
            body = await parsing.read_body(request, limits.max_body_bytes, limits.body_timeout_s, ticket)
            ticket.start_work()
            answer = await asyncio.get_running_loop().run_in_executor(svc.pool, svc.inspect_job, body)
            return Response(answer, media_type=JSON)

    return app
