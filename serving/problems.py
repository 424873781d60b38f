"""How the API refuses a request: one problem shape (`{"detail": [{"loc", "type", "msg"}, ...]}`) for every 4xx and
5xx, and the request readers that raise it (a size-capped body, a parsed body, the `explain` flag)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any, NamedTuple
from urllib.parse import parse_qsl

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from churnops.serving.records import ProblemReport, validation_problems

JSON = "application/json"


class ApiProblem(Exception):
    """A request the API refuses, answered as `{"detail": [{"loc", "type", "msg"}, ...]}` with `status`."""

    def __init__(self, status: int, problems: list[dict[str, Any]], headers: dict[str, str] | None = None) -> None:
        super().__init__(problems)
        self.status = status
        self.problems = problems
        self.headers = headers

    @classmethod
    def one(cls, status: int, loc: list[str | int], kind: str, msg: str, **kwargs: Any) -> ApiProblem:
        return cls(status, [{"loc": loc, "type": kind, "msg": msg}], **kwargs)


class BodyLimit(NamedTuple):
    """The body cap of the served model and where it comes from (said in the 413)."""

    max_bytes: int
    source: str


def refuse_declared_body(content_type: str | None, content_length: str | None, limit: BodyLimit) -> None:
    """Refuse a body from its headers, before reading it: not declared `application/json` (415), a Content-Length
    that is no number (400) or over the limit (413).

    The 415 besides naming the problem keeps web pages out: a browser sends a cross-site POST without asking only as
    a form or text/plain, never as JSON."""
    media_type = content_type.split(";", 1)[0].strip().lower() if content_type else None
    if media_type != JSON:
        raise ApiProblem.one(
            415,
            ["header", "Content-Type"],
            "unsupported_media_type",
            f"send the body as JSON with the header Content-Type: {JSON}"
            + ("" if content_type is None else " (the type sent is not echoed)"),
        )
    if content_length is not None:
        if not content_length.isdigit():  # uvicorn usually answers this itself (docs/serving.md)
            raise ApiProblem.one(400, ["header", "Content-Length"], "invalid_header", "Content-Length is not a number")
        if int(content_length) > limit.max_bytes:
            raise ApiProblem.one(
                413,
                ["body"],
                "body_too_large",
                f"request body is {int(content_length):,} bytes; the limit is {limit.max_bytes:,} ({limit.source})",
            )


def body_over_limit(limit: BodyLimit) -> ApiProblem:
    """The 413 of a body found over the limit while reading it (a chunked body has no Content-Length)."""
    return ApiProblem.one(
        413, ["body"], "body_too_large", f"request body exceeds the limit of {limit.max_bytes:,} bytes ({limit.source})"
    )


async def read_capped_body(
    receive: Callable[[], Awaitable[dict[str, Any]]],
    content_type: str | None,
    content_length: str | None,
    limit: BodyLimit,
) -> bytes:
    """The JSON request body from its ASGI messages, refused (415, 413) from its headers, or (413) while reading once
    over the limit (a chunked body has no Content-Length)."""
    refuse_declared_body(content_type, content_length, limit)
    message = await receive()
    if message["type"] == "http.request" and not message.get("more_body", False):  # the whole body at once
        body: bytes = message.get("body", b"")
        if len(body) > limit.max_bytes:
            raise body_over_limit(limit)
        return body
    chunks: list[bytes] = []
    size = 0
    while True:
        if message["type"] != "http.request":  # http.disconnect: what Starlette's `request.stream()` raises
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit.max_bytes:
            raise body_over_limit(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)
        message = await receive()


_ADMIN_BODY_LIMIT = BodyLimit(1024, "an admin request takes no body")
# An admin call's body: none, or an empty JSON object.
ADMIN_REQUEST_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": False,
        "content": {JSON: {"schema": {"type": "object", "maxProperties": 0}}},
        "description": "none, or {}; the Content-Type must be application/json either way",
    }
}


async def read_admin_request(request: Request) -> None:
    """Refuse an admin call a web page could send: with auth off (the default) nothing else stops a page from
    POSTing to the API on localhost, but a page can send a cross-site JSON request only after a CORS preflight, and
    the API approves none. The body, if any, must be `{}`."""
    headers = request.headers
    body = await read_capped_body(
        request.receive, headers.get("content-type"), headers.get("content-length"), _ADMIN_BODY_LIMIT
    )
    if body.strip() and body.strip() != b"{}":
        raise ApiProblem.one(422, ["body"], "extra_forbidden", "an admin request takes no body, or {}")


def parse_body(model_type: type[BaseModel], body: bytes, batch_limit: BatchLimit | None = None) -> Any:
    """The body validated by `model_type`, or a 422 listing every problem (the detailed path: serving/fast_body.py
    reads the plain bodies before this)."""
    try:
        return model_type.model_validate_json(body)
    except ValidationError as error:
        problems = validation_problems(error.errors())
        if batch_limit is not None:
            for problem, raw in zip(problems, error.errors(), strict=True):
                if raw["type"] == "too_long" and list(raw["loc"]) == ["instances"]:
                    problem["msg"] = batch_limit.message(raw.get("ctx", {}).get("actual_length"))
        raise ApiProblem(422, problems) from None


class BatchLimit:
    """What a batch over `serving.max_batch_rows` is told: the limit, and the command that scores a file of any
    size with the same model (`churnops score --input`)."""

    def __init__(self, max_rows: int, dataset: str) -> None:
        self.max_rows = max_rows
        self.dataset = dataset

    def message(self, rows: int | None) -> str:
        sent = f"{rows:,} instances" if rows is not None else "more instances"
        return (
            f"{sent} in one batch; the limit is {self.max_rows:,} (serving.max_batch_rows). Send smaller batches, "
            f"or score the whole file offline with the same champion: churnops score --dataset {self.dataset} "
            "--input FILE"
        )


_TRUE = frozenset({"1", "true", "t", "yes", "y", "on"})
_FALSE = frozenset({"0", "false", "f", "no", "n", "off"})


def explain_flag(query_string: bytes) -> bool:
    """The `explain` query parameter of a raw query string, parsed by hand: FastAPI's parameter machinery costs about
    a third of a single-row prediction. Read as Starlette's `query_params` would (the last value of a repeated
    name); accepts what pydantic's bool accepts; anything else is a 422 naming it."""
    if not query_string:  # the usual call: no query string to parse
        return False
    raw = dict(parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)).get("explain")
    if raw is None:
        return False
    value = raw.strip().lower()
    if value in _TRUE or value in _FALSE:
        return value in _TRUE
    raise ApiProblem.one(422, ["query", "explain"], "bool_parsing", "Input should be a valid boolean (true or false)")


def instance_loc(prefix: tuple[str | int, ...], index: int, field: str) -> list[str | int]:
    """Where one instance's field sits in a request: `[field]` for /predict, `[instances, i, field]` in a batch."""
    return [*prefix, index, field] if prefix else [field]


def predict_openapi(schema_name: str) -> dict[str, Any]:
    """openapi_extra of a predict route, which reads its body, query and key itself: the body schema is filled
    in per served model (see `openapi` in serving/app.py)."""
    return {
        "requestBody": {
            "required": True,
            "content": {JSON: {"schema": {"$ref": f"#/components/schemas/{schema_name}"}}},
        },
        "parameters": [
            {
                "name": "explain",
                "in": "query",
                "required": False,
                "schema": {"type": "boolean", "default": False},
                "description": (
                    "add the top contributing features (shares of the log-odds: SHAP values for LightGBM, "
                    "the terms of the logit for the logistic regression)"
                ),
            }
        ],
        "security": [{"APIKeyHeader": []}],
    }


# The problems a route can answer, for its OpenAPI description.
PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ProblemReport, "description": text}
    for code, text in {
        400: "malformed header",
        401: "missing or invalid API key",
        403: "missing or invalid admin token (POST /admin/reload)",
        404: "customer_id not in the online feature table",
        409: "published features do not match the served model's schema",
        413: "body over the body cap (derived from serving.max_batch_rows and the schema, or serving.max_body_bytes)",
        415: "the body is not declared Content-Type: application/json",
        422: "invalid request: every problem with its field",
        503: "no model loaded yet, or the online feature table is unavailable",
    }.items()
}


# What the client learns of an unexpected exception: nothing of the internals (the traceback is in the server log).
INTERNAL_ERROR = {"detail": [{"loc": [], "type": "internal_error", "msg": "internal error; it is in the server log"}]}

# What the API says for the errors Starlette raises itself: the kind only, never the path or method sent.
_HTTP_PROBLEMS: dict[int, tuple[str, str]] = {
    404: ("not_found", "no such route; the routes are listed at /docs and /openapi.json"),
    405: ("method_not_allowed", "this route does not take that method; see the Allow header"),
}


def install_problem_handlers(app: FastAPI) -> None:
    """Answer every refusal in the problem shape: the API's own, pydantic's, Starlette's (404, 405, ...) and an
    unexpected exception (500, details in the log only)."""

    @app.exception_handler(ApiProblem)
    async def api_problem(_: Request, problem: ApiProblem) -> JSONResponse:
        return JSONResponse({"detail": problem.problems}, status_code=problem.status, headers=problem.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_parameters(_: Request, error: RequestValidationError) -> JSONResponse:
        # FastAPI's default echoes the submitted values (`input`); they may be personal data.
        return JSONResponse({"detail": validation_problems(list(error.errors()))}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_problem(_: Request, error: StarletteHTTPException) -> JSONResponse:
        kind, msg = _HTTP_PROBLEMS.get(error.status_code, ("http_error", HTTPStatus(error.status_code).phrase))
        return JSONResponse(
            {"detail": [{"loc": [], "type": kind, "msg": msg}]}, status_code=error.status_code, headers=error.headers
        )

    @app.exception_handler(Exception)
    async def unexpected(_: Request, _error: Exception) -> JSONResponse:
        # Starlette logs the exception after this answer; the client learns nothing of the internals.
        return JSONResponse(INTERNAL_ERROR, status_code=500)
