"""The API's batch writer against the real table: what `prediction_batch_tuple` + `copy_prediction_batches` store
reads back through the view churnops.prediction_log, one row per prediction, field for field."""

from __future__ import annotations

import datetime as dt
import math
import uuid

import numpy as np
import psycopg2

from churnops.db.prediction_batches import (
    LoggedRequest,
    copy_prediction_batches,
    prediction_batch_tuple,
    request_features_json,
)

# Not in alphabetical order: the view's keys must follow the model's column order.
FEATURE_NAMES = ["spend_30d", "plan", "event_count_30d", "ratio"]
# Microseconds at both ends of a second: the writer sends time.time() floats, rounded to the microsecond.
FIRST_AT = dt.datetime(2026, 12, 5, 10, 0, 0, 1, tzinfo=dt.UTC)
SECOND_AT = dt.datetime(2026, 12, 5, 10, 0, 1, 999_999, tzinfo=dt.UTC)


def _logged_requests() -> list[LoggedRequest]:
    """/predict (one prediction, an X-Request-ID) then /batch_predict (three, no X-Request-ID, one without a
    customer id), with scores and values whose every bit matters."""
    first_records = [{"spend_30d": 0.1 + 0.2, "plan": "pro", "event_count_30d": np.int64(7), "ratio": 1 / 3}]
    second_records = [
        {"spend_30d": None, "plan": "basic", "event_count_30d": 0, "ratio": math.nextafter(0.5, 1.0)},
        {"spend_30d": 1e-300, "plan": "prö", "event_count_30d": 12, "ratio": np.float64(2.0) / 3},
        # "ratio" absent and a key the model does not use: null and left out
        {"spend_30d": 123456.789, "plan": None, "event_count_30d": -1, "unused": "x"},
    ]
    return [
        LoggedRequest(
            FIRST_AT.timestamp(),
            "req-1",
            "/predict",
            0.000123456789,
            ["c1"],
            np.array([1 / 3]),
            [True],
            ["high"],
            request_features_json(FEATURE_NAMES, first_records),
        ),
        LoggedRequest(
            SECOND_AT.timestamp(),
            None,
            "/batch_predict",
            0.0421875000001,
            ["c2", None, "kunde-ä"],
            [math.nextafter(0.0, 1.0), 0.30000000000000004, 1.0],
            [False, None, True],
            ["low", None, "high"],
            request_features_json(FEATURE_NAMES, second_records),
        ),
    ]


def test_a_batch_written_by_the_apis_writer_reads_back_through_the_view_as_it_was_written(
    conn: psycopg2.extensions.connection,
) -> None:
    model = f"batch-writer-{uuid.uuid4().hex[:8]}"
    requests = _logged_requests()
    written = prediction_batch_tuple(model, "7", FEATURE_NAMES, requests)
    assert copy_prediction_batches(conn, [written]) == 1
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT id, first_logged_at, last_logged_at, n_requests, n_rows, feature_names"
            " FROM churnops.prediction_log_batches WHERE model_name = %s",
            (model,),
        )
        (batch_id, *batch) = cur.fetchone()
        cur.execute(
            "SELECT log_id, position, logged_at, request_id, endpoint, latency_seconds, customer_id, model_version,"
            " score, decision, risk_band, features FROM churnops.prediction_log WHERE model_name = %s"
            " ORDER BY logged_at, position",
            (model,),
        )
        rows = cur.fetchall()
    assert batch == [FIRST_AT, SECOND_AT, 2, 4, FEATURE_NAMES]
    # Scores bit for bit, features with their keys in order (a json null kept as a key).
    read = [(*row[:8], float.hex(row[8]), *row[9:11], list(row[11].items())) for row in rows]
    first, second = requests
    assert read == [
        (batch_id, 1, FIRST_AT, "req-1", "/predict", first.latency_seconds, "c1", "7", float.hex(1 / 3), True,
         "high", [("spend_30d", 0.1 + 0.2), ("plan", "pro"), ("event_count_30d", 7), ("ratio", 1 / 3)]),
        (batch_id, 1, SECOND_AT, None, "/batch_predict", second.latency_seconds, "c2", "7",
         float.hex(math.nextafter(0.0, 1.0)), False, "low",
         [("spend_30d", None), ("plan", "basic"), ("event_count_30d", 0), ("ratio", math.nextafter(0.5, 1.0))]),
        (batch_id, 2, SECOND_AT, None, "/batch_predict", second.latency_seconds, None, "7",
         float.hex(0.30000000000000004), None, None,
         [("spend_30d", 1e-300), ("plan", "prö"), ("event_count_30d", 12), ("ratio", 2 / 3)]),
        (batch_id, 3, SECOND_AT, None, "/batch_predict", second.latency_seconds, "kunde-ä", "7", float.hex(1.0),
         True, "high", [("spend_30d", 123456.789), ("plan", None), ("event_count_30d", -1), ("ratio", None)]),
    ]  # fmt: skip
