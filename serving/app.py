"""The churnops prediction API.

`uvicorn churnops.serving.app:app` serves the `champion` of the configured dataset's model (docs/serving.md). Endpoints:
`POST /predict` (one customer: a full feature record, or a `customer_id` looked up in the online feature table),
`POST /batch_predict`, `GET /health` (alive), `GET /ready` (a model is loaded), `GET /model`, `GET /metrics`,
`POST /admin/reload`.

The hot path is deliberately lean: the body is read with a size cap, parsed once by orjson and checked and encoded
column-wise into the model's matrix (serving/fast_body.py; any other body goes through pydantic models generated
from the model's feature schema, which word every 422), the native booster scores the whole request in one call,
the response is serialised by orjson in one call, and the prediction log is one non-blocking queue put per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
from fastapi import FastAPI, Request, Response, Security
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from churnops.config import Settings
from churnops.dataset import load_contract
from churnops.serving import metrics
from churnops.serving.asgi import PredictCall, PredictHandler, ServingApp, receive_body
from churnops.serving.exposure import refuse_open_exposure
from churnops.serving.list_fields import ListFields
from churnops.serving.middleware import MetricsMiddleware
from churnops.serving.online import OnlineFeatureReader
from churnops.serving.pages import pages_router
from churnops.serving.prediction_log import PredictionLog
from churnops.serving.problems import (
    ADMIN_REQUEST_OPENAPI,
    PROBLEM_RESPONSES,
    ApiProblem,
    BatchLimit,
    explain_flag,
    install_problem_handlers,
    parse_body,
    predict_openapi,
    read_admin_request,
)
from churnops.serving.records import BatchPrediction, Prediction, scored_items
from churnops.serving.scoring import PredictionService, secret_matches
from churnops.serving.state import ModelState


def create_app(settings: Settings | None = None) -> ServingApp:
    """Build the API for `settings` (default: from the environment). The model loads at start-up (lifespan).

    The predict routes are answered by the returned app itself (serving/asgi.py); the rest by its FastAPI app,
    `.api`."""
    settings = settings or Settings()
    serving = settings.serving
    refuse_open_exposure(serving)
    contract = load_contract(settings.dataset, settings)
    model_name = contract.model_name
    state = ModelState(settings, model_name)
    prediction_log = PredictionLog(settings)
    online = OnlineFeatureReader(settings, contract.name)
    service = PredictionService(serving, contract.name, state, online, prediction_log)
    list_fields = ListFields(contract, online)
    # The dataset as configured (a built-in name or a contract path): what `churnops score --dataset` takes.
    batch_limit = BatchLimit(serving.max_batch_rows, settings.dataset)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        first_load = asyncio.create_task(asyncio.to_thread(state.refresh))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(first_load), timeout=serving.startup_load_timeout_seconds)
        prediction_log.start()
        # What start-up allocated (modules, the model, the request models) lives as long as the worker: out of the
        # collector's sight, a full collection no longer walks it in the middle of a request (p99).
        gc.collect()
        gc.freeze()
        poller = asyncio.create_task(state.poll())
        metrics_flusher = asyncio.create_task(metrics.BUFFER.flush_periodically())
        try:
            yield
        finally:
            poller.cancel()
            metrics_flusher.cancel()
            first_load.cancel()
            await asyncio.to_thread(prediction_log.close)
            online.close()

    app = FastAPI(
        title="churnops API",
        version="2",
        summary=f"Churn probability of {contract.name} customers from the champion of {model_name}",
        lifespan=lifespan,
    )
    app.add_middleware(MetricsMiddleware)  # the predict routes' metrics are kept by ServingApp
    app.state.model_state = state
    app.state.prediction_log = prediction_log

    install_problem_handlers(app)

    admin_bearer = HTTPBearer(auto_error=False, description="serving.admin_token")

    async def predict(call: PredictCall) -> bytes:
        started = time.perf_counter()
        service.require_api_key(call.api_key)
        explain = explain_flag(call.query_string)
        current = service.served()
        body = await receive_body(call, current.body_limit)
        rows = current.fast_reader.single(body)
        if rows is None:  # leniency, an online look-up, or a 422: the detailed path
            instance = parse_body(current.request_type, body)
            rows = await service.rows_of_instances(current, [instance], ())
        scored = service.score_rows(current, rows, explain)
        (prediction,) = scored_items(rows.customer_ids, rows.online_cutoffs, scored)
        prediction |= {
            "threshold": current.model.threshold,
            "model_name": current.model.name,
            "model_version": current.version,
        }
        await list_fields.add_to([prediction], rows.customer_ids)  # the stored list's value and survival columns
        service.log_predictions("/predict", current, rows, scored, call.request_id, started)
        return orjson.dumps(prediction)

    async def batch_predict(call: PredictCall) -> bytes:
        started = time.perf_counter()
        service.require_api_key(call.api_key)
        explain = explain_flag(call.query_string)
        current = service.served()
        body = await receive_body(call, current.body_limit)
        rows = current.fast_reader.batch(body)
        if rows is None:  # leniency, online look-ups, or a 422: the detailed path
            batch = parse_body(current.batch_type, body, batch_limit)
            rows = await service.rows_of_instances(current, batch.instances, ("instances",))
        metrics.BUFFER.observe(metrics.BATCH_ROWS, len(rows.customer_ids))
        scored = service.score_rows(current, rows, explain, ("instances",))
        predictions = scored_items(rows.customer_ids, rows.online_cutoffs, scored)
        await list_fields.add_to(predictions, rows.customer_ids)  # one query for the whole batch
        response = {
            "model_name": current.model.name,
            "model_version": current.version,
            "threshold": current.model.threshold,
            "predictions": predictions,
        }
        service.log_predictions("/batch_predict", current, rows, scored, call.request_id, started)
        return orjson.dumps(response)

    predict_handlers: dict[str, PredictHandler] = {"/predict": predict, "/batch_predict": batch_predict}
    # Declared in FastAPI too, for OpenAPI and for the FastAPI app on its own (`.api`); ServingApp answers them first.
    app.post(
        "/predict",
        response_model=Prediction,
        responses=PROBLEM_RESPONSES,
        openapi_extra=predict_openapi("PredictRequest"),
        summary="Churn probability of one customer",
    )(_route(predict))
    app.post(
        "/batch_predict",
        response_model=BatchPrediction,
        responses=PROBLEM_RESPONSES,
        openapi_extra=predict_openapi("BatchPredictRequest"),
        summary=f"Churn probabilities of 1 to {serving.max_batch_rows} customers",
    )(_route(batch_predict))

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
            reason = state.status.last_error_kind or "loading"
            # `detail` too: every 4xx/5xx of the API carries the problem shape.
            problem = {"loc": [], "type": "no_model", "msg": f"no model loaded yet: {reason}"}
            return JSONResponse({"ready": False, "reason": reason, "detail": [problem]}, status_code=503)
        return JSONResponse(
            {
                "ready": True,
                "model_name": model_name,
                "model_version": current.version,
                # Set while the latest reload failed: the version above keeps serving.
                "last_reload_error": state.status.last_error_kind,
            }
        )

    @app.get("/model", responses=PROBLEM_RESPONSES, summary="The served model: version, metrics, schema, lineage")
    async def model_card() -> dict[str, Any]:
        current = service.served()
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

    @app.post(
        "/admin/reload",
        responses=PROBLEM_RESPONSES,
        summary="Load the champion now (this worker); send Content-Type: application/json (no body needed)",
        openapi_extra=ADMIN_REQUEST_OPENAPI,
    )
    async def reload(
        request: Request, credentials: HTTPAuthorizationCredentials | None = Security(admin_bearer)
    ) -> dict[str, Any]:
        await read_admin_request(request)  # JSON only: a web page cannot forge it (serving/problems.py)
        token = serving.admin_token
        if token is not None and not secret_matches(token, credentials.credentials if credentials else None):
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

    app.include_router(pages_router(settings, contract, service))  # the teams' pages (docs/pages.md)
    app.openapi = openapi  # type: ignore[method-assign]
    return ServingApp(app, predict_handlers)


def _route(handler: PredictHandler) -> Callable[[Request], Awaitable[Response]]:
    """`handler` as a FastAPI endpoint."""

    async def endpoint(request: Request) -> Response:
        return Response(await handler(PredictCall(request.scope, request.receive)), media_type="application/json")

    endpoint.__name__ = handler.__name__  # FastAPI names the OpenAPI operation after it
    return endpoint


def __getattr__(name: str) -> Any:
    # `uvicorn churnops.serving.app:app` builds the app lazily, so importing this module (tests, tools) loads no model.
    if name == "app":
        return create_app()
    raise AttributeError(name)


__all__ = ["create_app"]
