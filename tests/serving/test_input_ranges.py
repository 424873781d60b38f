"""Training ranges stored with the model, the out-of-range policy (flag, clip, reject), and bands that never
contradict the decision, up to ±1e308."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from churnops.banding import RiskBands, agree_with_decision
from churnops.input_ranges import FEATURE_RANGES_KEY, InputRanges, observed_ranges
from churnops.serving.app import create_app
from churnops.serving.state import ServedModel
from tests.serving.conftest import metric_value

JSON_TYPE = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def champion(trained_platform):
    from churnops.registry import configure_mlflow, load_alias

    configure_mlflow(trained_platform.settings)
    return load_alias(trained_platform.contract.model_name)


def client_with(trained_platform, policy: str) -> TestClient:
    serving = trained_platform.settings.serving.model_copy(
        update={"out_of_range_policy": policy, "prediction_log_enabled": False}
    )
    return TestClient(create_app(trained_platform.settings.model_copy(update={"serving": serving})))


@pytest.fixture(scope="module")
def clients(trained_platform):
    opened = {policy: client_with(trained_platform, policy) for policy in ("flag", "clip", "reject")}
    for client in opened.values():
        client.__enter__()
    yield opened
    for client in opened.values():
        client.__exit__(None, None, None)


def clipped_into_ranges(example: dict[str, Any], champion) -> dict[str, Any]:
    """The example clipped into the training ranges: it comes from the scoring cutoff, after the training
    cutoffs, so its day counts (days since first event...) lie beyond what training saw."""
    body = copy.deepcopy(example)
    for name, (low, high) in champion.metadata[FEATURE_RANGES_KEY].items():
        if body["features"][name] is not None:
            body["features"][name] = min(max(float(body["features"][name]), low), high)
    return body


def with_numbers(example: dict[str, Any], numeric: tuple[str, ...], value: float) -> dict[str, Any]:
    body = copy.deepcopy(example)
    body["features"].update(dict.fromkeys(numeric, value))
    return body


def test_training_stores_each_numeric_features_range_with_the_model(champion) -> None:
    ranges = champion.metadata[FEATURE_RANGES_KEY]
    assert set(ranges) <= set(champion.schema.numeric) and len(ranges) > len(champion.schema.numeric) // 2
    assert all(low <= high for low, high in ranges.values())


def test_observed_ranges_ignore_missing_values_and_empty_columns() -> None:
    matrix = np.array([[1.0, np.nan, 7.0], [-2.0, np.nan, np.nan], [5.0, np.nan, 3.0]])
    assert observed_ranges(matrix, ["a", "b"]) == {"a": [-2.0, 5.0]}


def test_a_model_registered_without_ranges_loads_and_checks_nothing(champion, trained_platform, example_request):
    metadata = {k: v for k, v in champion.metadata.items() if k != FEATURE_RANGES_KEY}
    assert InputRanges.from_metadata(metadata, champion.schema.numeric) is None
    older = dataclasses.replace(champion, metadata=metadata)
    served = ServedModel.build(older, trained_platform.settings.serving)
    assert served.ranges is None
    matrix = champion.schema.encode_records([with_numbers(example_request, ("age",), -5)["features"]])
    assert np.isfinite(served.score(matrix)).all()


def test_a_value_below_the_training_range_is_flagged_and_counted(clients, champion, example_request) -> None:
    example_request = clipped_into_ranges(example_request, champion)
    low = champion.metadata[FEATURE_RANGES_KEY]["age"][0]
    client = clients["flag"]
    before = metric_value(client.get("/metrics").text, "churnops_out_of_range_values_total", {"feature": "age"})
    response = client.post("/predict", json=with_numbers(example_request, ("age",), low - 5))
    assert response.status_code == 200, response.text
    assert response.json()["out_of_range"] == ["age"]
    after = metric_value(client.get("/metrics").text, "churnops_out_of_range_values_total", {"feature": "age"})
    assert after == before + 1
    at_bound = client.post("/predict", json=with_numbers(example_request, ("age",), low)).json()
    assert at_bound["out_of_range"] == []


def test_the_reject_policy_answers_422_naming_the_field(clients, champion, example_request) -> None:
    example_request = clipped_into_ranges(example_request, champion)
    assert clients["reject"].post("/predict", json=example_request).status_code == 200
    low = champion.metadata[FEATURE_RANGES_KEY]["age"][0]
    response = clients["reject"].post("/predict", json=with_numbers(example_request, ("age",), low - 5))
    assert response.status_code == 422
    assert [(p["loc"], p["type"]) for p in response.json()["detail"]] == [(["features", "age"], "out_of_range")]
    batch = clients["reject"].post(
        "/batch_predict", json={"instances": [example_request, with_numbers(example_request, ("age",), low - 5)]}
    )
    assert [p["loc"] for p in batch.json()["detail"]] == [["instances", 1, "features", "age"]]


def test_the_clip_policy_scores_the_value_at_the_nearest_bound(clients, champion, example_request) -> None:
    example_request = clipped_into_ranges(example_request, champion)
    low = champion.metadata[FEATURE_RANGES_KEY]["age"][0]
    clipped = clients["clip"].post("/predict", json=with_numbers(example_request, ("age",), low - 5)).json()
    at_bound = clients["clip"].post("/predict", json=with_numbers(example_request, ("age",), low)).json()
    assert clipped["out_of_range"] == ["age"]
    assert clipped["probability"] == at_bound["probability"]


@pytest.mark.parametrize("value", [1e308, -1e308])
@pytest.mark.parametrize("policy", ["flag", "clip"])
def test_extreme_values_never_give_a_band_that_contradicts_the_decision(
    clients, champion, example_request, value, policy
) -> None:
    body = with_numbers(example_request, champion.schema.numeric, value)
    response = clients[policy].post("/predict", json=body)
    if policy == "flag" and response.status_code == 422:  # the stored blend cannot score it: said, not a 500
        assert {p["type"] for p in response.json()["detail"]} == {"out_of_range"}
        return
    assert response.status_code == 200, response.text
    scored = response.json()
    assert sorted(scored["out_of_range"]) == sorted(champion.metadata[FEATURE_RANGES_KEY])
    bands = [name for name, _ in RiskBands.for_model(champion.metadata, champion.threshold).cutoffs]
    if scored["risk_band"] == bands[0]:
        assert scored["decision"] is True
    if scored["risk_band"] == "low":
        assert scored["decision"] is False


def test_band_cutoffs_are_moved_to_agree_with_the_decision() -> None:
    threshold = 0.5
    stored = RiskBands.for_model({"risk_band_cutoffs": {"high": 0.3, "medium": 0.2}}, threshold)
    assert stored.cutoffs == (("high", 0.5), ("medium", 0.2))
    above = RiskBands.for_model({"risk_band_cutoffs": {"high": 0.9, "medium": 0.7}}, threshold)
    assert above.cutoffs == (("high", 0.9), ("medium", 0.5))
    single = RiskBands.for_model({"risk_band_cutoffs": {"high": 0.2}}, threshold)
    assert single.cutoffs == (("high", 0.5),) == agree_with_decision([("high", 0.9)], threshold)


def test_no_score_gets_a_band_that_contradicts_the_decision() -> None:
    rng = np.random.default_rng(7)
    for _ in range(200):
        threshold = float(rng.uniform(0.01, 0.99))
        cuts = sorted(rng.uniform(0, 1, size=int(rng.integers(1, 4))).tolist(), reverse=True)
        stored = {f"band{i}": cut for i, cut in enumerate(cuts)}
        bands = RiskBands.for_model({"risk_band_cutoffs": stored}, threshold)
        top = bands.cutoffs[0][0]
        for score in [*rng.uniform(0, 1, size=50).tolist(), threshold, np.nextafter(threshold, 0)]:
            band = bands.band(score)
            if band == top:
                assert score >= threshold, (stored, threshold, score)
            if band == bands.default:
                assert score < threshold, (stored, threshold, score)
