"""The drift DAG's read of the prediction log (one row per flush of an API worker's writer since migration 0016, one
per request before, one per prediction before 0014): a seeded sample of whole stored rows drawn and bounded by
PostgreSQL, taken apart into one row per prediction, every kind of row included."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from contextlib import closing

import pandas as pd
import psycopg2
import pytest
from pydantic import SecretStr

from churnops import db
from churnops.config import Settings
from churnops.monitoring.drift import load_prediction_log, prediction_log_frame, stored_by_column
from churnops.monitoring.measure import SCORE_COLUMN

NOW = dt.datetime(2026, 12, 1, 12, tzinfo=dt.UTC)
# Two batches in the window, of requests of 5, 1 and 30 predictions and of one request of 84; their spend_30d values
# are 100000 and above (the requests' are below).
BATCH_REQUEST_ROWS = [[5, 1, 30], [84]]
BATCH_SPEND_FROM = 100_000.0
_INSERT_BATCH = (
    "INSERT INTO churnops.prediction_log_batches (first_logged_at, last_logged_at, model_name, model_version,"
    " n_requests, n_rows, logged_at, request_ids, endpoints, latency_seconds, request_rows, customer_ids, scores,"
    " decisions, risk_bands, feature_names, features) VALUES (%(first)s, %(last)s, %(model)s, '2', %(n_requests)s,"
    " %(n_rows)s,"
    " %(logged_at)s::timestamptz[], %(request_ids)s::text[], %(endpoints)s::text[],"
    " %(latencies)s::double precision[], %(request_rows)s::integer[], %(customer_ids)s::text[],"
    " %(scores)s::double precision[], %(decisions)s::boolean[], %(risk_bands)s::text[], %(feature_names)s::text[],"
    " %(features)s)"
)


def batch_row(model: str, batch: int, request_rows: list[int], last_logged_at: dt.datetime) -> dict:
    """One batch row of the given requests' sizes, logged a second apart up to `last_logged_at`."""
    n_rows = sum(request_rows)
    logged_at = [last_logged_at - dt.timedelta(seconds=len(request_rows) - 1 - i) for i in range(len(request_rows))]
    return {
        "first": logged_at[0],
        "last": logged_at[-1],
        "model": model,
        "n_requests": len(request_rows),
        "n_rows": n_rows,
        "logged_at": logged_at,
        "request_ids": [None] * len(request_rows),
        "endpoints": ["/batch_predict"] * len(request_rows),
        "latencies": [0.002] * len(request_rows),
        "request_rows": request_rows,
        "customer_ids": [f"b{batch}-{row}" for row in range(n_rows)],
        "scores": [round(0.5 + 0.001 * row + 0.01 * batch, 6) for row in range(n_rows)],
        "decisions": [True] * n_rows,
        "risk_bands": ["high"] * n_rows,
        # As the API's writer stores them: the model's input columns once, each prediction's values in their order.
        "feature_names": ["spend_30d", "plan"],
        "features": json.dumps(
            [[BATCH_SPEND_FROM + batch * 1000.0 + row, ["basic", None, "pro"][row % 3]] for row in range(n_rows)]
        ),
    }


def log_predictions(url: str, model: str) -> None:
    """Six requests of 1 to 60 predictions in the window, two batches (BATCH_REQUEST_ROWS), two predictions logged
    before migration 0014 (one row each), and predictions the loader must leave out: another model's, and older than
    the window (a request and a batch of each)."""
    records = [
        {
            "logged_at": NOW - dt.timedelta(hours=request + 1),
            "request_id": f"{model}-{request}",
            "endpoint": "/batch_predict",
            "model_name": model,
            "model_version": "1",
            "customer_id": f"c{request}-{row}",
            "score": round(0.01 * row + 0.001 * request, 6),
            "features": {"spend_30d": request * 1000.0 + row, "plan": ["basic", None, "pro"][row % 3]},
        }
        for request, size in enumerate([60, 1, 25, 40, 7, 33])
        for row in range(size)
    ]
    outside = [
        {**records[0], "model_name": f"{model}-other", "features": {"spend_30d": -1.0, "plan": "x"}},
        {**records[0], "logged_at": NOW - dt.timedelta(days=30), "features": {"spend_30d": -2.0, "plan": "x"}},
    ]
    with closing(psycopg2.connect(url)) as conn:
        db.write_prediction_log(conn, records + outside)
        with conn, conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO churnops.prediction_log_per_prediction"
                " (logged_at, endpoint, customer_id, model_name, model_version, score, features)"
                " VALUES (%s, '/predict', %s, %s, '0', %s, %s)",
                [
                    (NOW - dt.timedelta(days=2), "old-1", model, 0.75, '{"spend_30d": 9001.0, "plan": "max"}'),
                    (NOW - dt.timedelta(days=2), "old-2", model, 0.5, '{"spend_30d": 9002.0}'),
                ],
            )
            batches = [
                batch_row(model, batch, request_rows, NOW - dt.timedelta(hours=batch + 1, minutes=30))
                for batch, request_rows in enumerate(BATCH_REQUEST_ROWS)
            ]
            batches_outside = [
                batch_row(f"{model}-other", 7, [3], NOW - dt.timedelta(hours=1)),
                batch_row(model, 8, [2, 2], NOW - dt.timedelta(days=30)),
            ]
            cur.executemany(_INSERT_BATCH, batches + batches_outside)


def logged_per_prediction(url: str, model: str) -> pd.DataFrame:
    """What the loader read before migration 0014 (its query, unsampled), through the per-prediction view."""
    with closing(psycopg2.connect(url)) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT features, score FROM churnops.prediction_log WHERE model_name = %s AND logged_at >= %s",
            (model, NOW - dt.timedelta(days=7)),
        )
        rows = cur.fetchall()
    frame = pd.DataFrame([features for features, _ in rows])
    frame[SCORE_COLUMN] = [score for _, score in rows]
    return frame


def by_spend(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[["spend_30d", "plan", SCORE_COLUMN]].sort_values("spend_30d").reset_index(drop=True)


@pytest.fixture
def model(postgres_url: str) -> str:
    name = f"drift-log-{uuid.uuid4().hex[:8]}"
    log_predictions(postgres_url, name)
    return name


def test_with_room_for_all_the_loader_reads_every_prediction_of_the_window_as_before(postgres_url, model) -> None:
    settings = Settings(database_url=SecretStr(postgres_url))
    loaded = load_prediction_log(settings, model, days=7, now=NOW, max_rows=10_000)
    assert len(loaded) == 166 + 2 + 120
    pd.testing.assert_frame_equal(by_spend(loaded), by_spend(logged_per_prediction(postgres_url, model)))


def test_the_loader_draws_a_seeded_sample_of_at_most_max_rows_predictions(postgres_url, model) -> None:
    settings = Settings(database_url=SecretStr(postgres_url))
    sample = load_prediction_log(settings, model, days=7, now=NOW, max_rows=50)
    assert len(sample) == 50
    logged = by_spend(logged_per_prediction(postgres_url, model))
    assert by_spend(sample).merge(logged, how="left", indicator=True)["_merge"].eq("both").all()
    again = load_prediction_log(settings, model, days=7, now=NOW, max_rows=50)
    pd.testing.assert_frame_equal(sample, again)


@pytest.mark.parametrize("max_rows", [1, 10, 84, 200])
def test_the_sample_holds_max_rows_predictions_even_when_a_drawn_batch_holds_more(
    postgres_url, model, max_rows
) -> None:
    settings = Settings(database_url=SecretStr(postgres_url))
    assert len(load_prediction_log(settings, model, days=7, now=NOW, max_rows=max_rows)) == max_rows


def test_the_sample_mixes_batches_requests_and_old_predictions_and_frames_each_as_logged(postgres_url, model) -> None:
    settings = Settings(database_url=SecretStr(postgres_url))
    sample = load_prediction_log(settings, model, days=7, now=NOW, max_rows=250)
    assert len(sample) == 250
    spend = sample["spend_30d"]
    assert (spend >= BATCH_SPEND_FROM).any() and (spend < 9000).any() and spend.between(9000, 9100).any()
    logged = by_spend(logged_per_prediction(postgres_url, model))
    assert by_spend(sample).merge(logged, how="left", indicator=True)["_merge"].eq("both").all()


def test_a_request_whose_features_and_scores_disagree_in_length_is_named() -> None:
    with pytest.raises(ValueError, match=r"row 7: feature 'spend_30d' holds 2 values for 3 scores"):
        prediction_log_frame([(7, {"spend_30d": [1.0, 2.0]}, [0.1, 0.2, 0.3])])


def test_a_feature_one_request_lacks_is_missing_in_its_rows() -> None:
    frame = prediction_log_frame([(1, {"a": [1.0]}, [0.1]), (2, {"a": [2.0, 3.0], "b": ["x", None]}, [0.2, 0.3])])
    assert frame.to_dict("list") == {"a": [1.0, 2.0, 3.0], "b": [None, "x", None], SCORE_COLUMN: [0.1, 0.2, 0.3]}


def test_a_batchs_value_arrays_are_transposed_to_its_feature_names_and_other_rows_pass_as_stored() -> None:
    batch = (2**62 + 5, [[1.5, "a"], [None, "b"], [3.5, None]], [0.1, 0.2, 0.3], ["amount", "plan"])
    assert stored_by_column(batch) == (
        2**62 + 5,
        {"amount": [1.5, None, 3.5], "plan": ["a", "b", None]},
        [0.1, 0.2, 0.3],
    )
    request = (7, {"amount": [1.5, 2.5]}, [0.1, 0.2], None)
    assert stored_by_column(request) == (7, {"amount": [1.5, 2.5]}, [0.1, 0.2])


@pytest.mark.parametrize(
    "features",
    [
        pytest.param([[1.5, "a"], [2.5]], id="one array short"),
        pytest.param([[1.5, "a", 1], [2.5, "b", 2]], id="every array a value too many"),
        pytest.param([[1.5], [2.5]], id="every array a value short"),
    ],
)
def test_a_batch_whose_value_arrays_differ_in_length_from_its_feature_names_is_named(features: list) -> None:
    with pytest.raises(ValueError, match=r"prediction log row 9: .*2 features"):
        stored_by_column((9, features, [0.1, 0.2], ["amount", "plan"]))
