"""Shared by the writers: values psycopg2 can send, batched inserts and upserts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import psycopg2
import psycopg2.extras
from psycopg2 import sql

from churnops.db.connection import SCHEMA

if TYPE_CHECKING:
    from psycopg2.extensions import connection as Connection


# COPY's text format treats these characters specially; every writer that renders COPY text escapes them the same way.
_COPY_TEXT_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def copy_text(value: object) -> str:
    """A value as one field of COPY's text format: None is NULL (`\\N`), anything else its text, escaped."""
    return "\\N" if value is None else str(value).translate(_COPY_TEXT_ESCAPES)


def plain(value: Any) -> Any:
    """`value` with numpy scalars (np.bool_, np.float32, ...) unwrapped to Python ones, at any depth."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    return value


def adapt(value: Any) -> Any:
    """A value psycopg2 can send: numpy scalars unwrapped, dicts as jsonb."""
    value = plain(value)
    return psycopg2.extras.Json(value) if isinstance(value, dict) else value


def insert_rows(
    conn: Connection,
    table: str,
    rows: Sequence[Mapping[str, Any]],
    *,
    conflict_key: Sequence[str] = (),
    keep_on_conflict: Sequence[str] = (),
) -> int:
    """Insert `rows` (dicts with the same keys) into churnops.`table` in batches, in one transaction.

    With `conflict_key`, an existing row with the same key is updated (an upsert), so re-running a task
    rewrites its record instead of failing or duplicating it; columns in `keep_on_conflict` keep their old
    value when the new one is NULL.
    """
    if not rows:
        return 0
    columns = list(rows[0])
    for row in rows:
        if list(row) != columns:
            raise ValueError(f"{table}: every row needs the same columns {columns}, got {list(row)}")
    statement = sql.SQL("INSERT INTO {table} ({columns}) VALUES %s").format(
        table=sql.Identifier(SCHEMA, table), columns=sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    if conflict_key:
        updates = [
            sql.SQL("{col} = coalesce(EXCLUDED.{col}, {table}.{col})").format(
                col=sql.Identifier(column), table=sql.Identifier(table)
            )
            if column in keep_on_conflict
            else sql.SQL("{col} = EXCLUDED.{col}").format(col=sql.Identifier(column))
            for column in columns
            if column not in conflict_key
        ]
        statement += sql.SQL(" ON CONFLICT ({key}) DO UPDATE SET {updates}").format(
            key=sql.SQL(", ").join(map(sql.Identifier, conflict_key)), updates=sql.SQL(", ").join(updates)
        )
    values = [tuple(adapt(value) for value in row.values()) for row in rows]
    with conn, conn.cursor() as cur:
        psycopg2.extras.execute_values(cur, statement.as_string(conn), values, page_size=1000)
    return len(values)


def insert_returning_id(conn: Connection, table: str, row: Mapping[str, Any]) -> int:
    statement = sql.SQL("INSERT INTO {table} ({columns}) VALUES ({values}) RETURNING id").format(
        table=sql.Identifier(SCHEMA, table),
        columns=sql.SQL(", ").join(map(sql.Identifier, row)),
        values=sql.SQL(", ").join(sql.Placeholder() * len(row)),
    )
    values = [adapt(value) for value in row.values()]
    with conn, conn.cursor() as cur:
        cur.execute(statement, values)
        return int(cur.fetchone()[0])
