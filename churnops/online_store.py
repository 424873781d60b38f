"""The online feature table: the latest features of every customer, for `/predict` by `customer_id` alone.

The feature DAG publishes the rows of one cutoff (normally the snapshot's scoring cutoff) with
`publish_online_features`; the API reads one customer with `lookup` (or several with `lookup_many`). A publication
replaces the dataset's whole set in one transaction (record the set, DELETE the old rows, COPY the new ones), so
a reader sees either the previous complete set or the new one, and a crash mid-publication leaves the previous
set. Features are stored as jsonb (name -> number, string or null) so that adding a feature needs no schema
change: the served model's own schema validates the row when it is read.

Tables: churnops.online_feature_sets, churnops.online_features (migration 0002_online_features.sql).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd

from churnops import db
from churnops.features import CUTOFF, ENTITY_ID, LABEL, LABEL_AVAILABLE

if TYPE_CHECKING:
    from psycopg2.extensions import connection as Connection

    from churnops.config import Settings

# Snapshot columns that are not model inputs.
NON_FEATURE_COLUMNS = frozenset({ENTITY_ID, CUTOFF, LABEL, LABEL_AVAILABLE})


@dataclass(frozen=True)
class OnlineFeatures:
    """One customer's published features."""

    customer_id: str
    cutoff: dt.date
    features: dict[str, Any]
    published_at: dt.datetime


@dataclass(frozen=True)
class OnlineFeatureSet:
    """What is published for a dataset: the cutoff, the number of customers and the feature columns."""

    dataset: str
    cutoff: dt.date
    row_count: int
    feature_columns: list[str]
    snapshot_hash: str | None
    published_at: dt.datetime


def _rows_to_publish(
    frame: pd.DataFrame, cutoff: dt.date, feature_columns: Sequence[str] | None
) -> tuple[pd.DataFrame, list[str]]:
    """The rows of `cutoff` (all rows if the frame has no cutoff column) and the feature columns to store."""
    if ENTITY_ID not in frame.columns:
        raise ValueError(f"online features need a {ENTITY_ID!r} column; the frame has {list(frame.columns)[:10]}")
    rows = frame
    if CUTOFF in frame.columns:
        rows = frame[pd.to_datetime(frame[CUTOFF]) == pd.Timestamp(cutoff)]
        if rows.empty:
            available = sorted(pd.to_datetime(frame[CUTOFF]).dt.date.unique())
            raise ValueError(f"no rows at cutoff {cutoff} to publish; the frame has cutoffs {available}")
    if rows.empty:
        # An empty set would silently replace a good one: almost certainly an upstream bug.
        raise ValueError("refusing to publish an empty set of online features")
    columns = (
        list(feature_columns)
        if feature_columns is not None
        else [column for column in frame.columns if column not in NON_FEATURE_COLUMNS]
    )
    missing = [column for column in columns if column not in rows.columns]
    if missing:
        raise ValueError(f"feature columns {missing} are not in the frame")
    if not columns:
        raise ValueError("no feature columns to publish")
    ids = rows[ENTITY_ID].astype(str)
    if rows[ENTITY_ID].isna().any():
        raise ValueError(f"{int(rows[ENTITY_ID].isna().sum())} rows have no {ENTITY_ID}")
    if ids.duplicated().any():
        raise ValueError(
            f"{ENTITY_ID} must be unique at one cutoff; duplicated e.g. {ids[ids.duplicated()].head(5).tolist()}"
        )
    return rows, columns


def _copy_payload(rows: pd.DataFrame, columns: list[str], dataset: str, cutoff: dt.date) -> io.StringIO:
    """CSV text for COPY: dataset, customer_id, cutoff, features as one JSON object per row (NaN -> null)."""
    # pandas writes NaN as null and numpy scalars as plain numbers; 15 significant digits round-trip the
    # feature job's values (rounded to a few decimals), so a looked-up row scores like the row itself.
    json_lines = rows[columns].to_json(orient="records", lines=True, double_precision=15).splitlines()
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    cutoff_text = cutoff.isoformat()
    for customer_id, features in zip(rows[ENTITY_ID].astype(str), json_lines, strict=True):
        writer.writerow((dataset, customer_id, cutoff_text, features))
    buffer.seek(0)
    return buffer


def write_online_features(
    conn: Connection,
    frame: pd.DataFrame,
    *,
    dataset: str,
    cutoff: dt.date,
    feature_columns: Sequence[str] | None = None,
    snapshot_hash: str | None = None,
) -> int:
    """Replace the online features of `dataset` with the rows of `frame` at `cutoff`, atomically.

    `frame` is a feature snapshot (or any frame with `customer_id` and the feature columns); the feature
    columns default to every column except customer_id, cutoff and the label columns. Returns the rows written.
    """
    rows, columns = _rows_to_publish(frame, cutoff, feature_columns)
    payload = _copy_payload(rows, columns, dataset, cutoff)
    with conn, conn.cursor() as cur:
        # The set's row lock also serialises two publishers of the same dataset.
        cur.execute(
            """
            INSERT INTO churnops.online_feature_sets
                (dataset, cutoff, row_count, feature_columns, snapshot_hash, published_at)
            VALUES (%s, %s, %s, %s, %s, now())
            ON CONFLICT (dataset) DO UPDATE SET
                cutoff = EXCLUDED.cutoff, row_count = EXCLUDED.row_count,
                feature_columns = EXCLUDED.feature_columns, snapshot_hash = EXCLUDED.snapshot_hash,
                published_at = EXCLUDED.published_at
            """,
            (dataset, cutoff, len(rows), json.dumps(columns), snapshot_hash),
        )
        cur.execute("DELETE FROM churnops.online_features WHERE dataset = %s", (dataset,))
        cur.copy_expert(
            "COPY churnops.online_features (dataset, customer_id, cutoff, features) FROM STDIN WITH (FORMAT csv)",
            payload,
            size=1 << 20,
        )
        written = cur.rowcount
    return written


def publish_online_features(
    settings: Settings,
    frame: pd.DataFrame,
    dataset: str,
    cutoff: dt.date,
    *,
    feature_columns: Sequence[str] | None = None,
    snapshot_hash: str | None = None,
) -> int:
    """Publish the latest features per customer to the platform database (`Settings.database_url`).

    Called by the feature DAG after a snapshot is written, with the snapshot frame and its scoring cutoff.
    The database schema must be migrated (`churnops.db.migrate`). Returns the rows written.
    """
    with closing(db.connect(settings, application_name="churnops-online-features")) as conn:
        return write_online_features(
            conn, frame, dataset=dataset, cutoff=cutoff, feature_columns=feature_columns, snapshot_hash=snapshot_hash
        )


def publish_latest_snapshot(settings: Settings, dataset: str) -> int:
    """Publish the scoring-cutoff rows of the dataset's latest feature snapshot (the feature DAG's last step)."""
    from churnops.snapshots import latest_snapshot_dir, load_snapshot, read_metadata

    snapshot_dir = latest_snapshot_dir(settings, dataset)
    scoring = [dt.date.fromisoformat(day) for day in read_metadata(snapshot_dir).cutoffs["scoring"]]
    frame, metadata = load_snapshot(snapshot_dir, cutoffs=scoring)  # only the scoring cutoff is published
    with closing(db.connect(settings, application_name="churnops-online-features")) as conn:
        db.migrate(conn)
    return publish_online_features(
        settings,
        frame,
        dataset,
        dt.date.fromisoformat(metadata.cutoffs["scoring"][0]),
        feature_columns=metadata.feature_columns,
        snapshot_hash=metadata.content_hash,
    )


def lookup(conn: Connection, dataset: str, customer_id: str) -> OnlineFeatures | None:
    """The published features of one customer, or None if the customer is not in the dataset's set."""
    return lookup_many(conn, dataset, [customer_id]).get(customer_id)


def lookup_many(conn: Connection, dataset: str, customer_ids: Sequence[str]) -> dict[str, OnlineFeatures]:
    """The published features of several customers (one query), keyed by customer_id; absent ones left out."""
    if not customer_ids:
        return {}
    with conn, conn.cursor() as cur:
        cur.execute(
            """
            SELECT customer_id, cutoff, features, published_at
            FROM churnops.online_features
            WHERE dataset = %s AND customer_id = ANY(%s)
            """,
            (dataset, list(customer_ids)),
        )
        return {row[0]: OnlineFeatures(*row) for row in cur.fetchall()}


def published_set(conn: Connection, dataset: str) -> OnlineFeatureSet | None:
    """What is currently published for `dataset`, or None if nothing ever was."""
    with conn, conn.cursor() as cur:
        cur.execute(
            """
            SELECT dataset, cutoff, row_count, feature_columns, snapshot_hash, published_at
            FROM churnops.online_feature_sets WHERE dataset = %s
            """,
            (dataset,),
        )
        row = cur.fetchone()
    return None if row is None else OnlineFeatureSet(*row)
