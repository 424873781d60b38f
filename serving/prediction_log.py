"""The prediction log: every online prediction appended to PostgreSQL in batches, off the request path.

Handlers call `PredictionLog.submit` with a request's scored customers by column (a `LoggedRequest`: references to
what the handler already holds, and the request's features serialised by one orjson call) and the model that
answered; it goes on an in-process queue, bounded by `prediction_log_max_pending` predictions. One background thread
per worker drains it every `prediction_log_flush_seconds`, or as soon as `prediction_log_batch_rows` predictions
wait, at most every 0.1 s, and writes what it drained as one row of churnops.prediction_log_batches per served model
(`churnops.db.prediction_batches`: the requests' fields and the predictions as arrays, the feature texts joined),
with one COPY, which releases the GIL while PostgreSQL works.

The API never waits on the database, and loses nothing to it: when the queue is full (PostgreSQL is slower than the
requests) or a COPY fails (unreachable, timed out, waiting on a lock), the rows go to this worker's spool file
(serving/prediction_spool.py) and the writer replays them, oldest first, once the database takes its queue again,
retrying the connection every `prediction_log_retry_seconds`. Spool files of ended workers are replayed by the next
writer to start. Only what neither the database nor the disk takes is dropped: a row the database refuses as
invalid, or a spool the disk refuses. Counters (all in predictions, not requests): written, spooled, replayed (out of
the spool into the database) and dropped.
"""

from __future__ import annotations

import collections
import datetime as dt
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from contextlib import suppress
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg2
from pydantic import SecretStr

from churnops import db
from churnops.config import Settings
from churnops.db.prediction_batches import (
    LoggedRequest,
    copy_prediction_batches,
    prediction_batch_tuple,
    request_features_json,
)
from churnops.serving import metrics
from churnops.serving.prediction_spool import SpoolFile, chunk_rows, is_already_stored, spool_folder

log = logging.getLogger(__name__)

__all__ = [
    "LoggedRequest",
    "PredictionLog",
    "bounded_database_settings",
    "logged_request_of",
    "request_features_json",
]

# A queued request: (model name, model version, the model's input columns, the request, its predictions).
_Queued = tuple[str, str, Sequence[str], LoggedRequest, int]
# A flush's requests of one served model: (model name, model version, input columns, requests).
_Batch = tuple[str, str, Sequence[str], list[LoggedRequest]]


def logged_request_of(record: Mapping[str, Any]) -> tuple[str, str, list[str], LoggedRequest]:
    """One prediction (the keys of `churnops.db.write_prediction_log`, all present) as `PredictionLog.submit`'s
    arguments: model name, model version, input columns (the record's features) and a one-prediction request."""
    logged_at = record["logged_at"]
    feature_names = list(record["features"])
    request = LoggedRequest(
        (logged_at if isinstance(logged_at, dt.datetime) else dt.datetime.fromisoformat(logged_at)).timestamp(),
        record["request_id"],
        record["endpoint"],
        record["latency_seconds"],
        [record["customer_id"]],
        [record["score"]],
        [record["decision"]],
        [record["risk_band"]],
        request_features_json(feature_names, [record["features"]]),
    )
    return record["model_name"], record["model_version"], feature_names, request


def bounded_database_settings(settings: Settings) -> Settings:
    """`settings` with a database URL that gives up on connecting and on each statement after the timeout.

    libpq reads both from the URL, so `churnops.db.connect` keeps doing the connecting.
    """
    assert settings.database_url is not None
    url = settings.database_url.get_secret_value()
    timeout = settings.serving.database_timeout_seconds
    options = quote(f"-c statement_timeout={int(timeout * 1000)}")
    bounded = f"{url}{'&' if '?' in url else '?'}connect_timeout={max(1, round(timeout))}&options={options}"
    return settings.model_copy(update={"database_url": SecretStr(bounded)})


class PredictionLog:
    """Asynchronous, batched writer of the prediction log (churnops.prediction_log_requests) that spools what the
    database cannot take yet instead of dropping it."""

    def __init__(self, settings: Settings) -> None:
        serving = settings.serving
        self.enabled = serving.prediction_log_enabled and settings.database_url is not None
        self._settings = bounded_database_settings(settings) if self.enabled else settings
        self._batch_rows = serving.prediction_log_batch_rows
        self._flush_seconds = serving.prediction_log_flush_seconds
        self._retry_seconds = serving.prediction_log_retry_seconds
        # One item per request: (model name, model version, request, how many predictions). The bound is on
        # predictions, kept in _pending_rows. A deque and an event set once per batch, not a queue.Queue: its
        # get/notify per request woke the writer thread for every request, and each wake-up cost the event loop a
        # GIL hand-over (on a busy machine, an OS time slice).
        self._pending: collections.deque[_Queued] = collections.deque()
        self._wake = threading.Event()
        self._stopping = False
        self._stop_deadline = 0.0
        self._max_pending = serving.prediction_log_max_pending
        self._pending_rows = 0
        self._pending_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._conn: Any = None
        self._retry_after = 0.0
        self._database_error: str | None = None
        # This worker's spool, created at the first spill; request threads append, the writer drains (_spool_lock).
        url = settings.database_url.get_secret_value() if settings.database_url is not None else ""
        self._spool_folder = spool_folder(settings.home, url) if self.enabled else settings.home
        self._spool: SpoolFile | None = None
        self._spool_lock = threading.Lock()
        self._adopted: list[SpoolFile] = []  # spools of ended workers, drained by this one then deleted
        self._next_orphan_scan = 0.0
        # A spool chunk the database refused as invalid is retried one request at a time up to this offset, so
        # only the invalid request is dropped (keyed by the spool's path).
        self._isolate_until: dict[Path, int] = {}
        self.last_error: str | None = None
        self.written = 0
        self.spooled = 0
        self.replayed = 0
        self.dropped = 0

    def start(self) -> None:
        if self.enabled and self._thread is None:
            self._stopping = False
            self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
            self._thread.start()

    def submit(self, model_name: str, model_version: str, feature_names: Sequence[str], request: LoggedRequest) -> None:
        """Queue a request's predictions (at least one), answered by this model version, whose input columns are
        `feature_names` (the order of the request's features text); never blocks. The writer thread builds the row:
        a request's own row, built field by field here, was most of what logging cost a one-row `/predict`."""
        if not self.enabled:
            return
        count = len(request.check().scores)
        with self._pending_lock:
            full = self._pending_rows + count > self._max_pending
            if not full:
                self._pending_rows += count
            wake = self._pending_rows >= self._batch_rows
        if full:
            self._spill([prediction_batch_tuple(model_name, model_version, feature_names, [request])], count)
            return
        self._pending.append((model_name, model_version, feature_names, request, count))
        if wake and not self._wake.is_set():
            self._wake.set()

    def describe(self) -> dict[str, Any]:
        spools = [spool for spool in (self._spool, *self._adopted) if spool is not None]
        return {
            "enabled": self.enabled,
            "pending": self._pending_rows,
            "written": self.written,
            "spooled": self.spooled,
            "replayed": self.replayed,
            "spool_bytes": sum(spool.unread for spool in spools),
            "dropped": self.dropped,
            "last_error": self.last_error,
        }

    def close(self, timeout: float = 30.0) -> None:
        """Write what is queued and spooled (within `timeout`; what is left stays spooled for the next start), stop
        the writer."""
        if self._thread is None:
            return
        self._stop_deadline = time.monotonic() + timeout / 2
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout)
        if self._thread.is_alive():  # stuck on the database: keep what is still queued for the next start
            tuples, rows, _ = self._next_batch()
            if tuples:
                self._spill(tuples, rows)
            return
        self._thread = None
        if self._conn is not None:
            with suppress(Exception):
                self._conn.close()
            self._conn = None
        with self._spool_lock:
            for spool in (self._spool, *self._adopted):
                if spool is not None:
                    spool.remove() if not spool.unread and not spool.in_doubt else spool.close()
            self._spool, self._adopted = None, []

    def _spill(self, tuples: list[bytes], rows: int) -> None:
        """Append to this worker's spool file; drop (and count) only what the disk refuses."""
        data = b"".join(tuples)
        try:
            with self._spool_lock:
                if self._spool is None:
                    self._spool = SpoolFile.create(self._spool_folder)
                if self._spool.end + len(data) > _SPOOL_MAX_BYTES:
                    raise OSError(f"this worker's spool holds {_SPOOL_MAX_BYTES >> 30} GiB already")
                self._spool.append(data)
                self.spooled += rows
        except OSError as error:
            self._drop(rows, f"the spool refused them: {error}")
            log.error("prediction log: dropped %d predictions: %s", rows, self.last_error)
            return
        metrics.PREDICTION_LOG_SPOOLED.inc(rows)

    def _drop(self, count: int, reason: str) -> None:
        self.dropped += count
        self.last_error = reason
        metrics.PREDICTION_LOG_DROPPED.inc(count)

    def _next_batch(self) -> tuple[list[bytes], int, list[_Batch]]:
        """Everything queued, as COPY tuples of whole requests, one per served model: (tuples, rows, their requests).
        `prediction_log_batch_rows` is when the writer wakes, not a cap: under a burst one COPY (one commit) takes the
        whole backlog, so the writer keeps up with the requests instead of falling behind by a commit per 500 rows."""
        by_model: dict[tuple[str, str], tuple[Sequence[str], list[LoggedRequest]]] = {}
        rows = 0
        while self._pending:
            model_name, model_version, feature_names, request, count = self._pending.popleft()
            by_model.setdefault((model_name, model_version), (feature_names, []))[1].append(request)
            rows += count
        with self._pending_lock:
            self._pending_rows -= rows
        tuples: list[bytes] = []
        batches: list[_Batch] = []
        for (model_name, model_version), (feature_names, requests) in by_model.items():
            try:
                tuples.append(prediction_batch_tuple(model_name, model_version, feature_names, requests))
                batches.append((model_name, model_version, feature_names, requests))
            except Exception as error:  # a value the format cannot hold: never the writer's end
                lost = sum(len(request.scores) for request in requests)
                rows -= lost
                self._drop(lost, f"a batch could not be formatted: {type(error).__name__}: {error}")
                log.error("prediction log: dropped %d predictions: %s", lost, self.last_error)
        return tuples, rows, batches

    def _run(self) -> None:
        """Every `prediction_log_flush_seconds`, or as soon as a batch's worth of rows waits: write all that is
        queued, one COPY per batch (spooled when that fails), then replay the spools while the database keeps up.
        At close, what is queued is written or spooled before the thread ends."""
        last_copy = 0.0
        while True:
            self._wake.wait(self._flush_seconds)
            # Under load the batch size wakes the writer many times a second: one COPY per _MIN_COPY_SECONDS at
            # most gathers them into fewer, bigger transactions (a commit is a WAL flush on the shared disk).
            wait = last_copy + _MIN_COPY_SECONDS - time.monotonic()
            if wait > 0 and not self._stopping:
                time.sleep(wait)
            self._wake.clear()
            last_copy = time.monotonic()
            stopping = self._stopping
            # One drain per wake-up (at close, until nothing is left): what came in while this batch was formatted
            # and written waits for the next, so that a batch gathers _MIN_COPY_SECONDS of requests instead of the
            # few that arrived meanwhile.
            while True:
                tuples, rows, batches = self._next_batch()
                written = self._write(tuples, rows) if tuples else True
                if written is None:  # refused as invalid: spooled a request per tuple, so replay drops that one alone
                    tuples = [
                        prediction_batch_tuple(*batch[:3], [request]) for batch in batches for request in batch[3]
                    ]
                if not written:
                    self._spill(tuples, rows)
                if not (stopping and self._pending):
                    break
            self._replay_spools(stopping)
            if stopping:
                return

    def _connection(self) -> Any:
        if self._conn is None or self._conn.closed:
            self._conn = db.connect(self._settings, application_name="churnops-api-log")
        return self._conn

    def _unavailable(self, error: Exception) -> None:
        """The database failed us (unreachable, timed out, locked): retry after `prediction_log_retry_seconds`."""
        with suppress(Exception):
            if self._conn is not None:
                self._conn.close()
        self._conn = None
        self._retry_after = time.monotonic() + self._retry_seconds
        self._database_error = f"{type(error).__name__}: {str(error).strip()}"
        self.last_error = self._database_error
        log.warning("prediction log: spooling, the database failed: %s", self._database_error)

    def _write(self, tuples: list[bytes], rows: int) -> bool | None:
        """One COPY of the queued tuples; False when they were not written (to be spooled), None when the database
        refused them as invalid."""
        if time.monotonic() < self._retry_after:
            return False
        try:
            copy_prediction_batches(self._connection(), tuples)
        except (psycopg2.DataError, psycopg2.IntegrityError):
            return None  # one invalid request: the spool's replay isolates it and writes the others
        except Exception as error:  # never reach the request path
            self._unavailable(error)
            return False
        self._written(rows)
        return True

    def _written(self, rows: int) -> None:
        self.written += rows
        self.last_error = None
        metrics.PREDICTION_LOG_WRITTEN.inc(rows)

    def _replay_spools(self, stopping: bool) -> None:
        """Replay this worker's spool and the adopted ones while the database takes them (at close, until the
        deadline); delete drained adopted spools and empty this worker's."""
        now = time.monotonic()
        if now < self._retry_after:
            return
        if now >= self._next_orphan_scan:
            self._next_orphan_scan = now + _ORPHAN_SCAN_SECONDS
            known = {spool.path for spool in (self._spool, *self._adopted) if spool is not None}
            self._adopted.extend(SpoolFile.adopt_orphans(self._spool_folder, known))
        for spool in [*self._adopted, self._spool]:
            while spool is not None and spool.unread and not (stopping and time.monotonic() > self._stop_deadline):
                if not self._replay_chunk(spool):
                    return
                if self._pending_rows >= self._batch_rows and not stopping:
                    return  # fresh requests first; the spool resumes at the next wake-up
        with self._spool_lock:
            if self._spool is not None:
                self._spool.reset_if_drained()
            drained = [spool for spool in self._adopted if not spool.unread and not spool.in_doubt]
            for spool in drained:
                spool.remove()
                self._adopted.remove(spool)

    def _replay_chunk(self, spool: SpoolFile) -> bool:
        """COPY the next chunk of a spool, idempotently; False when the database failed (retry later)."""
        isolating = spool.committed < self._isolate_until.get(spool.path, 0)
        chunk = spool.next_chunk(1 if isolating else _SPOOL_CHUNK_BYTES)  # 1 byte: exactly one request
        if not chunk:  # what is left is not one whole request: torn by a crash mid-append, never replayable
            log.error("prediction log: skipped %d bytes of a torn request at the end of %s", spool.unread, spool.path)
            spool.mark_committed(spool.end)
            return True
        chunk_end = spool.committed + len(chunk)
        try:
            conn = self._connection()
            if spool.in_doubt:
                in_flight_end = spool.in_flight_end
                assert in_flight_end is not None
                if _stored(conn, chunk, spool):
                    spool.mark_committed(in_flight_end)
                    return True
            spool.mark_in_flight(chunk_end)
            spool.format.copy(conn, chunk)
        except (psycopg2.DataError, psycopg2.IntegrityError) as error:
            if isolating:
                spool.mark_committed(chunk_end)
                self._drop(chunk_rows(chunk, spool.format), f"the database refused a request: {str(error).strip()}")
                log.error("prediction log: dropped an invalid request: %s", self.last_error)
            else:
                spool.mark_committed(spool.committed)  # rolled back: not in flight any more
                self._isolate_until[spool.path] = chunk_end
            return True
        except Exception as error:  # the COPY may have committed if the commit itself failed: left in doubt
            self._unavailable(error)
            return False
        spool.mark_committed(chunk_end)
        rows = chunk_rows(chunk, spool.format)
        self.replayed += rows
        metrics.PREDICTION_LOG_REPLAYED.inc(rows)
        self._written(rows)
        return True


def _stored(conn: Any, chunk: bytes, spool: SpoolFile) -> bool:
    """Whether an in-doubt chunk reached the database; when the check itself is refused (the role may not read
    the log), assume not: a rare duplicate rather than a certain loss."""
    try:
        return is_already_stored(conn, chunk, spool.format)
    except psycopg2.OperationalError:
        raise  # the database failed: the chunk stays in doubt, checked again at the next attempt
    except psycopg2.DatabaseError as error:  # e.g. no SELECT on the log for this role
        log.warning("prediction log: cannot check an in-doubt spool chunk (%s); replaying it", error)
        return False


# A bound on a worker's spool, so that a database gone for good (or never migrated) fills no disk: past it the
# predictions are dropped and counted. About 70 million predictions of 40 features.
_SPOOL_MAX_BYTES = 20 << 30
_SPOOL_CHUNK_BYTES = 8 << 20
_MIN_COPY_SECONDS = 0.1  # one replay COPY: a few thousand requests, one commit
_ORPHAN_SCAN_SECONDS = 10.0
