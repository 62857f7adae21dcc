"""The FastAPI application of a calibrated guard (``create_app``) and its uvicorn runner (``serve``).

The event loop only admits requests and moves bytes; parsing, decoding and scoring run in a
bounded worker pool, so ``/healthz`` and ``/metrics`` answer while large requests are worked on."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

import unseen
from unseen.guard.core import Guard, GuardInputError
from unseen.guard.http import images as image_io
from unseen.guard.http import parsing
from unseen.guard.http.admission import Admission
from unseen.guard.http.limits import ClientGone, Limits, RequestError, calibrated
from unseen.guard.http.metrics import CLIENT_CLOSED, CONTENT_TYPE, HttpMetrics, RecordMiddleware
from unseen.guard.http.schemas import (
    ERRORS,
    FeaturesRequest,
    Health,
    ImageFiles,
    ImagesRequest,
    PredictResponse,
    request_body,
)
from unseen.representation import RepresentationError

JSON = "application/json"
MULTIPART = "multipart/form-data"


def _accepts(guard: Guard) -> dict[str, int]:
    accepts = {}
    for kind in ("features", "logits"):
        try:
            accepts[kind] = guard.input_dim(kind)
        except GuardInputError:
            pass
    return accepts


class Service:
    """One guard behind HTTP: its limits, metrics, admission control and worker pool."""

    def __init__(self, guard: Guard, limits: Limits) -> None:
        self.guard = guard
        self.limits = limits
        self.metrics = HttpMetrics(guard)
        self.admission = Admission(limits, self.metrics)
        self.pool = ThreadPoolExecutor(limits.workers, thread_name_prefix="unseen-http")
        self.accepts = _accepts(guard)
        self.features_cap = limits.features_body_bytes(max(self.accepts.values(), default=1))
        self.takes_images = guard.model is not None and guard.transform is not None

    async def offload(self, job: Callable[..., bytes], *args: Any) -> Response:
        """Run ``job`` in the worker pool; its bytes are the JSON answer."""
        body = await asyncio.get_running_loop().run_in_executor(self.pool, job, *args)
        return Response(body, media_type=JSON)

    def health(self) -> Health:
        guard = self.guard
        n_calibration = calibrated(guard.calibration_scores, "calibration scores").shape[0]
        return Health(
            status="ok", detector=guard.detector.name, alpha=calibrated(guard.alpha, "alpha"),
            n_calibration=int(n_calibration), images=self.takes_images,
            predict_features_accepts=self.accepts, version=unseen.__version__,
        )

    # -- jobs (worker threads) ------------------------------------------------------------------
    def features_job(self, body: bytes) -> bytes:
        key, arr = parsing.features_payload(body, self.limits)
        head = self.guard.head
        if key == "features" and head is not None and arr.shape[1] == head[0].shape[1]:
            _check_logits_fit(arr, head)  # (a wrong width gets the guard's own message below)
        try:
            rep = self.guard.from_arrays(**{key: arr})
        except GuardInputError as exc:
            raise RequestError(422, str(exc)) from None
        except RepresentationError as exc:
            raise RequestError(422, f"these {key} cannot be scored: {exc}") from None
        return self.answer(rep)

    def images_job(self, body: bytes, media: str, content_type: str) -> bytes:
        if media == MULTIPART:
            uploads = parsing.multipart_uploads(body, content_type, self.limits)
        else:
            uploads = parsing.b64_uploads(body, self.limits)
        return self.answer(image_io.decode_images(uploads, self.limits))

    def answer(self, inputs: Any) -> bytes:
        guard = self.guard
        try:
            preds = guard.predict(inputs, record=False)
        except (GuardInputError, RepresentationError) as exc:
            raise RequestError(422, str(exc)) from None
        bad = np.flatnonzero(~np.isfinite(preds.score))
        if bad.size:  # JSON has no infinity, and a NaN score would be a silent wrong answer
            raise RequestError(
                422, f"the detector's score of input {int(bad[0])} is not finite; the input lies "
                "far outside the range this guard can score",
            )
        calibrated(guard.monitor, "monitor").update(preds.is_ood)  # only answered inputs count
        out = PredictResponse.model_validate(
            {"results": preds.records(), "alpha": guard.alpha, "threshold": guard.threshold}
        )
        return out.model_dump_json().encode()


def _check_logits_fit(features: np.ndarray, head: tuple[np.ndarray, np.ndarray]) -> None:
    """Finite features can still be too large: the guard computes logits = features @ W.T + b and
    stores them as float32, where they would overflow to infinity. Refuse those rows by name."""
    weight, bias = head
    with np.errstate(over="ignore", invalid="ignore"):
        logits = features @ weight.T.astype(np.float64) + bias
    too_big = ~(np.abs(logits) <= parsing.FLOAT32_MAX)
    if too_big.any():
        row = int(np.flatnonzero(too_big.any(axis=1))[0])
        raise RequestError(
            422, f'"features"[{row}] is too large for this guard: the classifier head\'s logits '
            "overflow float32 (|logit| > 3.4e38); send the model's own feature vectors",
        )


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestError)
    async def request_error(_: Request, exc: RequestError) -> JSONResponse:
        return _error(exc.status, exc.message, exc.headers)

    @app.exception_handler(ClientGone)
    async def client_gone(_: Request, exc: ClientGone) -> Response:
        return Response(status_code=CLIENT_CLOSED)  # nobody reads it; counted as a disconnect

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, f"invalid request: {exc.errors()}")

    @app.exception_handler(Exception)
    async def internal_error(_: Request, exc: Exception) -> JSONResponse:
        return _error(500, f"internal error: {type(exc).__name__}")


def _add_predict_routes(app: FastAPI, svc: Service) -> None:
    limits = svc.limits

    @app.post("/v1/predict-features", response_model=PredictResponse, responses=ERRORS,
              openapi_extra=request_body({JSON: FeaturesRequest}))
    async def predict_features(request: Request) -> Response:
        if parsing.media_type(request) != JSON:
            raise RequestError(415, 'send the features as application/json {"features": [[...]]}')
        with svc.admission.ticket() as ticket:
            body = await parsing.read_body(request, svc.features_cap, limits.body_timeout_s, ticket)
            ticket.start_work()
            return await svc.offload(svc.features_job, body)

    @app.post("/v1/predict", response_model=PredictResponse, responses=ERRORS,
              openapi_extra=request_body({MULTIPART: ImageFiles, JSON: ImagesRequest}))
    async def predict(request: Request) -> Response:
        if not svc.takes_images:
            raise RequestError(400, "this guard has no model and preprocessing; use /v1/predict-features")
        media = parsing.media_type(request)
        if media not in (MULTIPART, JSON):
            raise RequestError(
                415, 'send images as multipart/form-data files or JSON {"images": [base64...]}'
            )
        with svc.admission.ticket() as ticket:
            body = await parsing.read_body(request, limits.max_body_bytes, limits.body_timeout_s, ticket)
            ticket.start_work()
            ctype = request.headers.get("content-type", "")
            return await svc.offload(svc.images_job, body, media, ctype)


def create_app(guard: Guard, limits: Limits | None = None) -> FastAPI:
    """The FastAPI application serving ``guard`` (calibrated) under ``limits``."""
    if guard.threshold is None:
        raise ValueError("the guard is not calibrated: call guard.calibrate(...) first")
    svc = Service(guard, limits or Limits())

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        svc.pool.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(
        title="unseen guard", version=unseen.__version__, lifespan=lifespan,
        description="Conformal out-of-distribution guard: per-input p-values and OOD flags.",
    )
    app.state.service = svc
    app.state.guard, app.state.limits, app.state.metrics = guard, svc.limits, svc.metrics
    app.add_middleware(RecordMiddleware, metrics=svc.metrics)
    add_error_handlers(app)

    @app.get("/healthz", response_model=Health)
    async def healthz() -> Health:
        return svc.health()

    @app.get("/metrics", response_class=Response,
             responses={200: {"content": {CONTENT_TYPE: {}}, "description": "Prometheus text"}})
    async def prometheus() -> Response:
        return Response(svc.metrics.render(), media_type=CONTENT_TYPE)

    _add_predict_routes(app, svc)
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
    """Load the guard in ``guard_dir`` (either kind, see :func:`load_app`) and serve it with
    uvicorn (blocks).

    ``monitor``: settings for :meth:`Guard.set_monitor` (window, level, confidence) that
    override those saved with the guard.
    """
    import uvicorn

    uvicorn.run(load_app(guard_dir, limits, monitor), host=host, port=port, log_level=log_level)


def load_app(
    guard_dir: str | os.PathLike[str], limits: Limits | None = None, monitor: dict[str, Any] | None = None
) -> FastAPI:
    """The application for the guard directory ``guard_dir``, chosen by the format its manifest
    declares: a conformal guard (``unseen.guard/1``, :func:`create_app`) or an inspection guard
    (``unseen.inspection-guard/1``, :func:`unseen.guard.inspection_http.create_inspection_app`).
    """
    from unseen.guard import persist

    fmt = persist.saved_format(guard_dir)
    if fmt == persist.INSPECTION_FORMAT:
        from unseen.guard.inspection import InspectionGuard
        from unseen.guard.inspection_http import create_inspection_app

        return create_inspection_app(InspectionGuard.load(guard_dir), limits, monitor)
    if fmt != persist.FORMAT:
        raise persist.GuardFileError(
            f"{guard_dir} holds a {fmt} directory, not a guard; build one with `unseen calibrate`"
        )
    guard = Guard.load(Path(guard_dir))
    if monitor:
        guard.set_monitor(**{**guard.monitor_settings, **monitor})
    return create_app(guard, limits)
