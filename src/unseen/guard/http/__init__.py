"""HTTP service for a saved guard (FastAPI; run with uvicorn, by default on 127.0.0.1 only).

Endpoints:

* ``POST /v1/predict``: images, as multipart file fields (any field name, e.g. ``files``) or
  JSON ``{"images": ["<base64>", ...]}`` (a ``data:image/...;base64,`` prefix is accepted).
  Needs a guard with a model and a preprocessing transform.
* ``POST /v1/predict-features``: ``application/json`` ``{"features": [[...], ...]}`` (penultimate
  feature vectors, for any detector fitted on features, or on logits when the guard holds the
  classifier head) or ``{"logits": [[...], ...]}`` (only for detectors that read logits alone).
  ``GET /healthz`` says which of the two this guard takes and how many columns.
* ``GET /healthz``, ``GET /metrics`` (Prometheus text format 0.0.4), ``GET /openapi.json``.

Both predict endpoints answer ``{"results": [{"label", "probability", "score", "p_value",
"is_ood"}, ...], "alpha", "threshold"}``. Bad input gets a 4xx ``{"error": "..."}``: 400
malformed (JSON, base64, multipart, undecodable image), 408 body too slow, 413 too large (body,
batch, image, the request's pixel budget), 415 wrong content type, 422 well-formed but unusable
(empty batch, wrong shape, NaN, wrong dimension, overflow); 503 + ``Retry-After`` when the server
is at its in-flight or buffered-bytes limit.

Modules: ``limits`` (Limits, RequestError), ``admission`` (in-flight and byte budget),
``parsing`` (bodies, JSON, multipart, base64), ``images`` (header checks, decoding), ``metrics``
(prometheus_client registry per app), ``schemas`` (pydantic models), ``app`` (routes, serve).
"""

from __future__ import annotations

from unseen.guard.http.app import create_app, serve
from unseen.guard.http.limits import Limits, RequestError

__all__ = ["Limits", "RequestError", "create_app", "serve"]
