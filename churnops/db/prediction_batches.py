"""The API's prediction log storage: one row of churnops.prediction_log_batches per flush of a worker's writer
(migration 0016), many requests in it.

A request row (churnops/db/prediction_log.py, migration 0014) still cost PostgreSQL a heap tuple, its index entries
and its checks per request, and the API a tuple built field by field in the event loop per request: for a one-row
`/predict` that was most of what logging cost. Here the event loop queues a `LoggedRequest` (what the handler already
has, and its features as json text), and the writer thread turns everything a flush holds into one row per served
model: the requests' own fields (time, id, endpoint, latency, predictions) as arrays, the predictions as arrays, and
the features as a json array of the requests' column-wise objects, [{"feature": [value, ...]}, ...], stored as `text`
(not parsed on write; read it as `features::json`). The view churnops.prediction_log shows them one row per
prediction.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from itertools import chain
from operator import attrgetter
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import orjson

from churnops.db.copy_fields import (
    COPY_SIGNATURE,
    COPY_TRAILER,
    INT4,
    bool_array_field,
    field,
    float8_array_field,
    int4_array_field,
    run_copy,
    scores_field,
    text_array_field,
    text_field,
    tuples_end,
    unix_timestamp_field,
    unix_timestamps_array_field,
)
from churnops.db.prediction_log import features_by_column

if TYPE_CHECKING:
    from psycopg2.extensions import connection as Connection

# The columns of churnops.prediction_log_batches a writer fills, in the order of the COPY tuple.
BATCH_COLUMNS = (
    "first_logged_at",
    "last_logged_at",
    "model_name",
    "model_version",
    "n_requests",
    "n_rows",
    "logged_at",
    "request_ids",
    "endpoints",
    "latency_seconds",
    "request_rows",
    "customer_ids",
    "scores",
    "decisions",
    "risk_bands",
    "features",
)
BATCH_COPY_SQL = f"COPY churnops.prediction_log_batches ({', '.join(BATCH_COLUMNS)}) FROM STDIN (FORMAT binary)"
_N_ROWS_FIELD = BATCH_COLUMNS.index("n_rows")
_FIELD_COUNT = struct.Struct(">h").pack(len(BATCH_COLUMNS))


class LoggedRequest(NamedTuple):
    """One answered request, as queued by the handler: its own fields, its predictions by column, and its features
    already as json text (`request_features_json`)."""

    logged_at: float  # seconds since 1970 (time.time())
    request_id: str | None
    endpoint: str
    latency_seconds: float | None
    customer_ids: Sequence[str | None]
    scores: Sequence[float]
    decisions: Sequence[bool | None]
    bands: Sequence[str | None]
    features: bytes

    def check(self) -> LoggedRequest:
        """Itself, when every column holds one value per prediction (at least one); ValueError otherwise."""
        n_rows = len(self.scores)
        lengths = (len(self.customer_ids), len(self.decisions), len(self.bands))
        if not n_rows or lengths != (n_rows,) * 3:
            raise ValueError(
                f"prediction log: a request's columns must all have one value per prediction ({n_rows} scores), "
                f"got customer_ids, decisions, bands {lengths}"
            )
        return self


def request_features_json(
    records: Sequence[Mapping[str, Any]], by_column: Mapping[str, Sequence[Any]] | None = None
) -> bytes:
    """A request's features as json text by column, {"feature": [value of prediction 1, ...]} (null = missing);
    `by_column` is the same already by column, when the caller has it (no transpose then).

    Serialised by the handler, not by the writer thread: there the whole flush's features held the GIL in one
    stretch, and the event loop and the writer handing it back and forth cost twice the serialisation itself.
    """
    columns = features_by_column(records) if by_column is None else by_column
    return orjson.dumps(columns, option=orjson.OPT_SERIALIZE_NUMPY)


def prediction_batch_tuple(model_name: str, model_version: str, requests: Sequence[LoggedRequest]) -> bytes:
    """The requests (all answered by this model version) as one tuple of binary COPY, columns BATCH_COLUMNS.

    The features column is a json array of the requests' own texts, in request order: joined, not re-serialised.
    """
    if not requests:
        raise ValueError("prediction log: a batch holds at least one request")
    logged_at = np.fromiter(map(attrgetter("logged_at"), requests), dtype=np.float64, count=len(requests))
    request_rows = list(map(len, map(attrgetter("scores"), requests)))
    return b"".join(
        (
            _FIELD_COUNT,
            unix_timestamp_field(float(logged_at.min())),
            unix_timestamp_field(float(logged_at.max())),
            text_field(model_name),
            text_field(model_version),
            INT4.pack(4, len(requests)),
            INT4.pack(4, sum(request_rows)),
            unix_timestamps_array_field(logged_at),
            text_array_field(list(map(attrgetter("request_id"), requests))),
            text_array_field(list(map(attrgetter("endpoint"), requests))),
            float8_array_field(list(map(attrgetter("latency_seconds"), requests))),
            int4_array_field(request_rows),
            text_array_field(list(chain.from_iterable(map(attrgetter("customer_ids"), requests)))),
            scores_field(list(chain.from_iterable(map(attrgetter("scores"), requests)))),
            bool_array_field(list(chain.from_iterable(map(attrgetter("decisions"), requests)))),
            text_array_field(list(chain.from_iterable(map(attrgetter("bands"), requests)))),
            field(b"[" + b",".join(map(attrgetter("features"), requests)) + b"]"),
        )
    )


def batch_tuples_end(data: bytes | memoryview, limit: int) -> tuple[int, int]:
    """(end offset, predictions) of the whole batch tuples at the start of `data` that fit in `limit` bytes, or of
    the first one alone when it is longer; (0, 0) when not even one tuple is complete."""
    return tuples_end(data, limit, _N_ROWS_FIELD)


def copy_prediction_batches(conn: Connection, tuples: Sequence[bytes]) -> int:
    """Append tuples of `prediction_batch_tuple` with one binary COPY, in one transaction; return the rows written."""
    return run_copy(conn, BATCH_COPY_SQL, b"".join((COPY_SIGNATURE, *tuples, COPY_TRAILER)))
