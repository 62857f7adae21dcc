"""Request and response models of the service. FastAPI builds the OpenAPI schema from them; the
responses are serialised through them, so the documented shape is the shape sent.

Request bodies are read and checked by ``parsing`` (streamed under a byte cap, parsed off the
event loop, with messages that say what is wrong), so their models appear in the schema through
``request_body`` rather than as FastAPI body parameters."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Prediction(BaseModel):
    """One input's answer."""

    label: int | None = Field(description="argmax class of the classifier (None without logits)")
    probability: float | None = Field(description="softmax probability of that class")
    score: float = Field(description="OOD score, higher = more out-of-distribution")
    p_value: float = Field(description="conformal p-value against the calibration scores")
    is_ood: bool = Field(description="score > threshold, equivalently p_value <= alpha")


class PredictResponse(BaseModel):
    results: list[Prediction]
    alpha: float
    threshold: float


class ErrorResponse(BaseModel):
    error: str = Field(description="what is wrong with the request and how to fix it")


class Health(BaseModel):
    status: Literal["ok"]
    detector: str
    alpha: float
    n_calibration: int
    images: bool = Field(description="whether POST /v1/predict is available")
    predict_features_accepts: dict[str, int] = Field(
        description='input kinds of POST /v1/predict-features ("features", "logits") and their width'
    )
    version: str


class FeaturesRequest(BaseModel):
    """Exactly one of ``features`` (penultimate feature vectors) or ``logits``, one row per input."""

    model_config = ConfigDict(extra="forbid")
    features: list[list[float]] | None = None
    logits: list[list[float]] | None = None


class ImagesRequest(BaseModel):
    """Base64-encoded image files; a ``data:image/...;base64,`` prefix is accepted."""

    model_config = ConfigDict(extra="forbid")
    images: list[str] = Field(json_schema_extra={"items": {"type": "string", "format": "byte"}})


class ImageFiles(BaseModel):
    """Image files as multipart parts; any field name, e.g. ``files``."""

    files: list[bytes]


ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": text}
    for status, text in [
        (400, "malformed: invalid JSON, base64, multipart or an undecodable image"),
        (408, "the request body did not arrive within the body timeout"),
        (413, "too large: body, batch, image side, image pixels or the request's pixel budget"),
        (415, "unsupported content type"),
        (422, "well-formed but unusable: empty batch, ragged rows, NaN, wrong width, overflow"),
        (503, "the server is at its in-flight or buffered-bytes limit; retry after Retry-After"),
    ]
}


def request_body(content: dict[str, type[BaseModel]]) -> dict[str, Any]:
    """An OpenAPI ``requestBody`` from models keyed by media type (for ``openapi_extra``)."""
    schemas = {media: {"schema": model.model_json_schema()} for media, model in content.items()}
    return {"requestBody": {"required": True, "content": schemas}}
