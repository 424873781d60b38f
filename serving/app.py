"""The churnops prediction API.

`uvicorn serving.app:app` serves the `champion` of the configured dataset's model. Endpoints: `POST /predict`,
`GET /health` (alive), `GET /ready` (a model is loaded), `GET /model`, `GET /metrics`, `POST /admin/reload`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import math
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Header, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from churnops.config import Settings
from churnops.dataset import load_contract
from serving import metrics
from serving.records import Prediction, validation_problems
from serving.state import ModelState, ServedModel


class _MetricsMiddleware:
    """Counts, times and sizes every request (pure ASGI: cheaper than BaseHTTPMiddleware on the hot path)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        endpoint = scope["path"] if scope["path"] in _KNOWN_PATHS else "other"
        status = {"code": 500}

        async def send_with_status(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        started = time.perf_counter()
        in_flight = metrics.IN_FLIGHT.labels(endpoint=endpoint)
        in_flight.inc()
        try:
            await self.app(scope, receive, send_with_status)
        finally:
            in_flight.dec()
            metrics.REQUEST_DURATION.labels(endpoint=endpoint).observe(time.perf_counter() - started)
            metrics.REQUESTS.labels(endpoint=endpoint, status=str(status["code"])).inc()
            if status["code"] >= 400:
                kind = "client" if status["code"] < 500 else "server"
                metrics.ERRORS.labels(endpoint=endpoint, kind=kind).inc()
            for name, value in scope.get("headers", ()):
                if name == b"content-length":
                    metrics.REQUEST_BODY.labels(endpoint=endpoint).observe(int(value))


_KNOWN_PATHS = {"/predict", "/health", "/ready", "/model", "/metrics", "/admin/reload"}


def _matches(expected: Any, given: str | None) -> bool:
    return given is not None and hmac.compare_digest(expected.get_secret_value().encode(), given.encode())


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    model_name = load_contract(settings.dataset, settings).model_name
    state = ModelState(settings, model_name)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(state.refresh)
        poller = asyncio.create_task(state.poll())
        try:
            yield
        finally:
            poller.cancel()

    app = FastAPI(title="churnops API", version="1", lifespan=lifespan)
    app.add_middleware(_MetricsMiddleware)
    app.state.model_state = state

    def served() -> ServedModel:
        current = state.current
        if current is None:
            raise HTTPException(503, detail=f"no model loaded yet: {state.last_error or 'loading'}")
        return current

    def require_api_key(api_key: str | None) -> None:
        if settings.serving.api_key is not None and not _matches(settings.serving.api_key, api_key):
            raise HTTPException(401, detail="missing or invalid API key (header X-API-Key)")

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/ready")
    async def ready() -> JSONResponse:
        current = state.current
        if current is None:
            return JSONResponse({"ready": False, "reason": state.last_error or "loading"}, status_code=503)
        return JSONResponse({"ready": True, "model_name": model_name, "model_version": current.model.version})

    @app.get("/model")
    async def model_card() -> dict[str, Any]:
        model = served().model
        meta = model.metadata
        return {
            "name": model.name,
            "version": model.version,
            "alias": "champion",
            "threshold": model.threshold,
            "feature_schema": model.schema.to_dict(),
            "training_metrics": meta.get("out_of_time_metrics", {}),
            "lineage": {
                k: meta.get(k)
                for k in ("training_run_id", "snapshot_hash", "git_commit", "dataset", "out_of_time_cutoff")
            },
            "loaded_at": model.loaded_at,
        }

    @app.post("/predict", response_model=Prediction)
    async def predict(request: Request, x_api_key: str | None = Header(None)) -> Prediction:
        require_api_key(x_api_key)
        current = served()
        body = await request.body()
        if len(body) > settings.serving.max_body_bytes:
            raise HTTPException(413, detail=f"request body over {settings.serving.max_body_bytes} bytes")
        try:
            parsed = current.request_type.model_validate_json(body)
        except ValidationError as error:
            return JSONResponse({"detail": validation_problems(error.errors())}, status_code=422)  # type: ignore[return-value]
        model = current.model
        score = float(
            model.predict_matrix(model.schema.encode_records([parsed.features.__dict__]), num_threads=1)[0]
        )
        if not math.isfinite(score):
            raise HTTPException(500, detail="model produced a non-finite score")
        metrics.PREDICTIONS.labels(model_version=model.version).inc()
        metrics.PREDICTED_SCORE.labels(model_version=model.version).observe(score)
        return Prediction(
            customer_id=parsed.customer_id,
            probability=score,
            decision=score >= model.threshold,
            threshold=model.threshold,
            model_name=model.name,
            model_version=model.version,
        )

    @app.post("/admin/reload")
    async def reload(authorization: str | None = Header(None)) -> dict[str, Any]:
        token = settings.serving.admin_token
        if token is not None:
            given = authorization.removeprefix("Bearer ") if authorization else None
            if not _matches(token, given):
                raise HTTPException(403, detail="admin token required (Authorization: Bearer ...)")
        changed = await asyncio.to_thread(state.refresh)
        current = state.current
        return {
            "reloaded": changed,
            "model_version": current.model.version if current else None,
            "error": state.last_error,
        }

    @app.get("/metrics")
    async def prometheus_metrics() -> Response:
        payload, content_type = metrics.render_metrics()
        return Response(payload, media_type=content_type)

    return app


def __getattr__(name: str) -> Any:
    # `uvicorn serving.app:app` builds the app lazily, so importing this module (tests, tools) loads no model.
    if name == "app":
        return create_app()
    raise AttributeError(name)


__all__ = ["create_app"]
