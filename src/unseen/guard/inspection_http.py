"""HTTP routes of an inspection guard, added to any FastAPI app by :func:`add_inspection_routes`.

``POST /inspect`` takes the raw bytes of one image (``Content-Type: image/png``, ``image/jpeg``,
...) and answers JSON: ``score``, ``p_value``, ``defective``, ``threshold``, ``alpha``, the image
``width``/``height``, and the anomaly map and the defect mask as base64 PNGs of the input's size
(the map scaled so that 128 = the threshold, clipped to 0..255; the mask 0/255). Refused with a
message: 413 for a body over ``max_bytes`` or an image over ``max_pixels``, 415 for a
non-image content type, 400 for bytes that do not decode as an image.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
from fastapi import FastAPI, HTTPException, Request
from PIL import Image

from unseen.guard.inspection import InspectionGuard

MAX_BYTES = 16 * 1024 * 1024
MAX_PIXELS = 4096 * 4096


def _png(arr: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _decode(body: bytes, max_pixels: int) -> Image.Image:
    try:
        with Image.open(io.BytesIO(body)) as img:
            if img.width * img.height > max_pixels:
                raise HTTPException(413, f"image of {img.width}x{img.height} exceeds {max_pixels} pixels")
            img.load()
            return img.convert("RGB")
    except HTTPException:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise HTTPException(400, f"the body does not decode as an image: {err}") from None


def add_inspection_routes(
    app: FastAPI, guard: InspectionGuard, max_bytes: int = MAX_BYTES, max_pixels: int = MAX_PIXELS
) -> FastAPI:
    """Add ``POST /inspect`` serving ``guard`` to ``app`` (returned for chaining)."""

    @app.post("/inspect")
    async def inspect(request: Request) -> dict[str, Any]:
        kind = request.headers.get("content-type", "")
        if not kind.startswith("image/"):
            raise HTTPException(415, f"send the image bytes with an image/* content type, got {kind!r}")
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_bytes:
            raise HTTPException(413, f"body of {declared} bytes exceeds the limit of {max_bytes}")
        body = await request.body()
        if len(body) > max_bytes:
            raise HTTPException(413, f"body exceeds the limit of {max_bytes} bytes")
        image = _decode(body, max_pixels)
        result = guard.inspect(image)
        scaled = np.clip(128 * result.anomaly_map / max(guard.threshold_, 1e-12), 0, 255).astype(np.uint8)
        return {
            "score": result.score,
            "p_value": result.p_value,
            "defective": bool(result.defective),
            "threshold": guard.threshold_,
            "alpha": guard.alpha,
            "width": image.width,
            "height": image.height,
            "anomaly_map_png": _png(scaled),
            "mask_png": _png(result.mask.astype(np.uint8) * 255),
        }

    return app
