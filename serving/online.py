"""Online feature look-ups for requests that name only a `customer_id` (churnops.online_store on PostgreSQL).

A small per-worker connection pool, opened on first use; queries run in a thread so the event loop keeps serving
other requests. An unreachable database is a 503 for that request only, never a crash.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from typing import Any, TypeVar

from churnops import db, online_store
from churnops.config import Settings
from churnops.online_store import OnlineFeatures
from churnops.serving import metrics
from churnops.serving.prediction_log import bounded_database_settings

T = TypeVar("T")
log = logging.getLogger(__name__)

_POOL_SIZE = 4


class OnlineStoreUnavailable(RuntimeError):
    """The online feature table cannot be read (not configured, unreachable, not migrated)."""


class OnlineFeatureReader:
    def __init__(self, settings: Settings, dataset: str) -> None:
        self.dataset = dataset
        self.configured = settings.database_url is not None
        self._settings = bounded_database_settings(settings) if self.configured else settings
        self._pool: Any = None
        self._pool_lock = threading.Lock()
        # Whether the newest list has value or survival values, and until when that answer is trusted: a list is
        # written once a run, so one query per interval spares every /predict by customer_id a database round trip
        # (and a thread hop) while no list has any. A list that gains them is seen within the interval.
        self._list_check_seconds = settings.serving.reload_interval_seconds
        self._list_has_columns = False
        self._list_checked_until = 0.0
        self._list_check: asyncio.Future[None] | None = None

    def _get_pool(self) -> Any:
        with self._pool_lock:
            if self._pool is None:
                self._pool = _ConnectionPool(self._settings)
            return self._pool

    def _on_pooled_connection(self, read: Callable[..., T], *args: Any) -> T:
        """`read(conn, dataset, *args)` on a pooled connection; a connection that failed is discarded, not reused."""
        pool = self._get_pool()
        conn = pool.get()
        try:
            found = read(conn, self.dataset, *args)
        except Exception:
            pool.discard(conn)
            raise
        pool.put(conn)
        return found

    def _fetch(self, customer_ids: Sequence[str]) -> dict[str, OnlineFeatures]:
        return self._on_pooled_connection(online_store.lookup_many, customer_ids)

    async def fetch(self, customer_ids: Sequence[str]) -> dict[str, OnlineFeatures]:
        """The published features of these customers (absent ones left out)."""
        if not self.configured:
            raise OnlineStoreUnavailable(
                "no platform database configured (CHURNOPS_DATABASE_URL): send the customer's features instead"
            )
        try:
            found = await asyncio.to_thread(self._fetch, customer_ids)
        except Exception as error:
            metrics.ONLINE_LOOKUPS.labels(outcome="error").inc(len(customer_ids))
            raise OnlineStoreUnavailable(f"online feature table unavailable: {type(error).__name__}") from error
        metrics.ONLINE_LOOKUPS.labels(outcome="found").inc(len(found))
        if len(found) < len(customer_ids):
            metrics.ONLINE_LOOKUPS.labels(outcome="missing").inc(len(customer_ids) - len(found))
        return found

    def _fetch_list_rows(self, customer_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        return self._on_pooled_connection(db.latest_list_rows_of, customer_ids)

    async def _check_newest_list(self) -> None:
        try:
            self._list_has_columns = await asyncio.to_thread(
                self._on_pooled_connection, db.newest_list_has_model_columns
            )
        except Exception:
            self._list_has_columns = False
        # Trusted for the interval even when the check failed: an unreachable database is not asked per request.
        self._list_checked_until = time.monotonic() + self._list_check_seconds
        self._list_check = None

    async def list_rows(self, customer_ids: Sequence[str]) -> dict[str, dict[str, Any]] | None:
        """These customers' value and survival columns in the newest stored list, in one query
        (`db.latest_list_rows_of`; absent customers left out), or None when the database cannot be read: the churn
        prediction never fails over them."""
        if not self.configured:
            return None
        if time.monotonic() >= self._list_checked_until:
            if self._list_check is None:  # one check at a time; the requests meanwhile wait for its answer
                self._list_check = asyncio.ensure_future(self._check_newest_list())
            await asyncio.shield(self._list_check)
        if not self._list_has_columns:
            return {}
        try:
            return await asyncio.to_thread(self._fetch_list_rows, customer_ids)
        except Exception as error:
            log.warning("stored list columns unavailable for a prediction: %s", type(error).__name__)
            return None

    def close(self) -> None:
        with self._pool_lock:
            if self._pool is not None:
                self._pool.close()
                self._pool = None


class _ConnectionPool:
    """A bounded LIFO pool of autocommit connections made by `churnops.db.connect` (thread-safe).

    Not psycopg2's ThreadedConnectionPool: that one takes raw connect arguments, while churnops.db.connect is the
    one place that turns `Settings.database_url` into a connection.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._idle: list[Any] = []
        self._lock = threading.Lock()

    def get(self) -> Any:
        with self._lock:
            while self._idle:
                conn = self._idle.pop()
                if not conn.closed:
                    return conn
        conn = db.connect(self._settings, application_name="churnops-api-lookup")
        conn.autocommit = True  # a look-up is one SELECT: no transaction left open between requests
        return conn

    def put(self, conn: Any) -> None:
        with self._lock:
            if len(self._idle) < _POOL_SIZE and not conn.closed:
                self._idle.append(conn)
                return
        with suppress(Exception):
            conn.close()

    def discard(self, conn: Any) -> None:
        with suppress(Exception):
            conn.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            with suppress(Exception):
                conn.close()
