"""The platform's PostgreSQL store: connection, versioned migrations, idempotent score lists, metric writers.

Everything lives in the `churnops` schema (docs/database.md). The schema is the versioned SQL in
`churnops/migrations/` (`NNNN_name.sql`), applied by `migrate` here and by
`postgres-init/10-churnops-databases.sh` in the docker-compose deployment with the same protocol, so either
runner finds the other's work already done.

Every writer runs in its own transaction (`with conn:` commits on success, rolls back on error) and uses
parameterized SQL only; bulk rows go through COPY or `execute_values`, never one INSERT per row.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import psycopg2
import psycopg2.extras
from psycopg2 import sql

from churnops.banding import SCORE_COLUMNS

if TYPE_CHECKING:
    from psycopg2.extensions import connection as Connection

    from churnops.config import Settings

SCHEMA = "churnops"
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
BOOTSTRAP_FILE = "bootstrap.sql"
_MIGRATION_FILE = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql$")
# One key for every migration runner (the shell script uses the same expression), so two never interleave.
_MIGRATION_LOCK_SQL = "SELECT pg_advisory_xact_lock(hashtext('churnops.schema_migrations'))"

# Rows serialised per COPY chunk: bounds the memory of a 1M-row write to one chunk of CSV text.
_COPY_CHUNK_ROWS = 200_000


class MigrationError(RuntimeError):
    """The database's schema history does not match the migration files (e.g. an applied file was edited)."""


# ----------------------------------------------------------------------------------------------------
# Connection and migrations
# ----------------------------------------------------------------------------------------------------


CONNECT_TIMEOUT_SECONDS = 10


def connect(settings: Settings, *, application_name: str = "churnops") -> Connection:
    """Open a connection to the platform database named by `Settings.database_url`.

    Accepts SQLAlchemy-style URLs too (`postgresql+psycopg2://...`): one secret serves both kinds of client.
    """
    if settings.database_url is None:
        raise RuntimeError(
            "no platform database configured: set CHURNOPS_DATABASE_URL (or the secret file churnops_database_url), "
            "e.g. postgresql://churnops:<password>@127.0.0.1:5432/churnops"
        )
    url = settings.database_url.get_secret_value()
    url = re.sub(r"^postgres(ql)?\+\w+://", "postgresql://", url)
    # A server that accepts the connection and then says nothing must not hang a task until Airflow's execution
    # timeout: give up on connecting after CONNECT_TIMEOUT_SECONDS, and notice a dead peer through keepalives.
    return psycopg2.connect(
        url,
        application_name=application_name,
        connect_timeout=CONNECT_TIMEOUT_SECONDS,
        keepalives=1,
        keepalives_idle=30,
        keepalives_interval=10,
        keepalives_count=3,
    )


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    path: Path

    @property
    def sql(self) -> str:
        return self.path.read_text(encoding="utf-8")

    @property
    def checksum(self) -> str:
        # Of the bytes on disk, as `sha256sum` computes it in the init script.
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


def discover_migrations(migrations_dir: Path = MIGRATIONS_DIR) -> list[Migration]:
    """The versioned migrations in `migrations_dir`, oldest first."""
    migrations = []
    for path in sorted(migrations_dir.glob("[0-9][0-9][0-9][0-9]_*.sql")):
        match = _MIGRATION_FILE.match(path.name)
        if match is None:
            raise MigrationError(f"{path}: migration files are named NNNN_lowercase_name.sql")
        migrations.append(Migration(match["version"], match["name"], path))
    versions = [m.version for m in migrations]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"{migrations_dir}: two migration files share a version number: {versions}")
    return migrations


def migrate(conn: Connection, migrations_dir: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply every pending migration in one transaction; return the versions applied (empty if up to date).

    Idempotent and safe to run concurrently (an advisory lock serialises runners). Refuses to run if a
    migration already applied has a different checksum than its file today: released migrations are never
    edited.
    """
    migrations = discover_migrations(migrations_dir)
    applied_now: list[str] = []
    with conn, conn.cursor() as cur:
        cur.execute(_MIGRATION_LOCK_SQL)
        cur.execute("SET LOCAL client_min_messages = warning")
        cur.execute((migrations_dir / BOOTSTRAP_FILE).read_text(encoding="utf-8"))
        cur.execute("SELECT version, checksum FROM churnops.schema_migrations")
        recorded = dict(cur.fetchall())
        for migration in migrations:
            if migration.version in recorded:
                if recorded[migration.version] != migration.checksum:
                    raise MigrationError(
                        f"migration {migration.version} ({migration.path.name}) was applied with checksum "
                        f"{recorded[migration.version][:12]}... but the file now hashes to "
                        f"{migration.checksum[:12]}...: never edit an applied migration, add a new one"
                    )
                continue
            cur.execute(migration.sql)
            cur.execute(
                "INSERT INTO churnops.schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                (migration.version, migration.name, migration.checksum),
            )
            applied_now.append(migration.version)
    return applied_now


def applied_migrations(conn: Connection) -> list[str]:
    """Versions recorded in churnops.schema_migrations (empty if the schema was never created)."""
    with conn, conn.cursor() as cur:
        cur.execute("SELECT to_regclass('churnops.schema_migrations') IS NOT NULL")
        if not cur.fetchone()[0]:
            return []
        cur.execute("SELECT version FROM churnops.schema_migrations ORDER BY version")
        return [row[0] for row in cur.fetchall()]


# ----------------------------------------------------------------------------------------------------
# Score lists
# ----------------------------------------------------------------------------------------------------


def _single_value(frame: pd.DataFrame, column: str) -> str:
    values = frame[column].unique()
    if len(values) != 1:
        raise ValueError(f"score frame: one list has one {column}, found {len(values)}: {list(values[:5])}")
    return str(values[0])


def _validated_score_frame(scores: pd.DataFrame) -> pd.DataFrame:
    """Check and normalise a score frame before it reaches the database, naming the column that is wrong."""
    missing = [column for column in SCORE_COLUMNS if column not in scores.columns]
    if missing:
        raise ValueError(f"score frame lacks columns {missing}; expected {list(SCORE_COLUMNS)}")
    if scores.empty:
        # An empty list would silently replace a good one: almost certainly an upstream bug.
        raise ValueError("score frame is empty: refusing to replace a scoring list with no customers")
    frame = scores.loc[:, list(SCORE_COLUMNS)].copy()
    for column in ("customer_id", "risk_band", "model_name", "model_version"):
        if frame[column].isna().any():
            raise ValueError(f"score frame: column {column} has missing values")
        frame[column] = frame[column].astype(str)
    if frame["customer_id"].duplicated().any():
        duplicated = frame.loc[frame["customer_id"].duplicated(), "customer_id"].head(5).tolist()
        raise ValueError(f"score frame: customer_id must be unique in one list, duplicated e.g. {duplicated}")
    cutoff = pd.to_datetime(frame["cutoff"])
    if cutoff.isna().any() or (cutoff != cutoff.dt.normalize()).any():
        raise ValueError("score frame: cutoff must be a date (no missing values, no time of day)")
    frame["cutoff"] = cutoff
    score = frame["score"].to_numpy(dtype=np.float64)
    if not np.isfinite(score).all() or (score < 0).any() or (score > 1).any():
        raise ValueError("score frame: score must be a finite probability in [0, 1]")
    frame["score"] = score
    if frame["decision"].dtype != bool:
        raise ValueError(f"score frame: decision must be boolean, got dtype {frame['decision'].dtype}")
    decile = frame["risk_decile"]
    if not pd.api.types.is_integer_dtype(decile) or not decile.between(1, 10).all():
        raise ValueError("score frame: risk_decile must be an integer from 1 (highest risk) to 10")
    return frame


class _CsvStream(io.RawIOBase):
    """A read-only file over a DataFrame rendered as CSV chunk by chunk, for `copy_expert` to pull from."""

    def __init__(self, frame: pd.DataFrame, chunk_rows: int = _COPY_CHUNK_ROWS) -> None:
        self._chunks = self._render(frame, chunk_rows)
        self._buffer = b""

    @staticmethod
    def _render(frame: pd.DataFrame, chunk_rows: int) -> Iterator[bytes]:
        for start in range(0, len(frame), chunk_rows):
            chunk = frame.iloc[start : start + chunk_rows]
            # Python floats print as their shortest round-trip repr, so scores arrive bit-identical.
            yield chunk.to_csv(index=False, header=False, date_format="%Y-%m-%d").encode("utf-8")

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        while (size < 0 or len(self._buffer) < size) and (chunk := next(self._chunks, None)) is not None:
            self._buffer += chunk
        if size < 0:
            size = len(self._buffer)
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data


LIST_KINDS = ("regular", "backfill")


def write_scores(
    conn: Connection,
    scores: pd.DataFrame,
    *,
    dataset: str,
    run_id: str,
    logical_date: dt.date,
    list_kind: str = "regular",
) -> int:
    """Replace the scoring list of (dataset, logical_date, list_kind) with `scores`, atomically; return the rows
    written. A `backfill` list never replaces the `regular` list of the same date, nor the other way round.

    In ONE transaction: record the list in churnops.score_runs (its row lock also serialises two writers of
    the same list), delete the list's old rows, COPY the new ones in. Readers see the old complete list until
    the commit and the new complete list after it; a crash or a kill anywhere before the commit leaves the old
    list. Re-running the same logical date therefore replaces its rows and never duplicates them.
    `scores` has the columns of SCORE_COLUMNS (see churnops.banding.build_score_frame); one model and one
    cutoff per list.
    """
    if list_kind not in LIST_KINDS:
        raise ValueError(f"list_kind must be one of {LIST_KINDS}, got {list_kind!r}")
    frame = _validated_score_frame(scores)
    model_name, model_version = _single_value(frame, "model_name"), _single_value(frame, "model_version")
    cutoff = pd.Timestamp(_single_value(frame, "cutoff")).date()
    copy_sql = sql.SQL("COPY churnops.scores ({columns}) FROM STDIN WITH (FORMAT csv)").format(
        columns=sql.SQL(", ").join(
            map(sql.Identifier, ("dataset", "logical_date", "list_kind", "run_id", *SCORE_COLUMNS))
        )
    )
    # The list's key columns are the same on every row: prepend them once rather than per row in Python.
    keyed = frame.copy()
    keyed.insert(0, "run_id", run_id)
    keyed.insert(0, "list_kind", list_kind)
    keyed.insert(0, "logical_date", pd.Timestamp(logical_date))
    keyed.insert(0, "dataset", dataset)
    with conn, conn.cursor() as cur:
        cur.execute(
            """
            INSERT INTO churnops.score_runs
                (dataset, logical_date, list_kind, run_id, model_name, model_version, cutoff, row_count)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
            ON CONFLICT (dataset, logical_date, list_kind) DO UPDATE SET
                run_id = EXCLUDED.run_id, model_name = EXCLUDED.model_name,
                model_version = EXCLUDED.model_version, cutoff = EXCLUDED.cutoff,
                row_count = EXCLUDED.row_count, written_at = now()
            """,
            (dataset, logical_date, list_kind, run_id, model_name, model_version, cutoff, len(frame)),
        )
        cur.execute(
            "DELETE FROM churnops.scores WHERE dataset = %s AND logical_date = %s AND list_kind = %s",
            (dataset, logical_date, list_kind),
        )
        cur.copy_expert(copy_sql.as_string(conn), _CsvStream(keyed), size=1 << 20)
        written = cur.rowcount
    return written


_SCORE_READ_COLUMNS = (
    "dataset",
    "logical_date",
    "run_id",
    *SCORE_COLUMNS,
    "scored_at",
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
               s.scored_at
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
        },
        keep_default_na=False,
    )
    frame["decision"] = frame["decision"].astype(bool)
    for column in ("logical_date", "cutoff"):
        frame[column] = pd.to_datetime(frame[column], format="%Y-%m-%d").dt.date
    frame["scored_at"] = pd.to_datetime(frame["scored_at"], utc=True, format="ISO8601")
    return frame.loc[:, list(_SCORE_READ_COLUMNS)]


# ----------------------------------------------------------------------------------------------------
# Metric and record writers called by the other stages
# ----------------------------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """`value` with numpy scalars (np.bool_, np.float32, ...) unwrapped to Python ones, at any depth."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def _adapt(value: Any) -> Any:
    """A value psycopg2 can send: numpy scalars unwrapped, dicts as jsonb."""
    value = _plain(value)
    return psycopg2.extras.Json(value) if isinstance(value, dict) else value


def _insert_rows(
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
    values = [tuple(_adapt(value) for value in row.values()) for row in rows]
    with conn, conn.cursor() as cur:
        psycopg2.extras.execute_values(cur, statement.as_string(conn), values, page_size=1000)
    return len(values)


def _insert_returning_id(conn: Connection, table: str, row: Mapping[str, Any]) -> int:
    statement = sql.SQL("INSERT INTO {table} ({columns}) VALUES ({values}) RETURNING id").format(
        table=sql.Identifier(SCHEMA, table),
        columns=sql.SQL(", ").join(map(sql.Identifier, row)),
        values=sql.SQL(", ").join(sql.Placeholder() * len(row)),
    )
    values = [_adapt(value) for value in row.values()]
    with conn, conn.cursor() as cur:
        cur.execute(statement, values)
        return int(cur.fetchone()[0])


def write_prediction_log(conn: Connection, records: Sequence[Mapping[str, Any]]) -> int:
    """Append online predictions in one batched transaction; return the rows written.

    Each record: endpoint, model_name, model_version, score, features (dict of the model inputs); optional
    logged_at, request_id, customer_id, decision, risk_band, latency_seconds. Records of one call share keys.
    """
    return _insert_rows(conn, "prediction_log", records)


def write_model_evaluation(
    conn: Connection,
    *,
    model_name: str,
    model_version: str,
    dataset: str,
    eval_cutoff: dt.date,
    metrics: Mapping[str, float],
    mlflow_run_id: str | None = None,
) -> int:
    """Record the metrics of a model version on one evaluation cutoff (a row per metric; upserted)."""
    rows = [
        {
            "model_name": model_name,
            "model_version": str(model_version),
            "dataset": dataset,
            "eval_cutoff": eval_cutoff,
            "metric": metric,
            "value": float(value),
            "mlflow_run_id": mlflow_run_id,
            "evaluated_at": dt.datetime.now(dt.UTC),
        }
        for metric, value in metrics.items()
    ]
    return _insert_rows(
        conn,
        "model_evaluations",
        rows,
        conflict_key=("model_name", "model_version", "dataset", "eval_cutoff", "metric"),
    )


# The gate's figures beside the decision (migration 0006), passed to `write_promotion_decision` as `statistics`.
PROMOTION_STATISTICS = (
    "rule",
    "evaluation_rows",
    "challenger_brier",
    "champion_brier",
    "challenger_log_loss",
    "champion_log_loss",
    "auc_difference",
    "auc_difference_standard_error",
    "auc_difference_ci_low",
    "auc_difference_ci_high",
    "p_value",
    "significance_level",
    "min_auc",
    "brier_tolerance",
    "log_loss_tolerance",
    "champion_error",
)


def write_promotion_decision(
    conn: Connection,
    *,
    dataset: str,
    model_name: str,
    challenger_version: str,
    champion_version: str | None,
    promoted: bool,
    reason: str,
    metric: str,
    challenger_value: float | None,
    champion_value: float | None,
    margin: float,
    eval_cutoff: dt.date | None = None,
    mlflow_run_id: str | None = None,
    statistics: Mapping[str, Any] | None = None,
) -> int:
    """Record one champion/challenger gate decision (promoted or not, why, and the figures it compared); return
    its id. `statistics` holds any of `PROMOTION_STATISTICS` (the rule that decided, Brier and log loss of both,
    the AUC difference with its confidence interval and p-value, the rules' levels)."""
    unknown = sorted(set(statistics or {}) - set(PROMOTION_STATISTICS))
    if unknown:
        raise ValueError(f"unknown promotion statistics {unknown}; expected some of {list(PROMOTION_STATISTICS)}")
    return _insert_returning_id(
        conn,
        "promotion_decisions",
        {
            **(statistics or {}),
            "dataset": dataset,
            "model_name": model_name,
            "challenger_version": str(challenger_version),
            "champion_version": None if champion_version is None else str(champion_version),
            "promoted": promoted,
            "reason": reason,
            "metric": metric,
            "challenger_value": challenger_value,
            "champion_value": champion_value,
            "margin": margin,
            "eval_cutoff": eval_cutoff,
            "mlflow_run_id": mlflow_run_id,
        },
    )


@dataclass(frozen=True)
class IngestionReport:
    """The reconciled counts of one source file version (rows_read = accepted + quarantined)."""

    source: str
    # The file version: its SHA-256 prefix, so recording the same file again is a no-op.
    run_id: str
    rows_read: int
    rows_accepted: int
    rows_quarantined: int
    quarantine_reasons: Mapping[str, int]
    first_event_day: dt.date | None = None
    last_event_day: dt.date | None = None
    # When the file was ingested (not when it was recorded), so a repeated record rewrites identical values.
    reported_at: dt.datetime | None = None


def write_ingestion_reports(conn: Connection, *, dataset: str, reports: Sequence[IngestionReport]) -> int:
    """Record the counts of source file versions in one transaction; a version already recorded is overwritten
    with the same values."""
    return _insert_rows(
        conn,
        "ingestion_reports",
        [
            {
                "dataset": dataset,
                "source": report.source,
                "run_id": report.run_id,
                "rows_read": report.rows_read,
                "rows_accepted": report.rows_accepted,
                "rows_quarantined": report.rows_quarantined,
                "quarantine_reasons": dict(report.quarantine_reasons),
                "first_event_day": report.first_event_day,
                "last_event_day": report.last_event_day,
                "reported_at": report.reported_at or dt.datetime.now(dt.UTC),
            }
            for report in reports
        ],
        conflict_key=("dataset", "source", "run_id"),
    )


def record_dag_run(
    conn: Connection,
    *,
    dag_id: str,
    run_id: str,
    state: str,
    start_date: dt.datetime | None = None,
    end_date: dt.datetime | None = None,
    run_type: str | None = None,
    logical_date: dt.datetime | None = None,
) -> None:
    """Create or update the record of one DAG run (state queued/running/success/failed; duration is derived).

    Call it at the start and at the end of a run: a later call updates the state and keeps dates it omits.
    """
    _insert_rows(
        conn,
        "dag_runs",
        [
            {
                "dag_id": dag_id,
                "run_id": run_id,
                "state": state,
                "start_date": start_date,
                "end_date": end_date,
                "run_type": run_type,
                "logical_date": logical_date,
                "recorded_at": dt.datetime.now(dt.UTC),
            }
        ],
        conflict_key=("dag_id", "run_id"),
        keep_on_conflict=("start_date", "end_date", "run_type", "logical_date"),
    )


def write_drift_run(
    conn: Connection,
    *,
    drift_run_id: str,
    dataset: str,
    model_name: str,
    model_version: str,
    features: Sequence[Mapping[str, Any]],
    warn_threshold: float,
    drift_threshold: float,
    score_psi: float | None = None,
    weighted_drifted_share: float | None = None,
    reference_snapshot: str | None = None,
    current_snapshot: str | None = None,
    started_at: dt.datetime | None = None,
    report_path: str | None = None,
    current_source: str = "snapshot",
    run_date: dt.date | None = None,
) -> None:
    """Record one drift run and its per-feature rows in one transaction (re-running an id replaces them).

    Each feature row: feature, psi, missing_share, threshold, drifted; optional missing_share_reference,
    importance.
    """
    drifted = sum(bool(row["drifted"]) for row in features)
    run = {
        "drift_run_id": drift_run_id,
        "dataset": dataset,
        "model_name": model_name,
        "model_version": str(model_version),
        "reference_snapshot": reference_snapshot,
        "current_snapshot": current_snapshot,
        "started_at": started_at or dt.datetime.now(dt.UTC),
        "finished_at": dt.datetime.now(dt.UTC),
        "features_checked": len(features),
        "features_drifted": drifted,
        "drifted_share": drifted / len(features) if features else 0.0,
        "weighted_drifted_share": weighted_drifted_share,
        "score_psi": score_psi,
        "warn_threshold": warn_threshold,
        "drift_threshold": drift_threshold,
        "report_path": report_path,
        "current_source": current_source,
        "run_date": run_date,
    }
    metric_rows = [{"drift_run_id": drift_run_id, **row} for row in features]
    with conn, conn.cursor() as cur:
        # One transaction for the run and its features: dashboards never see a run without its rows.
        cur.execute("DELETE FROM churnops.drift_runs WHERE drift_run_id = %s", (drift_run_id,))
        cur.execute(
            sql.SQL("INSERT INTO churnops.drift_runs ({}) VALUES ({})").format(
                sql.SQL(", ").join(map(sql.Identifier, run)), sql.SQL(", ").join(sql.Placeholder() * len(run))
            ),
            [_adapt(value) for value in run.values()],
        )
        if metric_rows:
            columns = list(metric_rows[0])
            psycopg2.extras.execute_values(
                cur,
                sql.SQL("INSERT INTO churnops.drift_metrics ({}) VALUES %s")
                .format(sql.SQL(", ").join(map(sql.Identifier, columns)))
                .as_string(conn),
                [tuple(_adapt(row[column]) for column in columns) for row in metric_rows],
            )


def write_retrain_decision(
    conn: Connection,
    *,
    dataset: str,
    trigger: str,
    fired: bool,
    reason: str,
    drift_run_id: str | None = None,
    training_run_id: str | None = None,
    details: Mapping[str, Any] | None = None,
    decided_at: dt.datetime | None = None,
    run_date: dt.date | None = None,
    advisory: bool = False,
) -> int:
    """Record a retraining trigger that fired or was suppressed, with its cause and reason; return its id.

    trigger is one of drift_detected, performance_drop, scheduled, manual. With a `run_date`, the decision of the
    same (dataset, run date, trigger, advisory) is replaced, so re-running a date records it once.
    """
    row = {
        "dataset": dataset,
        "trigger": trigger,
        "fired": fired,
        "reason": reason,
        "drift_run_id": drift_run_id,
        "training_run_id": training_run_id,
        "details": dict(details or {}),
        "decided_at": decided_at or dt.datetime.now(dt.UTC),
        "run_date": run_date,
        "advisory": advisory,
    }
    if run_date is None:
        return _insert_returning_id(conn, "retrain_decisions", row)
    columns = list(row)
    statement = sql.SQL(
        """
        INSERT INTO churnops.retrain_decisions ({columns}) VALUES ({values})
        ON CONFLICT (dataset, run_date, trigger, advisory) WHERE run_date IS NOT NULL
        DO UPDATE SET {updates}
        RETURNING id
        """
    ).format(
        columns=sql.SQL(", ").join(map(sql.Identifier, columns)),
        values=sql.SQL(", ").join(sql.Placeholder() * len(columns)),
        updates=sql.SQL(", ").join(
            sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c))
            for c in columns
            if c not in ("dataset", "run_date", "trigger", "advisory")
        ),
    )
    with conn, conn.cursor() as cur:
        cur.execute(statement, [_adapt(row[c]) for c in columns])
        return int(cur.fetchone()[0])


def write_realized_performance(
    conn: Connection,
    *,
    dataset: str,
    logical_date: dt.date,
    model_name: str,
    model_version: str,
    horizon_days: int,
    n_scored: int,
    n_positive: int,
    roc_auc: float | None,
    precision_at_10: float | None,
    mean_score: float | None = None,
    observed_rate: float | None = None,
    calibration_error: float | None = None,
    list_kind: str = "regular",
) -> None:
    """Record the realized performance of the scoring list of (`logical_date`, `list_kind`) (recomputing
    overwrites)."""
    _insert_rows(
        conn,
        "realized_performance",
        [
            {
                "dataset": dataset,
                "logical_date": logical_date,
                "list_kind": list_kind,
                "model_name": model_name,
                "model_version": str(model_version),
                "horizon_days": horizon_days,
                "n_scored": n_scored,
                "n_positive": n_positive,
                "roc_auc": roc_auc,
                "precision_at_10": precision_at_10,
                "mean_score": mean_score,
                "observed_rate": observed_rate,
                "calibration_error": calibration_error,
                "computed_at": dt.datetime.now(dt.UTC),
            }
        ],
        conflict_key=("dataset", "logical_date", "list_kind", "model_version"),
    )


def write_replay_step(conn: Connection, step: Mapping[str, Any]) -> None:
    """Record (or replace) one replayed run date's row of `churnops.replay_timeline`."""
    _insert_rows(
        conn,
        "replay_timeline",
        [{**step, "recorded_at": dt.datetime.now(dt.UTC)}],
        conflict_key=("replay_id", "run_date"),
    )
