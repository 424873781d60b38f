"""The prediction log's spool: predictions PostgreSQL cannot take yet, kept in local append-only files until it can.

When the writer's in-memory queue is full (the database is slower than the requests) or a COPY fails (unreachable,
timed out, waiting on a lock), the binary COPY tuples go to a spool file instead of being dropped. Each
worker appends to its own file, `<pid>-<start ns>.batch-spool` under `<home>/prediction_log_spool/<database key>`
(`spool_folder`), and holds an exclusive `flock` on it for its life; a file nobody holds (its worker died or was
restarted) is adopted by the next writer of the same database that looks, and drained like its own. Appending is one
`os.write` of whole tuples into the page cache: the request never waits on the disk's flush, nor on the database.
A tuple says its own length (each field's), so the file needs no framing of its own. A `.batch-spool` holds tuples of
churnops.prediction_log_batches (a flush each, or one request when the queue was full); files an API before migration
0016 wrote hold churnops.prediction_log_requests' rows, one per request: binary tuples (`.binary-spool`) or COPY text
lines (`.spool`). They are adopted and replayed the same way, into the table they were written for (`SpoolFormat`).

Replay is idempotent. Beside each spool file a small progress file records how far the database has taken it:
`<committed offset> <in-flight end>`. The writer marks a chunk in flight, COPYs it in one transaction, then marks it
committed. A crash between the commit and the mark leaves the chunk "in doubt"; before replaying such a chunk the
adopter asks PostgreSQL whether its first tuple is already stored (the COPY was one transaction: all of the chunk
or none of it is), so a chunk is never written twice.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from psycopg2 import sql

from churnops.db.copy_fields import COPY_SIGNATURE, COPY_TRAILER
from churnops.db.prediction_batches import BATCH_COLUMNS, batch_tuples_end, copy_prediction_batches
from churnops.db.prediction_log import (
    REQUEST_COLUMNS,
    copy_prediction_request_lines,
    copy_prediction_requests,
    request_tuples_end,
)

if TYPE_CHECKING:
    from psycopg2.extensions import connection as Connection

log = logging.getLogger(__name__)

__all__ = ["SpoolFile", "chunk_rows", "is_already_stored", "spool_folder"]

_PROGRESS_SUFFIX = ".progress"
_MIN_READ_BYTES = 1 << 16  # a binary chunk is read at least this far: one request's tuple is ~30 kB


@dataclass(frozen=True)
class SpoolFormat:
    """What one kind of spool file holds, and how its chunks reach the database."""

    suffix: str
    binary: bool  # binary COPY tuples; else COPY text lines, one per request
    table: str  # in the churnops schema
    columns: tuple[str, ...]
    copy: Callable[[Connection, bytes], int]  # a chunk of whole tuples (lines) into `table`, one transaction
    tuples_end: Callable[[bytes | memoryview, int], tuple[int, int]]  # (end, predictions) of whole tuples; binary
    # The columns an in-doubt chunk's first tuple is matched on in `table` (unique in practice: its time to the
    # microsecond, ids and scores).
    probe_match: str

    def probe_sql(self) -> tuple[sql.Composed, sql.Composed, sql.Composed]:
        """(create the probe table, COPY into it, is the probe stored?), composed by psycopg2.sql."""
        probe = sql.Identifier(f"{_PROBE_TABLE}_{self.suffix[1:].replace('-', '_')}")
        table = sql.Identifier("churnops", self.table)
        columns = sql.SQL(", ").join(map(sql.Identifier, self.columns))
        create = sql.SQL(
            "CREATE TEMP TABLE IF NOT EXISTS {} ON COMMIT DELETE ROWS AS SELECT {} FROM {} WITH NO DATA"
        ).format(probe, columns, table)
        copy = sql.SQL("COPY pg_temp.{} ({}) FROM STDIN{}").format(
            probe, columns, sql.SQL(" (FORMAT binary)" if self.binary else "")
        )
        exists = sql.SQL("SELECT EXISTS (SELECT 1 FROM {} AS stored JOIN pg_temp.{} AS probe ON {})").format(
            table, probe, sql.SQL(self.probe_match)
        )
        return create, copy, exists


_PROBE_TABLE = "churnops_spool_probe"
_N_ROWS_FIELD = REQUEST_COLUMNS.index("n_rows")
_REQUEST_MATCH = (
    "stored.logged_at = probe.logged_at AND stored.endpoint = probe.endpoint"
    " AND stored.model_version = probe.model_version AND stored.request_id IS NOT DISTINCT FROM probe.request_id"
    " AND stored.customer_ids = probe.customer_ids AND stored.scores = probe.scores"
)
# What the API writes now: one tuple per flush of its writer (churnops/db/prediction_batches.py, migration 0016).
BATCHES = SpoolFormat(
    ".batch-spool",
    True,
    "prediction_log_batches",
    BATCH_COLUMNS,
    lambda conn, chunk: copy_prediction_batches(conn, [chunk]),
    batch_tuples_end,
    "stored.first_logged_at = probe.first_logged_at AND stored.last_logged_at = probe.last_logged_at"
    " AND stored.model_version = probe.model_version AND stored.request_ids = probe.request_ids"
    " AND stored.scores = probe.scores",
)
# What an API before migration 0016 wrote, one tuple (line) per request: replayed, never written.
REQUESTS = SpoolFormat(
    ".binary-spool",
    True,
    "prediction_log_requests",
    REQUEST_COLUMNS,
    lambda conn, chunk: copy_prediction_requests(conn, [chunk]),
    request_tuples_end,
    _REQUEST_MATCH,
)
REQUEST_LINES = SpoolFormat(
    ".spool",
    False,
    "prediction_log_requests",
    REQUEST_COLUMNS,
    copy_prediction_request_lines,
    request_tuples_end,
    _REQUEST_MATCH,
)
SPOOL_FORMATS = {spool_format.suffix: spool_format for spool_format in (BATCHES, REQUESTS, REQUEST_LINES)}


def spool_folder(home: Path, database_url: str) -> Path:
    """Where every worker of an API started from the working folder `home` spools its prediction log for the
    database at `database_url`: a folder per database (its host, port and name; never the credentials), so a spool
    left behind is replayed only into the database its predictions were meant for, even when the next API started
    from the same folder writes elsewhere."""
    from psycopg2.extensions import parse_dsn

    parsed = parse_dsn(database_url)
    identity = f"{parsed.get('host', '')}:{parsed.get('port', '5432')}/{parsed.get('dbname', '')}"
    return home / "prediction_log_spool" / hashlib.sha256(identity.encode()).hexdigest()[:16]


def chunk_rows(chunk: bytes, spool_format: SpoolFormat) -> int:
    """The predictions in a run of binary COPY tuples or of COPY text lines (each says its n_rows)."""
    if spool_format.binary:
        return spool_format.tuples_end(chunk, len(chunk))[1]
    return sum(int(line.split(b"\t", _N_ROWS_FIELD + 1)[_N_ROWS_FIELD]) for line in chunk.splitlines())


def is_already_stored(conn: Connection, chunk: bytes, spool_format: SpoolFormat) -> bool:
    """Whether the first tuple (line) of a chunk is in the format's table."""
    create, copy, exists = spool_format.probe_sql()
    if spool_format.binary:
        data = COPY_SIGNATURE + chunk[: spool_format.tuples_end(chunk, 1)[0]] + COPY_TRAILER
    else:
        data = chunk[: chunk.index(b"\n") + 1]
    with conn, conn.cursor() as cur:
        # Columns only, no constraints (LIKE would keep the identity's NOT NULL): the probe holds what COPY sends.
        cur.execute(create)
        cur.copy_expert(copy, io.BytesIO(data))
        cur.execute(exists)
        return bool(cur.fetchone()[0])


class SpoolFile:
    """One append-only file of binary COPY tuples (or, `.spool`, of COPY text lines), locked by the writer that owns
    it, and how far the database has taken it.

    `append` may be called from request threads while the writer thread reads: both hold the caller's lock around
    anything that moves `end` or truncates (PredictionLog keeps that lock).
    """

    def __init__(self, path: Path) -> None:
        """Open and lock `path` (created if missing); BlockingIOError when another writer holds it."""
        self.path = path
        self.format = SPOOL_FORMATS[path.suffix]
        self._progress_path = path.with_suffix(_PROGRESS_SUFFIX)
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._fd)
            raise
        self.end = os.fstat(self._fd).st_size
        self.committed, self.in_flight_end = self._read_progress()
        if self.committed > self.end:  # truncated after draining, before the progress said so
            self.committed, self.in_flight_end = 0, None

    @classmethod
    def create(cls, folder: Path) -> SpoolFile:
        folder.mkdir(parents=True, exist_ok=True)
        return cls(folder / f"{os.getpid()}-{time.time_ns()}{BATCHES.suffix}")

    @classmethod
    def adopt_orphans(cls, folder: Path, known: set[Path]) -> list[SpoolFile]:
        """The spool files under `folder` that no running writer holds (their worker ended), now ours."""
        adopted = []
        paths = [path for suffix in SPOOL_FORMATS for path in folder.glob(f"*{suffix}")] if folder.is_dir() else []
        for path in sorted(paths):
            if path in known:
                continue
            with contextlib.suppress(BlockingIOError, FileNotFoundError):
                adopted.append(cls(path))
        return adopted

    @property
    def unread(self) -> int:
        return self.end - self.committed

    @property
    def in_doubt(self) -> bool:
        return self.in_flight_end is not None

    def append(self, data: bytes) -> None:
        """Append whole requests, or nothing: a request half written (the disk filled up) is cut off again, as
        every request after it would be read from the wrong offset (binary tuples have no separator to resync on)."""
        view = memoryview(data)
        try:
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self.end)
            raise
        self.end += len(data)

    def next_chunk(self, max_bytes: int) -> bytes:
        """Whole tuples (lines) from the committed offset, at most `max_bytes` but at least one."""
        binary = self.format.binary
        size = min(max(max_bytes, _MIN_READ_BYTES) if binary else max_bytes, self.unread)
        while True:
            data = os.pread(self._fd, size, self.committed)
            cut = self.format.tuples_end(data, max_bytes)[0] if binary else data.rfind(b"\n") + 1
            if cut or size >= self.unread:
                return data[:cut]
            size = min(size * 2, self.unread)

    def mark_in_flight(self, chunk_end: int) -> None:
        self.in_flight_end = chunk_end
        self._write_progress()

    def mark_committed(self, chunk_end: int) -> None:
        self.committed, self.in_flight_end = chunk_end, None
        self._write_progress()

    def reset_if_drained(self) -> bool:
        """Empty the file once the database has taken all of it (truncate first: a crash in between leaves a
        progress past the end, read as 0)."""
        if self.unread or self.in_doubt or not self.end:
            return False
        os.ftruncate(self._fd, 0)
        self.end = self.committed = 0
        self._write_progress()
        return True

    def remove(self) -> None:
        """Delete a drained file and its progress, then let go of it."""
        with contextlib.suppress(FileNotFoundError):
            self._progress_path.unlink()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self.close()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # also releases the flock
            self._fd = -1

    def _read_progress(self) -> tuple[int, int | None]:
        try:
            committed, in_flight = self._progress_path.read_text().split()
        except (FileNotFoundError, ValueError):
            return 0, None
        return int(committed), None if in_flight == "-" else int(in_flight)

    def _write_progress(self) -> None:
        # Written beside and renamed over: a crash leaves the old progress or the new one, never half of one.
        text = f"{self.committed} {'-' if self.in_flight_end is None else self.in_flight_end}\n"
        temporary = self._progress_path.with_suffix(".progress-new")
        temporary.write_text(text)
        os.replace(temporary, self._progress_path)
