"""The prediction log's storage: one row of churnops.prediction_log_requests per request, by column (migration 0014).

A request's predictions are arrays (customer_ids, scores, decisions, risk_bands) and its input features one json
text by column, {"feature": [value, ...]}, so PostgreSQL pays a tuple and its index entries once per request instead
of once per prediction. The features column is `text` (migration 0015): PostgreSQL stores the json text without
parsing it (orjson's output here, valid by construction); readers cast it, `features::json`. The view
churnops.prediction_log shows them one row per prediction.
Rows are sent as binary COPY tuples, built here for the API's writer thread and for `write_prediction_log`; COPY
text lines (the format before) are still accepted for spool files written by an older API.
"""

from __future__ import annotations

import datetime as dt
import functools
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import TYPE_CHECKING, Any, NamedTuple

import orjson

from churnops.db.copy_fields import (
    COPY_SIGNATURE,
    COPY_TRAILER,
    FLOAT8,
    INT4,
    NULL,
    bool_array_field,
    field,
    run_copy,
    scores_field,
    text_array_field,
    text_field,
    timestamp_field,
    tuples_end,
)

if TYPE_CHECKING:
    from psycopg2.extensions import connection as Connection

# The columns of churnops.prediction_log_requests a writer fills, in the order of the COPY text.
REQUEST_COLUMNS = (
    "logged_at",
    "request_id",
    "endpoint",
    "model_name",
    "model_version",
    "latency_seconds",
    "n_rows",
    "customer_ids",
    "scores",
    "decisions",
    "risk_bands",
    "features",
)
_COPY_SQL = f"COPY churnops.prediction_log_requests ({', '.join(REQUEST_COLUMNS)}) FROM STDIN"
_BINARY_COPY_SQL = f"{_COPY_SQL} (FORMAT binary)"


@dataclass(frozen=True)
class RequestContext:
    """What every prediction of one request shares."""

    logged_at: dt.datetime
    request_id: str | None
    endpoint: str
    model_name: str
    model_version: str
    latency_seconds: float | None


class LoggedColumns(NamedTuple):
    """A request's scored customers, by column (features: one mapping per customer)."""

    customer_ids: Sequence[str | None]
    features: Sequence[Mapping[str, Any]]
    scores: Sequence[float]
    decisions: Sequence[bool | None]
    bands: Sequence[str | None]
    # The same features already by column ({"feature": values}, one per customer), when the caller has them: the
    # line then skips the transpose of `features`.
    features_by_column: Mapping[str, Sequence[Any]] | None = None


def features_by_column(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """{"feature": (value of record 1, value of record 2, ...)}; a feature a record lacks is None there."""
    if len(records) == 1:  # /predict: no transpose to do
        return {name: (value,) for name, value in records[0].items()}
    if not records:
        return {}
    first_keys = records[0].keys()
    names = list(first_keys)
    if all(record.keys() == first_keys for record in records):
        if len(names) == 1:
            return {names[0]: [record[names[0]] for record in records]}
        # One C-level transpose: itemgetter over the records, zip across them.
        return dict(zip(names, zip(*map(itemgetter(*names), records), strict=True), strict=True))
    for record in records:  # records of different shapes (the detailed path can give them): the union of names
        names.extend(name for name in record if name not in names)
    return {name: [record.get(name) for record in records] for name in names}


_N_ROWS_FIELD = REQUEST_COLUMNS.index("n_rows")
_FIELD_COUNT = struct.Struct(">h").pack(len(REQUEST_COLUMNS))


@functools.lru_cache(maxsize=256)
def _served_by_fields(endpoint: str, model_name: str, model_version: str) -> bytes:
    """The endpoint, model name and model version fields: the same few on every request, encoded once."""
    return b"".join(map(text_field, (endpoint, model_name, model_version)))


def prediction_request_tuple(context: RequestContext, columns: LoggedColumns) -> bytes:
    """A request's predictions as one tuple of binary COPY (bytes), columns REQUEST_COLUMNS.

    Binary, not COPY's text: PostgreSQL then neither scans the ~36 kB of a 100-prediction request's features for
    delimiters and escapes, nor parses the arrays' numbers; the features are orjson's json text as is.
    """
    n_rows = len(columns.scores)
    lengths = {len(columns.customer_ids), len(columns.features), len(columns.decisions), len(columns.bands)}
    if lengths != {n_rows}:
        raise ValueError(
            f"prediction log: a request's columns must all have one value per prediction ({n_rows} scores), "
            f"got customer_ids {len(columns.customer_ids)}, features {len(columns.features)}, "
            f"decisions {len(columns.decisions)}, bands {len(columns.bands)}"
        )
    latency = context.latency_seconds
    by_column = (
        features_by_column(columns.features) if columns.features_by_column is None else columns.features_by_column
    )
    return b"".join(
        (
            _FIELD_COUNT,
            timestamp_field(context.logged_at),
            text_field(context.request_id),
            _served_by_fields(context.endpoint, context.model_name, context.model_version),
            NULL if latency is None else FLOAT8.pack(8, float(latency)),
            INT4.pack(4, n_rows),
            text_array_field(columns.customer_ids),
            scores_field(columns.scores),
            bool_array_field(columns.decisions),
            text_array_field(columns.bands),
            field(orjson.dumps(by_column, option=orjson.OPT_SERIALIZE_NUMPY)),
        )
    )


def request_tuples_end(data: bytes | memoryview, limit: int) -> tuple[int, int]:
    """(end offset, predictions) of the whole request tuples at the start of `data` that fit in `limit` bytes, or of
    the first one alone when it is longer; (0, 0) when not even one tuple is complete."""
    return tuples_end(data, limit, _N_ROWS_FIELD)


def copy_prediction_requests(conn: Connection, tuples: Sequence[bytes]) -> int:
    """Append tuples of `prediction_request_tuple` with one binary COPY, in one transaction; return the requests
    written."""
    return run_copy(conn, _BINARY_COPY_SQL, b"".join((COPY_SIGNATURE, *tuples, COPY_TRAILER)))


def copy_prediction_request_lines(conn: Connection, lines: bytes) -> int:
    """Append lines of COPY text (the format before binary COPY, still found in old spool files) in one
    transaction; return the requests written."""
    return run_copy(conn, _COPY_SQL, lines)


_CONTEXT_KEYS = ("logged_at", "request_id", "endpoint", "model_name", "model_version", "latency_seconds")


def write_prediction_log(conn: Connection, records: Sequence[Mapping[str, Any]]) -> int:
    """Append online predictions in one transaction; return the predictions written.

    Each record: endpoint, model_name, model_version, score, features (dict of the model inputs); optional
    logged_at (now), request_id, customer_id, decision, risk_band, latency_seconds. Consecutive records that share
    logged_at, request_id, endpoint, model and latency are stored as one request.
    """
    now = dt.datetime.now(dt.UTC)
    missing = [
        (index, key)
        for index, record in enumerate(records)
        for key in ("endpoint", "model_name", "model_version", "score", "features")
        if key not in record
    ]
    if missing:
        index, key = missing[0]
        raise ValueError(f"prediction log record {index} lacks {key!r} ({len(missing)} missing fields in all)")
    lines: list[bytes] = []
    start = 0
    while start < len(records):
        shared = tuple(records[start].get(key) for key in _CONTEXT_KEYS)
        end = start + 1
        while end < len(records) and tuple(records[end].get(key) for key in _CONTEXT_KEYS) == shared:
            end += 1
        group = records[start:end]
        context = RequestContext(shared[0] or now, *shared[1:])  # type: ignore[arg-type]
        columns = LoggedColumns(
            [record.get("customer_id") for record in group],
            [record["features"] for record in group],
            [record["score"] for record in group],
            [None if record.get("decision") is None else bool(record["decision"]) for record in group],
            [record.get("risk_band") for record in group],
        )
        lines.append(prediction_request_tuple(context, columns))
        start = end
    copy_prediction_requests(conn, lines)
    return len(records)
