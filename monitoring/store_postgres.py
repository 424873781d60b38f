"""The monitoring store in the platform database: the `churnops` schema, written through `churnops.db`."""

from __future__ import annotations

import datetime as dt
from typing import Any

from churnops.config import Settings
from churnops.monitoring.store import (
    DriftRun,
    FeatureDrift,
    OutcomesByList,
    RealizedPerformance,
    RetrainDecision,
    parse_timestamp,
)


class PostgresStore:
    """The `churnops` schema of the platform database (written through `churnops.db`)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # The table keeps each feature's importance; which count for retraining is today's setting.
        self._min_importance = settings.monitoring.min_feature_importance

    def _connect(self) -> Any:
        from churnops import db

        return db.connect(self.settings, application_name="churnops-monitoring")

    def _query(self, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        conn = self._connect()
        try:
            with conn, conn.cursor() as cur:
                cur.execute(statement, params)
                return cur.fetchall()
        finally:
            conn.close()

    def record_drift_run(self, run: DriftRun) -> None:
        from churnops import db

        conn = self._connect()
        try:
            db.write_drift_run(
                conn,
                drift_run_id=run.drift_run_id,
                dataset=run.dataset,
                model_name=run.model_name,
                model_version=run.model_version,
                features=[
                    {
                        "feature": f.feature,
                        "psi": f.psi,
                        "missing_share": f.missing_share,
                        "missing_share_reference": f.missing_share_reference,
                        "importance": f.importance,
                        "threshold": f.threshold,
                        "drifted": f.drifted,
                    }
                    for f in run.features
                ],
                warn_threshold=run.warn_threshold,
                drift_threshold=run.drift_threshold,
                score_psi=run.score_psi,
                weighted_drifted_share=run.weighted_drifted_share,
                reference_snapshot=run.reference_snapshot,
                current_snapshot=run.current_snapshot,
                started_at=run.started_at,
                report_path=run.report_path,
                current_source=run.current_source,
                run_date=dt.date.fromisoformat(run.run_date) if run.run_date else None,
            )
        finally:
            conn.close()

    def recent_drift_runs(self, dataset: str, limit: int) -> list[DriftRun]:
        runs = self._query(
            """
            SELECT drift_run_id, model_name, model_version, started_at, finished_at, reference_snapshot,
                   current_snapshot, score_psi, coalesce(weighted_drifted_share, 0), warn_threshold,
                   drift_threshold, report_path, current_source, run_date
            FROM churnops.drift_runs WHERE dataset = %s ORDER BY finished_at DESC NULLS LAST LIMIT %s
            """,
            (dataset, limit),
        )
        if not runs:
            return []
        metrics = self._query(
            """
            SELECT drift_run_id, feature, psi, missing_share, coalesce(missing_share_reference, 0),
                   coalesce(importance, 0), threshold, drifted
            FROM churnops.drift_metrics WHERE drift_run_id = ANY(%s) ORDER BY feature
            """,
            ([row[0] for row in runs],),
        )
        result = []
        for row in runs:
            features = [
                FeatureDrift(
                    feature=m[1],
                    psi=m[2],
                    missing_share=m[3],
                    missing_share_reference=m[4],
                    importance=m[5],
                    threshold=m[6],
                    # The table keeps one flag; which signal raised it is recomputed where it matters.
                    psi_drifted=bool(m[7]) and m[2] is not None and m[2] >= m[6],
                    missing_drifted=bool(m[7]) and not (m[2] is not None and m[2] >= m[6]),
                )
                for m in metrics
                if m[0] == row[0]
            ]
            result.append(
                DriftRun(
                    drift_run_id=row[0],
                    dataset=dataset,
                    model_name=row[1],
                    model_version=row[2],
                    started_at=row[3],
                    finished_at=row[4] or row[3],
                    reference_snapshot=row[5] or "",
                    current_snapshot=row[6] or "",
                    features=features,
                    score_psi=row[7],
                    weighted_drifted_share=row[8],
                    warn_threshold=row[9],
                    drift_threshold=row[10],
                    report_path=row[11],
                    important_drifted=[
                        f.feature for f in features if f.drifted and f.importance >= self._min_importance
                    ],
                    current_source=row[12],
                    run_date=row[13].isoformat() if row[13] else None,
                )
            )
        return result

    def record_retrain_decision(self, decision: RetrainDecision) -> None:
        from churnops import db

        conn = self._connect()
        try:
            db.write_retrain_decision(
                conn,
                dataset=decision.dataset,
                trigger=decision.trigger,
                fired=decision.fired,
                reason=decision.reason,
                drift_run_id=decision.drift_run_id,
                training_run_id=decision.training_run_id,
                details=decision.details,
                decided_at=decision.decided_at,
                run_date=dt.date.fromisoformat(decision.run_date) if decision.run_date else None,
                advisory=decision.advisory,
            )
        finally:
            conn.close()

    def retrain_decisions(self, dataset: str) -> list[RetrainDecision]:
        rows = self._query(
            """
            SELECT trigger, fired, reason, decided_at, drift_run_id, training_run_id, details, run_date, advisory
            FROM churnops.retrain_decisions WHERE dataset = %s ORDER BY decided_at, id
            """,
            (dataset,),
        )
        return [
            RetrainDecision(
                dataset=dataset,
                trigger=r[0],
                fired=r[1],
                reason=r[2],
                decided_at=parse_timestamp(r[3]),
                drift_run_id=r[4],
                training_run_id=r[5],
                details=r[6],
                run_date=r[7].isoformat() if r[7] else None,
                advisory=r[8],
            )
            for r in rows
        ]

    def record_realized(self, rows: list[RealizedPerformance], outcomes: OutcomesByList | None = None) -> None:
        from churnops import db

        conn = self._connect()
        try:
            for row in rows:
                if outcomes and row.key in outcomes:
                    # Before the summary row: a failure in between leaves the list unevaluated, and the retry
                    # replaces these rows.
                    listed = outcomes[row.key]
                    db.replace_realized_outcomes(
                        conn,
                        dataset=row.dataset,
                        logical_date=row.logical_date,
                        list_kind=row.list_kind,
                        model_version=row.model_version,
                        customer_ids=listed.customer_ids.astype(str).tolist(),
                        outcomes=listed.outcomes.astype(bool).tolist(),
                    )
                db.write_realized_performance(
                    conn,
                    dataset=row.dataset,
                    logical_date=row.logical_date,
                    model_name=row.model_name,
                    model_version=row.model_version,
                    horizon_days=row.horizon_days,
                    n_scored=row.n_scored,
                    n_positive=row.n_positive,
                    roc_auc=row.roc_auc,
                    precision_at_10=row.precision_at_10,
                    mean_score=row.mean_score,
                    observed_rate=row.observed_rate,
                    calibration_error=row.calibration_error,
                    list_kind=row.list_kind,
                )
        finally:
            conn.close()

    def realized(self, dataset: str) -> list[RealizedPerformance]:
        rows = self._query(
            """
            SELECT logical_date, model_name, model_version, horizon_days, n_scored, n_positive, roc_auc,
                   precision_at_10, mean_score, observed_rate, calibration_error, list_kind
            FROM churnops.realized_performance WHERE dataset = %s ORDER BY logical_date, computed_at
            """,
            (dataset,),
        )
        return [RealizedPerformance(dataset, *row[:-1], list_kind=row[-1]) for row in rows]

    def datasets(self) -> list[str]:
        rows = self._query(
            """
            SELECT dataset FROM churnops.drift_runs UNION SELECT dataset FROM churnops.retrain_decisions
            UNION SELECT dataset FROM churnops.realized_performance ORDER BY 1
            """
        )
        return [row[0] for row in rows]
