"""A scoring list's rows in PostgreSQL's binary COPY format, rendered column by column with numpy.

Why binary: the server then stores a double as 8 bytes instead of parsing its text (most of a list's columns are
doubles), the client skips formatting them, and scores arrive bit-identical by construction.
"""

from __future__ import annotations

import io
from collections.abc import Iterator

import numpy as np
import pandas as pd

# The integer columns of a list and their PostgreSQL width (binary COPY sends exactly the column's type); a
# float column is `double precision` (NaN is sent as NULL), a bool `boolean`, anything else `text`.
_INTEGER_TYPES = {"risk_decile": ">i2", "campaign_rank": ">i4"}
_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
_TRAILER = b"\xff\xff"


def _fixed_field(values: np.ndarray, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """(bytes, mask) of a fixed-width column: a 4-byte length then the big-endian value; NULL (length -1) on NaN."""
    width = np.dtype(dtype).itemsize
    field = np.empty(len(values), dtype=[("length", ">i4"), ("value", dtype)])
    field["length"] = width
    field["value"] = values
    block = field.view(np.uint8).reshape(len(values), 4 + width)
    mask = np.ones(block.shape, dtype=bool)
    if values.dtype.kind == "f" and np.isnan(values).any():
        null = np.isnan(values)
        block[null, :4] = np.frombuffer(np.array(-1, dtype=">i4").tobytes(), dtype=np.uint8)
        mask[null, 4:] = False
    return block, mask


def _text_field(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(bytes, mask) of a text column: a 4-byte length then the UTF-8 bytes."""
    encoded = np.char.encode(values.astype(str), "utf-8")
    lengths = np.char.str_len(encoded)
    width = max(int(lengths.max()), 1)
    data = encoded.astype(f"S{width}").view(np.uint8).reshape(len(values), width)
    block = np.hstack([lengths.astype(">i4").view(np.uint8).reshape(-1, 4), data])
    mask = np.hstack([np.ones((len(values), 4), dtype=bool), np.arange(width) < lengths[:, None]])
    return block, mask


def _render_rows(rows: pd.DataFrame) -> bytes:
    """The tuples of `rows` (no header): each a 2-byte field count, then its fields."""
    blocks = [
        np.frombuffer(np.array(len(rows.columns), dtype=">i2").tobytes(), dtype=np.uint8)[None, :].repeat(
            len(rows), axis=0
        )
    ]
    masks = [np.ones((len(rows), 2), dtype=bool)]
    for column in rows.columns:
        values = rows[column].to_numpy()
        if column in _INTEGER_TYPES:
            block, mask = _fixed_field(values, _INTEGER_TYPES[column])
        elif values.dtype.kind == "f":
            block, mask = _fixed_field(values, ">f8")
        elif values.dtype.kind == "b":
            block, mask = _fixed_field(values, "?")
        else:
            block, mask = _text_field(values)
        blocks.append(block)
        masks.append(mask)
    # Row-major boolean selection keeps each row's bytes together and the rows in order.
    return np.hstack(blocks)[np.hstack(masks)].tobytes()


def binary_copy_chunks(rows: pd.DataFrame, chunk_rows: int) -> Iterator[bytes]:
    """The whole binary COPY stream of `rows`, `chunk_rows` rows at a time (bounds the memory of a large list)."""
    yield _SIGNATURE
    for start in range(0, len(rows), chunk_rows):
        yield _render_rows(rows.iloc[start : start + chunk_rows])
    yield _TRAILER


class BinaryCopyStream(io.RawIOBase):
    """A read-only file over a binary COPY stream, for `copy_expert` to pull from."""

    def __init__(self, rows: pd.DataFrame, chunk_rows: int) -> None:
        self._chunks = binary_copy_chunks(rows, chunk_rows)
        self._chunk = memoryview(b"")
        self._offset = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        """At most `size` bytes of the current chunk (slices, not copies of the rest: chunks are tens of MB)."""
        while self._offset >= len(self._chunk):
            chunk = next(self._chunks, None)
            if chunk is None:
                return b""
            self._chunk, self._offset = memoryview(chunk), 0
        end = len(self._chunk) if size < 0 else self._offset + size
        data = self._chunk[self._offset : end]
        self._offset += len(data)
        return bytes(data)
