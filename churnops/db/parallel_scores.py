"""A scoring list written by many writers at once (the executors of a Spark scoring job, one COPY per partition) and
published as one list, replacing the previous one atomically.

`write_scores` does everything in one transaction on one connection. Here the rows arrive over several
connections, so the list's table must exist (committed) before they do:

1. `stage_list` (driver): takes the list's advisory lock for the whole write (a session lock on the key
   `write_scores` locks per transaction, so the two kinds of writers of one list queue behind each other), drops
   the list's stray tables a crashed writer left, and creates the new, unattached table.
2. `copy_staged_rows` (each executor, its own connection): validates its rows and COPYs them in.
3. `publish_staged_list` (driver): checks the row count, indexes, swaps the partition and records the list in ONE
   transaction, as `write_scores` does; readers see the old complete list until that commit.

`abandon_staged_list` drops the table when anything fails before the publish; a writer killed outright leaves an
unattached table, which the next write of the same list drops (step 1). A duplicated row (e.g. a retried task
whose first COPY had committed) fails the publish at the primary key, so a list never holds a customer twice.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd
from psycopg2 import sql

from churnops.db.scores import (
    LIST_KINDS,
    ListRecord,
    copy_list_rows,
    create_list_table,
    new_partition_name,
    partition_prefix,
    publish_list_table,
    validated_score_frame,
)

if TYPE_CHECKING:
    from psycopg2.extensions import connection as Connection


@dataclass(frozen=True)
class StagedList:
    """A list's unattached table, waiting for its rows (picklable: it travels to the executors)."""

    record: ListRecord
    partition: str


def _lock_sql(function: str) -> str:
    return f"SELECT {function}(hashtext('churnops.scores'), hashtext(%s))"


def stage_list(conn: Connection, record: ListRecord) -> StagedList:
    """Lock the list (held by `conn` until publish or abandon) and create its new table, committed and empty."""
    if record.list_kind not in LIST_KINDS:
        raise ValueError(f"list_kind must be one of {LIST_KINDS}, got {record.list_kind!r}")
    with conn.cursor() as cur:
        cur.execute(_lock_sql("pg_advisory_lock"), (record.key,))
    conn.commit()
    try:
        partition = new_partition_name(record.key)
        with conn, conn.cursor() as cur:
            _drop_stray_tables(cur, record.key)
            create_list_table(cur, partition, record)
    except BaseException:
        _unlock(conn, record.key)
        raise
    return StagedList(record=record, partition=partition)


def _drop_stray_tables(cur: object, key: str) -> None:
    """Tables of this list (by their name's key digest) that are neither attached nor recorded: left by a writer
    that died between staging and publishing. Safe under the list's lock: no other writer of it is running."""
    cur.execute(  # type: ignore[attr-defined]
        """
        SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'churnops' AND c.relkind = 'r' AND c.relname LIKE %s
          AND NOT EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhrelid = c.oid)
          AND c.relname NOT IN (SELECT partition_name FROM churnops.score_runs WHERE partition_name IS NOT NULL)
        """,
        (partition_prefix(key).replace("_", r"\_") + "%",),
    )
    for (name,) in cur.fetchall():  # type: ignore[attr-defined]
        cur.execute(sql.SQL("DROP TABLE churnops.{}").format(sql.Identifier(name)))  # type: ignore[attr-defined]


def copy_staged_rows(conn: Connection, staged: StagedList, scores: pd.DataFrame) -> int:
    """COPY some rows of a staged list (a frame of SCORE_COLUMNS for the list's model and cutoff) in one transaction;
    return the rows written. An empty part writes nothing."""
    if scores.empty:
        return 0
    rows, shared = validated_score_frame(scores)
    record = staged.record
    expected = {"model_name": record.model_name, "model_version": record.model_version, "cutoff": record.cutoff}
    for column, value in expected.items():
        if shared[column] != value:
            raise ValueError(f"score frame: column {column} is {shared[column]!r}, the staged list's is {value!r}")
    with conn, conn.cursor() as cur:
        return copy_list_rows(cur, staged.partition, rows)


def publish_staged_list(conn: Connection, staged: StagedList, expected_rows: int) -> int:
    """Make the staged table the list (one transaction), then release the list's lock; return the rows published.

    Refuses (and drops the staged table) when it does not hold `expected_rows` rows, or holds none."""
    try:
        with conn, conn.cursor() as cur:
            cur.execute(sql.SQL("SELECT count(*) FROM churnops.{}").format(sql.Identifier(staged.partition)))
            (rows,) = cur.fetchone()
            if rows == 0:
                raise ValueError("score frame is empty: refusing to replace a scoring list with no customers")
            if rows != expected_rows:
                raise ValueError(
                    f"list {staged.record.key}: the executors wrote {rows} rows, the list has {expected_rows}; "
                    "the previous list is kept"
                )
            publish_list_table(cur, staged.partition, staged.record, rows)
    except BaseException:
        abandon_staged_list(conn, staged)
        raise
    _unlock(conn, staged.record.key)
    return int(rows)


def abandon_staged_list(conn: Connection, staged: StagedList) -> None:
    """Drop a staged table that will not be published and release the list's lock; the previous list stays."""
    with contextlib.suppress(Exception), conn, conn.cursor() as cur:
        cur.execute(sql.SQL("DROP TABLE IF EXISTS churnops.{}").format(sql.Identifier(staged.partition)))
    _unlock(conn, staged.record.key)


def _unlock(conn: Connection, key: str) -> None:
    with contextlib.suppress(Exception):
        if conn.closed:
            return
        conn.rollback()
        with conn.cursor() as cur:
            cur.execute(_lock_sql("pg_advisory_unlock"), (key,))
        conn.commit()


def list_record(
    *,
    dataset: str,
    logical_date: dt.date,
    list_kind: str,
    run_id: str,
    model_name: str,
    model_version: str,
    cutoff: dt.date,
) -> ListRecord:
    """The record of a regular or backfill list (a Spark-scored list is never an `adhoc` one)."""
    return ListRecord(dataset, logical_date, list_kind, "", run_id, model_name, str(model_version), cutoff)
