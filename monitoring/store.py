"""Where monitoring results live: PostgreSQL when the platform database is configured, JSON files otherwise.

Both stores hold the same three records — drift runs (with their per-feature rows), retraining decisions (fired or
suppressed) and realized performance — and answer the same questions the retraining control and the exporter
ask. The embedded default keeps them under `<home>/monitoring/<dataset>/`; the full deployment writes the
`churnops` schema through the writers in `churnops.db`.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from churnops.config import Settings
from churnops.storage import write_json_atomically

DRIFT_RUNS_FILE = "drift_runs.json"
RETRAIN_DECISIONS_FILE = "retrain_decisions.json"
REALIZED_FILE = "realized_performance.json"


@dataclass(frozen=True)
class FeatureDrift:
    """One feature in one drift run."""

    feature: str
    psi: float | None  # None when a side has no non-missing value
    missing_share: float
    missing_share_reference: float
    importance: float  # share of the champion's total gain
    threshold: float
    psi_drifted: bool
    missing_drifted: bool

    @property
    def drifted(self) -> bool:
        return self.psi_drifted or self.missing_drifted


@dataclass(frozen=True)
class DriftRun:
    drift_run_id: str
    dataset: str
    model_name: str
    model_version: str
    started_at: dt.datetime
    finished_at: dt.datetime
    reference_snapshot: str
    current_snapshot: str
    features: list[FeatureDrift]
    score_psi: float | None
    weighted_drifted_share: float
    warn_threshold: float
    drift_threshold: float
    report_path: str | None = None
    # Features that drifted and matter to the champion (importance >= the configured minimum).
    important_drifted: list[str] = field(default_factory=list)
    rows_reference: int = 0
    rows_current: int = 0
    current_source: str = "snapshot"
    run_date: str | None = None

    @property
    def drifted_features(self) -> list[str]:
        return [f.feature for f in self.features if f.drifted]

    @property
    def drifted_share(self) -> float:
        return len(self.drifted_features) / len(self.features) if self.features else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "drifted_share": self.drifted_share}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> DriftRun:
        raw = {k: v for k, v in raw.items() if k != "drifted_share"}
        return cls(
            **{
                **raw,
                "started_at": _timestamp(raw["started_at"]),
                "finished_at": _timestamp(raw["finished_at"]),
                "features": [FeatureDrift(**f) for f in raw["features"]],
            }
        )


@dataclass(frozen=True)
class RetrainDecision:
    dataset: str
    trigger: str  # drift_detected | performance_drop | scheduled | manual
    fired: bool
    reason: str
    decided_at: dt.datetime
    drift_run_id: str | None = None
    training_run_id: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    # The run date the decision belongs to (a re-run of the date replaces it) and whether it is only advice:
    # an advisory decision (the CLI without --trigger-training) starts no training and no cooldown.
    run_date: str | None = None
    advisory: bool = False


@dataclass(frozen=True)
class RealizedPerformance:
    dataset: str
    logical_date: dt.date
    model_name: str
    model_version: str
    horizon_days: int
    n_scored: int
    n_positive: int
    roc_auc: float | None
    precision_at_10: float | None
    mean_score: float | None
    observed_rate: float | None
    calibration_error: float | None
    calibration_bins: list[dict[str, float]] = field(default_factory=list)
    list_kind: str = "regular"

    @property
    def key(self) -> tuple[dt.date, str, str]:
        """One evaluation per list (date and kind) and model version."""
        return (self.logical_date, self.list_kind, self.model_version)


def _timestamp(value: Any) -> dt.datetime:
    parsed = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


class MonitoringStore(Protocol):
    def record_drift_run(self, run: DriftRun) -> None: ...
    def recent_drift_runs(self, dataset: str, limit: int) -> list[DriftRun]: ...
    def record_retrain_decision(self, decision: RetrainDecision) -> None: ...
    def retrain_decisions(self, dataset: str) -> list[RetrainDecision]: ...
    def record_realized(self, rows: list[RealizedPerformance]) -> None: ...
    def realized(self, dataset: str) -> list[RealizedPerformance]: ...
    def datasets(self) -> list[str]: ...


class LocalStore:
    """JSON files under `<root>/<dataset>/`, each rewritten atomically (the embedded default)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _read(self, dataset: str, name: str) -> list[dict[str, Any]]:
        path = self.root / dataset / name
        return json.loads(path.read_text()) if path.exists() else []

    def _append(self, dataset: str, name: str, rows: list[dict[str, Any]], key: str | None = None) -> None:
        existing = self._read(dataset, name)
        if key is not None:
            # Re-running the same id replaces its record, as the PostgreSQL writers do.
            replaced = {row[key] for row in rows}
            existing = [row for row in existing if row.get(key) not in replaced]
        write_json_atomically(existing + rows, self.root / dataset / name)

    def record_drift_run(self, run: DriftRun) -> None:
        self._append(run.dataset, DRIFT_RUNS_FILE, [run.to_dict()], key="drift_run_id")

    def recent_drift_runs(self, dataset: str, limit: int) -> list[DriftRun]:
        runs = [DriftRun.from_dict(raw) for raw in self._read(dataset, DRIFT_RUNS_FILE)]
        return sorted(runs, key=lambda r: r.finished_at, reverse=True)[:limit]

    def record_retrain_decision(self, decision: RetrainDecision) -> None:
        raw = asdict(decision)
        if decision.run_date is None:
            self._append(decision.dataset, RETRAIN_DECISIONS_FILE, [raw])
            return
        raw["key"] = f"{decision.run_date}/{decision.trigger}/{decision.advisory}"
        self._append(decision.dataset, RETRAIN_DECISIONS_FILE, [raw], key="key")

    def retrain_decisions(self, dataset: str) -> list[RetrainDecision]:
        rows = [{k: v for k, v in row.items() if k != "key"} for row in self._read(dataset, RETRAIN_DECISIONS_FILE)]
        return [RetrainDecision(**{**row, "decided_at": _timestamp(row["decided_at"])}) for row in rows]

    def record_realized(self, rows: list[RealizedPerformance]) -> None:
        for dataset in {row.dataset for row in rows}:
            raws = [
                {**asdict(r), "key": f"{r.logical_date.isoformat()}/{r.list_kind}/{r.model_version}"}
                for r in rows
                if r.dataset == dataset
            ]
            self._append(dataset, REALIZED_FILE, raws, key="key")

    def realized(self, dataset: str) -> list[RealizedPerformance]:
        rows = []
        for raw in self._read(dataset, REALIZED_FILE):
            raw = {k: v for k, v in raw.items() if k != "key"}
            rows.append(RealizedPerformance(**{**raw, "logical_date": dt.date.fromisoformat(raw["logical_date"])}))
        return sorted(rows, key=lambda r: r.logical_date)

    def datasets(self) -> list[str]:
        if not self.root.exists():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir())


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
                decided_at=_timestamp(r[3]),
                drift_run_id=r[4],
                training_run_id=r[5],
                details=r[6],
                run_date=r[7].isoformat() if r[7] else None,
                advisory=r[8],
            )
            for r in rows
        ]

    def record_realized(self, rows: list[RealizedPerformance]) -> None:
        from churnops import db

        conn = self._connect()
        try:
            for row in rows:
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


def monitoring_dir(settings: Settings) -> Path:
    """The embedded store's folder; drift reports are written under it in both deployments."""
    return settings.home / "monitoring"


def open_store(settings: Settings) -> MonitoringStore:
    """PostgreSQL when `Settings.database_url` is set, the local JSON store otherwise."""
    if settings.database_url is not None:
        return PostgresStore(settings)
    return LocalStore(monitoring_dir(settings))
