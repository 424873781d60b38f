"""A replay's timeline: what the platform saw and did at each run date, read back from its own stores.

One row per replayed run date: the data watermark, the feature snapshot (built or reused), the champion after the
step, the retraining decision and the training it started (registered, promoted, or skipped for lack of new data),
drift per feature, the realized performance of the newest list whose horizon had passed, and the seconds each DAG
took. Written as Parquet beside the replay (and into `churnops.replay_timeline` when the platform database is
configured); `plot_timeline` draws it.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from churnops.bronze import watermark as latest_event_day
from churnops.config import Settings
from churnops.dataset import DatasetContract
from churnops.monitoring.store import open_store
from churnops.snapshots import read_metadata, snapshot_dir_for
from churnops.storage import write_parquet_atomically

TIMELINE_FILE = "timeline.parquet"
# Every evaluated list of the replay, one row per cohort (the timeline keeps only the newest one per run date).
COHORTS_FILE = "cohorts.parquet"
# The decision reason of a run date whose DAGs did not run (see `skipped_step`).
NOT_RUN = "not run: "


@dataclass(frozen=True)
class TimelineStep:
    replay_id: str
    dataset: str
    policy: str
    step: int
    run_date: dt.date
    watermark: dt.date | None
    snapshot_id: str | None
    champion_version: str | None
    decision_trigger: str | None  # the trigger that fired at this run date, if any
    decision_reason: str
    training_outcome: str | None  # registered | promoted | skipped | None (no training)
    trained_version: str | None
    training_reason: str | None
    weighted_drifted_share: float | None
    important_drifted: list[str] = field(default_factory=list)
    psi: dict[str, float] = field(default_factory=dict)
    realized_cohort: dt.date | None = None
    realized_roc_auc: float | None = None
    realized_precision_at_10: float | None = None
    realized_model_version: str | None = None
    scored_rows: int | None = None
    seconds: dict[str, float] = field(default_factory=dict)


def observe_step(
    settings: Settings,
    contract: DatasetContract,
    *,
    replay_id: str,
    policy: str,
    step: int,
    run_date: dt.date,
    seconds: dict[str, float],
    scored_rows: int | None,
) -> TimelineStep:
    """The timeline row of one replayed run date, from the snapshot pointers, the monitoring store and MLflow."""
    store = open_store(settings)
    day = run_date.isoformat()
    snapshot = read_metadata(snapshot_dir_for(settings, contract.name, run_date))
    decisions = [d for d in store.retrain_decisions(contract.name) if d.run_date == day and not d.advisory]
    fired = next((d for d in decisions if d.fired), None)
    drift = next(
        (
            r
            for r in store.recent_drift_runs(contract.name, limit=50)
            if r.run_date == day and r.current_source == "snapshot"
        ),
        None,
    )
    realized = [r for r in store.realized(contract.name) if r.list_kind == "regular" and r.logical_date < run_date]
    newest = max(realized, key=lambda r: r.logical_date) if realized else None
    training = _training_of(contract, day)
    return TimelineStep(
        replay_id=replay_id,
        dataset=contract.name,
        policy=policy,
        step=step,
        run_date=run_date,
        watermark=latest_event_day(settings, contract.name),
        snapshot_id=snapshot.snapshot_id,
        champion_version=champion_version(contract),
        decision_trigger=fired.trigger if fired else None,
        decision_reason=(fired or (decisions[0] if decisions else None)).reason if decisions else "no trigger",
        training_outcome=training.get("outcome"),
        trained_version=training.get("version"),
        training_reason=training.get("reason"),
        weighted_drifted_share=drift.weighted_drifted_share if drift else None,
        important_drifted=list(drift.important_drifted) if drift else [],
        psi={f.feature: round(f.psi, 4) for f in drift.features if f.psi is not None} if drift else {},
        realized_cohort=newest.logical_date if newest else None,
        realized_roc_auc=newest.roc_auc if newest else None,
        realized_precision_at_10=newest.precision_at_10 if newest else None,
        realized_model_version=newest.model_version if newest else None,
        scored_rows=scored_rows,
        seconds={k: round(v, 2) for k, v in seconds.items()},
    )


def skipped_step(
    settings: Settings,
    contract: DatasetContract,
    *,
    replay_id: str,
    policy: str,
    step: int,
    run_date: dt.date,
    why: str,
) -> TimelineStep:
    """The timeline row of a run date whose DAGs were not run (e.g. too little history to train a first model):
    the reason is kept as the decision reason, after `NOT_RUN`."""
    return TimelineStep(
        replay_id=replay_id,
        dataset=contract.name,
        policy=policy,
        step=step,
        run_date=run_date,
        watermark=latest_event_day(settings, contract.name),
        snapshot_id=None,
        champion_version=champion_version(contract),
        decision_trigger=None,
        decision_reason=NOT_RUN + why,
        training_outcome=None,
        trained_version=None,
        training_reason=None,
        weighted_drifted_share=None,
    )


def champion_version(contract: DatasetContract) -> str | None:
    from churnops.registry import champion_or_none

    champion = champion_or_none(contract.model_name)
    return None if champion is None else str(champion.version)


def _training_of(contract: DatasetContract, day: str) -> dict[str, Any]:
    """The training run of a run date in MLflow: outcome, version, reason (empty when none ran)."""
    import mlflow

    from churnops.registry import experiment_name

    experiment = mlflow.get_experiment_by_name(experiment_name(contract))
    if experiment is None:
        return {}
    runs = mlflow.search_runs(
        experiment_ids=[experiment.experiment_id],
        filter_string=f"tags.`churnops.kind` = 'training' and tags.`churnops.run_date` = '{day}'",
        output_format="list",
    )
    if not runs:
        return {}
    tags = max(runs, key=lambda r: r.info.start_time).data.tags
    if tags.get("churnops.outcome") == "skipped":
        outcome = "skipped"
    else:
        outcome = "promoted" if tags.get("churnops.promoted") == "true" else "registered"
    return {
        "outcome": outcome,
        "version": tags.get("churnops.model_version"),
        "reason": tags.get("churnops.retrain_reason") or None,
    }


def realized_cohorts(settings: Settings, contract: DatasetContract, last_run_date: dt.date) -> pd.DataFrame:
    """Every regular list the platform has evaluated (`compute_realized_performance`), one row per cohort, and
    whether its horizon ended after the last run date (evaluated once the replay released the rest of the log)."""
    rows = [
        {
            "cohort": r.logical_date,
            "model_version": r.model_version,
            "horizon_days": r.horizon_days,
            "n_scored": r.n_scored,
            "n_positive": r.n_positive,
            "observed_rate": r.observed_rate,
            "roc_auc": r.roc_auc,
            "precision_at_10": r.precision_at_10,
            "mean_score": r.mean_score,
            "calibration_error": r.calibration_error,
            "matured_after_replay": r.logical_date + dt.timedelta(days=r.horizon_days) > last_run_date,
        }
        for r in open_store(settings).realized(contract.name)
        if r.list_kind == "regular"
    ]
    return pd.DataFrame(rows, columns=COHORT_COLUMNS)


COHORT_COLUMNS = [
    "cohort",
    "model_version",
    "horizon_days",
    "n_scored",
    "n_positive",
    "observed_rate",
    "roc_auc",
    "precision_at_10",
    "mean_score",
    "calibration_error",
    "matured_after_replay",
]


def write_cohorts(replay_dir: Path, cohorts: pd.DataFrame) -> Path:
    path = replay_dir / COHORTS_FILE
    write_parquet_atomically(cohorts, path)
    return path


def read_cohorts(replay_dir: Path) -> pd.DataFrame:
    path = replay_dir / COHORTS_FILE
    return pd.read_parquet(path) if path.exists() else pd.DataFrame(columns=COHORT_COLUMNS)


def timeline_path(replay_dir: Path) -> Path:
    return replay_dir / TIMELINE_FILE


def read_timeline(replay_dir: Path) -> pd.DataFrame:
    path = timeline_path(replay_dir)
    return pd.read_parquet(path) if path.exists() else pd.DataFrame()


def append_step(settings: Settings, replay_dir: Path, step: TimelineStep) -> pd.DataFrame:
    """Add (or replace) the step's row in the replay's timeline; PostgreSQL too when configured."""
    row = {**asdict(step), "psi": json.dumps(step.psi), "seconds": json.dumps(step.seconds)}
    row["important_drifted"] = ",".join(step.important_drifted)
    frame = read_timeline(replay_dir)
    if not frame.empty:
        frame = frame[frame["run_date"] != step.run_date]
    frame = pd.concat([frame, pd.DataFrame([row])], ignore_index=True).sort_values("run_date", ignore_index=True)
    write_parquet_atomically(frame, timeline_path(replay_dir))
    if settings.database_url is not None:
        _write_to_database(settings, step)
    return frame


def _write_to_database(settings: Settings, step: TimelineStep) -> None:
    import contextlib

    from churnops import db

    with contextlib.closing(db.connect(settings, application_name="churnops-replay")) as conn:
        db.migrate(conn)
        db.write_replay_step(conn, {**asdict(step), "psi": step.psi, "seconds": step.seconds})
