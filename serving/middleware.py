"""Request metrics for every route: counts, durations, body sizes and errors, labelled by endpoint."""

from __future__ import annotations

import time
from typing import Any

from churnops.serving import metrics

# Paths labelled by name; anything else is counted as "other", so a scanner cannot blow up the label set.
KNOWN_PATHS = frozenset({"/predict", "/batch_predict", "/health", "/ready", "/model", "/metrics", "/admin/reload"})


class MetricsMiddleware:
    """Counts, times and sizes every request (pure ASGI: cheaper than BaseHTTPMiddleware on the hot path).

    Metric children are bound once per endpoint (and status) instead of `.labels()` on every request.
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        self._per_endpoint: dict[str, tuple[Any, Any, Any]] = {}
        self._per_status: dict[tuple[str, int], tuple[Any, Any]] = {}

    def _endpoint_children(self, endpoint: str) -> tuple[Any, Any, Any]:
        children = self._per_endpoint.get(endpoint)
        if children is None:
            children = (
                metrics.IN_FLIGHT.labels(endpoint=endpoint),
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

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        endpoint = scope["path"] if scope["path"] in KNOWN_PATHS else "other"
        in_flight, duration, body_size = self._endpoint_children(endpoint)
        status = [500]

        async def send_with_status(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        started = time.perf_counter()
        in_flight.inc()
        try:
            await self.app(scope, receive, send_with_status)
        finally:
            in_flight.dec()
            duration.observe(time.perf_counter() - started)
            requests, errors = self._status_children(endpoint, status[0])
            requests.inc()
            if errors is not None:
                errors.inc()
            for name, value in scope.get("headers", ()):
                if name == b"content-length" and value.isdigit():
                    body_size.observe(int(value))
