"""Prometheus metrics of the service (``prometheus_client``), one registry per app so that several
apps in one process (tests, side-by-side guards) never share or collide on counters.

HTTP traffic is counted by a pure ASGI middleware; the guard's own figures (inputs seen and
flagged, the monitor's flag-rate estimate and alarm) are read from the guard at scrape time."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from unseen.guard.http.limits import calibrated
from unseen.guard.monitor import Monitor

ENDPOINTS = ("/v1/predict", "/v1/predict-features", "/inspect", "/healthz", "/metrics", "/openapi.json")
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"  # what generate_latest writes
# The status an app answers when the client left before its body arrived (nginx's 499); nobody
# receives it, and the middleware counts it as a disconnect instead of a request.
CLIENT_CLOSED = 499


class Watched(Protocol):
    """What the collector reads of a served guard (a ``Guard``, or an inspection guard's record)."""

    @property
    def threshold(self) -> float | None: ...

    @property
    def monitor(self) -> Monitor | None: ...


class HttpMetrics:
    """The registry of one app: request counters, latency histograms, admission gauges."""

    def __init__(self, guard: Watched) -> None:
        self.registry = CollectorRegistry()
        reg = self.registry
        self.requests = Counter("unseen_http_requests_total", "HTTP requests by endpoint and status code.",
                                ["endpoint", "code"], registry=reg)
        self.latency = Histogram("unseen_http_request_duration_seconds", "Request latency in seconds.",
                                 ["endpoint"], buckets=LATENCY_BUCKETS, registry=reg)
        self.disconnects = Counter(
            "unseen_http_client_disconnects_total",
            "Requests whose client closed the connection before the body arrived.",
            ["endpoint"], registry=reg,
        )
        self.in_flight = Gauge("unseen_http_in_flight_requests",
                               "Predict requests admitted and not yet answered.", registry=reg)
        self.buffered_bytes = Gauge("unseen_http_buffered_body_bytes",
                                    "Request body bytes held by admitted requests.", registry=reg)
        reg.register(GuardCollector(guard))

    def observe(self, endpoint: str, status: int, seconds: float) -> None:
        if status == CLIENT_CLOSED:
            self.disconnects.labels(endpoint).inc()
            return
        self.requests.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def _value(value: Any) -> float:
    return math.nan if value is None else float(value)


class GuardCollector(Collector):
    """The guard's counters and its monitor's gauges, computed when Prometheus scrapes."""

    def __init__(self, guard: Watched) -> None:
        self.guard = guard

    def collect(self) -> Iterator[Metric]:
        guard = self.guard
        mon = calibrated(guard.monitor, "monitor")
        est = mon.estimate()
        yield CounterMetricFamily("unseen_inputs", "Inputs scored.", value=mon.total_seen)
        yield CounterMetricFamily("unseen_inputs_flagged", "Inputs flagged as OOD.",
                                  value=mon.total_flagged)
        ci = est.flag_rate_ci or (None, None)
        gauges = [
            ("unseen_alpha", "Nominal false-alarm level of the guard.", est.alpha),
            ("unseen_threshold", "Score threshold (flag when score > threshold).", guard.threshold),
            ("unseen_window_inputs", "Inputs in the monitoring window.", est.n),
            ("unseen_flag_rate", "Fraction flagged in the monitoring window.", est.flag_rate),
            ("unseen_flag_rate_ci_low", "Clopper-Pearson lower bound of the flag rate.", ci[0]),
            ("unseen_flag_rate_ci_high", "Clopper-Pearson upper bound of the flag rate.", ci[1]),
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
            yield GaugeMetricFamily(name, help_, value=_value(value))


class RecordMiddleware:
    """Pure ASGI middleware that times every HTTP request and counts its status code."""

    def __init__(self, app: Any, metrics: HttpMetrics) -> None:
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
