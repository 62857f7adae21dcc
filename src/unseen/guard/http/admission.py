"""Admission control: how many predict requests are worked on at once and how many body bytes the
requests being read buffer. Beyond either bound a request is refused at once with 503 and
``Retry-After``, rather than queued without end.

A request counts against ``max_in_flight`` only once its body has arrived, so clients that stall
their upload hold no work slot (the body timeout ends them); bytes count against
``max_buffered_bytes`` as they arrive, not as declared, so a large Content-Length costs nothing
until it is sent. Used from the event loop only, so plain counters suffice."""

from __future__ import annotations

from types import TracebackType

from unseen.guard.http.limits import Limits, RequestError
from unseen.guard.http.metrics import HttpMetrics


class Admission:
    """Counts requests in work and the bytes of bodies held, against ``limits``."""

    def __init__(self, limits: Limits, metrics: HttpMetrics) -> None:
        self.limits = limits
        self.metrics = metrics
        self.in_flight = 0
        self.buffered = 0

    def busy(self, what: str) -> RequestError:
        return RequestError(
            503, f"the server is busy ({what}); retry after {self.limits.retry_after_s} s",
            headers={"Retry-After": str(self.limits.retry_after_s)},
        )

    def ticket(self) -> Ticket:
        return Ticket(self)

    def _update_gauges(self) -> None:
        self.metrics.in_flight.set(self.in_flight)
        self.metrics.buffered_bytes.set(self.buffered)


class Ticket:
    """One request's share; a context manager that gives its bytes and work slot back on exit."""

    def __init__(self, admission: Admission) -> None:
        self._admission = admission
        self.reserved = 0
        self.working = False

    def reserve(self, n: int) -> None:
        """Account ``n`` more body bytes; 503 when the server's body budget would be exceeded."""
        adm = self._admission
        if adm.buffered + n > adm.limits.max_buffered_bytes:
            raise adm.busy(f"{adm.buffered} body bytes buffered")
        adm.buffered += n
        self.reserved += n
        adm._update_gauges()

    def start_work(self) -> None:
        """Take a work slot; 503 when ``max_in_flight`` requests are already being worked on."""
        adm = self._admission
        if adm.in_flight >= adm.limits.max_in_flight:
            raise adm.busy(f"{adm.in_flight} requests in flight")
        adm.in_flight += 1
        self.working = True
        adm._update_gauges()

    def __enter__(self) -> Ticket:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        adm = self._admission
        adm.in_flight -= int(self.working)
        adm.buffered -= self.reserved
        self.reserved, self.working = 0, False
        adm._update_gauges()
