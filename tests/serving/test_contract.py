"""The API's contract beyond scoring: JSON only, admin calls a web page cannot forge, one error shape on every route
and method, an OpenAPI schema that says what is required, and a body cap that fits the batch row limit."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import jsonschema
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from starlette.routing import Route

from churnops.schema import FeatureSchema
from churnops.serving.app import create_app
from churnops.serving.records import MAX_CATEGORY_CHARS, MAX_CUSTOMER_ID_CHARS, MAX_NUMERIC_TEXT, batch_body_bytes

API_KEY = "contract-api-key"
ADMIN_TOKEN = "contract-admin-token"
# A string the tests send in every place a client controls; no answer may contain it.
MARKER = "Zq9-marker-sent-by-the-client"
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


@pytest.fixture(scope="module")
def app(trained_platform):
    base = trained_platform.settings
    serving = base.serving.model_copy(
        update={"api_key": SecretStr(API_KEY), "admin_token": SecretStr(ADMIN_TOKEN), "prediction_log_enabled": False}
    )
    return create_app(base.model_copy(update={"serving": serving}))


@pytest.fixture(scope="module")
def client(app):
    with TestClient(app, headers={"X-API-Key": API_KEY}) as client:
        yield client


@pytest.fixture(scope="module")
def open_client(trained_platform):
    """Auth off (the default): only the Content-Type stands between a web page and /admin/reload."""
    serving = trained_platform.settings.serving.model_copy(update={"prediction_log_enabled": False})
    with TestClient(create_app(trained_platform.settings.model_copy(update={"serving": serving}))) as client:
        yield client


def assert_problem_shape(response) -> None:
    assert response.headers["content-type"].startswith("application/json"), response.text
    body = response.json()
    assert isinstance(body["detail"], list) and body["detail"], body
    for problem in body["detail"]:
        assert set(problem) == {"loc", "type", "msg"}, problem
        assert isinstance(problem["loc"], list) and isinstance(problem["type"], str) and isinstance(problem["msg"], str)
    assert MARKER not in response.text


# ---------------------------------------------------------------------------------------------------------------
# Content-Type
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type", [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]
)
@pytest.mark.parametrize("path", ["/predict", "/batch_predict"])
def test_json_endpoints_refuse_a_body_not_declared_json_with_a_415(client, example_request, path, content_type) -> None:
    body = example_request if path == "/predict" else {"instances": [example_request]}
    headers = {} if content_type is None else {"content-type": content_type}
    response = client.post(path, content=json.dumps(body).encode(), headers=headers)
    assert response.status_code == 415
    assert [(p["loc"], p["type"]) for p in response.json()["detail"]] == [
        (["header", "Content-Type"], "unsupported_media_type")
    ]
    assert_problem_shape(response)


def test_json_with_a_charset_parameter_is_accepted(client, example_request) -> None:
    response = client.post(
        "/predict",
        content=json.dumps(example_request).encode(),
        headers={"content-type": "Application/JSON; charset=utf-8"},
    )
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_admin_reload_refuses_what_a_web_page_can_send_without_a_preflight(open_client, content_type) -> None:
    headers = {} if content_type is None else {"content-type": content_type}
    response = open_client.post("/admin/reload", content=b"x=1", headers=headers)
    assert response.status_code == 415
    assert_problem_shape(response)


def test_admin_reload_with_auth_off_answers_a_json_request(open_client) -> None:
    response = open_client.post("/admin/reload", headers={"content-type": "application/json"})
    assert response.status_code == 200, response.text
    assert response.json()["reloaded"] is False


def test_admin_reload_wants_the_token_as_well_as_json(client) -> None:
    json_only = client.post("/admin/reload", headers={"content-type": "application/json"})
    assert json_only.status_code == 403
    both = client.post(
        "/admin/reload", headers={"content-type": "application/json", "Authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    assert both.status_code == 200, both.text


# ---------------------------------------------------------------------------------------------------------------
# One error shape
# ---------------------------------------------------------------------------------------------------------------


def test_every_route_and_method_answers_errors_in_the_problem_shape(app, client, example_request) -> None:
    """Each route of the app, each method, with bad inputs a client can send: every 4xx/5xx has the shape and
    echoes nothing sent. The pages under /pages answer people, so their errors may be HTML pages (the sign-in form,
    a page naming the field); those echo nothing sent either."""
    routes = [route for route in app.api.routes if isinstance(route, Route)]
    methods_of_path: dict[str, set[str]] = {}  # one path may have a route per method (GET and POST /pages/login)
    for route in routes:
        methods_of_path.setdefault(route.path, set()).update(route.methods)
    assert {"/predict", "/batch_predict", "/admin/reload", "/health", "/ready", "/model", "/metrics"} <= {
        route.path for route in routes
    }
    bad_bodies = [
        b"",
        b"{",
        MARKER.encode(),
        json.dumps({"customer_id": MARKER}).encode(),
        json.dumps({"customer_id": None, "features": None}).encode(),
        json.dumps({"instances": [{}]}).encode(),
        json.dumps({"features": {**example_request["features"], MARKER: 1}}).encode(),
    ]
    errors_seen = 0
    for route in routes:
        for method in METHODS:
            for headers in (
                {},
                {"content-type": "application/json"},
                {"content-type": "application/json", "X-API-Key": MARKER},
            ):
                for body in bad_bodies:
                    response = client.request(method, f"{route.path}?explain={MARKER}", content=body, headers=headers)
                    if response.status_code >= 400:
                        errors_seen += 1
                        if route.path.startswith("/pages") and response.headers["content-type"].startswith("text/html"):
                            # The sign-in form keeps the page asked for (escaped) to return to it after sign-in.
                            assert MARKER not in re.sub(r'name="next" value="[^"]*"', "", response.text)
                        else:
                            assert_problem_shape(response)
                    if method not in methods_of_path[route.path]:
                        assert response.status_code == 405
    for method in METHODS:
        response = client.request(method, f"/{MARKER}")
        assert response.status_code == 404
        assert_problem_shape(response)
    assert errors_seen > 0


def test_a_missing_api_key_and_an_unknown_customer_answer_the_problem_shape(trained_platform) -> None:
    serving = trained_platform.settings.serving.model_copy(
        update={"api_key": SecretStr(API_KEY), "prediction_log_enabled": False}
    )
    with TestClient(create_app(trained_platform.settings.model_copy(update={"serving": serving}))) as client:
        response = client.post("/predict", json={"customer_id": MARKER})
        assert response.status_code == 401
        assert_problem_shape(response)


# ---------------------------------------------------------------------------------------------------------------
# OpenAPI
# ---------------------------------------------------------------------------------------------------------------


def _request_validator(client, name: str) -> jsonschema.protocols.Validator:
    document = client.get("/openapi.json").json()
    schemas = document["components"]["schemas"]
    return jsonschema.Draft202012Validator({**schemas[name], "components": document["components"]})


def test_openapi_says_what_a_predict_request_requires(client, trained_platform, example_request) -> None:
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    predict = schemas["PredictRequest"]
    assert predict["anyOf"] == [{"required": ["features"]}, {"required": ["customer_id"]}]
    assert predict["properties"]["customer_id"]["type"] == "string"  # not nullable
    assert predict["properties"]["features"]["$ref"] == "#/components/schemas/CustomerFeatures"
    assert "default" not in predict["properties"]["features"]  # left out is allowed, null is not
    assert sorted(schemas["CustomerFeatures"]["required"]) == sorted(example_request["features"])
    batch = schemas["BatchPredictRequest"]
    assert batch["required"] == ["instances"]
    assert batch["properties"]["instances"]["items"] == {"$ref": "#/components/schemas/PredictRequest"}
    assert batch["properties"]["instances"]["minItems"] == 1


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/predict", {"customer_id": None, "features": None}),
        ("/predict", {}),
        ("/predict", {"features": None}),
        ("/batch_predict", {"instances": [{}]}),
        ("/batch_predict", {}),
    ],
)
def test_what_the_schema_refuses_the_api_refuses_and_the_reverse(client, path, body, example_request) -> None:
    name = "PredictRequest" if path == "/predict" else "BatchPredictRequest"
    validator = _request_validator(client, name)
    assert not validator.is_valid(body)
    assert client.post(path, json=body).status_code == 422
    valid = example_request if path == "/predict" else {"instances": [example_request, {"customer_id": "1"}]}
    assert validator.is_valid(valid)


# ---------------------------------------------------------------------------------------------------------------
# Body cap and batch row limit
# ---------------------------------------------------------------------------------------------------------------


def widest_instance(example: dict[str, Any], schema: FeatureSchema) -> dict[str, Any]:
    """The example's customer with every value at its widest legal length (4-byte characters in strings)."""
    widest = copy.deepcopy(example)
    widest["customer_id"] = "\U0001f600" * MAX_CUSTOMER_ID_CHARS
    for name in schema.numeric:
        widest["features"][name] = "1".rjust(MAX_NUMERIC_TEXT, "0")
    for name in schema.categorical:
        widest["features"][name] = "\U0001f600" * MAX_CATEGORY_CHARS
    return widest


def test_a_full_batch_of_the_widest_rows_fits_the_derived_body_cap_and_one_more_row_is_refused(
    trained_platform, champion_schema, example_request
) -> None:
    serving = trained_platform.settings.serving.model_copy(update={"prediction_log_enabled": False})
    assert serving.max_body_bytes is None  # derived by default
    rows = serving.max_batch_rows
    instance = widest_instance(example_request, champion_schema)
    cap = batch_body_bytes(champion_schema, rows)

    def body(n: int) -> bytes:
        return json.dumps({"instances": [instance] * n}, ensure_ascii=False).encode()

    assert len(body(rows)) == cap  # the derivation is exact for the widest rows, not merely large enough
    with TestClient(create_app(trained_platform.settings.model_copy(update={"serving": serving}))) as client:
        full = client.post("/batch_predict", content=body(rows), headers={"content-type": "application/json"})
        assert full.status_code == 200, full.text[:500]
        assert len(full.json()["predictions"]) == rows
        over = client.post("/batch_predict", content=body(rows + 1), headers={"content-type": "application/json"})
    assert over.status_code == 413
    assert f"serving.max_batch_rows = {rows:,} rows" in over.json()["detail"][0]["msg"]


@pytest.fixture(scope="module")
def champion_schema(trained_platform) -> FeatureSchema:
    from churnops.registry import configure_mlflow, load_alias

    configure_mlflow(trained_platform.settings)
    return load_alias(trained_platform.contract.model_name).schema
