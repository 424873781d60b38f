"""How the API refuses a request: one problem shape (`{"detail": [{"loc", "type", "msg"}, ...]}`) for every 4xx and
5xx, and the request readers that raise it (a size-capped body, a parsed body, the `explain` flag)."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from pydantic import BaseModel, ValidationError

from serving.records import ProblemReport, validation_problems

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


async def read_capped_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) a declared or actual size over `limit` before reading more than that."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ApiProblem.one(400, ["header", "content-length"], "invalid_header", "Content-Length is not a number")
        if int(declared) > limit:
            raise ApiProblem.one(
                413,
                ["body"],
                "body_too_large",
                f"request body is {int(declared)} bytes; the limit is {limit} (serving.max_body_bytes)",
            )
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():  # a chunked body has no Content-Length: count while reading
        size += len(chunk)
        if size > limit:
            raise ApiProblem.one(
                413,
                ["body"],
                "body_too_large",
                f"request body exceeds the limit of {limit} bytes (serving.max_body_bytes)",
            )
        chunks.append(chunk)
    return b"".join(chunks)


def parse_body(model_type: type[BaseModel], body: bytes, batch_limit: BatchLimit | None = None) -> Any:
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


def explain_flag(request: Request) -> bool:
    """The `explain` query parameter, parsed by hand: FastAPI's parameter machinery costs about a third of a
    single-row prediction. Accepts what pydantic's bool accepts; anything else is a 422 naming it."""
    raw = request.query_params.get("explain")
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
                "description": "add the top contributing features (LightGBM SHAP values, log-odds)",
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
        413: "body over serving.max_body_bytes",
        422: "invalid request: every problem with its field",
        503: "no model loaded yet, or the online feature table is unavailable",
    }.items()
}
