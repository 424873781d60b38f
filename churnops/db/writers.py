"""Records the stages write: the prediction log, model evaluations, promotion decisions, ingestion reports, DAG
runs."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from psycopg2.extensions import connection as Connection


from churnops.db.rows import insert_returning_id, insert_rows


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
    return insert_rows(
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
    return insert_returning_id(
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
    return insert_rows(
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
    insert_rows(
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
