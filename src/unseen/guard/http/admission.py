"""Admission control: how many predict requests the server holds at once and how many body bytes
they buffer. Beyond either bound a request is refused at once with 503 and ``Retry-After``,
rather than queued without end. Used from the event loop only, so plain counters suffice."""

from __future__ import annotations

from types import TracebackType

from unseen.guard.http.limits import Limits, RequestError
from unseen.guard.http.metrics import HttpMetrics


class Admission:
    """Counts admitted requests and their buffered bytes against ``limits``."""

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

    def enter(self) -> Ticket:
        """A ticket for one request; 503 when ``max_in_flight`` requests are already admitted."""
        if self.in_flight >= self.limits.max_in_flight:
            raise self.busy(f"{self.in_flight} requests in flight")
        self.in_flight += 1
        self.metrics.in_flight.set(self.in_flight)
        return Ticket(self)


class Ticket:
    """One admitted request; a context manager that gives its slot and bytes back on exit."""

    def __init__(self, admission: Admission) -> None:
        self._admission = admission
        self.reserved = 0

    def reserve(self, n: int) -> None:
        """Account ``n`` more body bytes; 503 when the server's body budget would be exceeded."""
        adm = self._admission
        if adm.buffered + n > adm.limits.max_buffered_bytes:
            raise adm.busy(f"{adm.buffered} body bytes buffered")
        adm.buffered += n
        self.reserved += n
        adm.metrics.buffered_bytes.set(adm.buffered)

    def __enter__(self) -> Ticket:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        adm = self._admission
        adm.in_flight -= 1
        adm.buffered -= self.reserved
        self.reserved = 0
        adm.metrics.in_flight.set(adm.in_flight)
        adm.metrics.buffered_bytes.set(adm.buffered)
