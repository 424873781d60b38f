"""The API's prediction log storage: one row of churnops.prediction_log_batches per flush of a worker's writer
(migration 0016), many requests in it.

A request row (churnops/db/prediction_log.py, migration 0014) still cost PostgreSQL a heap tuple, its index entries
and its checks per request, and the API a tuple built field by field in the event loop per request: for a one-row
`/predict` that was most of what logging cost. Here the event loop queues a `LoggedRequest` (what the handler already
has, and its features as json text), and the writer thread turns everything a flush holds into one row per served
model: the requests' own fields (time, id, endpoint, latency, predictions) as arrays, the predictions as arrays, and
the features as one json array of every prediction's values, [[value, ...], ...], in the order of the model's input
columns (`feature_names`, stored once per row), as `text` (not parsed on write; read it as `features::json`). The
view churnops.prediction_log shows them one row per prediction.
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
    "feature_names",
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
    features: bytes  # `request_features_json`

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
    feature_names: Sequence[str],
    records: Sequence[Mapping[str, Any]] | None,
    values: Sequence[Sequence[Any]] | None = None,
) -> bytes:
    """A request's features as json text, one array per prediction of its values in `feature_names`' order
    ([[value, ...], ...], null = missing); `values` is the same already in that order, when the caller has it.

    Serialised by the handler, not by the writer thread: there a whole flush's features held the GIL in one
    stretch, and the event loop and the writer handing it back and forth cost twice the serialisation itself.
    """
    if values is None:
        if records is None:
            raise ValueError("prediction log: a request's features need its records or its values")
        values = [tuple(map(record.get, feature_names)) for record in records]
    return orjson.dumps(values, option=orjson.OPT_SERIALIZE_NUMPY)


def prediction_batch_tuple(
    model_name: str, model_version: str, feature_names: Sequence[str], requests: Sequence[LoggedRequest]
) -> bytes:
    """The requests (all answered by this model version, whose input columns are `feature_names`) as one tuple of
    binary COPY, columns BATCH_COLUMNS.

    The features column is one json array of every prediction's values, the requests' own texts joined (not
    re-serialised): `features[i]` is the i-th prediction's, as `scores[i]`.
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
            text_array_field(feature_names),
            field(_joined_rows(list(map(attrgetter("features"), requests)))),
        )
    )


def _joined_rows(texts: list[bytes]) -> bytes:
    """One json array of the rows of every text: each is "[[...],...]", its rows joined without their brackets."""
    return b"".join((b"[", b",".join([text[1:-1] for text in texts]), b"]"))


def batch_tuples_end(data: bytes | memoryview, limit: int) -> tuple[int, int]:
    """(end offset, predictions) of the whole batch tuples at the start of `data` that fit in `limit` bytes, or of
    the first one alone when it is longer; (0, 0) when not even one tuple is complete."""
    return tuples_end(data, limit, _N_ROWS_FIELD)


def copy_prediction_batches(conn: Connection, tuples: Sequence[bytes]) -> int:
    """Append tuples of `prediction_batch_tuple` with one binary COPY, in one transaction; return the rows written."""
    return run_copy(conn, BATCH_COPY_SQL, b"".join((COPY_SIGNATURE, *tuples, COPY_TRAILER)))
