"""Records monitoring writes: drift runs, retraining decisions, realized performance, replay timelines."""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import psycopg2
import psycopg2.extras
from psycopg2 import sql

if TYPE_CHECKING:
    from psycopg2.extensions import connection as Connection


from churnops.db.rows import adapt, copy_text, insert_returning_id, insert_rows


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
            [adapt(value) for value in run.values()],
        )
        if metric_rows:
            columns = list(metric_rows[0])
            psycopg2.extras.execute_values(
                cur,
                sql.SQL("INSERT INTO churnops.drift_metrics ({}) VALUES %s")
                .format(sql.SQL(", ").join(map(sql.Identifier, columns)))
                .as_string(conn),
                [tuple(adapt(row[column]) for column in columns) for row in metric_rows],
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
        return insert_returning_id(conn, "retrain_decisions", row)
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
        cur.execute(statement, [adapt(row[c]) for c in columns])
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
    insert_rows(
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


def replace_realized_outcomes(
    conn: Connection,
    *,
    dataset: str,
    logical_date: dt.date,
    list_kind: str,
    model_version: str,
    customer_ids: Sequence[str],
    outcomes: Sequence[bool],
) -> int:
    """Replace the per-customer outcomes of one evaluated list (one transaction: the old rows stay readable until
    the new ones are committed). Returns the rows written.

    Written before the list's `realized_performance` row: an evaluation is only "done" once that row exists, so a
    failure between the two is retried in full and this replaces its own half.
    """
    if len(customer_ids) != len(outcomes):
        raise ValueError(f"{len(customer_ids)} customer ids but {len(outcomes)} outcomes")
    key = (dataset, logical_date, list_kind, str(model_version))
    prefix = "\t".join(copy_text(value) for value in (dataset, logical_date.isoformat(), list_kind, model_version))
    buffer = io.StringIO()
    for customer_id, outcome in zip(customer_ids, outcomes, strict=True):
        buffer.write(f"{prefix}\t{copy_text(customer_id)}\t{'t' if outcome else 'f'}\n")
    buffer.seek(0)
    with conn, conn.cursor() as cur:
        cur.execute(
            "DELETE FROM churnops.realized_outcomes "
            "WHERE dataset = %s AND logical_date = %s AND list_kind = %s AND model_version = %s",
            key,
        )
        cur.copy_expert(
            "COPY churnops.realized_outcomes (dataset, logical_date, list_kind, model_version, customer_id, outcome) "
            "FROM STDIN",
            buffer,
            size=1 << 20,
        )
        return len(customer_ids)


def write_replay_step(conn: Connection, step: Mapping[str, Any]) -> None:
    """Record (or replace) one replayed run date's row of `churnops.replay_timeline`."""
    insert_rows(
        conn,
        "replay_timeline",
        [{**step, "recorded_at": dt.datetime.now(dt.UTC)}],
        conflict_key=("replay_id", "run_date"),
    )
