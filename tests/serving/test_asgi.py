"""The served ASGI app (serving/asgi.py): the predict routes answered past FastAPI keep the API's problem shape, its
request metrics and its server-side logging of unexpected exceptions; everything else is FastAPI's."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from churnops.serving.app import create_app
from churnops.serving.asgi import PredictCall, ServingApp, receive_body
from churnops.serving.middleware import MetricsMiddleware
from churnops.serving.problems import INTERNAL_ERROR, ApiProblem, BodyLimit, install_problem_handlers
from tests.serving.conftest import metric_value

JSON_TYPE = {"content-type": "application/json"}


class Boom(RuntimeError):
    pass


async def failing_handler(call: PredictCall) -> bytes:
    body = await receive_body(call, BodyLimit(1_000, "test"))
    if body == b'"refuse"':
        raise ApiProblem.one(401, ["header", "X-API-Key"], "unauthorized", "no", headers={"WWW-Authenticate": "APIKey"})
    raise Boom("a bug in the handler")


async def echo_handler(call: PredictCall) -> bytes:
    body = await receive_body(call, BodyLimit(1_000, "test"))
    return json.dumps({"api_key": call.api_key, "request_id": call.request_id, "body": body.decode()}).encode()


def serving_app() -> ServingApp:
    api = FastAPI()
    api.add_middleware(MetricsMiddleware)
    install_problem_handlers(api)

    @api.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "alive"}

    @api.get("/metrics")
    async def exposition() -> Any:
        from fastapi import Response

        from churnops.serving.metrics import render_metrics

        payload, content_type = render_metrics()
        return Response(payload, media_type=content_type)

    return ServingApp(api, {"/predict": failing_handler, "/batch_predict": echo_handler})


def counted(client: TestClient, name: str, labels: dict[str, str]) -> float:
    return metric_value(client.get("/metrics").text, name, labels)


def test_an_unexpected_exception_in_a_predict_handler_is_a_500_in_the_problem_shape_and_counted() -> None:
    with TestClient(serving_app(), raise_server_exceptions=False) as client:
        requests = {"endpoint": "/predict", "status": "500"}
        errors = {"endpoint": "/predict", "kind": "server"}
        before = (
            counted(client, "churnops_requests_total", requests),
            counted(client, "churnops_request_errors_total", errors),
        )
        response = client.post("/predict", content=b"{}", headers=JSON_TYPE)
        assert response.status_code == 500
        assert response.json() == INTERNAL_ERROR  # nothing of the exception reaches the client
        after = (
            counted(client, "churnops_requests_total", requests),
            counted(client, "churnops_request_errors_total", errors),
        )
        assert after == (before[0] + 1, before[1] + 1)


def test_an_unexpected_exception_reaches_the_server_after_the_answer_for_its_log() -> None:
    # uvicorn logs what an ASGI app raises, with its traceback; the test client re-raises it instead.
    with TestClient(serving_app()) as client, pytest.raises(Boom):
        client.post("/predict", content=b"{}", headers=JSON_TYPE)


def test_a_refusal_from_a_predict_handler_keeps_its_status_headers_and_shape_and_is_a_client_error() -> None:
    with TestClient(serving_app()) as client:
        labels = {"endpoint": "/predict", "kind": "client"}
        before = counted(client, "churnops_request_errors_total", labels)
        response = client.post("/predict", content=b'"refuse"', headers=JSON_TYPE)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "APIKey"
        assert response.json() == {"detail": [{"loc": ["header", "X-API-Key"], "type": "unauthorized", "msg": "no"}]}
        assert counted(client, "churnops_request_errors_total", labels) == before + 1
        # Read from the headers before the body: a body not declared JSON never reaches the handler's logic.
        assert client.post("/predict", content=b'"refuse"').status_code == 415


def test_a_predict_handler_reads_the_first_of_repeated_headers_and_its_answer_is_counted() -> None:
    with TestClient(serving_app()) as client:
        labels = {"endpoint": "/batch_predict", "status": "200"}
        before = counted(client, "churnops_requests_total", labels)
        headers = [("content-type", "application/json"), ("x-api-key", "first"), ("x-api-key", "second")]
        response = client.post("/batch_predict", content=b"[1]", headers=headers + [("x-request-id", "r-1")])
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        assert response.json() == {"api_key": "first", "request_id": "r-1", "body": "[1]"}
        assert counted(client, "churnops_requests_total", labels) == before + 1


def test_other_methods_and_paths_are_answered_by_the_fastapi_app() -> None:
    with TestClient(serving_app()) as client:
        assert client.get("/health").json() == {"status": "alive"}
        # This FastAPI app declares no /predict route (the real one answers 405 here: tests/serving/test_contract.py).
        for response in (client.get("/predict"), client.post("/predict/extra", json={})):
            assert response.status_code == 404
            assert response.json()["detail"][0]["type"] == "not_found"


def test_the_fastapi_app_alone_answers_the_predict_routes_as_the_served_app_does(
    trained_platform, example_request
) -> None:
    """The predict routes stay declared in FastAPI (OpenAPI documents them): called there, they answer the same."""
    app = create_app(trained_platform.settings)
    with TestClient(app) as served, TestClient(app.api) as bare:
        for path, body in (("/predict", example_request), ("/batch_predict", {"instances": [example_request] * 2})):
            assert bare.post(path, json=body).json() == served.post(path, json=body).json()
        assert bare.post("/predict", json={}).json() == served.post("/predict", json={}).json()
