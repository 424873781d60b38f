"""The churnops prediction API.

`uvicorn serving.app:app` serves the `champion` of the configured dataset's model (docs/serving.md). Endpoints:
`POST /predict` (one customer: a full feature record, or a `customer_id` looked up in the online feature table),
`POST /batch_predict`, `GET /health` (alive), `GET /ready` (a model is loaded), `GET /model`, `GET /metrics`,
`POST /admin/reload`.

The hot path is deliberately lean: the body is read with a size cap and validated straight from JSON bytes by a
pydantic model generated from the model's feature schema, rows are encoded into numpy without pandas, the native
LightGBM booster scores them on one thread, and the prediction log is a non-blocking queue put.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hmac
import math
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

from fastapi import FastAPI, Request, Response, Security
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ValidationError

from churnops.config import Settings
from churnops.dataset import load_contract
from serving import metrics
from serving.online import OnlineFeatureReader, OnlineStoreUnavailable
from serving.prediction_log import PredictionLog
from serving.records import (
    BatchPrediction,
    Prediction,
    ProblemReport,
    ScoredCustomer,
    validation_problems,
)
from serving.state import ModelState, ServedModel

JSON = "application/json"
_KNOWN_PATHS = {"/predict", "/batch_predict", "/health", "/ready", "/model", "/metrics", "/admin/reload"}


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


class _MetricsMiddleware:
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
        endpoint = scope["path"] if scope["path"] in _KNOWN_PATHS else "other"
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


def _matches(expected: Any, given: str | None) -> bool:
    # Constant-time comparison: the time to refuse a key says nothing about how much of it was right.
    return given is not None and hmac.compare_digest(expected.get_secret_value().encode(), given.encode())


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


def _parse(model_type: type[BaseModel], body: bytes) -> Any:
    try:
        return model_type.model_validate_json(body)
    except ValidationError as error:
        raise ApiProblem(422, validation_problems(error.errors())) from None


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


def _predict_openapi(schema_name: str) -> dict[str, Any]:
    """openapi_extra of a predict route, which reads its body, query and key itself: the body schema is filled
    in per served model (see `openapi` in create_app)."""
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


_PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
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


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the API for `settings` (default: from the environment). The model loads at start-up (lifespan)."""
    settings = settings or Settings()
    serving = settings.serving
    contract = load_contract(settings.dataset, settings)
    model_name = contract.model_name
    state = ModelState(settings, model_name)
    prediction_log = PredictionLog(settings)
    online = OnlineFeatureReader(settings, contract.name)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        first_load = asyncio.create_task(asyncio.to_thread(state.refresh))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(first_load), timeout=serving.startup_load_timeout_seconds)
        prediction_log.start()
        poller = asyncio.create_task(state.poll())
        try:
            yield
        finally:
            poller.cancel()
            first_load.cancel()
            await asyncio.to_thread(prediction_log.close)
            online.close()

    app = FastAPI(
        title="churnops API",
        version="2",
        summary=f"Churn probability of {contract.name} customers from the champion of {model_name}",
        lifespan=lifespan,
    )
    app.add_middleware(_MetricsMiddleware)
    app.state.model_state = state
    app.state.prediction_log = prediction_log

    @app.exception_handler(ApiProblem)
    async def api_problem(_: Request, problem: ApiProblem) -> JSONResponse:
        return JSONResponse({"detail": problem.problems}, status_code=problem.status, headers=problem.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_parameters(_: Request, error: RequestValidationError) -> JSONResponse:
        # FastAPI's default echoes the submitted values (`input`); they may be personal data.
        return JSONResponse({"detail": validation_problems(list(error.errors()))}, status_code=422)

    admin_bearer = HTTPBearer(auto_error=False, description="serving.admin_token")

    def require_api_key(api_key: str | None) -> None:
        if serving.api_key is not None and not _matches(serving.api_key, api_key):
            raise ApiProblem.one(
                401,
                ["header", "X-API-Key"],
                "unauthorized",
                "missing or invalid API key (header X-API-Key)",
                headers={"WWW-Authenticate": "APIKey"},
            )

    def served() -> ServedModel:
        current = state.current
        if current is None:
            raise ApiProblem.one(503, [], "no_model", f"no model loaded yet: {state.last_error or 'loading'}")
        return current

    def log_predictions(
        endpoint: str,
        current: ServedModel,
        rows: list[tuple[str | None, Mapping[str, Any], float, bool, str]],
        request: Request,
        started: float,
    ) -> None:
        if not prediction_log.enabled:
            return
        logged_at = dt.datetime.now(dt.UTC)
        request_id = request.headers.get("x-request-id")
        latency = time.perf_counter() - started
        for customer_id, features, score, decision, band in rows:
            prediction_log.submit(
                {
                    "logged_at": logged_at,
                    "request_id": request_id,
                    "endpoint": endpoint,
                    "customer_id": customer_id,
                    "model_name": current.model.name,
                    "model_version": current.version,
                    "score": score,
                    "decision": decision,
                    "risk_band": band,
                    "latency_seconds": latency,
                    "features": features,
                }
            )

    async def resolve_features(
        current: ServedModel, instances: list[Any], loc_prefix: tuple[str | int, ...]
    ) -> tuple[list[Mapping[str, Any]], list[str | None]]:
        """Each instance's features: its own, or the customer's published row validated against the schema."""
        features: list[Mapping[str, Any] | None] = []
        cutoffs: list[str | None] = []
        to_look_up: dict[str, list[int]] = {}
        for index, instance in enumerate(instances):
            if instance.features is not None:
                features.append(instance.features.__dict__)
            elif instance.customer_id is None:
                raise ApiProblem.one(
                    422,
                    _instance_loc(loc_prefix, index, "features"),
                    "missing",
                    "Field required: send the customer's features, or only a customer_id to use its published features",
                )
            else:
                features.append(None)
                to_look_up.setdefault(instance.customer_id, []).append(index)
            cutoffs.append(None)
        if to_look_up:
            try:
                found = await online.fetch(list(to_look_up))
            except OnlineStoreUnavailable as error:
                raise ApiProblem.one(503, ["customer_id"], "online_store_unavailable", str(error)) from None
            absent = [customer for customer in to_look_up if customer not in found]
            if absent:
                raise ApiProblem(
                    404,
                    [
                        {
                            "loc": _instance_loc(loc_prefix, index, "customer_id"),
                            "type": "not_found",
                            "msg": f"customer_id {customer!r} has no published features in dataset {contract.name!r}",
                        }
                        for customer in absent[:20]
                        for index in to_look_up[customer][:1]
                    ],
                )
            for customer, indices in to_look_up.items():
                published = found[customer]
                record = _published_record(current, published.features, customer)
                for index in indices:
                    features[index] = record
                    cutoffs[index] = published.cutoff.isoformat()
        return features, cutoffs  # type: ignore[return-value]

    def _published_record(current: ServedModel, stored: Mapping[str, Any], customer: str) -> Mapping[str, Any]:
        wanted = {name: stored[name] for name in current.model.schema.columns if name in stored}
        try:
            return current.record_type.model_validate(wanted).__dict__
        except ValidationError as error:
            problems = validation_problems(error.errors(), prefix=("online_features", customer))
            for problem in problems:
                problem["msg"] = (
                    f"published features of customer {customer!r} do not fit model v{current.version}: "
                    f"{problem['msg']} (republish the online features)"
                )
            raise ApiProblem(409, problems) from None

    def scored_customers(
        current: ServedModel,
        instances: list[Any],
        features: list[Mapping[str, Any]],
        cutoffs: list[str | None],
        explain: bool,
    ) -> tuple[list[ScoredCustomer], list[tuple[str | None, Mapping[str, Any], float, bool, str]]]:
        scores = current.score(features)
        explanations = current.explain(features, serving.explain_top_features) if explain else None
        threshold = current.model.threshold
        results = []
        logged = []
        for i, (instance, score) in enumerate(zip(instances, scores.tolist(), strict=True)):
            if not math.isfinite(score):
                raise ApiProblem.one(500, [], "model_error", f"model v{current.version} produced a non-finite score")
            decision = score >= threshold
            band = current.bands.band(score)
            results.append(
                ScoredCustomer(
                    customer_id=instance.customer_id,
                    probability=score,
                    decision=decision,
                    risk_band=band,
                    feature_source="request" if instance.features is not None else "online_store",
                    features_cutoff=cutoffs[i],
                    explanation=explanations[i] if explanations else None,
                )
            )
            logged.append((instance.customer_id, features[i], score, decision, band))
        return results, logged

    @app.post(
        "/predict",
        response_model=Prediction,
        responses=_PROBLEM_RESPONSES,
        openapi_extra=_predict_openapi("PredictRequest"),
        summary="Churn probability of one customer",
    )
    async def predict(
        request: Request,
    ) -> Response:
        started = time.perf_counter()
        require_api_key(request.headers.get("x-api-key"))
        explain = explain_flag(request)
        current = served()
        instance = _parse(current.request_type, await read_capped_body(request, serving.max_body_bytes))
        features, cutoffs = await resolve_features(current, [instance], ())
        (result,), logged = scored_customers(current, [instance], features, cutoffs, explain)
        prediction = Prediction(
            **result.__dict__,
            threshold=current.model.threshold,
            model_name=current.model.name,
            model_version=current.version,
        )
        log_predictions("/predict", current, logged, request, started)
        return Response(prediction.model_dump_json(), media_type=JSON)

    @app.post(
        "/batch_predict",
        response_model=BatchPrediction,
        responses=_PROBLEM_RESPONSES,
        openapi_extra=_predict_openapi("BatchPredictRequest"),
        summary=f"Churn probabilities of 1 to {serving.max_batch_rows} customers",
    )
    async def batch_predict(
        request: Request,
    ) -> Response:
        started = time.perf_counter()
        require_api_key(request.headers.get("x-api-key"))
        explain = explain_flag(request)
        current = served()
        batch = _parse(current.batch_type, await read_capped_body(request, serving.max_body_bytes))
        metrics.BATCH_ROWS.observe(len(batch.instances))
        features, cutoffs = await resolve_features(current, batch.instances, ("instances",))
        results, logged = scored_customers(current, batch.instances, features, cutoffs, explain)
        response = BatchPrediction(
            model_name=current.model.name,
            model_version=current.version,
            threshold=current.model.threshold,
            predictions=results,
        )
        log_predictions("/batch_predict", current, logged, request, started)
        return Response(response.model_dump_json(), media_type=JSON)

    @app.get("/health", summary="Liveness: the process answers (no dependency checked)")
    async def health() -> dict[str, str]:
        return {"status": "alive"}

    @app.get(
        "/ready",
        summary="Readiness: a model is loaded (503 until then)",
        responses={503: {"description": "no model loaded yet (the reason's kind only; details are in the logs)"}},
    )
    async def ready() -> JSONResponse:
        current = state.current
        if current is None:
            # Only the kind of failure: the full message can name internal hosts, and /ready is unauthenticated.
            reason = state.last_error.split(":", 1)[0] if state.last_error else "loading"
            return JSONResponse({"ready": False, "reason": reason}, status_code=503)
        return JSONResponse(
            {
                "ready": True,
                "model_name": model_name,
                "model_version": current.version,
                # Set while the latest reload failed: the version above keeps serving.
                "last_reload_error": state.last_error,
            }
        )

    @app.get("/model", responses=_PROBLEM_RESPONSES, summary="The served model: version, metrics, schema, lineage")
    async def model_card() -> dict[str, Any]:
        current = served()
        model = current.model
        meta = model.metadata
        return {
            "name": model.name,
            "version": model.version,
            "alias": "champion",
            "threshold": model.threshold,
            "risk_bands": current.bands.describe(),
            "feature_schema": model.schema.to_dict(),
            "training_metrics": meta.get("out_of_time_metrics", {}),
            "lineage": {
                k: meta.get(k)
                for k in ("training_run_id", "snapshot_hash", "git_commit", "dataset", "out_of_time_cutoff")
            },
            "loaded_at": model.loaded_at,
            "reload": state.status.describe(),
            "prediction_log": prediction_log.describe(),
        }

    @app.post("/admin/reload", responses=_PROBLEM_RESPONSES, summary="Load the champion now (this worker)")
    async def reload(credentials: HTTPAuthorizationCredentials | None = Security(admin_bearer)) -> dict[str, Any]:
        token = serving.admin_token
        if token is not None and not _matches(token, credentials.credentials if credentials else None):
            raise ApiProblem.one(
                403, ["header", "Authorization"], "forbidden", "admin token required (Authorization: Bearer ...)"
            )
        changed = await asyncio.to_thread(state.refresh)
        current = state.current
        return {
            "reloaded": changed,
            "model_version": current.version if current else None,
            "error": state.last_error,
        }

    @app.get(
        "/metrics",
        summary="Prometheus exposition (aggregated over workers in multiprocess mode)",
        response_class=PlainTextResponse,
    )
    async def prometheus_metrics() -> Response:
        payload, content_type = metrics.render_metrics()
        return Response(payload, media_type=content_type)

    def openapi() -> dict[str, Any]:
        """OpenAPI with the request schemas of the model being served (they change when the champion does)."""
        document = get_openapi(
            title=app.title, version=app.version, summary=app.summary, routes=app.routes, servers=app.servers
        )
        components = document.setdefault("components", {})
        components.setdefault("securitySchemes", {})["APIKeyHeader"] = {
            "type": "apiKey",
            "in": "header",
            "name": "X-API-Key",
            "description": "serving.api_key (no key needed when it is not configured)",
        }
        schemas = components.setdefault("schemas", {})
        current = state.current
        if current is None:
            schemas["PredictRequest"] = schemas["BatchPredictRequest"] = {"type": "object"}
            return document
        for model_type in (current.request_type, current.batch_type):
            generated = model_type.model_json_schema(ref_template="#/components/schemas/{model}")
            schemas.update(generated.pop("$defs", {}))
            schemas[model_type.__name__] = generated
        return document

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def _instance_loc(prefix: tuple[str | int, ...], index: int, field: str) -> list[str | int]:
    return [*prefix, index, field] if prefix else [field]


def __getattr__(name: str) -> Any:
    # `uvicorn serving.app:app` builds the app lazily, so importing this module (tests, tools) loads no model.
    if name == "app":
        return create_app()
    raise AttributeError(name)


__all__ = ["create_app", "read_capped_body"]
