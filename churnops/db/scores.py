"""Scoring lists: one complete list per (dataset, date, kind), replaced atomically, read back fast."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import logging
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from psycopg2 import sql

from churnops.banding import SCORE_COLUMNS
from churnops.db.binary_copy import BinaryCopyStream
from churnops.db.list_columns import (
    OPTIONAL_LIST_COLUMNS,
    parsed_optional_columns,
    validated_optional_columns,
)

if TYPE_CHECKING:
    from psycopg2.extensions import connection as Connection


# Rows serialised per COPY chunk: bounds the memory of a 1M-row write to one chunk (tens of MB).
_COPY_CHUNK_ROWS = 200_000
# The columns a list's rows differ in; the others hold one value per list (see `write_scores`).
_ROW_COLUMNS = ("customer_id", "score", "decision", "risk_decile", "risk_band")
# Sort memory for the bulk index builds of one list (about 100 MB per index at 1M rows), set for that transaction.
_INDEX_BUILD_MEMORY = "256MB"
# The indexes the parent's partitioned indexes expect (migration 0008), by name.
LIST_INDEXES = {
    "primary key": "ALTER TABLE churnops.{table} ADD CONSTRAINT {pkey} PRIMARY KEY (list_key, customer_id)",
    "score index": "CREATE INDEX ON churnops.{table} (dataset, logical_date, list_kind, score DESC)",
    "customer index": "CREATE INDEX ON churnops.{table} (customer_id, dataset, logical_date DESC)",
}

_log = logging.getLogger(__name__)


@contextmanager
def timed_step(key: str, step: str) -> Iterator[None]:
    """Log (DEBUG) how long one step of a list write took, with `list_step` and `seconds` on the record: what
    benchmarks/list_write.py collects, and what an operator turns on to see where a slow write spends its time."""
    started = time.perf_counter()
    yield
    seconds = time.perf_counter() - started
    _log.debug("list %s: %s took %.3f s", key, step, seconds, extra={"list_step": step, "seconds": seconds})


# Score lists
# ----------------------------------------------------------------------------------------------------


def _single_value(frame: pd.DataFrame, column: str) -> Any:
    values = frame[column].unique()
    if len(values) != 1:
        raise ValueError(f"score frame: one list has one {column}, found {len(values)}: {list(values[:5])}")
    if pd.isna(values[0]):
        raise ValueError(f"score frame: column {column} has missing values")
    return values[0]


def validated_score_frame(scores: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Check a score frame before it reaches the database, naming the column that is wrong; return the columns that
    differ from row to row (normalised) and the values the whole list shares (model name and version, cutoff)."""
    missing = [column for column in SCORE_COLUMNS if column not in scores.columns]
    if missing:
        raise ValueError(f"score frame lacks columns {missing}; expected {list(SCORE_COLUMNS)}")
    if scores.empty:
        # An empty list would silently replace a good one: almost certainly an upstream bug.
        raise ValueError("score frame is empty: refusing to replace a scoring list with no customers")
    shared = {column: str(_single_value(scores, column)) for column in ("model_name", "model_version")}
    cutoff = pd.Timestamp(_single_value(scores, "cutoff"))
    if cutoff != cutoff.normalize():
        raise ValueError("score frame: cutoff must be a date (no missing values, no time of day)")
    shared["cutoff"] = cutoff.date()
    rows = {}
    for column in ("customer_id", "risk_band"):
        if scores[column].isna().any():
            raise ValueError(f"score frame: column {column} has missing values")
        rows[column] = scores[column].astype(str)
    if rows["customer_id"].duplicated().any():
        duplicated = rows["customer_id"][rows["customer_id"].duplicated()].head(5).tolist()
        raise ValueError(f"score frame: customer_id must be unique in one list, duplicated e.g. {duplicated}")
    score = scores["score"].to_numpy(dtype=np.float64)
    if not np.isfinite(score).all() or (score < 0).any() or (score > 1).any():
        raise ValueError("score frame: score must be a finite probability in [0, 1]")
    rows["score"] = score
    if scores["decision"].dtype != bool:
        raise ValueError(f"score frame: decision must be boolean, got dtype {scores['decision'].dtype}")
    rows["decision"] = scores["decision"]
    decile = scores["risk_decile"]
    if not pd.api.types.is_integer_dtype(decile) or not decile.between(1, 10).all():
        raise ValueError("score frame: risk_decile must be an integer from 1 (highest risk) to 10")
    rows["risk_decile"] = decile
    rows |= validated_optional_columns(scores)
    return pd.DataFrame({column: np.asarray(values) for column, values in rows.items()}), shared


LIST_KINDS = ("regular", "backfill", "adhoc")


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

    In ONE transaction: COPY the rows into a new table, index it in bulk, drop the list's old partition of
    churnops.scores, attach the new one and record the list in churnops.score_runs. Readers see the old complete
    list until the commit and the new complete list after it; a crash or a kill anywhere before the commit
    leaves the old list (and no stray table: its creation rolls back too). Re-running the same logical date
    therefore replaces its rows and never duplicates them.
    `scores` has the columns of SCORE_COLUMNS (see churnops.banding.build_score_frame); one model and one
    cutoff per list.
    """
    if list_kind not in LIST_KINDS:
        raise ValueError(f"list_kind must be one of {LIST_KINDS}, got {list_kind!r}")
    if list_name and list_kind != "adhoc":
        raise ValueError(f"only an adhoc list has a name: a {list_kind} list is one per date, got {list_name!r}")
    key = list_key(dataset, logical_date, list_kind, list_name)
    with timed_step(key, "validate"):
        frame, shared = validated_score_frame(scores)
    partition = new_partition_name(key)
    record = ListRecord(dataset, logical_date, list_kind, list_name, run_id, **shared)
    with conn, conn.cursor() as cur:
        # Writers of the same list queue here; writers of other lists meet only at the partition swap.
        cur.execute("SELECT pg_advisory_xact_lock(hashtext('churnops.scores'), hashtext(%s))", (key,))
        with timed_step(key, "create"):
            create_list_table(cur, partition, record)
        # FREEZE: the table was created in this transaction, so its rows are written frozen, and the first readers
        # do not rewrite every page to set hint bits.
        with timed_step(key, "copy"):
            written = copy_list_rows(cur, partition, frame, freeze=True)
        publish_list_table(cur, partition, record, len(frame))
    return written


def list_key(dataset: str, logical_date: dt.date, list_kind: str, list_name: str = "") -> str:
    """The partition key of one list in churnops.scores (migration 0008; a named `adhoc` list, 0011)."""
    key = f"{dataset}/{logical_date.isoformat()}/{list_kind}"
    return f"{key}/{list_name}" if list_name else key


@dataclass(frozen=True)
class ListRecord:
    """What identifies a list and what its rows share (the columns a list table holds as defaults)."""

    dataset: str
    logical_date: dt.date
    list_kind: str
    list_name: str
    run_id: str
    model_name: str
    model_version: str
    cutoff: dt.date

    @property
    def key(self) -> str:
        return list_key(self.dataset, self.logical_date, self.list_kind, self.list_name)


def new_partition_name(key: str) -> str:
    """A fresh table name for a list's rows: the list's key digest (to find a list's stray tables), then a random
    part (so the new table never collides with the attached one)."""
    return f"{partition_prefix(key)}{uuid.uuid4().hex[:8]}"


def partition_prefix(key: str) -> str:
    return f"scores_{hashlib.md5(key.encode()).hexdigest()[:12]}_"


def create_list_table(cur: Any, partition: str, record: ListRecord) -> None:
    """A table of its own for a list's new rows, without indexes, so the COPY only appends; the columns that hold
    one value for the whole list are its defaults (the COPY streams only what differs from row to row: a third of
    the bytes to render, send and parse). The CHECK that proves the partition bound (ATTACH then skips its scan)
    is checked row by row as they arrive."""
    constants = {
        "dataset": record.dataset,
        "logical_date": record.logical_date,
        "list_kind": record.list_kind,
        "run_id": record.run_id,
        "cutoff": record.cutoff,
        "model_name": record.model_name,
        "model_version": record.model_version,
        "list_key": record.key,
    }
    cur.execute(
        sql.SQL("CREATE TABLE churnops.{} (LIKE churnops.scores INCLUDING DEFAULTS INCLUDING CONSTRAINTS)").format(
            sql.Identifier(partition)
        )
    )
    cur.execute(
        sql.SQL(
            "ALTER TABLE churnops.{table} ADD CONSTRAINT {check} CHECK (list_key IS NOT NULL AND list_key = {key}), "
            "{defaults}"
        ).format(
            table=sql.Identifier(partition),
            check=sql.Identifier(f"{partition}_list"),
            key=sql.Literal(record.key),
            defaults=sql.SQL(", ").join(
                sql.SQL("ALTER COLUMN {} SET DEFAULT {}").format(sql.Identifier(column), sql.Literal(value))
                for column, value in constants.items()
            ),
        )
    )


def copy_list_rows(cur: Any, partition: str, rows: pd.DataFrame, *, freeze: bool = False) -> int:
    """COPY validated row columns (`validated_score_frame`) into a list table; return the rows written. FREEZE only
    in the transaction that created the table."""
    copy_sql = sql.SQL("COPY churnops.{} ({}) FROM STDIN WITH (FORMAT binary{})").format(
        sql.Identifier(partition),
        # The row columns, and the value columns (migration 0012) when the list has them.
        sql.SQL(", ").join(map(sql.Identifier, rows.columns)),
        sql.SQL(", FREEZE") if freeze else sql.SQL(""),
    )
    cur.copy_expert(
        copy_sql.as_string(cur.connection), BinaryCopyStream(_in_score_order(rows), _COPY_CHUNK_ROWS), size=1 << 20
    )
    return int(cur.rowcount)


def publish_list_table(cur: Any, partition: str, record: ListRecord, row_count: int) -> None:
    """Index a filled list table in bulk, then swap it in for the list's previous partition and record the list,
    inside the caller's transaction (the caller holds the list's advisory lock)."""
    for index in LIST_INDEXES:
        _build_list_index(cur, partition, record.key, index)
    _swap_in_list_table(cur, partition, record, row_count)


def _build_list_index(cur: Any, partition: str, key: str, index: str) -> None:
    """Build one of LIST_INDEXES on a list table in bulk, in the caller's transaction: the index the parent's
    partitioned index expects, so ATTACH adopts it instead of building it under the parent's lock."""
    # One in-memory sort instead of an external merge of runs spilled to disk.
    cur.execute("SET LOCAL maintenance_work_mem = %s", (_INDEX_BUILD_MEMORY,))
    with timed_step(key, index):
        cur.execute(
            sql.SQL(LIST_INDEXES[index]).format(
                table=sql.Identifier(partition), pkey=sql.Identifier(f"{partition}_pkey")
            )
        )


def _swap_in_list_table(cur: Any, partition: str, record: ListRecord, row_count: int) -> None:
    """Drop the list's previous partition, attach its indexed table and record the list, inside the caller's
    transaction (the caller holds the list's advisory lock): the only moment the parent is locked, briefly."""
    cur.execute(
        "SELECT partition_name FROM churnops.score_runs "
        "WHERE dataset = %s AND logical_date = %s AND list_kind = %s AND list_name = %s",
        (record.dataset, record.logical_date, record.list_kind, record.list_name),
    )
    previous = cur.fetchone()
    with timed_step(record.key, "swap"):
        if previous is not None and previous[0]:
            cur.execute(sql.SQL("DROP TABLE IF EXISTS churnops.{}").format(sql.Identifier(previous[0])))
        # The table's CHECK on list_key proves the bound, so ATTACH does not scan the rows.
        cur.execute(
            sql.SQL("ALTER TABLE churnops.scores ATTACH PARTITION churnops.{} FOR VALUES IN ({})").format(
                sql.Identifier(partition), sql.Literal(record.key)
            )
        )
    cur.execute(
        """
        INSERT INTO churnops.score_runs (dataset, logical_date, list_kind, list_name, run_id, model_name,
                                         model_version, cutoff, row_count, partition_name)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
        ON CONFLICT (dataset, logical_date, list_kind, list_name) DO UPDATE SET
            run_id = EXCLUDED.run_id, model_name = EXCLUDED.model_name,
            model_version = EXCLUDED.model_version, cutoff = EXCLUDED.cutoff,
            row_count = EXCLUDED.row_count, partition_name = EXCLUDED.partition_name, written_at = now()
        """,
        (
            record.dataset,
            record.logical_date,
            record.list_kind,
            record.list_name,
            record.run_id,
            record.model_name,
            record.model_version,
            record.cutoff,
            row_count,
            partition,
        ),
    )


def _in_score_order(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows highest score first, the order of the list's score index: PostgreSQL's sort finds its input already
    in order and the build reads it in one pass (about 5x faster than sorting 1M rows)."""
    score = rows["score"].to_numpy()
    if (score[:-1] >= score[1:]).all():  # batch scoring hands the list over ranked already
        return rows
    return rows.iloc[np.argsort(-score, kind="stable")]


_SCORE_READ_COLUMNS = (
    "dataset",
    "logical_date",
    "run_id",
    *SCORE_COLUMNS,
    "scored_at",
    *OPTIONAL_LIST_COLUMNS,  # each group only when the list has it (churnops.db.list_columns)
)


def latest_scores(conn: Connection, dataset: str, *, limit: int | None = None) -> pd.DataFrame:
    """The newest complete regular scoring list of `dataset`, highest score first (ties by customer_id).

    `limit` keeps the top rows only (a top-K list reads K rows through the score index). An empty frame with
    the same columns means the dataset was never scored.
    """
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive number of rows, got {limit}")
    query = sql.SQL(
        """
        SELECT s.dataset, s.logical_date, s.run_id, s.customer_id, s.cutoff, s.score,
               s.decision::int AS decision, s.risk_decile, s.risk_band, s.model_name, s.model_version,
               s.scored_at, {optional}
        FROM churnops.scores s
        WHERE s.dataset = {dataset} AND s.list_kind = 'regular'
          AND s.logical_date = (
              SELECT max(logical_date) FROM churnops.score_runs WHERE dataset = {dataset} AND list_kind = 'regular'
          )
        ORDER BY s.score DESC, s.customer_id
        {limit}
        """
    ).format(
        dataset=sql.Literal(dataset),
        limit=sql.SQL("LIMIT {}").format(sql.Literal(limit)) if limit is not None else sql.SQL(""),
        optional=sql.SQL(", ").join(sql.SQL("s.{}").format(sql.Identifier(c)) for c in OPTIONAL_LIST_COLUMNS),
    )
    # COPY ... TO STDOUT streams CSV (far faster than fetching a million tuples); it takes no bind parameters,
    # so values are quoted client-side by psycopg2's sql.Literal instead.
    buffer = io.StringIO()
    with conn, conn.cursor() as cur:
        cur.copy_expert(sql.SQL("COPY ({}) TO STDOUT WITH (FORMAT csv, HEADER)").format(query).as_string(conn), buffer)
    buffer.seek(0)
    frame = pd.read_csv(
        buffer,
        dtype={
            "dataset": str,
            "run_id": str,
            "customer_id": str,
            "risk_band": str,
            "model_name": str,
            "model_version": str,
            "score": np.float64,
            "decision": np.int8,
            "risk_decile": np.int8,
            **dict.fromkeys(OPTIONAL_LIST_COLUMNS, str),
        },
        keep_default_na=False,
        # The shortest round-trip form PostgreSQL prints reads back bit-identical only with this parser.
        float_precision="round_trip",
    )
    frame["decision"] = frame["decision"].astype(bool)
    for column in ("logical_date", "cutoff"):
        frame[column] = pd.to_datetime(frame[column], format="%Y-%m-%d").dt.date
    frame["scored_at"] = pd.to_datetime(frame["scored_at"], utc=True, format="ISO8601")
    frame = parsed_optional_columns(frame)
    return frame.loc[:, [c for c in _SCORE_READ_COLUMNS if c in frame.columns]]
