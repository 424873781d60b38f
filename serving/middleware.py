"""Request metrics for every route (counts, durations, body sizes and errors, labelled by endpoint): the bookkeeping
shared by the predict routes' dispatch (serving/asgi.py) and the pure ASGI middleware of the FastAPI app."""

from __future__ import annotations

import time
from typing import Any

from churnops.serving import metrics

# Paths labelled by name; anything else is counted as "other", so a scanner cannot blow up the label set.
KNOWN_PATHS = frozenset({"/predict", "/batch_predict", "/health", "/ready", "/model", "/metrics", "/admin/reload"})


class RequestMetrics:
    """Counts, times and sizes requests through the metric buffer.

    Metric children are bound once per endpoint (and status) instead of `.labels()` on every request.
    """

    def __init__(self) -> None:
        self._per_endpoint: dict[str, tuple[Any, Any]] = {}
        self._per_status: dict[tuple[str, int], tuple[Any, Any]] = {}

    def started(self, endpoint: str) -> float:
        """Count `endpoint`'s request in flight; returns its start time, for `answered`."""
        _IN_FLIGHT[endpoint] = _IN_FLIGHT.get(endpoint, 0) + 1
        return time.perf_counter()

    def answered(self, endpoint: str, started: float, status: int, content_length: bytes | None) -> None:
        """The request `started` is done with `status` (500 when no response was started); `content_length` is
        its header's raw value, if any."""
        _IN_FLIGHT[endpoint] -= 1
        duration, body_size = self._endpoint_children(endpoint)
        buffer = metrics.BUFFER
        buffer.observe(duration, time.perf_counter() - started)
        requests, errors = self._status_children(endpoint, status)
        buffer.inc(requests)
        if errors is not None:
            buffer.inc(errors)
        if content_length is not None and content_length.isdigit():
            buffer.observe(body_size, int(content_length))

    def _endpoint_children(self, endpoint: str) -> tuple[Any, Any]:
        children = self._per_endpoint.get(endpoint)
        if children is None:
            children = (
                metrics.REQUEST_DURATION.labels(endpoint=endpoint),
                metrics.REQUEST_BODY.labels(endpoint=endpoint),
            )
            self._per_endpoint[endpoint] = children
        return children

    def _status_children(self, endpoint: str, code: int) -> tuple[Any, Any]:
        children = self._per_status.get((endpoint, code))
        if children is None:
            kind = "client" if code < 500 else "server"
            children = (
                metrics.REQUESTS.labels(endpoint=endpoint, status=str(code)),
                metrics.ERRORS.labels(endpoint=endpoint, kind=kind) if code >= 400 else None,
            )
            self._per_status[(endpoint, code)] = children
        return children


class MetricsMiddleware:
    """`RequestMetrics` of every request the FastAPI app answers (pure ASGI: cheaper than BaseHTTPMiddleware)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.metrics = RequestMetrics()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        endpoint = scope["path"] if scope["path"] in KNOWN_PATHS else "other"
        status = [500]

        async def send_with_status(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        started = self.metrics.started(endpoint)
        try:
            await self.app(scope, receive, send_with_status)
        finally:
            content_length = next((value for name, value in scope["headers"] if name == b"content-length"), None)
            self.metrics.answered(endpoint, started, status[0], content_length)


# Requests being answered by this process, per endpoint: counted here, published to the gauge at each flush of the
# metric buffer (a gauge write per request was two mmap writes).
_IN_FLIGHT: dict[str, int] = {}


def _publish_in_flight() -> None:
    for endpoint, count in list(_IN_FLIGHT.items()):
        metrics.IN_FLIGHT.labels(endpoint=endpoint).set(count)


metrics.BUFFER.on_flush(_publish_in_flight)
