"""The prediction API against a real registered champion: status codes, response schema, field-level 422s."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from serving.app import create_app

EXAMPLE = json.loads((Path(__file__).resolve().parents[2] / "examples" / "predict_request.json").read_text())


@pytest.fixture(scope="module")
def client(trained_platform):
    with TestClient(create_app(trained_platform.settings)) as client:
        yield client


def test_health_answers_without_a_model_dependency(client) -> None:
    assert client.get("/health").json() == {"status": "alive"}


def test_ready_names_the_champion_version(client, trained_platform) -> None:
    body = client.get("/ready").json()
    assert body == {
        "ready": True,
        "model_name": "churnops-synthetic",
        "model_version": trained_platform.model_version,
    }


def test_predict_returns_a_probability_and_the_model_version(client, trained_platform) -> None:
    response = client.post("/predict", json=EXAMPLE)
    assert response.status_code == 200, response.text
    body = response.json()
    assert 0.0 <= body["probability"] <= 1.0
    assert body["model_version"] == trained_platform.model_version
    assert body["decision"] == (body["probability"] >= body["threshold"])
    assert body["customer_id"] == EXAMPLE["customer_id"]


def test_predict_matches_batch_scoring_of_the_same_row(client, trained_platform) -> None:
    import pandas as pd

    from churnops.registry import configure_mlflow, load_alias

    configure_mlflow(trained_platform.settings)
    model = load_alias(trained_platform.contract.model_name)
    frame = pd.DataFrame([{k: (math.nan if v is None else v) for k, v in EXAMPLE["features"].items()}])
    expected = float(model.predict_matrix(model.schema.encode_frame(frame))[0])
    assert client.post("/predict", json=EXAMPLE).json()["probability"] == pytest.approx(expected, rel=1e-9)


def test_more_recent_inactivity_never_lowers_the_churn_score(client) -> None:
    quiet = json.loads(json.dumps(EXAMPLE))
    scores = []
    for days in (1.0, 30.0, 80.0):
        quiet["features"]["days_since_last_event"] = days
        for window in ("7d", "30d"):
            if days > int(window[:-1]):
                quiet["features"][f"event_count_{window}"] = 0.0
        scores.append(client.post("/predict", json=quiet).json()["probability"])
    assert scores[0] <= scores[1] <= scores[2]


@pytest.mark.parametrize(
    ("mutate", "field", "error_type"),
    [
        (lambda f: f.pop("age"), "age", "missing"),
        (lambda f: f.update(age="forty"), "age", "float_parsing"),
        (lambda f: f.update(plan=3), "plan", "string_type"),
        (lambda f: f.update(favourite_colour="blue"), "favourite_colour", "extra_forbidden"),
    ],
    ids=["missing", "mistyped-number", "mistyped-category", "unknown"],
)
def test_bad_fields_get_a_422_naming_the_field(client, mutate, field, error_type) -> None:
    body = json.loads(json.dumps(EXAMPLE))
    mutate(body["features"])
    response = client.post("/predict", json=body)
    assert response.status_code == 422
    problems = response.json()["detail"]
    assert {"loc": ["features", field], "type": error_type} in [
        {"loc": p["loc"], "type": p["type"]} for p in problems
    ]


def test_non_finite_numbers_are_rejected(client) -> None:
    raw = json.dumps(EXAMPLE).replace('"age": ' + json.dumps(EXAMPLE["features"]["age"]), '"age": Infinity')
    response = client.post("/predict", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert ["features", "age"] in [p["loc"] for p in response.json()["detail"]]


def test_malformed_json_is_a_422_not_a_500(client) -> None:
    response = client.post("/predict", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 422


def test_model_endpoint_reports_lineage(client, trained_platform) -> None:
    body = client.get("/model").json()
    assert body["version"] == trained_platform.model_version
    assert len(body["lineage"]["snapshot_hash"]) == 64
    assert body["training_metrics"]["roc_auc"] > 0.5
    assert {"plan", "region", "channel"} <= set(body["feature_schema"]["categorical"])


def test_metrics_count_requests_by_endpoint_and_status(client) -> None:
    client.post("/predict", json=EXAMPLE)
    text = client.get("/metrics").text
    assert 'churnops_requests_total{endpoint="/predict",status="200"}' in text
    assert "churnops_request_duration_seconds_bucket" in text
    assert "churnops_model_info{" in text
