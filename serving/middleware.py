"""The API's pure ASGI middleware: request metrics for every route (counts, durations, body sizes and errors,
labelled by endpoint), and the direct dispatch of the two predict routes."""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from churnops.serving import metrics
from churnops.serving.problems import HEADERS_KEY, ApiProblem, decoded_headers

# Paths labelled by name; anything else is counted as "other", so a scanner cannot blow up the label set.
KNOWN_PATHS = frozenset({"/predict", "/batch_predict", "/health", "/ready", "/model", "/metrics", "/admin/reload"})


class MetricsMiddleware:
    """Counts, times and sizes every request (pure ASGI: cheaper than BaseHTTPMiddleware on the hot path).

    Metric children are bound once per endpoint (and status) instead of `.labels()` on every request.
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        self._per_endpoint: dict[str, tuple[Any, Any]] = {}
        self._per_status: dict[tuple[str, int], tuple[Any, Any]] = {}

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

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        endpoint = scope["path"] if scope["path"] in KNOWN_PATHS else "other"
        duration, body_size = self._endpoint_children(endpoint)
        status = [500]

        async def send_with_status(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        started = time.perf_counter()
        _IN_FLIGHT[endpoint] = _IN_FLIGHT.get(endpoint, 0) + 1
        try:
            await self.app(scope, receive, send_with_status)
        finally:
            _IN_FLIGHT[endpoint] -= 1
            buffer = metrics.BUFFER
            buffer.observe(duration, time.perf_counter() - started)
            requests, errors = self._status_children(endpoint, status[0])
            buffer.inc(requests)
            if errors is not None:
                buffer.inc(errors)
            for name, value in scope.get("headers", ()):
                if name == b"content-length" and value.isdigit():
                    buffer.observe(body_size, int(value))


# Requests being answered by this process, per endpoint: counted here, published to the gauge at each flush of the
# metric buffer (a gauge write per request was two mmap writes).
_IN_FLIGHT: dict[str, int] = {}


def _publish_in_flight() -> None:
    for endpoint, count in list(_IN_FLIGHT.items()):
        metrics.IN_FLIGHT.labels(endpoint=endpoint).set(count)


metrics.BUFFER.on_flush(_publish_in_flight)


class PredictRoutes:
    """POST /predict and /batch_predict go straight to their handlers, past FastAPI's routing, dependency solving
    and exception middleware (a third of a single-row request's CPU in the in-process profile). The routes stay
    declared in FastAPI as well, which documents them in OpenAPI. The handlers answer every refusal as an
    `ApiProblem`, answered here in the problem shape; anything else goes up to the app's 500 handler, as from a
    route. Only the exact paths and POST: other methods get FastAPI's 405, in the same problem shape.
    """

    def __init__(self, app: Any, handlers: dict[str, Any]) -> None:
        self.app = app
        # {path: async handler(request) -> the JSON body of a 200}, filled in by create_app
        self.handlers = handlers

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        handler = self.handlers.get(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        if handler is None:
            await self.app(scope, receive, send)
            return
        scope[HEADERS_KEY] = decoded_headers(scope["headers"])  # read by `headers_of`
        try:
            body: bytes = await handler(Request(scope, receive))
        except ApiProblem as problem:
            response = JSONResponse({"detail": problem.problems}, status_code=problem.status, headers=problem.headers)
            await response(scope, receive, send)
            return
        # The messages Starlette's Response(body, media_type="application/json") sends, without building one.
        await send({"type": "http.response.start", "status": 200, "headers": _json_headers(len(body))})
        await send({"type": "http.response.body", "body": body})


def _json_headers(length: int) -> list[tuple[bytes, bytes]]:
    return [(b"content-length", b"%d" % length), (b"content-type", b"application/json")]
