"""A scoring list written over several connections at once and published as one list, replacing the previous one
atomically: by `write_scores` (one process, its rows COPYed and its indexes built on two connections side by side)
and by the executors of a Spark scoring job (one COPY per partition).

The rows arrive over several connections, so the list's table must exist (committed) before they do:

1. `stage_list` (driver): takes the list's advisory lock for the whole write (a session lock on the key
   so two writers of one list queue behind each other), drops
   the list's stray tables a crashed writer left, and creates the new, unattached table.
2. `copy_staged_rows` (each executor, its own connection): validates its rows and COPYs them in.
3. `publish_staged_list` (driver): checks the row count, indexes, swaps the partition and records the list in ONE
   transaction; readers see the old complete list until that commit. (`write_scores` builds the indexes before,
   on the still unattached table, two at once, and its publish transaction only swaps and records.)

`abandon_staged_list` drops the table when anything fails before the publish; a writer killed outright leaves an
unattached table (never part of churnops.scores, so no reader sees it), which the next write of any list drops
(step 1). A duplicated row (e.g. a retried task whose first COPY had committed) fails at the primary key (the
publish of a Spark-written list, the index builds of `write_scores`), so a list never holds a customer twice.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd
import psycopg2
from psycopg2 import sql

from churnops.db.scores import (
    LIST_KINDS,
    ListRecord,
    build_list_index,
    copy_list_rows,
    create_list_table,
    in_score_order,
    list_key,
    new_partition_name,
    partition_prefix,
    publish_list_table,
    swap_in_list_table,
    timed_step,
    validated_score_frame,
)

if TYPE_CHECKING:
    from psycopg2.extensions import connection as Connection


# The index builds of `write_scores`, one group per connection, of about equal time: the score index sorts its rows
# in full (two COPYs at once interleave the ranked halves), the other two sort text keys.
_INDEX_GROUPS = (("score index",), ("primary key", "customer index"))


def write_scores(
    conn: Connection,
    scores: pd.DataFrame,
    *,
    dataset: str,
    run_id: str,
    logical_date: dt.date,
    list_kind: str = "regular",
    list_name: str = "",
) -> int:
    """Replace the scoring list of (dataset, logical_date, list_kind, list_name) with `scores`, atomically; return
    the rows written. A list replaces only the list of the same kind, date and name: a `backfill` (a past date
    re-scored) or an `adhoc` list (a new file, `churnops score --input`) never replaces the `regular` one, nor the
    other way round, and an `adhoc` list is named by its input (`list_name`), so two files never replace each other.

    The list is staged (`stage_list`: the list's lock, a new unattached table), its rows COPYed in two halves and
    its indexes built over `conn` and a second connection at once (the COPY and the index builds are most of the
    time, and each runs on one server process), then ONE transaction drops the list's old partition of
    churnops.scores, attaches the new one and records the list in churnops.score_runs. Readers see the old complete
    list until that commit and the new complete list after it. Any failure before it drops the new table and keeps
    the old list; a writer killed outright leaves an unattached table that the next write of the list drops.
    Re-running the same logical date therefore replaces its rows and never duplicates them.
    `scores` has the columns of SCORE_COLUMNS (see churnops.banding.build_score_frame); one model and one
    cutoff per list.
    """
    if list_kind not in LIST_KINDS:
        raise ValueError(f"list_kind must be one of {LIST_KINDS}, got {list_kind!r}")
    if list_name and list_kind != "adhoc":
        raise ValueError(f"only an adhoc list has a name: a {list_kind} list is one per date, got {list_name!r}")
    with timed_step(list_key(dataset, logical_date, list_kind, list_name), "validate"):
        frame, shared = validated_score_frame(scores)
        # Highest score first, split in two: each half arrives in the score index's order.
        frame = in_score_order(frame)
    record = ListRecord(dataset, logical_date, list_kind, list_name, run_id, **shared)
    halves = (frame.iloc[: len(frame) // 2], frame.iloc[len(frame) // 2 :])
    with timed_step(record.key, "stage"):
        staged = stage_list(conn, record)
    try:
        with closing(_second_connection(conn)) as helper, ThreadPoolExecutor(max_workers=1) as pool:
            with timed_step(record.key, "copy"):
                _side_by_side(pool, (conn, helper), lambda c, half: _copy_half(c, staged, half), halves)
            with timed_step(record.key, "indexes"):
                _side_by_side(pool, (conn, helper), lambda c, group: _build_indexes(c, staged, group), _INDEX_GROUPS)
        with conn, conn.cursor() as cur:
            swap_in_list_table(cur, staged.partition, record, len(frame))
    except BaseException:
        abandon_staged_list(conn, staged)
        raise
    _unlock(conn, record.key)
    return len(frame)


def _second_connection(conn: Connection) -> Connection:
    """A connection to the same database as the same role as `conn` (its password included, if it has one)."""
    params = conn.info.dsn_parameters | {"application_name": "churnops list writer"}
    if conn.info.password:
        params["password"] = conn.info.password
    return psycopg2.connect(**params)


def _side_by_side(pool: ThreadPoolExecutor, conns: tuple[Connection, Connection], work, parts) -> None:  # noqa: ANN001
    """Run `work(conn, part)` for two parts at once, one per connection; raise the first failure after both ended
    (so no statement is still running on the list's table when the caller drops it)."""
    helper_part = pool.submit(work, conns[1], parts[1])
    try:
        work(conns[0], parts[0])
    finally:
        helper_error = helper_part.exception()
    if helper_error is not None:
        raise helper_error


def _copy_half(conn: Connection, staged: StagedList, rows: pd.DataFrame) -> None:
    with conn, conn.cursor() as cur:
        copy_list_rows(cur, staged.partition, rows)


def _build_indexes(conn: Connection, staged: StagedList, indexes: tuple[str, ...]) -> None:
    with conn, conn.cursor() as cur:
        for index in indexes:
            build_list_index(cur, staged.partition, staged.record.key, index)


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
    """Drop the list tables a writer that died between staging and publishing left: unattached, unrecorded, and
    either this list's (safe under its lock) or of a list whose lock is free, i.e. whose writer is gone (a staged
    table names its list in its comment; the lock is taken for this transaction only, so it is never waited for)."""
    cur.execute(  # type: ignore[attr-defined]
        """
        SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'churnops' AND c.relkind = 'r' AND c.relname ~ '^scores_[0-9a-f]{12}_[0-9a-f]{8}$'
          AND NOT EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhrelid = c.oid)
          AND c.relname NOT IN (SELECT partition_name FROM churnops.score_runs WHERE partition_name IS NOT NULL)
          AND (c.relname LIKE %s OR pg_try_advisory_xact_lock(
                  hashtext('churnops.scores'), hashtext(obj_description(c.oid, 'pg_class'))))
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
