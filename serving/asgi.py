"""The ASGI app uvicorn serves: POST /predict and /batch_predict answered here, everything else by the FastAPI app.

A single-row prediction's own work is a few tens of microseconds; FastAPI's and Starlette's layers around it (the
exception and error middleware, routing, a `Request` per call, its headers decoded whole) cost as much again. So
the two predict routes bypass them: their handlers take a `PredictCall` (the four headers they read and the body's
`receive`), this app keeps the request metrics the FastAPI app's middleware keeps for every other route (same
metrics, same labels), and answers a refusal (`ApiProblem`) or an unexpected exception (500, re-raised afterwards
for the server to log, as Starlette does) in the API's problem shape. Lifespan, the other routes, other methods on
these paths (405) and OpenAPI (which documents the predict routes: they stay declared in FastAPI) go to the FastAPI
app unchanged.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI
from starlette.datastructures import State
from starlette.responses import JSONResponse

from churnops.serving.middleware import RequestMetrics
from churnops.serving.problems import INTERNAL_ERROR, ApiProblem, BodyLimit, read_capped_body


class PredictCall:
    """What a predict handler reads of its request: four headers (decoded as Starlette does, latin-1; of a repeated
    name the first value, which is what Starlette's `headers.get` answers), the raw query string and the body."""

    __slots__ = ("api_key", "content_length", "content_type", "query_string", "receive", "request_id")

    def __init__(self, scope: dict[str, Any], receive: Callable[[], Awaitable[dict[str, Any]]]) -> None:
        self.receive = receive
        self.query_string: bytes = scope.get("query_string", b"")
        found: dict[bytes, bytes] = {}
        for name, value in scope["headers"]:  # one pass; names are lower-case in ASGI
            if name in _READ and name not in found:
                found[name] = value
        api_key, request_id, content_type = (
            found.get(b"x-api-key"),
            found.get(b"x-request-id"),
            found.get(b"content-type"),
        )
        self.api_key = api_key.decode("latin-1") if api_key is not None else None
        self.request_id = request_id.decode("latin-1") if request_id is not None else None
        self.content_type = content_type.decode("latin-1") if content_type is not None else None
        self.content_length: bytes | None = found.get(b"content-length")


_READ = frozenset({b"x-api-key", b"x-request-id", b"content-type", b"content-length"})


async def receive_body(call: PredictCall, limit: BodyLimit) -> bytes:
    """The JSON request body, refused (415, 413) from its headers, or (413) while reading once over the limit."""
    length = call.content_length
    return await read_capped_body(
        call.receive, call.content_type, length.decode("latin-1") if length is not None else None, limit
    )


PredictHandler = Callable[[PredictCall], Awaitable[bytes]]


class ServingApp:
    """The API as served: `handlers` ({path: handler returning the JSON body of a 200}) for POST on their exact
    paths, `api` for everything else. `state` is the FastAPI app's."""

    def __init__(self, api: FastAPI, handlers: dict[str, PredictHandler]) -> None:
        self.api = api
        self.handlers = handlers
        self.metrics = RequestMetrics()

    @property
    def state(self) -> State:
        return self.api.state

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            path = scope["path"]
            handler = self.handlers.get(path)
            if handler is not None:
                await self._predict(handler, path, PredictCall(scope, receive), scope, send)
                return
        await self.api(scope, receive, send)

    async def _predict(
        self, handler: PredictHandler, path: str, call: PredictCall, scope: dict[str, Any], send: Any
    ) -> None:
        started = self.metrics.started(path)
        status = 500  # also when the client went away before any answer
        try:
            try:
                body = await handler(call)
            except ApiProblem as problem:
                status = problem.status
                response = JSONResponse({"detail": problem.problems}, status_code=status, headers=problem.headers)
                await response(scope, call.receive, send)
                return
            except Exception:
                await JSONResponse(INTERNAL_ERROR, status_code=500)(scope, call.receive, send)
                raise  # for the server to log, with its traceback (Starlette's ServerErrorMiddleware does the same)
            status = 200
            # The messages Starlette's Response(body, media_type="application/json") sends, without building one.
            await send({"type": "http.response.start", "status": 200, "headers": json_headers(len(body))})
            await send({"type": "http.response.body", "body": body})
        finally:
            self.metrics.answered(path, started, status, call.content_length)


def json_headers(length: int) -> list[tuple[bytes, bytes]]:
    return [(b"content-length", b"%d" % length), (b"content-type", b"application/json")]
