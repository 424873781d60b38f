"""The prediction log: appended asynchronously to the real PostgreSQL, one row of churnops.prediction_log_batches per
served model per flush (read per prediction through the view churnops.prediction_log); with the database unreachable
the API keeps answering and counts what it could not log."""

from __future__ import annotations

import datetime as dt
import shutil
import threading
import time
from contextlib import closing

import psycopg2
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from churnops.config import Settings
from churnops.db.prediction_batches import copy_prediction_batches, prediction_batch_tuple
from churnops.serving.app import create_app
from churnops.serving.prediction_log import LoggedRequest, PredictionLog, logged_request_of, request_features_json
from churnops.serving.prediction_spool import spool_folder
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


def batch_request(
    request_id: str | None,
    customer_ids: list[str | None],
    features: list[dict],
    scores: list[float] | None = None,
    bands: list[str | None] | None = None,
    feature_names: tuple[str, ...] = ("amount", "plan"),
) -> LoggedRequest:
    """A `/batch_predict` request as the handler queues it: its columns, and its features as json text."""
    rows = len(customer_ids)
    return LoggedRequest(
        time.time(),
        request_id,
        "/batch_predict",
        0.002,
        customer_ids,
        [0.25] * rows if scores is None else scores,
        [row % 2 == 0 for row in range(rows)],
        ["low"] * rows if bands is None else bands,
        request_features_json(feature_names, features),
    )


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
                    FROM churnops.prediction_log WHERE customer_id = %s ORDER BY logged_at, log_id, position
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
    hostile = [
        *("tab\there", "new\nline", "back\\slash", "\\N", 'quote "and" comma,', "carriage\rreturn", "ünï"),
        *("{braces}", "NULL", " spaced ", "", '\\"', "a,b"),  # the text[] literal's own separators and words
    ]
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
            "risk_band": text,
            "latency_seconds": None,
            "features": {"plan": text, "amount": 1.5, "missing": None},
        }
        for i, text in enumerate(hostile)
    ]
    model_name, model_version, feature_names, _ = logged_request_of(records[0])
    batch = prediction_batch_tuple(
        model_name, model_version, feature_names, [logged_request_of(record)[3] for record in records]
    )
    with closing(psycopg2.connect(platform_database_url)) as conn:
        assert copy_prediction_batches(conn, [batch]) == 1
        with conn.cursor() as cur:
            cur.execute(
                "SELECT request_id, customer_id, features, decision, risk_band, latency_seconds"
                " FROM churnops.prediction_log WHERE model_name = 'm' ORDER BY logged_at"
            )
            rows = cur.fetchall()
    assert rows == [
        (r["request_id"], r["customer_id"], r["features"], r["decision"], r["risk_band"], None) for r in records
    ]


def test_with_the_database_unreachable_predict_still_answers_and_spools_the_predictions(
    trained_platform, example_request
) -> None:
    settings = settings_with_database(trained_platform, unreachable_database_url())
    spool = spool_folder(settings.home, settings.database_url.get_secret_value())
    try:
        with TestClient(create_app(settings)) as client:
            exposition = client.get("/metrics").text
            before = metric_value(exposition, "churnops_prediction_log_spooled_total")
            dropped_before = metric_value(exposition, "churnops_prediction_log_dropped_total")
            started = time.perf_counter()
            statuses = [client.post("/predict", json=example_request).status_code for _ in range(20)]
            elapsed = time.perf_counter() - started
            assert statuses == [200] * 20
            assert elapsed < 5, f"20 predictions took {elapsed:.2f} s: the request path waited on the database"

            def spooled() -> float:
                return metric_value(client.get("/metrics").text, "churnops_prediction_log_spooled_total") - before

            assert wait_for(lambda: spooled() == 20), f"spooled counter rose by {spooled()}, expected 20"
            dropped = metric_value(client.get("/metrics").text, "churnops_prediction_log_dropped_total")
            status = client.get("/model").json()["prediction_log"]
        assert dropped == dropped_before
        assert (status["enabled"], status["written"], status["spooled"], status["dropped"]) == (True, 0, 20, 0)
        assert "OperationalError" in status["last_error"]
    finally:  # the session's platform is shared: leave no spool for another test's writer to replay
        shutil.rmtree(spool, ignore_errors=True)


def test_a_burst_of_batches_reaches_postgresql_without_losing_a_row(platform_database_url) -> None:
    """Requests queued faster than one COPY takes (one item per request, of many rows each) are all written, in
    batches, by the time the log is closed; none is dropped."""
    settings = Settings(
        database_url=SecretStr(platform_database_url),
        serving={"prediction_log_batch_rows": 500, "prediction_log_flush_seconds": 0.05},
    )
    log = PredictionLog(settings)
    log.start()
    requests, rows = 150, 100
    for request in range(requests):
        customer_ids: list[str | None] = [f"{request}-{row}" for row in range(rows)]
        features = [{"amount": float(row), "plan": None} for row in range(rows)]
        log.submit("burst", "1", ["amount", "plan"], batch_request(f"burst-{request}", customer_ids, features))
    log.close(timeout=60)
    assert (log.describe()["written"], log.describe()["dropped"]) == (requests * rows, 0)
    with closing(psycopg2.connect(platform_database_url)) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT count(*), count(DISTINCT customer_id) FROM churnops.prediction_log WHERE model_name = 'burst'"
        )
        assert cur.fetchone() == (requests * rows, requests * rows)
        cur.execute(
            "SELECT count(*) <= %s, sum(n_requests), sum(n_rows) FROM churnops.prediction_log_batches"
            " WHERE model_name = 'burst'",
            (requests,),
        )
        assert cur.fetchone() == (True, requests, requests * rows)  # every request once, in batches


def test_a_batch_is_logged_as_one_request_whose_predictions_are_the_answers_in_order(
    trained_platform, platform_database_url, example_request
) -> None:
    marker = f"batch-{time.time_ns()}"
    numeric = next(name for name, value in example_request["features"].items() if isinstance(value, int | float))
    instances = [
        {"customer_id": f"{marker}-{i}", "features": {**example_request["features"], numeric: i * 7.5}}
        for i in range(9)
    ]
    with TestClient(create_app(settings_with_database(trained_platform, platform_database_url))) as client:
        answer = client.post("/batch_predict", json={"instances": instances}, headers={"X-Request-ID": marker}).json()

        def logged() -> tuple[list[tuple], list[tuple]]:
            with closing(psycopg2.connect(platform_database_url)) as conn, conn.cursor() as cur:
                cur.execute(
                    "SELECT r.n_rows, r.endpoint FROM churnops.prediction_log_batches AS b"
                    " CROSS JOIN LATERAL unnest(b.request_ids, b.request_rows, b.endpoints)"
                    " AS r(request_id, n_rows, endpoint) WHERE r.request_id = %s",
                    (marker,),
                )
                requests = cur.fetchall()
                cur.execute(
                    "SELECT position, customer_id, score, decision, risk_band, features FROM churnops.prediction_log"
                    " WHERE request_id = %s ORDER BY logged_at, log_id, position",
                    (marker,),
                )
                return requests, cur.fetchall()

        assert wait_for(lambda: len(logged()[0]) == 1), "the batch was not logged"
        requests, predictions = logged()
    assert requests == [(9, "/batch_predict")]
    assert [(p[0], p[1], p[3], p[4], p[5]) for p in predictions] == [
        (i + 1, item["customer_id"], item["decision"], item["risk_band"], instance["features"])
        for i, (item, instance) in enumerate(zip(answer["predictions"], instances, strict=True))
    ]
    assert [p[2] for p in predictions] == pytest.approx([item["probability"] for item in answer["predictions"]])


def test_one_request_keeps_every_customer_id_and_feature_text_in_its_arrays(platform_database_url) -> None:
    """Every element of the text[] arrays arrives as sent: separators, braces, quotes, NULL-like words and empty
    strings are data; a missing customer id stays NULL."""
    texts = [None, "", "NULL", "a,b", "{x}", 'say "hi"', "back\\slash", "tab\there", "new\nline", " pad "]
    request_id = f"arrays-{time.time_ns()}"
    features = [{"plan": text, "amount": float(i)} for i, text in enumerate(texts)]
    request = batch_request(request_id, texts, features, [i / 10 for i in range(len(texts))], texts, ("plan", "amount"))
    with closing(psycopg2.connect(platform_database_url)) as conn:
        assert (
            copy_prediction_batches(conn, [prediction_batch_tuple("arrays", "1", ["plan", "amount"], [request])]) == 1
        )
        with conn.cursor() as cur:
            cur.execute(
                "SELECT customer_id, risk_band, features, score FROM churnops.prediction_log WHERE request_id = %s"
                " ORDER BY position",
                (request_id,),
            )
            rows = cur.fetchall()
    assert rows == [(text, text, {"plan": text, "amount": float(i)}, i / 10) for i, text in enumerate(texts)]


@pytest.mark.parametrize(
    "customer_ids",
    [
        ["C-1", "C-22", "", "C-4444"],  # ASCII: sent by the one-encode path
        ["C-1", "Zoë", "客户-3", "C-4"],  # not ASCII: one element at a time
        ["C-1", "x" * 5000, "C-3", "C-4"],  # an element past the length table
    ],
)
def test_customer_ids_and_bands_arrive_as_sent_whatever_their_characters_and_length(
    platform_database_url, customer_ids: list[str]
) -> None:
    request_id = f"ids-{time.time_ns()}"
    bands: list[str | None] = list(reversed(customer_ids))
    request = batch_request(request_id, list(customer_ids), [{"amount": 1.0}] * 4, [0.5] * 4, bands, ("amount",))
    with closing(psycopg2.connect(platform_database_url)) as conn:
        assert copy_prediction_batches(conn, [prediction_batch_tuple("ids", "1", ["amount"], [request])]) == 1
        with conn.cursor() as cur:
            cur.execute(
                "SELECT customer_ids, risk_bands FROM churnops.prediction_log_batches WHERE %s = ANY (request_ids)",
                (request_id,),
            )
            assert cur.fetchall() == [(customer_ids, bands)]
            cur.execute(
                "SELECT customer_id, risk_band FROM churnops.prediction_log WHERE request_id = %s ORDER BY position",
                (request_id,),
            )
            assert cur.fetchall() == list(zip(customer_ids, bands, strict=True))


def test_a_concurrent_burst_from_many_threads_is_written_whole(platform_database_url) -> None:
    """Handlers of several threads queue requests while the writer copies: every prediction is written once and
    counted as written, none dropped."""
    settings = Settings(
        database_url=SecretStr(platform_database_url),
        serving={"prediction_log_batch_rows": 200, "prediction_log_flush_seconds": 0.01},
    )
    log = PredictionLog(settings)
    log.start()
    threads, requests, rows = 4, 40, 50
    model = f"concurrent-{time.time_ns()}"

    def submit(thread: int) -> None:
        for request in range(requests):
            ids: list[str | None] = [f"{thread}-{request}-{row}" for row in range(rows)]
            features = [{"amount": float(row)} for row in range(rows)]
            log.submit(model, "1", ["amount"], batch_request(None, ids, features, feature_names=("amount",)))

    workers = [threading.Thread(target=submit, args=(thread,)) for thread in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    log.close(timeout=60)
    total = threads * requests * rows
    assert (log.describe()["written"], log.describe()["dropped"]) == (total, 0)
    with closing(psycopg2.connect(platform_database_url)) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT sum(n_requests), sum(n_rows) FROM churnops.prediction_log_batches WHERE model_name = %s", (model,)
        )
        assert cur.fetchone() == (threads * requests, total)
        cur.execute(
            "SELECT count(*), count(DISTINCT customer_id) FROM churnops.prediction_log WHERE model_name = %s",
            (model,),
        )
        assert cur.fetchone() == (total, total)


def test_a_flush_of_two_model_versions_is_written_as_one_batch_row_each(platform_database_url) -> None:
    """Requests answered by two versions of a model, queued before the writer's first drain, become two rows of
    churnops.prediction_log_batches, each holding only its version's requests, in the order they were answered."""
    model = f"versions-{time.time_ns()}"
    log = PredictionLog(Settings(database_url=SecretStr(platform_database_url)))
    submitted = [("1", "a", 2), ("2", "b", 3), ("1", "c", 1)]
    for version, request_id, rows in submitted:
        ids: list[str | None] = [f"{request_id}-{row}" for row in range(rows)]
        log.submit(model, version, ["amount"], batch_request(request_id, ids, [{"amount": 1.0}] * rows, None, None,
                                                             ("amount",)))  # fmt: skip
    log.start()  # the first drain finds all three queued
    log.close(timeout=60)
    assert (log.describe()["written"], log.describe()["dropped"]) == (6, 0)
    with closing(psycopg2.connect(platform_database_url)) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT model_version, n_requests, n_rows, request_ids, request_rows FROM churnops.prediction_log_batches"
            " WHERE model_name = %s ORDER BY model_version",
            (model,),
        )
        assert cur.fetchall() == [("1", 2, 3, ["a", "c"], [2, 1]), ("2", 1, 3, ["b"], [3])]
        cur.execute(
            "SELECT model_version, count(*) FROM churnops.prediction_log WHERE model_name = %s"
            " GROUP BY model_version ORDER BY model_version",
            (model,),
        )
        assert cur.fetchall() == [("1", 3), ("2", 3)]


def test_a_request_without_request_id_or_customer_id_reads_back_as_nulls(platform_database_url) -> None:
    """No X-Request-ID and no customer_id are NULL in the stored arrays and in the view, not empty strings; the
    prediction's features and score come back with them."""
    model = f"anonymous-{time.time_ns()}"
    log = PredictionLog(Settings(database_url=SecretStr(platform_database_url)))
    log.start()
    features = [{"amount": 2.5, "plan": None}]
    log.submit(model, "1", ["amount", "plan"], batch_request(None, [None], features, [0.75], [None]))
    log.close(timeout=60)
    assert (log.describe()["written"], log.describe()["dropped"]) == (1, 0)
    with closing(psycopg2.connect(platform_database_url)) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT request_id, customer_id, score, decision, risk_band, features, endpoint"
            " FROM churnops.prediction_log WHERE model_name = %s",
            (model,),
        )
        assert cur.fetchall() == [(None, None, 0.75, True, None, {"amount": 2.5, "plan": None}, "/batch_predict")]


def test_a_request_the_database_refuses_in_a_flush_is_dropped_alone(platform_database_url, tmp_path) -> None:
    """A customer id PostgreSQL cannot store (a NUL character, which a client may send) makes the flush's COPY fail:
    only that request is dropped and counted, the other requests of the same batch are written."""
    model = f"refused-{time.time_ns()}"
    log = PredictionLog(Settings(home=tmp_path, database_url=SecretStr(platform_database_url)))
    for request, customer_id in enumerate(["good-0", "bad\x00id", "good-2"]):
        ids: list[str | None] = [customer_id, f"{customer_id}-second"]
        log.submit(model, "1", ["amount"], batch_request(f"{model}-{request}", ids, [{"amount": 1.0}] * 2,
                                                         None, None, ("amount",)))  # fmt: skip
    log.start()  # the first drain makes one batch of the three
    log.close(timeout=60)
    assert (log.describe()["written"], log.describe()["dropped"]) == (4, 2)
    with closing(psycopg2.connect(platform_database_url)) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT customer_id FROM churnops.prediction_log WHERE model_name = %s ORDER BY logged_at, position",
            (model,),
        )
        assert cur.fetchall() == [("good-0",), ("good-0-second",), ("good-2",), ("good-2-second",)]
