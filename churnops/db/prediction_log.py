"""The prediction log's storage: one row of churnops.prediction_log_requests per request, by column (migration 0014).

A request's predictions are arrays (customer_ids, scores, decisions, risk_bands) and its input features one json
text by column, {"feature": [value, ...]}, so PostgreSQL pays a tuple and its index entries once per request instead
of once per prediction. The features column is `text` (migration 0015): PostgreSQL stores the json text without
parsing it (orjson's output here, valid by construction); readers cast it, `features::json`. The view
churnops.prediction_log shows them one row per prediction.
Rows are sent as COPY's text format, built here for the API's writer thread and for `write_prediction_log`.
"""

from __future__ import annotations

import datetime as dt
import functools
import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import TYPE_CHECKING, Any, NamedTuple

import orjson

from churnops.db.rows import copy_text

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


def _array_literal(elements: Iterable[str | None]) -> str:
    # Every element quoted (so commas, braces, spaces and the word NULL are data), NULL bare.
    quoted = (
        "NULL" if element is None else '"' + element.replace("\\", "\\\\").replace('"', '\\"') + '"'
        for element in elements
    )
    return "{" + ",".join(quoted) + "}"


def _text_array_field(values: Sequence[str | None]) -> bytes:
    """A text[] as one COPY field: the array literal, then COPY's own escaping."""
    if None not in values:
        # Checked on the elements alone: the joined literal below holds quotes of its own.
        elements = "".join(values)  # type: ignore[arg-type]  # no None, checked above
        if "\\" not in elements and '"' not in elements:  # the common case: no element needs an escape
            return copy_text('{"' + '","'.join(values) + '"}').encode()  # type: ignore[arg-type]
    return copy_text(_array_literal(values)).encode()


_BOOL_TEXT = (b"f", b"t")  # indexed by the bool


def _bool_array_field(values: Sequence[bool | None]) -> bytes:
    if None not in values:
        return b"{%b}" % b",".join(map(_BOOL_TEXT.__getitem__, map(bool, values)))
    return b"{%b}" % b",".join(b"NULL" if value is None else b"t" if value else b"f" for value in values)


def _json_field(value: Any) -> bytes:
    # JSON text never holds a raw tab or newline; its backslashes are escaped like any other field's.
    text = orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)
    return text.replace(b"\\", b"\\\\") if b"\\" in text else text


@functools.lru_cache(maxsize=256)
def _served_by_fields(endpoint: str, model_name: str, model_version: str) -> bytes:
    """The endpoint, model name and model version fields: the same few on every request, escaped once."""
    return b"\t".join(copy_text(value).encode() for value in (endpoint, model_name, model_version))


def prediction_request_line(context: RequestContext, columns: LoggedColumns) -> bytes:
    """A request's predictions as one line of COPY's text input (bytes), columns REQUEST_COLUMNS.

    The scores are one orjson call (its array text becomes the float8[] literal), the features one transpose and
    one orjson call: the cost of a request barely grows with its rows.
    """
    n_rows = len(columns.scores)
    lengths = {len(columns.customer_ids), len(columns.features), len(columns.decisions), len(columns.bands)}
    if lengths != {n_rows}:
        raise ValueError(
            f"prediction log: a request's columns must all have one value per prediction ({n_rows} scores), "
            f"got customer_ids {len(columns.customer_ids)}, features {len(columns.features)}, "
            f"decisions {len(columns.decisions)}, bands {len(columns.bands)}"
        )
    latency = b"\\N" if context.latency_seconds is None else repr(float(context.latency_seconds)).encode()
    scores = orjson.dumps(columns.scores, option=orjson.OPT_SERIALIZE_NUMPY)
    fields = (
        context.logged_at.isoformat().encode(),
        b"\\N" if context.request_id is None else copy_text(context.request_id).encode(),
        _served_by_fields(context.endpoint, context.model_name, context.model_version),
        latency,
        b"%d" % n_rows,
        _text_array_field(columns.customer_ids),
        b"{%b}" % scores[1:-1],
        _bool_array_field(columns.decisions),
        _text_array_field(columns.bands),
        _json_field(
            features_by_column(columns.features) if columns.features_by_column is None else columns.features_by_column
        ),
    )
    return b"\t".join(fields) + b"\n"


def copy_prediction_requests(conn: Connection, lines: Sequence[bytes]) -> int:
    """Append lines of `prediction_request_line` with one COPY, in one transaction; return the requests written."""
    with conn, conn.cursor() as cur:
        data = b"".join(lines)
        # One read of the whole buffer: psycopg2 reads 8 KB at a time by default, handing the GIL back and forth
        # with the API's event loop for every piece.
        cur.copy_expert(_COPY_SQL, io.BytesIO(data), size=max(len(data), 8192))
        return cur.rowcount


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
        lines.append(prediction_request_line(context, columns))
        start = end
    copy_prediction_requests(conn, lines)
    return len(records)
