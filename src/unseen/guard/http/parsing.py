"""Request parsing: the body read under a byte cap and a deadline (on the event loop, async), then
JSON features, base64 images and multipart images (plain functions, run in the worker pool).

Every failure raises ``RequestError`` with the status and a message that says what to fix."""

from __future__ import annotations

import base64
import binascii
import json
from typing import TYPE_CHECKING, Any, NamedTuple

import anyio
import numpy as np
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from unseen.guard.http.admission import Ticket
from unseen.guard.http.limits import ClientGone, Limits, RequestError

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

FLOAT32_MAX = float(np.finfo(np.float32).max)
# Text fields may ride along with the files (a note, a client id); beyond this many parts the
# body is refused rather than parsed part by part.
EXTRA_PARTS = 16


class Upload(NamedTuple):
    """One image's bytes and how messages name it (its file name or its JSON position)."""

    label: str
    data: bytes


# -- the body ----------------------------------------------------------------------------------
def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


async def read_body(request: Request, limit: int, timeout_s: float, ticket: Ticket) -> bytes:
    """The whole body, refused with 413 past ``limit`` bytes (from Content-Length when declared,
    else while streaming) and with 408 when it has not arrived within ``timeout_s``."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise RequestError(400, f"invalid Content-Length header {declared!r}")
        if int(declared) > limit:
            raise RequestError(413, f"request body of {declared} bytes exceeds the limit of {limit}")
    chunks, size = [], 0
    try:
        with anyio.fail_after(timeout_s):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise RequestError(413, f"request body exceeds the limit of {limit} bytes")
                ticket.reserve(len(chunk))  # as it arrives: a declared length alone costs nothing
                chunks.append(chunk)
    except TimeoutError:
        raise RequestError(
            408, f"the request body did not arrive within {timeout_s:g} s ({size} bytes received)"
        ) from None
    except ClientDisconnect:
        raise ClientGone() from None
    return b"".join(chunks)


# -- JSON --------------------------------------------------------------------------------------
class _NonFinite(ValueError):
    pass


def _reject_constant(token: str) -> Any:
    raise _NonFinite(token)


def parse_json(body: bytes) -> Any:
    if not body:
        raise RequestError(400, "empty request body; send a JSON object")
    try:
        return json.loads(body, parse_constant=_reject_constant)
    except _NonFinite as exc:
        raise RequestError(422, f"non-finite number {exc} in the JSON body") from None
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError
        raise RequestError(400, f"the body is not valid JSON: {exc}") from None


def features_payload(body: bytes, limits: Limits) -> tuple[str, np.ndarray]:
    """``{"features": rows}`` or ``{"logits": rows}`` -> the key and a float64 matrix."""
    payload = parse_json(body)
    keys = set(payload) & {"features", "logits"} if isinstance(payload, dict) else set()
    if not isinstance(payload, dict) or len(keys) != 1 or len(payload) != 1:
        raise RequestError(422, 'JSON body must be an object with exactly one key, "features" or "logits"')
    key = keys.pop()
    return key, matrix(payload[key], key, limits)


def _check_rows(value: Any, key: str, limits: Limits) -> None:
    if not isinstance(value, list):
        raise RequestError(422, f'"{key}" must be a list of rows (lists of numbers)')
    if not value:
        raise RequestError(422, f'"{key}" is an empty batch; send at least one row')
    if not isinstance(value[0], list):  # before the batch size: a flat vector is not a batch
        raise RequestError(
            422, f'"{key}"[0] must be a list of numbers: "{key}" must be a list of rows, one per '
            f"input; to send one input, wrap it as [[...]]",
        )
    if len(value) > limits.max_batch:
        raise RequestError(413, f"batch of {len(value)} exceeds the limit of {limits.max_batch}")
    width = len(value[0])
    for i, row in enumerate(value):
        if not isinstance(row, list):
            raise RequestError(422, f'"{key}"[{i}] must be a list of numbers')
        if len(row) != width:
            raise RequestError(422, f'"{key}" rows differ in length ({width} vs {len(row)} at {i})')
        for x in row:
            if isinstance(x, bool) or not isinstance(x, int | float):
                raise RequestError(422, f'"{key}"[{i}] contains a non-number: {x!r:.40}')
    if width == 0:
        raise RequestError(422, f'"{key}" rows are empty')


def matrix(value: Any, key: str, limits: Limits) -> np.ndarray:
    """A checked float64 matrix from JSON rows: numbers only, rectangular, finite, float32-sized."""
    _check_rows(value, key, limits)
    try:
        arr = np.asarray(value, dtype=np.float64)
    except OverflowError:
        raise RequestError(422, f'"{key}" contains a number too large for float64') from None
    if not np.isfinite(arr).all():
        raise RequestError(422, f'"{key}" contains non-finite values (NaN or infinity)')
    if np.abs(arr).max() > FLOAT32_MAX:
        raise RequestError(422, f'"{key}" contains values beyond the float32 range')
    return arr


# -- images ------------------------------------------------------------------------------------
def check_batch(n: int, limits: Limits) -> None:
    if n == 0:
        raise RequestError(422, "empty batch: send at least one image")
    if n > limits.max_batch:
        raise RequestError(413, f"batch of {n} exceeds the limit of {limits.max_batch}")


def b64_uploads(body: bytes, limits: Limits) -> list[Upload]:
    """``{"images": ["<base64>", ...]}`` -> the decoded bytes of each image."""
    payload = parse_json(body)
    if not isinstance(payload, dict) or set(payload) != {"images"}:
        raise RequestError(422, 'JSON body must be an object {"images": ["<base64>", ...]}')
    images = payload["images"]
    if not isinstance(images, list) or not all(isinstance(s, str) for s in images):
        raise RequestError(422, '"images" must be a list of base64 strings')
    check_batch(len(images), limits)
    out = []
    for i, s in enumerate(images):
        if s.startswith("data:") and "," in s:
            s = s.split(",", 1)[1]
        try:
            out.append(Upload(f"images[{i}]", base64.b64decode(s, validate=True)))
        except (binascii.Error, ValueError):
            raise RequestError(400, f"images[{i}] is not valid base64") from None
    return out


class _Parts:
    """Collects the file parts of a multipart body (parts with a file name); fields are skipped."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.files: list[tuple[str, bytes]] = []
        self.n_parts = 0
        self._field = b""
        self._headers: dict[bytes, bytes] = {}
        self._data: list[bytes] = []

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self._begin,
            "on_header_field": lambda d, s, e: self._add_field(d[s:e]),
            "on_header_value": lambda d, s, e: self._add_value(d[s:e]),
            "on_header_end": self._end_header,
            "on_part_data": lambda d, s, e: self._data.append(d[s:e]),
            "on_part_end": self._end,
        }

    def _begin(self) -> None:
        self.n_parts += 1
        if self.n_parts > self.limits.max_batch + EXTRA_PARTS:
            raise RequestError(413, f"the multipart body has more than {self.n_parts - 1} parts")
        self._headers, self._data, self._field = {}, [], b""

    def _add_field(self, chunk: bytes) -> None:
        self._field += chunk

    def _add_value(self, chunk: bytes) -> None:
        key = self._field.lower()
        self._headers[key] = self._headers.get(key, b"") + chunk

    def _end_header(self) -> None:
        self._field = b""

    def _end(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition"))
        if b"filename" not in options:
            return
        self.files.append((options[b"filename"].decode("utf-8", "replace"), b"".join(self._data)))
        if len(self.files) > self.limits.max_batch:  # stop parsing at the first file too many
            check_batch(len(self.files), self.limits)


def multipart_uploads(body: bytes, content_type: str, limits: Limits) -> list[Upload]:
    """The file parts of a ``multipart/form-data`` body, in order."""
    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise RequestError(400, "invalid multipart body: the Content-Type has no boundary")
    parts = _Parts(limits)
    try:
        parser = MultipartParser(boundary, parts.callbacks())
        parser.write(body)
        parser.finalize()
    except MultipartParseError as exc:
        raise RequestError(400, f"invalid multipart body: {exc}") from None
    check_batch(len(parts.files), limits)
    return [Upload(f"image {i} ({name!r})", data) for i, (name, data) in enumerate(parts.files)]
