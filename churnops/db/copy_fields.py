"""PostgreSQL's binary COPY format: the stream's signature and trailer (also used by the scoring lists' writer,
churnops/db/binary_copy.py), and the fields of the prediction log's writers (churnops/db/prediction_log.py, one row
per request; churnops/db/prediction_batches.py, one row per flush of the API's writer).

A binary COPY tuple is a 16-bit field count, then per field a 32-bit length (-1 for NULL) and the value in the
type's binary form, big-endian. Arrays: dimensions, a has-nulls flag, the element type's oid, per dimension its length
and lower bound (1), then the elements, each a field. Columns of many numbers are built with numpy in one pass.
"""

from __future__ import annotations

import datetime as dt
import io
import struct
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from psycopg2.extensions import connection as Connection

COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"  # flags, no header extension
COPY_TRAILER = b"\xff\xff"

EPOCH = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)  # PostgreSQL's timestamps count microseconds from here
_EPOCH_UNIX_SECONDS = EPOCH.timestamp()
LENGTH = struct.Struct(">i")
FLOAT8 = struct.Struct(">id")  # length and value
INT4 = struct.Struct(">ii")
INT8 = struct.Struct(">iq")
NULL = LENGTH.pack(-1)
# An array's header: dimensions, has-nulls flag, element type oid, length, lower bound (1).
_ARRAY_HEADER = struct.Struct(">iiiii")
_TEXT_OID, _FLOAT8_OID, _BOOL_OID, _INT4_OID, _TIMESTAMPTZ_OID = 25, 701, 16, 23, 1184
_BOOL_ELEMENTS = {True: b"\x00\x00\x00\x01\x01", False: b"\x00\x00\x00\x01\x00", None: NULL}
_ASCII_LENGTHS = [LENGTH.pack(length).decode("latin-1") for length in range(1024)]
_FLOAT8_ELEMENT = np.dtype([("length", ">i4"), ("value", ">f8")])
_INT4_ELEMENT = np.dtype([("length", ">i4"), ("value", ">i4")])
_INT8_ELEMENT = np.dtype([("length", ">i4"), ("value", ">i8")])


def field(data: bytes) -> bytes:
    return LENGTH.pack(len(data)) + data


def text_field(value: str | None) -> bytes:
    return NULL if value is None else field(value.encode())


def timestamp_field(value: dt.datetime) -> bytes:
    # A naive time is read as the process's local time (text COPY would read it in the session's time zone).
    delta = (value if value.tzinfo is not None else value.astimezone()) - EPOCH
    return INT8.pack(8, (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds)


def unix_timestamp_field(seconds: float) -> bytes:
    """A `timestamptz` from seconds since 1970 (`time.time()`), to the microsecond."""
    return INT8.pack(8, round((seconds - _EPOCH_UNIX_SECONDS) * 1_000_000))


def _array_field(oid: int, elements: bytes, count: int, has_null: bool) -> bytes:
    return field(_ARRAY_HEADER.pack(1, has_null, oid, count, 1) + elements)


def text_array_field(values: Sequence[str | None]) -> bytes:
    if None not in values and "".join(values).isascii():  # type: ignore[arg-type]  # no None, checked
        # The common case (ids and bands in ASCII): lengths and elements interleaved as one latin-1 text and encoded
        # once, which is UTF-8 for ASCII and the bytes themselves for the lengths; an element per call cost the event
        # loop three times as much.
        parts: list[str] = [""] * (2 * len(values))
        try:
            parts[::2] = map(_ASCII_LENGTHS.__getitem__, map(len, values))  # type: ignore[arg-type]
        except IndexError:  # an element longer than the table: the general way below
            pass
        else:
            parts[1::2] = values  # type: ignore[assignment]
            return _array_field(_TEXT_OID, "".join(parts).encode("latin-1"), len(values), False)
    encoded = [None if value is None else value.encode() for value in values]
    elements = b"".join(NULL if value is None else field(value) for value in encoded)
    return _array_field(_TEXT_OID, elements, len(values), None in encoded)


def _fixed_array_field(oid: int, element: np.dtype, values: Sequence[float] | np.ndarray) -> bytes:
    elements = np.empty(len(values), dtype=element)
    elements["length"] = element["value"].itemsize
    elements["value"] = values
    return _array_field(oid, elements.tobytes(), len(values), False)


def scores_field(scores: Sequence[float] | np.ndarray) -> bytes:
    """A `double precision[]` without NULLs. A NaN score is sent as NaN, not NULL: the tables' CHECK (0 <= ALL
    (scores) AND 1 >= ALL (scores)) refuses it."""
    return _fixed_array_field(_FLOAT8_OID, _FLOAT8_ELEMENT, scores)


def float8_array_field(values: Sequence[float | None]) -> bytes:
    """A `double precision[]`; None is NULL."""
    if None not in values:
        return _fixed_array_field(_FLOAT8_OID, _FLOAT8_ELEMENT, values)  # type: ignore[arg-type]  # no None
    elements = b"".join(NULL if value is None else FLOAT8.pack(8, value) for value in values)
    return _array_field(_FLOAT8_OID, elements, len(values), True)


def int4_array_field(values: Sequence[int] | np.ndarray) -> bytes:
    return _fixed_array_field(_INT4_OID, _INT4_ELEMENT, values)


def unix_timestamps_array_field(seconds: np.ndarray) -> bytes:
    """A `timestamptz[]` from seconds since 1970 (`time.time()` values), to the microsecond."""
    microseconds = np.rint((seconds - _EPOCH_UNIX_SECONDS) * 1_000_000).astype(np.int64)
    return _fixed_array_field(_TIMESTAMPTZ_OID, _INT8_ELEMENT, microseconds)


def bool_array_field(values: Sequence[bool | None]) -> bytes:
    elements = b"".join(map(_BOOL_ELEMENTS.__getitem__, values))
    return _array_field(_BOOL_OID, elements, len(values), None in values)


def tuples_end(data: bytes | memoryview, limit: int, count_field: int) -> tuple[int, int]:
    """(end offset, sum of the int4 field `count_field`) of the whole tuples at the start of `data` that fit in
    `limit` bytes, or of the first one alone when it is longer; (0, 0) when not even one tuple is complete."""
    view = memoryview(data)
    offset = rows = 0
    while offset + 2 <= len(view):
        position = offset + 2
        count = 0
        for index in range(int.from_bytes(view[offset:position], "big", signed=True)):
            if position + 4 > len(view):
                return offset, rows
            length = int.from_bytes(view[position : position + 4], "big", signed=True)
            if index == count_field and position + 8 <= len(view):
                count = int.from_bytes(view[position + 4 : position + 8], "big", signed=True)
            position += 4 + max(length, 0)
        if position > len(view) or (position > limit and offset):
            break
        offset, rows = position, rows + count
    return offset, rows


def run_copy(conn: Connection, sql: str, data: bytes) -> int:
    """`COPY ... FROM STDIN` of `data` in one transaction; return the rows written."""
    with conn, conn.cursor() as cur:
        # One read of the whole buffer: psycopg2 reads 8 KB at a time by default, handing the GIL back and forth
        # with the API's event loop for every piece.
        cur.copy_expert(sql, io.BytesIO(data), size=max(len(data), 8192))
        return cur.rowcount
