"""The prediction log: every online prediction appended to PostgreSQL in batches, off the request path.

Handlers call `PredictionLog.submit_request` with a request's scored customers by column; it formats them as one
line of COPY's text input, one row of churnops.prediction_log_requests for the whole request (arrays of scores,
decisions, bands and customer ids, the features as one column-wise json text: `churnops.db.prediction_log`), and
puts it on an in-process queue, bounded by `prediction_log_max_pending` predictions. One background thread per
worker drains it every `prediction_log_flush_seconds`, or as soon as `prediction_log_batch_rows` predictions wait,
with one COPY for everything queued, which releases the GIL while PostgreSQL works. The API never waits on the
database: when it is unreachable, slow or the queue is full, the predictions are dropped and counted in
`churnops_prediction_log_dropped_total`, and the writer retries the connection after `prediction_log_retry_seconds`.
Both counters count predictions, not requests.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Mapping
from contextlib import suppress
from typing import Any
from urllib.parse import quote

from pydantic import SecretStr

from churnops import db
from churnops.config import Settings
from churnops.db.prediction_log import (
    LoggedColumns,
    RequestContext,
    copy_prediction_requests,
    prediction_request_line,
)
from churnops.serving import metrics

log = logging.getLogger(__name__)

__all__ = ["LoggedColumns", "PredictionLog", "RequestContext", "bounded_database_settings", "prediction_log_line"]


def prediction_log_line(record: Mapping[str, Any]) -> bytes:
    """One prediction (the keys of `churnops.db.write_prediction_log`, all present) as a one-prediction request's
    line of COPY text."""
    context = RequestContext(
        record["logged_at"],
        record["request_id"],
        record["endpoint"],
        record["model_name"],
        record["model_version"],
        record["latency_seconds"],
    )
    columns = LoggedColumns(
        [record["customer_id"]], [record["features"]], [record["score"]], [record["decision"]], [record["risk_band"]]
    )
    return prediction_request_line(context, columns)


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
    """Asynchronous, batched, lossy-but-counted writer of the prediction log (churnops.prediction_log_requests)."""

    def __init__(self, settings: Settings) -> None:
        serving = settings.serving
        self.enabled = serving.prediction_log_enabled and settings.database_url is not None
        self._settings = bounded_database_settings(settings) if self.enabled else settings
        self._batch_rows = serving.prediction_log_batch_rows
        self._flush_seconds = serving.prediction_log_flush_seconds
        self._retry_seconds = serving.prediction_log_retry_seconds
        # One item per request: (its COPY line, how many predictions). The bound is on predictions, kept in
        # _pending_rows. A deque and an event set once per batch, not a queue.Queue: its get/notify per request
        # woke the writer thread for every request, and each wake-up cost the event loop a GIL hand-over (on a
        # busy machine, an OS time slice).
        self._pending: collections.deque[tuple[bytes, int]] = collections.deque()
        self._wake = threading.Event()
        self._stopping = False
        self._max_pending = serving.prediction_log_max_pending
        self._pending_rows = 0
        self._pending_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._conn: Any = None
        self._retry_after = 0.0
        self._database_error: str | None = None
        self.last_error: str | None = None
        self.written = 0
        self.dropped = 0

    def start(self) -> None:
        if self.enabled and self._thread is None:
            self._stopping = False
            self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
            self._thread.start()

    def submit(self, record: Mapping[str, Any]) -> None:
        """Queue one record (keys of `churnops.db.write_prediction_log`); never blocks."""
        if self.enabled:
            self._put(prediction_log_line(record), 1)

    def submit_request(self, context: RequestContext, columns: LoggedColumns) -> None:
        """Queue a request's scored customers as one item (one COPY line); never blocks.

        Formatted here, by the handler, not by the writer thread: a thread formatting whole batches held the
        worker's GIL and stalled the event loop (10-20 ms in p99), and under full load it fell behind.
        """
        if self.enabled and columns.scores:
            self._put(prediction_request_line(context, columns), len(columns.scores))

    def _put(self, line: bytes, count: int) -> None:
        """Queue a request's line of `count` predictions, or drop (and count) them all when
        `prediction_log_max_pending` predictions wait."""
        with self._pending_lock:
            full = self._pending_rows + count > self._max_pending
            if not full:
                self._pending_rows += count
            wake = self._pending_rows >= self._batch_rows
        if full:
            self._drop(count, "queue full: the database is not keeping up")
            return
        self._pending.append((line, count))
        if wake and not self._wake.is_set():
            self._wake.set()

    def describe(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "pending": self._pending_rows,
            "written": self.written,
            "dropped": self.dropped,
            "last_error": self.last_error,
        }

    def close(self, timeout: float = 30.0) -> None:
        """Flush what is queued (within `timeout`) and stop the writer."""
        if self._thread is None:
            return
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout)
        self._thread = None
        if self._conn is not None:
            with suppress(Exception):
                self._conn.close()
            self._conn = None

    def _drop(self, count: int, reason: str) -> None:
        self.dropped += count
        self.last_error = reason
        metrics.PREDICTION_LOG_DROPPED.inc(count)

    def _next_batch(self) -> tuple[list[bytes], int]:
        """Everything queued, as whole requests: (texts, rows). `prediction_log_batch_rows` is when the writer wakes,
        not a cap: under a burst one COPY (one commit) takes the whole backlog, so the writer keeps up with the
        requests instead of falling behind by a commit per 500 rows."""
        texts: list[bytes] = []
        rows = 0
        while self._pending:
            line, count = self._pending.popleft()
            texts.append(line)
            rows += count
        with self._pending_lock:
            self._pending_rows -= rows
        return texts, rows

    def _run(self) -> None:
        """Every `prediction_log_flush_seconds`, or as soon as a batch's worth of rows waits: write all that is
        queued, one COPY per batch. At close, what is queued is written before the thread ends."""
        while True:
            self._wake.wait(self._flush_seconds)
            self._wake.clear()
            stopping = self._stopping
            while True:
                texts, rows = self._next_batch()
                if not rows:
                    break
                self._write(texts, rows)
            if stopping:
                return

    def _write(self, texts: list[bytes], rows: int) -> None:
        if time.monotonic() < self._retry_after:
            self._drop(rows, f"database unavailable, retrying later: {self._database_error}")
            return
        try:
            if self._conn is None or self._conn.closed:
                self._conn = db.connect(self._settings, application_name="churnops-api-log")
            copy_prediction_requests(self._conn, texts)
        except Exception as error:  # unreachable, timed out, constraint violated: never reach the request path
            with suppress(Exception):
                if self._conn is not None:
                    self._conn.close()
            self._conn = None
            self._retry_after = time.monotonic() + self._retry_seconds
            self._database_error = f"{type(error).__name__}: {str(error).strip()}"
            self._drop(rows, self._database_error)
            log.warning("prediction log: dropped %d predictions: %s", rows, self.last_error)
            return
        self.written += rows
        self.last_error = None
        metrics.PREDICTION_LOG_WRITTEN.inc(rows)
