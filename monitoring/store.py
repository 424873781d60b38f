"""Where monitoring results live: PostgreSQL when the platform database is configured, JSON files otherwise.

Both stores hold the same three records — drift runs (with their per-feature rows), retraining decisions (fired or
suppressed) and realized performance (with each listed customer's outcome) — and answer the same questions the
retraining control and the exporter ask. The embedded default keeps them under `<home>/monitoring/<dataset>/`
(outcomes as Parquet); the full deployment writes the `churnops` schema through the writers in `churnops.db`.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from churnops.config import Settings
from churnops.storage import write_json_atomically, write_parquet_atomically

DRIFT_RUNS_FILE = "drift_runs.json"
RETRAIN_DECISIONS_FILE = "retrain_decisions.json"
REALIZED_FILE = "realized_performance.json"
OUTCOMES_DIR = "realized_outcomes"


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
                "started_at": parse_timestamp(raw["started_at"]),
                "finished_at": parse_timestamp(raw["finished_at"]),
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


@dataclass(frozen=True)
class ListOutcomes:
    """Each listed customer's realized outcome (the label rule's answer: churn True = left, propensity True =
    bought), in the list's order."""

    customer_ids: pd.Series
    outcomes: np.ndarray

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(
            {"customer_id": self.customer_ids.astype(str).to_numpy(), "outcome": self.outcomes.astype(bool)}
        )


# Outcomes of the evaluations being recorded, by `RealizedPerformance.key`.
OutcomesByList = Mapping[tuple[dt.date, str, str], ListOutcomes]


def parse_timestamp(value: Any) -> dt.datetime:
    parsed = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


class MonitoringStore(Protocol):
    def record_drift_run(self, run: DriftRun) -> None: ...
    def recent_drift_runs(self, dataset: str, limit: int) -> list[DriftRun]: ...
    def record_retrain_decision(self, decision: RetrainDecision) -> None: ...
    def retrain_decisions(self, dataset: str) -> list[RetrainDecision]: ...
    def record_realized(self, rows: list[RealizedPerformance], outcomes: OutcomesByList | None = None) -> None: ...
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
        return [RetrainDecision(**{**row, "decided_at": parse_timestamp(row["decided_at"])}) for row in rows]

    def record_realized(self, rows: list[RealizedPerformance], outcomes: OutcomesByList | None = None) -> None:
        # Outcomes first: an evaluation counts as done once its summary row is written (see compute_realized_...).
        for row in rows:
            if outcomes and row.key in outcomes:
                date, kind, version = row.key
                path = self.root / row.dataset / OUTCOMES_DIR / f"{date.isoformat()}_{kind}_v{version}.parquet"
                write_parquet_atomically(outcomes[row.key].frame(), path)
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


def monitoring_dir(settings: Settings) -> Path:
    """The embedded store's folder; drift reports are written under it in both deployments."""
    return settings.home / "monitoring"


def open_store(settings: Settings) -> MonitoringStore:
    """PostgreSQL when `Settings.database_url` is set, the local JSON store otherwise."""
    if settings.database_url is not None:
        from churnops.monitoring.store_postgres import PostgresStore

        return PostgresStore(settings)
    return LocalStore(monitoring_dir(settings))
