"""The prediction log loses nothing to a slow or absent PostgreSQL: what the database cannot take yet is spooled to a
local file per worker and replayed, once, when it can; a restarted worker replays the spool of the one before."""

from __future__ import annotations

import datetime as dt
import io
import subprocess
import sys
import textwrap
import time
from contextlib import closing
from pathlib import Path

import psycopg2
import pytest
from pydantic import SecretStr

from churnops.config import Settings
from churnops.db.prediction_batches import copy_prediction_batches, prediction_batch_tuple
from churnops.db.prediction_log import (
    LoggedColumns,
    RequestContext,
    copy_prediction_requests,
    prediction_request_tuple,
)
from churnops.serving.prediction_log import LoggedRequest, PredictionLog, request_features_json
from churnops.serving.prediction_spool import (
    BATCHES,
    REQUEST_LINES,
    REQUESTS,
    SpoolFile,
    SpoolFormat,
    chunk_rows,
    spool_folder,
)
from tests.serving.conftest import unreachable_database_url

SPOOL_SUFFIX = BATCHES.suffix  # what a writer spools now


def log_settings(home: Path, url: str, **serving: object) -> Settings:
    fast = {
        "prediction_log_flush_seconds": 0.05,
        "prediction_log_retry_seconds": 0.2,
        "database_timeout_seconds": 0.5,
        **serving,
    }
    return Settings(home=home, database_url=SecretStr(url), serving=fast)


def request_of(model: str, request: int, rows: int, score: float = 0.5) -> tuple[str, str, list[str], LoggedRequest]:
    """`PredictionLog.submit`'s arguments for a request of `rows` predictions (customer ids `model-request-row`)."""
    ids: list[str | None] = [f"{model}-{request}-{row}" for row in range(rows)]
    features = request_features_json(["amount"], [{"amount": float(row)} for row in range(rows)])
    request_fields = (time.time(), f"{model}-{request}", "/batch_predict", 0.001)
    logged = LoggedRequest(*request_fields, ids, [score] * rows, [True] * rows, ["high"] * rows, features)
    return model, "1", ["amount"], logged


def old_request_of(model: str, request: int, rows: int, score: float = 0.5) -> tuple[RequestContext, LoggedColumns]:
    """`request_of`'s request as an API before migration 0016 logged it (a row of prediction_log_requests)."""
    context = RequestContext(dt.datetime.now(dt.UTC), f"{model}-{request}", "/batch_predict", model, "1", 0.001)
    ids = [f"{model}-{request}-{row}" for row in range(rows)]
    columns = LoggedColumns(ids, [{"amount": float(row)} for row in range(rows)], [score] * rows, [True] * rows,
                            ["high"] * rows)  # fmt: skip
    return context, columns


def spooled_tuple(spool_format: SpoolFormat, model: str, request: int, rows: int, score: float = 0.5) -> bytes:
    """One request as a tuple of a spool format: a batch of it (`.batch-spool`) or its row (`.binary-spool`)."""
    if spool_format is BATCHES:
        model_name, model_version, feature_names, logged = request_of(model, request, rows, score)
        return prediction_batch_tuple(model_name, model_version, feature_names, [logged])
    return prediction_request_tuple(*old_request_of(model, request, rows, score))


def copy_tuples(conn, spool_format: SpoolFormat, tuples: list[bytes]) -> int:
    copy = copy_prediction_batches if spool_format is BATCHES else copy_prediction_requests
    return copy(conn, tuples)


def stored(url: str, model: str) -> tuple[int, int]:
    """(predictions, distinct customer ids) logged for `model`."""
    with closing(psycopg2.connect(url)) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT count(*), count(DISTINCT customer_id) FROM churnops.prediction_log WHERE model_name = %s",
            (model,),
        )
        return cur.fetchone()


def stored_in(url: str, spool_format: SpoolFormat, model: str) -> int:
    """The predictions of `model` in the table the spool format is replayed into (sum of its rows' n_rows)."""
    with closing(psycopg2.connect(url)) as conn, conn.cursor() as cur:
        cur.execute(
            f"SELECT coalesce(sum(n_rows), 0) FROM churnops.{spool_format.table} WHERE model_name = %s", (model,)
        )
        return cur.fetchone()[0]


def wait_for(condition, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def test_predictions_made_while_the_log_table_is_locked_all_arrive_once_it_is_released(
    platform_database_url, tmp_path
) -> None:
    """The writer is made slow for real: the test's own transaction holds a lock that blocks every insert. The
    queue overflows into the spool, submitting never waits, nothing is dropped, and every prediction is stored
    exactly once after the lock is released."""
    model = f"locked-{time.time_ns()}"
    log = PredictionLog(log_settings(tmp_path, platform_database_url, prediction_log_max_pending=200))
    log.start()
    requests, rows = 60, 10
    with closing(psycopg2.connect(platform_database_url)) as locker:
        with locker.cursor() as cur:
            cur.execute("LOCK TABLE churnops.prediction_log_batches IN EXCLUSIVE MODE")
        for request in range(requests):
            log.submit(*request_of(model, request, rows))
        # Every submit returned while the lock is still held: the request path never waited on the database.
        assert log.describe()["spooled"] >= requests * rows - 200
        assert wait_for(lambda: log.describe()["spooled"] == requests * rows), log.describe()
        assert stored(platform_database_url, model) == (0, 0)
        locker.rollback()  # the lock goes
    assert wait_for(lambda: log.describe()["written"] == requests * rows), log.describe()
    status = log.describe()
    log.close()
    assert (status["dropped"], status["replayed"], status["spool_bytes"]) == (0, requests * rows, 0)
    assert stored(platform_database_url, model) == (requests * rows, requests * rows)
    assert (
        list(spool_folder(tmp_path, platform_database_url).glob(f"*{SPOOL_SUFFIX}")) == []
    )  # drained: removed at close


def test_a_worker_killed_with_a_spool_is_replayed_by_the_next_worker_once(platform_database_url, tmp_path) -> None:
    """A worker whose writes are blocked (the test holds a lock on the log table) spools, then dies without closing;
    the next worker started from the same working folder for the same database adopts its spool and replays it,
    every prediction once."""
    model = f"restart-{time.time_ns()}"
    requests, rows = 25, 4
    dying_worker = textwrap.dedent(
        f"""
        import os, time
        from tests.serving.test_prediction_spool import log_settings, request_of
        from churnops.serving.prediction_log import PredictionLog
        log = PredictionLog(log_settings({str(tmp_path)!r}, {platform_database_url!r}, prediction_log_max_pending=1))
        log.start()
        for request in range({requests}):
            log.submit(*request_of({model!r}, request, {rows}))
        while log.describe()["spooled"] < {requests * rows}:
            time.sleep(0.05)
        os._exit(0)  # no close: a crash
        """
    )
    with closing(psycopg2.connect(platform_database_url)) as locker:
        with locker.cursor() as cur:
            cur.execute("LOCK TABLE churnops.prediction_log_batches IN EXCLUSIVE MODE")
        subprocess.run([sys.executable, "-c", dying_worker], check=True, timeout=120, cwd=Path(__file__).parents[2])
        locker.rollback()
    assert len(list(spool_folder(tmp_path, platform_database_url).glob(f"*{SPOOL_SUFFIX}"))) == 1
    assert stored(platform_database_url, model) == (0, 0)

    log = PredictionLog(log_settings(tmp_path, platform_database_url))
    log.start()
    assert wait_for(lambda: log.describe()["replayed"] == requests * rows), log.describe()
    log.close()
    assert stored(platform_database_url, model) == (requests * rows, requests * rows)
    assert list(spool_folder(tmp_path, platform_database_url).glob("*")) == []


def test_a_spool_is_never_replayed_into_another_database(platform_database_url, tmp_path) -> None:
    """Predictions spooled for one database stay spooled when the next API started from the same working folder
    writes to another: they are not the other database's predictions."""
    model = f"elsewhere-{time.time_ns()}"
    unreachable = unreachable_database_url()
    crashed = PredictionLog(log_settings(tmp_path, unreachable))
    crashed.start()
    crashed.submit(*request_of(model, 0, 3))
    assert wait_for(lambda: crashed.describe()["spooled"] == 3), crashed.describe()
    crashed.close(timeout=2)
    assert len(list(spool_folder(tmp_path, unreachable).glob(f"*{SPOOL_SUFFIX}"))) == 1

    other = PredictionLog(log_settings(tmp_path, platform_database_url))
    other.start()
    other.submit(*request_of(f"{model}-own", 0, 2))
    assert wait_for(lambda: other.describe()["written"] == 2), other.describe()
    other.close()  # the writer has looked for ended workers' spools at least once by now
    assert other.describe()["replayed"] == 0
    assert stored(platform_database_url, model) == (0, 0)
    assert len(list(spool_folder(tmp_path, unreachable).glob(f"*{SPOOL_SUFFIX}"))) == 1


def spool_of(
    tmp_path: Path, url: str, model: str, scores: list[float], spool_format: SpoolFormat = BATCHES
) -> tuple[SpoolFile, list[bytes]]:
    """A spool file for the database at `url` of one 3-row request per score, as an ended worker leaves it: a
    `.batch-spool` of this API, or a `.binary-spool` of an API before migration 0016."""
    tuples = [spooled_tuple(spool_format, model, index, 3, score) for index, score in enumerate(scores)]
    folder = spool_folder(tmp_path, url)
    folder.mkdir(parents=True, exist_ok=True)
    spool = SpoolFile(folder / f"1-{time.time_ns()}{spool_format.suffix}")
    spool.append(b"".join(tuples))
    return spool, tuples


# Every test of a spool of binary tuples runs on this API's spool and on one an API before migration 0016 left.
BINARY_FORMATS = pytest.mark.parametrize("spool_format", [BATCHES, REQUESTS], ids=["batch-spool", "binary-spool"])


@BINARY_FORMATS
def test_a_chunk_committed_just_before_a_crash_is_not_written_again(
    platform_database_url, tmp_path, spool_format: SpoolFormat
) -> None:
    """The crash fell between the COPY's commit and the spool's progress mark: the chunk is in doubt, the next
    writer finds it in the database and skips it."""
    model = f"in-doubt-{time.time_ns()}"
    spool, tuples = spool_of(tmp_path, platform_database_url, model, [0.1, 0.2, 0.3], spool_format)
    spool.mark_in_flight(spool.end)
    with closing(psycopg2.connect(platform_database_url)) as conn:
        copy_tuples(conn, spool_format, tuples)
    spool.close()

    log = PredictionLog(log_settings(tmp_path, platform_database_url))
    log.start()
    assert wait_for(lambda: not list(spool_folder(tmp_path, platform_database_url).glob(f"*{spool_format.suffix}")))
    log.close()
    assert stored(platform_database_url, model) == (9, 9)
    assert log.describe()["replayed"] == 0


@BINARY_FORMATS
def test_a_chunk_in_flight_that_never_committed_is_replayed(
    platform_database_url, tmp_path, spool_format: SpoolFormat
) -> None:
    model = f"in-flight-{time.time_ns()}"
    spool, _ = spool_of(tmp_path, platform_database_url, model, [0.1, 0.2], spool_format)
    spool.mark_in_flight(spool.end)
    spool.close()

    log = PredictionLog(log_settings(tmp_path, platform_database_url))
    log.start()
    assert wait_for(lambda: log.describe()["replayed"] == 6), log.describe()
    log.close()
    assert stored(platform_database_url, model) == (6, 6)
    assert stored_in(platform_database_url, spool_format, model) == 6


@BINARY_FORMATS
def test_a_request_the_database_refuses_is_dropped_alone_and_the_rest_replayed(
    platform_database_url, tmp_path, spool_format: SpoolFormat
) -> None:
    """A score outside [0, 1] breaks the table's check: that request is dropped and counted, its neighbours in the
    same spool chunk are written."""
    model = f"invalid-{time.time_ns()}"
    spool, _ = spool_of(tmp_path, platform_database_url, model, [0.1, 7.0, 0.3], spool_format)
    spool.close()

    log = PredictionLog(log_settings(tmp_path, platform_database_url))
    log.start()
    assert wait_for(lambda: log.describe()["replayed"] == 6), log.describe()
    log.close()
    assert log.describe()["dropped"] == 3
    assert stored(platform_database_url, model) == (6, 6)


def text_line_of(model: str, request: int, rows: int) -> bytes:
    """`request_of`'s request as one line of COPY text, the spool format of an API before binary COPY."""
    ids = ",".join(f'"{model}-{request}-{row}"' for row in range(rows))
    amounts = ",".join(str(float(row)) for row in range(rows))
    fields = [
        dt.datetime.now(dt.UTC).isoformat(), f"{model}-{request}", "/batch_predict", model, "1", "0.001", str(rows),
        f"{{{ids}}}", "{" + ",".join(["0.5"] * rows) + "}", "{" + ",".join(["t"] * rows) + "}",
        "{" + ",".join(['"high"'] * rows) + "}", f'{{"amount":[{amounts}]}}',
    ]  # fmt: skip
    return ("\t".join(fields) + "\n").encode()


def test_a_text_spool_left_by_an_older_api_is_replayed_once(platform_database_url, tmp_path) -> None:
    """An API from before binary COPY spooled COPY text lines into a `.spool` file and ended: the next writer
    adopts it beside its own spool and writes every prediction once, a chunk in doubt included, into
    churnops.prediction_log_requests (the new request goes to the batches)."""
    model = f"text-spool-{time.time_ns()}"
    folder = spool_folder(tmp_path, platform_database_url)
    folder.mkdir(parents=True)
    lines = [text_line_of(model, request, 4) for request in range(5)]
    committed_before_the_crash = SpoolFile(folder / f"1-1{REQUEST_LINES.suffix}")
    committed_before_the_crash.append(lines[0])
    committed_before_the_crash.mark_in_flight(committed_before_the_crash.end)
    with closing(psycopg2.connect(platform_database_url)) as conn, conn:
        with conn.cursor() as cur:
            cur.copy_expert("COPY churnops.prediction_log_requests (logged_at, request_id, endpoint, model_name, "
                            "model_version, latency_seconds, n_rows, customer_ids, scores, decisions, risk_bands, "
                            "features) FROM STDIN", io.BytesIO(lines[0]))  # fmt: skip
    committed_before_the_crash.close()
    pending = SpoolFile(folder / f"2-2{REQUEST_LINES.suffix}")
    pending.append(b"".join(lines[1:]))
    pending.close()

    log = PredictionLog(log_settings(tmp_path, platform_database_url))
    log.start()
    log.submit(*request_of(model, 99, 2))
    assert wait_for(lambda: log.describe()["replayed"] == 16), log.describe()
    log.close()
    assert (log.describe()["written"], log.describe()["dropped"]) == (18, 0)
    assert stored(platform_database_url, model) == (22, 22)
    assert (stored_in(platform_database_url, REQUESTS, model), stored_in(platform_database_url, BATCHES, model)) == (
        20,
        2,
    )
    assert list(folder.glob("*")) == []


def test_a_spool_chunk_is_whole_requests_within_its_size(tmp_path) -> None:
    """Binary tuples carry no separator: a chunk still ends on a request's end, holds as many as fit in the size
    asked, and at least one (replay isolates a refused request by asking for one byte)."""
    tuples = [spooled_tuple(BATCHES, "chunks", index, rows) for index, rows in enumerate([3, 5, 2])]
    spool = SpoolFile.create(tmp_path)
    spool.append(b"".join(tuples))
    assert spool.next_chunk(1) == tuples[0]
    assert spool.next_chunk(len(tuples[0]) + len(tuples[1]) + 1) == tuples[0] + tuples[1]
    assert spool.next_chunk(1 << 20) == b"".join(tuples)
    assert chunk_rows(b"".join(tuples), BATCHES) == 10
    assert chunk_rows(tuples[1], BATCHES) == 5
    spool.close()


@BINARY_FORMATS
def test_a_request_torn_at_the_end_of_a_spool_is_skipped_and_the_whole_ones_replayed(
    platform_database_url, tmp_path, spool_format: SpoolFormat
) -> None:
    """A worker died in the middle of appending a request: the whole requests before it are written, the torn
    bytes skipped, and the spool does not hold the writer forever."""
    model = f"torn-{time.time_ns()}"
    spool, tuples = spool_of(tmp_path, platform_database_url, model, [0.1, 0.2, 0.3], spool_format)
    torn = spooled_tuple(spool_format, model, 9, 3)
    spool.append(torn[: len(torn) // 2])
    spool.close()

    log = PredictionLog(log_settings(tmp_path, platform_database_url))
    log.start()
    assert wait_for(lambda: log.describe()["replayed"] == 9), log.describe()
    assert wait_for(lambda: not list(spool_folder(tmp_path, platform_database_url).glob("*")))
    log.close()
    assert stored(platform_database_url, model) == (9, 9)
