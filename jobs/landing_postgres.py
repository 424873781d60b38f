"""A PostgreSQL table as an event source: its identity between runs, and its parallel read by Spark through JDBC.

The table is one source "file" (`postgres:<schema.table>` in the manifest): it is read whole when it changed and
its rows replace the rows of its previous read, exactly as a re-delivered file's do.

Its fingerprint (the manifest's `sha256` for it) is the SHA-256 of its row count and the maximum of
`events.postgres.fingerprint_column` (default: the event timestamp column), taken by one aggregate query on the
driver. Why these two: both are answered by the database without sending a row (an index on the column makes the
maximum free), an appended row changes the count, and a corrected row changes the maximum when the column is an
updated-at column. What it cannot see, and a content hash would (at the cost of reading the whole table every
run): an in-place update that leaves the column alone, or as many rows deleted as inserted below the maximum.

The connection is the platform's way of reaching a database: `Settings.source_database_url` (secret file
`churnops_source_database_url`), or the platform database when unset; the JDBC driver is Debian's
(`/usr/share/java/postgresql.jar`, `Settings.spark.jdbc_jars`), so nothing is downloaded at run time.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from pathlib import Path
from urllib.parse import unquote, urlparse

from churnops.config import Settings
from churnops.dataset import EventSource
from churnops.jobs.event_rules import IngestionError
from churnops.jobs.landing import SourceFile

TABLE_PREFIX = "postgres:"
JDBC_DRIVER = "org.postgresql.Driver"


def _url(settings: Settings) -> str:
    secret = settings.source_database_url or settings.database_url
    if secret is None:
        raise IngestionError(
            "a `postgres` event source needs a database: set CHURNOPS_SOURCE_DATABASE_URL (or the secret file "
            "churnops_source_database_url), or the platform's CHURNOPS_DATABASE_URL"
        )
    return re.sub(r"^postgres(ql)?(\+\w+)?://", "postgresql://", secret.get_secret_value())


def _table(source: EventSource) -> tuple[str, str]:
    schema, _, table = source.path.rpartition(".")
    if not table:
        raise IngestionError(f"events.path {source.path!r} names no table: write `schema.table` or `table`")
    return schema or "public", table


def table_fingerprint(settings: Settings, source: EventSource) -> tuple[int, str]:
    """(row count, latest value of the fingerprint column as text) of the source table."""
    import psycopg2
    from psycopg2 import sql

    schema, table = _table(source)
    column = source.postgres.fingerprint_column or source.timestamp
    query = sql.SQL("SELECT count(*), max({})::text FROM {}.{}").format(
        sql.Identifier(column), sql.Identifier(schema), sql.Identifier(table)
    )
    try:
        with contextlib.closing(psycopg2.connect(_url(settings), connect_timeout=10)) as conn, conn.cursor() as cur:
            cur.execute(query)
            rows, latest = cur.fetchone()
    except psycopg2.Error as error:
        raise IngestionError(f"cannot read the source table {schema}.{table}: {error}".strip()) from error
    return int(rows), str(latest)


def table_source_file(settings: Settings, source: EventSource) -> SourceFile:
    """The table as the one source file of its contract, with its fingerprint already taken."""
    rows, latest = table_fingerprint(settings, source)
    if rows == 0:
        raise IngestionError(f"cannot ingest the source table {source.path}: it has no rows")
    digest = hashlib.sha256(f"{rows}|{latest}".encode()).hexdigest()
    # `size` is the row count and there is no modification time: the fingerprint alone says what changed.
    return SourceFile(f"{TABLE_PREFIX}{source.path}", Path(source.path), size=rows, mtime_ns=0, sha256=digest)


def jdbc_options(settings: Settings, source: EventSource) -> dict[str, str]:
    """The options of Spark's JDBC reader for the source table, sliced as `events.postgres` says."""
    url = urlparse(_url(settings))
    schema, table = _table(source)
    options = {
        "url": f"jdbc:postgresql://{url.hostname or '127.0.0.1'}:{url.port or 5432}{url.path or '/'}",
        "dbtable": f'"{schema}"."{table}"',
        "driver": JDBC_DRIVER,
        "fetchsize": "10000",
    }
    if url.username:
        options["user"] = unquote(url.username)
    if url.password:
        options["password"] = unquote(url.password)
    read = source.postgres
    if read.partition_column is not None:
        options |= {
            "partitionColumn": read.partition_column,
            "lowerBound": str(read.lower_bound),
            "upperBound": str(read.upper_bound),
            "numPartitions": str(read.num_partitions),
        }
    return options
