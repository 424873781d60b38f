"""The drift DAG's read of the prediction log (one row per request since migration 0014): a seeded sample of whole
requests drawn and bounded by PostgreSQL, taken apart into one row per prediction, old per-prediction rows included."""

from __future__ import annotations

import datetime as dt
import uuid
from contextlib import closing

import pandas as pd
import psycopg2
import pytest
from pydantic import SecretStr

from churnops import db
from churnops.config import Settings
from churnops.monitoring.drift import load_prediction_log, prediction_log_frame
from churnops.monitoring.measure import SCORE_COLUMN

NOW = dt.datetime(2026, 12, 1, 12, tzinfo=dt.UTC)


def log_predictions(url: str, model: str) -> None:
    """Six requests of 1 to 60 predictions in the window, two predictions logged before migration 0014 (one row
    each), and predictions the loader must leave out: another model's, and older than the window."""
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
    assert len(loaded) == 166 + 2
    pd.testing.assert_frame_equal(by_spend(loaded), by_spend(logged_per_prediction(postgres_url, model)))


def test_the_loader_draws_a_seeded_sample_of_at_most_max_rows_predictions(postgres_url, model) -> None:
    settings = Settings(database_url=SecretStr(postgres_url))
    sample = load_prediction_log(settings, model, days=7, now=NOW, max_rows=50)
    assert len(sample) == 50
    logged = by_spend(logged_per_prediction(postgres_url, model))
    assert by_spend(sample).merge(logged, how="left", indicator=True)["_merge"].eq("both").all()
    again = load_prediction_log(settings, model, days=7, now=NOW, max_rows=50)
    pd.testing.assert_frame_equal(sample, again)


def test_a_request_whose_features_and_scores_disagree_in_length_is_named() -> None:
    with pytest.raises(ValueError, match=r"row 7: feature 'spend_30d' holds 2 values for 3 scores"):
        prediction_log_frame([(7, {"spend_30d": [1.0, 2.0]}, [0.1, 0.2, 0.3])])


def test_a_feature_one_request_lacks_is_missing_in_its_rows() -> None:
    frame = prediction_log_frame([(1, {"a": [1.0]}, [0.1]), (2, {"a": [2.0, 3.0], "b": ["x", None]}, [0.2, 0.3])])
    assert frame.to_dict("list") == {"a": [1.0, 2.0, 3.0], "b": [None, "x", None], SCORE_COLUMN: [0.1, 0.2, 0.3]}
