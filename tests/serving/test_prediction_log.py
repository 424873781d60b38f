"""The prediction log: appended asynchronously to the real PostgreSQL; with the database unreachable the API keeps
answering and counts what it could not log."""

from __future__ import annotations

import datetime as dt
import time
from contextlib import closing

import psycopg2
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from churnops.serving.app import create_app
from churnops.serving.prediction_log import copy_prediction_log, prediction_log_line
from tests.serving.conftest import metric_value, unreachable_database_url


def settings_with_database(trained_platform, url: str):
    serving = trained_platform.settings.serving.model_copy(
        update={
            "prediction_log_flush_seconds": 0.2,
            "prediction_log_batch_rows": 50,
            "prediction_log_retry_seconds": 0.5,
        }
    )
    return trained_platform.settings.model_copy(update={"database_url": SecretStr(url), "serving": serving})


def wait_for(condition, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def test_predictions_are_logged_with_inputs_score_and_model_version(
    trained_platform, platform_database_url, example_request
) -> None:
    marker = f"log-test-{time.time_ns()}"
    single = {**example_request, "customer_id": marker}
    with TestClient(create_app(settings_with_database(trained_platform, platform_database_url))) as client:
        answers = [client.post("/predict", json=single, headers={"X-Request-ID": marker}).json() for _ in range(4)]
        batch = client.post("/batch_predict", json={"instances": [single] * 3}).json()

        def logged_rows() -> list[tuple]:
            with closing(psycopg2.connect(platform_database_url)) as conn, conn.cursor() as cur:
                cur.execute(
                    """
                    SELECT endpoint, model_version, score, decision, risk_band, features, request_id, latency_seconds
                    FROM churnops.prediction_log WHERE customer_id = %s ORDER BY id
                    """,
                    (marker,),
                )
                return cur.fetchall()

        assert wait_for(lambda: len(logged_rows()) == 7), f"logged {len(logged_rows())} of 7 predictions"
        rows = logged_rows()
        assert client.get("/model").json()["prediction_log"]["written"] >= 7
    assert [r[0] for r in rows] == ["/predict"] * 4 + ["/batch_predict"] * 3
    assert {r[1] for r in rows} == {trained_platform.model_version}
    assert rows[0][2] == pytest.approx(answers[0]["probability"], rel=1e-12)
    assert rows[-1][2] == pytest.approx(batch["predictions"][-1]["probability"], rel=1e-12)
    assert (rows[0][3], rows[0][4]) == (answers[0]["decision"], answers[0]["risk_band"])
    assert rows[0][5] == example_request["features"]
    assert rows[0][6] == marker and rows[-1][6] is None
    assert all(r[7] is not None and r[7] >= 0 for r in rows)


def test_any_text_a_client_sends_is_logged_verbatim(platform_database_url) -> None:
    """Request ids and customer ids are the client's strings: COPY's separators and escapes must survive."""
    hostile = ["tab\there", "new\nline", "back\\slash", "\\N", 'quote "and" comma,', "carriage\rreturn", "ünï"]
    records = [
        {
            "logged_at": dt.datetime(2026, 11, 24, 8, 0, i, tzinfo=dt.UTC),
            "request_id": text,
            "endpoint": "/predict",
            "customer_id": text,
            "model_name": "m",
            "model_version": "1",
            "score": 0.5,
            "decision": i % 2 == 0,
            "risk_band": None,
            "latency_seconds": None,
            "features": {"plan": text, "amount": 1.5, "missing": None},
        }
        for i, text in enumerate(hostile)
    ]
    with closing(psycopg2.connect(platform_database_url)) as conn:
        assert copy_prediction_log(conn, [prediction_log_line(r) for r in records]) == len(records)
        with conn.cursor() as cur:
            cur.execute(
                "SELECT request_id, customer_id, features, decision, risk_band, latency_seconds"
                " FROM churnops.prediction_log WHERE model_name = 'm' ORDER BY logged_at"
            )
            rows = cur.fetchall()
    assert rows == [(r["request_id"], r["customer_id"], r["features"], r["decision"], None, None) for r in records]


def test_with_the_database_unreachable_predict_still_answers_and_counts_the_dropped(
    trained_platform, example_request
) -> None:
    settings = settings_with_database(trained_platform, unreachable_database_url())
    with TestClient(create_app(settings)) as client:
        before = metric_value(client.get("/metrics").text, "churnops_prediction_log_dropped_total")
        started = time.perf_counter()
        statuses = [client.post("/predict", json=example_request).status_code for _ in range(20)]
        elapsed = time.perf_counter() - started
        assert statuses == [200] * 20
        assert elapsed < 5, f"20 predictions took {elapsed:.2f} s: the request path waited on the database"

        def dropped() -> float:
            return metric_value(client.get("/metrics").text, "churnops_prediction_log_dropped_total") - before

        assert wait_for(lambda: dropped() == 20), f"dropped counter rose by {dropped()}, expected 20"
        status = client.get("/model").json()["prediction_log"]
    assert status["enabled"] is True and status["written"] == 0 and status["dropped"] == 20
    assert "OperationalError" in status["last_error"]


def test_a_burst_of_batches_reaches_postgresql_without_losing_a_row(platform_database_url) -> None:
    """Requests queued faster than one COPY takes (one item per request, of many rows each) are all written, in
    batches, by the time the log is closed; none is dropped."""
    from churnops.config import Settings
    from churnops.serving.prediction_log import LoggedColumns, PredictionLog, RequestContext

    settings = Settings(
        database_url=SecretStr(platform_database_url),
        serving={"prediction_log_batch_rows": 500, "prediction_log_flush_seconds": 0.05},
    )
    log = PredictionLog(settings)
    log.start()
    requests, rows = 150, 100
    for request in range(requests):
        context = RequestContext(dt.datetime.now(dt.UTC), f"burst-{request}", "/batch_predict", "burst", "1", 0.002)
        columns = LoggedColumns(
            customer_ids=[f"{request}-{row}" for row in range(rows)],
            features=[{"amount": float(row), "plan": None} for row in range(rows)],
            scores=[0.25] * rows,
            decisions=[False] * rows,
            bands=["low"] * rows,
        )
        log.submit_request(context, columns)
    log.close(timeout=60)
    assert log.describe()["dropped"] == 0
    with closing(psycopg2.connect(platform_database_url)) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT count(*), count(DISTINCT customer_id) FROM churnops.prediction_log WHERE model_name = 'burst'"
        )
        assert cur.fetchone() == (requests * rows, requests * rows)
