"""The HTTP service's former import path; it lives in ``unseen.guard.http`` (kept for callers of
``unseen.guard.service``, such as the ``serve`` command)."""

from __future__ import annotations

from unseen.guard.http import Limits, RequestError, create_app, serve

__all__ = ["Limits", "RequestError", "create_app", "serve"]
