"""What one request, and the server as a whole, may cost: the ``Limits`` of the HTTP service, the
``RequestError`` every refusal is raised as, and ``calibrated`` for the served guard's state."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")

# A decoded image costs at most 4 bytes per pixel (RGBA, I, F) and preprocessing converts it once
# more (e.g. to grayscale or RGB), so 8 bytes per pixel bounds what a request's images occupy.
BYTES_PER_DECODED_PIXEL = 8
# A JSON number takes about 25 characters at full float64 precision with its separator; 48 leaves
# room for indentation, so no well-formed batch is refused by the derived feature-body cap.
JSON_BYTES_PER_NUMBER = 48
JSON_SLACK_BYTES = 64 * 1024


def _default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


@dataclass(frozen=True)
class Limits:
    """Request and server limits; a request beyond them is refused, never half-served.

    Per request: ``max_body_bytes`` (the image route's body; 413), ``max_features_body_bytes``
    (the feature route's body; None derives it from the guard's width as ``max_batch`` rows of
    JSON numbers), ``max_batch`` inputs, ``max_image_side``/``max_image_pixels`` per image and
    ``max_request_pixels`` over all images of a request (all read from the image headers, before
    any decoding; 413), and ``body_timeout_s`` for the whole body to arrive (408).

    Per server: ``workers`` threads parse, decode and score (the event loop only moves bytes, so
    ``/healthz`` and ``/metrics`` stay responsive); at most ``max_in_flight`` predict requests
    whose body has arrived are queued or worked on, and the bodies being held take at most
    ``max_buffered_bytes``; beyond either the answer is 503 with ``Retry-After: retry_after_s``.
    """

    max_body_bytes: int = 16 * 1024 * 1024
    max_batch: int = 64
    max_image_side: int = 4096
    max_image_pixels: int = 16_777_216
    max_request_pixels: int = 16_777_216
    max_features_body_bytes: int | None = None
    max_in_flight: int = 64
    max_buffered_bytes: int = 128 * 1024 * 1024
    workers: int = field(default_factory=_default_workers)
    body_timeout_s: float = 30.0
    retry_after_s: int = 1

    def __post_init__(self) -> None:
        ints = ("max_body_bytes", "max_batch", "max_image_side", "max_image_pixels",
                "max_request_pixels", "max_in_flight", "max_buffered_bytes", "workers",
                "retry_after_s")
        for name in ints:
            _check_positive_int(name, getattr(self, name))
        if self.max_features_body_bytes is not None:
            _check_positive_int("max_features_body_bytes", self.max_features_body_bytes)
        timeout = self.body_timeout_s
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
            raise ValueError(f"Limits.body_timeout_s must be a positive number, got {timeout!r}")
        if timeout == float("inf"):
            raise ValueError("Limits.body_timeout_s must be finite: a stalled body would be held forever")

    def features_body_bytes(self, width: int) -> int:
        """The feature route's body cap for inputs of ``width`` columns."""
        if self.max_features_body_bytes is not None:
            return self.max_features_body_bytes
        derived = self.max_batch * width * JSON_BYTES_PER_NUMBER + JSON_SLACK_BYTES
        return min(self.max_body_bytes, derived)

    def memory_bound_bytes(self) -> int:
        """Request memory the limits allow at once, beyond the loaded guard: the buffered bodies
        plus one request's decoded images per worker (an estimate at 8 bytes per pixel)."""
        decoded = self.workers * self.max_request_pixels * BYTES_PER_DECODED_PIXEL
        return self.max_buffered_bytes + decoded


def _check_positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"Limits.{name} must be a positive integer, got {value!r}")


class RequestError(Exception):
    """A refused request: answered with ``status``, ``{"error": message}`` and ``headers``."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


class ClientGone(Exception):
    """The client closed the connection before its request body arrived (not a server error)."""


def calibrated(value: T | None, name: str) -> T:
    """A calibrated guard's ``name`` (alpha, threshold, monitor ...): never None while served."""
    if value is None:
        raise RuntimeError(f"the served guard has no {name}: it must stay calibrated while served")
    return value
