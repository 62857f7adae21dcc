"""Image uploads -> decoded PIL images, within the per-image and per-request pixel limits.

Pillow's ``Image.open`` reads only the header, so every image's size is checked, and the
request's pixel total compared with its budget, before any pixel is decoded: a small request
of highly compressed huge images costs header reads, not gigabytes."""

from __future__ import annotations

import io
import re

from PIL import Image, UnidentifiedImageError

from unseen.guard.http.limits import Limits, RequestError
from unseen.guard.http.parsing import Upload

_OBJECT_REPR = re.compile(r"<[^<>]* at 0x[0-9a-fA-F]+>")


def _reason(exc: Exception) -> str:
    if isinstance(exc, UnidentifiedImageError):
        return "the bytes are not in an image format Pillow can read (PNG, JPEG, BMP, ...)"
    # Pillow names its file object in some messages; the client knows it as its upload.
    return _OBJECT_REPR.sub("the upload", str(exc)) or type(exc).__name__


def _open(upload: Upload, limits: Limits) -> Image.Image:
    if not upload.data:
        raise RequestError(422, f"{upload.label} is empty")
    try:
        img = Image.open(io.BytesIO(upload.data))
    except Image.DecompressionBombError:
        raise RequestError(
            413, f"{upload.label} declares more than {2 * (Image.MAX_IMAGE_PIXELS or 0)} pixels "
            f"(a decompression bomb); the limit is {limits.max_image_pixels} pixels per image",
        ) from None
    except Exception as exc:  # any decoder failure means the bytes are not a usable image
        raise RequestError(400, f"{upload.label} could not be decoded: {_reason(exc)}") from None
    w, h = img.size
    if max(w, h) > limits.max_image_side or w * h > limits.max_image_pixels:
        raise RequestError(
            413,
            f"{upload.label} is {w}x{h}; the limits are {limits.max_image_side} pixels per side "
            f"and {limits.max_image_pixels} pixels in all",
        )
    return img


def decode_images(uploads: list[Upload], limits: Limits) -> list[Image.Image]:
    """Check every header, then the request's pixel total, then decode."""
    images = [_open(up, limits) for up in uploads]
    total = sum(img.size[0] * img.size[1] for img in images)
    if total > limits.max_request_pixels:
        raise RequestError(
            413,
            f"the {len(images)} images have {total} pixels in all, beyond this request's pixel "
            f"budget of {limits.max_request_pixels}; send fewer or smaller images per request",
        )
    for img, up in zip(images, uploads, strict=True):
        try:
            img.load()
        except Exception as exc:
            raise RequestError(400, f"{up.label} could not be decoded: {_reason(exc)}") from None
    return images
