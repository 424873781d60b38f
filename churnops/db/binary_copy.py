"""A scoring list's rows in PostgreSQL's binary COPY format, rendered column by column with numpy.

Why binary: the server then stores a double as 8 bytes instead of parsing its text (most of a list's columns are
doubles), the client skips formatting them, and scores arrive bit-identical by construction.
"""

from __future__ import annotations

import contextlib
import io
import queue
import threading
from collections.abc import Iterator

import numpy as np
import pandas as pd

from churnops.db.copy_fields import COPY_SIGNATURE, COPY_TRAILER

# The integer columns of a list and their PostgreSQL width (binary COPY sends exactly the column's type); a
# float column is `double precision` (NaN is sent as NULL), a bool `boolean`, anything else `text`.
_INTEGER_TYPES = {"risk_decile": ">i2", "campaign_rank": ">i4"}


def _fixed_field(values: np.ndarray, dtype: str) -> tuple[np.ndarray, np.ndarray | None]:
    """(bytes, mask or None for all) of a fixed-width column: a 4-byte length then the big-endian value; NULL
    (length -1, no value) on NaN."""
    width = np.dtype(dtype).itemsize
    field = np.empty(len(values), dtype=[("length", ">i4"), ("value", dtype)])
    field["length"] = width
    field["value"] = values
    block = field.view(np.uint8).reshape(len(values), 4 + width)
    if values.dtype.kind != "f" or not np.isnan(values).any():
        return block, None
    null = np.isnan(values)
    block[null, :4] = np.frombuffer(np.array(-1, dtype=">i4").tobytes(), dtype=np.uint8)
    mask = np.ones(block.shape, dtype=bool)
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
    fields = [_field(rows[column].to_numpy(), column) for column in rows.columns]
    width = 2 + sum(block.shape[1] for block, _ in fields)
    # One matrix of every row's bytes, padded to the widest row, and the mask of the bytes that are not padding.
    matrix = np.empty((len(rows), width), dtype=np.uint8)
    keep = np.ones((len(rows), width), dtype=bool)
    matrix[:, :2] = np.frombuffer(np.array(len(fields), dtype=">i2").tobytes(), dtype=np.uint8)
    start = 2
    for block, mask in fields:
        end = start + block.shape[1]
        matrix[:, start:end] = block
        if mask is not None:
            keep[:, start:end] = mask
        start = end
    # Row-major boolean selection keeps each row's bytes together and the rows in order.
    return matrix[keep].tobytes()


def _field(values: np.ndarray, column: str) -> tuple[np.ndarray, np.ndarray | None]:
    if column in _INTEGER_TYPES:
        return _fixed_field(values, _INTEGER_TYPES[column])
    if values.dtype.kind == "f":
        return _fixed_field(values, ">f8")
    if values.dtype.kind == "b":
        return _fixed_field(values, "?")
    return _text_field(values)


def binary_copy_chunks(rows: pd.DataFrame, chunk_rows: int) -> Iterator[bytes]:
    """The whole binary COPY stream of `rows`, `chunk_rows` rows at a time (bounds the memory of a large list)."""
    yield COPY_SIGNATURE
    for start in range(0, len(rows), chunk_rows):
        yield _render_rows(rows.iloc[start : start + chunk_rows])
    yield COPY_TRAILER


class BinaryCopyStream(io.RawIOBase):
    """A read-only file over a binary COPY stream, for `copy_expert` to pull from. A thread renders the next chunks
    while the server stores the ones sent (numpy and the socket write both release the GIL); `close` stops it."""

    def __init__(self, rows: pd.DataFrame, chunk_rows: int) -> None:
        self._ready: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize=2)
        self._stopped = threading.Event()
        self._renderer = threading.Thread(target=self._render, args=(rows, chunk_rows), daemon=True)
        self._renderer.start()
        self._chunk = memoryview(b"")
        self._offset = 0

    def _render(self, rows: pd.DataFrame, chunk_rows: int) -> None:
        try:
            for chunk in binary_copy_chunks(rows, chunk_rows):
                if not self._hand_over(chunk):
                    return
            self._hand_over(None)
        except BaseException as error:  # noqa: BLE001 — re-raised in the reading thread
            self._hand_over(error)

    def _hand_over(self, item: bytes | BaseException | None) -> bool:
        while not self._stopped.is_set():
            with contextlib.suppress(queue.Full):
                self._ready.put(item, timeout=0.1)
                return True
        return False

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        """At most `size` bytes of the current chunk (slices, not copies of the rest: chunks are tens of MB)."""
        while self._offset >= len(self._chunk):
            item = self._ready.get()
            if item is None:
                self._ready.put(None)  # every later read sees the end too
                return b""
            if isinstance(item, BaseException):
                raise item
            self._chunk, self._offset = memoryview(item), 0
        end = len(self._chunk) if size < 0 else self._offset + size
        data = self._chunk[self._offset : end]
        self._offset += len(data)
        return bytes(data)

    def close(self) -> None:
        self._stopped.set()
        self._renderer.join()
        super().close()
