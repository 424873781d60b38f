"""The prediction API against a real registered champion: every endpoint, the response contract, and a 4xx naming
the problem for every class of bad input (never a 500)."""

from __future__ import annotations

import asyncio
import copy
import json
import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from churnops.banding import agree_with_decision
from churnops.serving.app import create_app
from tests.serving.conftest import metric_value

REPO = Path(__file__).resolve().parents[2]
API_KEY = "test-api-key"
ADMIN_TOKEN = "test-admin-token"
MAX_BATCH_ROWS = 5
MAX_BODY_BYTES = 20_000
AUTH = {"X-API-Key": API_KEY}
JSON_TYPE = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def settings(trained_platform):
    base = trained_platform.settings
    serving = base.serving.model_copy(
        update={
            "api_key": SecretStr(API_KEY),
            "admin_token": SecretStr(ADMIN_TOKEN),
            "max_batch_rows": MAX_BATCH_ROWS,
            "max_body_bytes": MAX_BODY_BYTES,
            "explain_top_features": 5,
        }
    )
    return base.model_copy(update={"serving": serving})


@pytest.fixture(scope="module")
def client(settings):
    with TestClient(create_app(settings), headers=AUTH) as client:
        yield client


@pytest.fixture(scope="module")
def champion(trained_platform):
    from churnops.registry import configure_mlflow, load_alias

    configure_mlflow(trained_platform.settings)
    return load_alias(trained_platform.contract.model_name)


def with_features(example: dict[str, Any], **changes: Any) -> dict[str, Any]:
    body = copy.deepcopy(example)
    body["features"].update(changes)
    return body


def problems_of(response) -> list[dict[str, Any]]:
    return [{"loc": p["loc"], "type": p["type"]} for p in response.json()["detail"]]


# ---------------------------------------------------------------------------------------------------------------
# Liveness, readiness, model card, metrics, OpenAPI
# ---------------------------------------------------------------------------------------------------------------


def test_health_answers_without_a_model_dependency(client) -> None:
    assert client.get("/health").json() == {"status": "alive"}


def test_ready_names_the_champion_version(client, trained_platform) -> None:
    assert client.get("/ready").json() == {
        "ready": True,
        "model_name": "churnops-synthetic",
        "model_version": trained_platform.model_version,
        "last_reload_error": None,
    }


def test_model_endpoint_reports_version_metrics_schema_threshold_and_lineage(
    client, trained_platform, champion
) -> None:
    body = client.get("/model").json()
    assert body["version"] == trained_platform.model_version
    assert body["alias"] == "champion"
    assert 0.0 < body["threshold"] < 1.0
    assert body["training_metrics"]["roc_auc"] > 0.5
    assert len(body["lineage"]["snapshot_hash"]) == 64
    assert body["lineage"]["training_run_id"]
    assert "git_commit" in body["lineage"]
    assert {"plan", "region", "channel"} <= set(body["feature_schema"]["categorical"])
    # Bands come from the cut points training stored, or fall back to the threshold without them.
    stored = champion.metadata.get("risk_band_cutoffs")
    if stored:
        # The stored cut-offs, moved so that no band contradicts the decision.
        ordered = sorted(stored.items(), key=lambda item: -item[1])
        expected = dict(agree_with_decision(ordered, body["threshold"]))
        assert body["risk_bands"] == {"source": "model_metadata", "cutoffs": expected, "default": "low"}
        assert body["risk_bands"]["cutoffs"][ordered[0][0]] >= body["threshold"]
    else:
        assert body["risk_bands"]["source"] == "threshold"
        assert body["risk_bands"]["cutoffs"] == {"high": body["threshold"], "medium": body["threshold"] / 2}
    assert body["reload"]["last_error"] is None
    assert body["prediction_log"]["enabled"] is False  # no database configured for this app


def test_metrics_count_requests_by_endpoint_and_status(client, example_request) -> None:
    before = metric_value(
        client.get("/metrics").text, "churnops_requests_total", {"endpoint": "/predict", "status": "200"}
    )
    for _ in range(3):
        assert client.post("/predict", json=example_request).status_code == 200
    text = client.get("/metrics").text
    after = metric_value(text, "churnops_requests_total", {"endpoint": "/predict", "status": "200"})
    assert after - before == 3
    assert 'churnops_request_duration_seconds_bucket{endpoint="/predict",le="0.001"}' in text
    assert "churnops_predicted_score_bucket" in text
    assert "churnops_model_info{" in text


def test_openapi_carries_the_request_schema_of_the_served_model(client, champion) -> None:
    document = client.get("/openapi.json").json()
    schemas = document["components"]["schemas"]
    features = schemas["CustomerFeatures"]
    assert set(features["required"]) == set(champion.schema.columns)
    assert features["additionalProperties"] is False
    request_body = document["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert request_body == {"$ref": "#/components/schemas/PredictRequest"}
    assert schemas["BatchPredictRequest"]["properties"]["instances"]["maxItems"] == MAX_BATCH_ROWS


# ---------------------------------------------------------------------------------------------------------------
# Predictions
# ---------------------------------------------------------------------------------------------------------------


def test_predict_returns_probability_decision_band_and_model_version(client, trained_platform, example_request) -> None:
    response = client.post("/predict", json=example_request)
    assert response.status_code == 200, response.text
    body = response.json()
    assert 0.0 <= body["probability"] <= 1.0
    assert body["model_version"] == trained_platform.model_version
    assert body["decision"] == (body["probability"] >= body["threshold"])
    bands = client.get("/model").json()["risk_bands"]
    reached = [
        name for name, cut in sorted(bands["cutoffs"].items(), key=lambda kv: -kv[1]) if body["probability"] >= cut
    ]
    expected_band = reached[0] if reached else bands["default"]
    assert body["risk_band"] == expected_band
    assert body["customer_id"] == example_request["customer_id"]
    assert body["feature_source"] == "request"
    assert body["explanation"] is None


def test_predict_matches_batch_scoring_of_the_same_row(client, champion, example_request) -> None:
    import pandas as pd

    frame = pd.DataFrame([{k: (math.nan if v is None else v) for k, v in example_request["features"].items()}])
    expected = float(champion.predict_matrix(champion.schema.encode_frame(frame))[0])
    assert client.post("/predict", json=example_request).json()["probability"] == pytest.approx(expected, rel=1e-9)


def test_more_recent_inactivity_never_lowers_the_churn_score(client, example_request) -> None:
    quiet = copy.deepcopy(example_request)
    scores = []
    for days in (1.0, 30.0, 80.0):
        quiet["features"]["days_since_last_event"] = days
        for window in ("7d", "30d"):
            if days > int(window[:-1]):
                quiet["features"][f"event_count_{window}"] = 0.0
        scores.append(client.post("/predict", json=quiet).json()["probability"])
    assert scores[0] <= scores[1] <= scores[2]


def test_explain_returns_the_largest_lightgbm_contributions(client, champion, example_request) -> None:
    body = client.post("/predict?explain=true", json=example_request).json()
    explanation = body["explanation"]
    matrix = champion.schema.encode_records([example_request["features"]])
    contributions = champion.booster.predict(matrix, pred_contrib=True)[0]
    # Base plus every feature's contribution is the booster's log-odds (before any stored calibration).
    raw = champion.booster.predict(matrix)[0]
    assert contributions.sum() == pytest.approx(math.log(raw / (1 - raw)), abs=1e-9)
    assert explanation["base_log_odds"] == pytest.approx(contributions[-1])
    columns = champion.schema.columns
    largest = [columns[i] for i in np.argsort(-np.abs(contributions[:-1]), kind="stable")[:5]]
    assert [f["feature"] for f in explanation["top_features"]] == largest
    for item in explanation["top_features"]:
        assert item["value"] == example_request["features"][item["feature"]]
        assert item["contribution"] == pytest.approx(contributions[columns.index(item["feature"])])


def test_batch_predict_scores_each_instance_in_order_like_single_predictions(client, example_request) -> None:
    quieter = with_features(example_request, days_since_last_event=80.0)
    quieter["customer_id"] = "second"
    response = client.post("/batch_predict", json={"instances": [example_request, quieter]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert [p["customer_id"] for p in body["predictions"]] == [example_request["customer_id"], "second"]
    singles = [client.post("/predict", json=b).json()["probability"] for b in (example_request, quieter)]
    assert [p["probability"] for p in body["predictions"]] == pytest.approx(singles, rel=1e-12)
    assert body["model_version"] == client.get("/ready").json()["model_version"]


def test_batch_predict_explains_every_instance_on_request(client, example_request) -> None:
    body = client.post("/batch_predict?explain=true", json={"instances": [example_request] * 3}).json()
    assert all(len(p["explanation"]["top_features"]) == 5 for p in body["predictions"])


def test_committed_example_is_accepted_by_a_model_trained_on_the_current_features(client) -> None:
    # The README's curl sends this file; regenerate it with examples/make_predict_request.py.
    committed = json.loads((REPO / "examples" / "predict_request.json").read_text())
    response = client.post("/predict", json=committed)
    assert response.status_code == 200, response.text


# ---------------------------------------------------------------------------------------------------------------
# Bad input: a 4xx naming the problem, never a 500
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mutate", "field", "error_type"),
    [
        (lambda f: f.pop("age"), "age", "missing"),
        (lambda f: f.update(age="forty"), "age", "float_type"),
        (lambda f: f.update(age=True), "age", "float_type"),
        (lambda f: f.update(age=[45]), "age", "float_type"),
        (lambda f: f.update(plan=3), "plan", "string_type"),
        (lambda f: f.update(favourite_colour="blue"), "favourite_colour", "extra_forbidden"),
    ],
    ids=["missing", "mistyped-word", "boolean", "list", "mistyped-category", "unknown"],
)
def test_bad_fields_get_a_422_naming_the_field(client, example_request, mutate, field, error_type) -> None:
    body = copy.deepcopy(example_request)
    mutate(body["features"])
    response = client.post("/predict", json=body)
    assert response.status_code == 422
    assert {"loc": ["features", field], "type": error_type} in problems_of(response)
    assert all("input" not in p for p in response.json()["detail"])  # submitted values are not echoed


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_non_finite_numbers_are_rejected(client, example_request, token) -> None:
    raw = json.dumps(with_features(example_request, age=123456.0)).replace("123456.0", token)
    response = client.post("/predict", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert {"loc": ["features", "age"], "type": "finite_number"} in problems_of(response)


@pytest.mark.parametrize(
    ("body", "loc", "error_type"),
    [
        (b"{not json", [], "json_invalid"),
        (b"", [], "json_invalid"),
        (b"[1, 2]", [], "model_type"),
        (b'{"features": "all of them"}', ["features"], "model_type"),
        (b"{}", ["features"], "missing"),
        (b'{"customer_id": 42}', ["customer_id"], "string_type"),
        (b'{"customer_id": ""}', ["customer_id"], "string_too_short"),
        (b'{"customer_id": "1", "extra": 1}', ["extra"], "extra_forbidden"),
    ],
    ids=["malformed", "empty", "array", "features-not-object", "nothing", "id-not-string", "id-empty", "unknown-top"],
)
def test_malformed_bodies_are_a_422_naming_the_problem(client, body, loc, error_type) -> None:
    response = client.post("/predict", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert {"loc": loc, "type": error_type} in problems_of(response)


def test_empty_batch_is_refused_naming_instances(client) -> None:
    response = client.post("/batch_predict", json={"instances": []})
    assert response.status_code == 422
    assert problems_of(response) == [{"loc": ["instances"], "type": "too_short"}]


def test_oversized_batch_is_refused_naming_the_limit_and_the_offline_alternative(
    client, settings, example_request
) -> None:
    response = client.post("/batch_predict", json={"instances": [example_request] * (MAX_BATCH_ROWS + 1)})
    assert response.status_code == 422
    assert problems_of(response) == [{"loc": ["instances"], "type": "too_long"}]
    message = response.json()["detail"][0]["msg"]
    assert f"{MAX_BATCH_ROWS + 1} instances" in message
    assert f"the limit is {MAX_BATCH_ROWS} (serving.max_batch_rows)" in message
    assert f"churnops score --dataset {settings.dataset} --input FILE" in message


@pytest.mark.parametrize("text", ["45", " 45 ", "45.0", "4.5e1"])
def test_a_numeric_string_from_a_csv_is_scored_as_its_number(client, example_request, text) -> None:
    as_number = client.post("/predict", json=with_features(example_request, age=45.0))
    as_text = client.post("/predict", json=with_features(example_request, age=text))
    assert as_text.status_code == 200, as_text.text
    assert as_text.json()["probability"] == as_number.json()["probability"]


@pytest.mark.parametrize("blank", ["", " ", "\t"])
def test_a_blank_numeric_string_from_a_csv_is_a_missing_value(client, example_request, blank) -> None:
    missing = client.post("/predict", json=with_features(example_request, age=None))
    blank_cell = client.post("/batch_predict", json={"instances": [with_features(example_request, age=blank)] * 2})
    assert blank_cell.status_code == 200, blank_cell.text
    assert [p["probability"] for p in blank_cell.json()["predictions"]] == [missing.json()["probability"]] * 2


@pytest.mark.parametrize("text", ["forty", "45 years", "1_000", "NaN", "inf", "1e400", "+", "\u0661\u0662"])
def test_a_string_that_is_not_a_finite_number_is_still_refused(client, example_request, text) -> None:
    response = client.post("/predict", json=with_features(example_request, age=text))
    assert response.status_code == 422
    assert [p["loc"] for p in problems_of(response)] == [["features", "age"]]


def test_bad_field_in_a_batch_names_the_instance_and_the_field(client, example_request) -> None:
    instances = [example_request, example_request, with_features(example_request, plan=7)]
    response = client.post("/batch_predict", json={"instances": instances})
    assert response.status_code == 422
    assert problems_of(response) == [{"loc": ["instances", 2, "features", "plan"], "type": "string_type"}]


def test_instance_without_features_or_customer_id_names_it(client, example_request) -> None:
    response = client.post("/batch_predict", json={"instances": [example_request, {}]})
    assert response.status_code == 422
    assert problems_of(response) == [{"loc": ["instances", 1, "features"], "type": "missing"}]


def test_body_over_the_limit_is_refused_from_its_content_length(client) -> None:
    response = client.post(
        "/predict", content=b"x" * (MAX_BODY_BYTES + 1), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert problems_of(response) == [{"loc": ["body"], "type": "body_too_large"}]


def test_chunked_body_over_the_limit_is_refused_while_reading(client) -> None:
    def chunks():  # no Content-Length: the server must count while reading and stop at the limit
        for _ in range(MAX_BODY_BYTES // 1000 + 5):
            yield b" " * 1000

    response = client.post("/batch_predict", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert problems_of(response) == [{"loc": ["body"], "type": "body_too_large"}]


def test_a_body_sent_in_chunks_is_read_whole_and_scored_as_in_one_piece(client, example_request) -> None:
    body = json.dumps({"instances": [example_request, example_request]}).encode()
    # Several ASGI messages (the test client sends one, whatever the body): every piece must reach the parser.
    pieces = [body[start : start + 97] for start in range(0, len(body), 97)]
    messages = [{"type": "http.request", "body": piece, "more_body": True} for piece in pieces]
    messages.append({"type": "http.request", "body": b"", "more_body": False})
    headers = [(b"content-type", b"application/json"), (b"x-api-key", API_KEY.encode())]
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http"}
    scope |= {"path": "/batch_predict", "raw_path": b"/batch_predict", "query_string": b"", "root_path": ""}
    scope |= {"headers": headers, "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000)}
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(client.app(scope, receive, send))
    whole = client.post("/batch_predict", content=body, headers={"content-type": "application/json"})
    assert len(pieces) > 2 and sent[0]["status"] == whole.status_code == 200
    answer = json.loads(b"".join(message.get("body", b"") for message in sent[1:]))
    assert answer["predictions"] == whole.json()["predictions"]


def test_invalid_query_parameter_names_it(client, example_request) -> None:
    response = client.post("/predict?explain=perhaps", json=example_request)
    assert response.status_code == 422
    assert {"loc": ["query", "explain"], "type": "bool_parsing"} in problems_of(response)


def test_random_corruptions_of_a_valid_body_never_cause_a_5xx(client, example_request) -> None:
    valid = json.dumps(example_request)
    rng = random.Random(7)
    alphabet = '{}[]":,0123456789.eE-+ntrufalsNIy\\'
    statuses = set()
    for _ in range(150):
        chars = list(valid)
        for _ in range(rng.randint(1, 4)):
            position = rng.randrange(len(chars))
            action = rng.choice(("replace", "delete", "insert"))
            if action == "replace":
                chars[position] = rng.choice(alphabet)
            elif action == "delete":
                del chars[position]
            else:
                chars.insert(position, rng.choice(alphabet))
        response = client.post("/predict", content="".join(chars), headers={"content-type": "application/json"})
        statuses.add(response.status_code)
        assert response.status_code < 500, ("".join(chars), response.text)
        if response.status_code != 200:
            assert response.json()["detail"][0]["msg"]
    assert 422 in statuses


# ---------------------------------------------------------------------------------------------------------------
# Auth
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers", [{}, {"X-API-Key": "wrong"}, {"X-API-Key": API_KEY + "x"}], ids=["none", "wrong", "longer"]
)
def test_predict_endpoints_require_the_api_key(settings, example_request, headers) -> None:
    with TestClient(create_app(settings)) as anonymous:
        for path, body in (("/predict", example_request), ("/batch_predict", {"instances": [example_request]})):
            response = anonymous.post(path, json=body, headers=headers)
            assert response.status_code == 401
            assert problems_of(response) == [{"loc": ["header", "X-API-Key"], "type": "unauthorized"}]
        assert anonymous.get("/health").status_code == 200  # probes and scrapes need no key
        assert anonymous.get("/metrics").status_code == 200


def test_admin_reload_requires_the_admin_token_not_the_api_key(client, trained_platform) -> None:
    assert client.post("/admin/reload", headers=JSON_TYPE).status_code == 403
    assert client.post("/admin/reload", headers={"Authorization": f"Bearer {API_KEY}"} | JSON_TYPE).status_code == 403
    response = client.post("/admin/reload", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"} | JSON_TYPE)
    assert response.status_code == 200
    assert response.json() == {"reloaded": False, "model_version": trained_platform.model_version, "error": None}


def test_auth_is_off_when_no_key_is_configured(trained_platform, example_request) -> None:
    with TestClient(create_app(trained_platform.settings)) as open_client:
        assert open_client.post("/predict", json=example_request).status_code == 200
        assert open_client.post("/admin/reload", headers=JSON_TYPE).status_code == 200


def test_single_rows_take_lightgbms_fast_path_with_the_regular_scores(client, champion, example_request) -> None:
    served = client.app.state.model_state.current
    assert served.single_row is not None, "the fast single-row predictor was refused at load"
    matrix = champion.schema.encode_records([example_request["features"]])
    assert served.score(matrix)[0] == champion.predict_matrix(matrix, num_threads=1)[0]
